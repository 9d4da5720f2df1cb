/**
 * How `node show` and `status` put a node's tunnel: WireGuard peers with handshakes and bytes,
 * tinc peers with what tinc 1.0 knows (reachable or not; bytes only for the whole interface,
 * never zeros per peer), tinc's RSA key as a short fingerprint in human output (the API and
 * --json keep the whole PEM), and the latest loss the agent restored.
 */
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import type { NodeListView, StatusResponse } from '../../src/api/contract.js';
import { bytesText, keyText, shortKey, tincKeyFingerprint } from '../../src/cli/format.js';
import { printNode, tunnelLines } from '../../src/cli/node.js';
import { printStatus } from '../../src/cli/status.js';
import type { TunnelHealth } from '../../src/core/model.js';

const WG_KEY = Buffer.alloc(32, 5).toString('base64');

function rsaKey(): { pem: string; der: Buffer } {
  const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    pem: publicKey.export({ type: 'pkcs1', format: 'pem' }).toString(),
    der: publicKey.export({ type: 'pkcs1', format: 'der' }),
  };
}

describe('tunnel lines', () => {
  it('shows WireGuard peers with their handshake and bytes', () => {
    const t: TunnelHealth = {
      name: 'ipfgw1',
      checkedAt: '2026-01-01T00:00:00Z',
      peers: [
        {
          publicKey: WG_KEY,
          node: 'home',
          endpoint: '198.51.100.7:51820',
          handshakeAgeSeconds: 12,
          rxBytes: 2048,
          txBytes: 300,
        },
        { publicKey: WG_KEY, rxBytes: 0, txBytes: 0 },
      ],
    };
    assert.deepEqual(tunnelLines(t), [
      'ipfgw1 → home at 198.51.100.7:51820: handshake 12 s ago, rx 2.0 KiB, tx 300 B',
      `ipfgw1 → ${WG_KEY.slice(0, 8)}…: no handshake yet, rx 0 B, tx 0 B`,
    ]);
  });

  it('shows tinc peers as reachable or not, and bytes only for the whole interface', () => {
    const { pem } = rsaKey();
    const lines = tunnelLines({
      name: 'ipfgw1',
      checkedAt: '2026-01-01T00:00:00Z',
      driver: 'tinc',
      rxBytes: 5 * 1024 * 1024,
      txBytes: 1536,
      peers: [
        { publicKey: pem, node: 'home', endpoint: '198.51.100.7:655', reachable: true },
        { publicKey: pem, reachable: false },
      ],
    });
    assert.deepEqual(lines, [
      'ipfgw1 (tinc): rx 5.0 MiB, tx 1.5 KiB in all, none per peer',
      'ipfgw1 → home at 198.51.100.7:655: reachable',
      `ipfgw1 → RSA SHA256:${tincKeyFingerprint(pem)}: not reachable`,
    ]);
    assert.doesNotMatch(String(lines), /handshake|rx 0 B|BEGIN/);
  });

  it('says when the tunnel was lost and how soon it was restored', () => {
    const lines = tunnelLines({
      name: 'ipfgw1',
      checkedAt: '2026-01-01T00:00:01Z',
      peers: [],
      restore: {
        faults: ['ipfgw1 is gone', 'tincd (pid 41) is gone'],
        noticedAt: '2026-01-01T00:00:00.000Z',
        restoredAt: '2026-01-01T00:00:00.180Z',
        answeredAt: '2026-01-01T00:00:00.950Z',
      },
    });
    assert.deepEqual(lines, [
      'ipfgw1 (no peers)',
      'ipfgw1 lost at 2026-01-01T00:00:00.000Z (ipfgw1 is gone; tincd (pid 41) is gone), restored 180 ms later, peers answering 950 ms later',
    ]);
  });
});

describe('keys in human output', () => {
  it('prints a tinc key as the first 16 hex digits of the SHA-256 of its DER, labelled', () => {
    const { pem, der } = rsaKey();
    const digest = createHash('sha256').update(der).digest('hex').slice(0, 16);
    assert.equal(tincKeyFingerprint(pem), digest);
    assert.equal(keyText(pem), `RSA SHA256:${digest} (tinc; --json shows the whole key)`);
    assert.equal(shortKey(pem), `RSA SHA256:${digest}`);
    assert.equal(keyText(WG_KEY), WG_KEY);
  });

  it('node show prints the fingerprint, not the PEM block; the data keeps the whole key', () => {
    const { pem } = rsaKey();
    const node: NodeListView = {
      name: 'home',
      publicKey: pem,
      tunnelDriver: 'tinc',
      addresses: ['198.51.100.7'],
      reservedPorts: [],
      registeredAt: '2026-01-01T00:00:00Z',
      alive: true,
    };
    const text = printNode(node);
    assert.match(
      text,
      new RegExp(`^public key: +RSA SHA256:${tincKeyFingerprint(pem)} \\(tinc`, 'm'),
    );
    assert.doesNotMatch(text, /BEGIN RSA PUBLIC KEY/);
    assert.equal(node.publicKey, pem);
  });

  it('status counts reachable tinc peers rather than handshakes', () => {
    const { pem } = rsaKey();
    const text = printStatus({
      node: 'gw',
      version: '0',
      store: { kind: 'sqlite', revision: 1 },
      dataplane: { kind: 'linux' },
      fips: {},
      nodes: { alive: 2, total: 2 },
      tunnel: {
        name: 'ipfgw1',
        checkedAt: 't',
        driver: 'tinc',
        peers: [
          { publicKey: pem, node: 'home', reachable: true },
          { publicKey: pem, node: 'home2', reachable: false },
        ],
      },
    } as unknown as StatusResponse);
    assert.match(text, /ipfgw1 \(tinc\), 2 peer\(s\), 1 reachable/);
  });
});

describe('bytesText', () => {
  it('counts in binary units, bytes below one KiB', () => {
    assert.deepEqual([0, 1023, 1024, 1536, 10 * 1024 * 1024, 3 * 1024 ** 3].map(bytesText), [
      '0 B',
      '1023 B',
      '1.0 KiB',
      '1.5 KiB',
      '10.0 MiB',
      '3.0 GiB',
    ]);
  });
});
