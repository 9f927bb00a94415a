// Two controllers on one private PostgreSQL and one private RabbitMQ node: one leads, the other
// stands by (serves reads, refuses changes naming the leader). kill -9 of the leader: the standby
// takes over within seconds under the next lease epoch, hears the same agents (no instance is
// replaced or duplicated), carries out a scale-out, and the app serves all along. The old
// controller started again stands by.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { freePort } from '../src/adapters/providers/index.js';
import { BIN, drover, killAll, processesWithEnv, sleep, until } from './helpers.js';
import { postgresSkip, startPostgres } from './postgres.js';
import { rabbitmqSkip, startRabbitMQ } from './rabbitmq.js';

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
type Leadership = { mode: string; role: string; epoch: number | null; leader: { url: string; pid: number } | null; self: { url: string } | null };

const TOKEN = 'standby-test-token-'.padEnd(40, 'x');
const LEASE_MS = 3000;

function client(url: string) {
  return async <T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> => {
    const r = await fetch(url + path, {
      method, headers: { authorization: `Bearer ${TOKEN}`, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await r.text();
    return { status: r.status, body: (r.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text) as T };
  };
}

test('active/standby controllers: kill -9 of the leader, the standby takes over within seconds, no instance lost or duplicated, no request failed', { skip: rabbitmqSkip() || postgresSkip(), timeout: 240_000 }, async (t) => {
  const pg = await startPostgres(t);
  const broker = await startRabbitMQ(t, { management: true });
  const storeUrl = await pg.createDatabase('drover_standby');
  const root = mkdtempSync(join(tmpdir(), 'drover-standby-'));
  const appDir = join(root, 'app');
  mkdirSync(appDir);
  const procs = new Map<string, ChildProcess>();
  t.after(async () => {
    for (const p of procs.values()) p.kill('SIGKILL');
    killAll(processesWithEnv(root));
    await sleep(300);
    killAll(processesWithEnv(root));
    rmSync(root, { recursive: true, force: true });
  });
  writeFileSync(join(appDir, 'drover.yaml'), APP);

  const ports = { a: await freePort(), b: await freePort() };
  const urlOf = (name: 'a' | 'b') => `http://127.0.0.1:${ports[name]}`;
  const start = async (name: 'a' | 'b') => {
    const p = spawn(process.execPath, [BIN, 'controller', '--data-dir', join(root, `ctl-${name}`), '--port', String(ports[name])], {
      env: {
        ...process.env, DROVER_TOKEN: TOKEN, DROVER_STORE_URL: storeUrl, DROVER_TRANSPORT_URL: broker.url, DROVER_TRANSPORT_MANAGEMENT_URL: broker.managementUrl,
        DROVER_LEADER_LEASE_MS: String(LEASE_MS), DROVER_LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    p.stderr?.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
    t.after(() => {
      if (err.trim()) t.diagnostic(`controller ${name} stderr (last lines):\n${err.trim().split('\n').slice(-8).join('\n')}`);
    });
    procs.set(name, p);
    await until(`controller ${name} answers`, async () => (await fetch(`${urlOf(name)}/v1/health`).catch(() => undefined))?.ok, 60_000);
    return p;
  };
  const a = client(urlOf('a'));
  const b = client(urlOf('b'));

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
  let requests = 0;
  const failures: string[] = [];
  let traffic = true;
  const urls = before.web.map((i) => i.exports!.url!);
  const load = (async () => {
    while (traffic) {
      for (const u of urls) {
        try {
          const res = await fetch(u, { signal: AbortSignal.timeout(5000) });
          if (res.status !== 200) failures.push(`status ${res.status}`);
          await res.text();
        } catch (err) {
          failures.push(err instanceof Error ? err.message : String(err));
        }
        requests += 1;
      }
      await sleep(20);
    }
  })();
  t.after(async () => {
    traffic = false;
    await load;
  });

  // kill -9 of the leader.
  const killedAt = Date.now();
  procs.get('a')!.kill('SIGKILL');
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
  traffic = false;
  await load;
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
  const statusOf = (name: 'a' | 'b') => drover(['status', '--data-dir', join(root, `ctl-${name}`)], { cwd: root, env: { DROVER_TOKEN: TOKEN } });
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
  const controllers = new Set([...procs.values()].map((p) => p.pid));
  await until('no process of the app left', async () => (processesWithEnv(root).filter((p) => !controllers.has(p)).length === 0 ? true : undefined), 20_000);
});
