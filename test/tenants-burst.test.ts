// drover-test: alone (times a burst of sign-ups)
/**
 * A thousand concurrent sign-ups against a running controller (real agents, real role
 * processes), capacity 20 and no instance at first: exactly ⌈1000 / 20⌉ = 50 instances are
 * made — never one per sign-up — every tenant is ready exactly once, and no instance holds more
 * than 20, checked on the instances themselves (each `add` appends the tenant's name to a file in
 * its instance's folder) as well as in the store.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { startServer, type RunningController } from '../src/controller/index.js';
import { apiClient, killAll, processesWithEnv, until } from './helpers.js';

type Tenant = { id: string; name: string; state: string; instance: string | null };
type Instance = { id: string; role: string | null; state: string };

const BURST = 1000;
const CAPACITY = 20;

test(`${BURST} concurrent sign-ups, no room: exactly ${BURST / CAPACITY} instances, each tenant ready once, none over ${CAPACITY}`, { timeout: 420_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-burst-'));
  const holder: { server?: RunningController } = {};
  t.after(async () => {
    await holder.server?.close();
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
  });
  const dataDir = join(dir, '.drover');
  const server = await startServer({ dataDir, port: 0, logger: pino({ level: 'silent' }), heartbeatMs: 1000 });
  holder.server = server;
  const api = apiClient(server);
  // The lightest role there is (no port, no health check): the burst measures Drover.
  await api('PUT', '/v1/apps/burst', {
    appDir: dir,
    yaml: `
app: burst
roles:
  seats:
    min: 0
    max: ${BURST / CAPACITY + 10}
    start: exec sleep 100000
    tenants:
      capacity: ${CAPACITY}
      add: echo "$TENANT_NAME" >> tenants.txt
      remove: grep -vx "$TENANT_NAME" tenants.txt > t.tmp; mv t.tmp tenants.txt
`,
  });

  const t0 = Date.now();
  const answers = await Promise.all(
    Array.from({ length: BURST }, async (_, k) => {
      const r = await fetch(`${server.url}/v1/apps/burst/roles/seats/tenants`, {
        method: 'POST',
        headers: { authorization: `Bearer ${server.token}`, 'content-type': 'application/json', 'idempotency-key': `burst-${k}` },
        body: JSON.stringify({ name: `lab${k}` }),
      });
      return r.status;
    }),
  );
  const answeredS = (Date.now() - t0) / 1000;
  assert.deepEqual([...new Set(answers)], [202], 'no room at first: every sign-up is accepted for later');

  let tenants: Tenant[] = [];
  await until(`${BURST} tenants ready`, async () => {
    tenants = (await api<{ tenants: Tenant[] }>('GET', '/v1/tenants?app=burst')).tenants;
    const failed = tenants.filter((x) => x.state === 'failed');
    if (failed.length > 0) throw new Error(`failed: ${JSON.stringify(failed.slice(0, 3))}`);
    return tenants.length === BURST && tenants.every((x) => x.state === 'ready');
  }, 360_000, 500);
  t.diagnostic(`${BURST} sign-ups answered in ${answeredS.toFixed(1)} s; all ready after ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  // Exactly the instances needed, ever (destroyed ones included).
  const made = (await api<{ instances: Instance[] }>('GET', '/v1/instances?app=burst&all=true')).instances.filter((i) => i.role === 'seats');
  assert.equal(made.length, BURST / CAPACITY, `instances made: ${made.length}`);

  // On the instances themselves: each name in exactly one instance's file, at most CAPACITY per file.
  const where = new Map<string, string[]>();
  for (const i of made) {
    const file = join(dataDir, 'instances', i.id, 'tenants.txt');
    const names = existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
    assert.ok(names.length <= CAPACITY, `${i.id} holds ${names.length} tenants`);
    for (const n of names) where.set(n, [...(where.get(n) ?? []), i.id]);
  }
  assert.equal(where.size, BURST, 'every tenant added somewhere');
  const twice = [...where].filter(([, at]) => at.length > 1);
  assert.deepEqual(twice, [], 'no tenant added twice');
  // …and the store agrees with them.
  for (const x of tenants) assert.deepEqual(where.get(x.name), [x.instance], x.name);
  const perInstance = new Map<string, number>();
  for (const x of tenants) perInstance.set(x.instance!, (perInstance.get(x.instance!) ?? 0) + 1);
  assert.ok(Math.max(...perInstance.values()) <= CAPACITY);
});
