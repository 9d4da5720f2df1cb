/**
 * Test servers and probes for labs. Probes run `socat` / `ping` inside a host's namespace
 * (they start in milliseconds, unlike node) and answer with what came back, or `undefined`
 * when nothing did: a failed probe is a result, not an error. They throw only when the lab
 * itself is broken (unknown host, missing namespace, missing tool).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { IpferryError } from '../core/errors.js';
import type { Lab, LabProcess } from './topology.js';

export type Protocol = 'tcp' | 'udp';

export interface EchoServerOptions {
  /** The name the server answers with (default: the host's name). */
  readonly name?: string;
  readonly tcp?: readonly number[];
  readonly udp?: readonly number[];
  /** Addresses to bind (default `::`, dual stack). */
  readonly bind?: readonly string[];
  /** How long to wait for `ready` (default 15 s: node + tsx start-up). */
  readonly timeoutMs?: number;
}

export interface EchoServer {
  readonly host: string;
  readonly name: string;
  readonly tcp: readonly number[];
  readonly udp: readonly number[];
  readonly process: LabProcess;
  stop(): Promise<void>;
}

export interface EchoReply {
  /** The answering server's name. */
  readonly name: string;
  /** The source address the server saw. */
  readonly address: string;
}

/**
 * The command line of the echo server: the TypeScript source through tsx when this module runs
 * from source (tests), the compiled file when it runs from dist/.
 */
export function echoServerCommand(): string[] {
  if (import.meta.url.endsWith('.ts')) {
    // tsx is resolved here, not by the child, so the child's working directory does not matter.
    const server = fileURLToPath(new URL('./echo-server.ts', import.meta.url));
    return [process.execPath, '--import', import.meta.resolve('tsx'), server];
  }
  return [process.execPath, fileURLToPath(new URL('./echo-server.js', import.meta.url))];
}

export async function startEchoServer(
  lab: Lab,
  host: string,
  options: EchoServerOptions = {},
): Promise<EchoServer> {
  const name = options.name ?? host;
  const tcp = options.tcp ?? [];
  const udp = options.udp ?? [];
  const argv = [...echoServerCommand(), '--name', name];
  if (tcp.length > 0) argv.push('--tcp', tcp.join(','));
  if (udp.length > 0) argv.push('--udp', udp.join(','));
  if (options.bind) argv.push('--bind', options.bind.join(','));
  const proc = await lab.spawn(host, argv, {
    ready: /^ready$/m,
    timeoutMs: options.timeoutMs ?? 15_000,
  });
  return { host, name, tcp, udp, process: proc, stop: () => proc.stop() };
}

/** `be1 10.0.0.11\n` → { name: 'be1', address: '10.0.0.11' }; undefined for anything else. */
export function parseEchoReply(reply: string | undefined): EchoReply | undefined {
  const match = /^(\S+) (\S+)\n$/.exec(reply ?? '');
  if (!match?.[1] || !match[2]) return undefined;
  return { name: match[1], address: match[2] };
}

/** An address as URLs, socat and endpoints write it next to a port: IPv6 in brackets. */
export function bracketed(address: string): string {
  return address.includes(':') ? `[${address}]` : address;
}

/** `address:port`, with IPv6 in brackets. */
export function hostPort(address: string, port: number): string {
  return `${bracketed(address)}:${port}`;
}

/** socat's address syntax wants IPv6 literals in brackets; the family is spelled out. */
export function socatAddress(protocol: Protocol, address: string, port: number): string {
  const v6 = address.includes(':');
  return `${protocol.toUpperCase()}${v6 ? '6' : '4'}:${hostPort(address, port)}`;
}

function seconds(ms: number): string {
  return String(Math.max(ms, 1) / 1000);
}

interface Outcome {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** We killed it: out of time, or `until` was satisfied. */
  readonly timedOut: boolean;
  readonly matched: boolean;
}

interface RunOptions {
  readonly timeoutMs: number;
  /** Written to stdin, which then stays open; without it stdin is /dev/null (closed). */
  readonly input?: string;
  /** Close stdin once `input` is written (a TCP socat then half-closes its connection). */
  readonly endInput?: boolean;
  /** Stop the process as soon as its stdout satisfies this. */
  readonly until?: (stdout: string) => boolean;
}

// `ip netns exec` reports its own failures (not the tool's) with these messages.
const BROKEN = /Cannot open network namespace|setting the network namespace|exec of ".*" failed/;

/** Runs a probe tool in a host without throwing for its exit code; throws for a broken lab. */
async function runProbe(
  lab: Lab,
  host: string,
  argv: string[],
  options: RunOptions,
): Promise<Outcome> {
  const child = spawn('ip', ['netns', 'exec', lab.ns(host), ...argv], {
    stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  let timedOut = false;
  let matched = false;
  // Slack over the tool's own timeouts for `ip netns exec` and process start-up.
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, options.timeoutMs + 1500);
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    if (!matched && options.until?.(stdout)) {
      matched = true;
      child.kill('SIGKILL');
    }
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  child.stdin?.on('error', () => undefined); // the tool may exit before reading
  if (options.input !== undefined) child.stdin?.write(options.input);
  if (options.input !== undefined && options.endInput === true) child.stdin?.end();
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (exitCode) => resolve(exitCode));
  }).finally(() => clearTimeout(timer));
  if (BROKEN.test(stderr)) {
    throw new IpferryError('IPF_E_DATAPLANE', { reason: `probe on ${host}: ${stderr.trim()}` });
  }
  return { code, stdout, stderr, timedOut, matched };
}

/**
 * Connects over TCP and returns everything the server sent before closing, or undefined when
 * the connection was refused or timed out. Stdin is closed: socat half-closes its side and
 * waits (-t) for the server to finish.
 */
export async function tcpProbe(
  lab: Lab,
  host: string,
  address: string,
  port: number,
  timeoutMs = 2000,
): Promise<string | undefined> {
  const t = seconds(timeoutMs);
  const target = `${socatAddress('tcp', address, port)},connect-timeout=${t}`;
  const out = await runProbe(lab, host, ['socat', '-t', t, '-T', t, 'STDIO', target], {
    timeoutMs,
  });
  if (out.timedOut || out.code !== 0) return undefined;
  return out.stdout;
}

/**
 * Sends one datagram and returns the first line that comes back, or undefined (refused by an
 * ICMP port unreachable, or nothing within the timeout). Stdin stays open: with it closed, a
 * UDP socat would wait out its whole -t before exiting; we stop it at the first reply instead.
 */
export async function udpProbe(
  lab: Lab,
  host: string,
  address: string,
  port: number,
  timeoutMs = 2000,
  payload = 'probe\n',
): Promise<string | undefined> {
  const out = await udpExchange(lab, host, address, port, timeoutMs, payload, (stdout) =>
    stdout.includes('\n'),
  );
  return out === undefined ? undefined : out.slice(0, out.indexOf('\n') + 1);
}

/** Sends one datagram; what came back once `until` holds, else undefined. */
async function udpExchange(
  lab: Lab,
  host: string,
  address: string,
  port: number,
  timeoutMs: number,
  payload: string,
  until: (stdout: string) => boolean,
): Promise<string | undefined> {
  const argv = ['socat', '-T', seconds(timeoutMs), '-', socatAddress('udp', address, port)];
  const out = await runProbe(lab, host, argv, { timeoutMs, input: payload, until });
  return out.matched ? out.stdout : undefined;
}

/** Asks an echo server (over TCP or UDP) who answered and which source address it saw. */
export async function echoProbe(
  lab: Lab,
  host: string,
  protocol: Protocol,
  address: string,
  port: number,
  timeoutMs = 2000,
): Promise<EchoReply | undefined> {
  const probe = protocol === 'tcp' ? tcpProbe : udpProbe;
  return parseEchoReply(await probe(lab, host, address, port, timeoutMs));
}

/**
 * What answered a probe of a port that may hold any service, not only an echo server (a mail
 * server behind a port forward): the echo server's line, or the first line of what another
 * service sent, or — TCP — a connection on which nothing came back.
 */
export type ServiceReply =
  | { readonly kind: 'echo'; readonly echo: EchoReply }
  | { readonly kind: 'other'; readonly text: string }
  | { readonly kind: 'silent' };

/** The longest part of another service's answer a probe reports. */
const REPLY_SHOWN = 60;

/** Like echoProbe, but tells an answer of another service from no answer at all. */
export async function serviceProbe(
  lab: Lab,
  host: string,
  protocol: Protocol,
  address: string,
  port: number,
  timeoutMs = 2000,
): Promise<ServiceReply | undefined> {
  // UDP: any datagram back is an answer (a DNS server's has no line end).
  const raw =
    protocol === 'tcp'
      ? await tcpProbe(lab, host, address, port, timeoutMs)
      : await udpExchange(lab, host, address, port, timeoutMs, 'probe\n', (out) => out !== '');
  if (raw === undefined) return undefined;
  const echo = parseEchoReply(protocol === 'udp' ? raw.slice(0, raw.indexOf('\n') + 1) : raw);
  if (echo) return { kind: 'echo', echo };
  if (raw === '') return { kind: 'silent' };
  // Its first line, in printable characters: a banner (`220 mail ESMTP`) or some of a binary answer.
  const line = (raw.split(/\r?\n/).find((l) => l.trim() !== '') ?? raw)
    .replace(/[^\x20-\x7e]/g, '.')
    .trim();
  return {
    kind: 'other',
    text: line.length > REPLY_SHOWN ? `${line.slice(0, REPLY_SHOWN)}…` : line,
  };
}

/**
 * An outbound connection from a backend: `from` connects to `server` (an echo server running on
 * the outside client) at `address`, and gets back the source address the client saw — the
 * backend's own, or the one a gateway translated it to. Undefined when nothing came back.
 */
export async function outboundProbe(
  lab: Lab,
  from: string,
  server: EchoServer,
  address: string,
  options: { protocol?: Protocol; port?: number; timeoutMs?: number } = {},
): Promise<string | undefined> {
  const protocol = options.protocol ?? 'tcp';
  const port = options.port ?? (protocol === 'tcp' ? server.tcp[0] : server.udp[0]);
  if (port === undefined) {
    throw new IpferryError('IPF_E_DATAPLANE', {
      reason: `echo server ${server.name} has no ${protocol} port`,
    });
  }
  const reply = await echoProbe(lab, from, protocol, address, port, options.timeoutMs);
  if (reply && reply.name !== server.name) {
    // Another server answered: the lab is wired differently from what the caller believes.
    throw new IpferryError('IPF_E_DATAPLANE', {
      reason: `expected ${server.name} at ${address}:${port}, ${reply.name} answered`,
    });
  }
  return reply?.address;
}

/** One ping (v4 or v6, chosen by the address); true when a reply came back in time. */
export async function ping(
  lab: Lab,
  host: string,
  address: string,
  timeoutMs = 2000,
): Promise<boolean> {
  const wait = String(Math.max(1, Math.ceil(timeoutMs / 1000)));
  const out = await runProbe(lab, host, ['ping', '-n', '-q', '-c', '1', '-W', wait, address], {
    timeoutMs,
  });
  return !out.timedOut && out.code === 0;
}

// ---------------------------------------------------------------------------------------------
// Payloads: large TCP transfers both ways over one connection (path MTU, MSS clamping).

/** The most a payload echo server sends back: dd's one block. */
export const PAYLOAD_ECHO_MAX = 1024 * 1024;

export interface PayloadEchoServer {
  readonly host: string;
  readonly port: number;
  readonly process: LabProcess;
  stop(): Promise<void>;
}

/**
 * `bytes` random printable characters (the base64 alphabet): random, so that a truncated,
 * reordered or stale payload cannot pass for it; printable, so that it survives the probes'
 * text pipes unchanged.
 */
export function randomPayload(bytes: number): string {
  let text = '';
  while (text.length < bytes)
    text += randomBytes(Math.ceil((bytes - text.length) * 0.75) + 3).toString('base64');
  return text.slice(0, bytes);
}

/** Resolves once `port` listens (TCP) in `host`; throws when `proc` died or time ran out. */
async function waitListening(
  lab: Lab,
  host: string,
  proc: LabProcess,
  port: number,
  timeoutMs: number,
): Promise<void> {
  let exited = false;
  void proc.exited.then(() => (exited = true));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { stdout } = await lab.exec(host, ['ss', '-H', '-l', '-t', '-n', `sport = :${port}`]);
    if (stdout.trim() !== '') return;
    if (exited || Date.now() > deadline) {
      await proc.stop();
      const why = exited
        ? `exited: ${proc.stderr().trim()}`
        : `not listening after ${timeoutMs} ms`;
      throw new IpferryError('IPF_E_DATAPLANE', {
        reason: `payload server on ${host}:${port} ${why}`,
      });
    }
    await sleep(50);
  }
}

/**
 * A TCP server (socat, dual stack, every address of the host) that reads what a client sends
 * until the client half-closes — at most PAYLOAD_ECHO_MAX bytes — and then writes all of it
 * back in one write (`dd iflag=fullblock`). One connection thus carries the client's payload one
 * way and then the same payload, as one large write, the other way: a client that gets back
 * exactly what it sent knows both directions delivered it intact. Resolves once it listens.
 */
export async function startPayloadEchoServer(
  lab: Lab,
  host: string,
  port: number,
  options: { timeoutMs?: number } = {},
): Promise<PayloadEchoServer> {
  const echo = `EXEC:dd bs=${PAYLOAD_ECHO_MAX} count=1 iflag=fullblock status=none`;
  // -t: how long a connection may take to echo after the client's half-close; -T: a stalled
  // connection (a black hole) is given up after this long, so no forked child lingers.
  const listen = `TCP6-LISTEN:${port},ipv6only=0,fork,reuseaddr`;
  const proc = await lab.spawn(host, ['socat', '-t', '30', '-T', '30', listen, echo]);
  await waitListening(lab, host, proc, port, options.timeoutMs ?? 5000);
  return { host, port, process: proc, stop: () => proc.stop() };
}

/**
 * Sends `payload` over one TCP connection in one write, half-closes, and returns everything that
 * came back until the server closed — from a payload echo server, the payload itself when both
 * directions delivered it intact — or undefined when nothing came back (refused, no connection,
 * or stalled from the start). A path that stalls midway (an MTU black hole) shows as a short
 * answer after `timeoutMs` without progress.
 */
export async function tcpExchange(
  lab: Lab,
  host: string,
  address: string,
  port: number,
  payload: string,
  timeoutMs = 5000,
): Promise<string | undefined> {
  const t = seconds(timeoutMs);
  const target = `${socatAddress('tcp', address, port)},connect-timeout=${t}`;
  // The -b buffer takes the whole payload in one read, so it leaves in one write (as one TLS
  // ClientHello would), not in socat's default 8 KiB pieces.
  const buffer = String(Math.max(8192, Buffer.byteLength(payload)));
  const argv = ['socat', '-b', buffer, '-t', t, '-T', t, 'STDIO', target];
  const out = await runProbe(lab, host, argv, { timeoutMs, input: payload, endInput: true });
  return out.stdout === '' ? undefined : out.stdout;
}
