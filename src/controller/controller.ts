/**
 * The controller: owns the reconcile loop for every app, turns agent reports into stored state
 * and events, and executes the planner's actions through the provider and the transport.
 */
import { EventEmitter } from 'node:events';
import { randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import {
  DEFAULT_PLANNER_OPTIONS,
  isTerminal,
  plan,
  roleHash,
  type AgentStatus,
  type AppSpec,
  type Clock,
  type Order,
  type Plan,
  type PlanAction,
  type PlannerOptions,
  type Vitals,
} from '../core/index.js';
import type { EventRecord, InstancePatch, InstanceRecord, NewEvent, Store, StoredApp } from '../adapters/store/index.js';
import type { Provider } from '../adapters/providers/index.js';
import type { ControllerTransport, HelloMessage, TransportHandlers } from '../adapters/transport/index.js';
import { ApiError } from './errors.js';
import { Runner } from './runner.js';

export interface ControllerOptions {
  readonly store: Store;
  readonly provider: Provider;
  readonly clock: Clock;
  readonly logger: Logger;
  /** How often agents send status. @default 2000 */
  readonly heartbeatMs?: number;
  /** How often unacknowledged orders are re-sent. @default 3000 */
  readonly resendMs?: number;
  /** Level-triggered safety net: every app is reconciled at least this often. @default 5000 */
  readonly resyncMs?: number;
  readonly planner?: Partial<PlannerOptions>;
}

interface LiveInfo {
  lastSeenAt: number;
  vitals?: Vitals;
}

export interface InstanceView extends InstanceRecord {
  readonly connected: boolean;
  readonly lastSeenAt: number | null;
  readonly vitals: Vitals | null;
}

const token = (bytes: number) => randomBytes(bytes).toString('hex');

function sameToken(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export class Controller {
  readonly events = new EventEmitter();
  readonly startedAt: number;
  readonly heartbeatMs: number;
  private readonly store: Store;
  private readonly provider: Provider;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly plannerOptions: PlannerOptions;
  private readonly live = new Map<string, LiveInfo>();
  private readonly notes = new Map<string, string>();
  private readonly runner: Runner;
  private transport?: ControllerTransport;
  private controllerUrl?: string;
  private timers: NodeJS.Timeout[] = [];
  private stopped = false;

  constructor(private readonly opts: ControllerOptions) {
    this.store = opts.store;
    this.provider = opts.provider;
    this.clock = opts.clock;
    this.log = opts.logger;
    this.heartbeatMs = opts.heartbeatMs ?? 2000;
    this.plannerOptions = { ...DEFAULT_PLANNER_OPTIONS, heartbeatTimeoutMs: this.heartbeatMs * 3, ...opts.planner };
    this.startedAt = this.clock.now();
    this.runner = new Runner((key) => this.reconcile(key), this.log);
    this.events.setMaxListeners(0);
    this.provider.onExit((id, info) => {
      void this.onAgentExit(id, info.code, info.signal).catch((err: unknown) => this.log.error({ err, id }, 'handling agent exit failed'));
    });
  }

  /** Wires the transport and the URL agents use to reach this controller, then starts the loops. */
  async start(transport: ControllerTransport, controllerUrl: string): Promise<void> {
    this.transport = transport;
    this.controllerUrl = controllerUrl;
    for (const app of await this.store.listApps()) this.runner.enqueue(app.name);
    this.timers.push(
      setInterval(() => void this.resendPending().catch((err: unknown) => this.log.warn({ err }, 'resend failed')), this.opts.resendMs ?? 3000),
      setInterval(() => void this.resync().catch((err: unknown) => this.log.warn({ err }, 'resync failed')), this.opts.resyncMs ?? 5000),
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    this.runner.stop();
    await this.provider.close();
  }

  // ---------------------------------------------------------------- events

  async record(ev: Omit<NewEvent, 'at' | 'data'> & { data?: NewEvent['data'] }): Promise<EventRecord> {
    const rec = await this.store.appendEvent({ ...ev, data: ev.data ?? null, at: this.clock.now() });
    this.log.info({ event: rec.kind, app: rec.app, role: rec.role, instance: rec.instance }, rec.message);
    this.events.emit('event', rec);
    return rec;
  }

  // ---------------------------------------------------------------- operations (API)

  /** Applies a compiled spec: stores it and lets the reconciler converge. */
  async apply(spec: AppSpec, appDir: string): Promise<{ app: StoredApp; changed: boolean }> {
    const prev = await this.store.getApp(spec.app);
    if (prev?.deleting) throw new ApiError('app_deleting', `app "${spec.app}" is being deleted; apply again once it is gone`);
    const res = await this.store.putApp({ name: spec.app, spec, appDir, at: this.clock.now() });
    if (res.changed) {
      await this.record({
        app: spec.app, role: null, instance: null, kind: 'app.apply',
        message: prev ? `app ${spec.app} updated (generation ${res.app.generation})` : `app ${spec.app} created with roles ${Object.keys(spec.roles).join(', ')}`,
        data: { generation: res.app.generation },
      });
    }
    this.runner.enqueue(spec.app);
    return res;
  }

  async scale(appName: string, role: string, count: number): Promise<void> {
    const app = await this.store.getApp(appName);
    const r = app?.spec.roles[role];
    if (!app || !r) throw new ApiError('not_found', app ? `app "${appName}" has no role "${role}"` : `no app "${appName}"`);
    if (app.deleting) throw new ApiError('app_deleting', `app "${appName}" is being deleted`);
    if (count < r.min || count > r.max) {
      throw new ApiError('count_out_of_bounds', `count: ${count} is outside ${role}'s bounds [${r.min}, ${r.max}]`);
    }
    const before = (await this.store.listRoles(appName)).find((x) => x.role === role)?.desired ?? r.count;
    await this.store.setRoleCount(appName, role, count, true);
    await this.record({ app: appName, role, instance: null, kind: 'scale.manual', message: `${role} ${before}→${count}: set by hand`, data: { from: before, to: count } });
    this.runner.enqueue(appName);
  }

  async deleteApp(appName: string): Promise<void> {
    const app = await this.store.getApp(appName);
    if (!app) throw new ApiError('not_found', `no app "${appName}"`);
    if (!app.deleting) {
      await this.store.setAppDeleting(appName, this.clock.now());
      await this.record({ app: appName, role: null, instance: null, kind: 'app.delete', message: `app ${appName} is being deleted: stopping roles in reverse dependency order` });
    }
    this.runner.enqueue(appName);
  }

  async listApps(): Promise<StoredApp[]> {
    return this.store.listApps();
  }

  async roleCounts(app: string) {
    return this.store.listRoles(app);
  }

  async listEvents(q: { after?: number; app?: string; limit?: number }): Promise<EventRecord[]> {
    return this.store.listEvents(q);
  }

  async listInstances(filter: { app?: string; role?: string; includeGone?: boolean } = {}): Promise<InstanceView[]> {
    return (await this.store.listInstances(filter)).map((i) => this.view(i));
  }

  async getInstance(id: string): Promise<InstanceView | undefined> {
    const i = await this.store.getInstance(id);
    return i ? this.view(i) : undefined;
  }

  private view(i: InstanceRecord): InstanceView {
    const l = this.live.get(i.id);
    return { ...i, connected: this.transport?.isConnected(i.id) ?? false, lastSeenAt: l?.lastSeenAt ?? null, vitals: l?.vitals ?? null };
  }

  /** The plan the reconciler would make now, without acting on it: used for status. */
  async preview(appName: string): Promise<Plan | undefined> {
    const app = await this.store.getApp(appName);
    if (!app) return undefined;
    return this.planFor(app);
  }

  // ---------------------------------------------------------------- reconcile

  private async planFor(app: StoredApp): Promise<Plan> {
    const now = this.clock.now();
    const roles = await this.store.listRoles(app.name);
    const instances = await this.store.listInstances({ app: app.name, goneSince: now - this.plannerOptions.failureWindowMs });
    return plan({
      app: { name: app.name, spec: app.spec, deleting: app.deleting },
      desired: Object.fromEntries(roles.map((r) => [r.role, r.desired])),
      instances: instances.map((i) => ({ ...i, lastSeenAt: this.live.get(i.id)?.lastSeenAt ?? null })),
      now,
      controllerStartedAt: this.startedAt,
      options: this.plannerOptions,
    });
  }

  private async reconcile(appName: string): Promise<{ requeueAfterMs?: number }> {
    if (this.stopped || !this.transport) return {};
    const app = await this.store.getApp(appName);
    if (!app) {
      this.runner.forget(appName);
      return {};
    }
    const p = await this.planFor(app);
    // Instances are made and destroyed in parallel (each can take seconds); orders go out in order.
    const slow = p.actions.filter((a) => a.kind === 'create' || a.kind === 'destroy');
    await Promise.all(slow.map((a) => this.execute(app, a)));
    for (const a of p.actions) if (a.kind !== 'create' && a.kind !== 'destroy') await this.execute(app, a);
    // A destroyed instance can unblock the next step (the next role to stop, a replacement):
    // look again at once rather than at the next resync.
    if (p.actions.some((a) => a.kind === 'destroy')) return { requeueAfterMs: 0 };
    return p.requeueAfterMs !== undefined ? { requeueAfterMs: p.requeueAfterMs } : {};
  }

  private async execute(app: StoredApp, a: PlanAction): Promise<void> {
    const now = this.clock.now();
    switch (a.kind) {
      case 'create': {
        const id = `i-${token(4)}`;
        const rec: InstanceRecord = {
          id, app: app.name, role: a.role, state: 'provisioning', goal: 'run', epoch: 1, joinToken: token(16),
          ip: '', port: 0, workdir: '', providerRef: null, roleHash: a.roleHash, exports: null, importsSent: null,
          importsApplied: null, assignOrderId: null, stopOrderId: null, restarts: 0, message: null, lastExit: null,
          createdAt: now, startedAt: null, stateSince: now, stopRequestedAt: null, destroyedAt: null,
        };
        await this.store.insertInstance(rec);
        await this.record({ app: app.name, role: a.role, instance: id, kind: 'instance.create', message: a.reason });
        try {
          const made = await this.provider.createInstance({
            instanceId: id, epoch: rec.epoch, joinToken: rec.joinToken, controllerUrl: this.controllerUrl ?? '', app: app.name, role: a.role,
          });
          await this.store.updateInstance(id, { ip: made.ip, port: made.port, workdir: made.workdir, providerRef: made.providerRef });
        } catch (err) {
          const msg = err instanceof Error ? err.message : String(err);
          await this.store.updateInstance(id, { state: 'failed', stateSince: now, message: `provider ${this.provider.name} could not create it: ${msg}` });
          await this.record({ app: app.name, role: a.role, instance: id, kind: 'instance.failed', message: `${id} (${a.role}) could not be created: ${msg}` });
        }
        return;
      }
      case 'assign': {
        const role = app.spec.roles[a.role];
        if (!role) return;
        const order: Order = {
          id: `o-${randomUUID()}`, kind: 'assign',
          assignment: { app: app.name, appDir: app.appDir, role, imports: a.imports, importsVersion: a.importsVersion },
        };
        await this.store.transaction(async (tx) => {
          await tx.putOrder({ id: order.id, instanceId: a.instanceId, kind: order.kind, payload: order, createdAt: now });
          await tx.updateInstance(a.instanceId, { assignOrderId: order.id, importsSent: a.importsVersion });
        });
        this.transport?.send(a.instanceId, { type: 'order', order });
        await this.record({ app: app.name, role: a.role, instance: a.instanceId, kind: 'instance.assign', message: a.reason });
        return;
      }
      case 'imports': {
        const order: Order = { id: `o-${randomUUID()}`, kind: 'imports', imports: a.imports, importsVersion: a.importsVersion };
        await this.store.transaction(async (tx) => {
          await tx.putOrder({ id: order.id, instanceId: a.instanceId, kind: order.kind, payload: order, createdAt: now });
          await tx.updateInstance(a.instanceId, { importsSent: a.importsVersion });
        });
        this.transport?.send(a.instanceId, { type: 'order', order });
        await this.record({ app: app.name, role: a.role, instance: a.instanceId, kind: 'instance.imports', message: a.reason, data: { version: a.importsVersion } });
        return;
      }
      case 'stop': {
        const inst = await this.store.getInstance(a.instanceId);
        if (!inst || inst.goal === 'stop') return;
        await this.record({ app: app.name, role: a.role, instance: a.instanceId, kind: 'instance.stop', message: a.reason });
        if (inst.state === 'provisioning' || !inst.assignOrderId) {
          // Nothing runs there yet: no role to stop gracefully.
          await this.store.updateInstance(a.instanceId, { goal: 'stop', stopRequestedAt: now });
          await this.destroy(app.name, inst, 'terminated', `${inst.id} had no role running; destroyed directly`);
          return;
        }
        const order: Order = { id: `o-${randomUUID()}`, kind: 'stop', reason: a.reason };
        await this.store.transaction(async (tx) => {
          await tx.putOrder({ id: order.id, instanceId: a.instanceId, kind: order.kind, payload: order, createdAt: now });
          await tx.updateInstance(a.instanceId, { goal: 'stop', stopRequestedAt: now, stopOrderId: order.id, exports: null });
        });
        this.transport?.send(a.instanceId, { type: 'order', order });
        return;
      }
      case 'destroy': {
        const inst = await this.store.getInstance(a.instanceId);
        if (!inst || inst.destroyedAt !== null) return;
        await this.destroy(app.name, inst, a.finalState, a.reason);
        return;
      }
      case 'forgetApp': {
        await this.store.deleteApp(app.name);
        await this.record({ app: app.name, role: null, instance: null, kind: 'app.deleted', message: a.reason });
        this.runner.forget(app.name);
        return;
      }
      case 'note': {
        const key = `${app.name}/${a.role}`;
        // Only the gist counts for de-duplication: the countdown in the sentence changes every pass.
        const gist = a.reason.replace(/\d+s$/, '');
        if (this.notes.get(key) === gist) return;
        this.notes.set(key, gist);
        await this.record({ app: app.name, role: a.role, instance: null, kind: 'role.backoff', message: a.reason });
        return;
      }
    }
  }

  private async destroy(app: string, inst: InstanceRecord, finalState: 'terminated' | 'failed' | 'unresponsive', reason: string): Promise<void> {
    const now = this.clock.now();
    this.transport?.fence(inst.id, reason);
    const state = isTerminal(inst.state) ? inst.state : finalState;
    if (state !== inst.state) {
      await this.store.updateInstance(inst.id, { state, stateSince: now, exports: null });
    }
    await this.record({
      app, role: inst.role, instance: inst.id, kind: finalState === 'unresponsive' ? 'instance.unresponsive' : 'instance.destroy', message: reason,
    });
    await this.provider.destroyInstance({ id: inst.id, providerRef: inst.providerRef });
    await this.store.updateInstance(inst.id, { destroyedAt: this.clock.now(), exports: null });
    this.live.delete(inst.id);
  }

  private async resync(): Promise<void> {
    for (const app of await this.store.listApps()) this.runner.enqueue(app.name);
  }

  private async resendPending(): Promise<void> {
    if (!this.transport) return;
    const now = this.clock.now();
    for (const id of this.transport.connected()) {
      for (const o of await this.store.pendingOrders(id)) {
        if (now - o.createdAt >= (this.opts.resendMs ?? 3000)) this.transport.send(id, { type: 'order', order: o.payload as Order });
      }
    }
  }

  // ---------------------------------------------------------------- agent reports

  readonly handlers: TransportHandlers = {
    onHello: async (msg: HelloMessage) => {
      const inst = await this.store.getInstance(msg.instanceId);
      if (!inst || !sameToken(inst.joinToken, msg.joinToken)) return { accept: false, reason: 'unknown instance or bad join token' };
      if (inst.destroyedAt !== null || isTerminal(inst.state) || inst.state === 'unresponsive') {
        return { accept: false, reason: `instance ${inst.id} is ${inst.destroyedAt !== null ? 'destroyed' : inst.state}; it must not serve again` };
      }
      if (msg.epoch !== inst.epoch) return { accept: false, reason: `stale epoch ${msg.epoch} (current ${inst.epoch})` };
      return { accept: true };
    },
    onConnect: async (id: string) => {
      for (const o of await this.store.pendingOrders(id)) this.transport?.send(id, { type: 'order', order: o.payload as Order });
    },
    onStatus: async (id: string, status: AgentStatus, vitals: Vitals | undefined) => {
      const now = this.clock.now();
      this.live.set(id, { lastSeenAt: now, ...(vitals ? { vitals } : {}) });
      const inst = await this.store.getInstance(id);
      if (!inst || inst.destroyedAt !== null) {
        this.transport?.fence(id, 'instance no longer exists');
        return;
      }
      await this.applyStatus(inst, status, now);
    },
    onAck: async (_id: string, orderId: string) => {
      await this.store.ackOrder(orderId, this.clock.now());
    },
    onLog: (id: string, lines: readonly string[]) => {
      for (const line of lines) this.log.info({ instance: id }, line);
    },
    onDisconnect: (id: string) => {
      this.log.debug({ instance: id }, 'agent disconnected');
    },
  };

  private async applyStatus(inst: InstanceRecord, s: AgentStatus, now: number): Promise<void> {
    // A controller-side verdict (unresponsive, failed) is not overturned by a late report.
    if (isTerminal(inst.state) || inst.state === 'unresponsive') return;
    const patch: { -readonly [K in keyof InstancePatch]: InstancePatch[K] } = {};
    const exports = s.state === 'serving' && inst.goal === 'run' ? (s.exports ?? {}) : null;
    if (s.state !== inst.state) {
      patch.state = s.state;
      patch.stateSince = now;
    }
    if (JSON.stringify(exports) !== JSON.stringify(inst.exports)) patch.exports = exports;
    if ((s.importsVersion ?? null) !== inst.importsApplied) patch.importsApplied = s.importsVersion ?? null;
    if (s.restarts !== inst.restarts) patch.restarts = s.restarts;
    if ((s.message ?? null) !== inst.message) patch.message = s.message ?? null;
    if (s.lastExit && JSON.stringify(s.lastExit) !== JSON.stringify(inst.lastExit)) patch.lastExit = s.lastExit;
    if (s.state === 'serving' && inst.startedAt === null) patch.startedAt = s.servingSince ?? now;
    if (Object.keys(patch).length === 0) return;
    await this.store.updateInstance(inst.id, patch);
    if (patch.state !== undefined) {
      const why = s.message ? `: ${s.message}` : '';
      if (s.state === 'failed') {
        const exit = s.lastExit;
        const code = exit ? (exit.signal ? `signal ${exit.signal}` : `exit code ${exit.code}`) : 'no exit status';
        const tail = exit?.tail.length ? `\n  | ${exit.tail.slice(-10).join('\n  | ')}` : '';
        await this.record({
          app: inst.app, role: inst.role, instance: inst.id, kind: 'instance.failed',
          message: `${inst.id} (${inst.role}) failed after ${s.restarts} restart(s), ${code}${why}${tail}`,
          data: { lastExit: exit ?? null, restarts: s.restarts },
        });
      } else {
        await this.record({
          app: inst.app, role: inst.role, instance: inst.id, kind: 'instance.state',
          message: `${inst.id} (${inst.role}): ${inst.state} → ${s.state}${why}`,
          data: { from: inst.state, to: s.state },
        });
      }
    }
    if (patch.state !== undefined || patch.exports !== undefined) this.runner.enqueue(inst.app);
  }

  private async onAgentExit(id: string, code: number | null, signal: string | null): Promise<void> {
    if (this.stopped) return;
    const inst = await this.store.getInstance(id);
    if (!inst || inst.destroyedAt !== null) return;
    this.transport?.fence(id, 'agent exited');
    const now = this.clock.now();
    if (inst.goal === 'stop' || isTerminal(inst.state)) {
      if (!isTerminal(inst.state)) await this.store.updateInstance(id, { state: 'terminated', stateSince: now, exports: null });
    } else {
      const how = signal ? `signal ${signal}` : `exit code ${code}`;
      await this.store.updateInstance(id, { state: 'failed', stateSince: now, exports: null, message: `agent process ended (${how})` });
      await this.record({ app: inst.app, role: inst.role, instance: id, kind: 'instance.failed', message: `${id} (${inst.role}): agent process ended (${how}); replacing it` });
    }
    this.runner.enqueue(inst.app);
  }

  /** For tests: the role hash an instance created now would carry. */
  static roleHash = roleHash;
}
