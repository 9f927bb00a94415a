// Two controllers on one private PostgreSQL and one private RabbitMQ node: one leads, the other
// stands by (serves reads, refuses changes naming the leader). kill -9 of the leader: the standby
// takes over within seconds under the next lease epoch, hears the same agents (no instance is
// replaced or duplicated), carries out a scale-out, and the app serves all along. The old
// controller started again stands by.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { drover, processesWithEnv, steadyTraffic, until } from './helpers.js';
import { controllerPair, HA_TOKEN, type Leadership } from './ha.js';
import { postgresSkip } from './postgres.js';
import { rabbitmqSkip } from './rabbitmq.js';

const APP = `app: relay
roles:
  web:
    count: 2
    deploy: echo "\${instance}" >> "\${appDir}/deploys.log"
    start: exec node -e "require('http').createServer((q, s) => s.end('ok')).listen(+process.env.PORT, '127.0.0.1')"
    exports: { url: "http://\${ip}:\${port}" }
    health: { http: /, interval: 200ms }
  watcher:
    count: 1
    imports: [web.*]
    update: echo "$WEB_URL" >> "\${appDir}/updates.log"
    start: exec sleep 600
`;

type Instance = { id: string; role: string | null; state: string; connected: boolean; exports: Record<string, string> | null };

const LEASE_MS = 3000;

test('active/standby controllers: kill -9 of the leader, the standby takes over within seconds, no instance lost or duplicated, no request failed', { skip: rabbitmqSkip() || postgresSkip(), timeout: 240_000 }, async (t) => {
  const pair = await controllerPair(t, { leaseMs: LEASE_MS });
  const { root, appDir } = pair;
  writeFileSync(join(appDir, 'drover.yaml'), APP);
  const urlOf = pair.url;
  const start = (name: 'a' | 'b') => pair.start(name);
  const a = pair.api('a');
  const b = pair.api('b');

  await start('a');
  await until('a leads', async () => ((await a<Leadership>('GET', '/v1/controller')).body.role === 'leader' ? true : undefined), 20_000);
  await start('b');
  const standby = (await b<Leadership>('GET', '/v1/controller')).body;
  assert.equal(standby.mode, 'lease');
  assert.equal(standby.role, 'standby');
  assert.equal(standby.leader?.url, urlOf('a'), 'the standby names the leader');
  const epochA = standby.epoch!;

  // Changes go to the leader; the standby refuses them, naming it, and applies nothing.
  const refused = await b<{ error: { code: string; message: string } }>('PUT', '/v1/apps/relay', { yaml: APP, appDir });
  assert.equal(refused.status, 503);
  assert.equal(refused.body.error.code, 'not_leader');
  assert.ok(refused.body.error.message.includes(urlOf('a')), refused.body.error.message);
  assert.equal((await b<{ apps: unknown[] }>('GET', '/v1/apps')).body.apps.length, 0);

  assert.equal((await a('PUT', '/v1/apps/relay', { yaml: APP, appDir })).status, 201);
  const instances = async (c: typeof a) => (await c<{ instances: Instance[] }>('GET', '/v1/instances?app=relay')).body.instances;
  const settled = async (c: typeof a, webCount: number) => {
    const all = await instances(c);
    const web = all.filter((i) => i.role === 'web' && i.state === 'serving');
    const watcher = all.find((i) => i.role === 'watcher' && i.state === 'serving');
    return web.length === webCount && watcher && all.length === webCount + 1 && all.every((i) => i.connected) ? { all, web, watcher } : undefined;
  };
  const before = await until('serving under controller a', () => settled(a, 2), 90_000, 250);
  // The standby reads the same state.
  assert.deepEqual((await instances(b)).map((i) => i.id).sort(), before.all.map((i) => i.id).sort());

  // Traffic to both web instances all along.
  const traffic = steadyTraffic(before.web.map((i) => i.exports!.url!), t);

  // kill -9 of the leader.
  const killedAt = Date.now();
  await pair.kill('a');
  const took = await until('b leads', async () => {
    const v = (await b<Leadership>('GET', '/v1/controller')).body;
    return v.role === 'leader' ? v : undefined;
  }, 30_000, 50);
  const takeoverMs = Date.now() - killedAt;
  t.diagnostic(`takeover: ${takeoverMs} ms after kill -9 (lease ${LEASE_MS} ms)`);
  assert.ok(takeoverMs < LEASE_MS + 3000, `the standby took over in ${takeoverMs} ms`);
  assert.equal(took.epoch, epochA + 1, 'under the next epoch');
  assert.equal(took.leader?.url, urlOf('b'));

  // The new leader hears the same agents: nothing replaced, nothing duplicated.
  const heard = await until('every agent heard by b', () => settled(b, 2), 30_000, 250);
  assert.deepEqual(heard.all.map((i) => i.id).sort(), before.all.map((i) => i.id).sort(), 'the same instances, none replaced');

  // It acts: a scale-out is carried out once.
  assert.equal((await b('PUT', '/v1/apps/relay/roles/web/count', { count: 3 })).status, 200);
  const after = await until('three web instances under b', () => settled(b, 3), 60_000, 250);
  const { requests, failures } = await traffic.stop();
  t.diagnostic(`${requests} requests through the takeover, ${failures.length} failed`);
  assert.ok(requests > 100, 'traffic ran through the takeover');
  assert.deepEqual(failures, [], 'no request failed');
  const deploys = readFileSync(join(appDir, 'deploys.log'), 'utf8').trim().split('\n');
  assert.deepEqual([...deploys].sort(), after.web.map((i) => i.id).sort(), 'each web instance deployed once');
  const updates = readFileSync(join(appDir, 'updates.log'), 'utf8').trim().split('\n');
  assert.equal(new Set(updates).size, updates.length, `no update ran twice for the same members:\n${updates.join('\n')}`);
  assert.deepEqual(updates.at(-1)!.split(',').sort(), after.web.map((i) => i.exports!.url!).sort(), 'the watcher was told about all three');

  const metrics = (await b<string>('GET', '/metrics')).body;
  assert.match(metrics, /^drover_leader 1$/m);
  assert.match(metrics, new RegExp(`^drover_leader_epoch ${epochA + 1}$`, 'm'));

  // The old controller, started again, stands by behind the new leader.
  await start('a');
  const back = (await a<Leadership>('GET', '/v1/controller')).body;
  assert.equal(back.role, 'standby');
  assert.equal(back.leader?.url, urlOf('b'));
  assert.match((await a<string>('GET', '/metrics')).body, /^drover_leader 0$/m);
  // `drover status` says who leads, on either controller.
  const statusOf = (name: 'a' | 'b') => drover(['status', '--data-dir', pair.dataDir(name)], { cwd: root, env: { DROVER_TOKEN: HA_TOKEN } });
  const [sa, sb] = await Promise.all([statusOf('a'), statusOf('b')]);
  assert.equal(sb.code, 0, sb.stderr);
  assert.match(sb.stdout, new RegExp(`^controller: this one leads \\(lease epoch ${epochA + 1}, for \\d+s\\)`));
  assert.match(sa.stdout, new RegExp(`^controller: standby; the leader is ${urlOf('b').replace(/[.]/g, '\\.')} \\(`));
  assert.match(sa.stdout, /web/, 'the standby shows the app too');
  const events = (await b<{ events: { kind: string }[] }>('GET', '/v1/events?app=relay&limit=500')).body.events;
  assert.ok(!events.some((e) => e.kind === 'instance.unresponsive'), 'no instance was declared unresponsive by the takeover');

  // Deleting the app through the new leader stops every instance, also those the old one made.
  assert.equal((await b('DELETE', '/v1/apps/relay')).status, 202);
  await until('app deleted', async () => ((await b<{ apps: unknown[] }>('GET', '/v1/apps')).body.apps.length === 0 ? true : undefined), 60_000);
  const controllers = pair.pids();
  await until('no process of the app left', async () => (processesWithEnv(root).filter((p) => !controllers.has(p)).length === 0 ? true : undefined), 20_000);
});
