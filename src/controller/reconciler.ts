/**
 * One reconcile pass of one app: read the snapshot, take the decision step (policies, then plan:
 * core/decide.ts, the same code the simulator runs), store the new counts with their reasons,
 * and hand the actions to the executor.
 */
import { decide, learnedCapacities, recordAction, type Decision, type DecideOutput, type Plan, type PlannerOptions, type PolicyState } from '../core/index.js';
import type { InstanceRecord, StoredApp, StoredRole } from '../adapters/store/index.js';
import type { ControllerContext } from './context.js';
import type { ActionExecutor } from './executor.js';
import type { LagMonitor } from './lag.js';
import type { RoleMetrics } from './scraper.js';
import type { TenantJob, TenantPass } from './tenants.js';

/** At most how often a role's policy state is written when its count does not change. */
const STATE_PERSIST_MS = 60_000;

export interface ReconcilerOptions {
  readonly planner: PlannerOptions;
  /** How often scaling policies are evaluated. */
  readonly evaluateMs: number;
  /** When this controller started. */
  readonly startedAt: number;
}

interface Snapshot {
  readonly roles: StoredRole[];
  readonly instances: InstanceRecord[];
}

export class Reconciler {
  /** Policy state per `app/role`, ahead of the store (written on every change). */
  private readonly policyStates = new Map<string, PolicyState>();
  private readonly lastDecision = new Map<string, Decision & { at: number }>();
  /** When each role's policy state was last written to the store, and what was written. */
  private readonly statePersisted = new Map<string, { at: number; text: string }>();
  /** Per `app/role`: failures up to this time are forgotten (`drover retry`). */
  private readonly failuresClearedAt = new Map<string, number>();

  constructor(
    private readonly ctx: ControllerContext,
    private readonly executor: ActionExecutor,
    private readonly metrics: RoleMetrics,
    private readonly lag: LagMonitor,
    private readonly o: ReconcilerOptions,
    private readonly tenants?: TenantJob,
  ) {}

  /** The last autoscaling decision for a role, if its policies ran. */
  decisionFor(app: string, role: string): (Decision & { at: number }) | undefined {
    return this.lastDecision.get(`${app}/${role}`);
  }

  /** An operator set the count: the policies' rate limits count it as a scaling event. */
  noteManualScale(app: string, role: string, from: number, to: number): void {
    const key = `${app}/${role}`;
    this.policyStates.set(key, recordAction(this.policyStates.get(key), this.ctx.clock.now(), from, to));
  }

  /** An operator fixed what made a role fail: its failures so far no longer hold replacements back. */
  clearFailures(app: string, role: string, at: number): void {
    const key = `${app}/${role}`;
    this.failuresClearedAt.set(key, Math.max(at, this.failuresClearedAt.get(key) ?? 0));
  }

  forgetApp(app: string): void {
    for (const m of [this.policyStates, this.lastDecision, this.failuresClearedAt, this.statePersisted] as Map<string, unknown>[]) {
      for (const k of [...m.keys()]) if (k.startsWith(`${app}/`)) m.delete(k);
    }
  }

  /** What one pass reads: the roles' counts, and the instances (recently gone ones too, for the failure backoff). */
  private async snapshot(app: StoredApp): Promise<Snapshot> {
    const roles = await this.ctx.store.listRoles(app.name);
    const instances = await this.ctx.store.listInstances({ app: app.name, goneSince: this.ctx.clock.now() - this.o.planner.failureWindowMs });
    return { roles, instances };
  }

  private step(app: StoredApp, snap: Snapshot, evaluatePolicies: boolean, tp: TenantPass | undefined): DecideOutput {
    const now = this.ctx.clock.now();
    const hearing = this.ctx.transport()?.hearingSince?.() ?? -Infinity;
    const heard = (at: number): number => Math.max(this.lag.seenAfterStalls(at), hearing);
    return decide({
      app: { name: app.name, spec: app.spec, deleting: app.deleting },
      roles: Object.fromEntries(
        snap.roles.map((r) => {
          const state = this.policyStates.get(`${app.name}/${r.role}`) ?? (r.policyState as PolicyState | null) ?? undefined;
          const floor = tp?.floors[r.role];
          return [r.role, { desired: r.desired, pinned: r.pinned, ...(state ? { policyState: state } : {}), ...(floor ? { floor } : {}) }];
        }),
      ),
      instances: snap.instances.map((i) => {
        const l = this.ctx.live.get(i.id);
        const hosts = tp?.hosts.get(i.id);
        // Silence while the controller itself was stalled, or its transport could hear no one (a broker away), is not the agent's.
        return {
          ...i, lastSeenAt: l ? heard(l.lastSeenAt) : null, busy: l?.vitals?.role?.cpu ?? 0, tenants: tp?.seats.get(i.id) ?? 0, addressPending: i.ip === '',
          ...(hosts ? { hosts } : {}),
        };
      }),
      now,
      controllerStartedAt: heard(this.o.startedAt),
      failuresClearedAt: Object.fromEntries(snap.roles.flatMap((r) => {
        const at = this.failuresClearedAt.get(`${app.name}/${r.role}`);
        return at === undefined ? [] : [[r.role, at]];
      })),
      metrics: this.metrics.store,
      metricsKey: (role) => `${app.name}/${role}`,
      evaluatePolicies,
      options: this.o.planner,
    });
  }

  /** The plan a pass would make now, without acting on it or running the policies: for status. */
  async preview(appName: string): Promise<Plan | undefined> {
    const app = await this.ctx.store.getApp(appName);
    if (!app) return undefined;
    const tp = app.deleting ? undefined : await this.tenants?.prepare(app);
    return this.step(app, await this.snapshot(app), false, tp).plan;
  }

  async reconcile(appName: string): Promise<{ requeueAfterMs?: number; gone?: true }> {
    const app = await this.ctx.store.getApp(appName);
    if (!app) return { gone: true };
    const scaled = !app.deleting && Object.values(app.spec.roles).some((r) => r.scale.length > 0);
    const snap = await this.snapshot(app);
    const tp = app.deleting ? undefined : await this.tenants?.prepare(app);
    const out = this.step(app, snap, scaled, tp);
    const now = this.ctx.clock.now();
    for (const [role, d] of Object.entries(out.decisions)) {
      this.policyStates.set(`${app.name}/${role}`, d.state);
      this.lastDecision.set(`${app.name}/${role}`, { ...d, at: now });
      for (const [metric, v] of Object.entries(learnedCapacities(d.inputs))) this.ctx.metrics.learnedCapacity.set({ app: app.name, role, metric }, v);
    }
    for (const c of out.changes) {
      // Only if nobody (an operator's `drover scale`) changed the role since the snapshot: a
      // pin set meanwhile wins, and this pass, planned on the old count, is dropped and redone.
      const read = snap.roles.find((r) => r.role === c.role);
      if (!(await this.ctx.store.setRoleCount(app.name, c.role, c.to, false, read ? { ifVersion: read.version } : {}))) {
        this.ctx.metrics.conflicts.inc({ what: 'role' });
        this.policyStates.delete(`${app.name}/${c.role}`);
        return { requeueAfterMs: 0 };
      }
      await this.ctx.store.setPolicyState(app.name, c.role, c.decision.state);
      this.statePersisted.set(`${app.name}/${c.role}`, { at: now, text: JSON.stringify(c.decision.state) });
      this.ctx.metrics.decisions.inc({ kind: c.to > c.from ? 'scale_out' : 'scale_in' });
      await this.ctx.record({ app: app.name, role: c.role, instance: null, kind: 'scale.policy', message: c.reason, data: { from: c.from, to: c.to, inputs: c.decision.inputs } });
    }
    // What a policy learned (an instance's capacity, demand's volatility) outlives a restart even
    // while the count holds: written at most once a minute per role, when it changed.
    for (const [role, d] of Object.entries(out.decisions)) {
      if (out.changes.some((c) => c.role === role)) continue;
      const key = `${app.name}/${role}`;
      const text = JSON.stringify(d.state);
      const last = this.statePersisted.get(key);
      if (last && (last.text === text || now - last.at < STATE_PERSIST_MS)) continue;
      if (!last) {
        // First sight since start: what the store holds is the baseline.
        const stored = snap.roles.find((r) => r.role === role)?.policyState;
        this.statePersisted.set(key, { at: now, text: JSON.stringify(stored ?? null) });
        continue;
      }
      await this.ctx.store.setPolicyState(app.name, role, d.state);
      this.statePersisted.set(key, { at: now, text });
    }
    const p = out.plan;
    // Creates and destroys first, as they were planned: each only records its intent and hands
    // the machine to the provisioning job, which wakes the app again once the machine is up or
    // gone (a destroyed instance can unblock the next step: the next role to stop, a replacement).
    const machines = p.actions.filter((a) => a.kind === 'create' || a.kind === 'destroy');
    await Promise.all(machines.map((a) => this.executor.execute(app, a)));
    for (const a of p.actions) if (a.kind !== 'create' && a.kind !== 'destroy') await this.executor.execute(app, a);
    this.updateGauges(app, p);
    const tenantsNext = tp && this.tenants ? await this.tenants.settle(app, tp, snap.roles, snap.instances, p) : undefined;
    const next = Math.min(p.requeueAfterMs ?? Infinity, scaled ? this.o.evaluateMs : Infinity, tenantsNext ?? Infinity);
    return Number.isFinite(next) ? { requeueAfterMs: next } : {};
  }

  private updateGauges(app: StoredApp, p: Plan): void {
    const m = this.ctx.metrics;
    for (const [role, s] of Object.entries(p.roles)) {
      const labels = { app: app.name, role };
      m.desired.set(labels, s.desired);
      m.actual.set(labels, s.live);
      m.serving.set(labels, s.serving);
      m.degraded.set(labels, s.degraded ? 1 : 0);
    }
    for (const [pool, n] of Object.entries(p.spares)) m.spares.set({ app: app.name, pool }, n);
    m.connectedAgents.set(this.ctx.transport()?.connected().length ?? 0);
  }
}
