/** How a failed command ends: its exit code, and the error on stderr. */
import { IpferryError } from '../core/errors.js';
import { RemoteError } from '../client/api-client.js';
import { json } from './format.js';

export const EXIT_OK = 0;
/** The agent refused the request (validation, conflict, not found, auth), or a local file failed. */
export const EXIT_ERROR = 1;
/** The command line itself is wrong. */
export const EXIT_USAGE = 2;
/** The agent could not be reached (connection, TLS, timeout, an agent that speaks no TLS). */
export const EXIT_UNREACHABLE = 3;

/** A usage error with a hint naming the command whose --help to read. */
export class UsageError extends IpferryError {
  override readonly hint: string;

  constructor(summary: string, commandPath: string) {
    super('IPF_E_USAGE', { summary });
    this.name = 'UsageError';
    this.hint = `Run \`${commandPath} --help\` for usage.`;
  }
}

export function toIpferryError(e: unknown): IpferryError {
  if (e instanceof IpferryError) return e;
  const reason = e instanceof Error ? e.message : String(e);
  return new IpferryError('IPF_E_INTERNAL', { reason });
}

export function exitCodeFor(e: IpferryError): number {
  switch (e.code) {
    case 'IPF_E_USAGE':
      return EXIT_USAGE;
    case 'IPF_E_UNREACHABLE':
    case 'IPF_E_NOT_TLS':
      return EXIT_UNREACHABLE;
    default:
      return EXIT_ERROR;
  }
}

/**
 * `error CODE: message`, each problem as `  - path: message`, then `hint: …`; with `--json` the
 * ErrorBody instead.
 */
export function renderError(e: IpferryError, asJson: boolean): string {
  const body = e.toJSON().error;
  if (asJson) return json(e.toJSON());
  const code = e instanceof RemoteError ? e.remoteCode : e.code;
  const lines = [`error ${code}: ${body.message}`];
  const problems = body.problems ?? [];
  // A single problem is already spelled out in the message.
  const alreadySaid = problems.length === 1 && body.message.includes(problems[0]?.message ?? '');
  for (const p of alreadySaid ? [] : problems)
    lines.push(p.path ? `  - ${p.path}: ${p.message}` : `  - ${p.message}`);
  if (body.hint) lines.push(`hint: ${body.hint}`);
  return lines.join('\n') + '\n';
}
