/**
 * The controller: owns the reconcile loop for every app, turns agent reports into stored state
 * and events, and executes the planner's actions through the provider and the transport.
 */
import { EventEmitter } from 'node:events';
import { randomBytes, randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import {
  DEFAULT_PLANNER_OPTIONS,
  evaluate,
  isTerminal,
  MetricStore,
  pickJson,
  pickPrometheus,
  parsePrometheusText,
  plan,
  rankVictims,
  recordAction,
  renderTemplate,
  resolveImports,
  roleHash,
  samplesFromVitals,
  victimWhy,
  type Decision,
  type ImportedMember,
  type MetricSource,
  type PolicyState,
  type AgentStatus,
  type BalancerStatus,
  type AppSpec,
  type Clock,
  type Order,
  type Plan,
  type PlanAction,
  type PlannerOptions,
  type Vitals,
} from '../core/index.js';
import type { EventRecord, InstancePatch, InstanceRecord, NewEvent, Store, StoredApp, StoredRole } from '../adapters/store/index.js';
import type { Provider } from '../adapters/providers/index.js';
import type { ControllerTransport, JoinMessage, TransportHandlers } from '../adapters/transport/index.js';
import { checkReport } from './reports.js';
import { LagMonitor } from './lag.js';
import { ApiError } from './errors.js';
import { ControllerMetrics } from './metrics.js';
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
  /** How often scaling policies are evaluated (a role with policies is reconciled at least this often). @default 500 */
  readonly evaluateMs?: number;
  readonly planner?: Partial<PlannerOptions>;
}

interface LiveInfo {
  lastSeenAt: number;
  vitals?: Vitals;
  balancer?: BalancerStatus;
}

export interface InstanceView extends InstanceRecord {
  readonly connected: boolean;
  readonly lastSeenAt: number | null;
  readonly vitals: Vitals | null;
  readonly balancer: BalancerStatus | null;
}

const token = (bytes: number) => randomBytes(bytes).toString('hex');

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
  readonly metrics = new ControllerMetrics();
  readonly metricStore = new MetricStore();
  private readonly policyStates = new Map<string, PolicyState>();
  private readonly lastDecision = new Map<string, Decision & { at: number }>();
  private readonly scrapeDue = new Map<string, number>();
  private readonly evaluateMs: number;
  /** Keys (`app/role`) the metric store holds samples for. */
  private readonly metricRoles = new Set<string>();
  private readonly suspiciousSeen = new Map<string, number>();
  private readonly lag: LagMonitor;

  constructor(private readonly opts: ControllerOptions) {
    this.store = opts.store;
    this.provider = opts.provider;
    this.clock = opts.clock;
    this.log = opts.logger;
    this.heartbeatMs = opts.heartbeatMs ?? 2000;
    this.plannerOptions = { ...DEFAULT_PLANNER_OPTIONS, heartbeatTimeoutMs: this.heartbeatMs * 3, ...opts.planner };
    this.startedAt = this.clock.now();
    this.evaluateMs = opts.evaluateMs ?? 500;
    this.runner = new Runner((key) => this.timedReconcile(key), this.log);
    this.events.setMaxListeners(0);
    this.lag = new LagMonitor({
      now: () => this.clock.now(),
      onStall: (ms) => {
        this.metrics.stalls.inc();
        this.metrics.stalledSeconds.inc(ms / 1000);
        this.log.warn({ stalledMs: Math.round(ms) }, 'the controller was stalled; agents get a fresh heartbeat window');
      },
    });
    this.metrics.loopLagSource = () => this.lag.delaySeconds();
    this.provider.onExit((id, info) => {
      void this.onAgentExit(id, info.code, info.signal).catch((err: unknown) => this.log.error({ err, id }, 'handling agent exit failed'));
    });
  }

  /** Wires the transport and the URL agents use to reach this controller, then starts the loops. */
  async start(transport: ControllerTransport, controllerUrl: string): Promise<void> {
    this.transport = transport;
    this.controllerUrl = controllerUrl;
    this.lag.start();
    for (const app of await this.store.listApps()) this.runner.enqueue(app.name);
    this.timers.push(
      setInterval(() => void this.resendPending().catch((err: unknown) => this.log.warn({ err }, 'resend failed')), this.opts.resendMs ?? 3000),
      setInterval(() => void this.resync().catch((err: unknown) => this.log.warn({ err }, 'resync failed')), this.opts.resyncMs ?? 5000),
      setInterval(() => void this.scrapeRoleMetrics().catch((err: unknown) => this.log.warn({ err }, 'scrape failed')), 250),
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.lag.stop();
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

  /** Pins a role's count by hand (`count`), or hands it back to its policies (`auto`). */
  async scale(appName: string, role: string, what: { count: number } | { auto: true }): Promise<void> {
    const app = await this.store.getApp(appName);
    const r = app && Object.hasOwn(app.spec.roles, role) ? app.spec.roles[role] : undefined;
    if (!app || !r) throw new ApiError('not_found', app ? `app "${appName}" has no role "${role}"` : `no app "${appName}"`);
    if (app.deleting) throw new ApiError('app_deleting', `app "${appName}" is being deleted`);
    const before = (await this.store.listRoles(appName)).find((x) => x.role === role)?.desired ?? r.count;
    if ('auto' in what) {
      if (r.scale.length === 0) throw new ApiError('no_policy', `auto: role ${role} has no scale policies; set its count instead`);
      await this.store.setRoleCount(appName, role, before, false);
      await this.record({ app: appName, role, instance: null, kind: 'scale.auto', message: `${role}: handed back to its scaling policies (at ${before})` });
    } else {
      const count = what.count;
      if (count < r.min || count > r.max) {
        throw new ApiError('count_out_of_bounds', `count: ${count} is outside ${role}'s bounds [${r.min}, ${r.max}]`);
      }
      await this.store.setRoleCount(appName, role, count, true);
      const key = `${appName}/${role}`;
      this.policyStates.set(key, recordAction(this.policyStates.get(key), this.clock.now(), before, count));
      const paused = r.scale.length ? ` (policies paused until \`drover scale ${role} --auto\`)` : '';
      await this.record({ app: appName, role, instance: null, kind: 'scale.manual', message: `${role} ${before}→${count}: set by hand${paused}`, data: { from: before, to: count } });
    }
    this.runner.enqueue(appName);
  }

  /** The last autoscaling decision for a role, if its policies ran. */
  decisionFor(app: string, role: string): (Decision & { at: number }) | undefined {
    return this.lastDecision.get(`${app}/${role}`);
  }

  private forgetAppState(app: string): void {
    for (const m of [this.policyStates, this.lastDecision, this.scrapeDue, this.notes] as Map<string, unknown>[]) {
      for (const k of [...m.keys()]) if (k.startsWith(`${app}/`)) m.delete(k);
    }
    for (const r of [...this.metricRoles]) {
      if (!r.startsWith(`${app}/`)) continue;
      this.metricStore.forgetRole(r);
      this.metricRoles.delete(r);
    }
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
    return {
      ...i,
      connected: this.transport?.isConnected(i.id) ?? false,
      lastSeenAt: l?.lastSeenAt ?? null,
      vitals: l?.vitals ?? null,
      balancer: l?.balancer ?? null,
    };
  }

  /** The plan the reconciler would make now, without acting on it: used for status. */
  async preview(appName: string): Promise<Plan | undefined> {
    const app = await this.store.getApp(appName);
    if (!app) return undefined;
    return this.planFor(app, await this.snapshot(app));
  }

  // ---------------------------------------------------------------- reconcile

  /** What one reconcile pass reads: the roles' counts, and the instances (recently gone ones too, for the failure backoff). */
  private async snapshot(app: StoredApp): Promise<{ roles: StoredRole[]; instances: InstanceRecord[] }> {
    const roles = await this.store.listRoles(app.name);
    const instances = await this.store.listInstances({ app: app.name, goneSince: this.clock.now() - this.plannerOptions.failureWindowMs });
    return { roles, instances };
  }

  private planFor(app: StoredApp, { roles, instances }: { roles: readonly StoredRole[]; instances: readonly InstanceRecord[] }): Plan {
    const now = this.clock.now();
    return plan({
      app: { name: app.name, spec: app.spec, deleting: app.deleting },
      desired: Object.fromEntries(roles.map((r) => [r.role, r.desired])),
      instances: instances.map((i) => {
        const l = this.live.get(i.id);
        // Silence while the controller itself was stalled is not the agent's.
        return { ...i, lastSeenAt: l ? this.lag.seenAfterStalls(l.lastSeenAt) : null, busy: l?.vitals?.role?.cpu ?? 0, tenants: 0 };
      }),
      now,
      controllerStartedAt: this.lag.seenAfterStalls(this.startedAt),
      options: this.plannerOptions,
    });
  }

  private async timedReconcile(appName: string): Promise<{ requeueAfterMs?: number }> {
    const end = this.metrics.reconcileSeconds.startTimer();
    try {
      return await this.reconcile(appName);
    } catch (err) {
      this.metrics.reconcileErrors.inc();
      throw err;
    } finally {
      end();
    }
  }

  /**
   * Runs the scaling policies of every unpinned role with policies; a changed count is stored
   * (the plan then acts on it) and explained in an event.
   */
  private async autoscale(app: StoredApp, roles: StoredRole[], instances: readonly InstanceRecord[]): Promise<void> {
    const now = this.clock.now();
    for (const role of Object.values(app.spec.roles)) {
      if (role.scale.length === 0) continue;
      const row = roles.find((r) => r.role === role.name);
      if (!row || row.pinned) continue;
      const key = `${app.name}/${role.name}`;
      const live = instances.filter(
        (i) => i.role === role.name && i.destroyedAt === null && i.goal === 'run' && !isTerminal(i.state) && i.state !== 'unresponsive',
      );
      const state = this.policyStates.get(key) ?? (row.policyState as PolicyState | null) ?? undefined;
      const d = evaluate(role.scale, {
        role: role.name,
        now,
        current: row.desired,
        min: role.min,
        max: role.max,
        instances: live.map((i) => ({ id: i.id, servingSince: i.state === 'serving' ? (i.startedAt ?? i.stateSince) : null })),
        warmupMs: role.warmupMs,
        metrics: this.metricStore,
        metricsKey: key,
      }, state);
      this.policyStates.set(key, d.state);
      this.lastDecision.set(key, { ...d, at: now });
      if (!d.changed) continue;
      let reason = d.reason;
      if (d.desired < row.desired) {
        // Name the victims the plan will choose, so the event tells the whole decision.
        const hash = roleHash(role);
        const victims = rankVictims(
          live.map((i) => ({ ...i, lastSeenAt: null, busy: this.live.get(i.id)?.vitals?.role?.cpu ?? 0, tenants: 0 })),
          hash,
        ).slice(0, row.desired - d.desired);
        if (victims.length) reason += `; victim${victims.length > 1 ? 's' : ''} ${victims.map((v) => `${v.id} (${victimWhy(v, hash)})`).join(', ')}`;
      }
      await this.store.setRoleCount(app.name, role.name, d.desired, false);
      // The plan of this same pass acts on the new count.
      roles[roles.indexOf(row)] = { ...row, desired: d.desired };
      await this.store.setPolicyState(app.name, role.name, d.state);
      this.metrics.decisions.inc({ kind: d.desired > row.desired ? 'scale_out' : 'scale_in' });
      await this.record({ app: app.name, role: role.name, instance: null, kind: 'scale.policy', message: reason, data: { from: row.desired, to: d.desired, inputs: d.inputs } });
    }
  }

  private async reconcile(appName: string): Promise<{ requeueAfterMs?: number }> {
    if (this.stopped || !this.transport) return {};
    const app = await this.store.getApp(appName);
    if (!app) {
      this.runner.forget(appName);
      return {};
    }
    const scaled = !app.deleting && Object.values(app.spec.roles).some((r) => r.scale.length > 0);
    const snap = await this.snapshot(app);
    if (scaled) await this.autoscale(app, snap.roles, snap.instances);
    const p = this.planFor(app, snap);
    // Instances are made and destroyed in parallel (each can take seconds); orders go out in order.
    const slow = p.actions.filter((a) => a.kind === 'create' || a.kind === 'destroy');
    await Promise.all(slow.map((a) => this.execute(app, a)));
    for (const a of p.actions) if (a.kind !== 'create' && a.kind !== 'destroy') await this.execute(app, a);
    this.updateGauges(app, p);
    // A destroyed instance can unblock the next step (the next role to stop, a replacement):
    // look again at once rather than at the next resync.
    if (p.actions.some((a) => a.kind === 'destroy')) return { requeueAfterMs: 0 };
    const next = Math.min(p.requeueAfterMs ?? Infinity, scaled ? this.evaluateMs : Infinity);
    return Number.isFinite(next) ? { requeueAfterMs: next } : {};
  }

  private updateGauges(app: StoredApp, p: Plan): void {
    for (const [role, s] of Object.entries(p.roles)) {
      const labels = { app: app.name, role };
      this.metrics.desired.set(labels, s.desired);
      this.metrics.actual.set(labels, s.live);
      this.metrics.serving.set(labels, s.serving);
      this.metrics.degraded.set(labels, s.degraded ? 1 : 0);
    }
    for (const [pool, n] of Object.entries(p.spares)) this.metrics.spares.set({ app: app.name, pool }, n);
    this.metrics.connectedAgents.set(this.transport?.connected().length ?? 0);
  }

  /** Scrapes role-scope metrics (a queue's backlog, say) from their templated URLs when due. */
  private async scrapeRoleMetrics(): Promise<void> {
    if (this.stopped) return;
    const now = this.clock.now();
    for (const app of await this.store.listApps()) {
      if (app.deleting) continue;
      let serving: Record<string, ImportedMember[]> | undefined;
      for (const role of Object.values(app.spec.roles)) {
        for (const m of role.metrics) {
          if (m.scope !== 'role') continue;
          const key = `${app.name}/${role.name}/${m.name}`;
          if ((this.scrapeDue.get(key) ?? 0) > now) continue;
          this.scrapeDue.set(key, now + m.intervalMs);
          serving ??= await this.servingMembers(app.name);
          const { imports } = resolveImports(role, serving);
          const url = renderTemplate(m.url, { port: '', ip: '', instance: '', role: role.name, app: app.name, workdir: '', appDir: app.appDir }, imports);
          void this.scrapeOne(`${app.name}/${role.name}`, m, url);
        }
      }
    }
  }

  private async servingMembers(app: string): Promise<Record<string, ImportedMember[]>> {
    const out: Record<string, ImportedMember[]> = Object.create(null) as Record<string, ImportedMember[]>;
    for (const i of await this.store.listInstances({ app })) {
      if (i.role && i.goal === 'run' && i.state === 'serving' && i.exports) (out[i.role] ??= []).push({ instance: i.id, exports: i.exports });
    }
    return out;
  }

  private async scrapeOne(key: string, m: MetricSource, url: string): Promise<void> {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(m.timeoutMs) });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const text = await res.text();
      const value = m.format === 'json' ? pickJson(JSON.parse(text) as unknown, m.select) : pickPrometheus(parsePrometheusText(text), m.select);
      if (value === undefined) throw new Error(`no value at ${m.select}`);
      this.addSample(key, m.name, { t: this.clock.now(), value });
    } catch (err) {
      this.log.debug({ err, url, metric: m.name }, 'role metric scrape failed');
    }
  }

  private addSample(key: string, metric: string, sample: { t: number; value: number; instance?: string }): void {
    this.metricStore.add(key, metric, sample);
    this.metricRoles.add(key);
  }

  /** Stores an order and sends it if the agent is connected; the resend loop covers the rest. */
  private async order(instanceId: string, order: Order, patch: InstancePatch): Promise<void> {
    await this.store.transaction(async (tx) => {
      await tx.putOrder({ id: order.id, instanceId, kind: order.kind, payload: order, createdAt: this.clock.now() });
      await tx.updateInstance(instanceId, patch);
    });
    this.transport?.send(instanceId, { type: 'order', order });
  }

  private async execute(app: StoredApp, a: PlanAction): Promise<void> {
    const now = this.clock.now();
    this.metrics.decisions.inc({ kind: a.kind });
    switch (a.kind) {
      case 'create': {
        const id = `i-${token(4)}`;
        const rec: InstanceRecord = {
          id, app: app.name, role: a.role, pool: a.pool, state: 'provisioning', goal: 'run', epoch: 1, joinToken: randomBytes(32).toString('base64url'),
          ip: '', port: 0, workdir: '', providerRef: null, roleHash: a.roleHash, exports: null, importsSent: null,
          importsApplied: null, assignOrderId: null, stopOrderId: null, drainOrderId: null, restarts: 0, message: null, lastExit: null,
          createdAt: now, startedAt: null, stateSince: now, stopRequestedAt: null, drainRequestedAt: null, destroyedAt: null,
        };
        await this.store.insertInstance(rec);
        await this.record({ app: app.name, role: a.role ?? a.pool, instance: id, kind: a.role ? 'instance.create' : 'spare.create', message: a.reason });
        try {
          const made = await this.provider.createInstance({
            instanceId: id, epoch: rec.epoch, key: rec.joinToken, controllerUrl: this.controllerUrl ?? '', app: app.name, role: a.role,
          });
          await this.store.updateInstance(id, { ip: made.ip, port: made.port, workdir: made.workdir, providerRef: made.providerRef });
        } catch (err) {
          const msg = err instanceof Error ? err.message : String(err);
          await this.store.updateInstance(id, { state: 'failed', stateSince: now, message: `provider ${this.provider.name} could not create it: ${msg}` });
          await this.record({ app: app.name, role: a.role, instance: id, kind: 'instance.failed', message: `${id} (${a.role ?? 'spare'}) could not be created: ${msg}` });
        }
        return;
      }
      case 'assign': {
        const role = Object.hasOwn(app.spec.roles, a.role) ? app.spec.roles[a.role] : undefined;
        if (!role) return;
        const order: Order = {
          id: `o-${randomUUID()}`, kind: 'assign',
          assignment: { app: app.name, appDir: app.appDir, role, imports: a.imports, importsVersion: a.importsVersion },
        };
        const claim: InstancePatch = a.claim ? { role: a.role, pool: null, roleHash: a.roleHash } : {};
        await this.order(a.instanceId, order, { ...claim, assignOrderId: order.id, importsSent: a.importsVersion });
        await this.record({ app: app.name, role: a.role, instance: a.instanceId, kind: a.claim ? 'spare.claim' : 'instance.assign', message: a.reason });
        return;
      }
      case 'imports': {
        const order: Order = { id: `o-${randomUUID()}`, kind: 'imports', imports: a.imports, importsVersion: a.importsVersion };
        await this.order(a.instanceId, order, { importsSent: a.importsVersion });
        await this.record({ app: app.name, role: a.role, instance: a.instanceId, kind: 'instance.imports', message: a.reason, data: { version: a.importsVersion } });
        return;
      }
      case 'stop': {
        const inst = await this.store.getInstance(a.instanceId);
        if (!inst || inst.goal === 'stop') return;
        await this.record({ app: app.name, role: a.role, instance: a.instanceId, kind: 'instance.stop', message: a.reason });
        if (inst.state === 'provisioning' || inst.role === null || !inst.assignOrderId) {
          // Nothing runs there yet (or a spare): no role to stop gracefully.
          await this.store.updateInstance(a.instanceId, { goal: 'stop', stopRequestedAt: now });
          await this.destroy(app.name, inst, 'terminated', `${inst.id} had no role running; destroyed directly`);
          return;
        }
        const order: Order = { id: `o-${randomUUID()}`, kind: 'stop', reason: a.reason };
        await this.order(a.instanceId, order, { goal: 'stop', stopRequestedAt: now, stopOrderId: order.id, exports: null });
        return;
      }
      case 'drain': {
        await this.store.updateInstance(a.instanceId, { goal: 'drain', drainRequestedAt: now, drainOrderId: null, exports: null });
        await this.record({ app: app.name, role: a.role, instance: a.instanceId, kind: 'instance.drain', message: `${a.reason}; taking it out of rotation first` });
        return;
      }
      case 'drainOrder': {
        const order: Order = { id: `o-${randomUUID()}`, kind: 'drain', reason: a.reason, timeoutMs: a.timeoutMs };
        await this.order(a.instanceId, order, { drainOrderId: order.id });
        await this.record({ app: app.name, role: a.role, instance: a.instanceId, kind: 'instance.drain', message: a.reason });
        return;
      }
      case 'undrain': {
        const inst = await this.store.getInstance(a.instanceId);
        if (!inst || inst.goal !== 'drain') return;
        if (inst.drainOrderId !== null) {
          const order: Order = { id: `o-${randomUUID()}`, kind: 'undrain', reason: a.reason };
          await this.order(a.instanceId, order, { goal: 'run', drainRequestedAt: null, drainOrderId: null });
        } else {
          await this.store.updateInstance(a.instanceId, { goal: 'run', drainRequestedAt: null });
        }
        await this.record({ app: app.name, role: a.role, instance: a.instanceId, kind: 'instance.undrain', message: a.reason });
        return;
      }
      case 'unresponsive': {
        const inst = await this.store.getInstance(a.instanceId);
        if (!inst || inst.destroyedAt !== null || inst.state === 'unresponsive') return;
        // A new epoch fences the old agent: if it comes back, its hello is refused and it must
        // stop its role; until then its exports are gone from every importer.
        await this.store.updateInstance(a.instanceId, { state: 'unresponsive', stateSince: now, epoch: inst.epoch + 1, exports: null });
        this.transport?.fence(a.instanceId, a.reason);
        this.metrics.replacements.inc({ app: app.name, role: a.role ?? 'spare', reason: 'unresponsive' });
        await this.record({ app: app.name, role: a.role, instance: a.instanceId, kind: 'instance.unresponsive', message: a.reason });
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
        this.forgetAppState(app.name);
        return;
      }
      case 'note': {
        const key = `${app.name}/${a.role}/${a.topic}`;
        // Only the gist counts for de-duplication: the countdown in the sentence changes every pass.
        const gist = a.reason.replace(/\d+s$/, '');
        if (this.notes.get(key) === gist) return;
        this.notes.set(key, gist);
        await this.record({ app: app.name, role: a.role, instance: null, kind: a.topic === 'degraded' ? 'role.degraded' : 'role.backoff', message: a.reason });
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
    await this.record({ app, role: inst.role, instance: inst.id, kind: 'instance.destroy', message: reason });
    await this.provider.destroyInstance({ id: inst.id, providerRef: inst.providerRef });
    await this.store.updateInstance(inst.id, { destroyedAt: this.clock.now(), exports: null });
    if (inst.drainRequestedAt !== null && inst.goal === 'drain') this.metrics.drainSeconds.observe((this.clock.now() - inst.drainRequestedAt) / 1000);
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
    keyFor: async (id: string) => (await this.store.getInstance(id))?.joinToken,
    onJoin: async (id: string, epoch: number, _msg: JoinMessage) => {
      const inst = await this.store.getInstance(id);
      if (!inst) return { accept: false, reason: 'unknown instance' };
      if (inst.destroyedAt !== null || isTerminal(inst.state) || inst.state === 'unresponsive') {
        return { accept: false, reason: `instance ${inst.id} is ${inst.destroyedAt !== null ? 'destroyed' : inst.state}; it must not serve again` };
      }
      if (epoch !== inst.epoch) return { accept: false, reason: `stale epoch ${epoch} (current ${inst.epoch})` };
      return { accept: true };
    },
    onSuspicious: ({ instanceId, reason, remote }) => {
      this.metrics.suspicious.inc();
      this.log.warn({ instance: instanceId, remote }, `agent connection: ${reason}`);
      // One event per instance and reason a minute: a flood of bad frames must not flood the events.
      const key = `${instanceId ?? '-'}/${reason.replace(/\(.*\)$/, '')}`;
      const now = this.clock.now();
      if ((this.suspiciousSeen.get(key) ?? -Infinity) > now - 60_000) return;
      this.suspiciousSeen.set(key, now);
      if (this.suspiciousSeen.size > 1000) this.suspiciousSeen.clear();
      void this.store.getInstance(instanceId ?? '').then(async (inst) => {
        await this.record({
          app: inst?.app ?? null, role: inst?.role ?? null, instance: inst ? inst.id : null, kind: 'security.agent',
          message: `agent connection${instanceId ? ` for ${instanceId}` : ''}${remote ? ` from ${remote}` : ''}: ${reason}`,
        });
      }).catch((err: unknown) => this.log.warn({ err }, 'could not record a security event'));
    },
    onConnect: async (id: string) => {
      for (const o of await this.store.pendingOrders(id)) this.transport?.send(id, { type: 'order', order: o.payload as Order });
    },
    onStatus: async (id: string, status: AgentStatus, vitals: Vitals | undefined) => {
      const now = this.clock.now();
      const prev = this.live.get(id);
      const v = vitals ?? prev?.vitals;
      this.live.set(id, { lastSeenAt: now, ...(v ? { vitals: v } : {}), ...(status.balancer ? { balancer: status.balancer } : {}) });
      const inst = await this.store.getInstance(id);
      if (!inst || inst.destroyedAt !== null) {
        this.transport?.fence(id, 'instance no longer exists');
        return;
      }
      if (vitals && inst.role !== null && status.state === 'serving') {
        for (const { metric, sample } of samplesFromVitals(id, vitals)) this.addSample(`${inst.app}/${inst.role}`, metric, sample);
      }
      await this.applyStatus(inst, status, now);
    },
    onAck: async (id: string, orderId: string) => {
      // Only an order sent to this instance can be acknowledged by it.
      if (!(await this.store.pendingOrders(id)).some((o) => o.id === orderId)) {
        this.log.debug({ instance: id, orderId }, 'ignored an ack for an order this instance does not have pending');
        return;
      }
      await this.store.ackOrder(orderId, this.clock.now());
    },
    onLog: (id: string, lines: readonly string[]) => {
      void this.store.getInstance(id).then(async (inst) => {
        if (!inst || lines.length === 0) return;
        await this.record({
          app: inst.app, role: inst.role, instance: id, kind: 'instance.log',
          message: `${id}${inst.role ? ` (${inst.role ?? 'spare'})` : ''}: last output\n  | ${lines.slice(-20).join('\n  | ')}`,
          data: { lines: [...lines] },
        });
      }).catch((err: unknown) => this.log.warn({ err }, 'could not record agent log lines'));
    },
    onDisconnect: (id: string) => {
      this.log.debug({ instance: id }, 'agent disconnected');
    },
  };

  private async applyStatus(inst: InstanceRecord, s: AgentStatus, now: number): Promise<void> {
    // A controller-side verdict (unresponsive, failed) is not overturned by a late report.
    if (isTerminal(inst.state) || inst.state === 'unresponsive') return;
    const app = await this.store.getApp(inst.app);
    if (!app) return;
    const v = await checkReport(inst, s, app, () => this.servingMembers(inst.app));
    if (v.kind === 'impossible') {
      await this.fenceImpossible(inst, v.reason, now);
      return;
    }
    const patch: { -readonly [K in keyof InstancePatch]: InstancePatch[K] } = {};
    const exports = v.kind === 'ok' ? v.exports : inst.exports;
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
          message: `${inst.id} (${inst.role ?? 'spare'}) failed after ${s.restarts} restart(s), ${code}${why}${tail}`,
          data: { lastExit: exit ?? null, restarts: s.restarts },
        });
      } else {
        await this.record({
          app: inst.app, role: inst.role, instance: inst.id, kind: 'instance.state',
          message: `${inst.id} (${inst.role ?? 'spare'}): ${inst.state} → ${s.state}${why}`,
          data: { from: inst.state, to: s.state },
        });
      }
    }
    if (patch.state !== undefined || patch.exports !== undefined) this.runner.enqueue(inst.app);
  }

  /**
   * An instance reported what it could not have been doing: its agent is not carrying out our
   * orders (tampered with, or confused). It serves no more: exports gone, fenced (the agent stops
   * its role and exits), marked failed, and the planner replaces it.
   */
  private async fenceImpossible(inst: InstanceRecord, reason: string, now: number): Promise<void> {
    this.transport?.fence(inst.id, `impossible report: ${reason}`);
    await this.store.updateInstance(inst.id, { state: 'failed', stateSince: now, exports: null, message: `fenced: ${reason}` });
    this.metrics.suspicious.inc();
    await this.record({
      app: inst.app, role: inst.role, instance: inst.id, kind: 'security.report',
      message: `${inst.id} (${inst.role ?? 'spare'}) ${reason}; fenced and replaced`,
    });
    this.runner.enqueue(inst.app);
  }

  private async onAgentExit(id: string, code: number | null, signal: string | null): Promise<void> {
    if (this.stopped) return;
    const inst = await this.store.getInstance(id);
    if (!inst || inst.destroyedAt !== null) return;
    this.transport?.fence(id, 'agent exited');
    const now = this.clock.now();
    // Already fenced and being replaced: its exit is the fencing working, not a new failure.
    if (inst.state === 'unresponsive') return;
    if (inst.goal !== 'run' || isTerminal(inst.state)) {
      if (!isTerminal(inst.state)) await this.store.updateInstance(id, { state: 'terminated', stateSince: now, exports: null });
    } else {
      const how = signal ? `signal ${signal}` : `exit code ${code}`;
      await this.store.updateInstance(id, { state: 'failed', stateSince: now, exports: null, message: `agent process ended (${how})` });
      await this.record({ app: inst.app, role: inst.role, instance: id, kind: 'instance.failed', message: `${id} (${inst.role ?? 'spare'}): agent process ended (${how}); replacing it` });
    }
    this.runner.enqueue(inst.app);
  }

}
