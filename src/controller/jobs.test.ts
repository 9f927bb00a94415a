/**
 * The controller's jobs on their own: the action executor and the reconciler, over a real
 * (in-memory PGlite) store, with a scripted provider and transport that record what they are
 * asked to do.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { DEFAULT_PLANNER_OPTIONS, ManualClock, parseAppFile, type ControllerMessage, type PlanAction } from '../core/index.js';
import { openPgliteStore, type EventRecord, type Store } from '../adapters/store/index.js';
import type { CreateInstanceRequest, InstanceHandle, Machine, Provider } from '../adapters/providers/index.js';
import type { ControllerTransport } from '../adapters/transport/index.js';
import type { ControllerContext, LiveInfo } from './context.js';
import { ActionExecutor } from './executor.js';
import { LagMonitor } from './lag.js';
import { ControllerMetrics } from './metrics.js';
import { Reconciler } from './reconciler.js';
import { RoleMetrics } from './scraper.js';

class ScriptedProvider implements Provider {
  readonly name = 'scripted';
  readonly provisionTimeoutMs = 60_000;
  readonly created: CreateInstanceRequest[] = [];
  readonly destroyed: string[] = [];
  fail?: string;
  /** Runs inside request, to look at the store then. */
  during?: (req: CreateInstanceRequest) => Promise<void>;
  async request(req: CreateInstanceRequest): Promise<Machine> {
    await this.during?.(req);
    if (this.fail) throw new Error(this.fail);
    this.created.push(req);
    const n = this.created.length;
    return { id: req.instanceId, state: 'running', ip: '127.0.0.1', port: 30000 + n, workdir: `/w/${req.instanceId}`, providerRef: { n } };
  }
  async describe(hs: readonly InstanceHandle[]): Promise<Machine[]> {
    return hs.map((h) => ({ id: h.id, state: this.destroyed.includes(h.id) ? 'gone' : 'running', providerRef: h.providerRef }));
  }
  async list(): Promise<Machine[]> {
    return [];
  }
  async destroy(i: InstanceHandle): Promise<void> {
    this.destroyed.push(i.id);
  }
  onExit(): void {}
  async close(): Promise<void> {}
}

class RecordingTransport implements ControllerTransport {
  readonly name = 'recording';
  readonly sent: { id: string; msg: ControllerMessage }[] = [];
  readonly fenced: string[] = [];
  send(id: string, msg: ControllerMessage): boolean {
    this.sent.push({ id, msg });
    return true;
  }
  isConnected(): boolean {
    return true;
  }
  fence(id: string): void {
    this.fenced.push(id);
  }
  connected(): string[] {
    return [];
  }
  async close(): Promise<void> {}
}

const spec = parseAppFile(`
app: shop
roles:
  web:
    count: 1
    min: 1
    max: 5
    start: web
    warmup: 0s
    scale:
      - target: { metric: cpu, target: 0.5 }
`);

async function setup(wrap: (s: Store) => Store = (s) => s) {
  const raw = await openPgliteStore();
  const store = wrap(raw);
  const clock = new ManualClock(1_000_000);
  const provider = new ScriptedProvider();
  const transport = new RecordingTransport();
  const events: EventRecord[] = [];
  const enqueued: string[] = [];
  const metrics = new ControllerMetrics();
  const ctx: ControllerContext = {
    store, provider, clock, log: pino({ level: 'silent' }), metrics, live: new Map<string, LiveInfo>(),
    transport: () => transport, controllerUrl: () => 'http://127.0.0.1:1',
    record: async (ev) => {
      const rec = await raw.appendEvent({ ...ev, data: ev.data ?? null, at: clock.now() });
      events.push(rec);
      return rec;
    },
    enqueue: (app) => enqueued.push(app),
    leaderEpoch: () => 1,
  };
  const executor = new ActionExecutor(ctx, { forgetApp: () => undefined });
  const roleMetrics = new RoleMetrics(ctx);
  const lag = new LagMonitor({ now: () => clock.now() });
  const reconciler = new Reconciler(ctx, executor, roleMetrics, lag, { planner: DEFAULT_PLANNER_OPTIONS, evaluateMs: 500, startedAt: clock.now() });
  await raw.putApp({ name: 'shop', spec, appDir: '/app', at: clock.now() });
  const app = (await raw.getApp('shop'))!;
  /** One action, and what it handed the provisioning job done. */
  const act = async (a: PlanAction) => {
    await executor.execute(app, a);
    await executor.provisioning.settled();
  };
  return { raw, store, clock, provider, transport, events, enqueued, metrics, executor, reconciler, roleMetrics, app, ctx, act };
}

test('executor: an instance is recorded before the provider is asked; a provider failure fails it with the reason', async () => {
  const h = await setup();
  h.provider.during = async (req) => {
    const rec = await h.raw.getInstance(req.instanceId);
    assert.equal(rec?.state, 'provisioning', 'in the store before the provider call');
  };
  await h.act({ kind: 'create', role: 'web', pool: null, roleHash: 'h', reason: 'web 0→1' });
  const [made] = await h.raw.listInstances({ app: 'shop' });
  assert.equal(made?.port, 30001);
  assert.equal(h.provider.created[0]?.key, made?.joinToken, 'the provider hands the agent its key');
  h.provider.fail = 'quota exceeded';
  await h.act({ kind: 'create', role: 'web', pool: null, roleHash: 'h', reason: 'web 1→2' });
  const failed = (await h.raw.listInstances({ app: 'shop' })).find((i) => i.state === 'failed');
  assert.match(failed?.message ?? '', /quota exceeded/);
  assert.ok(h.events.some((e) => e.kind === 'instance.failed' && e.message.includes('quota exceeded')));
  await h.raw.close();
});

test('executor: a spare with no role is destroyed at once on stop; a role instance gets a stop order', async () => {
  const h = await setup();
  await h.act({ kind: 'create', role: null, pool: '*', roleHash: '', reason: 'spare' });
  await h.act({ kind: 'create', role: 'web', pool: null, roleHash: 'h', reason: 'web' });
  const [spare, web] = [...(await h.raw.listInstances({ app: 'shop' }))].sort((a) => (a.role === null ? -1 : 1));
  await h.act({ kind: 'stop', instanceId: spare!.id, role: null, reason: 'fewer spares' });
  assert.deepEqual(h.provider.destroyed, [spare!.id]);
  assert.notEqual((await h.raw.getInstance(spare!.id))?.destroyedAt, null);

  await h.raw.updateInstance(web!.id, { assignOrderId: 'o-1', state: 'serving' });
  await h.act({ kind: 'stop', instanceId: web!.id, role: 'web', reason: 'fewer' });
  const stopped = (await h.raw.getInstance(web!.id))!;
  assert.equal(stopped.goal, 'stop');
  const pending = await h.raw.pendingOrders(web!.id);
  assert.equal(pending[0]?.kind, 'stop');
  assert.ok(h.transport.sent.some((s) => s.id === web!.id && s.msg.type === 'order' && s.msg.order.kind === 'stop'));
  await h.raw.close();
});

test('executor: unresponsive bumps the epoch and fences, unless a report changed the instance since it was read', async () => {
  let racing: string | undefined;
  const h = await setup((s) => {
    const wrapped = Object.create(s) as Store;
    wrapped.getInstance = async (id) => {
      const r = await s.getInstance(id);
      // A heartbeat lands between the executor's read and its write.
      if (id === racing) await s.updateInstance(id, { message: 'heartbeat' });
      return r;
    };
    return wrapped;
  });
  await h.act({ kind: 'create', role: 'web', pool: null, roleHash: 'h', reason: 'web' });
  const [inst] = await h.raw.listInstances({ app: 'shop' });
  h.enqueued.length = 0; // the create's own wake-up (its address known)
  racing = inst!.id;
  await h.act({ kind: 'unresponsive', instanceId: inst!.id, role: 'web', reason: 'silent' });
  assert.notEqual((await h.raw.getInstance(inst!.id))?.state, 'unresponsive', 'the late report wins; judged again next pass');
  assert.deepEqual(h.transport.fenced, []);
  assert.deepEqual(h.enqueued, ['shop']);
  racing = undefined;
  await h.act({ kind: 'unresponsive', instanceId: inst!.id, role: 'web', reason: 'silent' });
  const after = (await h.raw.getInstance(inst!.id))!;
  assert.equal(after.state, 'unresponsive');
  assert.equal(after.epoch, 2);
  assert.deepEqual(h.transport.fenced, [inst!.id]);
  await h.raw.close();
});

test("reconciler: an operator's pin that lands between the autoscaler's read and write is kept", async () => {
  let pinNow = false;
  const h = await setup((s) => {
    const wrapped = Object.create(s) as Store;
    wrapped.listRoles = async (app) => {
      const r = await s.listRoles(app);
      if (pinNow) {
        pinNow = false;
        await s.setRoleCount(app, 'web', 1, true); // `drover scale web=1`
      }
      return r;
    };
    return wrapped;
  });
  // One serving instance, busy: the policy wants more.
  await h.act({ kind: 'create', role: 'web', pool: null, roleHash: 'h', reason: 'web' });
  const [inst] = await h.raw.listInstances({ app: 'shop' });
  const t = h.clock.now();
  await h.raw.updateInstance(inst!.id, { state: 'serving', assignOrderId: 'o', startedAt: t - 60_000, stateSince: t - 60_000 });
  h.ctx.live.set(inst!.id, { lastSeenAt: t });
  for (let k = 0; k < 30; k++) h.roleMetrics.add('shop/web', 'cpu', { t: t - k * 1000, value: 1.0, instance: inst!.id });
  pinNow = true;
  const r = await h.reconciler.reconcile('shop');
  assert.equal(r.requeueAfterMs, 0, 'the pass is dropped and redone');
  const role = (await h.raw.listRoles('shop')).find((x) => x.role === 'web')!;
  assert.deepEqual([role.desired, role.pinned], [1, true], 'the pin survives');
  assert.equal(h.provider.created.length, 1, 'nothing acted on the stale count');
  assert.ok(!h.events.some((e) => e.kind === 'scale.policy'));
  assert.ok((await h.metrics.registry.getSingleMetricAsString('drover_store_conflicts_total')).includes('what="role"} 1'));
  // Unpinned, the next pass scales out as the policy wants.
  await h.raw.setRoleCount('shop', 'web', 1, false);
  await h.reconciler.reconcile('shop');
  assert.ok((await h.raw.listRoles('shop')).find((x) => x.role === 'web')!.desired > 1);
  assert.ok(h.events.some((e) => e.kind === 'scale.policy'));
  await h.raw.close();
});

test('reconciler: a policy state that changes while the count holds is written at most once a minute; the learned capacity is a gauge', async () => {
  const writes: number[] = [];
  const h = await setup((s) => {
    const wrapped = Object.create(s) as Store;
    wrapped.setPolicyState = async (app, role, state) => {
      writes.push(h.clock.now());
      return s.setPolicyState(app, role, state);
    };
    return wrapped;
  });
  const adaptive = parseAppFile(`
app: shop
roles:
  web:
    count: 1
    min: 1
    max: 5
    start: web
    warmup: 0s
    scale:
      - adaptive: { metric: demand, perInstance: 100, forecast: false }
    metrics:
      - { name: demand, url: http://127.0.0.1:1/stats, format: json, select: rate }
`);
  await h.raw.putApp({ name: 'shop', spec: adaptive, appDir: '/app', at: h.clock.now() });
  await h.act({ kind: 'create', role: 'web', pool: null, roleHash: 'h', reason: 'web' });
  const [inst] = await h.raw.listInstances({ app: 'shop' });
  const t0 = h.clock.now();
  await h.raw.updateInstance(inst!.id, { state: 'serving', assignOrderId: 'o', startedAt: t0 - 600_000, stateSince: t0 - 600_000 });
  const pass = async () => {
    const t = h.clock.now();
    h.ctx.live.set(inst!.id, { lastSeenAt: t });
    for (let k = 0; k < 5; k++) h.roleMetrics.add('shop/web', 'demand', { t: t - k * 1000, value: 50 });
    await h.reconciler.reconcile('shop');
  };
  await pass(); // first sight: the stored state is the baseline
  const desired = () => h.raw.listRoles('shop').then((r) => r.find((x) => x.role === 'web')!.desired);
  assert.equal(await desired(), 1, 'half of the prior capacity: the count holds');
  assert.deepEqual(writes, []);
  for (let k = 0; k < 5; k++) {
    h.clock.advance(15_000);
    await pass();
  }
  assert.equal(await desired(), 1);
  assert.equal(writes.length, 1, `one write in 75 s, at ${writes.map((w) => w - t0).join(', ')}`);
  assert.ok(writes[0]! - t0 >= 60_000);
  const stored = (await h.raw.listRoles('shop')).find((x) => x.role === 'web')!.policyState;
  assert.ok(stored !== null, 'the state is in the store');
  const gauge = await h.metrics.registry.getSingleMetricAsString('drover_policy_learned_capacity');
  assert.match(gauge, /drover_policy_learned_capacity\{app="shop",role="web",metric="demand"\} 100\b/);
  await h.raw.close();
});
