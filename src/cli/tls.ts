/**
 * `ipferry tls init`: the hub's self-signed certificate and key, where docs/configuration.md
 * expects them (/etc/ipferry/tls/cert.pem and key.pem), for `--tls-cert`/`--tls-key`.
 *
 * The key is made by node:crypto (P-256, as the lab's certificates: every client ipferry talks
 * to takes it) and written 0600 before anything is in it, so it is never readable by others, not
 * even for a moment; openssl then signs the certificate, because node:crypto cannot make one.
 * The certificate is its own CA (basicConstraints CA:TRUE), so clients can trust it with
 * `--ca-file`, and carries every name and address clients use in subjectAltName (the common name
 * is not checked against them). Joins need no CA: a join token carries the certificate's SHA-256,
 * which the joining agent pins — the fingerprint printed here.
 */
import { execFile } from 'node:child_process';
import { generateKeyPairSync, randomBytes, X509Certificate, createPrivateKey } from 'node:crypto';
import { chmod, link, lstat, mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { tryParseAddress } from '../core/address.js';
import { IpferryError } from '../core/errors.js';
import { UsageError } from './exit.js';

export const DEFAULT_TLS_DIR = '/etc/ipferry/tls';
/** Ten years: joined agents pin this very certificate, so a new one means re-pinning them all. */
export const DEFAULT_TLS_DAYS = 3650;
/** Names every certificate carries, for the CLI on the hub itself (the API listens there by default). */
const LOOPBACK = ['localhost', '127.0.0.1', '::1'];

export interface TlsInitOptions {
  readonly dir: string;
  /** DNS names and IP addresses (canonical text), the first one the subject's common name. */
  readonly dns: readonly string[];
  readonly ips: readonly string[];
  readonly days: number;
  readonly force: boolean;
}

export interface TlsInitResult {
  readonly cert: string;
  readonly key: string;
  /** SHA-256 of the certificate, 64 lower-case hex digits: what join tokens carry. */
  readonly fingerprint: string;
  readonly notAfter: string;
}

/** An IpferryError whose hint is about `tls init`, not about the agent's TLS flags. */
class TlsInitError extends IpferryError {
  override readonly hint: string;

  constructor(reason: string, hint: string) {
    super('IPF_E_TLS', { reason });
    this.hint = hint;
  }
}

const DNS_LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/i;

function isDnsName(text: string): boolean {
  const labels = (text.startsWith('*.') ? text.slice(2) : text).split('.');
  return text.length <= 253 && labels.every((l) => DNS_LABEL.test(l));
}

interface TlsInitFlags {
  dir?: string;
  name?: string[];
  days?: string;
  force?: boolean;
}

/** Flags to options; every bad one named at once, nothing written. */
export function parseTlsInitFlags(flags: TlsInitFlags, host: string = hostname()): TlsInitOptions {
  const problems: string[] = [];
  const dir = flags.dir ?? DEFAULT_TLS_DIR;
  if (dir === '') problems.push('--dir must name a directory');
  const given = flags.name && flags.name.length > 0 ? flags.name : isDnsName(host) ? [host] : [];
  const dns: string[] = [];
  const ips: string[] = [];
  for (const name of [...given, ...LOOPBACK]) {
    const address = tryParseAddress(name);
    if (address) {
      if (!ips.includes(address.text)) ips.push(address.text);
    } else if (isDnsName(name)) {
      if (!dns.includes(name.toLowerCase())) dns.push(name.toLowerCase());
    } else {
      problems.push(
        `--name ${JSON.stringify(name)} is neither an IP address nor a DNS name (letters, digits, '-', '.'; '*.' in front for a wildcard)`,
      );
    }
  }
  const days = flags.days === undefined ? DEFAULT_TLS_DAYS : Number(flags.days);
  if (!/^\d+$/.test(flags.days ?? '1') || !Number.isSafeInteger(days) || days < 1 || days > 36500) {
    problems.push(`--days must be a whole number of days from 1 to 36500, not ${flags.days}`);
  }
  if (problems.length > 0) throw new UsageError(problems.join('; '), 'ipferry tls init');
  return { dir, dns, ips, days, force: flags.force === true };
}

async function exists(path: string): Promise<boolean> {
  return lstat(path).then(
    () => true,
    () => false,
  );
}

function openssl(args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('openssl', [...args], { timeout: 30_000 }, (error, _stdout, stderr) => {
      if (!error) return resolve();
      const missing = (error as NodeJS.ErrnoException).code === 'ENOENT';
      reject(
        new TlsInitError(
          missing
            ? 'openssl is not installed'
            : `openssl could not sign the certificate: ${String(stderr).trim().split('\n')[0]}`,
          'Install it (apt-get install openssl) and run `ipferry tls init` again.',
        ),
      );
    });
  });
}

/** Writes the key and certificate under temporary names, checks them, then puts them in place. */
export async function tlsInit(options: TlsInitOptions): Promise<TlsInitResult> {
  try {
    return await makePair(options);
  } catch (e) {
    if (e instanceof IpferryError) throw e;
    const { code, path } = e as NodeJS.ErrnoException;
    throw new TlsInitError(
      `cannot write ${path ?? options.dir} (${code ?? (e as Error).message})`,
      'Run it as root (the agent reads the key as root), or give --dir a directory you may write.',
    );
  }
}

async function makePair(options: TlsInitOptions): Promise<TlsInitResult> {
  const cert = join(options.dir, 'cert.pem');
  const key = join(options.dir, 'key.pem');
  if (!options.force) {
    for (const path of [cert, key]) {
      if (await exists(path)) throw existsError(path);
    }
  }
  await mkdir(options.dir, { recursive: true, mode: 0o755 });
  const tag = randomBytes(6).toString('hex');
  const tmpKey = join(options.dir, `.key.pem.${tag}`);
  const tmpCert = join(options.dir, `.cert.pem.${tag}`);
  try {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const pem = privateKey.export({ type: 'pkcs8', format: 'pem' });
    const handle = await open(tmpKey, 'wx', 0o600);
    try {
      await handle.writeFile(pem);
    } finally {
      await handle.close();
    }
    const subjectAltName = [
      ...options.dns.map((n) => `DNS:${n}`),
      ...options.ips.map((a) => `IP:${a}`),
    ].join(',');
    await openssl([
      'req',
      '-x509',
      '-new',
      // Only what is asked for here, none of openssl.cnf's defaults.
      ...['-config', '/dev/null'],
      ...['-key', tmpKey, '-out', tmpCert, '-sha256', '-days', String(options.days)],
      ...['-subj', `/CN=${options.dns[0] ?? options.ips[0] ?? 'ipferry'}`],
      ...['-addext', `subjectAltName=${subjectAltName}`],
      ...['-addext', 'basicConstraints=critical,CA:TRUE'],
      ...['-addext', 'keyUsage=critical,digitalSignature,keyCertSign'],
      ...['-addext', 'extendedKeyUsage=serverAuth'],
      ...['-addext', 'subjectKeyIdentifier=hash'],
    ]);
    const x509 = new X509Certificate(await readFile(tmpCert, 'utf8'));
    if (!x509.checkPrivateKey(createPrivateKey(pem))) {
      throw new TlsInitError('openssl signed with another key', 'This is a bug; please report it.');
    }
    await chmod(tmpCert, 0o644);
    await place(tmpKey, key, options.force);
    try {
      await place(tmpCert, cert, options.force);
    } catch (e) {
      if (!options.force) await rm(key, { force: true });
      throw e;
    }
    return {
      cert,
      key,
      fingerprint: x509.fingerprint256.replaceAll(':', '').toLowerCase(),
      notAfter: new Date(x509.validTo).toISOString(),
    };
  } finally {
    await Promise.all([rm(tmpKey, { force: true }), rm(tmpCert, { force: true })]);
  }
}

/**
 * Moves a finished file into place. Without --force by a hard link, which fails when the name
 * exists: a file made meanwhile by someone else is refused, never replaced.
 */
async function place(from: string, to: string, force: boolean): Promise<void> {
  if (force) return rename(from, to);
  try {
    await link(from, to);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw existsError(to);
    throw e;
  }
}

function existsError(path: string): TlsInitError {
  return new TlsInitError(
    `${path} exists`,
    'Keep it, or give --force to replace the certificate and key: every client that trusts it (--ca-file) and every agent that joined with a token pinning it must then be given the new one.',
  );
}

function report(options: TlsInitOptions, result: TlsInitResult): string {
  const names = [...options.dns, ...options.ips].join(', ');
  return [
    `certificate  ${result.cert}  (valid until ${result.notAfter.slice(0, 10)})`,
    `key          ${result.key}  (mode 0600)`,
    `names        ${names}`,
    `sha256       ${result.fingerprint}`,
    '',
    'Serve the API with it, in /etc/ipferry/agent.yaml:',
    `  listen: 0.0.0.0:7447`,
    `  tlsCert: ${result.cert}`,
    `  tlsKey: ${result.key}`,
    'Clients verify it with the certificate (copy it to them):',
    `  ipferry --server https://${options.dns.find((n) => n !== 'localhost') ?? options.ips[0] ?? 'localhost'}:7447 --ca-file ${result.cert} status`,
    `  (or IPFERRY_CA_FILE=${result.cert})`,
    'Join tokens made by this agent carry the sha256 above: joining agents pin it, no CA needed.',
    '',
  ].join('\n');
}

/** `ipferry tls init`. */
export function tlsCommand(out: (text: string) => void): Command {
  const tls = new Command('tls').description("The agent API's TLS certificate");
  tls
    .command('init')
    .description(
      "Make the hub's self-signed certificate and key (for the agent's --tls-cert and --tls-key) and print its SHA-256 fingerprint",
    )
    .option('--dir <dir>', `directory for cert.pem and key.pem (default ${DEFAULT_TLS_DIR})`)
    .option(
      '--name <host>',
      'a DNS name or IP address clients reach the agent at; repeat for more (default: this host name; localhost, 127.0.0.1 and ::1 always)',
      (value: string, previous: string[] = []) => [...previous, value],
    )
    .option('--days <n>', `days the certificate is valid (default ${DEFAULT_TLS_DAYS})`)
    .option('--force', 'replace an existing certificate and key')
    .action(async (flags: TlsInitFlags) => {
      const options = parseTlsInitFlags(flags);
      out(report(options, await tlsInit(options)));
    });
  return tls;
}
