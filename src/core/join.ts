/**
 * The two strings of joining a remote agent to its hub, and nothing else: formats only, no I/O.
 *
 * - A **join token** is what `ipferry node join-token create` prints for the operator to copy to
 *   the remote host: `ipfjoin1.` followed by base64url of a small JSON object
 *   `{"u": [hub URLs], "s": secret, "f": fingerprint?}`. The secret is 32 random bytes (base64url);
 *   the hub keeps only its SHA-256, single-use and under a lease. `f` is the SHA-256 of the hub's
 *   TLS certificate (64 lower-case hex digits), so the first contact is pinned without a CA.
 * - A **node credential** is what the hub answers to a join: `ipfnode1.NODE.SECRET`. The node name
 *   in it tells the hub which stored digest to compare with (in constant time); the secret is
 *   32 random bytes (base64url, so it never contains a dot).
 *
 * Parsers return undefined for anything malformed and never echo their input: it is a secret.
 */

import { checkName, Problems } from './validate.js';

export const JOIN_TOKEN_PREFIX = 'ipfjoin1.';
export const NODE_CREDENTIAL_PREFIX = 'ipfnode1.';

/** 32 bytes in base64url without padding. */
const SECRET = /^[A-Za-z0-9_-]{43}$/;
const HEX_FINGERPRINT = /^[0-9a-f]{64}$/;

export interface JoinToken {
  /** Where the hub said it can be reached (http or https URLs). */
  readonly urls: readonly string[];
  readonly secret: string;
  /** SHA-256 of the hub's TLS certificate (DER), lower-case hex. */
  readonly fingerprint?: string;
}

export function isSecret(text: string): boolean {
  return SECRET.test(text);
}

export function encodeJoinToken(token: JoinToken): string {
  const body = {
    u: token.urls,
    s: token.secret,
    ...(token.fingerprint !== undefined ? { f: token.fingerprint } : {}),
  };
  return JOIN_TOKEN_PREFIX + Buffer.from(JSON.stringify(body), 'utf8').toString('base64url');
}

export function decodeJoinToken(text: string): JoinToken | undefined {
  const trimmed = text.trim();
  if (!trimmed.startsWith(JOIN_TOKEN_PREFIX) || trimmed.length > 4096) return undefined;
  const encoded = trimmed.slice(JOIN_TOKEN_PREFIX.length);
  if (!/^[A-Za-z0-9_-]+$/.test(encoded)) return undefined;
  let body: unknown;
  try {
    body = JSON.parse(Buffer.from(encoded, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return undefined;
  const { u, s, f, ...rest } = body as Record<string, unknown>;
  if (Object.keys(rest).length > 0) return undefined;
  if (typeof s !== 'string' || !SECRET.test(s)) return undefined;
  if (
    !Array.isArray(u) ||
    !u.every((url): url is string => typeof url === 'string' && isHubUrl(url))
  )
    return undefined;
  if (f !== undefined && (typeof f !== 'string' || !HEX_FINGERPRINT.test(f))) return undefined;
  return { urls: u, secret: s, ...(f !== undefined ? { fingerprint: f } : {}) };
}

export function encodeNodeCredential(node: string, secret: string): string {
  return `${NODE_CREDENTIAL_PREFIX}${node}.${secret}`;
}

export function parseNodeCredential(text: string): { node: string; secret: string } | undefined {
  if (!text.startsWith(NODE_CREDENTIAL_PREFIX)) return undefined;
  const rest = text.slice(NODE_CREDENTIAL_PREFIX.length);
  const dot = rest.lastIndexOf('.');
  if (dot <= 0) return undefined;
  const node = rest.slice(0, dot);
  const secret = rest.slice(dot + 1);
  return isNodeName(node) && SECRET.test(secret) ? { node, secret } : undefined;
}

/**
 * A certificate fingerprint as 64 lower-case hex digits, from that form or from OpenSSL's and
 * Node's `AB:CD:…` form (optionally prefixed `sha256:`); undefined if it is neither.
 */
export function normalizeFingerprint(text: string): string | undefined {
  const hex = text
    .trim()
    .replace(/^sha256[:=]/i, '')
    .replaceAll(':', '')
    .toLowerCase();
  return HEX_FINGERPRINT.test(hex) ? hex : undefined;
}

function isHubUrl(text: string): boolean {
  return /^https?:\/\/[^\s/?#@]+(\/[^\s?#]*)?$/i.test(text) && text.length <= 512;
}

function isNodeName(text: string): boolean {
  const p = new Problems();
  checkName(p, 'node', text);
  return p.ok;
}
