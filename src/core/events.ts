/**
 * The audit trail: one event per API write and per refusal of one (the agent's API, the join,
 * IP Floater's REST and XML-RPC APIs), saying who (the token's name), what (method, path, query
 * and body, secrets left out), how it ended (status, error code) and the store revision it made. Kept as a ring of EVENTS_CAPACITY slots: the event with
 * sequence number `seq` goes to slot `seq % EVENTS_CAPACITY`, so each write of an event replaces
 * the oldest one in the same transaction and the trail never grows past its bound.
 */

export const EVENTS_CAPACITY = 10_000;

/** The most events one answer carries. */
export const MAX_EVENTS_PER_ANSWER = 1000;

/** The APIs besides the agent's own whose writes are recorded (IP Floater's, api/ipfloater-*.ts). */
export type AuditedApi = 'ipfloater-rest' | 'ipfloater-xmlrpc';

export interface AuditEvent {
  /** 1, 2, 3…: the order events were recorded in. */
  readonly seq: number;
  readonly at: string;
  /**
   * The token's name (token file), `node NAME` for a node credential, `anonymous` without;
   * `ipfloater ADDRESS` for a client of IP Floater's APIs without a token (they have no name).
   */
  readonly who: string;
  /** Which API took it; absent: the agent's own. */
  readonly api?: AuditedApi;
  readonly method: string;
  /** The path without its query. */
  readonly path: string;
  readonly query?: Readonly<Record<string, unknown>>;
  /** The request's body; an XML-RPC call's `{method, params}`. */
  readonly body?: unknown;
  readonly status: number;
  /** The error's code when it was refused or failed (XMLRPC_FALSE, XMLRPC_FAULT: see XmlRpcCode). */
  readonly code?: string;
  /**
   * What IP Floater's APIs answered, cut to MAX_ANSWER_CHARS: the redirection made, or why not.
   * (The agent's own answers are left out: some carry secrets, a join token's, a credential.)
   */
  readonly answer?: string;
  /** The store revision the write made (none: it wrote nothing). */
  readonly revision?: number;
}

export type NewAuditEvent = Omit<AuditEvent, 'seq'>;

/**
 * An XML-RPC answer is HTTP 200 whatever it says: IP Floater's `[false, message]` (refused or
 * failed) and a fault are told apart from `[true, …]` by these codes.
 */
export type XmlRpcCode = 'XMLRPC_FALSE' | 'XMLRPC_FAULT';

/** The most of an answer an event keeps. */
export const MAX_ANSWER_CHARS = 200;

export function answerText(text: string): string {
  return text.length > MAX_ANSWER_CHARS ? `${text.slice(0, MAX_ANSWER_CHARS)}…` : text;
}

export function eventSlot(seq: number, capacity = EVENTS_CAPACITY): number {
  return seq % capacity;
}

/** Field names whose values are secrets, at any depth: client tokens, keys, credentials. */
const SECRET_FIELD = /token|secret|password|passphrase|private|credential|authorization/i;

export const REDACTED = '[redacted]';

/** `value` with every secret field's value replaced by REDACTED (objects and arrays walked). */
export function redactSecrets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redactSecrets);
  if (typeof value !== 'object' || value === null) return value;
  return Object.fromEntries(
    Object.entries(value).map(([k, v]) => [k, SECRET_FIELD.test(k) ? REDACTED : redactSecrets(v)]),
  );
}

/** An event as read back from the store, or undefined when the record is not one. */
export function decodeAuditEvent(value: unknown): AuditEvent | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const e = value as Partial<Record<keyof AuditEvent, unknown>>;
  if (
    typeof e.seq !== 'number' ||
    !Number.isSafeInteger(e.seq) ||
    typeof e.at !== 'string' ||
    typeof e.who !== 'string' ||
    typeof e.method !== 'string' ||
    typeof e.path !== 'string' ||
    typeof e.status !== 'number'
  )
    return undefined;
  return value as AuditEvent;
}
