/**
 * The app outlives its controller: stop the controller, the app keeps serving; start it again on
 * the same data folder and port, agents reconnect and it converges without duplicates.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startServer, type RunningController } from '../src/controller/index.js';
import { freePort } from '../src/adapters/providers/index.js';
import { apiClient, killAll, processesWithEnv, ROOT, until } from './helpers.js';

test('a controller restart keeps the app serving and converges with the same instances', { timeout: 120_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-restart-'));
  let server: RunningController | undefined;
  t.after(async () => {
    await server?.close();
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
  });
  const port = await freePort();
  const logger = pino({ level: 'silent' });
  const start = () => startServer({ dataDir: join(dir, '.drover'), port, logger, heartbeatMs: 500 });
  server = await start();
  const api = <T>(method: string, path: string, body?: unknown) => apiClient(server!)<T>(method, path, body);
  const yaml = readFileSync(join(ROOT, 'examples/three-tier/drover.yaml'), 'utf8');
  await api('PUT', '/v1/apps/three-tier', { yaml, appDir: join(ROOT, 'examples/three-tier') });
  type App = { converged: boolean; roles: { name: string; instances: { id: string; exports: Record<string, string> }[] }[] };
  const app = await until('converged', async () => {
    const a = await api<App>('GET', '/v1/apps/three-tier');
    return a.converged ? a : undefined;
  }, 60_000);
  const ids = app.roles.flatMap((r) => r.instances.map((i) => i.id)).sort();
  const front = app.roles.find((r) => r.name === 'front')!.instances[0]!.exports.url!;

  await server.close();
  server = undefined;
  // Controller gone: the app still serves.
  for (let k = 0; k < 3; k++) assert.equal((await fetch(`${front}/hello`)).status, 200);

  server = await start();
  const again = await until('converged after restart', async () => {
    const a = await api<App>('GET', '/v1/apps/three-tier');
    const conn = await api<{ instances: { connected: boolean }[] }>('GET', '/v1/instances');
    return a.converged && conn.instances.every((i) => i.connected) ? a : undefined;
  }, 60_000);
  assert.deepEqual(again.roles.flatMap((r) => r.instances.map((i) => i.id)).sort(), ids, 'same instances, none duplicated');
  assert.equal((await fetch(`${front}/hello`)).status, 200);

  await api('DELETE', '/v1/apps/three-tier');
  await until('app deleted', async () => ((await api<{ apps: unknown[] }>('GET', '/v1/apps')).apps.length === 0 ? true : undefined), 60_000);
  await until('no process left', async () => (processesWithEnv(dir).length === 0 ? true : undefined), 10_000);
});
