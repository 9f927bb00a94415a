/**
 * `drover retry`: a role whose replacements kept failing is degraded; once the operator fixed the
 * cause, retry forgets its failures and it is replaced at once (not when the window has passed),
 * with an event naming who asked. A controller restarted after the retry keeps it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { freePort } from '../src/adapters/providers/index.js';
import { startServer } from '../src/controller/index.js';
import { apiClient, drover, killAll, processesWithEnv, until } from './helpers.js';

interface Role { name: string; degraded: boolean; serving: number; desired: number }
interface Ev { kind: string; role: string | null; message: string; data: Record<string, unknown> | null }

test('a degraded role is tried again at once by drover retry, after its cause is fixed', { timeout: 120_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-retry-'));
  const dataDir = join(dir, '.drover');
  t.after(() => {
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
  });
  // deploy fails until the file `fixed` exists in the app folder.
  const yaml = 'app: shop\nroles:\n  web:\n    count: 1\n    deploy: test -f "${appDir}/fixed"\n    start: exec sleep 600\n';
  // A long window, a short backoff: the role is degraded within seconds and stays so on its own.
  const planner = { failureBackoffMs: 200, failureBackoffMaxMs: 400, failureWindowMs: 600_000 };
  const port = await freePort();
  const start = () => startServer({ dataDir, port, token: 'retry-test-token-'.padEnd(40, 'x'), planner, heartbeatMs: 500, logger: pino({ level: 'warn' }) });
  let server = await start();
  t.after(() => server.close());
  let api = apiClient(server);
  await api('PUT', '/v1/apps/shop', { yaml, appDir: dir });
  await until('web is degraded', async () => (await api<Role>('GET', '/v1/apps/shop/roles/web')).degraded, 60_000);

  // Retry while the cause is still there: nothing breaks, it fails again and is degraded again.
  writeFileSync(join(dir, 'fixed'), '');
  const env = { DROVER_URL: server.url, DROVER_TOKEN: server.token };
  const r = await drover(['retry', 'web'], { cwd: dir, env });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^shop\/web: was degraded; [3-9] recent failure\(s\) forgotten; replacements start now/);
  const role = await until('web serves again', async () => {
    const x = await api<Role>('GET', '/v1/apps/shop/roles/web');
    return x.serving === 1 ? x : undefined;
  }, 30_000);
  assert.equal(role.degraded, false);
  const { events } = await api<{ events: Ev[] }>('GET', '/v1/events?app=shop&limit=1000');
  const ev = events.find((e) => e.kind === 'role.retry');
  assert.ok(ev, 'a role.retry event is recorded');
  assert.equal(ev.role, 'web');
  assert.match(ev.message, /^web: retry asked by the API token from 127\.0\.0\.1 \(it was degraded\); \d+ recent failure\(s\) forgotten/);
  assert.equal(ev.data?.by, 'the API token from 127.0.0.1');

  // A controller restarted within the window still honours the retry: web is not degraded again.
  await server.close();
  server = await start();
  api = apiClient(server);
  const after = await api<Role>('GET', '/v1/apps/shop/roles/web');
  assert.equal(after.degraded, false, 'the restarted controller remembers the retry');

  // Unknown roles are refused with the role named.
  const bad = await drover(['retry', 'nope'], { cwd: dir, env: { DROVER_URL: server.url, DROVER_TOKEN: server.token } });
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /not_found: app "shop" has no role "nope"/);
  await api('DELETE', '/v1/apps/shop');
  await until('shop is gone', async () => (await api<{ apps: unknown[] }>('GET', '/v1/apps')).apps.length === 0, 30_000);
});
