/** How a failed command ends: its exit code, and the error on stderr. */
import { IpferryError } from '../core/errors.js';
import { RemoteError } from '../client/api-client.js';
import { json, terminalLines, terminalText } from './format.js';

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
 * ErrorBody instead, exactly as it came.
 *
 * A remote error's message, hint and problems are the server's text and may quote anything a
 * request or a store record held, so each is written for the terminal (format.ts; issue 12,
 * finding 8): a problem stays one line, and a message or hint that spans lines (a tool's stderr)
 * keeps its breaks but has its further lines indented, so that none of them can pass for an
 * `error` or `hint:` line of its own.
 */
export function renderError(e: IpferryError, asJson: boolean): string {
  const body = e.toJSON().error;
  if (asJson) return json(e.toJSON());
  const code = e instanceof RemoteError ? e.remoteCode : e.code;
  const lines = [`error ${terminalText(code)}: ${indented(body.message)}`];
  const problems = body.problems ?? [];
  // A single problem is already spelled out in the message.
  const alreadySaid = problems.length === 1 && body.message.includes(problems[0]?.message ?? '');
  for (const p of alreadySaid ? [] : problems)
    lines.push(
      p.path
        ? `  - ${terminalText(p.path)}: ${terminalText(p.message)}`
        : `  - ${terminalText(p.message)}`,
    );
  if (body.hint) lines.push(`hint: ${indented(body.hint)}`);
  return lines.join('\n') + '\n';
}

/** Text for a terminal whose lines after the first are indented under the line it starts. */
function indented(text: string): string {
  return terminalLines(text.replace(/\n+$/, '')).replace(/\n/g, '\n    ');
}
