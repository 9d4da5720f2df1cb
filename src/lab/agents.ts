/**
 * The command line of an agent whose Linux dataplane acts in a lab namespace: one place for the
 * demo and the tests that start real agents, so they all run the agent the same way.
 */
export interface LabAgentOptions {
  readonly node: string;
  /** The namespace its dataplane acts in. */
  readonly netns: string;
  /** `sqlite:PATH`, or the hub's `http://…` for a remote agent. */
  readonly store: string;
  /** API port on 127.0.0.1. */
  readonly port: number;
  readonly tokenFile: string;
  readonly stateDir: string;
  readonly resyncSeconds: number;
  /** Further flags (tunnel, join, …), appended as given. */
  readonly extra?: readonly string[];
}

export function labAgentArgv(o: LabAgentOptions): string[] {
  return [
    'agent',
    '--node',
    o.node,
    '--dataplane',
    'linux',
    '--netns',
    o.netns,
    '--store',
    o.store,
    '--listen',
    `127.0.0.1:${o.port}`,
    '--token-file',
    o.tokenFile,
    '--state-dir',
    o.stateDir,
    '--resync-seconds',
    String(o.resyncSeconds),
    '--log-level',
    'warn',
    ...(o.extra ?? []),
  ];
}
