/**
 * `ipferry state export|import`: backup and restore of the desired state (docs/backup.md).
 *
 * Both open the store directly (`--store`, as the agent is given it) rather than going through
 * an agent's API: a restore is made onto a store no agent runs on yet (an agent starting on an
 * empty store registers itself at once, and the store is no longer empty), and an export of the
 * SQLite file reads it without writing, so it is safe while the agent runs (store/open.ts).
 */
import { randomBytes } from 'node:crypto';
import { chmod, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Command } from 'commander';
import { readEtcdAccess, type EtcdFiles } from '../agent/config.js';
import { DEFAULT_STORE } from '../core/defaults.js';
import { IpferryError } from '../core/errors.js';
import { ROOT } from '../core/keys.js';
import {
  buildStateExport,
  type LeftOut,
  MAX_STATE_BYTES,
  parseStateDocument,
  renderStateDocument,
  type StateRecord,
} from '../service/state.js';
import { importState } from '../service/restore.js';
import { openStore, readStoreSnapshot, type StoreAccess } from '../store/open.js';
import { VERSION } from '../version.js';
import type { CliContext } from './context.js';
import { terminalLines } from './format.js';

interface StoreFlags {
  store: string;
  etcdCa?: string;
  etcdCert?: string;
  etcdKey?: string;
  etcdUser?: string;
  etcdPasswordFile?: string;
}

/** The export file holds node credentials' hashes and every address: its owner's alone. */
const FILE_MODE = 0o600;

function storeOptions(command: Command): Command {
  return command
    .option('--store <spec>', `the agent's --store: sqlite:PATH or etcd:URL[,URL…]`, DEFAULT_STORE)
    .option('--etcd-ca <file>', 'with an etcd:https:// store: CA of its server certificates (PEM)')
    .option('--etcd-cert <file>', 'with an etcd:https:// store: client certificate (PEM)')
    .option('--etcd-key <file>', 'private key of --etcd-cert (PEM, mode 0600)')
    .option('--etcd-user <name>', 'etcd user to log in as')
    .option('--etcd-password-file <file>', 'the password of --etcd-user, on one line (mode 0600)');
}

async function accessOf(flags: StoreFlags): Promise<StoreAccess> {
  const etcd: EtcdFiles = {
    ...(flags.etcdCa !== undefined ? { ca: flags.etcdCa } : {}),
    ...(flags.etcdCert !== undefined ? { cert: flags.etcdCert } : {}),
    ...(flags.etcdKey !== undefined ? { key: flags.etcdKey } : {}),
    ...(flags.etcdUser !== undefined ? { user: flags.etcdUser } : {}),
    ...(flags.etcdPasswordFile !== undefined ? { passwordFile: flags.etcdPasswordFile } : {}),
  };
  return Object.keys(etcd).length > 0 ? readEtcdAccess({ etcd }) : {};
}

function storeKind(spec: string): string {
  return spec.slice(0, Math.max(0, spec.indexOf(':'))).toLowerCase();
}

function fileError(path: string, reason: string): IpferryError {
  return new IpferryError('IPF_E_CONFIG', { source: path, summary: reason });
}

/**
 * Writes `text` to `path` as a new file of mode 0600 beside it, then renames it into place: a
 * reader never sees half a backup, and an older backup of the same name is replaced whole.
 */
async function writePrivately(path: string, text: string): Promise<void> {
  const temporary = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}`);
  try {
    const handle = await open(temporary, 'wx', FILE_MODE);
    try {
      // The umask may have taken more than group and others away; never less.
      await handle.chmod(FILE_MODE);
      await handle.writeFile(text, 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporary, path);
    await chmod(path, FILE_MODE);
  } catch (e) {
    await rm(temporary, { force: true });
    throw fileError(path, `cannot write it: ${e instanceof Error ? e.message : String(e)}`);
  }
}

async function readBackup(path: string): Promise<string> {
  try {
    const info = await stat(path);
    if (!info.isFile()) throw new Error('not a file');
    if (info.size > MAX_STATE_BYTES) throw new Error(`larger than ${MAX_STATE_BYTES} bytes`);
    return await readFile(path, 'utf8');
  } catch (e) {
    throw fileError(path, `cannot read it: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** `fips 3, pools 2, …`: how many records of each kind, by the first part of their key. */
function countByKind(records: readonly StateRecord[]): string {
  const counts = new Map<string, number>();
  for (const r of records) {
    const kind = r.key.slice(ROOT.length).split('/')[0] ?? '';
    counts.set(kind, (counts.get(kind) ?? 0) + 1);
  }
  return [...counts].map(([kind, n]) => `${kind} ${n}`).join(', ') || 'none';
}

function leftOutLines(leftOut: readonly LeftOut[]): string[] {
  const runtime = leftOut.filter((l) => l.runtime).length;
  const lines = leftOut.filter((l) => !l.runtime).map((l) => `  left out ${l.key}: ${l.reason}`);
  if (runtime > 0)
    lines.unshift(`  left out ${runtime} runtime record(s) (liveness, statuses, leases)`);
  return lines;
}

export function stateCommand(ctx: CliContext): Command {
  const state = new Command('state').description(
    'Back up and restore the desired state (pools, FIPs, forwards, nodes, mesh policy)',
  );
  state.addCommand(
    storeOptions(
      new Command('export')
        .description(
          'Write a consistent snapshot of the desired state as JSON (to stdout, or a file of mode 0600)',
        )
        .option('--output <file>', 'write the export to FILE (mode 0600) instead of stdout'),
    ).action(async (flags: StoreFlags & { output?: string }) => {
      const snapshot = await readStoreSnapshot(flags.store, ROOT, await accessOf(flags));
      const { document, leftOut } = buildStateExport(
        { kind: storeKind(flags.store), snapshot },
        VERSION,
        new Date(),
      );
      const text = renderStateDocument(document);
      const summary = terminalLines(
        [
          `exported ${document.records.length} record(s) (${countByKind(document.records)}) from ${document.source.kind} at revision ${document.source.revision}${flags.output !== undefined ? ` to ${flags.output}` : ''}`,
          ...leftOutLines(leftOut),
        ].join('\n') + '\n',
      );
      if (flags.output === undefined) {
        ctx.io.out(text);
        ctx.io.err(summary);
      } else {
        await writePrivately(flags.output, text);
        ctx.io.out(summary);
      }
    }),
  );
  state.addCommand(
    storeOptions(
      new Command('import')
        .description(
          'Restore an export onto an EMPTY store, all or nothing (refused, changing nothing, otherwise)',
        )
        .argument('<file>', 'a file written by `ipferry state export`'),
    ).action(async (file: string, flags: StoreFlags) => {
      // Every record is checked before the store is even opened: a bad file writes nothing.
      const records = parseStateDocument(await readBackup(file));
      const store = await openStore(flags.store, await accessOf(flags));
      try {
        const { revision, transactions } = await importState(store, records);
        const parts = transactions > 1 ? ` (${transactions} transactions)` : '';
        ctx.io.out(
          terminalLines(
            `imported ${records.length} record(s) (${countByKind(records)}) into ${store.kind} at revision ${revision}${parts}\n`,
          ),
        );
      } finally {
        await store.close();
      }
    }),
  );
  return state;
}
