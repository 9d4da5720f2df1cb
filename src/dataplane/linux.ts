/**
 * The Linux dataplane: nftables (one `inet ipferry` table of maps and sets), sysctls and
 * connection tracking, driven by `nft`, `ip`, `sysctl` and `conntrack` through execFile.
 *
 * - observe: `nft -j list table inet ipferry` back into intent elements, plus wanted sysctls.
 * - apply: one `nft -f -` transaction per diff — element adds and deletes only, unless the
 *   table is missing or damaged, in which case the whole table is replaced in that one
 *   transaction (conntrack keeps established connections through it). Then, for every FIP whose
 *   target changed or that went away, the conntrack entries that still point at the old target
 *   are deleted, so no new packet of a stale connection reaches it.
 * - Everything runs inside `netns` when given (the lab, tests); never a shell.
 */
import { IpferryError } from '../core/errors.js';
import {
  elementId as id,
  HOST_OWNER,
  type HostFacts,
  type IntentDiff,
  type IntentElement,
} from '../core/intent.js';
import { NFT_FAMILY, NFT_TABLE } from '../core/names.js';
import type { Dataplane } from './dataplane.js';
import { type ExecResult, run, type RunOptions } from './exec.js';
import { fipOf, NFT_KINDS, parseTable, renderElements, renderTable } from './nft/ruleset.js';

export interface LinuxDataplaneOptions {
  /** Network namespace to act in (`ip netns exec`); the current one when absent. */
  readonly netns?: string;
}

/** The tools the dataplane needs, with the Debian package that provides each. */
export const REQUIRED_TOOLS: readonly { tool: string; args: string[]; pkg: string }[] = [
  { tool: 'nft', args: ['--version'], pkg: 'nftables' },
  { tool: 'ip', args: ['-V'], pkg: 'iproute2' },
  { tool: 'conntrack', args: ['--version'], pkg: 'conntrack' },
  { tool: 'sysctl', args: ['--version'], pkg: 'procps' },
];

const NOTHING_DELETED = (stderr: string): boolean =>
  /0 flow entries have been deleted/.test(stderr);

export class LinuxDataplane implements Dataplane {
  readonly kind = 'linux';

  constructor(private readonly o: LinuxDataplaneOptions = {}) {}

  /**
   * Refuses to start without the tools or the kernel features: each missing tool is named with
   * its Debian package, and the table is test-loaded in check mode (`nft -c`), which asks the
   * kernel to validate every chain, map type and expression without changing anything.
   */
  async check(): Promise<void> {
    const missing: string[] = [];
    for (const { tool, args, pkg } of REQUIRED_TOOLS) {
      await this.exec(tool, args).catch(() => missing.push(`${tool} (Debian package ${pkg})`));
    }
    if (missing.length > 0) {
      throw new IpferryError('IPF_E_KERNEL', { reason: `missing ${missing.join(', ')}` });
    }
    await this.exec('nft', ['-c', '-f', '-'], { input: renderTable([], false) }).catch(
      (e: unknown) => {
        throw new IpferryError('IPF_E_KERNEL', {
          reason: `the kernel refused ipferry's nftables table (nat, maps, concatenations, fib): ${(e as Error).message}`,
        });
      },
    );
  }

  async facts(): Promise<HostFacts> {
    const { stdout } = await this.exec('ip', ['-j', 'address', 'show']);
    const links = JSON.parse(stdout || '[]') as {
      ifname: string;
      addr_info?: { local?: string }[];
    }[];
    return {
      interfaces: links
        .map((l) => l.ifname)
        .filter((n) => n !== 'lo')
        .sort(),
      addresses: links.flatMap((l) => (l.addr_info ?? []).flatMap((a) => a.local ?? [])).sort(),
    };
  }

  async observe(wanted: readonly IntentElement[]): Promise<IntentElement[]> {
    const table = await this.exec('nft', ['-j', 'list', 'table', NFT_FAMILY, NFT_TABLE], {
      tolerate: (stderr) => /No such file or directory/.test(stderr),
    });
    const elements = table.stdout.trim() ? parseTable(table.stdout) : [];
    for (const e of wanted) {
      if (e.kind !== 'sysctl') continue;
      const { stdout } = await this.exec('sysctl', ['-n', e.key]);
      elements.push({ kind: 'sysctl', key: e.key, value: stdout.trim(), owner: HOST_OWNER });
    }
    return elements;
  }

  async apply(diff: IntentDiff): Promise<void> {
    refuseUnsupported(diff);
    for (const e of [...diff.add, ...diff.replace.map((r) => r.to)]) {
      if (e.kind === 'sysctl') await this.exec('sysctl', ['-qw', `${e.key}=${e.value}`]);
    }
    await this.applyNft(diff);
    await this.forgetStaleConnections(diff);
  }

  async close(): Promise<void> {
    await Promise.resolve();
  }

  private async applyNft(diff: IntentDiff): Promise<void> {
    const nft = (e: IntentElement): boolean => NFT_KINDS.has(e.kind);
    const tableChange = [...diff.add, ...diff.replace.map((r) => r.to)].find(
      (e) => e.kind === 'table',
    );
    let script: string;
    if (tableChange) {
      // The fixed part is missing or damaged: rebuild everything the table should hold.
      const gone = new Set([...diff.remove, ...diff.replace.map((r) => r.from)].map(id));
      const kept = (await this.observe([])).filter(
        (e) => nft(e) && e.kind !== 'table' && !gone.has(id(e)),
      );
      const next = [...kept, ...diff.add.filter(nft), ...diff.replace.map((r) => r.to).filter(nft)];
      const exists = diff.replace.some((r) => r.to.kind === 'table');
      script = renderTable(
        next.filter((e) => e.kind !== 'table'),
        exists,
      );
    } else {
      const lines = [
        ...renderElements(
          'delete',
          [...diff.remove, ...diff.replace.map((r) => r.from)].filter(nft),
        ),
        ...renderElements('add', [...diff.add, ...diff.replace.map((r) => r.to)].filter(nft)),
      ];
      if (lines.length === 0) return;
      script = lines.join('\n') + '\n';
    }
    await this.exec('nft', ['-f', '-'], { input: script });
  }

  /**
   * A moved or released FIP must not keep feeding established (or, for UDP, merely recent)
   * flows to its old target: delete the conntrack entries whose original destination is the FIP
   * and whose reply comes from the old target, and the old target's own SNATed flows.
   */
  private async forgetStaleConnections(diff: IntentDiff): Promise<void> {
    const gone = [...diff.remove, ...diff.replace.map((r) => r.from)];
    for (const e of gone) {
      const args = staleConnectionFilter(e);
      if (args) await this.exec('conntrack', ['-D', ...args], { tolerate: NOTHING_DELETED });
    }
  }

  private exec(
    file: string,
    args: readonly string[],
    options: RunOptions = {},
  ): Promise<ExecResult> {
    return this.o.netns
      ? run('ip', ['netns', 'exec', this.o.netns, file, ...args], options)
      : run(file, args, options);
  }
}

/** `conntrack -D` arguments for the flows an old element was carrying, if it carried any. */
export function staleConnectionFilter(e: IntentElement): string[] | undefined {
  const family = (a: string): string[] => (a.includes(':') ? ['-f', 'ipv6'] : []);
  switch (e.kind) {
    case 'dnat':
      return [...family(e.key), '-d', e.key, '-r', e.value];
    case 'snat':
      return [...family(e.key), '-s', e.key, '-q', e.value];
    case 'fwd':
    case 'fwdport': {
      const [fip = '', proto = '', ports = ''] = e.key.split(' . ');
      const target = e.value.split(' . ')[0] ?? e.value;
      const single = /^\d+$/.test(ports) ? ['--dport', ports] : [];
      return [...family(fip), '-d', fipOf(e), '-r', target, '-p', proto, ...single];
    }
    default:
      return undefined;
  }
}

function refuseUnsupported(diff: IntentDiff): void {
  const e = [...diff.add, ...diff.replace.map((r) => r.to)].find(
    (x) => x.kind === 'claim' || x.kind === 'route',
  );
  if (!e) return;
  const reason =
    e.kind === 'claim'
      ? `${e.key}: on-link pools are not supported by the Linux dataplane yet; have the upstream route the pool to the gateway`
      : `${e.key}: routed mode needs a tunnel to its node, which this version cannot build yet`;
  throw new IpferryError('IPF_E_DATAPLANE', { reason });
}
