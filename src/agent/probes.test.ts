import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { HealthSpec } from '../core/index.js';
import { HealthWatcher, probe, type HealthEvent, type ProbeTarget } from './probes.js';

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as net.AddressInfo).port;
}

function close(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** A port that nothing listens on: bound, then released. */
async function freePort(): Promise<number> {
  const s = net.createServer();
  const port = await listen(s);
  await close(s);
  return port;
}

function spec(s: Partial<HealthSpec>): HealthSpec {
  return { intervalMs: 50, timeoutMs: 300, failureThreshold: 2, ...s };
}

function target(port: number, cwd = tmpdir()): ProbeTarget {
  return { port, env: { ...process.env, PROBE_MARK: 'marked' }, cwd };
}

void test('http probe: 2xx/3xx healthy, 5xx not, refused and hung servers not', async (t) => {
  let status = 200;
  let hang = false;
  const server = http.createServer((req, res) => {
    if (hang) return; // never answers
    res.statusCode = req.url === '/health' ? status : 404;
    res.end('x');
  });
  const port = await listen(server);
  t.after(() => {
    server.closeAllConnections();
    return close(server);
  });

  assert.deepEqual(await probe(spec({ http: '/health' }), target(port)), { ok: true });
  status = 302;
  assert.deepEqual(await probe(spec({ http: 'health' }), target(port)), { ok: true });
  status = 500;
  const bad = await probe(spec({ http: '/health' }), target(port));
  assert.equal(bad.ok, false);
  assert.match(!bad.ok ? bad.reason : '', /HTTP 500/);

  hang = true;
  const t0 = Date.now();
  const hung = await probe(spec({ http: '/health', timeoutMs: 200 }), target(port));
  assert.equal(hung.ok, false);
  assert.match(!hung.ok ? hung.reason : '', /timed out/);
  assert.ok(Date.now() - t0 < 1000);

  const refused = await probe(spec({ http: '/health' }), target(await freePort()));
  assert.equal(refused.ok, false);
  assert.match(!refused.ok ? refused.reason : '', /connection refused/);
});

void test('tcp probe: a listening port is healthy, a closed one is not', async (t) => {
  const server = net.createServer((s) => s.end());
  const port = await listen(server);
  t.after(() => close(server));
  assert.deepEqual(await probe(spec({ tcp: true }), target(port)), { ok: true });
  const r = await probe(spec({ tcp: true }), target(await freePort()));
  assert.equal(r.ok, false);
  assert.match(!r.ok ? r.reason : '', /connection refused/);
});

void test('exec probe: exit 0 is healthy, runs with the role env, and is killed on timeout', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-probe-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const inRoleEnv = `test "$PROBE_MARK" = marked && test "$(pwd -P)" = "$(cd '${dir}' && pwd -P)"`;
  assert.deepEqual(await probe(spec({ exec: inRoleEnv }), target(1, dir)), { ok: true });
  const r = await probe(spec({ exec: 'echo "not ready"; exit 1' }), target(1, dir));
  assert.equal(r.ok, false);
  assert.match(!r.ok ? r.reason : '', /exited with code 1: not ready/);
  const t0 = Date.now();
  const slow = await probe(spec({ exec: 'sleep 30', timeoutMs: 200 }), target(1, dir));
  assert.equal(slow.ok, false);
  assert.match(!slow.ok ? slow.reason : '', /timed out/);
  assert.ok(Date.now() - t0 < 2000);
});

void test('watcher: pending until the first pass, then failed after failureThreshold misses', async (t) => {
  let healthy = false;
  const server = http.createServer((_req, res) => {
    res.statusCode = healthy ? 200 : 503;
    res.end();
  });
  const port = await listen(server);
  const events: HealthEvent[] = [];
  const w = new HealthWatcher({
    spec: spec({ http: '/', intervalMs: 40, failureThreshold: 3 }),
    target: target(port),
    startupIntervalMs: 20,
    onEvent: (e) => events.push(e),
  });
  t.after(() => {
    w.stop();
    return close(server);
  });
  w.start();
  await sleep(150);
  assert.ok(events.length >= 3, 'keeps probing before the first success');
  assert.deepEqual(new Set(events.map((e) => e.type)), new Set(['pending']), 'never "failed" before the first success');
  assert.equal(w.healthy, false);

  healthy = true;
  await waitFor(() => events.some((e) => e.type === 'passed'));
  assert.equal(w.healthy, true);

  healthy = false;
  await waitFor(() => events.some((e) => e.type === 'failed'));
  const failed = events.find((e) => e.type === 'failed');
  assert.ok(failed?.type === 'failed');
  assert.equal(failed.failures, 3);
  assert.match(failed.reason, /HTTP 503/);
  assert.equal(events.filter((e) => e.type === 'failed').length, 1);
});

async function waitFor(cond: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await sleep(10);
  }
}

void test("http and tcp probes target the instance's own address: a role listening elsewhere is not healthy", async (t) => {
  // 127.0.0.2 is loopback too on Linux: one server on each, each probe sees only its own.
  const server = http.createServer((_req, res) => res.end('x'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.2', r));
  t.after(() => server.close());
  const port = (server.address() as net.AddressInfo).port;
  const at = (host: string): ProbeTarget => ({ host, port, env: process.env, cwd: tmpdir() });
  assert.deepEqual(await probe(spec({ http: '/' }), at('127.0.0.2')), { ok: true });
  assert.deepEqual(await probe(spec({ tcp: true }), at('127.0.0.2')), { ok: true });
  assert.equal((await probe(spec({ http: '/' }), at('127.0.0.1'))).ok, false, 'nothing listens on 127.0.0.1:port');
  assert.equal((await probe(spec({ tcp: true }), at('127.0.0.1'))).ok, false);
});
