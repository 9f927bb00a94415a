/**
 * A controller with `--provider ec2`, against the fake EC2 (test/fakes/ec2.ts) whose machines
 * boot from their user data (test/fakes/boot.ts): a real controller, real nodes started from
 * the agent bundle the controller serves, real agents and roles. What a fake cannot prove (that
 * AWS and a real image do the same) is the live suite's (test/provider-ec2-live.test.ts).
 *
 * - A role on "EC2" serves on machines that joined by themselves, each with the single-use
 *   token made for it; the user data holds no long-lived secret; a token is refused a second
 *   time and once expired; scale-in terminates the machines.
 * - A crash between RunInstances and its record: the machine is adopted, never a second one.
 * - Cloud errors become events, retried with backoff, never a loop.
 * - A role asking for a provider the controller does not run is refused at apply.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startServer, instanceJoinToken, type RunningController } from '../src/controller/index.js';
import { Ec2Provider, freePort, type CreateInstanceRequest, type Machine, type Provider } from '../src/adapters/providers/index.js';
import { openPgliteStore, type Store } from '../src/adapters/store/index.js';
import { FakeEc2 } from './fakes/ec2.js';
import { BootHook } from './fakes/boot.js';
import { apiClient, killAll, processesWithEnv, ROOT, until } from './helpers.js';

Object.assign(process.env, { AWS_ACCESS_KEY_ID: 'AKIAFAKEFAKEFAKE0002', AWS_SECRET_ACCESS_KEY: 'fake-secret', AWS_EC2_METADATA_DISABLED: 'true' });
delete process.env.AWS_PROFILE;
delete process.env.AWS_SESSION_TOKEN;

const FIXTURES = join(ROOT, 'test/fixtures');
const NODE_BUNDLE = join(ROOT, 'dist/ssh-bundle/agent/cloud/node.js');
const PROVIDER = '{ kind: ec2, region: eu-west-1, image: ami-0abcdef1234567890, instanceType: t3.small, subnet: subnet-0abc1234, securityGroups: [sg-0abc1234] }';
const appFile = (count: number) => `app: shop
roles:
  web:
    count: ${count}
    provider: ${PROVIDER}
    start: exec node \${appDir}/fleet-web.mjs
    exports: { url: "http://\${ip}:\${port}" }
    health: { http: /, interval: 200ms }
`;

type Inst = { id: string; state: string; role: string | null; address: string | null; type?: string; ageSeconds?: number };
type Ev = { kind: string; instance: string | null; role: string | null; message: string; at: string };
type Tok = { id: string; instance: string | null; uses: number; maxUses: number | null; state: string };
type NodeJ = { id: string; tokenId: string; state: string; instance: { id: string } | null };

const notBuilt = existsSync(NODE_BUNDLE) ? undefined : 'the agent bundle is not built (npm run build): the fake machines install it';
const skip = notBuilt && process.env.CI !== 'true' ? { skip: notBuilt } : {};

interface Cloud {
  dir: string;
  fake: FakeEc2;
  boot: BootHook;
  store: Store;
  start(o?: { provider?: (inner: Ec2Provider) => Provider; port?: number; planner?: Record<string, number>; clouds?: boolean; timeoutMs?: number }): Promise<RunningController>;
  api<T>(server: RunningController, method: string, path: string, body?: unknown): Promise<T>;
}

async function cloud(t: { after: (fn: () => Promise<void>) => void }, bootMs = 300): Promise<Cloud> {
  assert.ok(!notBuilt, notBuilt);
  const dir = mkdtempSync(join(tmpdir(), 'drover-ec2-'));
  const boot = new BootHook({ dir: join(dir, 'machines'), env: { DROVER_AGENT_RESTART_BACKOFF_MS: '200' } });
  const fake = await new FakeEc2({ bootMs, terminateMs: 100, boot }).start();
  const dataDir = join(dir, '.drover');
  let store = await openPgliteStore(join(dir, 'db'));
  const servers: RunningController[] = [];
  t.after(async () => {
    for (const s of servers) await s.close().catch(() => undefined);
    await store.close().catch(() => undefined);
    await fake.stop();
    boot.close();
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
  });
  const c: Cloud = {
    dir, fake, boot, store,
    async start(o = {}) {
      if (servers.length > 0) {
        // A second controller on the same data: the first is gone (closed, its store with it).
        store = await openPgliteStore(join(dir, 'db'));
        c.store = store;
      }
      const ec2 = new Ec2Provider({ controllerId: 'ctl-e2e', endpoint: fake.url, regions: ['eu-west-1'], provisionTimeoutMs: o.timeoutMs ?? 60_000 });
      const s = await startServer({
        dataDir, port: o.port ?? 0, logger: pino({ level: 'silent' }), heartbeatMs: 500, store,
        ...(o.clouds === false ? {} : { cloudProviders: { ec2: o.provider ? o.provider(ec2) : ec2 } }),
        ...(o.planner ? { planner: o.planner } : {}),
      });
      servers.push(s);
      return s;
    },
    api: <T>(server: RunningController, method: string, path: string, body?: unknown) => apiClient(server)<T>(method, path, body),
  };
  return c;
}

/** Runs a node the way a machine's boot would, with this token; resolves with its exit code. */
function joinWith(url: string, token: string, dir: string): Promise<number | null> {
  const tokenFile = join(dir, `token-${Date.now()}`);
  writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  const node = spawn(process.execPath, [NODE_BUNDLE, '--join', url, '--token-file', tokenFile, '--data-dir', join(dir, `replay-${Date.now()}`), '--address', '127.0.0.1'], { stdio: 'ignore', env: { PATH: process.env.PATH ?? '', DROVER_AGENT_FAKE_MACHINE: dir } });
  const timer = setTimeout(() => node.kill('SIGKILL'), 20_000);
  return new Promise((resolve) => node.on('exit', (code) => (clearTimeout(timer), resolve(code))));
}

test('a role on ec2 serves on machines that booted from their user data and joined once, each with the token made for it; scale-in terminates them', { timeout: 120_000, ...skip }, async (t) => {
  const c = await cloud(t);
  const server = await c.start();
  const api = <T>(m: string, p: string, b?: unknown) => c.api<T>(server, m, p, b);
  await api('PUT', '/v1/apps/shop', { yaml: appFile(2), appDir: FIXTURES });
  const serving = await until('two web instances serving on ec2', async () => {
    const { instances } = await api<{ instances: Inst[] }>('GET', '/v1/instances');
    return instances.length === 2 && instances.every((i) => i.state === 'serving') ? instances : undefined;
  }, 90_000, 250);
  assert.deepEqual([...c.boot.failures], [], 'every machine booted');
  assert.deepEqual(c.fake.ops('RunInstances').map((o) => o.effect), ['created', 'created'], 'one machine per instance');
  assert.deepEqual(serving.map((i) => i.type), ['t3.small', 't3.small'], 'the API names each instance\'s type');
  assert.ok(serving.every((i) => typeof i.ageSeconds === 'number' && i.ageSeconds >= 0), 'and its age');
  for (const i of serving) {
    const rec = (await c.store.getInstance(i.id))!;
    const [m] = c.fake.machinesOf(i.id);
    assert.ok(m, `a machine tagged ${i.id}`);
    assert.equal(rec.providerRef?.provider, 'ec2');
    assert.equal(rec.providerRef?.ec2Id, m.ec2Id);
    assert.equal(typeof rec.providerRef?.node, 'string', 'its node is recorded');
    assert.equal(await (await fetch(`http://${i.address}/`)).text(), `${i.id}\n`, 'the role answers on the machine');
    // Nothing long-lived in the user data: not the API token, not the instance key; the token file is gone from the disk.
    assert.ok(!m.userData.includes(server.token), 'no API token');
    assert.ok(!m.userData.includes(rec.joinToken), 'no instance key');
    assert.ok(m.userData.includes(instanceJoinToken(rec.joinToken, i.id).token), 'the token made for this instance');
    const booted = c.boot.booted.get(m.ec2Id)!;
    assert.ok(!existsSync(join(booted.dir, 'join-token')), 'the node removed the token file once read');
  }
  // Each token: made for one instance, used once; each node runs the instance its token was made for.
  const { tokens } = await api<{ tokens: Tok[] }>('GET', '/v1/tokens');
  assert.deepEqual(tokens.map((x) => [x.instance, x.uses, x.maxUses, x.state]).sort(), serving.map((i) => [i.id, 1, 1, 'used-up']).sort());
  const { nodes } = await api<{ nodes: NodeJ[] }>('GET', '/v1/nodes');
  for (const n of nodes) assert.equal(n.instance?.id, tokens.find((x) => x.id === n.tokenId)?.instance, `node ${n.id} runs the instance its token was made for`);

  // A token is refused the second time (a copy of the user data), and once expired.
  const a = serving[0]!;
  const aToken = instanceJoinToken((await c.store.getInstance(a.id))!.joinToken, a.id).token;
  assert.equal(await joinWith(server.url, aToken, c.dir), 3, 'a used token: refused');
  const stale = instanceJoinToken('k'.repeat(43), 'i-0000dead');
  await c.store.createJoinToken({ id: stale.id, hash: stale.hash, app: 'shop', labels: null, maxUses: 1, expiresAt: Date.now() - 1000, createdAt: Date.now() - 60_000, instanceId: 'i-0000dead' });
  assert.equal(await joinWith(server.url, stale.token, c.dir), 3, 'an expired token: refused');
  const refusals = (await api<{ events: Ev[] }>('GET', '/v1/events?limit=200')).events.filter((e) => e.kind === 'security.join').map((e) => e.message);
  assert.ok(refusals.some((m) => /used up|which is serving/.test(m)), refusals.join('\n'));
  assert.ok(refusals.some((m) => /expired/.test(m)), refusals.join('\n'));
  assert.equal((await api<{ instances: Inst[] }>('GET', '/v1/instances')).instances.filter((i) => i.state === 'serving').length, 2, 'nothing changed for the instances');

  // Scale-in terminates the machines, and everything they ran ends.
  await api('PUT', '/v1/apps/shop/roles/web/count', { count: 0 });
  await until('both terminated', async () => (c.fake.ops('TerminateInstances').length >= 2 && [...c.fake.machines.values()].every((m) => m.state === 'terminated') ? true : undefined), 60_000, 200);
  await until('nothing of the machines runs', async () => ([...c.boot.booted.values()].every((b) => processesWithEnv(b.dir).length === 0) ? true : undefined), 15_000, 200);
  const after = (await api<{ nodes: NodeJ[] }>('GET', '/v1/nodes')).nodes;
  assert.deepEqual(after.map((n) => n.state), ['gone', 'gone'], 'their nodes are gone with them');
});

test('a crash between RunInstances and its record: the next controller adopts the machine; never a second one', { timeout: 120_000, ...skip }, async (t) => {
  // The machine boots after the first controller is gone; its node joins the next one, on the same address.
  const c = await cloud(t, 2500);
  const port = await freePort();
  let made: Machine | undefined;
  const hangs = (inner: Ec2Provider): Provider => ({
    name: inner.name, provisionTimeoutMs: inner.provisionTimeoutMs,
    async request(req: CreateInstanceRequest) {
      made = await inner.request(req);
      return new Promise<Machine>(() => undefined);
    },
    describe: (hs) => inner.describe(hs), list: () => inner.list(), destroy: (h) => inner.destroy(h), onExit: (l) => inner.onExit(l), close: () => inner.close(),
  });
  const first = await c.start({ provider: hangs, port });
  await c.api(first, 'PUT', '/v1/apps/shop', { yaml: appFile(1), appDir: FIXTURES });
  const m = await until('the machine asked for', async () => made, 20_000, 50);
  const [rec] = await c.store.listInstances({ app: 'shop' });
  assert.equal(rec?.id, m.id);
  assert.equal(rec.providerRef, null, 'what EC2 answered was never recorded: the crash window');
  await first.close();

  const second = await c.start({ port });
  const serving = await until('the same instance serving', async () => {
    const { instances } = await c.api<{ instances: Inst[] }>(second, 'GET', '/v1/instances');
    return instances.length === 1 && instances[0]!.state === 'serving' ? instances[0] : undefined;
  }, 90_000, 250);
  assert.equal(serving.id, m.id, 'adopted, not replaced');
  assert.equal(c.fake.machinesOf(m.id).length, 1, 'one machine');
  assert.deepEqual(c.fake.ops('RunInstances').filter((o) => o.result === 'ok').map((o) => o.effect).filter((e) => e === 'created'), ['created'], 'one RunInstances made a machine');
  const events = (await c.api<{ events: Ev[] }>(second, 'GET', '/v1/events?limit=200')).events;
  assert.ok(events.some((e) => e.kind === 'instance.orphan' && e.instance === m.id && /adopted/.test(e.message)), 'told as adopted');
});

test('cloud errors become events on the role and are retried with backoff (growing gaps, then degraded), never a loop; once EC2 has capacity the role runs', { timeout: 120_000, ...skip }, async (t) => {
  const c = await cloud(t);
  c.fake.inject('RunInstances', 'InsufficientInstanceCapacity', 1000, 'We currently do not have sufficient t3.small capacity in the Availability Zone you requested (eu-west-1a).');
  const server = await c.start({ planner: { failureBackoffMs: 400, failureBackoffMaxMs: 4000, degradedAfter: 5, failureWindowMs: 60_000 } });
  const api = <T>(m: string, p: string, b?: unknown) => c.api<T>(server, m, p, b);
  await api('PUT', '/v1/apps/shop', { yaml: appFile(1), appDir: FIXTURES });
  await until('degraded', async () => ((await api<{ events: Ev[] }>('GET', '/v1/events?limit=500')).events.some((e) => e.kind === 'role.degraded') ? true : undefined), 30_000, 200);
  await new Promise((r) => setTimeout(r, 3000)); // degraded: nothing more is asked
  const asks = c.fake.ops('RunInstances').map((o) => o.at);
  assert.equal(asks.length, 5, `five attempts (degradedAfter), not a loop: ${asks.length}`);
  const gaps = asks.slice(1).map((at, k) => at - asks[k]!);
  // The planner's schedule (failureBackoff): the first failure is replaced at once, then each
  // retry waits 400, 800, 1600 ms after the last failure. A lower bound per gap: the time a pass
  // takes on a loaded machine only adds to it (comparing gaps with each other flaked).
  const planned = [0, 400, 800, 1600];
  assert.ok(gaps.every((g, k) => g >= planned[k]! - 20), `gaps follow the backoff (at least ${planned.join(', ')} ms): ${gaps.join(', ')} ms`);
  const events = (await api<{ events: Ev[] }>('GET', '/v1/events?limit=500')).events;
  const failed = events.filter((e) => e.kind === 'instance.failed');
  assert.equal(failed.length, 5);
  for (const e of failed) {
    assert.equal(e.role, 'web');
    assert.match(e.message, /InsufficientInstanceCapacity: We currently do not have sufficient t3\.small capacity.*no capacity of this type there now/);
  }
  // Capacity is back: `drover retry` (what an operator does, or a changed file) and the role runs.
  c.fake.clearInjected();
  await api('POST', '/v1/apps/shop/roles/web/retry', {});
  await until('web serving', async () => ((await api<{ instances: Inst[] }>('GET', '/v1/instances')).instances.some((i) => i.state === 'serving') ? true : undefined), 90_000, 250);
});

test("a machine that never leaves pending is failed after the ec2 provider's own timeout, terminated, and replaced", { timeout: 60_000, ...skip }, async (t) => {
  const c = await cloud(t);
  c.fake.stuckPending = true;
  const server = await c.start({ timeoutMs: 3000 });
  const api = <T>(m: string, p: string, b?: unknown) => c.api<T>(server, m, p, b);
  await api('PUT', '/v1/apps/shop', { yaml: appFile(1), appDir: FIXTURES });
  const first = await until('asked for', async () => c.fake.ops('RunInstances')[0], 20_000, 50);
  const told = await until('failed after 3 s', async () => (await api<{ events: Ev[] }>('GET', '/v1/events?limit=200')).events.find((e) => e.kind === 'instance.destroy' && /did not register within 3s/.test(e.message)), 20_000, 100);
  const { instances } = await api<{ instances: (Inst & { createdAt: string })[] }>('GET', '/v1/instances?all=true');
  const made = instances.find((i) => i.id === first.params.ClientToken)!;
  const after = Date.parse(told.at) - Date.parse(made.createdAt);
  assert.ok(after >= 3000 && after < 10_000, `failed ${after} ms after it was asked for: the ec2 provider's 3 s, not the default 60 s`);
  await until('terminated and asked for again', async () => (c.fake.ops('TerminateInstances').length >= 1 && c.fake.ops('RunInstances').length >= 2 ? true : undefined), 20_000, 100);
  const stuck = [...c.fake.machines.values()][0]!;
  await until('the stuck machine terminated', async () => (stuck.state === 'terminated' ? true : undefined), 10_000, 100);
});

test('a role asking for a provider the controller does not run is refused at apply, the field named; nothing is applied', { timeout: 60_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-ec2-refuse-'));
  const server = await startServer({ dataDir: join(dir, '.drover'), port: 0, logger: pino({ level: 'silent' }) });
  t.after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const r = await fetch(`${server.url}/v1/apps/shop`, {
    method: 'PUT', headers: { authorization: `Bearer ${server.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ yaml: appFile(1), appDir: FIXTURES }),
  });
  assert.equal(r.status, 422);
  const body = (await r.json()) as { error: { code: string; message: string; details: { path: string; message: string }[] } };
  assert.equal(body.error.code, 'invalid_spec');
  assert.deepEqual(body.error.details, [{ path: 'roles.web.provider.kind', message: 'the controller runs no ec2 provider (start it with --provider ec2)' }]);
  const missing = await fetch(`${server.url}/v1/apps/shop`, { headers: { authorization: `Bearer ${server.token}` } });
  assert.equal(missing.status, 404, 'nothing applied');
  // Missing settings: refused by the schema, the field named.
  const bad = await fetch(`${server.url}/v1/apps/shop`, {
    method: 'PUT', headers: { authorization: `Bearer ${server.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ yaml: appFile(1).replace('subnet: subnet-0abc1234, ', ''), appDir: FIXTURES }),
  });
  const badBody = (await bad.json()) as { error: { details: { path: string; message: string }[] } };
  assert.equal(bad.status, 422);
  assert.deepEqual(badBody.error.details, [{ path: 'roles.web.provider.subnet', message: 'required' }]);
  // With ec2: placement (a choice among joined hosts) on a cloud role is refused.
  const withEc2 = await startServer({
    dataDir: join(dir, '.drover-ec2'), port: 0, logger: pino({ level: 'silent' }),
    cloudProviders: { ec2: new Ec2Provider({ controllerId: 'ctl-refuse', endpoint: 'http://127.0.0.1:9', regions: [] }) },
  });
  t.after(() => withEc2.close());
  const placed = await fetch(`${withEc2.url}/v1/apps/shop`, {
    method: 'PUT', headers: { authorization: `Bearer ${withEc2.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ yaml: appFile(1).replace('    count: 1\n', '    count: 1\n    placement: { labels: { disk: ssd } }\n'), appDir: FIXTURES }),
  });
  assert.equal(placed.status, 422);
  const placedBody = (await placed.json()) as { error: { details: { path: string; message: string }[] } };
  assert.deepEqual(placedBody.error.details.map((d) => d.path), ['roles.web.placement']);
});

