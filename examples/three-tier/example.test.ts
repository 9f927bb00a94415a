// Runs the three example programs directly (no drover) to pin down the contract drover relies
// on: env in, /health, hits reaching the db through the front, and the front picking up a new
// members.txt without a restart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const script = (name: string) => fileURLToPath(new URL(`./${name}`, import.meta.url));

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

interface Proc {
  readonly child: ChildProcess;
  readonly url: string;
  output: string;
}

function spawnScript(name: string, env: Record<string, string>, port: number): Proc {
  const child = spawn(process.execPath, [script(name)], {
    env: { ...process.env, ...env, PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const proc: Proc = { child, url: `http://127.0.0.1:${port}`, output: '' };
  // Kept so a failed readiness wait can say what the program printed.
  child.stdout?.on('data', (c: Buffer) => (proc.output += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (proc.output += c.toString()));
  return proc;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

async function waitHealthy(p: Proc): Promise<void> {
  try {
    await waitFor(`${p.url}/health`, async () => {
      if (p.child.exitCode !== null) throw new Error('exited');
      const res = await fetch(`${p.url}/health`);
      return res.status === 200 && (await res.text()) === 'ok' ? true : undefined;
    });
  } catch (err) {
    throw new Error(`${String(err)}; exit ${p.child.exitCode}; output:\n${p.output}`);
  }
}

async function stop(p: Proc): Promise<number | null> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return p.child.exitCode;
  const exited = once(p.child, 'exit');
  p.child.kill('SIGTERM');
  const timer = setTimeout(() => p.child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(timer);
  return p.child.exitCode;
}

interface Hello {
  api: string;
  hits: number;
  db: string;
}

async function hello(front: Proc): Promise<{ body: Hello; servedBy: string | null }> {
  const res = await fetch(`${front.url}/hello`);
  assert.equal(res.status, 200);
  return { body: (await res.json()) as Hello, servedBy: res.headers.get('x-served-by') };
}

void test('api refuses to start without DB_URL', async () => {
  const p = spawnScript('api.mjs', { DB_URL: '' }, await freePort());
  const [code] = (await once(p.child, 'exit')) as [number | null];
  assert.equal(code, 1);
  assert.match(p.output, /DB_URL/);
});

void test('three tiers: hits reach the db through the front, members follow members.txt', async (t) => {
  const procs: Proc[] = [];
  const workdir = await mkdtemp(join(tmpdir(), 'drover-three-tier-'));
  t.after(async () => {
    await Promise.all(procs.map(stop));
    await rm(workdir, { recursive: true, force: true });
  });

  const db = spawnScript('db.mjs', { DROVER_INSTANCE: 'db-1' }, await freePort());
  procs.push(db);
  await waitHealthy(db);

  const api1 = spawnScript('api.mjs', { DROVER_INSTANCE: 'api-1', DB_URL: db.url }, await freePort());
  const api2 = spawnScript('api.mjs', { DROVER_INSTANCE: 'api-2', DB_URL: db.url }, await freePort());
  procs.push(api1, api2);

  const membersFile = join(workdir, 'members.txt');
  await writeFile(membersFile, api1.url);
  const front = spawnScript('front.mjs', { DROVER_INSTANCE: 'front-1', DROVER_WORKDIR: workdir }, await freePort());
  procs.push(front);
  await Promise.all([waitHealthy(api1), waitHealthy(api2), waitHealthy(front)]);

  await t.test('GET /hello goes front → api → db', async () => {
    const a = await hello(front);
    const b = await hello(front);
    assert.deepEqual(a.body, { api: 'api-1', hits: 1, db: db.url });
    assert.equal(b.body.hits, 2);
    assert.equal(a.servedBy, api1.url);
    const stored = await fetch(`${db.url}/kv/hits`);
    assert.equal(await stored.text(), '2');
  });

  await t.test('a rewritten members.txt is picked up without a restart', async () => {
    const pid = front.child.pid;
    await writeFile(membersFile, `${api1.url},${api2.url}`);
    const members = await waitFor('front to see two members', async () => {
      const list = (await (await fetch(`${front.url}/members`)).json()) as string[];
      return list.length === 2 ? list : undefined;
    });
    assert.deepEqual([...members].sort(), [api1.url, api2.url].sort());

    const served: (string | null)[] = [];
    const hits: number[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await hello(front);
      served.push(r.servedBy);
      hits.push(r.body.hits);
      assert.equal(r.body.api, r.servedBy === api1.url ? 'api-1' : 'api-2');
    }
    // Strict alternation: round-robin, not random spread.
    assert.notEqual(served[0], served[1]);
    assert.equal(served[0], served[2]);
    assert.equal(served[1], served[3]);
    assert.deepEqual(new Set(served), new Set([api1.url, api2.url]));
    assert.deepEqual(hits, [3, 4, 5, 6]);
    assert.equal(front.child.exitCode, null);
    assert.equal(front.child.pid, pid);
  });

  await t.test('an unreachable member is skipped for GET', async () => {
    assert.equal(await stop(api2), 0);
    for (let i = 0; i < 3; i++) {
      const r = await hello(front);
      assert.equal(r.servedBy, api1.url);
    }
  });

  await t.test('no members → 503', async () => {
    await writeFile(membersFile, '');
    await waitFor('front to drop its members', async () => {
      const list = (await (await fetch(`${front.url}/members`)).json()) as string[];
      return list.length === 0 ? true : undefined;
    });
    const res = await fetch(`${front.url}/hello`);
    assert.equal(res.status, 503);
    assert.deepEqual(await res.json(), { error: 'no api members' });
  });

  await t.test('SIGTERM exits 0', async () => {
    assert.equal(await stop(front), 0);
  });
});
