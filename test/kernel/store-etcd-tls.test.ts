/**
 * The etcd store over TLS with client certificates and etcd's authentication, against a real
 * etcd (Debian's etcd-server) that src/lab/etcd.ts starts with certificates made by openssl for
 * this run: the conformance suite with the right access, an agent on it (in this process and
 * as its own process), and every wrong access refused when the store is opened — with an IPF
 * code, a message naming what is wrong and a hint, never a raw gRPC error, never with the
 * password in it, and with nothing written.
 *
 * The cluster is a throwaway one on 127.0.0.1 with free ports and a temporary directory,
 * stopped by pid and removed also when a test fails (the lab's exit handler covers a crash).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { readEtcdAccess, resolveConfig, type RawAgentOptions } from '../../src/agent/config.js';
import { startAgent, type RunningAgent } from '../../src/agent/run.js';
import { IpferryError } from '../../src/core/errors.js';
import { FakeDataplane } from '../../src/dataplane/fake.js';
import {
  ETCD_LAB_USER,
  makeEtcdPki,
  startEtcd,
  type EtcdCluster,
  type EtcdPki,
} from '../../src/lab/etcd.js';
import { freePort } from '../../src/lab/ports.js';
import type { EtcdStore } from '../../src/store/etcd.js';
import { openEtcdStore, parseEtcdEndpoints } from '../../src/store/etcd.js';
import { openStore, type EtcdAccess } from '../../src/store/open.js';
import type { Store } from '../../src/store/store.js';
import { TOKEN_RW, tempDir, waitFor } from '../support/helpers.js';
import { storeConformance } from '../support/store-conformance.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

let cluster: EtcdCluster | undefined;
/** An unrelated CA and a client certificate it signed: the wrong ones. */
let foreign: EtcdPki | undefined;
let foreignFiles: { ca: Buffer; cert: Buffer; key: Buffer };
let tmp: { dir: string; remove: () => Promise<void> } | undefined;
/** The right access, as buffers (what openStore takes). */
let good: Required<EtcdAccess>;
let password = '';
let namespaces = 0;
const opened = new Set<Store>();

before(async () => {
  tmp = await tempDir('etcd-tls');
  cluster = await startEtcd({ tls: true, auth: true });
  foreign = await makeEtcdPki(join(tmp.dir, 'foreign'));
  foreignFiles = {
    ca: await readFile(foreign.ca),
    cert: await readFile(foreign.clientCert),
    key: await readFile(foreign.clientKey),
  };
  const files = cluster.access;
  password = (await readFile(files.passwordFile!, 'utf8')).trim();
  good = {
    ca: await readFile(files.ca!),
    cert: await readFile(files.cert!),
    key: await readFile(files.key!),
    user: files.user!,
    password,
  };
});

after(async () => {
  for (const store of opened) await store.close();
  await cluster?.stop();
  await tmp?.remove();
});

/** A store of its own namespace (inside the /ipferry prefix the lab's role grants). */
async function storeOn(access: EtcdAccess, namespace?: string): Promise<EtcdStore> {
  const store = await openEtcdStore(parseEtcdEndpoints(cluster!.endpoints.join(',')), {
    namespace: namespace ?? `/ipferry-tls-test/${process.pid}/${++namespaces}/`,
    tls: {
      ...(access.ca ? { ca: access.ca } : {}),
      ...(access.cert && access.key ? { cert: access.cert, key: access.key } : {}),
    },
    ...(access.user !== undefined && access.password !== undefined
      ? { auth: { user: access.user, password: access.password } }
      : {}),
  });
  opened.add(store);
  return store;
}

/** Asserts an IpferryError of `code` whose message matches `reason`, with no password in it. */
function refused(code: string, reason: RegExp, ...secrets: string[]): (e: unknown) => boolean {
  return (e) => {
    assert.ok(e instanceof IpferryError, `expected an IpferryError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, reason);
    assert.ok(e.hint.length > 0);
    const text = `${e.message}\n${e.hint}\n${JSON.stringify(e.toJSON())}\n${e.stack ?? ''}`;
    for (const secret of [password, ...secrets]) {
      assert.ok(!text.includes(secret), `the password appears in: ${text}`);
    }
    return true;
  };
}

storeConformance(
  'etcd over TLS with a client certificate and a login',
  async () => {
    const store = await storeOn(good);
    return { store, cleanup: () => store.close() };
  },
  // No compaction: it is etcd's administrator's (root's) business, which ipferry's role may not
  // do; store-etcd.test.ts covers it on a plain cluster. The 200 contending allocators take
  // about 11 s here as on a plain member: 40 s leaves room for a machine shared with other runs.
  { leaseExpiryWaitMs: 8000, testTimeoutMs: 40_000 },
);

void describe('etcd over TLS: the access that works', () => {
  void it('openStore(etcd:https://…) reads, writes, watches and leases under /ipferry', async () => {
    assert.match(cluster!.storeSpec, /^etcd:https:\/\/127\.0\.0\.1:\d+$/);
    const store = await openStore(cluster!.storeSpec, { etcd: good });
    opened.add(store);
    const key = `/ipferry/tls-test/${process.pid}/k`;
    const events: string[] = [];
    const watch = store.watch(`/ipferry/tls-test/${process.pid}/`, {
      onEvents: (batch) => events.push(...batch.map((e) => `${e.type} ${e.kv.value}`)),
      onError: (e) => events.push(`error ${e.message}`),
    });
    const lease = await store.grantLease(10);
    const put = await store.txn({
      compare: [{ key, target: 'create', op: '=', value: 0 }],
      success: [{ type: 'put', key, value: 'one', lease }],
    });
    assert.equal(put.succeeded, true);
    await store.keepAlive(lease);
    assert.equal((await store.get(key))?.value, 'one');
    assert.equal((await store.get(key))?.lease, lease);
    await store.revokeLease(lease);
    assert.equal(await store.get(key), undefined);
    await waitFor('both events', () => Promise.resolve(events.length >= 2));
    assert.deepEqual(events, ['put one', 'delete ']);
    watch.close();
  });

  void it('a client certificate alone logs in as its common name (etcd --client-cert-auth)', async () => {
    const store = await storeOn({ ca: good.ca, cert: good.cert, key: good.key });
    await store.check();
    assert.equal((await store.txn({ compare: [], success: [] })).succeeded, true);
  });

  void it('a watch, a lease and the login survive a restart of etcd (which forgets its tokens)', async () => {
    const store = await storeOn(good);
    const values: string[] = [];
    const errors: Error[] = [];
    const watch = store.watch('w/', {
      onEvents: (batch) => values.push(...batch.map((e) => e.kv.value)),
      onError: (e) => errors.push(e),
    });
    const lease = await store.grantLease(30);
    await store.txn({ compare: [], success: [{ type: 'put', key: 'w/a', value: 'before' }] });
    await waitFor('the first event', () => Promise.resolve(values.length === 1));
    await cluster!.kill();
    await cluster!.restart();
    // First call after the restart, on the token etcd no longer knows: a liveness beat.
    await waitFor(
      'a keep-alive after the restart',
      () =>
        store.keepAlive(lease).then(
          () => true,
          () => false,
        ),
      15_000,
    );
    await waitFor(
      'a write after the restart',
      async () =>
        store.txn({ compare: [], success: [{ type: 'put', key: 'w/b', value: 'after' }] }).then(
          () => true,
          () => false,
        ),
      15_000,
    );
    await waitFor('the second event', () => Promise.resolve(values.length === 2), 15_000);
    assert.deepEqual(values, ['before', 'after']);
    assert.deepEqual(errors, []);
    watch.close();
    await store.revokeLease(lease);
  });
});

void describe('etcd over TLS: a login whose token expires', () => {
  let short: EtcdCluster | undefined;
  after(async () => {
    await short?.stop();
  });

  void it('renews it for calls and for watches that (re)connect after it expired', async () => {
    // etcd forgets an idle login token after --auth-token-ttl (300 s by default): 2 s here.
    short = await startEtcd({ tls: true, auth: true, extraArgs: ['--auth-token-ttl', '2'] });
    const files = short.access;
    const store = await openStore(short.storeSpec, {
      etcd: {
        ca: await readFile(files.ca!),
        cert: await readFile(files.cert!),
        key: await readFile(files.key!),
        user: files.user!,
        password: (await readFile(files.passwordFile!, 'utf8')).trim(),
      },
    });
    opened.add(store);
    const first = await store.txn({
      compare: [],
      success: [{ type: 'put', key: '/ipferry/t/a', value: '1' }],
    });
    await sleep(3500);
    assert.equal((await store.get('/ipferry/t/a'))?.value, '1');
    await sleep(3500);
    // A watch from a revision starts without a read of its own: the stale token must not end it.
    const values: string[] = [];
    const errors: Error[] = [];
    const watch = store.watch('/ipferry/t/', {
      fromRevision: first.revision,
      onEvents: (batch) => values.push(...batch.map((e) => e.kv.value)),
      onError: (e) => errors.push(e),
    });
    await waitFor('the old event', () => Promise.resolve(values.length === 1));
    await store.txn({ compare: [], success: [{ type: 'put', key: '/ipferry/t/b', value: '2' }] });
    await waitFor('the new event', () => Promise.resolve(values.length === 2));
    assert.deepEqual(values, ['1', '2']);
    assert.deepEqual(errors, []);
    watch.close();
  });
});

void describe('etcd over TLS: wrong access is refused at open, with nothing left open', () => {
  const wrongPassword = `wrong-${process.pid}-password`;
  const cases: [string, () => EtcdAccess, string, RegExp][] = [
    [
      'a CA that did not sign etcd’s certificate',
      () => ({ ...good, ca: foreignFiles.ca }),
      'IPF_E_STORE_ACCESS',
      /server certificate is not trusted/,
    ],
    [
      'no CA (the system’s CAs do not know the lab’s)',
      () => ({ cert: good.cert, key: good.key, user: good.user, password }),
      'IPF_E_STORE_ACCESS',
      /server certificate is not trusted/,
    ],
    [
      'no client certificate',
      () => ({ ca: good.ca, user: good.user, password }),
      'IPF_E_STORE_ACCESS',
      /requires a client certificate \(TLS alert \d+/,
    ],
    [
      'a client certificate of another CA',
      () => ({ ...good, cert: foreignFiles.cert, key: foreignFiles.key }),
      'IPF_E_STORE_ACCESS',
      /refused the client certificate \(TLS alert \d+/,
    ],
    [
      'a wrong password',
      () => ({ ...good, password: wrongPassword }),
      'IPF_E_STORE_ACCESS',
      /refused the login of user "ipferry": wrong user name or password/,
    ],
    [
      'an unknown user',
      () => ({ ...good, user: 'nobody' }),
      'IPF_E_STORE_ACCESS',
      /refused the login of user "nobody"/,
    ],
  ];
  for (const [what, access, code, reason] of cases) {
    void it(`refuses ${what}`, async () => {
      const started = Date.now();
      await assert.rejects(
        openStore(cluster!.storeSpec, { etcd: access() }),
        refused(code, reason, wrongPassword),
      );
      assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
    });
  }

  void it('says that plain http:// reaches a TLS member', async () => {
    const plain = cluster!.storeSpec.replaceAll('https://', 'http://');
    await assert.rejects(
      openStore(plain, { etcd: { user: good.user, password } }),
      refused('IPF_E_STORE', /if it serves TLS there, write https:\/\//),
    );
    // TLS material for plain endpoints would be ignored: refused before anything is contacted.
    await assert.rejects(
      openStore(plain, { etcd: good }),
      refused('IPF_E_CONFIG', /are for TLS: write the endpoints as https:\/\//),
    );
  });

  void it('refuses a role that may not touch the namespace', async () => {
    const store = await storeOn(good, '/elsewhere/');
    await assert.rejects(
      store.check(),
      refused(
        'IPF_E_STORE_ACCESS',
        /user "ipferry" may not read and write the keys under \/elsewhere\//,
      ),
    );
  });

  void it('refuses a password over plain http:// beyond this host, and mixed schemes', async () => {
    const secret = `pw-${process.pid}-never-shown`;
    const access = { etcd: { user: 'u', password: secret } };
    await assert.rejects(
      openStore('etcd:http://10.0.0.1:2379', access),
      refused('IPF_E_CONFIG', /in clear across the network/, secret),
    );
    await assert.rejects(
      openStore('etcd:https://10.0.0.1:2379,http://10.0.0.2:2379'),
      refused('IPF_E_CONFIG', /mix http:\/\/ and https:\/\//),
    );
    await assert.rejects(
      openStore('sqlite::memory:', { etcd: {} }),
      refused('IPF_E_CONFIG', /need an etcd: store/),
    );
  });
});

// --- the agent's options ----------------------------------------------------------------------

void describe('etcd over TLS: the agent’s --etcd-* options', () => {
  const base = (): RawAgentOptions => ({
    node: 'tls1',
    store: cluster!.storeSpec,
    listen: '127.0.0.1:0',
    tokenFile: join(tmp!.dir, 'api-token'),
    logLevel: 'silent',
    etcdCa: cluster!.access.ca,
    etcdCert: cluster!.access.cert,
    etcdKey: cluster!.access.key,
    etcdUser: cluster!.access.user,
    etcdPasswordFile: cluster!.access.passwordFile,
  });

  void it('validates them together, reporting every problem', () => {
    assert.throws(
      () =>
        resolveConfig(
          {},
          {
            node: 'n',
            store: 'sqlite::memory:',
            etcdCert: '/c.pem',
            etcdUser: 'bad user',
          },
        ),
      (e) => {
        assert.ok(e instanceof IpferryError && e.code === 'IPF_E_CONFIG');
        const paths = e.problems.map((p) => `${p.path}: ${p.message}`).join('\n');
        assert.match(paths, /--etcd-cert: is for an etcd: store/);
        assert.match(paths, /--etcd-cert: needs --etcd-key/);
        assert.match(paths, /--etcd-user: needs --etcd-password-file/);
        assert.match(paths, /--etcd-user: must be an etcd user name/);
        return true;
      },
    );
    const config = resolveConfig({}, base());
    assert.deepEqual(config.etcd, {
      ca: cluster!.access.ca,
      cert: cluster!.access.cert,
      key: cluster!.access.key,
      user: ETCD_LAB_USER,
      passwordFile: cluster!.access.passwordFile,
    });
  });

  void it('refuses a key or password file others may read, and files that are not what they claim', async () => {
    const dir = tmp!.dir;
    const open = join(dir, 'open-key.pem');
    await writeFile(open, await readFile(cluster!.access.key!));
    await chmod(open, 0o644);
    await assert.rejects(
      readEtcdAccess(resolveConfig({}, { ...base(), etcdKey: open })),
      refused('IPF_E_SECRET_FILE', /open-key\.pem is readable by others \(mode 0644/),
    );
    const pw = join(dir, 'open-password');
    await writeFile(pw, `${password}\n`);
    await chmod(pw, 0o640);
    await assert.rejects(
      readEtcdAccess(resolveConfig({}, { ...base(), etcdPasswordFile: pw })),
      refused('IPF_E_SECRET_FILE', /open-password is readable by others \(mode 0640/),
    );
    const two = join(dir, 'two-lines');
    await writeFile(two, `${password}\nsecond-line-${process.pid}\n`, { mode: 0o600 });
    await assert.rejects(
      readEtcdAccess(resolveConfig({}, { ...base(), etcdPasswordFile: two })),
      refused('IPF_E_SECRET_FILE', /holds more than one line/, `second-line-${process.pid}`),
    );
    await assert.rejects(
      readEtcdAccess(resolveConfig({}, { ...base(), etcdKey: foreign!.clientKey })),
      refused('IPF_E_CONFIG', /is not the private key of the certificate/),
    );
    await assert.rejects(
      readEtcdAccess(resolveConfig({}, { ...base(), etcdCa: cluster!.access.key })),
      refused('IPF_E_CONFIG', /does not hold a PEM certificate/),
    );
    await assert.rejects(
      readEtcdAccess(resolveConfig({}, { ...base(), etcdCa: join(dir, 'missing.pem') })),
      refused('IPF_E_CONFIG', /missing\.pem cannot be read \(ENOENT\)/),
    );
    const access = await readEtcdAccess(resolveConfig({}, base()));
    assert.equal(access.etcd?.password, password, 'the line ending is not part of the password');
  });

  void describe('an agent in this process', () => {
    let agent: RunningAgent | undefined;
    const dataplane = new FakeDataplane();

    before(async () => {
      const tokenFile = join(tmp!.dir, 'api-token');
      await writeFile(tokenFile, `${TOKEN_RW}\n`, { mode: 0o600 });
      await chmod(tokenFile, 0o600);
    });
    after(async () => {
      await agent?.stop();
    });

    void it('with a wrong password fails to start with IPF_E_STORE_ACCESS, having written nothing', async () => {
      const wrong = join(tmp!.dir, 'wrong-password');
      const secret = `not-${password}`;
      await writeFile(wrong, `${secret}\n`, { mode: 0o600 });
      await assert.rejects(
        startAgent(resolveConfig({}, { ...base(), node: 'never', etcdPasswordFile: wrong }), {
          dataplane: new FakeDataplane(),
        }),
        refused('IPF_E_STORE_ACCESS', /wrong user name or password/, secret),
      );
      const store = await openStore(cluster!.storeSpec, { etcd: good });
      opened.add(store);
      assert.deepEqual(
        (await store.list('/ipferry/v1/')).kvs.filter((kv) => kv.key.includes('never')),
        [],
      );
    });

    void it('registers its node and realises a FIP through etcd over TLS', async () => {
      agent = await startAgent(resolveConfig({}, base()), { dataplane });
      const c = agent.control;
      assert.equal((await c.getNode('tls1')).alive, true);
      await c.createPool({ name: 'tls', gateway: 'tls1', entries: ['198.51.100.0/29'] });
      await c.allocate({ address: '198.51.100.3' });
      const fip = await c.associate('198.51.100.3', { target: '10.0.0.30' });
      await waitFor(
        'ACTIVE',
        async () => (await c.getFip('198.51.100.3')).status.revision === fip.revision,
        15_000,
      );
      assert.equal((await c.getFip('198.51.100.3')).status.state, 'ACTIVE');
      assert.match(dataplane.dump(), /^dnat 198\.51\.100\.3 -> 10\.0\.0\.30$/m);
    });
  });

  void describe('`ipferry agent` as its own process', () => {
    const procs: ChildProcess[] = [];
    after(async () => {
      for (const proc of procs) {
        if (proc.exitCode === null && proc.signalCode === null) {
          proc.kill('SIGKILL');
          await new Promise((resolve) => proc.once('exit', resolve));
        }
      }
    });

    /** Runs the CLI from source (no build needed) and collects its output. */
    function agentProcess(flags: { port: number; node: string; etcd: readonly string[] }): {
      proc: ChildProcess;
      output: () => string;
      exited: Promise<number | null>;
    } {
      const argv = [
        '--import',
        'tsx',
        join(ROOT, 'src', 'cli', 'bin.ts'),
        'agent',
        '--node',
        flags.node,
        '--store',
        cluster!.storeSpec,
        '--listen',
        `127.0.0.1:${flags.port}`,
        '--token-file',
        join(tmp!.dir, 'api-token'),
        '--state-dir',
        join(tmp!.dir, `state-${flags.node}`),
        '--dataplane',
        'fake',
        '--log-level',
        'info',
        ...flags.etcd,
      ];
      const proc = spawn(process.execPath, argv, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      procs.push(proc);
      let text = '';
      proc.stdout?.on('data', (chunk: Buffer) => (text += chunk.toString()));
      proc.stderr?.on('data', (chunk: Buffer) => (text += chunk.toString()));
      const exited = new Promise<number | null>((resolve) => proc.once('exit', resolve));
      return { proc, output: () => text, exited };
    }

    void it('with a wrong password exits 1 and prints the code and hint, not the password', async () => {
      const wrong = join(tmp!.dir, 'wrong-password-2');
      const secret = `also-not-${password}`;
      await writeFile(wrong, `${secret}\n`, { mode: 0o600 });
      const { ca, cert, key, user } = cluster!.access;
      const run = agentProcess({
        node: 'proc0',
        port: await freePort(),
        etcd: [
          ...['--etcd-ca', ca!, '--etcd-cert', cert!, '--etcd-key', key!, '--etcd-user', user!],
          ...['--etcd-password-file', wrong],
        ],
      });
      const code = await Promise.race([run.exited, sleep(30_000).then(() => 'timeout')]);
      const text = run.output();
      assert.equal(code, 1, text);
      assert.match(text, /error IPF_E_STORE_ACCESS: etcd at 127\.0\.0\.1:\d+ cannot be used/);
      assert.match(text, /wrong user name or password/);
      assert.match(text, /hint: Check the etcd options/);
      assert.ok(!text.includes(secret) && !text.includes(password), text);
    });

    void it('serves its API on etcd over TLS and stops on SIGTERM, the password in no line it wrote', async () => {
      const port = await freePort();
      const run = agentProcess({ node: 'proc1', port, etcd: cluster!.agentFlags });
      await waitFor(
        'the agent healthy',
        async () => {
          if (run.proc.exitCode !== null) throw new Error(`the agent exited:\n${run.output()}`);
          const res = await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined);
          return res?.ok === true;
        },
        30_000,
      );
      run.proc.kill('SIGTERM');
      assert.equal(await run.exited, 0, run.output());
      assert.match(run.output(), /listening on http:\/\/127\.0\.0\.1/);
      assert.ok(!run.output().includes(password), run.output());
    });
  });
});
