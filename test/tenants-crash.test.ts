/**
 * kill -9 of the controller while a burst of sign-ups is pending and being placed, then a
 * restart: no tenant lost, none placed twice, no instance over capacity, no extra instance.
 * The kill point comes from a seed, printed first (`FAULT_SEED=<n>` replays it).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { apiClient, killableController, sleep, until } from './helpers.js';

type Tenant = { id: string; name: string; state: string; instance: string | null };
type Instances = { instances: { id: string; role: string | null; state: string }[] };

const SERVER = `exec node -e "require('http').createServer((q,s)=>s.end('ok')).listen(+process.env.PORT,'127.0.0.1')"`;

test('kill -9 of the controller mid-placement: every tenant placed exactly once, no instance over capacity, no extra instance', { timeout: 300_000 }, async (t) => {
  const seed = process.env.FAULT_SEED ? Number(process.env.FAULT_SEED) : Math.floor(Math.random() * 2 ** 31);
  t.diagnostic(`FAULT_SEED=${seed}`);
  const delay = 200 + (seed % 2500);
  const { dir, dataDir, server, start, kill } = await killableController(t, 'drover-tenants-crash-');
  const token = server.token;
  const api = apiClient(server);
  await start();
  const yaml = `
app: crash
roles:
  labs:
    min: 1
    max: 10
    start: ${JSON.stringify(SERVER)}
    health: { http: /, interval: 200ms }
    tenants:
      capacity: 5
      add: echo "$TENANT_NAME" >> tenants.txt
      remove: "true"
`;
  await api('PUT', '/v1/apps/crash', { yaml, appDir: dir });
  await until('converged', async () => (await api<{ converged: boolean }>('GET', '/v1/apps/crash')).converged, 60_000);
  // 30 sign-ups at capacity 5 with one instance: 5 new instances are needed.
  const signups = Promise.all(
    Array.from({ length: 30 }, (_, k) =>
      fetch(`${server.url}/v1/apps/crash/roles/labs/tenants`, {
        method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': `k-${k}` },
        body: JSON.stringify({ name: `lab-${k}` }),
      }).then((r) => r.status).catch(() => 0),
    ),
  );
  await sleep(delay);
  t.diagnostic(`kill -9 after ${delay} ms`);
  await kill();
  await signups;
  await start();
  // Sign-ups that never got an answer are retried with their key: never a second tenant.
  for (let k = 0; k < 30; k++) {
    await fetch(`${server.url}/v1/apps/crash/roles/labs/tenants`, {
      method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': `k-${k}` },
      body: JSON.stringify({ name: `lab-${k}` }),
    });
  }
  await until(`all 30 ready (seed ${seed})`, async () => {
    const all = (await api<{ tenants: Tenant[] }>('GET', '/v1/tenants?app=crash')).tenants;
    return all.length === 30 && all.every((x) => x.state === 'ready');
  }, 150_000, 500);
  const tenants = (await api<{ tenants: Tenant[] }>('GET', '/v1/tenants?app=crash')).tenants;
  assert.equal(new Set(tenants.map((x) => x.name)).size, 30, 'each sign-up once');
  const labs = (await api<Instances>('GET', '/v1/instances?app=crash')).instances.filter((i) => i.role === 'labs');
  assert.equal(labs.length, 6, `30 tenants at capacity 5: exactly 6 instances (seed ${seed})`);
  const seen = new Map<string, number>();
  for (const i of labs) {
    const names = readFileSync(join(dataDir, 'instances', i.id, 'tenants.txt'), 'utf8').split('\n').filter(Boolean);
    assert.ok(names.length <= 5, `${i.id} holds ${names.length} (seed ${seed})`);
    for (const n of names) seen.set(n, (seen.get(n) ?? 0) + 1);
  }
  assert.equal(seen.size, 30, 'every tenant added on an instance');
  assert.ok([...seen.values()].every((c) => c === 1), `no tenant added twice (seed ${seed})`);
});
