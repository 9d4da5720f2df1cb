/**
 * Bearer-token authentication. Tokens are kept only as SHA-256 digests and compared in
 * constant time, so neither a memory dump of the token list nor response timing reveals a
 * token. A token is read-write (`rw`, the default) or read-only (`ro`).
 *
 * Token file format (mode 0600): one token per line, optionally followed by its access,
 * `# comments` and blank lines ignored. A line may hold `sha256:HEX` (the token's SHA-256 in
 * hex) instead of the token, so the agent's file need not contain any usable secret:
 *
 *     s3cr3t-admin-token
 *     sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8 ro
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { IpferryError } from '../core/errors.js';

export type Access = 'rw' | 'ro';

interface Entry {
  readonly digest: Buffer;
  readonly access: Access;
}

export class TokenSet {
  private constructor(private readonly entries: readonly Entry[]) {}

  static parse(text: string, source: string): TokenSet {
    const entries: Entry[] = [];
    text.split('\n').forEach((raw, i) => {
      const line = raw.replace(/#.*$/, '').trim();
      if (!line) return;
      const [token, access = 'rw', ...rest] = line.split(/\s+/);
      const stored = token ? storedDigest(token) : undefined;
      if (!stored || (access !== 'rw' && access !== 'ro') || rest.length > 0) {
        // The line number, never the line: it holds a secret.
        throw new IpferryError('IPF_E_SECRET_FILE', {
          path: source,
          problem: `has an invalid entry on line ${i + 1} (expected "TOKEN [rw|ro]" with a token of at least 16 characters, or "sha256:HEX [rw|ro]")`,
        });
      }
      entries.push({ digest: stored, access });
    });
    if (entries.length === 0) {
      throw new IpferryError('IPF_E_SECRET_FILE', { path: source, problem: 'holds no token' });
    }
    return new TokenSet(entries);
  }

  /** The access a presented token grants, or undefined. Checks every entry: constant work. */
  check(presented: string | undefined): Access | undefined {
    if (!presented) return undefined;
    const candidate = digest(presented);
    let granted: Access | undefined;
    for (const entry of this.entries) {
      if (timingSafeEqual(entry.digest, candidate) && granted !== 'rw') granted = entry.access;
    }
    return granted;
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

function digest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}
