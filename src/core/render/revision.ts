/**
 * The revision of a far end's configuration: a digest of exactly what shapes its text (the
 * spec), so that writes the far end does not depend on — another node's FIP, a status, a
 * liveness beat — never make it stale. Every rendered file carries it, with the inputs it covers
 * as `# ipferry-input:` lines, so `node render --check FILE` can tell a current file from a
 * stale one and name what changed. The store revision it was rendered at is shown too, for the
 * operator, but not compared.
 */
import { createHash } from 'node:crypto';
import { type FarEndSpec, serviceText } from './farend.js';

/** Changes when the renderers write other text for the same inputs. */
const RENDER_VERSION = 'ipferry-render 1';
const REVISION_PREFIX = '# ipferry-revision: ';
const INPUT_PREFIX = '# ipferry-input: ';

/** The inputs of a spec, one fact a line, in a stable order. */
export function inputLines(spec: FarEndSpec): string[] {
  return [
    `os ${spec.os}`,
    `node ${spec.node}`,
    `interface ${spec.iface}`,
    `key-file ${spec.keyFile}`,
    `gateway ${spec.gateway.name}`,
    `gateway-key ${spec.gateway.publicKey}`,
    `gateway-endpoint ${spec.gateway.endpoint ?? 'none'}`,
    `listen-port ${spec.listenPort ?? 'any'}`,
    `mtu ${spec.mtu}`,
    ...spec.routed.map((r) => `routed ${r.address}`),
    ...spec.services.map((s) => `serve ${serviceText(s)}`),
  ];
}

/** 16 hex digits of SHA-256 over the renderer's version and the inputs. */
export function revisionOf(spec: FarEndSpec): string {
  const text = [RENDER_VERSION, ...inputLines(spec)].join('\n');
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}

/** The comment lines every rendered file starts its ipferry part with. */
export function revisionHeader(spec: FarEndSpec, storeRevision: number | undefined): string[] {
  const at = storeRevision === undefined ? '' : ` (store revision ${storeRevision})`;
  return [
    `${REVISION_PREFIX}${revisionOf(spec)}${at}`,
    ...inputLines(spec).map((l) => `${INPUT_PREFIX}${l}`),
  ];
}

export type CheckResult =
  | { readonly current: true; readonly revision: string }
  | {
      readonly current: false;
      readonly revision: string;
      /** The file's revision; absent when it holds none. */
      readonly found?: string;
      /** Inputs the file lacks (what is new) and holds but no longer applies (what went). */
      readonly added: readonly string[];
      readonly removed: readonly string[];
    };

/** Whether `text` (a file rendered earlier) was rendered from the same inputs as `spec`. */
export function checkRendered(text: string, spec: FarEndSpec): CheckResult {
  const revision = revisionOf(spec);
  const lines = text.split(/\r?\n/);
  const found = lines
    .find((l) => l.startsWith(REVISION_PREFIX))
    ?.slice(REVISION_PREFIX.length)
    .split(' ')[0];
  if (found === revision) return { current: true, revision };
  const had = new Set(
    lines.filter((l) => l.startsWith(INPUT_PREFIX)).map((l) => l.slice(INPUT_PREFIX.length)),
  );
  const now = inputLines(spec);
  const wanted = new Set(now);
  return {
    current: false,
    revision,
    ...(found ? { found } : {}),
    added: now.filter((l) => !had.has(l)),
    removed: [...had].filter((l) => !wanted.has(l)),
  };
}
