/**
 * `ipferry agent`: parses flags, loads the config file, starts the agent and runs until
 * SIGTERM or SIGINT. Flags win over the file.
 */
import { access } from 'node:fs/promises';
import { Command, Option } from 'commander';
import {
  DEFAULT_CONFIG_FILE,
  DEFAULT_CREDENTIAL_FILE,
  DEFAULT_LISTEN,
  DEFAULT_STORE,
  DEFAULT_TOKEN_FILE,
} from '../core/defaults.js';
import type { RawAgentOptions } from './config.js';

interface AgentFlags {
  config?: string;
  node?: string;
  store?: string;
  listen?: string;
  tokenFile?: string;
  credentialFile?: string;
  joinTokenFile?: string;
  tlsCert?: string;
  tlsKey?: string;
  etcdCa?: string;
  etcdCert?: string;
  etcdKey?: string;
  etcdUser?: string;
  etcdPasswordFile?: string;
  resyncSeconds?: string;
  logLevel?: string;
  logFormat?: string;
  site?: string;
  stateDir?: string;
  tunnelPort?: string;
  endpoint?: string;
  underlayMtu?: string;
  tunnelMtu?: string;
  tunnelDriver?: string;
  probeSeconds?: string;
  egress?: string;
  dataplane?: string;
  netns?: string;
  ipfloaterRest?: string;
  ipfloaterXmlrpc?: string;
  ipfloaterPool?: string;
  ipfloaterAllow?: string;
  ipfloaterAuth?: string;
}

export function agentCommand(): Command {
  return new Command('agent')
    .description('Run the agent: the HTTP API and the reconcile loop for this node')
    .option('--config <file>', `YAML config file (default ${DEFAULT_CONFIG_FILE} if it exists)`)
    .option('--node <name>', 'name of this node')
    .option(
      '--store <spec>',
      `state store: sqlite:PATH, etcd:https://HOST:PORT[,…] (a fleet; etcd:http://… without TLS), or https://HUB:PORT to follow another agent (default ${DEFAULT_STORE})`,
    )
    .option('--listen <addr:port>', `API listen address (default ${DEFAULT_LISTEN})`)
    .option(
      '--token-file <file>',
      `API tokens, one per line, mode 0600; created if missing (default ${DEFAULT_TOKEN_FILE})`,
    )
    .option(
      '--join-token-file <file>',
      'join token from `ipferry node join-token create` on the hub (mode 0600), for the first start with an https:// store',
    )
    .option(
      '--credential-file <file>',
      `this node's credential for its hub, written when it joins (default ${DEFAULT_CREDENTIAL_FILE})`,
    )
    .option('--tls-cert <file>', 'serve the API over TLS with this certificate (PEM)')
    .option('--tls-key <file>', 'private key of --tls-cert (PEM)')
    .option(
      '--etcd-ca <file>',
      "with an etcd:https:// store: the CA certificate(s) of etcd's server certificates (PEM; default: the system's CAs)",
    )
    .option(
      '--etcd-cert <file>',
      'with an etcd:https:// store: client certificate for etcd --client-cert-auth (PEM)',
    )
    .option('--etcd-key <file>', 'private key of --etcd-cert (PEM, mode 0600)')
    .option('--etcd-user <name>', "etcd user to log in as (etcd's authentication)")
    .option(
      '--etcd-password-file <file>',
      'the password of --etcd-user, on one line (mode 0600; never give it on the command line)',
    )
    .option('--resync-seconds <n>', 'seconds between full resyncs that repair drift (default 30)')
    .option('--site <name>', 'site (datacenter) of this node')
    .option(
      '--state-dir <dir>',
      "this node's own state: WireGuard key, daemon files (default /var/lib/ipferry)",
    )
    .option('--tunnel-port <port>', "UDP port of this node's tunnel (default 51820)")
    .option(
      '--underlay-mtu <bytes>',
      "MTU of the path the tunnel's packets take (default: the route's toward the peers)",
    )
    .option('--tunnel-mtu <bytes>', "the tunnel's MTU (default: underlay MTU − 60)")
    .option('--endpoint <host:port>', "where other nodes reach this node's tunnel; omit behind NAT")
    .addOption(
      new Option(
        '--tunnel-driver <kind>',
        'wireguard (default; kernel module or wireguard-go) or tinc (1.0, switch mode)',
      ).choices(['wireguard', 'tinc']),
    )
    .option(
      '--probe-seconds <n>',
      'seconds between active probes through the tunnel (health, path MTU) and checks of its device and daemon (0.1 to 3600, default 5)',
    )
    .addOption(
      new Option(
        '--egress <mode>',
        "where this node's own traffic leaves: own (its default route, default), fip (through its gateway, as its routed FIP) or masquerade (through its gateway, behind the gateway's address)",
      ).choices(['own', 'fip', 'masquerade']),
    )
    .addOption(
      new Option('--dataplane <kind>', 'linux (the kernel, default) or fake (in memory)').choices([
        'linux',
        'fake',
      ]),
    )
    .option('--netns <name>', 'network namespace the linux dataplane acts in (labs and tests)')
    .option(
      '--ipfloater-rest <addr:port>',
      "serve IP Floater's REST API here (off by default; IP Floater's port was 7003)",
    )
    .option(
      '--ipfloater-xmlrpc <addr:port>',
      "serve IP Floater's XML-RPC API here (off by default; IP Floater's port was 7000)",
    )
    .option(
      '--ipfloater-pool <name[,name…]>',
      "pools whose addresses are IP Floater's public IPs (default: every pool)",
    )
    .option(
      '--ipfloater-allow <cidr[,cidr…]>',
      "sources that may call IP Floater's APIs (needed, or --ipfloater-auth token, beyond loopback)",
    )
    .addOption(
      new Option(
        '--ipfloater-auth <mode>',
        "none (IP Floater's way, default) or token: HTTP basic auth with an API token as the password",
      ).choices(['none', 'token']),
    )
    .addOption(
      new Option('--log-level <level>', 'log level (default info)').choices([
        'fatal',
        'error',
        'warn',
        'info',
        'debug',
        'silent',
      ]),
    )
    .addOption(
      new Option(
        '--log-format <format>',
        'human (lines for people) or json (one object per line, for the journal); default human on a terminal, json otherwise',
      ).choices(['human', 'json']),
    )
    .action(async (flags: AgentFlags) => {
      await runAgentCommand(flags);
    });
}

/**
 * The agent's modules (the stores with gRPC and SQLite, Fastify, the dataplane) are loaded
 * here, not at the top: every other CLI command starts in a third of the time without them.
 */
async function runAgentCommand(flags: AgentFlags): Promise<void> {
  const { loadConfigFile, resolveConfig } = await import('./config.js');
  const { startAgent } = await import('./run.js');
  const configPath =
    flags.config ?? ((await exists(DEFAULT_CONFIG_FILE)) ? DEFAULT_CONFIG_FILE : undefined);
  const file = configPath ? await loadConfigFile(configPath) : {};
  const fromFlags: RawAgentOptions = {
    node: flags.node,
    store: flags.store,
    listen: flags.listen,
    tokenFile: flags.tokenFile,
    credentialFile: flags.credentialFile,
    joinTokenFile: flags.joinTokenFile,
    tlsCert: flags.tlsCert,
    tlsKey: flags.tlsKey,
    etcdCa: flags.etcdCa,
    etcdCert: flags.etcdCert,
    etcdKey: flags.etcdKey,
    etcdUser: flags.etcdUser,
    etcdPasswordFile: flags.etcdPasswordFile,
    resyncSeconds: flags.resyncSeconds,
    logLevel: flags.logLevel,
    logFormat: flags.logFormat,
    site: flags.site,
    stateDir: flags.stateDir,
    tunnelPort: flags.tunnelPort,
    endpoint: flags.endpoint,
    underlayMtu: flags.underlayMtu,
    tunnelMtu: flags.tunnelMtu,
    tunnelDriver: flags.tunnelDriver,
    probeSeconds: flags.probeSeconds,
    egress: flags.egress,
    dataplane: flags.dataplane,
    netns: flags.netns,
    ipfloaterRest: flags.ipfloaterRest,
    ipfloaterXmlrpc: flags.ipfloaterXmlrpc,
    ipfloaterPool: flags.ipfloaterPool,
    ipfloaterAllow: flags.ipfloaterAllow,
    ipfloaterAuth: flags.ipfloaterAuth,
  };
  const config = resolveConfig(file, fromFlags, configPath);
  const agent = await startAgent(config);
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      resolve();
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
  await agent.stop();
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
