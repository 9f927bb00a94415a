/**
 * A fronting role with a fixed `listen:` port rolls to a new spec under load without one failed
 * or refused request: the host's port keeper holds the port, the new member joins it once it
 * serves, the old one leaves rotation when it drains. The figures are printed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startServer } from '../src/controller/index.js';
import { apiClient, killAll, processesWithEnv, sleep, until } from './helpers.js';

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const p = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return p;
}

const FRONT = `
import http from 'node:http';
const srv = http.createServer((req, res) => {
  res.setHeader('connection', 'close');
  setTimeout(() => res.end(process.env.VERSION + ' ' + process.env.DROVER_INSTANCE), 5);
});
srv.listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGTERM', () => srv.close(() => process.exit(0)));
`;

type Outcome = { kind: 'ok'; body: string; ms: number } | { kind: 'refused' | 'failed'; error: string; ms: number };

/** One request on a new connection (no keep-alive): what a refused connection would show. */
function get(port: number): Promise<Outcome> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/', agent: false, timeout: 15_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve(res.statusCode === 200 ? { kind: 'ok', body, ms: performance.now() - t0 } : { kind: 'failed', error: `status ${res.statusCode}`, ms: performance.now() - t0 }));
      res.on('error', (e) => resolve({ kind: 'failed', error: e.message, ms: performance.now() - t0 }));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ kind: e.code === 'ECONNREFUSED' ? 'refused' : 'failed', error: `${e.code ?? ''} ${e.message}`, ms: performance.now() - t0 }));
    req.end();
  });
}

test('rolling a fronting role with listen: under load: no request refused or failed', { timeout: 120_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-listen-'));
  t.after(() => {
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
  });
  writeFileSync(join(dir, 'front.mjs'), FRONT);
  const listen = await freePort();
  const yaml = (version: string) =>
    [
      'app: shop',
      'roles:',
      '  front:',
      `    start: exec "${process.execPath}" "\${appDir}/front.mjs"`,
      `    env: { VERSION: ${version} }`,
      `    listen: ${listen}`,
      '    health: { http: /, interval: 200ms }',
      '    drainTimeout: 10s',
      '',
    ].join('\n');
  const server = await startServer({ dataDir: join(dir, '.drover'), port: 0, token: 'listen-test-token-'.padEnd(40, 'x'), heartbeatMs: 500, logger: pino({ level: 'warn' }) });
  t.after(() => server.close());
  const api = apiClient(server);
  type Inst = { id: string; state: string; goal: string; address: string };
  const instances = async () => (await api<{ instances: Inst[] }>('GET', '/v1/instances?app=shop&role=front')).instances;

  await api('PUT', '/v1/apps/shop', { yaml: yaml('v1'), appDir: dir });
  const first = await until('front serving', async () => (await instances()).find((i) => i.state === 'serving'), 60_000);
  const hello = await get(listen);
  assert.equal(hello.kind, 'ok');
  assert.match(hello.kind === 'ok' ? hello.body : '', new RegExp(`^v1 ${first.id}$`));
  assert.notEqual(Number(first.address.split(':')[1]), listen, 'the role binds its own auto port; the keeper holds the listen port');

  // Bounded load: 4 clients, each a new connection per request, for the whole roll.
  const results: Outcome[] = [];
  let stop = false;
  const clients = Array.from({ length: 4 }, async () => {
    while (!stop) results.push(await get(listen));
  });
  await sleep(500);
  const t0 = Date.now();
  await api('PUT', '/v1/apps/shop', { yaml: yaml('v2'), appDir: dir });
  const next = await until(
    'the roll is done',
    async () => {
      const list = await instances();
      return list.length === 1 && list[0]!.id !== first.id && list[0]!.state === 'serving' ? list[0] : undefined;
    },
    60_000,
  );
  const rollMs = Date.now() - t0;
  await sleep(500);
  stop = true;
  await Promise.all(clients);

  const ok = results.filter((r) => r.kind === 'ok');
  const refused = results.filter((r) => r.kind === 'refused');
  const failed = results.filter((r) => r.kind === 'failed');
  const versions = new Set(ok.map((r) => (r.kind === 'ok' ? r.body.split(' ')[0] : '')));
  const ms = results.map((r) => r.ms).sort((a, b) => a - b);
  const pct = (p: number) => ms[Math.min(ms.length - 1, Math.floor((p / 100) * ms.length))]!.toFixed(1);
  console.log(
    `listen roll: ${results.length} requests during a ${(rollMs / 1000).toFixed(1)} s roll (${first.id} → ${next.id}): ` +
      `${ok.length} ok, ${refused.length} refused, ${failed.length} failed; latency p50 ${pct(50)} ms, p99 ${pct(99)} ms, max ${pct(100)} ms`,
  );
  assert.deepEqual([...versions].sort(), ['v1', 'v2'], 'both versions answered during the roll');
  assert.equal(refused.length, 0, `refused: ${refused.slice(0, 3).map((r) => (r.kind !== 'ok' ? r.error : '')).join('; ')}`);
  assert.equal(failed.length, 0, `failed: ${failed.slice(0, 3).map((r) => (r.kind !== 'ok' ? r.error : '')).join('; ')}`);
  const after = await get(listen);
  assert.match(after.kind === 'ok' ? after.body : '', new RegExp(`^v2 ${next.id}$`));

  // kill -9 of the only member's agent: it leaves rotation at once; connections that arrive until
  // the replacement serves are held by the keeper (up to 10 s), not refused.
  const pid = (await api<{ instances: (Inst & { agent: { pid: number } })[] }>('GET', '/v1/instances?app=shop&role=front')).instances[0]!.agent.pid;
  const during: Outcome[] = [];
  stop = false;
  const again = Array.from({ length: 4 }, async () => {
    while (!stop) during.push(await get(listen));
  });
  await sleep(300);
  const k0 = Date.now();
  process.kill(pid, 'SIGKILL');
  const third = await until('a replacement serving', async () => (await instances()).find((i) => i.id !== next.id && i.state === 'serving'), 60_000);
  const replacedMs = Date.now() - k0;
  await sleep(500);
  stop = true;
  await Promise.all(again);
  const count = (k: Outcome['kind']) => during.filter((r) => r.kind === k).length;
  const slowest = Math.max(...during.map((r) => r.ms));
  console.log(
    `listen kill -9: ${during.length} requests, the replacement ${third.id} served ${(replacedMs / 1000).toFixed(1)} s after the kill: ` +
      `${count('ok')} ok, ${count('refused')} refused, ${count('failed')} failed; slowest ${slowest.toFixed(0)} ms (held by the keeper)`,
  );
  assert.equal(count('refused'), 0);
  assert.equal(count('failed'), 0, `failed: ${during.filter((r) => r.kind === 'failed').slice(0, 3).map((r) => (r.kind !== 'ok' ? r.error : '')).join('; ')}`);

  // Down: the keeper lets the port go once no member is left.
  await api('DELETE', '/v1/apps/shop');
  await until('shop is gone', async () => (await api<{ apps: unknown[] }>('GET', '/v1/apps')).apps.length === 0, 30_000);
  await until(
    'the listen port is free again',
    () => new Promise<boolean>((r) => {
      const s = createServer().once('error', () => r(false)).listen(listen, '127.0.0.1', () => s.close(() => r(true)));
    }),
    15_000,
  );
});
