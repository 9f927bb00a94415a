/**
 * The controller: wires its jobs together and answers the API. The jobs each have a file:
 * reconcile (reconciler.ts, with the pure decision step in core/decide.ts), execute actions
 * (executor.ts), apply agent reports (agents.ts, reports.ts), scrape role metrics (scraper.ts);
 * what they share is in context.ts.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import {
  DEFAULT_PLANNER_OPTIONS,
  type AppSpec,
  type Clock,
  type Decision,
  type Order,
  type Plan,
  type PlannerOptions,
  type Vitals,
  type BalancerStatus,
  consolidationPlan,
  holdsSeat,
  isHostName,
  type ConsolidationPlan,
  isTenantName,
  own,
  TENANT_NAME_RULE,
  tenantHost,
  type BundleRef,
} from '../core/index.js';
import { TenantConflictError, type EventRecord, type InstanceRecord, type NotificationRecord, type Store, type StoredApp, type TenantFilter, type TenantRecord } from '../adapters/store/index.js';
import type { Provider } from '../adapters/providers/index.js';
import { checkEmailAddress, checkWebhookUrl, NotifyInputError } from '../adapters/notify/index.js';
import type { ControllerTransport, TransportHandlers } from '../adapters/transport/index.js';
import { AgentReports } from './agents.js';
import type { ControllerContext, EventInput, LiveInfo } from './context.js';
import { ApiError } from './errors.js';
import { ActionExecutor } from './executor.js';
import { LagMonitor } from './lag.js';
import { ControllerMetrics } from './metrics.js';
import { Reconciler } from './reconciler.js';
import { Runner } from './runner.js';
import { RoleMetrics } from './scraper.js';
import { Intake, IntakeFullError } from './intake.js';
import { TenantJob, type TenantNotice } from './tenants.js';
import { LEADER_LEASE, parseHolder, type HolderInfo } from './leader.js';
import { BundleError, type BundleInfo, type BundleStore } from './bundle.js';

/** How long a sign-up with no free seat waits for others to share its reconcile pass (a burst is placed in batches). */
const SIGNUP_BATCH_MS = 300;
/** Sign-ups handled at once, and how many may wait beyond those before one is refused (503 busy). */
const SIGNUP_CONCURRENCY = 4;
const SIGNUP_QUEUE = 20_000;

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
  /**
   * App bundles (docs/fleet.md): instances on joined hosts get the app folder as a bundle; with
   * `local`, this machine's instances too. Absent: `${appDir}` is the folder as applied, everywhere.
   */
  readonly bundles?: { readonly store: BundleStore; readonly local: boolean };
  /** Why no host fits a role's placement now (the node registry's last `role.unplaceable`), for status. */
  readonly placementNote?: (app: string, role: string) => string | undefined;
  /**
   * The provider kinds this controller runs (`local` and the `--provider` clouds): an app whose
   * `provider:` asks for another is refused at apply. @default ['local']
   */
  readonly providerKinds?: readonly string[];
}

export interface InstanceView extends InstanceRecord {
  readonly connected: boolean;
  readonly lastSeenAt: number | null;
  readonly vitals: Vitals | null;
  readonly balancer: BalancerStatus | null;
  /**
   * The instance's agent: its process id and the host it runs on, as its provider recorded them
   * (`kill -9 <pid>` on that host ends the agent; the controller replaces it). pid null: not known.
   */
  readonly agent: { readonly pid: number | null; readonly host: string };
}

/** Who leads (docs/api.md, `GET /v1/controller`). */
export interface LeadershipView {
  /** `embedded`: the embedded store has one controller, which always leads; `lease`: controllers on a shared store elect one. */
  readonly mode: 'embedded' | 'lease';
  readonly role: 'leader' | 'standby' | 'stepped-down';
  readonly self: HolderInfo | null;
  /** The leading controller (this one or another); null while none holds a live lease. */
  readonly leader: HolderInfo | null;
  readonly epoch: number | null;
  /** When the leader took the lease (ISO). */
  readonly since: string | null;
  readonly leaseExpiresInMs: number | null;
}

export class Controller {
  readonly events = new EventEmitter();
  readonly startedAt: number;
  readonly heartbeatMs: number;
  readonly metrics = new ControllerMetrics();
  private readonly store: Store;
  private readonly provider: Provider;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly live = new Map<string, LiveInfo>();
  private readonly runner: Runner;
  private readonly lag: LagMonitor;
  private readonly roleMetrics: RoleMetrics;
  private readonly executor: ActionExecutor;
  private readonly reports: AgentReports;
  private readonly reconciler: Reconciler;
  private readonly tenantJob: TenantJob;
  private readonly planner: PlannerOptions;
  /** Listeners of tenant notices (the notifier, when one is configured). */
  /** Sign-ups in the store a few at a time, the rest in line: a burst never starves the control loop's queries. */
  private readonly signUps = new Intake(SIGNUP_CONCURRENCY, SIGNUP_QUEUE);
  /** Every sign-up waiting for its tenant (`--wait`, a 201) listens here: no listener limit. */
  readonly tenantNotices = new EventEmitter().setMaxListeners(0);
  private transport?: ControllerTransport;
  /**
   * The leader lease this controller acts under; undefined on a standby (see leader.ts). A
   * controller made on its own (tests, tools) is the only one, and leads from the start.
   */
  private leading: { epoch: number; since: number } | undefined = { epoch: 0, since: Date.now() };
  private leadershipMode: { mode: 'embedded' | 'lease'; self: HolderInfo | undefined; stepped: boolean } = { mode: 'embedded', self: undefined, stepped: false };
  private controllerUrl = '';
  private timers: NodeJS.Timeout[] = [];
  private stopped = false;
  /** What agents' connections call: joins, statuses, acks, logs. */
  readonly handlers: TransportHandlers;

  constructor(private readonly opts: ControllerOptions) {
    this.store = opts.store;
    this.provider = opts.provider;
    this.clock = opts.clock;
    this.log = opts.logger;
    this.heartbeatMs = opts.heartbeatMs ?? 2000;
    // How long an instance may take to say hello is the provider's to say (a process: seconds; a VM: minutes).
    const planner: PlannerOptions = {
      ...DEFAULT_PLANNER_OPTIONS, heartbeatTimeoutMs: this.heartbeatMs * 3, provisionTimeoutMs: opts.provider.provisionTimeoutMs,
      provisionTimeoutsMs: Object.fromEntries((opts.providerKinds ?? []).map((k) => [k, opts.provider.provisionTimeoutFor?.(k) ?? opts.provider.provisionTimeoutMs])),
      billing: opts.provider.billingOverrides?.() ?? {},
      ...opts.planner,
    };
    this.planner = planner;
    this.startedAt = this.clock.now();
    this.metrics.leader.set(1);
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
    const ctx: ControllerContext = {
      store: this.store,
      provider: this.provider,
      clock: this.clock,
      log: this.log,
      metrics: this.metrics,
      live: this.live,
      transport: () => this.transport,
      controllerUrl: () => this.controllerUrl,
      record: (ev) => this.record(ev),
      enqueue: (app) => this.runner.enqueue(app),
      bundleFor: (app, instanceId) => this.bundleFor(app, instanceId),
      leaderEpoch: () => this.leading?.epoch ?? 0,
    };
    this.roleMetrics = new RoleMetrics(ctx);
    this.executor = new ActionExecutor(ctx, { forgetApp: (app) => this.forgetAppState(app) });
    this.reports = new AgentReports(ctx, this.roleMetrics);
    this.tenantJob = new TenantJob(ctx, this.executor, (n) => this.onTenantNotice(n));
    this.reconciler = new Reconciler(ctx, this.executor, this.roleMetrics, this.lag, { planner, evaluateMs: opts.evaluateMs ?? 500, startedAt: this.startedAt }, this.tenantJob);
    // A controller that does not lead (a standby) does not know anyone: agents are told so
    // without proof, keep their roles, and try again (with the amqp transport they are heard by
    // whichever controller leads). Every sealed message carries the leader epoch.
    const reports = this.reports.handlers;
    this.handlers = {
      ...reports,
      keyFor: async (id) => (this.leading ? reports.keyFor(id) : undefined),
      leaderEpoch: () => this.leading?.epoch ?? 0,
    };
    this.provider.onExit((id, info) => {
      void this.reports.onAgentExit(id, info.code, info.signal).catch((err: unknown) => this.log.error({ err, id }, 'handling agent exit failed'));
    });
  }

  /** The provider's name (`local`: instance folders are on this machine). */
  get providerName(): string {
    return this.provider.name;
  }

  /** Role metric samples (what the policies read), for status and tests. */
  get metricStore() {
    return this.roleMetrics.store;
  }

  /** How this controller is chosen to act: the only one (embedded store), or by lease on a shared store. */
  setLeadershipMode(mode: 'embedded' | 'lease', self: HolderInfo): void {
    this.leadershipMode = { mode, self, stepped: false };
    // Elected controllers stand by until they take the lease.
    if (mode === 'lease') this.leading = undefined;
    this.metrics.leader.set(this.leading ? 1 : 0);
  }

  /** This controller now acts under the lease's `epoch` (undefined: it stepped down). */
  setLeading(lease: { epoch: number; since: number } | undefined): void {
    if (!lease && this.leading) this.leadershipMode = { ...this.leadershipMode, stepped: true };
    this.leading = lease;
    this.metrics.leader.set(lease ? 1 : 0);
    this.metrics.leaderEpoch.set(lease?.epoch ?? 0);
    this.metrics.leaderTransitions.inc({ to: lease ? 'leader' : 'stepped-down' });
  }

  get isLeader(): boolean {
    return this.leading !== undefined;
  }

  /** Who leads, for `drover status` and `GET /v1/controller`: this controller, or which other one. */
  async leadership(): Promise<LeadershipView> {
    const { mode, self, stepped } = this.leadershipMode;
    const role = this.leading ? 'leader' : stepped ? 'stepped-down' : 'standby';
    const lease = await this.store.getLease(LEADER_LEASE);
    const live = lease && lease.expiresAt > lease.now ? lease : undefined;
    const holder = live ? parseHolder(live.holder) : undefined;
    const leader = mode === 'embedded' ? (self ?? null) : holder && 'url' in holder ? holder : null;
    return {
      mode, role, self: self ?? null, leader,
      epoch: mode === 'embedded' ? (this.leading?.epoch ?? null) : (live?.epoch ?? null),
      since: mode === 'embedded' ? (this.leading ? new Date(this.leading.since).toISOString() : null) : live ? new Date(live.acquiredAt).toISOString() : null,
      leaseExpiresInMs: mode === 'lease' && live ? live.expiresAt - live.now : null,
    };
  }

  /** Wires the transport and the URL agents use to reach this controller, then starts the loops. */
  async start(transport: ControllerTransport, controllerUrl: string): Promise<void> {
    this.transport = transport;
    this.controllerUrl = controllerUrl;
    this.lag.start();
    await this.restoreRetries();
    // Before any pass: machines made or destroyed across a crash are adopted or reaped.
    await this.executor.provisioning.inventory();
    for (const app of await this.store.listApps()) this.runner.enqueue(app.name);
    const every = (ms: number, what: string, fn: () => Promise<void>) =>
      setInterval(() => void fn().catch((err: unknown) => this.log.warn({ err }, `${what} failed`)), ms);
    this.timers.push(
      every(this.opts.resendMs ?? 3000, 'resend', () => this.resendPending()),
      every(this.opts.resyncMs ?? 5000, 'resync', () => this.resync()),
      every(250, 'scrape', async () => {
        if (!this.stopped) await this.roleMetrics.scrapeDue();
      }),
    );
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.reports.stop();
    this.lag.stop();
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    this.runner.stop();
    this.executor.provisioning.stop();
    await this.provider.close();
  }

  /** Asks for a reconcile pass of the app soon (a host joined its pool). */
  enqueue(app: string): void {
    this.runner.enqueue(app);
  }

  // ---------------------------------------------------------------- events

  async record(ev: EventInput): Promise<EventRecord> {
    const rec = await this.store.appendEvent({ ...ev, data: ev.data ?? null, at: this.clock.now() });
    this.log.info({ event: rec.kind, app: rec.app, role: rec.role, instance: rec.instance }, rec.message);
    this.events.emit('event', rec);
    return rec;
  }

  // ---------------------------------------------------------------- operations (API)

  /** Applies a compiled spec: stores it and lets the reconciler converge. */
  async apply(spec: AppSpec, appDir: string): Promise<{ app: StoredApp; changed: boolean; bundle: BundleInfo | null }> {
    const prev = await this.store.getApp(spec.app);
    if (prev?.deleting) throw new ApiError('app_deleting', `app "${spec.app}" is being deleted; apply again once it is gone`);
    this.checkProviders(spec);
    const bundle = await this.checkBundle(spec.app, appDir, Object.values(spec.roles).some((r) => r.provider !== undefined && r.provider.kind !== 'local'));
    // The bundle's name goes into every role: a changed app folder rolls the app as a changed file does.
    const res = await this.store.putApp({ name: spec.app, spec: bundle ? withBundle(spec, bundle.sha256) : spec, appDir, at: this.clock.now() });
    if (bundle) this.opts.bundles?.store.adopt(spec.app, res.app.generation);
    if (res.changed) {
      await this.record({
        app: spec.app, role: null, instance: null, kind: 'app.apply',
        message: prev ? `app ${spec.app} updated (generation ${res.app.generation})` : `app ${spec.app} created with roles ${Object.keys(spec.roles).join(', ')}`,
        data: { generation: res.app.generation },
      });
    }
    this.runner.enqueue(spec.app);
    return { ...res, bundle };
  }

  /** A role (or the app) asking for a provider this controller does not run is refused whole, the field named. */
  private checkProviders(spec: AppSpec): void {
    const kinds = new Set(['local', ...(this.opts.providerKinds ?? [])]);
    const issues: { path: string; message: string }[] = [];
    const why = (kind: string) => `the controller runs no ${kind} provider (start it with --provider ${kind})`;
    if (spec.provider && !kinds.has(spec.provider.kind)) issues.push({ path: 'provider.kind', message: why(spec.provider.kind) });
    for (const [name, role] of Object.entries(spec.roles)) {
      // A role without its own block has the app's, refused above already.
      if (role.provider && !kinds.has(role.provider.kind) && role.provider !== spec.provider && JSON.stringify(role.provider) !== JSON.stringify(spec.provider)) {
        issues.push({ path: `roles.${name}.provider.kind`, message: why(role.provider.kind) });
      }
      // Placement picks among joined hosts and this machine; a cloud role's machines are made for it.
      if (role.placement && role.provider && role.provider.kind !== 'local') {
        issues.push({ path: `roles.${name}.placement`, message: `placement chooses among joined hosts; role ${name} runs on ${role.provider.kind} machines made for it: leave placement out` });
      }
    }
    if (issues.length > 0) throw new ApiError('invalid_spec', issues.map((i) => `${i.path}: ${i.message}`).join('\n'), issues);
  }

  /**
   * At apply, the app folder is packed when the bundle will be used (the app's pool has joined
   * hosts, or bundles are on for this machine too): a folder that cannot be packed is refused
   * with the apply, nothing stored. Otherwise it is packed when an instance first needs it.
   */
  private async checkBundle(app: string, appDir: string, cloud = false): Promise<BundleInfo | null> {
    const b = this.opts.bundles;
    if (!b) return null;
    // A cloud machine is another host too: it gets the bundle.
    if (!b.local && !cloud && !(await this.store.listNodes({ app })).some((n) => n.state === 'ready')) return null;
    try {
      return await b.store.packNow(app, appDir);
    } catch (err) {
      if (err instanceof BundleError) throw new ApiError('bundle_refused', `appDir: ${err.message}`, [{ path: 'appDir', message: err.message }]);
      throw err;
    }
  }

  /** What an assignment says of the app bundle: one for an instance on a joined host (any, with `local`), or why there is none. */
  private async bundleFor(app: StoredApp, instanceId: string): Promise<{ bundle?: BundleRef; bundleError?: string }> {
    const b = this.opts.bundles;
    if (!b) return {};
    // On another machine (a joined node, an ssh host: its reference names the host), the folder is not there.
    const ref = (await this.store.getInstance(instanceId))?.providerRef;
    if (!b.local && typeof ref?.node !== 'string' && typeof ref?.host !== 'string') return {};
    try {
      const info = await b.store.forApp(app.name, app.appDir, app.generation);
      return { bundle: { sha256: info.sha256, size: info.size, unpackedBytes: info.unpackedBytes } };
    } catch (err) {
      if (!(err instanceof BundleError)) throw err;
      this.log.warn({ app: app.name, err: err.message }, 'the app folder could not be bundled');
      return { bundleError: err.message };
    }
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
      this.reconciler.noteManualScale(appName, role, before, count);
      const paused = r.scale.length ? ` (policies paused until \`drover scale ${role} --auto\`)` : '';
      await this.record({ app: appName, role, instance: null, kind: 'scale.manual', message: `${role} ${before}→${count}: set by hand${paused}`, data: { from: before, to: count } });
    }
    this.runner.enqueue(appName);
  }

  /**
   * `drover retry`: the operator fixed what made a role fail. The role's recent failures no longer
   * count toward its backoff or its degraded mark, so replacements start at the next pass rather
   * than when the failure window has passed. `who` says who asked (recorded in the event).
   */
  async retryRole(appName: string, role: string, who: string): Promise<{ forgotten: number; wasDegraded: boolean; wasBackingOff: boolean }> {
    const app = await this.store.getApp(appName);
    if (!app || !Object.hasOwn(app.spec.roles, role)) throw new ApiError('not_found', app ? `app "${appName}" has no role "${role}"` : `no app "${appName}"`);
    if (app.deleting) throw new ApiError('app_deleting', `app "${appName}" is being deleted`);
    const before = await this.reconciler.preview(appName);
    const summary = before ? own(before.roles, role) : undefined;
    const wasBackingOff = before?.actions.some((a) => a.kind === 'note' && a.role === role && a.topic === 'backoff') ?? false;
    const now = this.clock.now();
    const window = this.planner.failureWindowMs;
    const forgotten = (await this.store.listInstances({ app: appName, role, goneSince: now - window })).filter(
      (i) => (i.state === 'failed' || i.state === 'unresponsive') && now - i.stateSince < window,
    ).length;
    this.reconciler.clearFailures(appName, role, now);
    this.executor.forgetNotes(appName, role);
    const wasDegraded = summary?.degraded ?? false;
    const state = wasDegraded ? 'degraded' : wasBackingOff ? 'backing off' : 'neither degraded nor backing off';
    await this.record({
      app: appName, role, instance: null, kind: 'role.retry',
      message: `${role}: retry asked by ${who} (it was ${state}); ${forgotten} recent failure(s) forgotten, replacements start now`,
      data: { at: now, by: who, forgotten, wasDegraded, wasBackingOff },
    });
    this.runner.enqueue(appName);
    return { forgotten, wasDegraded, wasBackingOff };
  }

  /** Retries asked within the failure window, from the newest events: a restarted controller keeps them. */
  private async restoreRetries(): Promise<void> {
    const since = this.clock.now() - this.planner.failureWindowMs;
    for (const e of await this.store.listEvents({ limit: 1000 })) {
      const at = typeof e.data?.at === 'number' ? e.data.at : e.at;
      if (e.kind === 'role.retry' && e.app !== null && e.role !== null && at >= since) this.reconciler.clearFailures(e.app, e.role, at);
    }
  }

  /**
   * An operator's drain of one instance (`POST /v1/instances/{id}/drain`): its role's count goes
   * down by one, pinned as `scale` pins it, and this instance (not the planner's choice of
   * victim) leaves through the normal drain path: out of its importers and the balancer, in-flight
   * work finished, stopped, destroyed, with no replacement. Both writes are conditional and made
   * together, so a reconcile pass that read the old count or instance is dropped and planned again.
   */
  async drainInstance(id: string): Promise<InstanceRecord> {
    for (let attempt = 0; ; attempt++) {
      const inst = await this.store.getInstance(id);
      if (!inst || inst.destroyedAt !== null) throw new ApiError('not_found', `no instance "${id}"`);
      const app = await this.store.getApp(inst.app);
      const r = app && inst.role !== null && Object.hasOwn(app.spec.roles, inst.role) ? app.spec.roles[inst.role] : undefined;
      if (!app || !r || inst.role === null) throw new ApiError('not_drainable', `${id} is ${inst.role === null ? 'a warm spare' : 'of a removed role'}; only an instance of a role is drained`);
      if (app.deleting) throw new ApiError('app_deleting', `app "${app.name}" is being deleted`);
      if (inst.goal !== 'run') throw new ApiError('not_drainable', `${id} is already ${inst.goal === 'drain' ? 'draining' : 'stopping'}`);
      if (inst.state !== 'serving') throw new ApiError('not_drainable', `${id} is ${inst.state}, not serving; scale ${inst.role} down instead`);
      const row = (await this.store.listRoles(app.name)).find((x) => x.role === r.name);
      const before = row?.desired ?? r.count;
      const to = before - 1;
      if (to < r.min) throw new ApiError('count_out_of_bounds', `count: draining ${id} would leave ${r.name} at ${to}, below its min ${r.min}`);
      const now = this.clock.now();
      const done = await this.store
        .transaction(async (tx) => {
          if (!(await tx.setRoleCount(app.name, r.name, to, true, row ? { ifVersion: row.version } : {}))) throw new Conflict();
          if (!(await tx.updateInstance(id, { goal: 'drain', drainRequestedAt: now, drainOrderId: null, exports: null }, { ifVersion: inst.version }))) throw new Conflict();
          return true;
        })
        .catch((err: unknown) => {
          if (err instanceof Conflict && attempt < 5) return false;
          throw err;
        });
      if (!done) continue;
      this.reconciler.noteManualScale(app.name, r.name, before, to);
      const paused = r.scale.length ? ` (policies paused until \`drover scale ${r.name} --auto\`)` : '';
      await this.record({ app: app.name, role: r.name, instance: null, kind: 'scale.manual', message: `${r.name} ${before}→${to}: set by hand, draining ${id}${paused}`, data: { from: before, to, drain: id } });
      await this.record({ app: app.name, role: r.name, instance: id, kind: 'instance.drain', message: `${id} (${r.name}): drained by hand; taking it out of rotation first, no replacement` });
      this.runner.enqueue(app.name);
      return (await this.store.getInstance(id)) ?? inst;
    }
  }

  // ---------------------------------------------------------------- tenants

  private onTenantNotice(n: TenantNotice): void {
    this.tenantNotices.emit('notice', n);
  }

  /**
   * Signs a tenant up (`pending`); the reconciler places it. Returns the tenant, whether this
   * call made it (an Idempotency-Key seen before returns the first one), and whether a seat was
   * free when it came (then `add` follows at once; otherwise capacity is being made).
   */
  async addTenant(
    appName: string, roleName: string, t: { name: string; host?: string; callbackUrl?: string; email?: string }, idempotencyKey?: string,
  ): Promise<{ tenant: TenantRecord; created: boolean; room: boolean }> {
    try {
      return await this.signUps.run(() => this.signUp(appName, roleName, t, idempotencyKey));
    } catch (err) {
      if (err instanceof IntakeFullError) throw new ApiError('busy', `too many sign-ups at once (${err.message}); try again shortly`);
      throw err;
    }
  }

  private async signUp(
    appName: string, roleName: string, t: { name: string; host?: string; callbackUrl?: string; email?: string }, idempotencyKey?: string,
  ): Promise<{ tenant: TenantRecord; created: boolean; room: boolean }> {
    const app = await this.store.getApp(appName);
    const role = app && Object.hasOwn(app.spec.roles, roleName) ? app.spec.roles[roleName] : undefined;
    if (!app || !role) throw new ApiError('not_found', app ? `app "${appName}" has no role "${roleName}"` : `no app "${appName}"`);
    if (app.deleting) throw new ApiError('app_deleting', `app "${appName}" is being deleted`);
    const spec = role.tenants;
    if (!spec) throw new ApiError('no_tenants', `role ${roleName}: hosts no tenants (add tenants: { capacity, add, remove } to the role)`);
    if (!isTenantName(t.name)) throw new ApiError('invalid_request', `name: ${TENANT_NAME_RULE}`, [{ path: 'name', message: TENANT_NAME_RULE }]);
    let host: string | null = null;
    if (spec.host !== undefined) {
      host = tenantHost(spec.host, t.name) ?? null;
      if (host === null) throw new ApiError('invalid_request', `name: with the role's host template ${JSON.stringify(spec.host)} it makes no valid host name`, [{ path: 'name', message: 'makes no valid host name' }]);
      if (t.host !== undefined && t.host !== host) throw new ApiError('invalid_request', `host: the role names its tenants' hosts (${host}); leave host out`, [{ path: 'host', message: `must be ${host} or left out` }]);
    } else if (t.host !== undefined) {
      if (!isHostName(t.host)) throw new ApiError('invalid_request', 'host: not a host name (lowercase DNS labels, at least two)', [{ path: 'host', message: 'not a host name' }]);
      host = t.host;
    }
    try {
      if (t.callbackUrl !== undefined) checkWebhookUrl(t.callbackUrl, 'callbackUrl');
      if (t.email !== undefined) checkEmailAddress(t.email, 'email');
    } catch (err) {
      if (err instanceof NotifyInputError) throw new ApiError('invalid_request', err.message, [{ path: err.field, message: err.message }]);
      throw err;
    }
    const now = this.clock.now();
    let res: { tenant: TenantRecord; created: boolean };
    try {
      res = await this.store.createTenant(
        { id: `t-${randomUUID()}`, app: appName, role: roleName, name: t.name, host, callbackUrl: t.callbackUrl ?? null, email: t.email ?? null, createdAt: now },
        idempotencyKey,
      );
    } catch (err) {
      if (err instanceof TenantConflictError) throw new ApiError('tenant_exists', `${err.field}: ${err.message}`, [{ path: err.field, message: err.message }]);
      throw err;
    }
    const free = await this.freeSeats(appName, roleName, spec.capacity, res.tenant.id);
    if (res.created) {
      await this.record({ app: appName, role: roleName, instance: null, kind: 'tenant.placing', message: `tenant ${t.name} signed up for ${roleName}${free > 0 ? '' : ' (no free seat: capacity will be made)'}`, data: { tenant: res.tenant.id } });
    }
    // With a free seat the pass runs now (the caller waits for `add`); without, the tenant waits
    // for capacity anyway, and a short delay lets a burst of sign-ups share one pass.
    this.runner.enqueue(appName, free > 0 ? 0 : SIGNUP_BATCH_MS);
    return { ...res, room: free > 0 };
  }

  /**
   * Free seats on serving instances of a role for the sign-up `self`: what is left once the
   * tenants that came before it and still wait are seated.
   */
  private async freeSeats(app: string, role: string, capacity: number, self: string): Promise<number> {
    const serving = (await this.store.listInstances({ app, role })).filter((i) => i.state === 'serving' && i.goal === 'run');
    if (serving.length === 0) return 0;
    const used = [...(await this.store.seatsUsed(serving.map((i) => i.id))).values()].reduce((a, b) => a + b, 0);
    // No seat free even before counting the waiting (the usual case in a burst): no need to
    // read the queue, which would make a burst of n sign-ups cost n² rows.
    if (serving.length * capacity - used <= 0) return 0;
    const pending = await this.store.listTenants({ app, role, state: 'pending' });
    const me = pending.find((t) => t.id === self);
    const ahead = me ? pending.filter((t) => t.seq < me.seq).length : pending.length;
    return serving.length * capacity - used - ahead;
  }

  async getTenant(id: string): Promise<TenantRecord | undefined> {
    return this.store.getTenant(id);
  }

  async listTenants(filter: TenantFilter): Promise<TenantRecord[]> {
    return this.store.listTenants(filter);
  }

  async tenantNotifications(id: string): Promise<NotificationRecord[]> {
    return this.store.listNotifications(id);
  }

  /** Waits until the tenant leaves `placing`/`pending` (or the time is up); returns it as it is then. */
  async waitTenant(id: string, timeoutMs: number): Promise<TenantRecord | undefined> {
    const deadline = Date.now() + timeoutMs;
    // Woken by the tenant's own notice (ready, failed); a slow poll besides, for whatever else ends the wait.
    let wake: (() => void) | undefined;
    let noticed = false;
    const onNotice = (n: TenantNotice) => {
      if (n.tenant.id !== id) return;
      noticed = true;
      wake?.();
    };
    this.tenantNotices.on('notice', onNotice);
    try {
      for (;;) {
        noticed = false;
        const t = await this.store.getTenant(id);
        if (!t || (t.state !== 'pending' && t.state !== 'placing') || Date.now() >= deadline) return t;
        if (noticed) continue;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.min(1000, Math.max(0, deadline - Date.now())));
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wake = undefined;
      }
    } finally {
      this.tenantNotices.off('notice', onNotice);
    }
  }

  /**
   * Consolidation, as a dry run: which serving instances of the role could be emptied by moving
   * ready tenants onto fuller ones (never over capacity, pinned tenants stay), and what it saves.
   */
  async tenantPlan(appName: string, roleName: string, maxMoves: number): Promise<ConsolidationPlan> {
    const app = await this.store.getApp(appName);
    const role = app && Object.hasOwn(app.spec.roles, roleName) ? app.spec.roles[roleName] : undefined;
    if (!app || !role) throw new ApiError('not_found', app ? `app "${appName}" has no role "${roleName}"` : `no app "${appName}"`);
    if (!role.tenants) throw new ApiError('no_tenants', `role ${roleName}: hosts no tenants`);
    const instances = (await this.store.listInstances({ app: appName, role: roleName })).filter((i) => i.destroyedAt === null);
    const tenants = (await this.store.listTenants({ app: appName, role: roleName })).filter((t) => holdsSeat(t.state) && t.instanceId);
    const seats = await this.store.seatsUsed(instances.map((i) => i.id));
    return consolidationPlan(
      instances.map((i) => ({ id: i.id, role: i.role, state: i.state, goal: i.goal, tenants: seats.get(i.id) ?? 0 })),
      tenants.map((t) => ({ id: t.id, instanceId: t.instanceId!, state: t.state })),
      role.tenants.capacity,
      new Set(tenants.filter((t) => t.pinned).map((t) => t.id)),
      maxMoves,
    );
  }

  /** Applies {@link tenantPlan}: one tenant at a time, each added on its new instance and routed there before it leaves the old. */
  async rebalance(appName: string, roleName: string, maxMoves: number): Promise<ConsolidationPlan> {
    const p = await this.tenantPlan(appName, roleName, maxMoves);
    if (p.moves.length > 0) {
      this.tenantJob.queueMoves(appName, roleName, p.moves);
      await this.record({ app: appName, role: roleName, instance: null, kind: 'tenant.placing', message: `rebalance of ${roleName}: ${p.summary}`, data: { moves: p.moves.length, saves: p.saves } });
    }
    return p;
  }

  /** Pins a tenant (consolidation never moves it) or unpins it. */
  async pinTenant(id: string, pinned: boolean): Promise<TenantRecord> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const t = await this.store.getTenant(id);
      if (!t || t.state === 'removed') throw new ApiError('not_found', `no tenant ${id}`);
      if (t.pinned === pinned) return t;
      if (await this.store.updateTenant(id, { pinned, updatedAt: this.clock.now() }, { ifVersion: t.version })) return { ...t, pinned };
    }
    throw new ApiError('internal', `tenant ${id} kept changing while it was pinned`);
  }

  /** Starts a tenant's removal: unrouted, then `remove` on its instance, then its seat is free. */
  async removeTenant(id: string): Promise<TenantRecord> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const t = await this.store.getTenant(id);
      if (!t || t.state === 'removed') throw new ApiError('not_found', `no tenant ${id}`);
      if (t.state === 'removing') return t;
      const next = t.instanceId && holdsSeat(t.state) ? 'removing' : 'removed';
      if (await this.store.updateTenant(id, { state: next, updatedAt: this.clock.now() }, { ifVersion: t.version })) {
        await this.record({ app: t.app, role: t.role, instance: t.instanceId, kind: next === 'removed' ? 'tenant.removed' : 'tenant.placing', message: next === 'removed' ? `tenant ${t.name} removed (it held no seat)` : `tenant ${t.name}: removal asked; unrouting it, then remove runs on ${t.instanceId}`, data: { tenant: id } });
        this.runner.enqueue(t.app);
        return { ...t, state: next };
      }
    }
    throw new ApiError('internal', `tenant ${id} kept changing while its removal was asked`);
  }

  /** Why no host fits the role's placement, while that holds (docs/fleet.md, Placement). */
  unplaceable(app: string, role: string): string | undefined {
    return this.opts.placementNote?.(app, role);
  }

  /** The last autoscaling decision for a role, if its policies ran. */
  decisionFor(app: string, role: string): (Decision & { at: number }) | undefined {
    return this.reconciler.decisionFor(app, role);
  }

  private forgetAppState(app: string): void {
    this.runner.forget(app);
    this.reconciler.forgetApp(app);
    this.executor.forgetApp(app);
    this.roleMetrics.forgetApp(app);
    this.opts.bundles?.store.forget(app);
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
      agent: agentOf(i, this.provider.name),
    };
  }

  /** The plan the reconciler would make now, without acting on it: used for status. */
  async preview(appName: string): Promise<Plan | undefined> {
    return this.reconciler.preview(appName);
  }

  private async timedReconcile(appName: string): Promise<{ requeueAfterMs?: number }> {
    if (this.stopped || !this.transport) return {};
    const end = this.metrics.reconcileSeconds.startTimer();
    try {
      const r = await this.reconciler.reconcile(appName);
      if (r.gone) {
        this.runner.forget(appName);
        return {};
      }
      return r.requeueAfterMs !== undefined ? { requeueAfterMs: r.requeueAfterMs } : {};
    } catch (err) {
      this.metrics.reconcileErrors.inc();
      throw err;
    } finally {
      end();
    }
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
}

/** Where an instance's agent runs: `providerRef.host`, else this machine for the local provider, else the instance's address. */
function agentOf(i: InstanceRecord, provider: string): { pid: number | null; host: string } {
  const ref = i.providerRef ?? {};
  const pid = typeof ref.pid === 'number' && Number.isSafeInteger(ref.pid) && ref.pid > 0 ? ref.pid : null;
  const host = typeof ref.host === 'string' && ref.host ? ref.host : provider === 'local' ? hostname() : i.ip;
  return { pid, host };
}

/** The spec with the app bundle's name in each role (core/types.ts `RoleSpec.bundle`). */
function withBundle(spec: AppSpec, sha256: string): AppSpec {
  return { ...spec, roles: Object.fromEntries(Object.entries(spec.roles).map(([name, r]) => [name, { ...r, bundle: sha256 }])) };
}

/** A conditional write lost to another writer: read again and retry. */
class Conflict extends Error {}
