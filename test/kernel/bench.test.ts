/**
 * The benchmark runner's report (no timings asserted: benchmarks measure, tests check): the
 * report writer on synthetic results — tables, ratios, met/missed, a well-formed SVG — the
 * baseline's rule generator, the parsers, and one quick end-to-end run of the apply benchmark
 * in throwaway namespaces, which must leave none behind.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { listNamespaces } from '../../src/lab/netns.js';
import { moveReason } from '../../bench/dataplane-apply.js';
import { parseIperfMbits, parsePingTimes } from '../../bench/dataplane-forward.js';
import { floaterMove, floaterRuleset } from '../../bench/floater.js';
import { compileState, fipAddress, redirections } from '../../bench/fips.js';
import { parseCpuinfo, parseMeminfo } from '../../bench/machine.js';
import { MODULES } from '../../bench/modules.js';
import {
  formatValue,
  type ModuleResult,
  panelsOf,
  ratioOf,
  renderMarkdown,
  renderSvg,
  type Report,
  resultsJson,
  shortNumber,
  verdict,
} from '../../bench/report.js';
import { outputPaths, selectModules } from '../../bench/run.js';
import { percentile } from '../../bench/stats.js';
import { tempDir } from '../support/helpers.js';

/**
 * A strict-enough XML well-formedness check for our SVG: every tag closed in order, attributes
 * quoted, no stray `<` or unescaped `&` in text. Returns the element names seen.
 */
function checkXml(xml: string): string[] {
  const stack: string[] = [];
  const seen: string[] = [];
  const tag = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/y;
  let i = 0;
  while (i < xml.length) {
    const lt = xml.indexOf('<', i);
    const text = xml.slice(i, lt === -1 ? xml.length : lt);
    assert.doesNotMatch(text, /&(?!(amp|lt|gt|quot|apos|#\d+);)/, `bare & in text: ${text}`);
    assert.doesNotMatch(text, />/, `stray > in text: ${text}`);
    if (lt === -1) break;
    tag.lastIndex = lt;
    const m = tag.exec(xml);
    assert.ok(m, `malformed tag at ${lt}: ${xml.slice(lt, lt + 60)}`);
    const [whole, close, name = '', , selfClose] = m;
    if (close) assert.equal(stack.pop(), name, `</${name}> closes the wrong element`);
    else if (!selfClose) stack.push(name);
    seen.push(name);
    i = lt + whole.length;
  }
  assert.deepEqual(stack, [], 'unclosed elements');
  assert.equal(seen[0], 'svg');
  return seen;
}

const throughput = (n: number, value: number, base: number): ModuleResult => ({
  module: 'dataplane-forward',
  group: 'Per-packet cost',
  name: `forward.throughput.fips=${n}`,
  label: `Throughput, ${n} FIPs`,
  value,
  unit: 'Mbit/s',
  better: 'higher',
  baseline: { label: 'iptables | per-IP <chains>', value: base },
  series: { name: 'Throughput (Mbit/s)', x: n },
});

const apply = (n: number, value: number, base: number, met: boolean): ModuleResult => ({
  module: 'dataplane-apply',
  group: 'Apply time',
  name: `apply.full.fips=${n}`,
  label: `First full apply, ${n} FIPs`,
  value,
  unit: 'ms',
  better: 'lower',
  baseline: { label: 'iptables-restore', value: base },
  target: { text: '< 1,000 ms', met },
  ...(met ? {} : { note: 'missed: because\nof reasons' }),
  series: { name: 'First full apply (ms)', x: n },
});

function syntheticReport(): Report {
  return {
    meta: {
      date: '2026-01-02T03:04:05.000Z',
      command: 'bash bench/run.sh',
      node: 'v20.20.2',
      machine: {
        cpu: 'AMD EPYC',
        cpus: 2,
        ramGiB: 23.5,
        kernel: '6.1.0-test',
        os: 'Debian 12.11',
        tools: { nft: 'nftables v1.0.6' },
      },
      quick: false,
      totalSeconds: 612.3,
      modules: [
        { name: 'dataplane-forward', title: 'Per-packet cost', seconds: 100, about: 'How & why.' },
        { name: 'dataplane-apply', title: 'Apply time', seconds: 200 },
        { name: 'control-broken', title: 'Broken one', seconds: 3, error: 'etcd did not start' },
      ],
    },
    results: [
      throughput(1, 12_000, 11_000),
      throughput(1_000, 11_800, 11_900),
      throughput(10_000, 11_500, 6_000),
      apply(1_000, 90, 50, true),
      apply(10_000, 600, 900, true),
      apply(100_000, 12_000, 90_000, false),
      {
        module: 'dataplane-apply',
        group: 'Apply time',
        name: 'apply.move.compile.fips=1000',
        label: 'Compile + diff',
        value: 24,
        unit: 'ms',
        better: 'lower',
      },
    ],
  };
}

describe('bench report', () => {
  it('ratio is value ÷ baseline, and the verdict follows the better direction', () => {
    const r = syntheticReport().results;
    assert.ok(Math.abs((ratioOf(r[2]!) ?? 0) - 11_500 / 6_000) < 1e-9);
    assert.equal(verdict(r[2]!), '1.92× better'); // throughput: higher is better
    assert.equal(verdict(r[5]!), '7.5× better'); // time: 12 s against 90 s
    assert.equal(verdict(r[3]!), '1.80× worse'); // 90 ms against 50 ms
    assert.equal(verdict(r[1]!), 'same');
    assert.equal(ratioOf(r[6]!), undefined);
    assert.equal(formatValue(12_345.6, 'Mbit/s'), '12,346 Mbit/s');
    assert.equal(formatValue(0.0123, 'ms'), '0.012 ms');
    assert.equal(shortNumber(100_000), '100k');
    assert.equal(percentile([5, 1, 4, 2, 3], 50), 3);
    assert.equal(
      percentile(
        [...Array(100).keys()].map((i) => i + 1),
        99,
      ),
      99,
    );
  });

  it('writes the machine, date, command, one table per group and the outcome of each module', () => {
    const md = renderMarkdown(syntheticReport(), 'benchmarks.svg');
    assert.match(md, /^# Benchmarks$/m);
    assert.match(md, /`bash bench\/run\.sh` on 2026-01-02/);
    assert.match(md, /10 min 12 s/);
    assert.match(md, /AMD EPYC, 2 CPUs, 23\.5 GiB RAM, Linux 6\.1\.0-test, Debian 12\.11/);
    assert.match(md, /Node\.js v20\.20\.2/);
    assert.match(md, /Targets met: 2 of 3; modules failed: control-broken/);
    assert.match(md, /!\[Benchmark plots\]\(benchmarks\.svg\)/);
    assert.match(md, /\*\*Failed\*\* after 3 s: etcd did not start/);
    assert.match(md, /How & why\./);
    for (const heading of ['## Per-packet cost', '### Per-packet cost', '### Apply time']) {
      assert.ok(md.includes(`${heading}\n`), heading);
    }
    const rows = md.split('\n').filter((l) => l.startsWith('| '));
    const row = (label: string) => rows.find((l) => l.startsWith(`| ${label} |`));
    // A pipe inside a cell is escaped, a newline in a note joined: the row keeps its 6 cells.
    const t = row('Throughput, 10000 FIPs');
    assert.ok(t);
    assert.equal(t.split(/(?<!\\)\|/).length - 2, 6);
    assert.ok(t.includes('11,500 Mbit/s'));
    assert.ok(t.includes('6,000 Mbit/s (iptables \\| per-IP <chains>)'));
    assert.ok(t.includes('1.92 (1.92× better)'));
    const missed = row('First full apply, 100000 FIPs');
    assert.ok(missed?.includes('< 1,000 ms: **missed**'));
    assert.ok(missed?.includes('missed: because of reasons'));
    assert.ok(row('First full apply, 10000 FIPs')?.includes('**met**'));
    assert.ok(row('Compile + diff')?.includes('| 24.0 ms | — | — | — |'));
    assert.ok(row('control-broken')?.includes('failed'));
  });

  it('writes results.json with every figure, its ratio and the run’s context', () => {
    const json = JSON.parse(resultsJson(syntheticReport()));
    assert.equal(json.command, 'bash bench/run.sh');
    assert.equal(json.machine.kernel, '6.1.0-test');
    assert.equal(json.node, 'v20.20.2');
    assert.equal(json.results.length, 7);
    const full = json.results.find((r: any) => r.name === 'apply.full.fips=100000');
    assert.deepEqual(
      [full.value, full.unit, full.baseline.value, full.ratio],
      [12_000, 'ms', 90_000, 0.1333],
    );
  });

  it('plots one panel per series, ipferry and its baseline, as well-formed SVG', () => {
    const report = syntheticReport();
    const panels = panelsOf(report.results);
    assert.deepEqual(
      panels.map((p) => [p.title, p.lines.map((l) => l.name), p.lines[0]?.points.length]),
      [
        ['Throughput (Mbit/s)', ['ipferry', 'iptables | per-IP <chains>'], 3],
        ['First full apply (ms)', ['ipferry', 'iptables-restore'], 3],
      ],
    );
    const svg = renderSvg(report.results);
    const elements = checkXml(svg);
    assert.equal(elements.filter((e) => e === 'polyline').length, 4);
    assert.ok(svg.includes('iptables | per-IP &lt;chains&gt;'), 'text is escaped');
    assert.ok(svg.includes('(log scale)'), 'FIP counts from 1 to 10,000 on a log axis');
    // Nothing to plot is still a valid picture.
    checkXml(renderSvg([]));
  });
});

describe('bench inputs', () => {
  it('the baseline jumps to the last FIP after every other one, and a move rewrites only it', () => {
    const rs = redirections(3, '10.0.0.11');
    const rules = floaterRuleset(rs);
    const pre = rules.split('\n').filter((l) => l.startsWith('-A PREROUTING'));
    assert.deepEqual(pre, [
      '-A PREROUTING -d 198.18.0.1/32 -j flpre-198.18.0.1',
      '-A PREROUTING -d 198.18.0.2/32 -j flpre-198.18.0.2',
      '-A PREROUTING -d 198.18.0.3/32 -j flpre-198.18.0.3',
    ]);
    assert.ok(rules.includes('-A flpre-198.18.0.3 -j DNAT --to-destination 10.0.0.11'));
    assert.ok(rules.includes('-A flpost-198.18.0.3 -j SNAT --to-source 198.18.0.3'));
    assert.ok(rules.includes('-A INPUT -d 198.18.0.2/32 -j DROP'));
    assert.equal(rules.match(/^COMMIT$/gm)?.length, 2);
    const move = floaterMove('198.18.0.3', '10.0.0.11', '10.0.0.12');
    assert.ok(move.includes(':flpre-198.18.0.3 - [0:0]'));
    assert.ok(move.includes('-D POSTROUTING -s 10.0.0.11/32 -j flpost-198.18.0.3'));
    assert.ok(!move.includes('198.18.0.2'));
    const state = compileState(rs);
    assert.equal(state.fips[2]?.fip.association?.target, '10.0.0.11');
    assert.equal(fipAddress(131_070), '198.19.255.255');
    assert.throws(() => redirections(131_072, '10.0.0.11'));
  });

  it('parses ping, iperf3, /proc and names the parts of a slow move', () => {
    assert.deepEqual(
      parsePingTimes('64 bytes from 198.18.0.1: icmp_seq=1 ttl=63 time=0.052 ms\nx time=1.5 ms'),
      [52, 1500],
    );
    assert.equal(parseIperfMbits('{"end":{"sum_received":{"bits_per_second":1.25e10}}}'), 12_500);
    assert.throws(() => parseIperfMbits('{"error":"unable to connect"}'), /unable to connect/);
    const cpu = parseCpuinfo(
      'processor\t: 0\nmodel name\t: AMD EPYC\n\nprocessor\t: 1\nmodel name\t: AMD EPYC\n',
    );
    assert.deepEqual(cpu, { model: 'AMD EPYC', count: 2 });
    assert.equal(parseMeminfo('MemTotal:       24683520 kB\n').toFixed(1), '23.5');
    const slow = moveReason(100_000, {
      step: 'diag',
      nftMs: 2000,
      plainNftMs: 18,
      conntrackMs: 20,
      buckets: 262_144,
    });
    assert.match(slow, /nft 1\.0\.6 reads every stateful object/);
    assert.match(slow, /262,144 buckets/);
    const fast = moveReason(1_000, { step: 'diag', nftMs: 15, plainNftMs: 16, conntrackMs: 20 });
    assert.doesNotMatch(fast, /stateful/);
  });

  it('selects modules by name and keeps partial runs away from the published report', () => {
    assert.deepEqual(
      selectModules(undefined).map((m) => m.name),
      MODULES.map((m) => m.name),
    );
    assert.deepEqual(
      selectModules('dataplane-apply').map((m) => m.name),
      ['dataplane-apply'],
    );
    assert.throws(() => selectModules('nope'), /unknown module nope/);
    assert.match(outputPaths({ quick: false }).markdown, /docs\/benchmarks\.md$/);
    assert.match(outputPaths({ quick: false }).json, /bench\/results\.json$/);
    assert.match(outputPaths({ quick: true }).markdown, /bench\/out\/benchmarks\.md$/);
    assert.match(outputPaths({ quick: false, only: 'x' }).svg, /bench\/out\/benchmarks\.svg$/);
    const names = MODULES.map((m) => m.name);
    assert.equal(new Set(names).size, names.length, 'module names are unique');
  });
});

describe('bench run, end to end', () => {
  it('runs --quick --only dataplane-apply in namespaces and writes the three files', async () => {
    const tmp = await tempDir('bench');
    const prefix = `ipft-bt${randomBytes(2).toString('hex')}-`;
    try {
      const { code, stdout, stderr } = await new Promise<{
        code: number;
        stdout: string;
        stderr: string;
      }>((resolve) => {
        execFile(
          process.execPath,
          [
            '--import',
            'tsx',
            'bench/run.ts',
            '--quick',
            '--only',
            'dataplane-apply',
            '--out',
            tmp.dir,
          ],
          { env: { ...process.env, IPF_BENCH_NS_PREFIX: prefix }, timeout: 120_000 },
          (error, out, err) =>
            resolve({ code: error ? Number(error.code ?? 1) : 0, stdout: out, stderr: err }),
        );
      });
      assert.equal(code, 0, `${stdout}\n${stderr}`);
      assert.match(stdout, /dataplane-apply: done/);
      const json = JSON.parse(await readFile(join(tmp.dir, 'results.json'), 'utf8')) as {
        quick: boolean;
        results: (ModuleResult & { ratio?: number })[];
      };
      assert.equal(json.quick, true);
      const names = json.results.map((r) => r.name);
      for (const n of [100, 1000]) {
        assert.ok(names.includes(`apply.full.fips=${n}`), `full apply of ${n}`);
        assert.ok(names.includes(`apply.move.fips=${n}`), `move among ${n}`);
      }
      for (const r of json.results.filter((x) => x.name.startsWith('apply.full'))) {
        assert.ok(r.value > 0 && (r.baseline?.value ?? 0) > 0 && (r.ratio ?? 0) > 0, r.name);
      }
      const md = await readFile(join(tmp.dir, 'benchmarks.md'), 'utf8');
      assert.match(md, /a \*\*quick run\*\*/);
      assert.match(md, /\| First full apply, 1,000 FIPs +\|/);
      checkXml(await readFile(join(tmp.dir, 'benchmarks.svg'), 'utf8'));
      const left = (await listNamespaces()).filter((ns) => ns.startsWith(prefix));
      assert.deepEqual(left, [], 'the run removed its namespaces');
    } finally {
      await tmp.remove();
    }
  });
});
