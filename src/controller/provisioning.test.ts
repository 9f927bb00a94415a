/**
 * The provisioning job on its own, over a real (in-memory PGlite) store, with a fake cloud
 * provider: a cloud API cannot run here, so a scripted one stands in — its machines are pending
 * until the test says they run, its requests and destroys answer when the test lets them.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { DEFAULT_PLANNER_OPTIONS, ManualClock, parseAppFile } from '../core/index.js';
import { openPgliteStore, type EventRecord, type NewInstance } from '../adapters/store/index.js';
import type { CreateInstanceRequest, InstanceHandle, Machine, Provider } from '../adapters/providers/index.js';
import type { ControllerContext, LiveInfo } from './context.js';
import { ActionExecutor } from './executor.js';
import { LagMonitor } from './lag.js';
import { ControllerMetrics } from './metrics.js';
import { Reconciler } from './reconciler.js';
import { RoleMetrics } from './scraper.js';

/** A promise the test resolves. */
function gate() {
  let open!: () => void;
  const p = new Promise<void>((r) => (open = r));
  return { p, open };
}

class FakeCloud implements Provider {
  readonly name = 'fakecloud';
  readonly provisionTimeoutMs = 2000;
  readonly machines = new Map<string, Machine>();
  readonly requests: CreateInstanceRequest[] = [];
  readonly destroys: string[] = [];
  /** Held requests answer once opened. */
  requestGate?: Promise<void>;
  destroyGate?: Promise<void>;
  async request(req: CreateInstanceRequest): Promise<Machine> {
    this.requests.push(req);
    await this.requestGate;
    const known = this.machines.get(req.instanceId);
    if (known) return known;
    const m: Machine = { id: req.instanceId, state: 'pending', providerRef: { vm: `vm-${req.instanceId}` } };
    this.machines.set(req.instanceId, m);
    return m;
  }
  /** The test says the machine booted (or died). */
  set(id: string, m: Partial<Machine>): void {
    this.machines.set(id, { ...this.machines.get(id)!, ...m });
  }
  async describe(hs: readonly InstanceHandle[]): Promise<Machine[]> {
    return hs.map((h) => this.machines.get(h.id) ?? { id: h.id, state: 'gone', providerRef: h.providerRef });
  }
  async list(): Promise<Machine[]> {
    return [...this.machines.values()].filter((m) => m.state !== 'gone');
  }
  async destroy(h: InstanceHandle): Promise<void> {
    this.destroys.push(h.id);
    await this.destroyGate;
    this.machines.delete(h.id);
  }
  onExit(): void {}
  async close(): Promise<void> {}
}

const spec = parseAppFile(`
app: shop
roles:
  web:
    count: 1
    start: web
`);

async function setup() {
  const store = await openPgliteStore();
  const clock = new ManualClock(1_000_000);
  const provider = new FakeCloud();
  const events: EventRecord[] = [];
  const enqueued: string[] = [];
  const ctx: ControllerContext = {
    store, provider, clock, log: pino({ level: 'silent' }), metrics: new ControllerMetrics(), live: new Map<string, LiveInfo>(),
    transport: () => undefined, controllerUrl: () => 'http://127.0.0.1:1',
    record: async (ev) => {
      const rec = await store.appendEvent({ ...ev, data: ev.data ?? null, at: clock.now() });
      events.push(rec);
      return rec;
    },
    enqueue: (app) => enqueued.push(app),
    leaderEpoch: () => 1,
  };
  const executor = new ActionExecutor(ctx, { forgetApp: () => undefined });
  const planner = { ...DEFAULT_PLANNER_OPTIONS, provisionTimeoutMs: provider.provisionTimeoutMs };
  const lag = new LagMonitor({ now: () => clock.now() });
  const reconciler = new Reconciler(ctx, executor, new RoleMetrics(ctx), lag, { planner, evaluateMs: 500, startedAt: clock.now() });
  /** Time passes with the controller awake (a jump of the clock would look like a stall). */
  const pass = (ms: number) => {
    for (let t = 0; t < ms; t += 100) {
      clock.advance(100);
      lag.tick();
    }
  };
  await store.putApp({ name: 'shop', spec, appDir: '/app', at: clock.now() });
  const job = executor.provisioning;
  const only = async () => {
    const all = await store.listInstances({ includeGone: true });
    assert.equal(all.length, 1, 'one instance');
    return all[0]!;
  };
  return { store, clock, provider, events, enqueued, executor, reconciler, job, only, pass };
}

test('provisioning: the pass only records; the machine is asked for and observed in the background, pending until it runs', async (t) => {
  const h = await setup();
  t.after(() => h.store.close());
  const held = gate();
  h.provider.requestGate = held.p;
  const t0 = Date.now();
  await h.reconciler.reconcile('shop');
  assert.ok(Date.now() - t0 < 2000, 'the pass did not wait on the provider');
  let inst = await h.only();
  assert.equal(inst.state, 'provisioning');
  assert.equal(inst.providerRef, null);
  assert.equal(h.provider.requests[0]?.instanceId, inst.id, 'the instance id is the idempotency key');
  assert.equal(h.provider.requests[0]?.key, inst.joinToken);
  // A second pass while the request is on its way makes nothing more.
  await h.reconciler.reconcile('shop');
  assert.equal(h.provider.requests.length, 1);

  held.open();
  await sleep(50);
  inst = await h.only();
  assert.deepEqual(inst.providerRef, { vm: `vm-${inst.id}` }, 'a pending machine: its reference recorded at once');
  h.provider.set(inst.id, { state: 'running', ip: '10.0.0.7', port: 8080, workdir: '/srv/drover' });
  await h.job.settled();
  inst = await h.only();
  assert.deepEqual([inst.ip, inst.port, inst.workdir, inst.state], ['10.0.0.7', 8080, '/srv/drover', 'provisioning'], 'running: its address recorded; the agent says hello next');
});

test('provisioning: a machine that dies pending fails the instance with the reason; a refused request too', async (t) => {
  const h = await setup();
  t.after(() => h.store.close());
  await h.reconciler.reconcile('shop');
  const inst = await h.only();
  await sleep(50);
  h.provider.set(inst.id, { state: 'gone', message: 'InsufficientInstanceCapacity' });
  await h.job.settled();
  const failed = await h.only();
  assert.equal(failed.state, 'failed');
  assert.match(failed.message ?? '', /fakecloud machine is gone: InsufficientInstanceCapacity/);
  assert.ok(h.events.some((e) => e.kind === 'instance.failed' && e.message.includes('InsufficientInstanceCapacity')));
  assert.ok(h.enqueued.includes('shop'), 'the app is looked at again');

  h.provider.request = async () => {
    throw new Error('quota exceeded');
  };
  await h.executor.execute((await h.store.getApp('shop'))!, { kind: 'create', role: 'web', pool: null, roleHash: 'h', reason: 'more' });
  await h.job.settled();
  const refused = (await h.store.listInstances({})).find((i) => i.id !== inst.id)!;
  assert.equal(refused.state, 'failed');
  assert.match(refused.message ?? '', /provider fakecloud could not create it: quota exceeded/);
});

test("provisioning: past the provider's timeout the instance is failed and destroyed; the destroy is observed, asked once, and the app forgotten only after", async (t) => {
  const h = await setup();
  t.after(() => h.store.close());
  await h.reconciler.reconcile('shop');
  const inst = await h.only();
  h.pass(h.provider.provisionTimeoutMs);
  const slow = gate();
  h.provider.destroyGate = slow.p;
  await h.reconciler.reconcile('shop');
  const failed = (await h.store.getInstance(inst.id))!;
  assert.equal(failed.state, 'failed');
  assert.equal(failed.destroyedAt, null, 'not gone yet: its machine is being destroyed');
  const told = h.events.find((e) => e.kind === 'instance.destroy' && e.instance === inst.id);
  assert.match(told?.message ?? '', /did not register within 2s/);
  const replacement = (await h.store.listInstances({})).find((i) => i.id !== inst.id);
  assert.equal(replacement?.state, 'provisioning', 'replaced at once');
  // Passes while destroys are on their way neither ask again nor tell again; deleting the app waits for them.
  await h.store.setAppDeleting('shop', h.clock.now());
  for (let k = 0; k < 3; k++) await h.reconciler.reconcile('shop');
  assert.ok(await h.store.getApp('shop'), 'the app is kept while its machines are being destroyed');
  assert.deepEqual(h.provider.destroys, [inst.id, replacement.id]);
  assert.equal(h.events.filter((e) => e.kind === 'instance.destroy').length, 2);
  slow.open();
  await h.job.settled();
  for (const i of await h.store.listInstances({ app: 'shop', includeGone: true })) assert.notEqual(i.destroyedAt, null, 'gone: marked destroyed');
  assert.ok(h.enqueued.includes('shop'));
  await h.reconciler.reconcile('shop');
  assert.equal(await h.store.getApp('shop'), undefined, 'then forgotten');
});

test('provisioning: a destroy asked while the request is on its way destroys the machine that request made', async (t) => {
  const h = await setup();
  t.after(() => h.store.close());
  const held = gate();
  h.provider.requestGate = held.p;
  await h.reconciler.reconcile('shop');
  const inst = await h.only();
  await h.executor.execute((await h.store.getApp('shop'))!, { kind: 'stop', instanceId: inst.id, role: 'web', reason: 'fewer' });
  await sleep(50);
  assert.deepEqual(h.provider.destroys, [], 'not before the machine exists');
  held.open();
  await h.job.settled();
  assert.deepEqual(h.provider.destroys, [inst.id]);
  assert.equal(h.provider.machines.size, 0, 'nothing left at the provider');
  assert.notEqual((await h.only()).destroyedAt, null);
});

test('provisioning: the inventory at start reaps unknown machines and adopts, re-asks or fails what is still provisioning', async (t) => {
  const h = await setup();
  t.after(() => h.store.close());
  const now = h.clock.now();
  const rec = (id: string, providerRef: Record<string, unknown> | null): NewInstance => ({
    id, app: 'shop', role: 'web', pool: null, state: 'provisioning', goal: 'run', epoch: 1, joinToken: `key-${id}`,
    ip: '', port: 0, workdir: '', providerRef, roleHash: 'h', exports: null, importsSent: null,
    importsApplied: null, assignOrderId: null, stopOrderId: null, drainOrderId: null, restarts: 0, message: null, lastExit: null,
    createdAt: now, startedAt: null, stateSince: now, stopRequestedAt: null, drainRequestedAt: null, destroyedAt: null,
  });
  // Made before the crash, never recorded: its record still provisioning, no reference.
  await h.store.insertInstance(rec('i-adopt001', null));
  h.provider.machines.set('i-adopt001', { id: 'i-adopt001', state: 'running', ip: '10.0.0.8', port: 9000, workdir: '/w', providerRef: { vm: 'vm-a' } });
  // Recorded, but the request never reached the provider.
  await h.store.insertInstance(rec('i-reask001', null));
  // Recorded with its machine, which is gone now.
  await h.store.insertInstance(rec('i-gone0001', { vm: 'vm-g' }));
  // Destroyed in the store, but its machine survived; and one the store never heard of.
  await h.store.insertInstance({ ...rec('i-dead0001', { vm: 'vm-d' }), state: 'terminated', destroyedAt: now });
  h.provider.machines.set('i-dead0001', { id: 'i-dead0001', state: 'running', providerRef: { vm: 'vm-d' } });
  h.provider.machines.set('i-strange1', { id: 'i-strange1', state: 'pending', providerRef: { vm: 'vm-s' } });

  await h.job.inventory();
  await sleep(50);
  h.provider.set('i-reask001', { state: 'running', ip: '10.0.0.9', port: 9001 });
  await h.job.settled();
  const byId = new Map((await h.store.listInstances({ includeGone: true })).map((i) => [i.id, i]));
  const adopted = byId.get('i-adopt001')!;
  assert.deepEqual([adopted.providerRef, adopted.ip, adopted.port], [{ vm: 'vm-a' }, '10.0.0.8', 9000], 'adopted: its machine recorded');
  assert.deepEqual(h.provider.requests.map((r) => [r.instanceId, r.key]), [['i-reask001', 'key-i-reask001']], 'asked again, with the same key');
  assert.equal(byId.get('i-reask001')?.port, 9001);
  assert.equal(byId.get('i-gone0001')?.state, 'failed');
  assert.deepEqual(h.provider.destroys.sort(), ['i-dead0001', 'i-strange1'], 'reaped');
  assert.ok(!h.provider.machines.has('i-strange1') && !h.provider.machines.has('i-dead0001'));
  const orphans = h.events.filter((e) => e.kind === 'instance.orphan').map((e) => [e.instance, (e.data as { action: string }).action]);
  assert.deepEqual(orphans.sort(), [['i-adopt001', 'adopted'], ['i-dead0001', 'reaped'], ['i-strange1', 'reaped']]);
  assert.equal(byId.size, 4, 'no record made for a reaped machine');
});

test('provisioning: a machine recorded while the inventory runs (an API call during the start) is not taken for an orphan', async (t) => {
  const h = await setup();
  t.after(() => h.store.close());
  await h.reconciler.reconcile('shop'); // a pass that ran meanwhile: recorded, requested
  const inst = await h.only();
  await sleep(50);
  h.provider.set(inst.id, { state: 'running', ip: '10.0.0.7', port: 8080 });
  await h.job.settled();
  const listInstances = h.store.listInstances.bind(h.store);
  let first = true;
  // The inventory read the store just before that pass recorded the instance.
  h.store.listInstances = async (f) => (first && !(first = false) ? [] : listInstances(f));
  await h.job.inventory();
  await h.job.settled();
  assert.deepEqual(h.provider.destroys, [], 'not reaped');
  assert.ok(!h.events.some((e) => e.kind === 'instance.orphan'));
  assert.equal((await h.only()).id, inst.id);
});
