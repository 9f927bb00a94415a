/**
 * App bundles end to end on one machine: the controller's route (src/controller/bundle.ts) on a
 * real port and the agent's fetcher (src/agent/bundle.ts), with a store that knows instances of
 * two apps. The fleet suite (test/bundles-fleet.test.ts) does the same across namespaced hosts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify from 'fastify';
import pino from 'pino';
import { BundleStore, registerBundleRoutes } from '../src/controller/bundle.js';
import { ApiError } from '../src/controller/errors.js';
import { BundleFetcher } from '../src/agent/bundle.js';
import { bundleRequestHeaders } from '../src/core/index.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'drover-bundles-'));

/** A controller's bundle route on a real port, with instances of two apps. */
async function controllerWith(appDir: string, t: { after(fn: () => unknown): void }) {
  const data = tmp();
  const bundles = new BundleStore({ dir: join(data, 'bundles') });
  const instances = new Map([
    ['i-shop', { id: 'i-shop', app: 'shop', role: 'api', joinToken: 'k'.repeat(43), destroyedAt: null }],
    ['i-other', { id: 'i-other', app: 'other', role: 'api', joinToken: 'o'.repeat(43), destroyedAt: null }],
    ['i-gone', { id: 'i-gone', app: 'shop', role: 'api', joinToken: 'g'.repeat(43), destroyedAt: 5 }],
  ]);
  const events: { kind: string; message: string }[] = [];
  const app = Fastify();
  app.setErrorHandler((err, _req, reply) => (err instanceof ApiError ? reply.status(err.status).send(err.body()) : reply.status(500).send({ error: { code: 'internal', message: String(err) } })));
  registerBundleRoutes(app, {
    bundles, log: pino({ level: 'silent' }), errors: () => ({}),
    store: { getInstance: async (id: string) => instances.get(id) } as never,
    record: async (ev) => events.push({ kind: ev.kind, message: ev.message }),
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const addr = app.server.address();
  const url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  t.after(async () => {
    await app.close();
    rmSync(data, { recursive: true, force: true });
  });
  const ref = await bundles.forApp('shop', appDir, 1);
  return { url, bundles, ref, events };
}

test('an agent fetches its app\'s bundle, checks it and unpacks it; a second instance on the host takes it from the cache', async (t) => {
  const app = tmp();
  mkdirSync(join(app, 'lib'));
  writeFileSync(join(app, 'lib', 'hello.txt'), 'hello from the bundle\n');
  writeFileSync(join(app, 'run.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
  symlinkSync('lib/hello.txt', join(app, 'hello'));
  const host = tmp();
  t.after(() => [app, host].forEach((d) => rmSync(d, { recursive: true, force: true })));
  const c = await controllerWith(app, t);
  const cacheDir = join(host, '.bundles');
  const one = new BundleFetcher({ controllerUrl: c.url.replace('http:', 'ws:'), instanceId: 'i-shop', key: 'k'.repeat(43), cacheDir });
  const got = await one.prepare('shop', c.ref, join(host, 'i-shop', 'app'));
  assert.equal(got.cached, false);
  assert.equal(readFileSync(join(got.dir, 'lib', 'hello.txt'), 'utf8'), 'hello from the bundle\n');
  assert.equal(readlinkSync(join(got.dir, 'hello')), 'lib/hello.txt');
  assert.equal(statSync(join(got.dir, 'run.sh')).mode & 0o777, 0o755);
  assert.equal(statSync(join(got.dir, 'lib', 'hello.txt')).mode & 0o777, 0o644);
  assert.equal(statSync(cacheDir).mode & 0o777, 0o700);
  assert.equal(c.bundles.downloads('shop', c.ref.sha256), 1);
  // Another instance of the app on this host: from the cache, no download.
  const two = new BundleFetcher({ controllerUrl: c.url, instanceId: 'i-shop', key: 'k'.repeat(43), cacheDir });
  const again = await two.prepare('shop', c.ref, join(host, 'i-2', 'app'));
  assert.equal(again.cached, true);
  assert.equal(c.bundles.downloads('shop', c.ref.sha256), 1, 'the cache answered');
  // A cached file that was changed is not trusted: fetched again.
  writeFileSync(join(cacheDir, `${c.ref.sha256}.tgz`), Buffer.alloc(c.ref.size));
  assert.equal((await two.prepare('shop', c.ref, join(host, 'i-3', 'app'))).cached, false);
  assert.equal(c.bundles.downloads('shop', c.ref.sha256), 2);
});

test('the route: another app\'s agent gets 403 (recorded), a wrong key or a gone instance 401, a bundle that is not what was asked is refused', async (t) => {
  const app = tmp();
  writeFileSync(join(app, 'a.txt'), 'a');
  const host = tmp();
  t.after(() => [app, host].forEach((d) => rmSync(d, { recursive: true, force: true })));
  const c = await controllerWith(app, t);
  const fetcher = (instanceId: string, key: string) => new BundleFetcher({ controllerUrl: c.url, instanceId, key, cacheDir: join(host, `.bundles-${instanceId}-${key[0]}`) });
  await assert.rejects(fetcher('i-other', 'o'.repeat(43)).prepare('shop', c.ref, join(host, 'x')), /answered 403 .*i-other is not an instance of app shop/);
  assert.ok(c.events.some((e) => e.kind === 'security.agent' && /i-other \(app other\) asked for a bundle of app shop/.test(e.message)));
  await assert.rejects(fetcher('i-shop', 'w'.repeat(43)).prepare('shop', c.ref, join(host, 'y')), /answered 401/);
  await assert.rejects(fetcher('i-gone', 'g'.repeat(43)).prepare('shop', c.ref, join(host, 'z')), /answered 401/);
  await assert.rejects(fetcher('i-nobody', 'k'.repeat(43)).prepare('shop', c.ref, join(host, 'w')), /answered 401/);
  assert.equal(c.bundles.downloads('shop', c.ref.sha256), 0, 'none of them got it');
  // The assignment names a size smaller than what is served: the download stops.
  await assert.rejects(fetcher('i-shop', 'k'.repeat(43)).prepare('shop', { ...c.ref, size: c.ref.size - 1 }, join(host, 'v')), /bytes; the assignment said|longer than/);
  // A name the controller does not have: 404.
  await assert.rejects(fetcher('i-shop', 'k'.repeat(43)).prepare('shop', { ...c.ref, sha256: 'a'.repeat(64) }, join(host, 'u')), /answered 404/);
  // A replayed request (same nonce) is refused.
  const headers = bundleRequestHeaders({ key: 'k'.repeat(43), instanceId: 'i-shop', app: 'shop', sha256: c.ref.sha256, at: Date.now(), nonce: 'n'.repeat(32) });
  const u = `${c.url}/v1/bundles/shop/${c.ref.sha256}`;
  assert.equal((await fetch(u, { headers })).status, 200);
  assert.equal((await fetch(u, { headers })).status, 401);
  const stale = bundleRequestHeaders({ key: 'k'.repeat(43), instanceId: 'i-shop', app: 'shop', sha256: c.ref.sha256, at: Date.now() - 3_600_000, nonce: 'm'.repeat(32) });
  assert.equal((await fetch(u, { headers: stale })).status, 401, 'an hour-old request');
});
