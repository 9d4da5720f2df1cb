/**
 * Throwaway certificates for tests and the lab, made by openssl: P-256 keys (made in
 * milliseconds; Node, etcd, curl and chromium all take them), valid one day, every file 0600.
 */
import { chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../dataplane/exec.js';

export interface Certificate {
  readonly cert: string;
  readonly key: string;
}

/**
 * `openssl req -x509` with a new P-256 key and `args` (subject, extensions, `-CA` to sign with).
 * `bare` leaves out openssl.cnf's defaults, which would make every certificate a CA.
 */
export async function opensslCertificate(
  args: readonly string[],
  options: { readonly bare?: boolean } = {},
): Promise<void> {
  try {
    await run('openssl', [
      'req',
      '-x509',
      ...(options.bare ? ['-config', '/dev/null'] : []),
      ...['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1'],
      ...args,
    ]);
  } catch (e) {
    throw new Error(
      `openssl could not make a certificate (is openssl installed?): ${(e as Error).message}`,
    );
  }
}

/**
 * A self-signed certificate `NAME-cert.pem` / `NAME-key.pem` in `dir`. With the defaults of
 * openssl.cnf it is its own CA, so a client can trust it as its CA file. `ip` adds it as the
 * subjectAltName (the common name is not checked against addresses).
 */
export async function selfSignedCertificate(
  dir: string,
  options: { readonly name?: string; readonly cn?: string; readonly ip?: string } = {},
): Promise<Certificate> {
  const name = options.name ?? 'self';
  const cert = join(dir, `${name}-cert.pem`);
  const key = join(dir, `${name}-key.pem`);
  await opensslCertificate([
    ...['-subj', `/CN=${options.cn ?? options.ip ?? 'ipferry-test'}`],
    ...(options.ip ? ['-addext', `subjectAltName=IP:${options.ip}`] : []),
    ...['-keyout', key, '-out', cert],
  ]);
  await Promise.all([chmod(key, 0o600), chmod(cert, 0o600)]);
  return { cert, key };
}
