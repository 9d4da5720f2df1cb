// The ipferry web page: four views (floating IPs, nodes, pools, mesh) read through the agent's
// API, kept current by its event stream, and the writes of `ipferry fip`, each shown with its
// result once the gateway has applied it. Everything from the API reaches the page as text
// (textContent), never as markup.
import { api, ApiError, fipPath, followEvents, session, whenUnauthorized } from './api.js';
import { el, formatBytes, formatCount, formatAge, formatMs, clear } from './dom.js';

/** How long a write's result is waited for before the page says it is not applied yet. */
const APPLY_TIMEOUT_MS = 15_000;
const APPLY_POLL_MS = 250;
const COUNTERS_POLL_MS = 3000;
const VIEWS = ['fips', 'nodes', 'pools', 'mesh'];

const $ = (id) => document.getElementById(id);

const state = {
  access: 'ro',
  node: '',
  fips: [],
  pools: [],
  nodes: [],
  mesh: undefined,
  counters: { available: false, fips: {} },
  /** Aborts the event stream and the counter polling when the user signs out. */
  stop: undefined,
};

// --- sign in and out -----------------------------------------------------------------------

function showLogin(message = '') {
  state.stop?.abort();
  state.stop = undefined;
  for (const id of ['tabs', 'whoami', 'live', 'sign-out']) $(id).hidden = true;
  for (const view of VIEWS) $(`view-${view}`).hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message;
  $('token').value = '';
  $('token').focus();
}

async function start() {
  let who;
  try {
    who = await api('GET', '/ui/session');
  } catch (e) {
    session.signOut();
    showLogin(e instanceof ApiError && e.status === 401 ? 'That token is not accepted.' : `${e}`);
    return;
  }
  state.access = who.access;
  state.node = who.node;
  document.body.classList.toggle('read-only', who.access !== 'rw');
  $('readonly-note').hidden = who.access === 'rw';
  $('login').hidden = true;
  $('whoami').textContent =
    `Agent ${who.node} · ${who.access === 'rw' ? 'read-write' : 'read-only'} token`;
  for (const id of ['tabs', 'whoami', 'live', 'sign-out']) $(id).hidden = false;
  state.stop = new AbortController();
  showView(currentView(), false);
  await refreshAll();
  void followEvents({ signal: state.stop.signal, onEvent, onState: showLive });
  void pollCounters(state.stop.signal);
}

$('login-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const token = $('token').value.trim();
  if (token.length === 0) {
    $('login-error').textContent = 'Enter a token.';
    return;
  }
  session.signIn(token);
  $('token').value = '';
  void start();
});

$('sign-out').addEventListener('click', () => {
  session.signOut();
  announce('Signed out.');
  showLogin();
});

whenUnauthorized(() => {
  session.signOut();
  showLogin('The agent no longer accepts this token: sign in again.');
});

// --- views -----------------------------------------------------------------------------------

function currentView() {
  const name = location.hash.slice(1);
  return VIEWS.includes(name) ? name : 'fips';
}

function showView(name, focus = true) {
  for (const view of VIEWS) $(`view-${view}`).hidden = view !== name;
  for (const link of document.querySelectorAll('#tabs a')) {
    if (link.dataset.view === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (focus) $(`${name}-title`).focus();
}

window.addEventListener('hashchange', () => {
  if (session.token()) showView(currentView());
});

function showLive(mode) {
  $('live').dataset.state = mode;
  $('live-text').textContent = mode === 'live' ? 'Live' : 'Reconnecting…';
}

/** The result of the latest action, read out by screen readers (role=status, aria-live). */
function announce(text, kind = 'info') {
  const result = $('result');
  result.textContent = text;
  result.dataset.kind = kind;
}

// --- reading ---------------------------------------------------------------------------------

const readers = {
  fips: async () => {
    state.fips = await api('GET', '/v1/fips');
    renderFips();
  },
  pools: async () => {
    state.pools = await api('GET', '/v1/pools');
    renderPools();
    renderPoolChoice();
  },
  nodes: async () => {
    state.nodes = await api('GET', '/v1/nodes');
    renderNodes();
    renderNodeChoice();
    renderMesh();
  },
  mesh: async () => {
    state.mesh = await api('GET', '/v1/mesh');
    renderMesh();
  },
};

async function refresh(kinds) {
  await Promise.all(
    kinds.map((kind) =>
      readers[kind]().catch((e) => {
        if (!(e instanceof ApiError && e.status === 401)) console.warn(`ipferry: ${kind}`, e);
      }),
    ),
  );
}

const refreshAll = () => refresh(Object.keys(readers));

/** Store changes come in bursts (a write, then the agent's status): one read per kind per burst. */
const pending = new Set();
let scheduled;
function onEvent(name, data) {
  if (name === 'hello') {
    void refreshAll();
    return;
  }
  if (name !== 'change') return;
  for (const kind of data.kinds) if (kind in readers) pending.add(kind);
  clearTimeout(scheduled);
  scheduled = setTimeout(() => {
    const kinds = [...pending];
    pending.clear();
    void refresh(kinds);
  }, 150);
}

async function pollCounters(signal) {
  while (!signal.aborted) {
    try {
      state.counters = await api('GET', '/ui/counters');
      renderCounters();
    } catch (e) {
      if (!signal.aborted) console.warn('ipferry: counters', e);
    }
    await new Promise((resolve) => setTimeout(resolve, COUNTERS_POLL_MS));
  }
}

// --- floating IPs ----------------------------------------------------------------------------

function stateBadge(fip) {
  const s = fip.status ?? { state: 'DOWN' };
  const applied = s.revision !== undefined && s.revision >= fip.revision && !s.stale;
  const text = applied || s.revision === undefined ? s.state : `${s.state} (stale)`;
  const badge = el('span', { class: `badge state-${s.state.toLowerCase()}` }, text);
  if (s.message) badge.title = s.message;
  return el('span', {}, badge, s.message ? el('span', { class: 'message' }, s.message) : '');
}

function fipRow(fip) {
  const a = fip.association;
  const counter = state.counters.fips[fip.address];
  const actions = el('td', { class: 'writes actions' });
  const label = (verb) => `${verb} ${fip.address}`;
  if (state.access !== 'rw') {
    // No controls for a read-only token: the API would refuse them.
  } else if (a) {
    actions.append(
      button('Move', label('Move'), () => openAction('move', fip)),
      button('Disassociate', label('Disassociate'), () => disassociate(fip)),
    );
  } else {
    actions.append(
      button('Associate', label('Associate'), () => openAction('associate', fip)),
      button('Release', label('Release'), () => release(fip), 'danger'),
    );
  }
  return el(
    'tr',
    { 'data-address': fip.address },
    el('th', { scope: 'row' }, el('code', {}, fip.address)),
    el('td', {}, fip.pool ?? '—'),
    el('td', { class: 'state' }, stateBadge(fip)),
    el('td', {}, a?.mode ?? (fip.forwards?.length ? 'ports' : '—')),
    el('td', { class: 'target' }, a?.target ? el('code', {}, a.target) : '—'),
    el('td', { class: 'node' }, a?.node ?? fip.status?.node ?? '—'),
    el('td', { class: 'num packets' }, counter ? formatCount(counter.packets) : '—'),
    el('td', { class: 'num bytes' }, counter ? formatBytes(counter.bytes) : '—'),
    actions,
  );
}

function button(text, accessibleName, onClick, kind = '') {
  const b = el('button', { type: 'button', class: kind, 'aria-label': accessibleName }, text);
  b.addEventListener('click', onClick);
  return b;
}

function renderFips() {
  const body = $('fips-table').tBodies[0];
  clear(body);
  if (state.fips.length === 0) {
    body.append(el('tr', {}, el('td', { colspan: '9', class: 'empty' }, 'No floating IPs yet.')));
    return;
  }
  for (const fip of state.fips) body.append(fipRow(fip));
}

function renderCounters() {
  $('counters-note').textContent = state.counters.available
    ? `Packets and bytes sent to each FIP through ${state.counters.node} since it was associated; refreshed every ${COUNTERS_POLL_MS / 1000} s.`
    : 'This agent keeps no per-FIP counters.';
  for (const row of $('fips-table').tBodies[0].rows) {
    const counter = state.counters.fips[row.dataset.address ?? ''];
    if (!row.dataset.address) continue;
    row.querySelector('.packets').textContent = counter ? formatCount(counter.packets) : '—';
    row.querySelector('.bytes').textContent = counter ? formatBytes(counter.bytes) : '—';
  }
}

function renderPoolChoice() {
  const select = $('allocate-pool');
  const chosen = select.value;
  clear(select);
  for (const pool of state.pools) select.append(el('option', { value: pool.name }, pool.name));
  if (state.pools.some((p) => p.name === chosen)) select.value = chosen;
}

function renderNodeChoice() {
  const select = $('action-node');
  const chosen = select.value;
  clear(select);
  select.append(el('option', { value: '' }, 'the gateway (a LAN target)'));
  for (const node of state.nodes) select.append(el('option', { value: node.name }, node.name));
  select.value = chosen;
}

// --- writes ------------------------------------------------------------------------------------

/**
 * Waits until the gateway's status of `address` describes revision `revision` or later and is
 * settled, and returns the FIP as it is then; undefined when the time runs out. An associated FIP that is DOWN is not settled: the gateway is still at work (waiting for
 * a tunnel's path to be measured, say), and `onProgress` hears what it said.
 */
async function applied(address, revision, onProgress) {
  const started = performance.now();
  while (performance.now() - started < APPLY_TIMEOUT_MS) {
    const fip = await api('GET', fipPath(address));
    const s = fip.status;
    if (s?.revision !== undefined && s.revision >= revision && !s.stale) {
      const settled = !fip.association || s.state !== 'DOWN';
      if (settled) return { fip };
      onProgress(s.message ?? s.state);
    }
    await new Promise((resolve) => setTimeout(resolve, APPLY_POLL_MS));
  }
  return undefined;
}

/**
 * Which agents have applied revision `revision` of `address`, as GET /v1/applied reports it
 * (every agent the FIP concerns: its gateway, the node it goes to); undefined from an agent
 * without that route, or when it cannot say.
 */
async function appliedBy(address, revision) {
  const query = new URLSearchParams({ revision: String(revision), fip: address, wait: '10s' });
  try {
    return await api('GET', `/v1/applied?${query}`);
  } catch {
    return undefined;
  }
}

/** `gw`, `gw and home`, `gw, home and home2`. */
function listed(names) {
  return names.length <= 1
    ? (names[0] ?? '')
    : `${names.slice(0, -1).join(', ')} and ${names.at(-1)}`;
}

/** Runs a write, then announces its result once applied (or why it is not). */
async function write(what, send) {
  announce(`${what}…`, 'busy');
  let written;
  try {
    written = await send();
  } catch (e) {
    announce(`${what} refused: ${e instanceof ApiError ? e.describe() : e}`, 'error');
    return false;
  }
  void refresh(['fips', 'pools']);
  const started = performance.now();
  const report = await appliedBy(written.address, written.revision);
  const failed = report?.agents.filter((a) => a.state === 'error' || a.state === 'unreachable');
  if (failed?.length) {
    const reasons = failed.map((a) => `${a.node}: ${a.message ?? a.state}`).join('; ');
    announce(`${what}: written, but not applied (${report.outcome}): ${reasons}`, 'error');
    void refresh(['fips']);
    return true;
  }
  if (report?.outcome === 'applied') {
    // The route waited for the FIP to settle; held DOWN when its time ran out, it says why.
    const fip = await api('GET', fipPath(written.address)).catch(() => undefined);
    if (fip?.status) return announceApplied(what, fip, report, started);
  }
  // An agent without the route, or one that had not answered yet: follow the FIP itself.
  let lastWord = '';
  const result = await applied(written.address, written.revision, (word) => {
    lastWord = word;
    announce(`${what}: written; the gateway is at it: ${word}`, 'busy');
  }).catch(() => undefined);
  if (!result) {
    announce(
      `${what}: written (revision ${written.revision}), not reported applied by the gateway within ${APPLY_TIMEOUT_MS / 1000} s${lastWord ? ` (last: ${lastWord})` : ''}.`,
      'error',
    );
    return true;
  }
  return announceApplied(what, result.fip, report, started);
}

/**
 * `Move …: 203.0.113.10 → … on home2 is ACTIVE, applied on gw and home2 in 994 ms.` A FIP its
 * gateway holds DOWN (a new tunnel's path being measured) is applied too: the page says why it
 * is DOWN and that it turns ACTIVE by itself.
 */
function announceApplied(what, fip, report, started) {
  const ms = Math.round(performance.now() - started);
  const s = fip.status;
  const where = fip.association?.target
    ? ` → ${fip.association.target}${fip.association.node ? ` on ${fip.association.node}` : ''}`
    : '';
  const message = s.message ? ` (${s.message})` : '';
  const agents =
    report?.outcome === 'applied'
      ? listed(report.agents.map((a) => a.node))
      : (s.node ?? 'the gateway');
  const held = report?.agents.some((a) => a.held !== undefined) && s.state === 'DOWN';
  announce(
    `${what}: ${fip.address}${where} is ${s.state}${message}, applied on ${agents} in ${ms} ms.${held ? ' It turns ACTIVE on its own.' : ''}`,
    s.state === 'ERROR' || s.state === 'UNREACHABLE' ? 'error' : 'ok',
  );
  void refresh(['fips']);
  return true;
}

$('allocate-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const body = { pool: form.get('pool') };
  const address = `${form.get('address') ?? ''}`.trim();
  const description = `${form.get('description') ?? ''}`.trim();
  if (address) body.address = address;
  if (description) body.description = description;
  void write('Allocate', () => api('POST', '/v1/fips', body)).then((ok) => {
    if (ok) event.target.reset();
  });
});

function disassociate(fip) {
  void write(`Disassociate ${fip.address}`, () =>
    api('POST', `${fipPath(fip.address)}/disassociate`),
  );
}

async function release(fip) {
  if (!confirm(`Release ${fip.address}? It goes back to pool ${fip.pool}.`)) return;
  announce(`Release ${fip.address}…`, 'busy');
  try {
    await api('DELETE', fipPath(fip.address));
    announce(`Released ${fip.address}.`, 'ok');
    void refresh(['fips', 'pools']);
  } catch (e) {
    announce(
      `Release ${fip.address} refused: ${e instanceof ApiError ? e.describe() : e}`,
      'error',
    );
  }
}

// --- the associate / move dialog ---------------------------------------------------------------

let action;

function openAction(kind, fip) {
  action = { kind, fip };
  const verb = kind === 'move' ? 'Move' : 'Associate';
  $('action-title').textContent = `${verb} ${fip.address}`;
  $('action-submit').textContent = verb;
  $('action-fip').textContent = fip.association
    ? `Now: ${fip.association.mode} to ${fip.association.target ?? fip.address}${fip.association.node ? ` on ${fip.association.node}` : ''}.`
    : `Pool ${fip.pool}, not associated.`;
  document.querySelector('[data-for=mode]').hidden = kind === 'move';
  $('action-mode').value = '';
  $('action-target').value = '';
  $('action-node').value = kind === 'move' ? (fip.association?.node ?? '') : '';
  $('action-error').textContent = '';
  $('action-dialog').showModal();
  $('action-target').focus();
}

$('action-cancel').addEventListener('click', () => $('action-dialog').close());

$('action-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const { kind, fip } = action;
  const target = $('action-target').value.trim();
  const node = $('action-node').value;
  const mode = $('action-mode').value;
  if (
    !target &&
    !(kind === 'associate' && mode === 'routed') &&
    fip.association?.mode !== 'routed'
  ) {
    $('action-error').textContent = 'Enter the target address.';
    $('action-target').focus();
    return;
  }
  const body = {
    ...(target ? { target } : {}),
    ...(node ? { node } : {}),
    ...(kind === 'associate' && mode ? { mode } : {}),
  };
  $('action-dialog').close();
  const verb = kind === 'move' ? 'Move' : 'Associate';
  void write(`${verb} ${fip.address}`, () => api('POST', `${fipPath(fip.address)}/${kind}`, body));
});

// --- nodes -------------------------------------------------------------------------------------

function renderNodes() {
  const list = $('nodes-list');
  clear(list);
  if (state.nodes.length === 0) list.append(el('p', {}, 'No nodes registered.'));
  for (const node of state.nodes) list.append(nodeCard(node));
}

function nodeCard(node) {
  const facts = el('dl', { class: 'facts' });
  const fact = (term, value) => {
    if (value === undefined || value === '') return;
    facts.append(el('dt', {}, term), el('dd', {}, value));
  };
  fact('Health', node.alive ? 'alive' : node.unmanaged ? 'no agent (unmanaged)' : 'not alive');
  fact('Site', node.site);
  fact('Endpoint', node.endpoint);
  fact('Overlay address', node.overlayIp);
  fact(
    'Tunnel',
    node.tunnel ? `${node.tunnel.name} (${node.tunnel.driver ?? 'wireguard'})` : undefined,
  );
  fact(
    'Checked',
    node.tunnel?.checkedAt ? new Date(node.tunnel.checkedAt).toLocaleString() : undefined,
  );
  if (node.tunnel?.restore) {
    const r = node.tunnel.restore;
    fact(
      'Last restore',
      `${r.faults.join('; ')}${r.restoredAt ? ' — restored' : ' — not restored yet'}`,
    );
  }
  const peers = node.tunnel?.peers ?? [];
  const card = el(
    'article',
    {
      class: `card ${node.alive || node.unmanaged ? '' : 'dead'}`,
      'aria-labelledby': `node-${node.name}`,
    },
    el(
      'h3',
      { id: `node-${node.name}` },
      node.name,
      ' ',
      el(
        'span',
        { class: `badge ${node.alive ? 'state-active' : 'state-down'}` },
        node.alive ? 'alive' : 'down',
      ),
    ),
    facts,
  );
  if (peers.length > 0) card.append(peersTable(node, peers));
  else if (node.tunnel) card.append(el('p', { class: 'muted' }, 'No tunnel peers.'));
  return card;
}

function peersTable(node, peers) {
  const rows = peers.map((p) =>
    el(
      'tr',
      {},
      el('th', { scope: 'row' }, p.node ?? `${p.publicKey.slice(0, 10)}…`),
      el('td', {}, p.endpoint ?? '—'),
      el('td', {}, handshake(p)),
      el('td', { class: 'num' }, p.rxBytes !== undefined ? formatBytes(p.rxBytes) : '—'),
      el('td', { class: 'num' }, p.txBytes !== undefined ? formatBytes(p.txBytes) : '—'),
      el('td', { class: 'num' }, p.probe?.pathMtu ?? p.probe?.tunnelMtu ?? '—'),
      el(
        'td',
        { class: 'num' },
        p.probe?.rttMs !== undefined ? `${formatMs(p.probe.rttMs)} ms` : '—',
      ),
      el('td', {}, probeHealth(p.probe)),
    ),
  );
  return el(
    'div',
    { class: 'table-wrap' },
    el(
      'table',
      {},
      el('caption', {}, `Tunnel peers of ${node.name}`),
      el(
        'thead',
        {},
        el(
          'tr',
          {},
          ...['Peer', 'Endpoint', 'Handshake', 'Received', 'Sent', 'Path MTU', 'RTT', 'Path'].map(
            (h, i) => el('th', { scope: 'col', class: i >= 3 && i <= 6 ? 'num' : '' }, h),
          ),
        ),
      ),
      el('tbody', {}, ...rows),
    ),
  );
}

function handshake(peer) {
  if (peer.handshakeAgeSeconds !== undefined) return `${formatAge(peer.handshakeAgeSeconds)} ago`;
  if (peer.reachable !== undefined) return peer.reachable ? 'reachable' : 'unreachable';
  return 'none';
}

function probeHealth(probe) {
  if (!probe) return '—';
  const badge = el(
    'span',
    { class: `badge ${probe.alive ? 'state-active' : 'state-unreachable'}` },
    probe.alive ? 'answers' : 'no answer',
  );
  if (probe.note) badge.title = probe.note;
  return badge;
}

// --- pools -------------------------------------------------------------------------------------

function entryText(entry) {
  if (entry.kind === 'cidr') return entry.cidr;
  if (entry.kind === 'range') return `${entry.first}-${entry.last}`;
  return entry.address ?? entry.kind;
}

function renderPools() {
  const body = $('pools-table').tBodies[0];
  clear(body);
  if (state.pools.length === 0) {
    body.append(el('tr', {}, el('td', { colspan: '6', class: 'empty' }, 'No pools yet.')));
  }
  for (const pool of state.pools) {
    const size = Number(pool.size);
    const entries = pool.entries.map(entryText);
    const meter = el('meter', {
      min: '0',
      max: String(Number.isFinite(size) && size > 0 ? Math.min(size, Number.MAX_SAFE_INTEGER) : 1),
      value: String(pool.allocated),
      'aria-label': `Usage of ${pool.name}`,
    });
    body.append(
      el(
        'tr',
        {},
        el('th', { scope: 'row' }, pool.name),
        el('td', {}, pool.gateway),
        el('td', {}, pool.delivery ?? '—'),
        el('td', {}, el('code', {}, entries.join(', ') || `${pool.entries.length}`)),
        el('td', { class: 'usage' }, meter, ` ${pool.allocated} of ${pool.size} allocated`),
        el('td', {}, pool.description ?? ''),
      ),
    );
  }
}

// --- mesh --------------------------------------------------------------------------------------

function renderMesh() {
  const body = $('mesh-body');
  clear(body);
  const mesh = state.mesh;
  if (!mesh) return;
  const facts = el('dl', { class: 'facts' });
  const fact = (term, value) => facts.append(el('dt', {}, term), el('dd', {}, value));
  const policy = mesh.inForce;
  fact('Policy', policy ? `overlay ${policy.overlay}` : 'none: no fleet mesh');
  if (policy) {
    fact('Sites', Object.keys(policy.sites ?? {}).join(', ') || '—');
    fact('Most members one change may drop', `${policy.maxChange ?? 'default'}`);
  }
  const trial = mesh.record?.trial;
  fact(
    'Trial',
    trial
      ? `on trial until ${new Date(trial.deadline).toLocaleString()}: confirm it or it rolls back`
      : 'none',
  );
  if (mesh.rolledBack) {
    fact(
      'Rolled back',
      `the change of ${mesh.rollback?.changedAt ?? '?'} was not confirmed by ${mesh.rollback?.at ?? '?'}`,
    );
  }
  fact(
    'Latest confirmation',
    mesh.confirmation
      ? `revision ${mesh.confirmation.revision} at ${new Date(mesh.confirmation.at).toLocaleString()}`
      : 'none',
  );
  body.append(facts);

  const rows = state.nodes
    .filter((n) => !n.unmanaged)
    .map((n) =>
      el(
        'tr',
        {},
        el('th', { scope: 'row' }, n.name),
        el('td', {}, n.alive ? 'alive' : 'down'),
        el('td', { class: 'num' }, n.mesh?.appliedRevision ?? '—'),
        el('td', { class: 'num' }, n.mesh?.members ?? '—'),
        el('td', {}, n.mesh?.rejectAll ? 'rejects all' : '—'),
        el(
          'td',
          {},
          n.mesh?.hold
            ? `keeps ${n.mesh.hold.keeping.join(', ')} (since revision ${n.mesh.hold.sinceRevision}, more than ${n.mesh.hold.maxChange} left)`
            : 'none',
        ),
        el('td', {}, n.mesh?.rolledBack ? 'yes' : 'no'),
      ),
    );
  body.append(
    el(
      'div',
      { class: 'table-wrap' },
      el(
        'table',
        {},
        el('caption', {}, 'Each node’s mesh as its agent last applied it'),
        el(
          'thead',
          {},
          el(
            'tr',
            {},
            ...[
              'Node',
              'Health',
              'Applied revision',
              'Members',
              'Reject all',
              'Hold',
              'Rolled back',
            ].map((h, i) => el('th', { scope: 'col', class: i === 2 || i === 3 ? 'num' : '' }, h)),
          ),
        ),
        el('tbody', {}, ...rows),
      ),
    ),
  );
}

// --- start -------------------------------------------------------------------------------------

if (session.token()) void start();
else showLogin();
