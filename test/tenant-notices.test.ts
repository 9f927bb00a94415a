/**
 * Tenant notifications survive a controller restart: a webhook whose first attempt failed is
 * delivered by the restarted controller, resuming the schedule, with the same webhook-id.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { freePort } from '../src/adapters/providers/index.js';
import { startServer, type RunningController } from '../src/controller/index.js';
import { apiClient, killAll, processesWithEnv, until } from './helpers.js';

type Shown = { id: string; state: string; notifications: { status: string; attempt: number; messageId: string }[] };

test('an undelivered tenant webhook is delivered after a controller restart, same id, schedule resumed', { timeout: 120_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-notices-'));
  const holder: { server?: RunningController } = {};
  const seen: { id: string; status: number }[] = [];
  const receiver = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const status = seen.length === 0 ? 500 : 200;
      seen.push({ id: String(req.headers['webhook-id']), status });
      res.statusCode = status;
      res.end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  t.after(async () => {
    receiver.close();
    await holder.server?.close();
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
  });
  const port = await freePort();
  const start = async () => (holder.server = await startServer({ dataDir: join(dir, '.drover'), port, logger: pino({ level: 'silent' }), heartbeatMs: 500 }));
  let server = await start();
  const api = <T>(m: string, p: string, b?: unknown) => apiClient(holder.server!)<T>(m, p, b);
  const yaml = `
app: hooks
roles:
  labs:
    min: 1
    max: 2
    start: exec node -e "require('http').createServer((q,s)=>s.end('ok')).listen(+process.env.PORT,'127.0.0.1')"
    health: { http: /, interval: 200ms }
    tenants: { capacity: 5, add: "true", remove: "true" }
`;
  await api('PUT', '/v1/apps/hooks', { yaml, appDir: dir });
  await until('converged', async () => (await api<{ converged: boolean }>('GET', '/v1/apps/hooks')).converged, 60_000);
  const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
  const created = await api<{ id: string }>('POST', '/v1/apps/hooks/roles/labs/tenants', { name: 'lab-1', callbackUrl: url });
  await until('the first attempt failed and is recorded', async () => (await api<Shown>('GET', `/v1/tenants/${created.id}`)).notifications.some((n) => n.status === 'failed'), 20_000);
  // The next attempt is due 5 s later: restart before it.
  await server.close();
  server = await start();
  await until('delivered by the new controller', async () => (await api<Shown>('GET', `/v1/tenants/${created.id}`)).notifications.some((n) => n.status === 'delivered'), 30_000);
  const shown = await api<Shown>('GET', `/v1/tenants/${created.id}`);
  const delivered = shown.notifications.find((n) => n.status === 'delivered')!;
  assert.equal(delivered.attempt, 2, 'the schedule resumed after the first attempt');
  assert.equal(seen.length, 2);
  assert.equal(seen[0]!.id, seen[1]!.id, 'the same webhook-id: receivers de-duplicate on it');
  assert.equal(server.url, `http://127.0.0.1:${port}`);
});
