// drover-test: alone (scales on measured CPU and request rates)
/**
 * Elasticity on real processes: warm spares, fencing a frozen agent, draining, and a CPU-bound
 * role scaled by its policy. The controller runs in this process (startServer); agents and roles
 * are real child processes on 127.0.0.1.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'node:http';
import { pino } from 'pino';
import { startServer, type RunningController, type ServerOptions } from '../src/controller/index.js';
import { apiClient, killAll, processesWithEnv, ROOT, sleep, until } from './helpers.js';

const FIXTURES = join(ROOT, 'test/fixtures');

interface Inst {
  id: string;
  role: string;
  state: string;
  address: string | null;
  exports: Record<string, string>;
}
interface Ev {
  id: number;
  kind: string;
  instance: string | null;
  message: string;
  at: string;
  data?: { from?: string; to?: string } | null;
}

async function harness(t: { after: (fn: () => Promise<void>) => void }, opts: Partial<ServerOptions> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'drover-elastic-'));
  const server: RunningController = await startServer({ dataDir: join(dir, '.drover'), port: 0, logger: pino({ level: 'silent' }), ...opts });
  t.after(async () => {
    await server.close();
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
  });
  const api = apiClient(server);
  const apply = (yaml: string) => api('PUT', `/v1/apps/${/^app: (\S+)/m.exec(yaml)![1]}`, { yaml, appDir: FIXTURES });
  const instances = async (role?: string) => (await api<{ instances: Inst[] }>('GET', `/v1/instances${role ? `?role=${role}` : ''}`)).instances;
  const events = async () => (await api<{ events: Ev[] }>('GET', '/v1/events?limit=1000&after=0')).events;
  const serving = async (role: string) => (await instances(role)).filter((i) => i.state === 'serving');
  return { dir, server, api, apply, instances, events, serving };
}

test('scale-out takes a warm spare and the pool refills', { timeout: 90_000 }, async (t) => {
  const h = await harness(t, { heartbeatMs: 500 });
  await h.apply(`app: spares
roles:
  web:
    count: 1
    spares: 1
    start: exec node \${appDir}/burner.mjs
    exports: { url: "http://\${ip}:\${port}" }
    health: { http: /health, interval: 200ms }
`);
  await until('1 serving and a warm spare', async () => {
    const all = await h.instances();
    return all.filter((i) => i.role === 'web' && i.state === 'serving').length === 1 && all.some((i) => i.role === null && i.state === 'spare') ? all : undefined;
  }, 40_000);
  const spare = (await h.instances()).find((i) => i.role === null)!;
  const t0 = Date.now();
  await h.api('PUT', '/v1/apps/spares/roles/web/count', { count: 2 });
  await until('the spare serving web', async () => ((await h.serving('web')).some((i) => i.id === spare.id) ? true : undefined), 20_000, 50);
  const tookMs = Date.now() - t0;
  await until('the pool refilled', async () => ((await h.instances()).some((i) => i.role === null && i.state === 'spare' && i.id !== spare.id) ? true : undefined), 30_000);
  const ev = await h.events();
  assert.ok(ev.some((e) => e.kind === 'spare.claim' && e.instance === spare.id && /warm spare .* takes the role/.test(e.message)));
  assert.ok(tookMs < 10_000, `a spare took ${tookMs} ms to serve`);
});

test('a frozen agent is declared unresponsive, replaced, and fenced when it wakes', { timeout: 90_000 }, async (t) => {
  const h = await harness(t, { heartbeatMs: 500 });
  await h.apply(`app: fence
roles:
  web:
    count: 2
    start: exec node \${appDir}/burner.mjs
    exports: { url: "http://\${ip}:\${port}" }
    health: { http: /health, interval: 200ms }
`);
  await until('2 serving', async () => ((await h.serving('web')).length === 2 ? true : undefined), 40_000);
  const victim = (await h.serving('web'))[0]!;
  const agent = processesWithEnv(`DROVER_INSTANCE_ID=${victim.id}\0`)[0]!;
  process.kill(agent, 'SIGSTOP');
  try {
    await until('unresponsive', async () => ((await h.events()).some((e) => e.kind === 'instance.unresponsive' && e.instance === victim.id) ? true : undefined), 20_000, 100);
  } finally {
    process.kill(agent, 'SIGCONT');
  }
  await until('replaced: 2 serving without the victim', async () => {
    const s = await h.serving('web');
    return s.length === 2 && !s.some((i) => i.id === victim.id) ? true : undefined;
  }, 30_000);
  await until('the old instance gone, with every process', async () => {
    const all = await h.api<{ instances: (Inst & { destroyedAt: string | null })[] }>('GET', '/v1/instances?all=true');
    const v = all.instances.find((i) => i.id === victim.id);
    return v?.destroyedAt && processesWithEnv(`DROVER_INSTANCE=${victim.id}\0`).length === 0 ? true : undefined;
  }, 30_000);
  const after = (await h.events()).filter((e) => e.instance === victim.id);
  const fencedAt = after.findIndex((e) => e.kind === 'instance.unresponsive');
  assert.ok(!after.slice(fencedAt).some((e) => /→ serving/.test(e.message)), 'the fenced instance never served again');
});

test('a drain lets in-flight requests finish', { timeout: 90_000 }, async (t) => {
  const h = await harness(t, { heartbeatMs: 500 });
  await h.apply(`app: drain
roles:
  web:
    count: 2
    drainTimeout: 20s
    start: exec node \${appDir}/burner.mjs
    exports: { url: "http://\${ip}:\${port}" }
    health: { http: /health, interval: 200ms }
`);
  await until('2 serving', async () => ((await h.serving('web')).length === 2 ? true : undefined), 40_000);
  const members = await h.serving('web');
  const inflight = members.map((m) => fetch(`${m.exports.url}/slow?ms=3000`).then(async (r) => ({ status: r.status, body: await r.text() })));
  await sleep(300);
  await h.api('PUT', '/v1/apps/drain/roles/web/count', { count: 1 });
  const results = await Promise.all(inflight);
  assert.deepEqual(results.map((r) => r.status), [200, 200]);
  await until('one instance left', async () => ((await h.instances('web')).length === 1 ? true : undefined), 40_000);
  const ev = await h.events();
  const drained = ev.find((e) => e.kind === 'instance.drain')!;
  assert.ok(drained, 'a drain event');
  assert.ok(ev.some((e) => e.kind === 'instance.log' && e.instance === drained.instance), 'the drained instance sent its last log lines');
});

/** One GET on its own connection: the status, the whole body, and when its last byte came. */
function slowGet(url: string): Promise<{ status: number; body: string; doneAt: number } | { error: string; doneAt: number }> {
  return new Promise((resolve) => {
    const req = request(url, { agent: false, timeout: 30_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, doneAt: Date.now() }));
      res.on('error', (e) => resolve({ error: `response: ${e.message}`, doneAt: Date.now() }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ error: e.message, doneAt: Date.now() }));
    req.end();
  });
}

test('a drain behind a builtin balancer waits for the request in flight through it before the instance stops', { timeout: 120_000 }, async (t) => {
  const h = await harness(t, { heartbeatMs: 500 });
  await h.apply(`app: lbdrain
roles:
  web:
    count: 2
    drainTimeout: 20s
    start: exec node \${appDir}/burner.mjs
    exports: { url: "http://\${ip}:\${port}" }
    health: { http: /health, interval: 200ms }
  lb:
    count: 1
    imports: [web.*]
    loadBalancer: { driver: builtin, members: web.url, balance: roundrobin, healthCheck: { path: /health, interval: 1s } }
    exports: { url: "http://\${ip}:\${port}" }
    health: { tcp: true, interval: 500ms }
`);
  type Lb = Inst & { balancer: { members: { id: string; state: string }[] } | null };
  const lbUrl = await until('the lb serving with 2 ready members', async () => {
    const lb = (await h.api<{ instances: Lb[] }>('GET', '/v1/instances?role=lb')).instances.find((i) => i.state === 'serving');
    return lb?.balancer?.members.filter((m) => m.state === 'ready').length === 2 ? lb.exports.url : undefined;
  }, 60_000);
  assert.ok(lbUrl);

  // Four slow requests through the balancer, round robin: each member has two in flight.
  const SLOW_MS = 8000;
  const inflight: ReturnType<typeof slowGet>[] = [];
  for (let k = 0; k < 4; k++) {
    inflight.push(slowGet(`${lbUrl}/slow?ms=${SLOW_MS}`));
    await sleep(50);
  }
  await sleep(500);
  await h.api('PUT', '/v1/apps/lbdrain/roles/web/count', { count: 1 });
  const results = await Promise.all(inflight);
  await until('one web instance left', async () => ((await h.instances('web')).length === 1 ? true : undefined), 60_000);

  const ev = await h.events();
  const victim = ev.find((e) => e.kind === 'instance.drain')?.instance;
  assert.ok(victim, 'a web instance was drained');
  for (const r of results) assert.ok('status' in r && r.status === 200, `a request through the balancer failed: ${JSON.stringify(r)}`);
  const toVictim = results.filter((r) => 'body' in r && r.body === `${victim}\n`);
  assert.ok(toVictim.length >= 1, `no request reached the drained ${victim}: ${JSON.stringify(results)}`);
  const finished = Math.max(...toVictim.map((r) => r.doneAt));

  const mine = ev.filter((e) => e.instance === victim);
  const drainOrder = mine.find((e) => e.kind === 'instance.drain' && /draining/.test(e.message));
  assert.ok(drainOrder, `no drain order for ${victim}: ${JSON.stringify(mine.map((e) => e.message))}`);
  assert.ok(Date.parse(drainOrder.at) < finished - 2000, 'the drain began while the request was in flight');
  const stopped = mine.find((e) => e.kind === 'instance.state' && (e.data?.to === 'stopping' || e.data?.to === 'terminated'));
  assert.ok(stopped, `no stop of ${victim}: ${JSON.stringify(mine.map((e) => e.message))}`);
  // The agent counts the role's open connections; a few ms of slack for the response's last hop.
  assert.ok(
    Date.parse(stopped.at) >= finished - 100,
    `${victim} stopped at ${stopped.at}, ${finished - Date.parse(stopped.at)} ms before its in-flight request finished`,
  );
});

test('a CPU-bound role scales out under load and back in after it', { timeout: 150_000 }, async (t) => {
  const h = await harness(t, { heartbeatMs: 1000, evaluateMs: 500 });
  await h.apply(`app: burn
roles:
  web:
    min: 1
    max: 4
    warmup: 1s
    start: exec node \${appDir}/burner.mjs
    exports: { url: "http://\${ip}:\${port}" }
    health: { http: /health, interval: 300ms }
    scale:
      - target: { metric: cpu, target: 0.25, window: 5s, scaleDown: { stabilization: 4s, percent: 100, period: 1s } }
`);
  await until('1 serving', async () => ((await h.serving('web')).length === 1 ? true : undefined), 40_000);
  // Bounded load: ~40 requests/s of 20 ms of CPU each (0.8 core), spread over the members.
  let members = (await h.serving('web')).map((i) => i.exports.url!);
  let peak = 1;
  const refresh = setInterval(() => {
    void h.serving('web').then((s) => {
      if (s.length) members = s.map((i) => i.exports.url!);
      peak = Math.max(peak, s.length);
    }).catch(() => {});
  }, 500);
  t.after(() => clearInterval(refresh));
  let k = 0;
  const failures: string[] = [];
  const deadline = Date.now() + 25_000;
  while (Date.now() < deadline && peak < 3) {
    const url = members[k++ % members.length]!;
    fetch(`${url}/work?ms=20`).then((r) => r.text()).catch((e: unknown) => failures.push(String(e)));
    await sleep(25);
  }
  assert.ok(peak >= 3, `peak ${peak} serving under load`);
  await until('back to 1 after the load', async () => ((await h.instances('web')).length === 1 ? true : undefined), 60_000, 500);
  const ev = await h.events();
  assert.ok(ev.some((e) => e.kind === 'scale.policy' && /^web 1→\d: mean cpu/.test(e.message)), 'the scale-out is explained');
  assert.ok(ev.some((e) => e.kind === 'scale.policy' && /→1: .*victim/.test(e.message)), 'the scale-in names its victims');
});

test('a balanced role with min/max and no scale: scales on the default policy, learning its capacity from the balancer', { timeout: 150_000 }, async (t) => {
  const h = await harness(t, { heartbeatMs: 1000, evaluateMs: 500 });
  await h.apply(`app: auto
roles:
  web:
    min: 1
    max: 4
    warmup: 1s
    start: exec node \${appDir}/burner.mjs
    exports: { url: "http://\${ip}:\${port}" }
    health: { http: /health, interval: 300ms }
  lb:
    count: 1
    imports: [web.*]
    loadBalancer: { driver: builtin, members: web.url, healthCheck: { path: /health, interval: 1s } }
    exports: { url: "http://\${ip}:\${port}" }
    health: { tcp: true, interval: 500ms }
`);
  type Lb = Inst & { balancer: { members: { state: string }[] } | null };
  const lbUrl = await until('the lb serving with its member', async () => {
    const lb = (await h.api<{ instances: Lb[] }>('GET', '/v1/instances?role=lb')).instances.find((i) => i.state === 'serving');
    return lb?.balancer?.members.some((m) => m.state === 'ready') ? lb.exports.url : undefined;
  }, 60_000);
  assert.ok(lbUrl);
  type RoleJ = { name: string; policies: string[]; defaultPolicy: boolean; learnedCapacity: Record<string, number> | null; lastDecision: { reason: string } | null };
  const role = async () => (await h.api<{ roles: RoleJ[] }>('GET', '/v1/apps/auto')).roles.find((r) => r.name === 'web')!;
  assert.deepEqual((await role()).policies, ['adaptive on lb_requests', 'target on cpu']);
  assert.equal((await role()).defaultPolicy, true);

  // Bounded load through the balancer: about 30 requests/s on a role whose instance serves 25/s
  // (40 ms each, one at a time, no CPU: the CPU safety net stays quiet). The queue that builds at
  // the instance shows it saturated: the policy learns its capacity from what it serves then.
  let peak = 1;
  const failures: string[] = [];
  const deadline = Date.now() + 90_000;
  while (Date.now() < deadline && peak < 2) {
    const tick = Date.now();
    for (let k = 0; k < 30; k++) {
      fetch(`${lbUrl}/serial?ms=40`).then((r) => r.text()).catch((e: unknown) => failures.push(String(e)));
      await sleep(Math.max(0, tick + (k + 1) * 33 - Date.now()));
    }
    peak = Math.max(peak, (await h.instances('web')).length);
  }
  assert.ok(peak >= 2, `the role never scaled out under load: ${JSON.stringify(await role())}`);
  const ev = await h.events();
  const out = ev.find((e) => e.kind === 'scale.policy' && /^web 1→\d/.test(e.message));
  assert.ok(out, 'the scale-out is an event');
  assert.match(out.message, /rate \d+(\.\d+)?\/s, backlog \d+, learned capacity \d+(\.\d+)?\/s/, 'the scale-out names the rate and the learned capacity');
  const r = await role();
  const learned = r.learnedCapacity?.lb_requests;
  // One instance serves 25/s; what was learned is near that.
  assert.ok(learned !== undefined && learned > 15 && learned < 35, `learned capacity ${String(learned)}`);
  const metrics = await (await fetch(`${h.server.url}/metrics`, { headers: { authorization: `Bearer ${h.server.token}` } })).text();
  assert.match(metrics, /drover_policy_learned_capacity\{app="auto",role="web",metric="lb_requests"\} \d/);
  assert.ok(failures.length === 0, `requests failed: ${failures.slice(0, 3).join('; ')}`);
});
