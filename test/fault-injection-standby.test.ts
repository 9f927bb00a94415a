// drover-test: alone (times a standby's take-over)
/**
 * kill -9 of the *leader* at random points of a scale-out, a spare claim, a drain and a burst of
 * tenant sign-ups, with a standby running: after each takeover (the killed controller comes back
 * as the new standby) there is no duplicate instance, no orphan process, no order applied twice,
 * every drain finished and every tenant placed exactly once. The kill points come from a seed,
 * printed first: `FAULT_SEED=<n> npm test` replays them.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { processInstances, sleep, until } from './helpers.js';
import { controllerPair, HA_TOKEN, type Name } from './ha.js';
import { postgresSkip } from './postgres.js';
import { rabbitmqSkip } from './rabbitmq.js';
import { rng } from './seeded.js';

const SERVER = `exec node -e "require('http').createServer((q,s)=>s.end('ok')).listen(+process.env.PORT,'127.0.0.1')"`;
const APP = `
app: fi
roles:
  web:
    count: 2
    spares: 1
    deploy: echo "\${instance}" >> "\${appDir}/deploys.log"
    start: ${JSON.stringify(SERVER)}
    health: { http: /, interval: 200ms }
    drainTimeout: 2s
  labs:
    min: 1
    max: 10
    start: ${JSON.stringify(SERVER)}
    health: { http: /, interval: 200ms }
    tenants:
      capacity: 3
      add: echo "$TENANT_NAME \${instance}" >> "\${appDir}/tenants.log"
      remove: "true"
`;

type Inst = { id: string; role: string | null; pool: string | null; state: string; connected: boolean; goal: string };
type App = { converged: boolean; roles: { name: string; desired: number; serving: number }[] };
type Tenant = { id: string; name: string; state: string; instance: string | null };

test('kill -9 of the leader mid scale-out, spare claim, drain and tenant placement, with a standby: no duplicate, no orphan, nothing applied twice, every tenant placed once', {
  skip: rabbitmqSkip() || postgresSkip(), timeout: 600_000,
}, async (t) => {
  const seed = process.env.FAULT_SEED ? Number(process.env.FAULT_SEED) : Math.floor(Math.random() * 2 ** 31);
  t.diagnostic(`FAULT_SEED=${seed}`);
  const random = rng(seed);
  const pair = await controllerPair(t, { leaseMs: 3000, env: { DROVER_AGENT_RESTART_BACKOFF_MS: '100' } });
  writeFileSync(join(pair.appDir, 'drover.yaml'), APP);
  await pair.start('a');
  let lead: Name = (await pair.leader()).name;
  await pair.start('b');
  const api = () => pair.api(lead);

  const converged = async (what: string, web: number) =>
    until(`${what} (seed ${seed})`, async () => {
      const a = await api()<App>('GET', '/v1/apps/fi');
      const i = await api()<{ instances: Inst[] }>('GET', '/v1/instances?app=fi');
      if (a.status !== 200 || i.status !== 200) return undefined;
      const r = a.body.roles.find((x) => x.name === 'web')!;
      return a.body.converged && r.desired === web && i.body.instances.every((x) => x.connected) ? i.body.instances : undefined;
    }, 120_000, 250);
  const check = async (what: string, web: number) => {
    const live = await converged(what, web);
    const webs = live.filter((i) => i.role === 'web');
    assert.equal(webs.length, web, `${what}: exactly ${web} web instances (seed ${seed})`);
    assert.ok(webs.every((i) => i.state === 'serving' && i.goal === 'run'), `${what}: all serving, no drain left unfinished (seed ${seed})`);
    assert.equal(live.filter((i) => i.role === null).length, 1, `${what}: exactly one warm spare (seed ${seed})`);
    const ids = new Set(live.map((i) => i.id));
    await until(`${what}: no orphan process (seed ${seed})`, async () => [...processInstances([pair.dataDir('a'), pair.dataDir('b')]).values()].every((id) => ids.has(id)), 20_000);
    // Each instance deployed web once at most: an assign order applied twice would deploy twice.
    const deploys = readFileSync(join(pair.appDir, 'deploys.log'), 'utf8').trim().split('\n');
    assert.equal(new Set(deploys).size, deploys.length, `${what}: no instance deployed twice (seed ${seed}):\n${deploys.join('\n')}`);
    for (const w of webs) assert.ok(deploys.includes(w.id), `${what}: ${w.id} deployed (seed ${seed})`);
  };
  /** Kill the leader `ms` after `act`, let the standby take over, start the killed one again as the standby. */
  const killLeaderDuring = async (what: string, act: () => Promise<unknown>) => {
    const delay = Math.floor(random() * 2500);
    t.diagnostic(`${what}: kill -9 of ${lead} after ${delay} ms`);
    const acting = act();
    await sleep(delay);
    const killed = lead;
    const before = (await pair.api(killed)<{ epoch: number }>('GET', '/v1/controller')).body.epoch;
    await pair.kill(killed);
    await acting.catch(() => undefined);
    const next = await pair.leader(30_000);
    assert.notEqual(next.name, killed);
    assert.ok(next.view.epoch! > before, 'the new leader acts under a newer epoch');
    lead = next.name;
    await pair.start(killed);
  };

  assert.equal((await api()('PUT', '/v1/apps/fi', { yaml: APP, appDir: pair.appDir })).status, 201);
  await check('first convergence', 2);

  await killLeaderDuring('scale-out 2→4 (the spare claimed, one more made)', () => api()('PUT', '/v1/apps/fi/roles/web/count', { count: 4 }));
  await check('scale-out 2→4', 4);
  await killLeaderDuring('drain 4→2', () => api()('PUT', '/v1/apps/fi/roles/web/count', { count: 2 }));
  await check('drain 4→2', 2);
  await killLeaderDuring('spare claim 2→3', () => api()('PUT', '/v1/apps/fi/roles/web/count', { count: 3 }));
  await check('spare claim 2→3', 3);

  // Ten sign-ups at capacity 3 with one labs instance: three more are needed.
  const signUp = (k: number) =>
    fetch(`${pair.url(lead)}/v1/apps/fi/roles/labs/tenants`, {
      method: 'POST', headers: { authorization: `Bearer ${HA_TOKEN}`, 'content-type': 'application/json', 'idempotency-key': `k-${k}` },
      body: JSON.stringify({ name: `lab-${k}` }), signal: AbortSignal.timeout(30_000),
    }).then((r) => r.status).catch(() => 0);
  await killLeaderDuring('tenant placement', () => Promise.all(Array.from({ length: 10 }, (_, k) => signUp(k))));
  // Sign-ups that got no answer are sent again with their key, to the new leader: never a second tenant.
  const statuses = await Promise.all(Array.from({ length: 10 }, (_, k) => signUp(k)));
  assert.ok(statuses.every((s) => s === 200 || s === 201 || s === 202), `every sign-up accepted: ${statuses.join(',')}`);
  const tenants = await until(`all ten tenants ready (seed ${seed})`, async () => {
    const all = (await api()<{ tenants: Tenant[] }>('GET', '/v1/tenants?app=fi')).body.tenants;
    return all.length === 10 && all.every((x) => x.state === 'ready') ? all : undefined;
  }, 150_000, 500);
  assert.equal(new Set(tenants.map((x) => x.name)).size, 10, 'each sign-up once');
  const labs = (await api()<{ instances: Inst[] }>('GET', '/v1/instances?app=fi')).body.instances.filter((i) => i.role === 'labs');
  if (labs.length !== 4) {
    const evs = (await api()<{ events: { kind: string; instance: string | null; message: string }[] }>('GET', '/v1/events?app=fi&limit=400')).body.events;
    t.diagnostic(JSON.stringify(labs));
    t.diagnostic(evs.filter((e) => /labs|tenant|scale|orphan/.test(e.kind + e.message)).map((e) => `${e.kind} ${e.instance ?? ''} ${e.message}`).join('\n'));
  }
  assert.equal(labs.length, 4, `ten tenants at capacity 3: exactly 4 labs instances (seed ${seed})`);
  const lines = existsSync(join(pair.appDir, 'tenants.log')) ? readFileSync(join(pair.appDir, 'tenants.log'), 'utf8').trim().split('\n') : [];
  const byName = new Map<string, string[]>();
  const byInstance = new Map<string, number>();
  for (const l of lines) {
    const [name, inst] = l.split(' ') as [string, string];
    byName.set(name, [...(byName.get(name) ?? []), inst]);
    byInstance.set(inst, (byInstance.get(inst) ?? 0) + 1);
  }
  assert.equal(byName.size, 10, 'every tenant added on an instance');
  for (const [name, on] of byName) assert.equal(on.length, 1, `${name} added once, not ${on.join(', ')} (seed ${seed})`);
  for (const [inst, n] of byInstance) assert.ok(n <= 3, `${inst} holds ${n} tenants, over its capacity (seed ${seed})`);
  for (const x of tenants) assert.deepEqual(byName.get(x.name), [x.instance], `${x.name} is where the store says (seed ${seed})`);
  await check('after the sign-ups', 3);

  assert.equal((await api()('DELETE', '/v1/apps/fi')).status, 202);
  await until('app deleted', async () => ((await api()<{ apps: unknown[] }>('GET', '/v1/apps')).body.apps.length === 0 ? true : undefined), 90_000);
  await until('no process of the app left', async () => processInstances([pair.dataDir('a'), pair.dataDir('b')]).size === 0, 20_000);
});
