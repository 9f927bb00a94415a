/**
 * The controller listens before its store is open (server.ts): a client's first requests come
 * while the embedded store starts, wait for the start, and are then handled; a start that fails
 * answers them 503 and the start's own error is what `startServer` says.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { acquireLock, ControllerStartError, preparePrivateDataDir, startServer } from '../src/controller/index.js';
import { startEmbeddedDb, type SqlClient } from '../src/adapters/store/index.js';

const APP = 'app: early\nroles:\n  db:\n    min: 0\n    max: 1\n    count: 0\n    start: sleep 100\n';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A data folder, locked, whose store opens only when `release` is called (or fails then). */
async function slowStore(t: { after(fn: () => unknown): void }) {
  const parent = mkdtempSync(join(tmpdir(), 'drover-start-'));
  t.after(() => rmSync(parent, { recursive: true, force: true }));
  const dataDir = preparePrivateDataDir(join(parent, 'data'));
  mkdirSync(dataDir, { recursive: true });
  const lock = await acquireLock(dataDir);
  let release!: (how: 'open' | 'fail') => void;
  const db = new Promise<SqlClient>((resolve, reject) => {
    release = (how) => (how === 'open' ? resolve(startEmbeddedDb(join(dataDir, 'db'))) : reject(new Error('the disk is gone')));
  });
  return { dataDir, lock, db, release };
}

test('the API listens while the store opens: health says starting, an app sent then is applied once the store is open', { timeout: 60_000 }, async (t) => {
  const s = await slowStore(t);
  const seen: { health?: unknown; put?: Promise<{ status: number; body: { changed?: boolean }; at: number }> } = {};
  let releasedAt = Infinity;
  const server = await startServer({
    dataDir: s.dataDir, port: 0, logger: pino({ level: 'silent' }), early: { lock: s.lock, db: s.db },
    onListening: (url, token) => {
      const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
      seen.put = fetch(`${url}/v1/apps/early`, { method: 'PUT', headers, body: JSON.stringify({ yaml: APP }) }).then(async (r) => ({ status: r.status, body: (await r.json()) as { changed?: boolean }, at: performance.now() }));
      void (async () => {
        seen.health = await (await fetch(`${url}/v1/health`)).json();
        await sleep(300); // the PUT is in, waiting
        releasedAt = performance.now();
        s.release('open');
      })();
    },
  });
  t.after(() => server.close());
  assert.deepEqual((seen.health as { status: string }).status, 'starting');
  const put = await seen.put!;
  assert.equal(put.status, 201, JSON.stringify(put.body));
  assert.equal(put.body.changed, true);
  assert.ok(put.at > releasedAt, 'answered after the store opened');
  const h = (await (await fetch(`${server.url}/v1/health`)).json()) as { status: string };
  assert.equal(h.status, 'ok');
  const apps = (await (await fetch(`${server.url}/v1/apps`, { headers: { authorization: `Bearer ${server.token}` } })).json()) as { apps: { name: string }[] };
  assert.deepEqual(apps.apps.map((a) => a.name), ['early']);
});

test('a store that fails to open: the waiting request gets 503 starting, startServer the store error, and the port is closed', { timeout: 60_000 }, async (t) => {
  const s = await slowStore(t);
  let url = '';
  let waiting: Promise<{ status: number; code?: string }> | undefined;
  const started = startServer({
    dataDir: s.dataDir, port: 0, logger: pino({ level: 'silent' }), early: { lock: s.lock, db: s.db },
    onListening: (u, token) => {
      url = u;
      waiting = fetch(`${u}/v1/apps`, { headers: { authorization: `Bearer ${token}` } }).then(async (r) => ({ status: r.status, code: ((await r.json()) as { error?: { code: string } }).error?.code }));
      setTimeout(() => s.release('fail'), 200);
    },
  });
  await assert.rejects(started, (err: unknown) => {
    assert.ok(err instanceof ControllerStartError, String(err));
    assert.match(err.message, /the disk is gone/);
    return true;
  });
  assert.deepEqual(await waiting, { status: 503, code: 'starting' });
  await assert.rejects(fetch(`${url}/v1/health`), 'nothing listens any more');
});
