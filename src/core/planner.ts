/**
 * The reconcile plan: a pure function from a snapshot of one app (desired counts, instances,
 * their states) and a time to the actions that move actual state toward desired state.
 *
 * It never does I/O or reads a clock; the controller executes the actions and the simulator
 * can run the same function on a virtual clock. Every action carries a sentence saying why.
 *
 * Rules, in the words an operator would use:
 * - A role keeps `desired` live instances. New capacity comes first from instances that are
 *   draining (the drain is cancelled), then from warm spares (a spare takes the role in about a
 *   second), and only then from new instances. Spare pools are refilled in the same pass.
 * - A changed role spec rolls its instances one at a time: a new instance first, the old one
 *   stopped once the new one serves (surge 1, none unavailable).
 * - Scale-in chooses its victims in this order: instances running an old spec, then those not
 *   serving yet, then the fewest tenants, then — on a cloud that bills by the clock — the one
 *   whose paid period ends soonest (core/billing.ts: an EC2 machine still inside its first
 *   minute is paid for anyway), then the least busy (role CPU), then the newest. A
 *   serving victim is drained: it leaves its importers (the load balancer) first, and only once
 *   they have applied that change is the instance told to finish its in-flight work and stop.
 * - An instance whose agent stops heartbeating is `unresponsive`: it stops counting at once, its
 *   epoch is bumped (so the old agent, if it comes back, is refused), a replacement is
 *   commissioned, and the old instance is destroyed once the role is back to strength (or after
 *   a grace period). An instance stuck provisioning is failed and replaced.
 * - The first failure of a role is replaced at once; after that replacements back off (5 s
 *   doubling up to 5 min). Three failures within the window mark the role `degraded`: no more
 *   replacements until the window passes or the role's spec changes. Only replacements wait:
 *   capacity a scale-out asks for beyond the failed instances is created at once.
 * - Deleting an app stops roles in reverse dependency order: a role stops only once every role
 *   that imports it is gone.
 */
import { createHash } from 'node:crypto';
import { dependents, importsVersion, resolveImports, stopOrder } from './imports.js';
import { providerKindOf, providerSettingsOf, type ProviderKind, type ProviderSettings } from './provider-settings.js';
import { billingOf, paidLeftText, paidSecondsLeft, type Billing } from './billing.js';
import { own } from './limits.js';
import { isLive, type InstanceState } from './states.js';
import type { AppSpec, ImportedMember, ResolvedImports, RoleSpec } from './types.js';

export interface PlannerOptions {
  /** An agent silent this long is unresponsive. @default 6000 */
  readonly heartbeatTimeoutMs: number;
  /**
   * An agent this controller has not heard from since it started gets at least this long to
   * reconnect: agents back off up to 5 s between attempts while the controller is away, so a
   * restarted controller must not take their absence for silence. @default 10000
   */
  readonly reconnectGraceMs?: number;
  /** An instance whose agent has not registered after this long is failed. @default 60000 */
  readonly provisionTimeoutMs: number;
  /**
   * The same, per provider kind of the instance's `provider:` settings (`ec2`: minutes), where it
   * differs from {@link provisionTimeoutMs}: each provider says how long its machines take.
   */
  readonly provisionTimeoutsMs?: Readonly<Partial<Record<ProviderKind, number>>>;
  /**
   * How machines of each provider kind are billed, where the controller knows better than the
   * kind's usual (core/billing.ts BILLING): an OpenStack operator's own granularity.
   */
  readonly billing?: Readonly<Partial<Record<ProviderKind, Billing | null>>>;
  /** Extra time past a role's stop (or drain) timeout before the instance is destroyed anyway. @default 15000 */
  readonly stopGraceMs: number;
  /** An unresponsive instance is destroyed at the latest this long after it was declared so. @default 30000 */
  readonly unresponsiveGraceMs: number;
  /** Longest wait for importers to drop a draining member before its drain order goes anyway. @default 10000 */
  readonly deregisterTimeoutMs: number;
  /** First delay before replacing a failed instance; doubles per recent failure. @default 5000 */
  readonly failureBackoffMs: number;
  /** Cap of that delay. @default 300000 */
  readonly failureBackoffMaxMs: number;
  /** Failures older than this are forgotten by the backoff. @default 600000 */
  readonly failureWindowMs: number;
  /** Failures within the window that mark a role degraded. @default 3 */
  readonly degradedAfter: number;
}

export const DEFAULT_PLANNER_OPTIONS: PlannerOptions = {
  heartbeatTimeoutMs: 6000,
  provisionTimeoutMs: 60000,
  stopGraceMs: 15000,
  unresponsiveGraceMs: 30000,
  deregisterTimeoutMs: 10000,
  failureBackoffMs: 5000,
  failureBackoffMaxMs: 300000,
  failureWindowMs: 600000,
  degradedAfter: 3,
};

export type InstanceGoal = 'run' | 'drain' | 'stop';

/** What the planner needs to know of an instance (the store's record has all of it). */
export interface PlanInstance {
  readonly id: string;
  /** null: a warm spare, no role yet. */
  readonly role: string | null;
  /** For a spare: the role it is kept for, or `*` for any role of the app. */
  readonly pool: string | null;
  readonly state: InstanceState;
  readonly goal: InstanceGoal;
  readonly roleHash: string;
  readonly exports: Readonly<Record<string, string>> | null;
  readonly importsSent: string | null;
  readonly importsApplied: string | null;
  readonly assignOrderId: string | null;
  readonly stopOrderId: string | null;
  readonly drainOrderId: string | null;
  readonly createdAt: number;
  readonly stateSince: number;
  /** When the role first served on it (null: not yet; absent: unknown, `stateSince` stands in). */
  readonly startedAt?: number | null;
  readonly stopRequestedAt: number | null;
  readonly drainRequestedAt: number | null;
  readonly destroyedAt: number | null;
  /** Last heartbeat seen; null if none since the controller started. */
  readonly lastSeenAt: number | null;
  /** Role CPU in cores from the last vitals, for choosing scale-in victims. */
  readonly busy?: number;
  /** Tenants placed on the instance. */
  readonly tenants?: number;
  /** Tenant hosts to route to it (tenants added and not being removed). */
  readonly hosts?: readonly string[];
  /**
   * Registered, but its provider has not told its address yet (a machine made in the background:
   * the agent can say hello first). It gets no role until then: its exports would be checked
   * against an address the controller does not know.
   */
  readonly addressPending?: boolean;
  /** The member slot it holds (`db-0`): a role with volumes gives each member one. */
  readonly slot?: number | null;
}

export interface PlanInput {
  readonly app: { readonly name: string; readonly spec: AppSpec; readonly deleting: boolean };
  readonly desired: Readonly<Record<string, number>>;
  /** Live instances, plus destroyed ones that failed recently (for the failure backoff). */
  readonly instances: readonly PlanInstance[];
  readonly now: number;
  /** When this controller started: the heartbeat clock of instances it has not heard from yet. */
  readonly controllerStartedAt: number;
  /**
   * Per role: failures at or before this time are forgotten by the backoff and the degraded mark
   * (an operator fixed the cause and said so with `drover retry`).
   */
  readonly failuresClearedAt?: Readonly<Record<string, number>>;
  readonly options?: PlannerOptions;
}

export type PlanAction =
  | {
      readonly kind: 'create';
      /** null: a warm spare for `pool`. */
      readonly role: string | null;
      readonly pool: string | null;
      readonly roleHash: string;
      /** The member slot it takes (a role with volumes). */
      readonly slot?: number;
      readonly reason: string;
    }
  | {
      readonly kind: 'assign';
      readonly instanceId: string;
      readonly role: string;
      /** The instance was a spare: it takes the role now. */
      readonly claim: boolean;
      readonly roleHash: string;
      /** The member slot it holds, or takes with the claim (a role with volumes). */
      readonly slot?: number;
      readonly imports: ResolvedImports;
      readonly importsVersion: string;
      readonly reason: string;
    }
  | {
      readonly kind: 'imports';
      readonly instanceId: string;
      readonly role: string;
      readonly imports: ResolvedImports;
      readonly importsVersion: string;
      readonly reason: string;
    }
  | { readonly kind: 'stop'; readonly instanceId: string; readonly role: string | null; readonly reason: string }
  /** Take the instance out of its importers; its drain order follows once they applied that. */
  | { readonly kind: 'drain'; readonly instanceId: string; readonly role: string; readonly reason: string }
  | { readonly kind: 'drainOrder'; readonly instanceId: string; readonly role: string; readonly timeoutMs: number; readonly reason: string }
  | { readonly kind: 'undrain'; readonly instanceId: string; readonly role: string; readonly reason: string }
  | { readonly kind: 'unresponsive'; readonly instanceId: string; readonly role: string | null; readonly reason: string }
  | {
      readonly kind: 'destroy';
      readonly instanceId: string;
      readonly role: string | null;
      /** The state to record if the instance is not already terminal. */
      readonly finalState: 'terminated' | 'failed' | 'unresponsive';
      readonly reason: string;
    }
  | { readonly kind: 'forgetApp'; readonly reason: string }
  /** Nothing to do now, but worth telling (a role waiting out a backoff, a degraded role). */
  | { readonly kind: 'note'; readonly role: string; readonly topic: 'backoff' | 'degraded'; readonly reason: string };

export interface RoleSummary {
  readonly desired: number;
  readonly live: number;
  readonly serving: number;
  readonly draining: number;
  /** Warm spares kept for this role (not counting the app-wide pool). */
  readonly spares: number;
  /** Required imports with no member yet, as written (`db.url`). */
  readonly missingImports: readonly string[];
  /** Replacements keep failing: the role is not being replaced until the window passes. */
  readonly degraded: boolean;
  /** Instances that have not applied the imports last sent to them (their `update` pending or failing). */
  readonly staleImports: readonly string[];
}

export interface Plan {
  readonly actions: readonly PlanAction[];
  /** Run again after this long even if nothing wakes the reconciler. */
  readonly requeueAfterMs?: number;
  readonly roles: Readonly<Record<string, RoleSummary>>;
  /** Warm spares per pool (role name, or `*`). */
  readonly spares: Readonly<Record<string, number>>;
  /** Every role has its desired count serving, nothing is leaving, spare pools are full. */
  readonly converged: boolean;
}

/** Hash of what an instance runs; counts, spares and policies are left out, so scaling never rolls instances. */
export function roleHash(role: RoleSpec): string {
  const { min: _min, max: _max, count: _count, spares: _spares, scale: _scale, warmupMs: _w, ...rest } = role;
  return createHash('sha256').update(JSON.stringify(rest)).digest('hex').slice(0, 16);
}

/** The role's instances ranked for scale-in, best victim first. See the module comment for the order. */
export function rankVictims<T extends PlanInstance>(candidates: readonly T[], currentHash: string, paidLeft: (i: PlanInstance) => number = () => 0): T[] {
  const key = (i: PlanInstance) => [
    i.roleHash !== currentHash ? 0 : 1,
    i.state === 'serving' ? 1 : 0,
    i.tenants ?? 0,
    // Whole seconds: two machines a few ms apart are equally good here, and CPU decides.
    Math.ceil(paidLeft(i)),
    i.busy ?? 0,
    -i.createdAt,
  ];
  return [...candidates].sort((a, b) => {
    const ka = key(a);
    const kb = key(b);
    for (let k = 0; k < ka.length; k++) if (ka[k] !== kb[k]) return ka[k]! - kb[k]!;
    return a.id < b.id ? 1 : -1;
  });
}

/** Why `v` was chosen, for the event: `newest, no tenants`. */
export function victimWhy(v: PlanInstance, currentHash: string, paidLeft?: number): string {
  if (v.roleHash !== currentHash) return 'runs an old spec';
  if (v.state !== 'serving') return `not serving yet, ${v.state}`;
  const t = v.tenants ? `${v.tenants} tenant(s)` : 'no tenants';
  const paid = paidLeft === undefined ? '' : paidLeft > 0 ? `, paid for ${paidLeftText(paidLeft)} more` : ', past its paid period';
  return `${t}${paid}, cpu ${(v.busy ?? 0).toFixed(2)}`;
}

/** What the steps of one plan build together: the actions, when to look again, whether it is converged. */
class PlanBuilder {
  readonly actions: PlanAction[] = [];
  readonly summaries: Record<string, RoleSummary> = {};
  readonly spareCounts: Record<string, number> = {};
  /** Importers sent new imports in this plan (their drain gates are not caught up yet). */
  readonly importsSentTo = new Set<string>();
  /** Instances given a lifecycle order in this plan (stop, drain, undrain): one per pass. */
  readonly ordered = new Set<string>();
  converged = true;
  requeue: number | undefined;

  wakeIn(ms: number): void {
    const v = Math.max(50, Math.ceil(ms));
    this.requeue = this.requeue === undefined ? v : Math.min(this.requeue, v);
  }

  done(): Plan {
    if (!this.converged && this.requeue === undefined) this.wakeIn(1000);
    return { actions: this.actions, ...(this.requeue !== undefined ? { requeueAfterMs: this.requeue } : {}), roles: this.summaries, spares: this.spareCounts, converged: this.converged };
  }

  /** A plan that can never be converged (a deletion in progress). */
  unfinished(): Plan {
    return { actions: this.actions, requeueAfterMs: this.requeue ?? 1000, roles: this.summaries, spares: this.spareCounts, converged: false };
  }
}

/** The instances a plan works with, once those that are over have been sorted out. */
interface Sorted {
  /** Not destroyed. */
  readonly present: readonly PlanInstance[];
  /** Present and not being released or fenced in this plan. */
  readonly alive: readonly PlanInstance[];
  readonly unresponsive: readonly PlanInstance[];
  /** Ids released or fenced by this plan. */
  readonly handled: ReadonlySet<string>;
}

export function plan(input: PlanInput): Plan {
  const o = input.options ?? DEFAULT_PLANNER_OPTIONS;
  const b = new PlanBuilder();
  const sorted = sortOutOver(input, o, b);
  if (input.app.deleting) return planDeletion(input, sorted, b);
  stopRemovedRoles(input, sorted, b);
  const spares = new SparePool(sorted.alive);
  const imports = new ImportsByRole(sorted.alive);
  for (const role of Object.values(input.app.spec.roles)) planRole(input, o, role, sorted, spares, imports, b);
  planUnresponsive(input, o, sorted, b);
  planDrainOrders(input, o, sorted, b);
  planSparePools(input, o, spares, b);
  return b.done();
}

/** 1. Instances that are over: terminal, silent, stuck, or asked to leave long ago. */
function sortOutOver(input: PlanInput, o: PlannerOptions, b: PlanBuilder): Sorted {
  const { spec } = input.app;
  const now = input.now;
  const present = input.instances.filter((i) => i.destroyedAt === null);
  const handled = new Set<string>();
  const unresponsive: PlanInstance[] = [];
  for (const i of present) {
    const role = i.role !== null ? own(spec.roles, i.role) : undefined;
    const done = (finalState: 'terminated' | 'failed' | 'unresponsive', reason: string) => {
      b.actions.push({ kind: 'destroy', instanceId: i.id, role: i.role, finalState, reason });
      handled.add(i.id);
    };
    if (i.state === 'terminated' || i.state === 'failed') {
      done(i.state, `${i.id} is ${i.state}; releasing it`);
      continue;
    }
    if (i.state === 'unresponsive') {
      unresponsive.push(i);
      handled.add(i.id);
      continue;
    }
    if (i.state === 'provisioning') {
      const age = now - Math.max(i.createdAt, input.controllerStartedAt);
      const timeout = o.provisionTimeoutsMs?.[providerKindOf(providerSettingsOf(spec, i.role ?? i.pool))] ?? o.provisionTimeoutMs;
      if (age >= timeout) {
        done('failed', `${i.id} did not register within ${Math.round(timeout / 1000)}s; giving up on it`);
      } else b.wakeIn(timeout - age);
      continue;
    }
    const leaveStarted = i.goal === 'stop' ? i.stopRequestedAt : i.goal === 'drain' && i.drainOrderId !== null ? i.drainRequestedAt : null;
    if (leaveStarted !== null) {
      const budget = (role?.stopTimeoutMs ?? 10000) + (i.goal === 'drain' ? (role?.drainTimeoutMs ?? 30000) + o.deregisterTimeoutMs : 0);
      const deadline = leaveStarted + budget + o.stopGraceMs;
      if (now >= deadline) {
        done('terminated', `${i.id} did not finish ${i.goal === 'drain' ? 'draining' : 'stopping'} in time; destroying it`);
        continue;
      }
      b.wakeIn(deadline - now);
    }
    const seen = i.lastSeenAt ?? Math.max(i.createdAt, input.controllerStartedAt);
    const silentFor = now - seen;
    const timeout = i.lastSeenAt === null ? Math.max(o.heartbeatTimeoutMs, o.reconnectGraceMs ?? 10_000) : o.heartbeatTimeoutMs;
    if (silentFor >= timeout) {
      b.actions.push({
        kind: 'unresponsive', instanceId: i.id, role: i.role,
        reason: `${i.id}${i.role ? ` (${i.role})` : ''} sent no heartbeat for ${(silentFor / 1000).toFixed(1)}s (timeout ${timeout / 1000}s); fencing it and commissioning a replacement`,
      });
      unresponsive.push(i);
      handled.add(i.id);
    } else b.wakeIn(timeout - silentFor);
  }
  return { present, alive: present.filter((i) => !handled.has(i.id)), unresponsive, handled };
}

/** 2. Deleting: stop in reverse dependency order, then forget the app. */
function planDeletion(input: PlanInput, { present, alive, unresponsive, handled }: Sorted, b: PlanBuilder): Plan {
  const { spec } = input.app;
  for (const u of unresponsive) b.actions.push({ kind: 'destroy', instanceId: u.id, role: u.role, finalState: 'unresponsive', reason: `app ${input.app.name} is being deleted; destroying unresponsive ${u.id}` });
  if (present.length === handled.size) {
    if (alive.length === 0 && unresponsive.length === 0) b.actions.push({ kind: 'forgetApp', reason: `app ${input.app.name} deleted: every instance is gone` });
    return b.unfinished();
  }
  const remaining = (role: string | null) => present.some((i) => i.role === role && !handled.has(i.id));
  const stopAll = (role: string | null) => {
    for (const i of alive) {
      if (i.role === role && i.goal !== 'stop') {
        b.actions.push({ kind: 'stop', instanceId: i.id, role, reason: `app ${input.app.name} is being deleted; stopping ${role ?? 'spare'} ${i.id}` });
      }
    }
  };
  stopAll(null);
  const orphanRoles = [...new Set(alive.map((i) => i.role).filter((r): r is string => r !== null && !own(spec.roles, r)))];
  for (const wave of [orphanRoles, ...stopOrder(spec)]) {
    for (const role of wave) stopAll(role);
    if (wave.some(remaining)) break;
  }
  return b.unfinished();
}

/** 3. Instances of roles no longer in the app. */
function stopRemovedRoles(input: PlanInput, { alive }: Sorted, b: PlanBuilder): void {
  for (const i of alive) {
    if (i.role !== null && !own(input.app.spec.roles, i.role) && i.goal !== 'stop') {
      b.actions.push({ kind: 'stop', instanceId: i.id, role: i.role, reason: `role ${i.role} was removed from the app; stopping ${i.id}` });
      b.converged = false;
    }
  }
}

/** Whether two `provider:` blocks make the same machines (none and `kind: local` are both the default chain). */
function sameMachines(a: ProviderSettings | undefined, b: ProviderSettings | undefined): boolean {
  const norm = (p: ProviderSettings | undefined) => (p === undefined || p.kind === 'local' ? null : p);
  return JSON.stringify(norm(a)) === JSON.stringify(norm(b));
}

/** Warm spares available to claim, by pool; claimed ones are taken out as the roles need them. */
class SparePool {
  /** Every spare that is not leaving, ready or still booting. */
  readonly all: readonly PlanInstance[];
  readonly claimed = new Set<string>();
  private readonly ready = new Map<string, PlanInstance[]>();

  constructor(alive: readonly PlanInstance[]) {
    this.all = alive.filter((i) => i.role === null && i.goal === 'run');
    for (const s of this.all) {
      if (s.state !== 'spare' || s.addressPending) continue;
      const pool = s.pool ?? '*';
      this.ready.set(pool, [...(this.ready.get(pool) ?? []), s]);
    }
  }

  /**
   * A ready spare for `role`: its own pool first, then the app's (only when the role's machines are
   * the app's: a spare booted on another provider is not the machine the role asked for); oldest first (surely warm).
   */
  take(role: string, appPool = true): PlanInstance | undefined {
    for (const pool of appPool ? [role, '*'] : [role]) {
      const s = (this.ready.get(pool) ?? []).sort((x, y) => x.createdAt - y.createdAt).find((x) => !this.claimed.has(x.id));
      if (s) {
        this.claimed.add(s.id);
        return s;
      }
    }
    return undefined;
  }
}

/** What each role would import now, from the serving members; resolved once per plan. */
class ImportsByRole {
  private readonly serving: Record<string, ImportedMember[]>;
  private readonly byRole = new Map<string, { imports: ResolvedImports; version: string; missing: string[] }>();

  constructor(alive: readonly PlanInstance[]) {
    // Serving members, by role: what importers see. Draining and leaving members are already out.
    // No prototype: an instance's role comes from the store, and `serving.constructor ??= []` must not find Object.
    this.serving = Object.create(null) as Record<string, ImportedMember[]>;
    for (const i of alive) {
      if (i.role !== null && i.goal === 'run' && i.state === 'serving' && i.exports) {
        (this.serving[i.role] ??= []).push(i.hosts?.length ? { instance: i.id, exports: i.exports, hosts: i.hosts } : { instance: i.id, exports: i.exports });
      }
    }
  }

  of(role: RoleSpec) {
    let r = this.byRole.get(role.name);
    if (!r) {
      const res = resolveImports(role, this.serving);
      r = { imports: res.imports, version: importsVersion(res.imports), missing: res.missing.map((m) => m.raw) };
      this.byRole.set(role.name, r);
    }
    return r;
  }
}

/** A role's instances as this plan sees them. */
interface RoleView {
  readonly role: RoleSpec;
  readonly hash: string;
  readonly desired: number;
  readonly live: readonly PlanInstance[];
  readonly draining: readonly PlanInstance[];
  readonly servingNow: readonly PlanInstance[];
  readonly fresh: readonly PlanInstance[];
  readonly outdated: readonly PlanInstance[];
  /** One extra instance while a roll replaces outdated ones. */
  readonly surge: number;
}

/** 4. Each role: size, rolling update, drain, assignment, imports. */
function planRole(input: PlanInput, o: PlannerOptions, role: RoleSpec, sorted: Sorted, spares: SparePool, imports: ImportsByRole, b: PlanBuilder): void {
  const hash = roleHash(role);
  const desired = Math.min(role.max, Math.max(role.min, own(input.desired, role.name) ?? role.count));
  const mine = sorted.alive.filter((i) => i.role === role.name);
  // An undrained instance reports `draining` until its agent has the undrain: it is back.
  const live = mine.filter((i) => i.goal === 'run' && (isLive(i.state) || i.state === 'draining'));
  const draining = mine.filter((i) => i.goal === 'drain');
  const leaving = mine.filter((i) => i.goal === 'stop');
  const outdated = live.filter((i) => i.roleHash !== hash);
  const v: RoleView = {
    role, hash, desired, live, draining,
    servingNow: live.filter((i) => i.state === 'serving'),
    fresh: live.filter((i) => i.roleHash === hash),
    outdated,
    surge: outdated.length > 0 && !inPlace(role) ? 1 : 0,
  };
  const imp = imports.of(role);
  const failures = recentFailures(input.instances, role.name, hash, input.now, o, own(input.failuresClearedAt ?? {}, role.name) ?? 0);
  const degraded = failures.count >= o.degradedAfter;
  if (v.servingNow.length !== desired || live.length !== desired || outdated.length > 0 || leaving.length > 0 || draining.length > 0) b.converged = false;

  const slots = role.volumes?.length ? new Slots(sorted.present.filter((i) => i.role === role.name), desired) : undefined;
  const added = scaleOut(input, o, v, failures, degraded, sorted, spares, imp, b, slots);
  scaleIn(v, added, b, input.now, o);
  if (inPlace(role)) replaceInPlace(v, draining.length + leaving.length, b);
  assignAndImport(v, imp, b);

  // Converged means every importer runs with the imports last sent to it, not only that
  // enough instances serve.
  const staleImports = live
    .filter((i) => i.assignOrderId !== null && (b.importsSentTo.has(i.id) || i.importsApplied !== i.importsSent))
    .map((i) => i.id);
  if (staleImports.length > 0) b.converged = false;
  const poolSize = spares.all.filter((s) => s.pool === role.name).length;
  b.summaries[role.name] = {
    desired, live: live.length, serving: v.servingNow.length, draining: draining.length, spares: poolSize, missingImports: imp.missing, degraded, staleImports,
  };
}

/**
 * Scale out / surge: cancelled drains first, then spares, then new instances. Replacements of
 * failed instances wait out the failure backoff (or a degraded role); returns how many instances
 * the role gains.
 */
function scaleOut(
  input: PlanInput, o: PlannerOptions, v: RoleView, failures: RecentFailures, degraded: boolean, sorted: Sorted, spares: SparePool,
  imp: { imports: ResolvedImports; version: string }, b: PlanBuilder, slots?: Slots,
): number {
  const { role, hash, desired, live } = v;
  let toCreate = Math.max(0, Math.min(desired - v.fresh.length, desired + v.surge - live.length));
  let added = 0;
  for (const d of v.draining) {
    if (toCreate <= 0) break;
    if (d.roleHash !== hash || (d.state !== 'serving' && d.state !== 'draining')) continue;
    b.actions.push({ kind: 'undrain', instanceId: d.id, role: role.name, reason: `${role.name} ${live.length + added}→${live.length + added + 1}: load came back; cancelling the drain of ${d.id}` });
    b.ordered.add(d.id);
    toCreate--;
    added++;
  }
  // Only replacements wait out a backoff (or a degraded role): as many new instances as there
  // were recent failures. Capacity a scale-out asks for beyond that is created at once.
  const failedSlots = failures.count + sorted.unresponsive.filter((u) => u.role === role.name && u.state !== 'unresponsive').length;
  const held = Math.min(toCreate, failedSlots);
  if (held > 0) {
    if (degraded) {
      b.actions.push({
        kind: 'note', role: role.name, topic: 'degraded',
        reason: `${role.name} is degraded: ${failures.count} instances failed in the last ${Math.round(o.failureWindowMs / 60000)} min; not replacing until the window passes, the role changes or \`drover retry ${role.name}\``,
      });
      b.wakeIn(failures.oldest + o.failureWindowMs - input.now);
      toCreate -= held;
    } else {
      const backoff = failureBackoff(failures, input.now, o);
      if (backoff > 0) {
        b.actions.push({
          kind: 'note', role: role.name, topic: 'backoff',
          reason: `${role.name}: ${failures.count} failed instance(s) in the last ${Math.round(o.failureWindowMs / 60000)} min; next replacement in ${Math.ceil(backoff / 1000)}s`,
        });
        b.wakeIn(backoff);
        toCreate -= held;
      }
    }
  }
  for (let k = 0; k < toCreate; k++) {
    const n = live.length + added;
    const why =
      v.outdated.length > 0 && v.fresh.length + k >= live.length - v.outdated.length
        ? `${role.name}: rolling to the new spec (${v.outdated.length} outdated)`
        : `${role.name} ${n}→${n + 1}: ${n} live, ${desired} desired`;
    // A spare's host was chosen before its role was known: a role with placement gets a new instance on a host that fits.
    let slot: number | undefined;
    if (slots) {
      const free = slots.take();
      if ('held' in free) {
        b.actions.push({
          kind: 'note', role: role.name, topic: 'backoff',
          reason: `${why}; waiting for member slot ${role.name}-${free.held.slot}: ${free.held.id} still holds it (its volumes go to the next member once it is gone)`,
        });
        b.wakeIn(500);
        break;
      }
      slot = free.slot;
    }
    const at = slot !== undefined ? { slot } : {};
    const as = slot !== undefined ? ` as ${role.name}-${slot}` : '';
    const spare = role.placement ? undefined : spares.take(role.name, sameMachines(role.provider, input.app.spec.provider));
    if (spare) {
      b.actions.push({
        kind: 'assign', instanceId: spare.id, role: role.name, claim: true, roleHash: hash, imports: imp.imports, importsVersion: imp.version, ...at,
        reason: `${why}; warm spare ${spare.id} takes the role${as}`,
      });
    } else {
      b.actions.push({ kind: 'create', role: role.name, pool: null, roleHash: hash, ...at, reason: `${why}; creating an instance${as}` });
    }
    added++;
  }
  return added;
}

/**
 * Scale in / finish the roll: the best victims first, never dropping below the serving count the
 * role needs. Serving victims drain; the others stop at once.
 */
function scaleIn(v: RoleView, added: number, b: PlanBuilder, now: number, o: PlannerOptions): void {
  const { role, hash, desired, live } = v;
  const billing = billingOf(providerKindOf(role.provider), o.billing);
  const paidLeft = (i: PlanInstance) => paidSecondsLeft(billing, now - i.createdAt);
  let excess = live.length + added - desired;
  if (excess <= 0) return;
  let servingLeft = v.servingNow.length;
  let remaining = live.length + added;
  for (const victim of rankVictims(live, hash, paidLeft)) {
    if (excess <= 0) break;
    const isServing = victim.state === 'serving';
    if (isServing && servingLeft - 1 < Math.min(desired, v.servingNow.length)) continue;
    // An instance hosting tenants is never taken away under them: they are moved first.
    if (role.tenants && (victim.tenants ?? 0) > 0) continue;
    // The surge instance of a roll is not an excess: it is what replaces an old one.
    if (victim.roleHash === hash && remaining <= desired + v.surge) continue;
    if (isServing) servingLeft--;
    remaining--;
    excess--;
    const head = victim.roleHash !== hash ? `${role.name}: ${victim.id} runs an old spec` : `${role.name} ${remaining + 1}→${remaining}: ${desired} desired`;
    const why = `${head}; victim ${victim.id} (${victimWhy(victim, hash, billing ? paidLeft(victim) : undefined)})`;
    b.actions.push(isServing ? { kind: 'drain', instanceId: victim.id, role: role.name, reason: why } : { kind: 'stop', instanceId: victim.id, role: role.name, reason: why });
    b.ordered.add(victim.id);
  }
}

/** Assign registered agents; keep imports current. */
function assignAndImport(v: RoleView, imp: { imports: ResolvedImports; version: string }, b: PlanBuilder): void {
  const { role } = v;
  for (const i of v.live) {
    // A victim of this pass's scale-in leaves: it is neither assigned nor sent imports.
    if (b.ordered.has(i.id)) continue;
    if (i.state === 'spare' && i.assignOrderId === null) {
      if (i.addressPending) continue;
      b.actions.push({
        kind: 'assign', instanceId: i.id, role: role.name, claim: false, roleHash: i.roleHash, imports: imp.imports, importsVersion: imp.version,
        ...(i.slot !== null && i.slot !== undefined ? { slot: i.slot } : {}),
        reason: `${i.id} registered; assigning role ${role.name}`,
      });
    } else if (i.assignOrderId !== null && i.importsSent !== imp.version && role.imports.length > 0) {
      const members = Object.entries(imp.imports).map(([r, m]) => `${r}: ${m.length}`).join(', ');
      b.actions.push({
        kind: 'imports', instanceId: i.id, role: role.name, imports: imp.imports, importsVersion: imp.version,
        reason: `${i.id} (${role.name}): imports changed (${members || 'none'})`,
      });
      b.importsSentTo.add(i.id);
    }
  }
}

/**
 * Roles whose members cannot overlap: their volumes (a member slot's data has one user at a time)
 * or ports they bind themselves at a fixed number (a second member on the host cannot bind them).
 * A roll replaces such a member in place: the old one leaves first, the new one takes its slot.
 * (`listen:` ports do not count: the host's port keeper holds them for every member.)
 */
export function inPlace(role: RoleSpec): boolean {
  return (role.volumes?.length ?? 0) > 0 || Object.values(role.ports ?? {}).some((p) => typeof p === 'number');
}

/** A roll of an in-place role: one outdated member leaves at a time, once nothing else is leaving. */
function replaceInPlace(v: RoleView, leaving: number, b: PlanBuilder): void {
  if (v.outdated.length === 0 || leaving > 0 || v.live.some((i) => b.ordered.has(i.id))) return;
  // The fresh members serve first: one member down at a time.
  if (v.fresh.some((i) => i.state !== 'serving')) return;
  const victim = [...v.outdated].sort((x, y) => (x.state === 'serving' ? 1 : 0) - (y.state === 'serving' ? 1 : 0) || (y.slot ?? 0) - (x.slot ?? 0))[0]!;
  const slot = victim.slot !== null && victim.slot !== undefined ? `slot ${v.role.name}-${victim.slot}, ` : '';
  const why = `${v.role.name}: ${victim.id} runs an old spec; replacing it in place (${slot}it leaves first)`;
  b.actions.push(victim.state === 'serving' ? { kind: 'drain', instanceId: victim.id, role: v.role.name, reason: why } : { kind: 'stop', instanceId: victim.id, role: v.role.name, reason: why });
  b.ordered.add(victim.id);
}

/**
 * Member slots of a role with volumes, like a StatefulSet's ordinals: a new member takes the
 * lowest slot below the desired count that no present instance holds, so a replacement takes the
 * slot of the member it replaces once that one is gone.
 */
class Slots {
  private readonly held = new Map<number, PlanInstance | null>();
  constructor(
    present: readonly PlanInstance[],
    private readonly desired: number,
  ) {
    for (const i of present) if (i.slot !== null && i.slot !== undefined) this.held.set(i.slot, i);
  }

  /** The lowest free slot, or the instance that still holds the one a new member waits for. */
  take(): { slot: number } | { held: { id: string; slot: number } } {
    for (let n = 0; n < Math.max(this.desired, 1); n++) {
      if (!this.held.has(n)) {
        this.held.set(n, null);
        return { slot: n };
      }
    }
    for (const [slot, inst] of this.held) if (inst && inst.goal !== 'run') return { held: { id: inst.id, slot } };
    const [slot, inst] = [...this.held.entries()].find(([, i]) => i !== null) ?? [0, null];
    return { held: { id: inst?.id ?? '?', slot } };
  }
}

/** 5. Unresponsive instances: destroyed once their role is back to strength, or after a grace. */
function planUnresponsive(input: PlanInput, o: PlannerOptions, { unresponsive }: Sorted, b: PlanBuilder): void {
  for (const u of unresponsive) {
    const s = u.role !== null ? own(b.summaries, u.role) : undefined;
    const role = u.role !== null ? own(input.app.spec.roles, u.role) : undefined;
    // Its slot (and volumes) or its fixed ports go to the replacement only once it is gone: no waiting for strength.
    const strong = !s || s.serving >= s.desired || (role !== undefined && inPlace(role));
    const since = u.state === 'unresponsive' ? u.stateSince : input.now;
    if (strong || input.now - since >= o.unresponsiveGraceMs) {
      b.actions.push({
        kind: 'destroy', instanceId: u.id, role: u.role, finalState: 'unresponsive',
        reason: strong ? `${u.id} was unresponsive and is replaced; destroying it` : `${u.id} unresponsive for ${Math.round(o.unresponsiveGraceMs / 1000)}s; destroying it`,
      });
    } else b.wakeIn(since + o.unresponsiveGraceMs - input.now);
    b.converged = false;
  }
}

/** 6. Drains: the drain order goes once every importer has applied imports without the member. */
function planDrainOrders(input: PlanInput, o: PlannerOptions, { alive }: Sorted, b: PlanBuilder): void {
  const { spec } = input.app;
  for (const i of alive) {
    // A drain cancelled in this pass (undrain) gets no drain order.
    if (i.goal !== 'drain' || i.drainOrderId !== null || i.role === null || b.ordered.has(i.id)) continue;
    const role = own(spec.roles, i.role);
    if (!role) continue;
    const importers = alive.filter(
      (x) => x.role !== null && x.goal === 'run' && x.assignOrderId !== null && dependents(spec, role.name).includes(x.role),
    );
    const caughtUp = importers.every((x) => !b.importsSentTo.has(x.id) && x.importsApplied === x.importsSent);
    const waited = input.now - (i.drainRequestedAt ?? input.now);
    if (caughtUp || waited >= o.deregisterTimeoutMs) {
      b.actions.push({
        kind: 'drainOrder', instanceId: i.id, role: role.name, timeoutMs: role.drainTimeoutMs,
        reason: caughtUp
          ? `${i.id} is out of ${importers.length ? 'its importers' : 'rotation'}; draining (up to ${role.drainTimeoutMs / 1000}s)`
          : `${i.id}: importers did not confirm within ${o.deregisterTimeoutMs / 1000}s; draining anyway`,
      });
    } else b.wakeIn(Math.min(200, o.deregisterTimeoutMs - waited));
  }
}

/** 7. Spare pools: refill (after claims), trim when the file asks for fewer; release spares of removed roles. */
function planSparePools(input: PlanInput, o: PlannerOptions, spares: SparePool, b: PlanBuilder): void {
  const { spec } = input.app;
  const pools: [string, number][] = [['*', spec.spares], ...Object.values(spec.roles).map((r) => [r.name, r.spares] as [string, number])];
  for (const [pool, want] of pools) {
    const inPool = spares.all.filter((s) => (s.pool ?? '*') === pool && !spares.claimed.has(s.id));
    b.spareCounts[pool] = inPool.length;
    if (inPool.length < want) {
      b.converged = false;
      for (let k = inPool.length; k < want; k++) {
        b.actions.push({
          kind: 'create', role: null, pool, roleHash: '',
          reason: `spares${pool === '*' ? '' : ` for ${pool}`} ${k}→${k + 1}: keeping ${want} warm`,
        });
      }
    } else if (inPool.length > want) {
      // Still booting first, then (on a cloud billed by the clock) the one whose paid period ends soonest, then the newest.
      const billing = billingOf(providerKindOf(providerSettingsOf(spec, pool)), o.billing);
      const paid = (i: PlanInstance) => Math.ceil(paidSecondsLeft(billing, input.now - i.createdAt));
      const extra = [...inPool].sort((x, y) => (x.state === 'provisioning' ? 0 : 1) - (y.state === 'provisioning' ? 0 : 1) || paid(x) - paid(y) || y.createdAt - x.createdAt);
      for (const s of extra.slice(0, inPool.length - want)) {
        b.actions.push({ kind: 'stop', instanceId: s.id, role: null, reason: `spares${pool === '*' ? '' : ` for ${pool}`}: ${want} wanted; releasing ${s.id}` });
      }
    }
  }
  for (const s of spares.all) {
    if (s.pool !== null && s.pool !== '*' && !own(spec.roles, s.pool)) b.actions.push({ kind: 'stop', instanceId: s.id, role: null, reason: `role ${s.pool} was removed; releasing its spare ${s.id}` });
  }
}

export interface RecentFailures {
  readonly count: number;
  readonly last: number;
  readonly oldest: number;
}

/**
 * Instances of `role` running its current spec that failed or went silent within the window, and
 * after `clearedAt`. A changed spec starts with a clean slate, and so does `drover retry`: the
 * operator may have fixed what was failing.
 */
export function recentFailures(instances: readonly PlanInstance[], role: string, hash: string, now: number, o: PlannerOptions, clearedAt = 0): RecentFailures {
  const recent = instances.filter(
    (i) =>
      i.role === role && i.roleHash === hash && (i.state === 'failed' || i.state === 'unresponsive') && now - i.stateSince < o.failureWindowMs && i.stateSince > clearedAt,
  );
  if (recent.length === 0) return { count: 0, last: 0, oldest: 0 };
  const times = recent.map((i) => i.stateSince);
  return { count: recent.length, last: Math.max(...times), oldest: Math.min(...times) };
}

/**
 * How long a role must still wait before another replacement. One failure is replaced at once (an
 * agent can die for reasons of its own); repeated failures are a pattern, each doubling the wait.
 */
export function failureBackoff(f: RecentFailures, now: number, o: PlannerOptions): number {
  if (f.count < 2) return 0;
  const delay = Math.min(o.failureBackoffMaxMs, o.failureBackoffMs * 2 ** (f.count - 2));
  return Math.max(0, f.last + delay - now);
}
