/**
 * A controller that stops between asking the provider for a machine and recording what it
 * made (kill -9 at the worst moment) must, when it starts again, neither lose that machine nor
 * make a second one: a machine whose record is still provisioning is adopted; one the store
 * never heard of is reaped. Real controller, real agent processes (the local provider).
 *
 * The crash is staged without luck: the first controller's provider makes the machine and then
 * never answers, so the controller can record nothing more of it before it is stopped.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startServer, type RunningController } from '../src/controller/index.js';
import { freePort, LocalProvider, processesOfInstance, type CreateInstanceRequest, type Machine, type Provider } from '../src/adapters/providers/index.js';
import { apiClient, killAll, processesWithEnv, ROOT, until } from './helpers.js';

const FIXTURES = join(ROOT, 'test/fixtures');

/** The local provider, except that a request, once the machine is made, never answers: the controller dies before it hears back. */
function makesThenHangs(inner: LocalProvider, made: (m: Machine) => void): Provider {
  return {
    name: inner.name,
    provisionTimeoutMs: inner.provisionTimeoutMs,
    async request(req: CreateInstanceRequest) {
      made(await inner.request(req));
      return new Promise<Machine>(() => undefined);
    },
    describe: (hs) => inner.describe(hs),
    list: () => inner.list(),
    destroy: (h) => inner.destroy(h),
    onExit: (l) => inner.onExit(l),
    close: () => inner.close(),
  };
}

type Inst = { id: string; state: string; role: string | null; address: string | null; agent: { pid: number | null } };
type Ev = { kind: string; instance: string | null; message: string; data: { action?: string } | null };

test('after a crash between making a machine and recording it: the recorded one is adopted, an unknown one reaped; no duplicate, no orphan process', { timeout: 120_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-orphans-'));
  const dataDir = join(dir, '.drover');
  let server: RunningController | undefined;
  t.after(async () => {
    await server?.close();
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
  });
  const port = await freePort();
  const logger = pino({ level: 'silent' });
  const baseDir = join(dataDir, 'instances');

  // 1. The first controller asks for web's machine; the provider makes it and the controller hears nothing back.
  let first: Machine | undefined;
  server = await startServer({ dataDir, port, logger, heartbeatMs: 500, provider: makesThenHangs(new LocalProvider({ baseDir }), (m) => (first = m)) });
  const api = <T>(method: string, path: string, body?: unknown) => apiClient(server!)<T>(method, path, body);
  const yaml = `app: shop
roles:
  web:
    count: 1
    start: exec node \${appDir}/fleet-web.mjs
    exports: { url: "http://\${ip}:\${port}" }
    health: { http: /, interval: 200ms }
`;
  await api('PUT', '/v1/apps/shop', { yaml, appDir: FIXTURES });
  const made = await until('the machine made', async () => first, 20_000, 50);
  const [recorded] = (await api<{ instances: Inst[] }>('GET', '/v1/instances')).instances;
  assert.equal(recorded?.id, made.id, 'the instance was recorded before the provider was asked');
  assert.equal(recorded?.state, 'provisioning');
  assert.ok(!recorded?.address && recorded?.agent.pid === null, 'what the provider made is not recorded: the crash window');
  await server.close(); // the crash: the machine runs, the store knows only the instance's id
  server = undefined;

  // 2. Meanwhile a machine the store never heard of (a record lost with a store restored from backup, say).
  const stranger = await new LocalProvider({ baseDir }).request({ instanceId: 'i-0bad0bad', epoch: 1, key: 'k'.repeat(43), controllerUrl: `http://127.0.0.1:${port}`, app: 'shop', role: 'web' });
  assert.ok(processesOfInstance(stranger.id).length > 0);

  // 3. Started again (its ordinary provider): adopts one, reaps the other.
  server = await startServer({ dataDir, port, logger, heartbeatMs: 500 });
  const events = async () => (await api<{ events: Ev[] }>('GET', '/v1/events?limit=200')).events;
  const orphanEvents = await until('both told', async () => {
    const es = (await events()).filter((e) => e.kind === 'instance.orphan');
    return es.length >= 2 ? es : undefined;
  }, 20_000);
  assert.deepEqual(orphanEvents.map((e) => [e.instance, e.data?.action]).sort(), [[made.id, 'adopted'], ['i-0bad0bad', 'reaped']].sort());
  await until('the stranger reaped', async () => (processesOfInstance('i-0bad0bad').length === 0 ? true : undefined), 15_000);

  const serving = await until('the adopted instance serves', async () => {
    const { instances } = await api<{ instances: Inst[] }>('GET', '/v1/instances');
    return instances.length === 1 && instances[0]!.state === 'serving' ? instances[0] : undefined;
  }, 60_000);
  assert.equal(serving.id, made.id, 'the same instance, not a replacement');
  assert.equal(serving.agent.pid, made.providerRef?.pid, 'its machine: the very agent process made before the crash');
  assert.equal(serving.address, `${made.ip}:${made.port}`);
  const all = (await api<{ instances: Inst[] }>('GET', '/v1/instances?all=true')).instances;
  assert.deepEqual(all.map((i) => i.id), [made.id], 'no duplicate was ever made');
  assert.ok(!(await events()).some((e) => e.kind === 'instance.failed'), 'nothing failed');
});

test("a machine that never comes up is failed and destroyed after the provider's own timeout, and replaced", { timeout: 60_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-never-'));
  // A stand-in for a cloud whose VMs never boot (a cloud API cannot run here): pending forever.
  const machines = new Map<string, Machine>();
  const destroyed: string[] = [];
  const cloud: Provider = {
    name: 'neverboots', provisionTimeoutMs: 2000,
    async request(req) {
      const m: Machine = machines.get(req.instanceId) ?? { id: req.instanceId, state: 'pending', providerRef: { vm: req.instanceId } };
      machines.set(req.instanceId, m);
      return m;
    },
    async describe(hs) {
      return hs.map((h) => machines.get(h.id) ?? { id: h.id, state: 'gone', providerRef: h.providerRef });
    },
    async list() {
      return [...machines.values()];
    },
    async destroy(h) {
      destroyed.push(h.id);
      machines.delete(h.id);
    },
    onExit: () => undefined,
    close: async () => undefined,
  };
  const server = await startServer({ dataDir: join(dir, '.drover'), port: 0, logger: pino({ level: 'silent' }), heartbeatMs: 500, provider: cloud });
  t.after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const api = <T>(method: string, path: string, body?: unknown) => apiClient(server)<T>(method, path, body);
  await api('PUT', '/v1/apps/shop', { yaml: 'app: shop\nroles:\n  web:\n    count: 1\n    start: sleep 60\n', appDir: dir });
  const t0 = Date.now();
  const told = await until('failed after the timeout', async () => {
    const { events } = await api<{ events: Ev[] }>('GET', '/v1/events?limit=100');
    return events.find((e) => e.kind === 'instance.destroy' && /did not register within 2s/.test(e.message));
  }, 20_000, 100);
  const took = Date.now() - t0;
  assert.ok(took >= 1500 && took < 10_000, `destroyed ${took} ms after it was asked for: the provider's 2 s, not the default 60 s`);
  await until('destroyed at the provider, and a replacement asked for', async () => (destroyed.includes(told.instance!) && machines.size === 1 ? true : undefined), 10_000, 100);
});
