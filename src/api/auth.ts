/**
 * Bearer-token authentication. Tokens are kept only as SHA-256 digests and compared in
 * constant time, so neither a memory dump of the token list nor response timing reveals a
 * token. A token is read-write (`rw`, the default) or read-only (`ro`).
 *
 * Token file format (mode 0600): one token per line, optionally followed by its access and
 * `name=NAME` (what the audit trail calls it), `# comments` and blank lines ignored. A line may
 * hold `sha256:HEX` (the token's SHA-256 in hex) instead of the token, so the agent's file need
 * not contain any usable secret:
 *
 *     s3cr3t-admin-token rw name=alice
 *     sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8 ro
 *
 * A token without a name is called `sha256:` and the first 12 hex digits of its digest: it tells
 * tokens apart and reveals nothing usable.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { IpferryError } from '../core/errors.js';

export type Access = 'rw' | 'ro';

/**
 * Who sent a request: an operator or tool with a token of the token file (`admin`), or a remote
 * agent with the credential its node got when it joined (`node`, only for /v1/store).
 */
export type Caller =
  | { readonly kind: 'admin'; readonly access: Access }
  | { readonly kind: 'node'; readonly node: string };

const callers = new WeakMap<FastifyRequest, Caller>();

export function setCaller(request: FastifyRequest, caller: Caller): void {
  callers.set(request, caller);
}

/** The authenticated caller; routes behind the auth hook always have one. */
export function callerOf(request: FastifyRequest): Caller {
  const caller = callers.get(request);
  if (!caller) throw new IpferryError('IPF_E_UNAUTHORIZED');
  return caller;
}

interface Entry {
  readonly digest: Buffer;
  readonly access: Access;
  readonly name: string;
}

const TOKEN_NAME = /^name=([A-Za-z0-9._@-]{1,64})$/;

export class TokenSet {
  private constructor(private readonly entries: readonly Entry[]) {}

  static parse(text: string, source: string): TokenSet {
    const entries: Entry[] = [];
    text.split('\n').forEach((raw, i) => {
      const line = raw.replace(/#.*$/, '').trim();
      if (!line) return;
      const [token, access = 'rw', named, ...rest] = line.split(/\s+/);
      const stored = token ? storedDigest(token) : undefined;
      const name = named === undefined ? undefined : TOKEN_NAME.exec(named)?.[1];
      if (
        !stored ||
        (access !== 'rw' && access !== 'ro') ||
        (named !== undefined && name === undefined) ||
        rest.length > 0
      ) {
        // The line number, never the line: it holds a secret.
        throw new IpferryError('IPF_E_SECRET_FILE', {
          path: source,
          problem: `has an invalid entry on line ${i + 1} (expected "TOKEN [rw|ro] [name=NAME]" with a token of at least 16 characters, or "sha256:HEX [rw|ro] [name=NAME]")`,
        });
      }
      entries.push({
        digest: stored,
        access,
        name: name ?? `sha256:${stored.toString('hex').slice(0, 12)}`,
      });
    });
    if (entries.length === 0) {
      throw new IpferryError('IPF_E_SECRET_FILE', { path: source, problem: 'holds no token' });
    }
    return new TokenSet(entries);
  }

  /** The access a presented token grants, or undefined. Checks every entry: constant work. */
  check(presented: string | undefined): Access | undefined {
    return this.identify(presented)?.access;
  }

  /** The access and name of a presented token (the first entry granting rw wins). */
  identify(presented: string | undefined): { access: Access; name: string } | undefined {
    if (!presented) return undefined;
    const candidate = digest(presented);
    let granted: Entry | undefined;
    for (const entry of this.entries) {
      if (timingSafeEqual(entry.digest, candidate) && granted?.access !== 'rw') granted = entry;
    }
    return granted && { access: granted.access, name: granted.name };
  }
}

export function bearerToken(header: string | undefined): string | undefined {
  const m = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  return m?.[1];
}

function storedDigest(entry: string): Buffer | undefined {
  const hashed = /^sha256:([0-9a-f]{64})$/i.exec(entry);
  if (hashed?.[1]) return Buffer.from(hashed[1], 'hex');
  return entry.length >= 16 ? digest(entry) : undefined;
}

/** Constant-time equality of a presented secret with a stored SHA-256 digest (hex). */
export function matchesDigest(presented: string, storedHex: string): boolean {
  const stored = Buffer.from(storedHex, 'hex');
  const candidate = digest(presented);
  return stored.length === candidate.length && timingSafeEqual(stored, candidate);
}

export function digestHex(secret: string): string {
  return digest(secret).toString('hex');
}

function digest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}
