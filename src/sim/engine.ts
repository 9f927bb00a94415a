/**
 * One simulated run: Drover's own `evaluate` (policy) and `plan` (reconcile planner) on a
 * virtual clock, against a simulated provider and agents, with the demand of a trace served by
 * the fluid queue of queue.ts.
 *
 * Each tick, at virtual time `now`:
 * 1. control — agents heartbeat; the policy is evaluated (as the controller's autoscaler does:
 *    `current` is the role's desired count, `instances` its live instances); then the planner
 *    runs and the simulated provider and agents carry out its actions, and the planner runs
 *    again until it has nothing more to do now (as the controller re-plans at once after a
 *    destroy). Instances whose boot ends by `now` register in between, so a boot of 0 serves
 *    in the same tick.
 * 2. serve — the tick's demand meets the capacity of the instances serving in the load
 *    balancer, through the fluid queue; the SLO minute, cost and series are accounted.
 * 3. observe — each serving instance reports its metrics at the end of the tick; crashes are
 *    drawn for the tick.
 * State changes thus take effect at tick boundaries: a boot of 50 s at 15 s ticks serves after
 * 60 s. Draining is instantaneous (in-flight work sits in the load balancer's backlog here).
 */
import {
  decideSizes,
  DEFAULT_PLANNER_OPTIONS,
  historyNeededMs,
  MetricStore,
  plan,
  roleHash,
  type AppSpec,
  type PlanAction,
  type PlanInstance,
  type PlannerOptions,
  type Policy,
  type PolicyState,
  type RoleSpec,
} from '../core/index.js';
import { evaluateWithForecast, type CombinedState, type ForecastPolicy } from './forecast.js';
import { erlangC, erlangWait, fluidStep } from './queue.js';
import { Rng } from './rng.js';
import { traceDurationMs, type Trace } from './trace.js';
import { bootUpperMs, sampleBoot, SimInputError, type BootDistribution, type Slo } from './units.js';

// ---------------------------------------------------------------------------------------------
// Options and report

/**
 * The seam for tenant placement (not built yet): called at every control step with the
 * role's instances, it returns the tenants each instance hosts, which the planner then weighs
 * when choosing scale-in victims. Absent: no tenants.
 */
export interface TenantPlacement {
  place(snapshot: { readonly now: number; readonly instances: readonly PlanInstance[] }): ReadonlyMap<string, number>;
}

/** A count over time instead of policies: fixed provisioning and the oracle. */
export interface Schedule {
  /** The desired count during tick `k` (tick k covers [k × tickMs, (k + 1) × tickMs) of the trace). */
  desiredAt(k: number): number;
}

/** Metrics the simulated instances and load balancer report; a policy may scale on any of them. */
export const SIM_METRICS = {
  cpu: "per instance: busy share of the instance's capacity, 0..1 (1 core = the capacity)",
  host_cpu: 'per instance: same as cpu (the role is all the instance runs)',
  rps: 'per instance: requests served per second',
  demand: 'role-wide: requests per second arriving at the load balancer, served or not',
  backlog: 'role-wide: requests waiting in the load balancer',
} as const;
type SimMetric = keyof typeof SIM_METRICS;
const isSimMetric = (m: string): m is SimMetric => Object.hasOwn(SIM_METRICS, m);

export interface SimulateOptions {
  /** The run's name in reports. */
  readonly name: string;
  /** What the run is, in a few words. @default the policies, described */
  readonly description?: string;
  readonly app: AppSpec;
  /** The role simulated; the others are left out (their instances are not what this measures). */
  readonly role: string;
  /** Replaces the role's `scale:`. */
  readonly policies?: readonly Policy[];
  /** Replaces policies with a count over time. */
  readonly schedule?: Schedule;
  /** A predictive policy evaluated beside the core ones (see forecast.ts). */
  readonly forecast?: ForecastPolicy;
  /** Replace the role's bounds, warm spares (the app-wide pool then is 0) and warm-up. */
  readonly min?: number;
  readonly max?: number;
  readonly spares?: number;
  readonly warmupMs?: number;
  /** Count at the start (instances then already serving). @default demand of the first tick, within min/max */
  readonly initial?: number;
  readonly trace: Trace;
  /** Requests per second one instance serves at full use, as the policies are told (and the oracle knows it truly is, times capacityFactor). */
  readonly capacity: number;
  /** What an instance truly serves, relative to `capacity`: 0.8 is 20% slower than configured. @default 1 */
  readonly capacityFactor?: number;
  /**
   * `erlang`: M/M/c waits below saturation (each instance `serversPerInstance` servers) on top of
   * the fluid backlog beyond it; `fluid`: nobody waits below saturation. @default 'erlang'
   */
  readonly queueModel?: 'erlang' | 'fluid';
  /** @default 1 */
  readonly serversPerInstance?: number;
  /** Metrics carry the sampling noise of one scrape over `scrapeMs`. @default true */
  readonly metricNoise?: boolean;
  /** The window one scrape measures rates over. @default 5000 */
  readonly scrapeMs?: number;
  /** Age of a sample when the policy can first read it (scrape interval, transport). @default 5000 */
  readonly metricLagMs?: number;
  /** A draining instance is billed this long after its drain order. @default the role's drainTimeoutMs */
  readonly drainMs?: number;
  readonly boot: BootDistribution;
  /** From a role assignment (or a spare's claim) to serving. @default 0 */
  readonly startMs?: number;
  /** Crashes per instance-hour, for registered instances. @default 0 */
  readonly crashRate?: number;
  readonly slo: Slo;
  readonly seed: number;
  /** @default 15000 */
  readonly tickMs?: number;
  /**
   * Time between policy evaluations, a whole number of ticks: the HPA's sync period, a
   * CloudWatch alarm's period. @default tickMs
   */
  readonly evaluateEveryMs?: number;
  /** Clients give up after waiting this long. @default 30000 */
  readonly timeoutMs?: number;
  /** Points of the report's series (for plots). @default 1200 */
  readonly seriesPoints?: number;
  readonly placement?: TenantPlacement;
  readonly plannerOptions?: Partial<PlannerOptions>;
  /**
   * Run the planner at every tick even when its last plan was converged with nothing to do and
   * nothing changed since (the report is the same; tests check that). @default false
   */
  readonly replanEveryTick?: boolean;
}

export interface Series {
  /** Start of the trace (epoch ms, or 0). */
  readonly startMs: number;
  /** Length of one point. */
  readonly bucketMs: number;
  /** Mean demand, requests/s. */
  readonly demand: readonly number[];
  /** Mean serving capacity, requests/s. */
  readonly capacity: readonly number[];
  /** Mean instances paid for (serving, booting, spare, leaving). */
  readonly instances: readonly number[];
  /** Share of the point's minutes violating the SLO. */
  readonly violating: readonly number[];
}

export interface Report {
  readonly name: string;
  readonly description: string;
  /** Instance-hours paid: every instance from its creation to its destruction, spares included. */
  readonly instanceHours: number;
  /** SLO intervals (minutes, or ticks when ticks are longer). */
  readonly minutes: number;
  readonly violatingMinutes: number;
  readonly sloViolationShare: number;
  readonly requests: number;
  /** Requests that found a backlog and waited. */
  readonly queued: number;
  /** Requests given up after the client timeout, or refused with no serving instance. */
  readonly dropped: number;
  /** Mean wait over all requests, a dropped one counting as the timeout. */
  readonly meanWaitMs: number;
  /** Changes of the desired count. */
  readonly scalingActions: number;
  readonly peakInstances: number;
  readonly meanInstances: number;
  readonly crashes: number;
  /** Ticks at which the planner held replacements back (failure backoff or degraded role). */
  readonly heldTicks: number;
  /**
   * From each rise of the desired count to as many instances serving (or the count lowered to
   * what serves): what a warm spare shortens to a role assignment, and a boot lengthens. Whole
   * ticks: instances start serving at tick boundaries. Rises still unserved at the end are left out.
   */
  readonly timeToServe: { readonly count: number; readonly meanMs: number; readonly p90Ms: number; readonly maxMs: number };
  readonly series: Series;
}

// ---------------------------------------------------------------------------------------------
// Simulated instances

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

interface SimInstance extends Mutable<PlanInstance> {
  /** When the agent registers (end of boot). */
  readyAt: number;
  /** When an assigned instance starts serving. */
  servingAt: number | null;
  servingSince: number | null;
  crashed: boolean;
  /** When a draining instance has finished (terminated). */
  drainUntil: number | null;
}

// ---------------------------------------------------------------------------------------------
// simulate

export function simulate(options: SimulateOptions): Report {
  const o = options;
  const tickMs = o.tickMs ?? 15_000;
  const timeoutMs = o.timeoutMs ?? 30_000;
  const startMs = o.startMs ?? 0;
  const dt = tickMs / 1000;
  if (!(o.capacity > 0)) throw new SimInputError('--capacity', 'expected requests/s per instance greater than 0');
  const trueCapacity = o.capacity * (o.capacityFactor ?? 1);
  if (!(trueCapacity > 0)) throw new SimInputError('capacityFactor', 'expected a factor greater than 0');
  const erlang = (o.queueModel ?? 'erlang') === 'erlang';
  const spi = Math.max(1, Math.round(o.serversPerInstance ?? 1));
  const noisy = o.metricNoise ?? true;
  const scrapeS = (o.scrapeMs ?? 5000) / 1000;
  const lagMs = Math.max(0, o.metricLagMs ?? 5000);
  if (!(tickMs > 0)) throw new SimInputError('tick', 'expected a tick greater than 0');
  const sloMs = 60_000;
  if (sloMs % tickMs !== 0 && tickMs % sloMs !== 0) {
    throw new SimInputError('tick', `expected a tick that divides a minute or is a whole number of minutes, got ${tickMs}ms`);
  }
  const evaluateEvery = Math.round((o.evaluateEveryMs ?? tickMs) / tickMs);
  if (evaluateEvery < 1 || Math.abs(evaluateEvery * tickMs - (o.evaluateEveryMs ?? tickMs)) > 1e-6) {
    throw new SimInputError('evaluateEveryMs', `expected a whole number of ticks (${tickMs}ms), got ${o.evaluateEveryMs}ms`);
  }
  const baseRole = Object.hasOwn(o.app.roles, o.role) ? o.app.roles[o.role] : undefined;
  if (!baseRole) throw new SimInputError('--role', `no role ${JSON.stringify(o.role)} in app ${o.app.app}`);

  const policies = o.schedule ? [] : (o.policies ?? baseRole.scale);
  const role: RoleSpec = {
    ...baseRole,
    imports: [],
    scale: policies,
    min: o.min ?? baseRole.min,
    max: o.max ?? baseRole.max,
    spares: o.spares ?? baseRole.spares,
    warmupMs: o.warmupMs ?? baseRole.warmupMs,
  };
  const app: AppSpec = { app: o.app.app, spares: o.spares !== undefined ? 0 : o.app.spares, roles: { [role.name]: role } };
  const wanted = new Set<SimMetric>();
  for (const p of o.forecast && !o.schedule ? [...policies, o.forecast] : policies) {
    if (!isSimMetric(p.metric)) {
      throw new SimInputError(
        `roles.${role.name}.scale`,
        `metric ${JSON.stringify(p.metric)} is not simulated; the simulator reports ${Object.keys(SIM_METRICS).join(', ')}`,
      );
    }
    wanted.add(p.metric);
  }
  const bootUpper = bootUpperMs(o.boot);
  const plannerOptions: PlannerOptions = {
    ...DEFAULT_PLANNER_OPTIONS,
    // A boot longer than the provision timeout would be failed as stuck; the controller
    // needs the same setting for instances that take that long.
    provisionTimeoutMs: Math.max(DEFAULT_PLANNER_OPTIONS.provisionTimeoutMs, 2 * bootUpper + tickMs),
    ...o.plannerOptions,
  };

  // Demand per tick: the trace's rate, averaged over the tick when the trace is finer.
  const durationMs = traceDurationMs(o.trace);
  const ticks = Math.ceil(durationMs / tickMs);
  const lambdas = tickRates(o.trace, tickMs, ticks);

  const bootRng = new Rng(o.seed, 1);
  const crashRng = new Rng(o.seed, 2);
  const noiseRng = new Rng(o.seed, 3);
  const drainMs = o.drainMs ?? baseRole.drainTimeoutMs;
  const crashP = 1 - Math.exp(-(o.crashRate ?? 0) * (tickMs / 3_600_000));

  const metrics = new MetricStore({ horizonMs: Math.max(historyNeededMs(policies), o.forecast?.windowMs ?? 0) + 2 * tickMs + lagMs });
  let policyState: PolicyState | undefined;
  let combinedState: CombinedState | undefined;

  let alive: SimInstance[] = [];
  let gone: SimInstance[] = [];
  let nextId = 1;
  let nextOrder = 1;
  const newId = () => `i-${String(nextId++).padStart(7, '0')}`;
  const orderId = () => `o-${nextOrder++}`;

  const t0 = 0;
  const clampCount = (n: number) => Math.min(role.max, Math.max(role.min, n));
  let desired = clampCount(o.initial ?? (o.schedule ? o.schedule.desiredAt(0) : Math.max(1, needed(lambdas[0] ?? 0, trueCapacity))));
  const hash = roleHash(role);

  const make = (now: number, roleName: string | null, pool: string | null, spec: string, readyAt: number): SimInstance => ({
    id: newId(),
    role: roleName,
    pool,
    state: 'provisioning',
    goal: 'run',
    roleHash: spec,
    exports: null,
    importsSent: null,
    importsApplied: null,
    assignOrderId: null,
    stopOrderId: null,
    drainOrderId: null,
    createdAt: now,
    stateSince: now,
    stopRequestedAt: null,
    drainRequestedAt: null,
    destroyedAt: null,
    lastSeenAt: null,
    busy: 0,
    tenants: 0,
    readyAt,
    servingAt: null,
    servingSince: null,
    crashed: false,
    drainUntil: null,
  });

  // Warm start: the initial count already serves, the spare pools are already full.
  for (let k = 0; k < desired; k++) {
    const i = make(t0, role.name, null, hash, t0);
    i.state = 'serving';
    i.assignOrderId = orderId();
    i.exports = {};
    i.lastSeenAt = t0;
    // Past warm-up already: the run starts from a role that has been serving for a while.
    i.servingSince = t0 - role.warmupMs;
    i.startedAt = i.servingSince;
    alive.push(i);
  }
  for (const [pool, n] of [[role.name, role.spares], ['*', app.spares]] as const) {
    for (let k = 0; k < n; k++) {
      const i = make(t0, null, pool, '', t0);
      i.state = 'spare';
      i.lastSeenAt = t0;
      alive.push(i);
    }
  }

  const setState = (i: SimInstance, state: SimInstance['state'], now: number) => {
    i.state = state;
    i.stateSince = now;
  };

  let settled = false;
  let plannedFor = -1;
  // Rises of the desired count not yet served, and how long the served ones took.
  let rises: { at: number; target: number }[] = [];
  const served: number[] = [];

  const processDue = (now: number): boolean => {
    let changed = false;
    for (const i of alive) {
      if (i.crashed) continue;
      if (i.state === 'provisioning' && i.readyAt <= now) {
        setState(i, 'spare', now);
        i.lastSeenAt = now;
        changed = true;
      } else if (i.state === 'assigned' && i.servingAt !== null && i.servingAt <= now) {
        setState(i, 'serving', now);
        i.servingSince = i.servingAt;
        i.startedAt = i.servingAt;
        i.exports = {};
        changed = true;
      } else if (i.state === 'draining' && i.drainUntil !== null && i.drainUntil <= now) {
        setState(i, 'terminated', now);
        changed = true;
      }
    }
    if (changed) settled = false;
    return changed;
  };

  let heldTicks = 0;
  let held = false;

  const execute = (actions: readonly PlanAction[], now: number): boolean => {
    let changed = false;
    // Actions name instances of the snapshot the plan saw, never ones made by this same plan.
    const index = actions.length > 0 ? new Map(alive.map((i) => [i.id, i])) : undefined;
    const byId = (id: string) => index?.get(id);
    const destroyed = new Set<string>();
    for (const a of actions) {
      switch (a.kind) {
        case 'create': {
          alive.push(make(now, a.role, a.pool, a.roleHash, now + sampleBoot(o.boot, bootRng)));
          changed = true;
          break;
        }
        case 'assign': {
          const i = byId(a.instanceId);
          if (!i || i.crashed) break;
          i.role = a.role;
          i.pool = null;
          i.roleHash = a.roleHash;
          i.assignOrderId = orderId();
          i.importsSent = a.importsVersion;
          i.importsApplied = a.importsVersion;
          i.servingAt = now + startMs;
          setState(i, 'assigned', now);
          changed = true;
          break;
        }
        case 'imports': {
          const i = byId(a.instanceId);
          if (i) {
            i.importsSent = a.importsVersion;
            i.importsApplied = a.importsVersion;
          }
          break;
        }
        case 'stop': {
          const i = byId(a.instanceId);
          if (!i) break;
          i.goal = 'stop';
          i.stopOrderId = orderId();
          i.stopRequestedAt = now;
          // A crashed agent cannot stop; the planner destroys it once its stop times out.
          if (!i.crashed) setState(i, 'terminated', now);
          changed = true;
          break;
        }
        case 'drain': {
          const i = byId(a.instanceId);
          if (!i) break;
          i.goal = 'drain';
          i.drainRequestedAt = now;
          changed = true;
          break;
        }
        case 'drainOrder': {
          const i = byId(a.instanceId);
          if (!i) break;
          i.drainOrderId = orderId();
          // Billed while it finishes its in-flight work and connections (out of rotation already).
          if (!i.crashed) {
            if (drainMs > 0) {
              setState(i, 'draining', now);
              i.drainUntil = now + drainMs;
            } else setState(i, 'terminated', now);
          }
          changed = true;
          break;
        }
        case 'undrain': {
          const i = byId(a.instanceId);
          if (!i) break;
          i.goal = 'run';
          i.drainRequestedAt = null;
          changed = true;
          break;
        }
        case 'unresponsive': {
          const i = byId(a.instanceId);
          if (!i) break;
          setState(i, 'unresponsive', now);
          changed = true;
          break;
        }
        case 'destroy': {
          const i = byId(a.instanceId);
          if (!i) break;
          if (i.state !== 'terminated' && i.state !== 'failed') setState(i, a.finalState, now);
          i.destroyedAt = now;
          destroyed.add(i.id);
          changed = true;
          break;
        }
        case 'note':
          held = true;
          break;
        case 'forgetApp':
          break;
      }
    }
    if (destroyed.size > 0) {
      gone.push(...alive.filter((i) => destroyed.has(i.id)));
      alive = alive.filter((i) => !destroyed.has(i.id));
    }
    return changed;
  };

  // Accounting.
  const bucketMs = Math.max(sloMs, tickMs);
  const ticksPerBucket = bucketMs / tickMs;
  const minutes = Math.ceil(ticks / ticksPerBucket);
  const points = Math.max(1, Math.min(minutes, o.seriesPoints ?? 1200));
  const minutesPerPoint = Math.ceil(minutes / points);
  const nPoints = Math.ceil(minutes / minutesPerPoint);
  const sDemand = new Float64Array(nPoints);
  const sCapacity = new Float64Array(nPoints);
  const sInstances = new Float64Array(nPoints);
  const sViolating = new Float64Array(nPoints);
  const sTicks = new Float64Array(nPoints);
  const sMinutes = new Float64Array(nPoints);

  let bArrivals = 0;
  let bWait = 0;
  let bCapSeconds = 0;
  let violating = 0;
  let requests = 0;
  let queued = 0;
  let dropped = 0;
  let waitTotal = 0;
  let instanceSeconds = 0;
  let peak = 0;
  let actions = 0;
  let crashes = 0;
  let backlog = 0;
  const timeoutS = timeoutMs / 1000;
  const pastTicks: { lambda: number; util: number; perInstance: number; q0: number; q1: number; lq: number; ids: number }[] = [];

  const closeBucket = (minute: number) => {
    let bad: boolean;
    if (o.slo.kind === 'wait') bad = bArrivals > 0 && (bWait / bArrivals) * 1000 > o.slo.ms;
    else bad = bArrivals > 0 && (bCapSeconds <= 0 || bArrivals / bCapSeconds > o.slo.max);
    if (bad) violating++;
    const p = Math.floor(minute / minutesPerPoint);
    sViolating[p] = (sViolating[p] ?? 0) + (bad ? 1 : 0);
    sMinutes[p] = (sMinutes[p] ?? 0) + 1;
    bArrivals = 0;
    bWait = 0;
    bCapSeconds = 0;
  };

  for (let k = 0; k < ticks; k++) {
    const now = t0 + k * tickMs;

    // 1. control
    for (const i of alive) if (!i.crashed && i.state !== 'provisioning') i.lastSeenAt = now;
    if (o.placement) {
      const tenants = o.placement.place({ now, instances: alive });
      for (const i of alive) i.tenants = tenants.get(i.id) ?? 0;
    }
    processDue(now);
    const desiredBefore = desired;
    if (o.schedule) {
      const next = clampCount(o.schedule.desiredAt(k));
      if (next !== desired) actions++;
      desired = next;
    } else if ((policies.length > 0 || o.forecast) && k % evaluateEvery === 0) {
      const live = alive.filter((i) => i.role === role.name && i.goal === 'run' && i.state !== 'terminated' && i.state !== 'failed' && i.state !== 'unresponsive');
      const ctx = {
        role: role.name,
        now,
        current: desired,
        min: role.min,
        max: role.max,
        instances: live.map((i) => ({ id: i.id, servingSince: i.state === 'serving' ? i.servingSince : null })),
        warmupMs: role.warmupMs,
        metrics,
      };
      let d: { desired: number; changed: boolean };
      if (o.forecast) {
        // The sim-only forecast variant wraps the policies in its own pre-scaling.
        const c = evaluateWithForecast(policies, o.forecast, ctx, combinedState);
        combinedState = c.state;
        d = c;
      } else {
        // The controller's own decision step (core/decide.ts): which instances count, the scale-in
        // hold while a role has no history, the policies.
        const sized = decideSizes({
          app: { name: app.app, spec: app, deleting: false },
          roles: { [role.name]: { desired, pinned: false, ...(policyState ? { policyState } : {}) } },
          instances: gone.length > 0 ? [...alive, ...gone] : alive,
          now,
          metrics,
        });
        const c = sized.decisions[role.name];
        if (c) policyState = c.state;
        d = { desired: sized.desired[role.name] ?? desired, changed: c?.changed ?? false };
      }
      if (d.changed) {
        actions++;
        desired = d.desired;
      }
    }
    if (desired > desiredBefore) rises.push({ at: now, target: desired });
    held = false;
    const failureCutoff = now - plannerOptions.failureWindowMs;
    if (gone.length > 0 && (gone[0]?.destroyedAt ?? now) < failureCutoff) gone = gone.filter((i) => (i.destroyedAt ?? now) >= failureCutoff);
    // A converged plan with nothing to do stays so until its input changes: the same answer
    // without the cost of asking (see replanEveryTick).
    if (desired !== plannedFor) settled = false;
    // A crash the planner has not noticed yet (heartbeat not yet overdue) is a change to come.
    if (settled && crashP > 0 && alive.some((i) => i.crashed && i.state !== 'unresponsive' && i.state !== 'terminated')) settled = false;
    for (let pass = 0; pass < 8 && !settled; pass++) {
      const p = plan({
        app: { name: app.app, spec: app, deleting: false },
        desired: { [role.name]: desired },
        instances: gone.length > 0 ? [...alive, ...gone] : alive,
        now,
        controllerStartedAt: t0,
        options: plannerOptions,
      });
      const changed = execute(p.actions, now);
      const due = processDue(now);
      if (!changed && !due) {
        settled = p.converged && p.actions.length === 0 && !o.replanEveryTick && !o.placement;
        plannedFor = desired;
        break;
      }
    }
    if (held) heldTicks++;

    // 2. serve
    let nServing = 0;
    for (const i of alive) if (i.role === role.name && i.goal === 'run' && i.state === 'serving' && !i.crashed) nServing++;
    if (rises.length > 0 && rises.some((r) => nServing >= Math.min(r.target, desired))) {
      for (const r of rises) if (nServing >= Math.min(r.target, desired)) served.push(now - r.at);
      rises = rises.filter((r) => nServing < Math.min(r.target, desired));
    }
    const lambda = lambdas[k] ?? 0;
    const mu = nServing * trueCapacity;
    const backlogBefore = backlog;
    const f = fluidStep(backlog, lambda, mu, dt, timeoutS);
    backlog = f.backlog;
    const arrivals = lambda * dt;
    // Below saturation, M/M/c: arrivals the fluid queue did not hold up wait Erlang C's mean
    // (pointwise stationary: the tick is long against a request's service time).
    let erlangWaitS = 0;
    let erlangQueued = 0;
    let lq = 0;
    if (erlang && lambda > 0 && lambda < mu) {
      const c = nServing * spi;
      const w = Math.min(timeoutS, erlangWait(c, lambda, trueCapacity / spi));
      const free = Math.max(0, arrivals - f.queued - f.dropped);
      erlangWaitS = free * w;
      erlangQueued = free * erlangC(c, lambda / (trueCapacity / spi));
      lq = lambda * w;
    }
    requests += arrivals;
    queued += f.queued + erlangQueued;
    dropped += f.dropped;
    const waited = f.waitSeconds + erlangWaitS + f.dropped * timeoutS;
    waitTotal += waited;
    bArrivals += arrivals;
    bWait += waited;
    bCapSeconds += mu * dt;
    // Paid from creation to destruction: booting, spare, serving, draining, crashed alike.
    const billed = alive.length;
    instanceSeconds += billed * dt;
    if (billed > peak) peak = billed;
    const minute = Math.floor(k / ticksPerBucket);
    const p = Math.floor(minute / minutesPerPoint);
    sDemand[p] = (sDemand[p] ?? 0) + lambda;
    sCapacity[p] = (sCapacity[p] ?? 0) + mu;
    sInstances[p] = (sInstances[p] ?? 0) + billed;
    sTicks[p] = (sTicks[p] ?? 0) + 1;
    if ((k + 1) % ticksPerBucket === 0 || k === ticks - 1) closeBucket(minute);

    // 3. observe: what a scrape `lagMs` before the tick's end saw (rates are constant within a
    // tick; the backlog is interpolated), with the sampling noise of one scrape.
    const end = now + tickMs;
    const util = mu > 0 ? f.served / (mu * dt) : 0;
    if (wanted.size > 0) {
      const lagTicks = Math.floor(lagMs / tickMs);
      const within = (lagMs - lagTicks * tickMs) / tickMs;
      pastTicks.push({ lambda, util, perInstance: nServing > 0 ? f.served / dt / nServing : 0, q0: backlogBefore, q1: backlog, lq, ids: nServing });
      if (pastTicks.length > lagTicks + 1) pastTicks.shift();
      const seen = pastTicks.length > lagTicks ? pastTicks[pastTicks.length - 1 - lagTicks] : undefined;
      const t = end - lagMs;
      const noise = (mean: number, sd: number) => (noisy && sd > 0 ? Math.max(0, mean + sd * noiseRng.normal()) : mean);
      for (const i of alive) {
        if (!(i.role === role.name && i.goal === 'run' && i.state === 'serving' && !i.crashed)) continue;
        i.busy = util;
        // An instance that was not serving when the scrape happened reports nothing yet.
        if (!seen || i.servingSince === null || i.servingSince > t) continue;
        const x = seen.perInstance;
        // Busy time of a scrape window: a compound Poisson sum of exponential service times.
        const uSd = Math.sqrt((2 * x * scrapeS) / (trueCapacity * trueCapacity)) / scrapeS + 0.01;
        if (wanted.has('cpu')) metrics.add(role.name, 'cpu', { t, value: Math.min(1, noise(seen.util, uSd)), instance: i.id });
        if (wanted.has('host_cpu')) metrics.add(role.name, 'host_cpu', { t, value: Math.min(1, noise(seen.util, uSd)), instance: i.id });
        if (wanted.has('rps')) metrics.add(role.name, 'rps', { t, value: noise(x, Math.sqrt(x / scrapeS)), instance: i.id });
      }
      if (seen) {
        if (wanted.has('demand')) metrics.add(role.name, 'demand', { t, value: noise(seen.lambda, Math.sqrt(seen.lambda / scrapeS)) });
        if (wanted.has('backlog')) metrics.add(role.name, 'backlog', { t, value: seen.q0 + (seen.q1 - seen.q0) * (1 - within) + seen.lq });
      }
    }
    if (crashP > 0) {
      for (const i of alive) {
        if (i.crashed || i.state === 'provisioning' || i.state === 'terminated' || i.state === 'unresponsive' || i.state === 'failed') continue;
        if (crashRng.next() < crashP) {
          i.crashed = true;
          i.lastSeenAt = now + crashRng.next() * tickMs;
          crashes++;
          settled = false;
        }
      }
    }
  }

  const mean = (a: Float64Array, n: Float64Array) => Array.from(a, (v, k) => round(v / Math.max(1, n[k] ?? 1), 3));
  return {
    name: o.name,
    description: o.description ?? (o.schedule ? 'schedule' : describePolicies(policies, role)),
    instanceHours: round(instanceSeconds / 3600, 4),
    minutes,
    violatingMinutes: violating,
    sloViolationShare: minutes > 0 ? violating / minutes : 0,
    requests: Math.round(requests),
    queued: Math.round(queued),
    dropped: Math.round(dropped),
    meanWaitMs: requests > 0 ? round((waitTotal / requests) * 1000, 3) : 0,
    scalingActions: actions,
    peakInstances: peak,
    meanInstances: round(instanceSeconds / Math.max(1, ticks * dt), 3),
    crashes,
    heldTicks,
    timeToServe: summarize(served),
    series: {
      startMs: o.trace.startMs,
      bucketMs: minutesPerPoint * bucketMs,
      demand: mean(sDemand, sTicks),
      capacity: mean(sCapacity, sTicks),
      instances: mean(sInstances, sTicks),
      violating: mean(sViolating, sMinutes),
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** Instances a rate needs at `capacity` each (float error absorbed: 100 / 10 is 10, not 11). */
export function needed(rate: number, capacity: number): number {
  const x = rate / capacity;
  return Math.max(0, Math.ceil(x - 1e-9 * Math.max(1, x)));
}

/** The trace's demand per tick: its rate, averaged over the tick where intervals are finer. */
export function tickRates(trace: Trace, tickMs: number, ticks: number): Float64Array {
  const out = new Float64Array(ticks);
  const step = trace.stepMs;
  const n = trace.rates.length;
  for (let k = 0; k < ticks; k++) {
    const from = k * tickMs;
    const to = from + tickMs;
    let sum = 0;
    let covered = 0;
    for (let j = Math.floor(from / step); j < n && j * step < to; j++) {
      const overlap = Math.min(to, (j + 1) * step) - Math.max(from, j * step);
      if (overlap <= 0) continue;
      sum += (trace.rates[j] ?? 0) * overlap;
      covered += overlap;
    }
    out[k] = covered > 0 ? sum / covered : 0;
  }
  return out;
}

function summarize(ms: readonly number[]): Report['timeToServe'] {
  if (ms.length === 0) return { count: 0, meanMs: 0, p90Ms: 0, maxMs: 0 };
  const sorted = [...ms].sort((a, b) => a - b);
  const sum = sorted.reduce((a, b) => a + b, 0);
  return { count: sorted.length, meanMs: Math.round(sum / sorted.length), p90Ms: sorted[Math.min(sorted.length - 1, Math.ceil(0.9 * sorted.length) - 1)]!, maxMs: sorted[sorted.length - 1]! };
}

function round(v: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

/** `target cpu 0.8; threshold cpu >0.9 <0.15` and the role's spares, for report rows. */
export function describePolicies(policies: readonly Policy[], role: Pick<RoleSpec, 'spares' | 'warmupMs'>): string {
  const parts = policies.map((p) => {
    if (p.kind === 'threshold') {
      const b = [p.upper !== undefined ? `>${p.upper}` : '', p.lower !== undefined ? `<${p.lower}` : ''].filter(Boolean).join(' ');
      return `threshold ${p.stat} ${p.metric} ${b} for ${p.forMs / 1000}s ±${p.step} cooldown ${p.cooldownMs / 1000}s`;
    }
    if (p.kind === 'target') return `target ${p.metric} ${p.target} (down-stab ${p.scaleDownStabilizationMs / 1000}s)`;
    if (p.kind === 'adaptive') return `adaptive ${p.metric} (p${Math.round(p.quantile * 100)} headroom${p.perInstance !== undefined ? `, prior ${p.perInstance}/s` : ''})`;
    return `queue ${p.metric}/${p.perInstance} (down-stab ${p.scaleDownStabilizationMs / 1000}s)`;
  });
  if (role.spares > 0) parts.push(`${role.spares} spare${role.spares > 1 ? 's' : ''}`);
  return parts.join(' + ') || 'no policy (fixed at its count)';
}
