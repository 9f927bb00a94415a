// A controller on the amqp transport with real agents (local provider) and a private RabbitMQ
// node: each instance gets its own broker user and queue, made with it and deleted with it.
// Then the broker is restarted while the app serves: no request fails (the app does not need
// the control plane), a scale-out asked for during the outage is carried out once the broker is
// back, agents reconnect, and every order takes effect exactly once (one deploy per instance,
// one update per imports version).
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { startServer, type RunningController } from '../src/controller/index.js';
import { freePort } from '../src/adapters/providers/index.js';
import { apiClient, killAll, processesWithEnv, sleep, steadyTraffic, until } from './helpers.js';
import { rabbitmqSkip, startRabbitMQ } from './rabbitmq.js';

const APP = `app: relay
roles:
  web:
    count: 1
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

test('amqp transport end to end: per-instance broker users; a broker restart under traffic fails no request and loses or repeats no order', { skip: rabbitmqSkip(), timeout: 150_000 }, async (t) => {
  const broker = await startRabbitMQ(t, { management: true });
  const dir = mkdtempSync(join(tmpdir(), 'drover-amqp-e2e-'));
  const holder: { server?: RunningController } = {};
  t.after(async () => {
    await holder.server?.close();
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
  });
  writeFileSync(join(dir, 'drover.yaml'), APP);
  // As `drover controller` gets it: in the environment, which agents and roles must not inherit.
  process.env.DROVER_TRANSPORT_URL = broker.url;
  t.after(() => delete process.env.DROVER_TRANSPORT_URL);
  const server = (holder.server = await startServer({
    dataDir: join(dir, '.drover'), port: await freePort(), logger: pino({ level: process.env.E2E_LOG ?? 'silent' }), heartbeatMs: 500,
    transportUrl: broker.url, transportManagementUrl: broker.managementUrl,
  }));
  const api = apiClient(server);
  await api('PUT', '/v1/apps/relay', { yaml: APP, appDir: dir });
  const instances = async () => (await api<{ instances: Instance[] }>('GET', '/v1/instances?app=relay')).instances;
  const settled = async (webCount: number) => {
    const all = await instances();
    const web = all.filter((i) => i.role === 'web' && i.state === 'serving');
    const watcher = all.find((i) => i.role === 'watcher' && i.state === 'serving');
    return web.length === webCount && watcher && all.every((i) => i.connected) ? { web, watcher } : undefined;
  };
  const first = await until('serving over amqp, every agent present', () => settled(1), 60_000, 200);
  const webUrl = first.web[0]!.exports!.url!;

  // The controller's broker password is in no agent's or role's environment or command line; an agent's own is not either.
  assert.ok(processesWithEnv(dir).length >= 4, 'agents and roles found');
  assert.deepEqual(processesWithEnv(broker.admin.password), [], "no process of the app has the controller's broker password in its environment");
  for (const pid of processesWithEnv(dir)) {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    assert.ok(!cmdline.includes(broker.admin.password) && !cmdline.includes('drover-agent-'), `no broker credentials on the command line of ${pid}`);
    const environ = readFileSync(`/proc/${pid}/environ`, 'utf8');
    assert.ok(!environ.includes('amqp://'), `no broker URL in the environment of ${pid}`);
  }

  // Each instance has its own broker user and queue.
  const users = ((await broker.api('GET', '/api/users')) as { name: string }[]).map((u) => u.name);
  const queues = ((await broker.api('GET', '/api/queues')) as { name: string }[]).map((q) => q.name);
  for (const i of await instances()) {
    assert.ok(users.includes(`drover-agent-${i.id}`), `a broker user for ${i.id}`);
    assert.ok(queues.includes(`drover.agent.${i.id}`), `a queue for ${i.id}`);
  }

  // Traffic to the app all along.
  const traffic = steadyTraffic([webUrl], t);

  await broker.stop();
  // The controller serves its API without the broker; a change asked for now waits for it.
  await api('PUT', '/v1/apps/relay/roles/web/count', { count: 2 });
  await sleep(1500);
  assert.equal((await api<{ status: string }>('GET', '/v1/health')).status, 'ok');
  const restartSeconds = await broker.restart();
  t.diagnostic(`broker restarted in ${restartSeconds.toFixed(1)}s`);
  const after = await until('two web instances serving and every agent back', () => settled(2), 60_000, 250).catch(async (err: unknown) => {
    t.diagnostic(JSON.stringify(await instances(), null, 1));
    throw err;
  });
  const { requests, failures } = await traffic.stop();
  t.diagnostic(`${requests} requests during the restart, ${failures.length} failed`);
  assert.ok(requests > 50, 'traffic ran through the outage');
  assert.deepEqual(failures, [], 'no request failed');

  // Exactly once in effect: one deploy per instance, one update per imports version.
  const deploys = readFileSync(join(dir, 'deploys.log'), 'utf8').trim().split('\n');
  assert.deepEqual([...deploys].sort(), after.web.map((i) => i.id).sort(), 'each web instance deployed once');
  // The watcher's update for the second member is an order of its own, sent once the member
  // serves: it may still be on its way when both serve.
  const urls = after.web.map((i) => i.exports!.url!).sort();
  const updates = await until('the watcher told about both web instances', async () => {
    const lines = existsSync(join(dir, 'updates.log')) ? readFileSync(join(dir, 'updates.log'), 'utf8').trim().split('\n') : [];
    return JSON.stringify(lines.at(-1)?.split(',').sort()) === JSON.stringify(urls) && lines;
  }, 30_000, 250);
  assert.equal(new Set(updates).size, updates.length, `no update ran twice for the same members:\n${updates.join('\n')}`);

  // Deleting the app deletes every agent's user and queue.
  await api('DELETE', '/v1/apps/relay');
  await until('app deleted', async () => ((await api<{ apps: unknown[] }>('GET', '/v1/apps')).apps.length === 0 ? true : undefined), 60_000);
  await until('agents\' users and queues deleted', async () => {
    const u = ((await broker.api('GET', '/api/users')) as { name: string }[]).filter((x) => x.name.startsWith('drover-agent-'));
    const q = ((await broker.api('GET', '/api/queues')) as { name: string }[]).filter((x) => x.name.startsWith('drover.agent.'));
    return u.length === 0 && q.length === 0 ? true : undefined;
  }, 20_000, 250);
});
