/**
 * What every CLI command shares: where output goes, the global flags resolved against the
 * environment (once, here, not deep in the commands), a lazily built API client, and the one
 * place that turns a handler's returned data into output (`--json` or the command's printer).
 */
import { readFile } from 'node:fs/promises';
import { DEFAULT_SERVER, DEFAULT_TOKEN_FILE } from '../core/defaults.js';
import { IpferryError } from '../core/errors.js';
import { ApiClient } from '../client/api-client.js';
import { json, terminalLines } from './format.js';
import {
  appliedLine,
  DEFAULT_WAIT_SECONDS,
  notApplied,
  waitApplied,
  type WaitFlags,
  type WaitScope,
} from './wait.js';

export interface Io {
  out(s: string): void;
  err(s: string): void;
}

export const processIo: Io = {
  out: (s) => void process.stdout.write(s),
  err: (s) => void process.stderr.write(s),
};

export type Env = Readonly<Record<string, string | undefined>>;

/** The program-level flags as commander parses them. */
export interface GlobalFlags {
  server?: string;
  tokenFile?: string;
  caFile?: string;
  json?: boolean;
}

/** Renders a command's data for humans; `--json` bypasses it. */
export type Printer<T> = (data: T) => string;

/**
 * The token from a token file: the first word of the first line that is neither empty nor a
 * `#` comment, so the agent's own `TOKEN ro` lines work as they are.
 */
export function parseTokenFile(text: string): string | undefined {
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    return line.split(/\s+/)[0];
  }
  return undefined;
}

/**
 * `--token-file`, else `IPFERRY_TOKEN_FILE`, else `IPFERRY_TOKEN`, else the default token file
 * when it can be read, else none (the agent then answers IPF_E_UNAUTHORIZED with a hint).
 */
export async function resolveToken(
  flags: GlobalFlags,
  env: Env,
  defaultFile: string = DEFAULT_TOKEN_FILE,
): Promise<string | undefined> {
  if (flags.tokenFile !== undefined) return readTokenFile(flags.tokenFile);
  const fileFromEnv = env['IPFERRY_TOKEN_FILE']?.trim();
  if (fileFromEnv) return readTokenFile(fileFromEnv);
  const fromEnv = env['IPFERRY_TOKEN']?.trim();
  if (fromEnv) return fromEnv;
  try {
    return parseTokenFile(await readFile(defaultFile, 'utf8'));
  } catch {
    return undefined;
  }
}

/**
 * The client's token file. Its errors are IPF_E_TOKEN_FILE, whose hint says where a client gets
 * a token (the agent's token file, or IPFERRY_TOKEN), not how an agent's secret file is kept.
 */
async function readTokenFile(path: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    throw new IpferryError('IPF_E_TOKEN_FILE', {
      path,
      problem: `cannot be read (${typeof code === 'string' ? code : String(e)})`,
    });
  }
  const token = parseTokenFile(text);
  if (token === undefined) {
    throw new IpferryError('IPF_E_TOKEN_FILE', { path, problem: 'contains no token' });
  }
  return token;
}

async function readCaFile(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    throw new IpferryError('IPF_E_CONFIG', {
      source: `--ca-file ${path}`,
      summary: `cannot be read (${typeof code === 'string' ? code : String(e)})`,
    });
  }
}

export interface ContextOptions {
  readonly io: Io;
  readonly env: Env;
  /** Read after parsing: commander fills the program's options while it parses. */
  readonly flags: () => GlobalFlags;
  readonly version: string;
  readonly defaultTokenFile?: string;
  readonly timeoutMs?: number;
}

export class CliContext {
  readonly io: Io;
  private readonly options: ContextOptions;
  private client: ApiClient | undefined;

  constructor(options: ContextOptions) {
    this.options = options;
    this.io = options.io;
  }

  get json(): boolean {
    return this.options.flags().json === true;
  }

  get version(): string {
    return this.options.version;
  }

  /** The API client for the resolved server, token and CA; built on first use. */
  async api(): Promise<ApiClient> {
    if (this.client) return this.client;
    const { env } = this.options;
    const flags = this.options.flags();
    const server = flags.server ?? (env['IPFERRY_SERVER'] || DEFAULT_SERVER);
    const caFile = flags.caFile ?? (env['IPFERRY_CA_FILE'] || undefined);
    const token = await resolveToken(flags, env, this.options.defaultTokenFile);
    const ca = caFile !== undefined ? await readCaFile(caFile) : undefined;
    this.client = new ApiClient({
      server,
      ...(token !== undefined ? { token } : {}),
      ...(ca !== undefined ? { ca } : {}),
      ...(this.options.timeoutMs !== undefined ? { timeoutMs: this.options.timeoutMs } : {}),
      userAgent: `ipferry-cli/${this.options.version}`,
    });
    return this.client;
  }

  /** Run a handler against the API and print what it returns. */
  async run<T>(handler: (api: ApiClient) => Promise<T>, printer: Printer<T>): Promise<void> {
    const data = await handler(await this.api());
    this.print(data, printer);
  }

  /**
   * Run a write and print what it returns, then, unless `--no-wait`, wait until the agents it
   * concerns have applied it: `applied on gw in 140 ms` (`--json`: the report under `applied`),
   * or fail with why not. A write that wrote nothing (a replayed client token) waits for nothing.
   */
  async write<T>(
    handler: (api: ApiClient) => Promise<T>,
    printer: Printer<T>,
    scope: (data: T) => WaitScope,
    flags: WaitFlags,
    options: { readonly appliedTo?: 'out' | 'err' } = {},
  ): Promise<void> {
    const api = await this.api();
    api.lastWriteRevision = undefined;
    const data = await handler(api);
    const since = performance.now();
    const revision = api.lastWriteRevision;
    if (flags.wait === false || revision === undefined) {
      this.print(data, printer);
      return;
    }
    const timeout = flags.timeout ?? DEFAULT_WAIT_SECONDS;
    const concerned = scope(data);
    const applied = await waitApplied(api, revision, concerned, timeout, since);
    const ok = applied.outcome === 'applied';
    const line = ok ? appliedLine(applied, concerned.fip) : '';
    if (options.appliedTo === 'err') {
      this.print(data, printer, { applied });
      if (ok && !this.json) this.io.err(terminalLines(line));
    } else {
      this.print(data, (d) => printer(d) + line, { applied });
    }
    if (!ok) throw notApplied(applied, timeout);
  }

  /**
   * The one way a command's text reaches stdout. Whatever a printer built, from the API's data or
   * a store's, leaves here with every control, bidirectional control and line separator but the
   * line feed as a visible `\u{…}` escape (issue 12, finding 8), so no printer can let one drive
   * the terminal by forgetting format.ts; what tables and `key: value` blocks escaped already
   * passes unchanged, escapes being printable. `--json` writes the data exactly: JSON.stringify
   * escapes the C0 controls itself, and a program, not a terminal, is meant to read it.
   */
  print<T>(data: T, printer: Printer<T>, extra?: Readonly<Record<string, unknown>>): void {
    if (!this.json) {
      this.io.out(terminalLines(printer(data)));
      return;
    }
    const withExtra = extra && isRecord(data) ? { ...data, ...extra } : data;
    this.io.out(json(withExtra));
  }

  async close(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    await client?.close();
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
