/**
 * The web page in a real browser: Debian's chromium, driven by playwright-core (no browser
 * download), against the gateway's agent of a cloud–home lab (network namespaces, real nft and
 * WireGuard): a gateway with the pool and two home servers joined over tunnels. Signs in with a
 * token, reads the FIPs, moves a routed FIP from home to home2 by clicking through the page and
 * waits for the page to show it ACTIVE on home2, then checks that real traffic reaches home2; a
 * read-only token sees the same page without a single action control.
 *
 * IPFERRY_UI_SCREENSHOTS=1 also writes a screenshot of each view into docs/ui/.
 *
 * The browser, the agents and the lab are stopped by pid and removed in `after`, also on failure.
 */
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  chromium,
  type Browser,
  type BrowserContext,
  type BrowserServer,
  type Page,
} from 'playwright-core';
import { ApiClient } from '../../src/client/api-client.js';
import { digestHex } from '../../src/api/auth.js';
import { LabAgents } from '../../src/lab/agents.js';
import { echoProbe, startEchoServer } from '../../src/lab/probe.js';
import { CLOUD_HOME as H, cloudHome } from '../../src/lab/scenarios.js';
import type { Lab } from '../../src/lab/topology.js';
import { ensureBuilt } from '../support/build.js';
import { tempDir, waitFor } from '../support/helpers.js';

const CHROMIUM = '/usr/bin/chromium';
const SHOTS = fileURLToPath(new URL('../../docs/ui/', import.meta.url));
const screenshots = process.env.IPFERRY_UI_SCREENSHOTS === '1';

const TOKEN_RW = 'ui-test-rw-token-0123456789abcdef';
const TOKEN_RO = 'ui-test-ro-token-0123456789abcdef';
const FIP = '203.0.113.10';
const SPARE = '203.0.113.11';
const TUNNEL_PORTS = { gw: 51820, home: 51821, home2: 51822 } as const;

let lab: Lab;
let tmp: { dir: string; remove: () => Promise<void> };
let agents: LabAgents;
let api: ApiClient;
let url: string;
let server: BrowserServer | undefined;
let browser: Browser | undefined;
let browserPid: number | undefined;

before(async () => {
  await ensureBuilt();
  tmp = await tempDir('uilab');
  lab = await cloudHome({ homes: 2 });
  agents = new LabAgents({ lab, dir: tmp.dir });
  await startEchoServer(lab, 'home', { tcp: [80] });
  await startEchoServer(lab, 'home2', { tcp: [80] });
  // The gateway agent's token file, written before it starts: a read-write token and, as its
  // digest only, a read-only one.
  await mkdir(join(tmp.dir, 'gw'), { recursive: true });
  await writeFile(agents.tokenFile('gw'), `${TOKEN_RW}\nsha256:${digestHex(TOKEN_RO)} ro\n`, {
    mode: 0o600,
  });
  const { agent } = await agents.startHub('gw', {
    endpoint: { address: H.gw.uplink.v4, port: TUNNEL_PORTS.gw },
  });
  url = agent.url;
  api = new ApiClient({ server: url, token: TOKEN_RW });
  // Home servers call the gateway (no public endpoint of their own), as behind a home router.
  for (const node of ['home', 'home2'] as const) {
    await agents.join(node, { api, extra: ['--tunnel-port', String(TUNNEL_PORTS[node])] });
  }
  await api.createPool({
    name: 'public',
    gateway: 'gw',
    entries: ['203.0.113.0/28'],
    description: 'routed to the cloud VM by its provider',
  });
  await api.allocate({ address: FIP, description: 'web' });
  await api.associate(FIP, { mode: 'routed', node: 'home', target: FIP });
  await api.allocate({ address: SPARE });
  await waitFor(
    `${FIP} ACTIVE`,
    async () => {
      const f = await api.getFip(FIP);
      return f.status.state === 'ACTIVE' && !f.status.stale && f.status.revision === f.revision;
    },
    15_000,
  );
  await waitFor(
    'home answering on the FIP',
    async () => (await echoProbe(lab, 'client', 'tcp', FIP, 80, 1500))?.name === 'home',
    15_000,
  );

  // A server, so that its process (and pid) is ours to end; playwright gives it a fresh
  // temporary profile (user-data-dir) of its own and removes it when the browser closes.
  server = await chromium.launchServer({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  browserPid = server.process().pid;
  browser = await chromium.connect(server.wsEndpoint());
});

after(async () => {
  await browser?.close().catch(() => undefined);
  await server?.close().catch(() => undefined);
  if (browserPid !== undefined) {
    try {
      process.kill(browserPid, 'SIGKILL');
    } catch {
      // Already gone: close() ended it.
    }
  }
  await agents?.teardown();
  await tmp?.remove();
});

/** A fresh tab (its own session storage), signed in with `token`. */
async function signedIn(token: string): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser!.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(m.text());
  });
  page.on('pageerror', (e) => problems.push(e.message));
  (page as Page & { problems?: string[] }).problems = problems;
  await page.goto(`${url}/ui`);
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Floating IPs' }).waitFor();
  await page.locator(`tr[data-address="${FIP}"]`).waitFor();
  return { context, page };
}

function problemsOf(page: Page): string[] {
  return (page as Page & { problems?: string[] }).problems ?? [];
}

async function shoot(page: Page, name: string): Promise<void> {
  if (!screenshots) return;
  await mkdir(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

describe('the web page in chromium, on a gateway lab', () => {
  it('asks for the token first, and keeps it out of the URL and of cookies', async () => {
    const context = await browser!.newContext({ viewport: { width: 1280, height: 600 } });
    try {
      const page = await context.newPage();
      await page.goto(`${url}/ui`);
      await page.getByRole('heading', { name: 'Sign in' }).waitFor();
      await shoot(page, 'sign-in');
      await page.getByLabel('API token').fill('not-a-token-of-this-agent');
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.getByText('That token is not accepted.').waitFor();
      await page.getByLabel('API token').fill(TOKEN_RW);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.getByRole('heading', { name: 'Floating IPs' }).waitFor();
      assert.ok(!page.url().includes(TOKEN_RW));
      assert.deepEqual(await context.cookies(), []);
      assert.equal(await page.evaluate("sessionStorage.getItem('ipferry.token')"), TOKEN_RW);
    } finally {
      await context.close();
    }
  });

  it('shows the FIPs with state, target and node, and a move clicked through is shown applied', async () => {
    const { context, page } = await signedIn(TOKEN_RW);
    try {
      const row = page.locator(`tr[data-address="${FIP}"]`);
      await row.locator('.badge', { hasText: /^ACTIVE$/ }).waitFor();
      assert.equal(await row.locator('.target').textContent(), FIP);
      assert.equal(await row.locator('.node').textContent(), 'home');
      await page.locator('#live[data-state="live"]').waitFor();
      // Traffic through the FIP: the gateway's per-FIP counter, shown within a poll or two.
      assert.equal((await echoProbe(lab, 'client', 'tcp', FIP, 80, 1500))?.name, 'home');
      await row
        .locator('.packets')
        .filter({ hasText: /^[1-9][\d,]*$/ })
        .waitFor({ timeout: 10_000 });
      await shoot(page, 'fips');

      await page.getByRole('button', { name: `Move ${FIP}` }).click();
      const dialog = page.getByRole('dialog');
      // A routed FIP keeps its address as its target: only the node changes.
      await dialog.getByLabel('Node').selectOption('home2');
      await shoot(page, 'move');
      await dialog.getByRole('button', { name: 'Move' }).click();

      const result = page.getByRole('status');
      // Applied on every agent the FIP concerns (GET /v1/applied): its gateway and its new node.
      await result
        .getByText(/is ACTIVE, applied on gw and home2 in \d+ ms\.$/)
        .waitFor({ timeout: 20_000 });
      assert.match(
        (await result.textContent()) ?? '',
        new RegExp(`Move ${FIP}: ${FIP} → ${FIP.replaceAll('.', '\\.')} on home2 is ACTIVE`),
      );
      // The table follows the store's watch: the new node, ACTIVE and current.
      await row.locator('.node', { hasText: 'home2' }).waitFor();
      await row.locator('.badge', { hasText: /^ACTIVE$/ }).waitFor();
      await shoot(page, 'fips-moved');

      const reply = await waitFor(
        'home2 answering on the FIP',
        async () => echoProbe(lab, 'client', 'tcp', FIP, 80, 1500),
        15_000,
      );
      assert.deepEqual(reply, { name: 'home2', address: H.client.v4 });
      const fip = await api.getFip(FIP);
      assert.equal(fip.association?.node, 'home2');
      assert.deepEqual(problemsOf(page), []);
    } finally {
      await context.close();
    }
  });

  it('shows nodes with their health, pools with their usage, and the mesh', async () => {
    const { context, page } = await signedIn(TOKEN_RW);
    try {
      await page.getByRole('link', { name: 'Nodes' }).click();
      // Each node with its tunnel: gw's peers are the two homes, with what the probes found.
      const gw = page.getByRole('article', { name: /^gw/ });
      await gw.getByRole('table', { name: 'Tunnel peers of gw' }).waitFor();
      for (const home of ['home', 'home2']) {
        await gw.getByRole('row', { name: new RegExp(`^${home} `) }).waitFor();
      }
      await gw
        .locator('td', { hasText: /^[\d.]+ ms$/ })
        .first()
        .waitFor({ timeout: 30_000 });
      await page.getByRole('article', { name: /^home2/ }).waitFor();
      await shoot(page, 'nodes');

      await page.getByRole('link', { name: 'Pools' }).click();
      const pool = page.locator('#pools-table tbody tr', { hasText: 'public' });
      await pool.getByText('2 of 16 allocated').waitFor();
      await shoot(page, 'pools');

      await page.getByRole('link', { name: 'Mesh' }).click();
      await page.getByText('none: no fleet mesh').waitFor();
      // A fleet mesh on trial: the page follows the policy and each agent's report of it.
      await api.setMeshPolicy({
        policy: {
          overlay: '10.250.0.0/24',
          maxChange: 1,
          fleet: { openPorts: ['tcp/80'] },
          sites: {},
          nodes: {},
        },
        confirmWithinSeconds: 900,
      });
      await page.getByText('overlay 10.250.0.0/24').waitFor();
      await page.getByText(/^on trial until /).waitFor();
      await waitFor(
        'every agent reporting its mesh',
        async () => (await api.listNodes()).every((n) => n.mesh?.members !== undefined),
        15_000,
      );
      for (const node of ['gw', 'home', 'home2']) {
        await page
          .locator('#mesh-body tr', {
            has: page.getByRole('rowheader', { name: node, exact: true }),
          })
          .locator('td', { hasText: /^[1-9]$/ })
          .waitFor();
      }
      await shoot(page, 'mesh');
      assert.deepEqual(problemsOf(page), []);
    } finally {
      await context.close();
    }
  });

  it('allocates, associates, disassociates and releases through the page, each shown once applied', async () => {
    const address = '203.0.113.12';
    const { context, page } = await signedIn(TOKEN_RW);
    page.on('dialog', (d) => void d.accept());
    try {
      const result = page.getByRole('status');
      const row = page.locator(`tr[data-address="${address}"]`);

      await page.getByLabel('Pool', { exact: true }).selectOption('public');
      await page.getByLabel(/^Address/).fill(address);
      await page.getByLabel(/^Description/).fill('from the page');
      await page.getByRole('button', { name: 'Allocate' }).click();
      await result.getByText(`Allocate: ${address} is DOWN, applied on gw in`).waitFor();
      await row.waitFor();

      await page.getByRole('button', { name: `Associate ${address}` }).click();
      const dialog = page.getByRole('dialog');
      await dialog.getByLabel('Mode').selectOption('routed');
      await dialog.getByLabel('Node').selectOption('home');
      await dialog.getByRole('button', { name: 'Associate' }).click();
      await result
        .getByText(
          new RegExp(`^Associate ${address}: .* on home is ACTIVE, applied on gw and home in`),
        )
        .waitFor({ timeout: 20_000 });
      await row.locator('.node', { hasText: 'home' }).waitFor();
      const reply = await waitFor(
        'home answering on the new FIP',
        async () => echoProbe(lab, 'client', 'tcp', address, 80, 1500),
        15_000,
      );
      assert.equal(reply.name, 'home');

      await page.getByRole('button', { name: `Disassociate ${address}` }).click();
      await result
        .getByText(`Disassociate ${address}: ${address} is DOWN, applied on gw in`)
        .waitFor();
      await row.getByRole('button', { name: `Release ${address}` }).waitFor();
      assert.equal(await echoProbe(lab, 'client', 'tcp', address, 80, 800), undefined);

      await page.getByRole('button', { name: `Release ${address}` }).click();
      await result.getByText(`Released ${address}.`).waitFor();
      await row.waitFor({ state: 'detached' });
      await assert.rejects(api.getFip(address), (e: { status?: number }) => e.status === 404);

      // A refusal shows the API's own error: an address outside every pool.
      await page.getByLabel(/^Address/).fill('198.51.100.7');
      await page.getByRole('button', { name: 'Allocate' }).click();
      await result.getByText(/^Allocate refused: /).waitFor();
      assert.deepEqual(
        problemsOf(page).filter((p) => !/\b4\d\d\b/.test(p)),
        [],
      );
    } finally {
      await context.close();
    }
  });

  it('works from the keyboard: sign in with Enter, open the move dialog, Escape leaves it', async () => {
    const context = await browser!.newContext({ viewport: { width: 1280, height: 800 } });
    try {
      const page = await context.newPage();
      await page.goto(`${url}/ui`);
      // The token field has the focus from the start.
      await page.keyboard.type(TOKEN_RW);
      await page.keyboard.press('Enter');
      const move = page.getByRole('button', { name: `Move ${FIP}` });
      await move.waitFor();
      await move.focus();
      await page.keyboard.press('Enter');
      const dialog = page.getByRole('dialog');
      await dialog.waitFor();
      assert.equal(await page.evaluate('document.activeElement.id'), 'action-target');
      const before = (await api.getFip(FIP)).revision;
      await page.keyboard.press('Escape');
      await dialog.waitFor({ state: 'hidden' });
      assert.equal((await api.getFip(FIP)).revision, before, 'Escape wrote nothing');
    } finally {
      await context.close();
    }
  });

  it('a read-only token sees the same FIPs without any action control', async () => {
    const { context, page } = await signedIn(TOKEN_RO);
    try {
      const row = page.locator(`tr[data-address="${FIP}"]`);
      await row.locator('.node', { hasText: 'home2' }).waitFor();
      await page.getByText('This token may only read').waitFor();
      assert.equal(
        await page.getByRole('button', { name: /^(Move|Associate|Release|Disassociate) / }).count(),
        0,
      );
      assert.equal(await page.getByRole('button', { name: 'Allocate' }).count(), 0);
      assert.equal(await page.locator('#allocate-form').isVisible(), false);
      await page.getByText(/^Packets and bytes sent to each FIP/).waitFor();
      await shoot(page, 'read-only');
      // And the API refuses its writes anyway, whatever a page would send.
      const refused = await page.evaluate(
        async ([address, token]) => {
          const r = await fetch(`/v1/fips/${address}/disassociate`, {
            method: 'POST',
            headers: { authorization: `Bearer ${token}` },
          });
          return r.status;
        },
        [FIP, TOKEN_RO] as const,
      );
      assert.equal(refused, 403);
      assert.deepEqual(
        problemsOf(page).filter((p) => !p.includes('403')),
        [],
      );
    } finally {
      await context.close();
    }
  });
});
