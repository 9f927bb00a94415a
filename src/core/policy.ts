/**
 * Scaling policies: pure functions from a role's snapshot, its metrics and a time to a desired
 * count, with a sentence saying why. No clock, timers or I/O: the controller calls
 * {@link evaluate} on the real clock, the simulator on a virtual one, and both keep the returned
 * {@link PolicyState} (plain JSON) per role for the next call.
 *
 * The rules, as an operator would state them:
 * - `threshold` (step scaling): the role's value (mean, max or p95 across instances) stays above
 *   `upper` for `for` → add `step`; stays below `lower` for `for` → remove `step`. No action
 *   until `cooldown` has passed since the role's last scaling action.
 * - `target` (target tracking, as the Kubernetes HPA does it): desired =
 *   ceil(ready × mean / target), nothing within `tolerance` of the target, scale-down held back by
 *   the highest recommendation of the last `scaleDown.stabilization` (scale-up by the lowest of
 *   `scaleUp.stabilization`), and at most so many instances added or removed per period.
 *   `ready` is the number of instances past warm-up that reported the metric: instances still
 *   warming up bring capacity but no measured load yet, so the load measured on the ready ones is
 *   what the desired count must carry. This is `current` whenever nothing is warming up, and is
 *   what keeps a scale-up from being repeated while the new instances start (the HPA gets the
 *   same by counting unready pods as idle).
 * - `queue` (as KEDA does it): desired = ceil(backlog / perInstance) once the backlog reaches
 *   `activation` (and at least 1 then); below activation, 0. Scale-down is stabilized like the
 *   target policy's, so a drained queue does not drop its workers between two bursts.
 * - Several policies: the largest desired count wins, so a role scales in only when every policy
 *   agrees. A policy without data abstains (proposes the current count) and says so.
 * - `min` and `max` always bound the result.
 * - Samples of an instance count from the end of its warm-up: `servingSince + warmupMs`. An
 *   instance not serving yet contributes nothing to averages (its CPU would read as idle).
 *
 * Scaling actions are folded into the state: when {@link evaluate} returns `changed`, its
 * `state` already records the action (for cooldowns and rate limits), on the assumption that the
 * caller carries it out. A change made elsewhere (`drover scale`) is told with {@link recordAction}.
 */
import {
  capacityOf,
  capacityPrior,
  growthQuantile,
  holdFor,
  INITIAL_HEADROOM,
  observeCapacity,
  type CapacityEstimate,
} from './adaptive.js';
import { EMPTY_FORECAST, MINUTE_MS, observeMinute, predictRate, trusted, type ForecastState } from './forecast.js';
import { instantStats, statOf, type MetricStore, type Sample, type StatName } from './metrics.js';

// ---------------------------------------------------------------------------------------------
// Compiled policies

export interface ThresholdPolicy {
  readonly kind: 'threshold';
  readonly metric: string;
  /** Scale out while the value stays above this. Absent: this policy never scales out. */
  readonly upper?: number;
  /** Scale in while the value stays below this. Absent: this policy never scales in. */
  readonly lower?: number;
  /** How long the value must stay past a bound. @default 60000 */
  readonly forMs: number;
  /** Instances added or removed per action. @default 1 */
  readonly step: number;
  /** Time after the role's last scaling action before this policy acts again. @default 300000 */
  readonly cooldownMs: number;
  /** Across instances at each moment: mean, hottest (max) or 95th percentile. @default 'mean' */
  readonly stat: StatName;
}

/** A limit on how fast target tracking changes the count (an HPA behavior's policies). */
export interface RateLimit {
  /** At most this many instances per period. */
  readonly instances?: number;
  /** At most this percentage of the count at the start of the period. */
  readonly percent?: number;
  readonly periodMs: number;
  /**
   * With both limits, `max` allows the larger change and `min` the smaller; `disabled` forbids
   * change in this direction. Neither limit set: no limit. @default 'max'
   */
  readonly select: 'max' | 'min' | 'disabled';
}

export interface TargetPolicy {
  readonly kind: 'target';
  readonly metric: string;
  /** The per-instance mean to keep the metric at. */
  readonly target: number;
  /** No change while |mean / target - 1| is at most this. @default 0.1 */
  readonly tolerance: number;
  /** Scale up to the lowest recommendation of this window. @default 0 */
  readonly scaleUpStabilizationMs: number;
  /** Scale down to the highest recommendation of this window. @default 300000 */
  readonly scaleDownStabilizationMs: number;
  /** @default { instances: 4, percent: 100, periodMs: 15000, select: 'max' } */
  readonly scaleUp: RateLimit;
  /** @default { percent: 100, periodMs: 15000, select: 'max' } */
  readonly scaleDown: RateLimit;
  /** Samples averaged: those of the last windowMs. @default 60000 */
  readonly windowMs: number;
}

export interface QueuePolicy {
  readonly kind: 'queue';
  readonly metric: string;
  /** Backlog one instance is expected to handle. */
  readonly perInstance: number;
  /** Backlog at which the role wakes from zero (and below which it may go back to zero). @default 1 */
  readonly activation: number;
  /** Scale down to the highest recommendation of this window. @default 300000 */
  readonly scaleDownStabilizationMs: number;
}

/**
 * Request-driven scaling that needs no hand-set capacity: desired =
 * ceil((rate × (1 + headroom) + backlog to drain / drainWithin) / learned capacity).
 * - the capacity of one instance is learned online from the served rate and CPU of ready
 *   instances (and the served rate alone while a queue grows: they are saturated); a configured
 *   `perInstance` is only its prior (adaptive.ts);
 * - the headroom is the `quantile` of the rate's largest growth within one reaction time over
 *   the last `window`, so it follows how much demand jumps instead of a fixed target;
 * - a backlog (the `backlog` metric, or one inferred from arrivals beyond what is served) is
 *   drained within `drainWithin`, counted with what it grows by until new capacity serves;
 * - a seasonal + trend forecast of the rate raises the count ahead of time, only while it has
 *   recently beaten "the rate stays where it is" (forecast.ts);
 * - scale-down is held by the highest recommendation of a hold that grows with the headroom.
 */
export interface AdaptivePolicy {
  readonly kind: 'adaptive';
  /** Role-wide arrival rate, requests/s (the load balancer's request rate). */
  readonly metric: string;
  /** Prior of one instance's capacity, requests/s at full use. Absent: learned from nothing. */
  readonly perInstance?: number;
  /** Per-instance CPU. @default 'cpu' */
  readonly cpu: string;
  /** The CPU reading of one instance at full use (cores). @default 1 */
  readonly cores: number;
  /** Per-instance served rate, requests/s. Absent: the arrival rate over ready instances while no queue grows. */
  readonly served?: string;
  /** Role-wide queue length (requests waiting). Absent: inferred from arrivals beyond the served rate, when `served` is set. */
  readonly backlog?: string;
  /** From ordering an instance to its serving (boot, start, one evaluation). @default 120000 */
  readonly reactionMs: number;
  /** A backlog is sized to drain within this (the SLO's accounting interval). @default 60000 */
  readonly drainWithinMs: number;
  /** Share of recent growths the headroom covers. @default 0.9 */
  readonly quantile: number;
  /** Recent history the headroom is measured on. @default 3600000 */
  readonly windowMs: number;
  /** @default 0.1 */
  readonly minHeadroom: number;
  /** @default 0.5 */
  readonly maxHeadroom: number;
  /** Scale-down hold: reactions added per 100% of headroom. @default 2 */
  readonly holdPerHeadroom: number;
  /** @default 60000 */
  readonly minHoldMs: number;
  /** @default 900000 */
  readonly maxHoldMs: number;
  /** Learned capacity: weight halves per this much observation at full use. @default 3600000 */
  readonly learnHalfLifeMs: number;
  /** Pre-scale on the seasonal forecast (while it is trusted). @default true */
  readonly forecast: boolean;
  /** The forecast learns a day-of-week offset. @default true */
  readonly weekly: boolean;
}

export type Policy = ThresholdPolicy | TargetPolicy | QueuePolicy | AdaptivePolicy;
export type PolicyKind = Policy['kind'];

/** Where the @default values above live; the YAML schema reads them from here too. */
export const POLICY_DEFAULTS = {
  threshold: { forMs: 60_000, step: 1, cooldownMs: 300_000, stat: 'mean' },
  target: {
    tolerance: 0.1,
    scaleUpStabilizationMs: 0,
    scaleDownStabilizationMs: 300_000,
    scaleUp: { instances: 4, percent: 100, periodMs: 15_000, select: 'max' },
    scaleDown: { percent: 100, periodMs: 15_000, select: 'max' },
    windowMs: 60_000,
  },
  queue: { activation: 1, scaleDownStabilizationMs: 300_000 },
  adaptive: {
    cpu: 'cpu',
    cores: 1,
    reactionMs: 120_000,
    drainWithinMs: 60_000,
    quantile: 0.9,
    windowMs: 3_600_000,
    minHeadroom: 0.15,
    maxHeadroom: 0.5,
    holdPerHeadroom: 2,
    minHoldMs: 60_000,
    maxHoldMs: 900_000,
    learnHalfLifeMs: 3_600_000,
    forecast: true,
    weekly: true,
  },
} as const satisfies {
  threshold: Omit<ThresholdPolicy, 'kind' | 'metric' | 'upper' | 'lower'>;
  target: Omit<TargetPolicy, 'kind' | 'metric' | 'target'>;
  queue: Omit<QueuePolicy, 'kind' | 'metric' | 'perInstance'>;
  adaptive: Omit<AdaptivePolicy, 'kind' | 'metric' | 'perInstance' | 'served' | 'backlog'>;
};

/** Samples older than this do not count as an instance's current value. @default 30000 */
export const DEFAULT_LOOKBACK_MS = 30_000;

type Opt<P, Req extends keyof P> = Pick<P, Req> & Partial<Omit<P, Req | 'kind'>>;

export function thresholdPolicy(o: Opt<ThresholdPolicy, 'metric'>): ThresholdPolicy {
  return { kind: 'threshold', ...POLICY_DEFAULTS.threshold, ...o };
}

/** `scaleUp`/`scaleDown`, when given, replace the default limits whole (as HPA behaviors do). */
export function targetPolicy(o: Opt<TargetPolicy, 'metric' | 'target'>): TargetPolicy {
  return { kind: 'target', ...POLICY_DEFAULTS.target, ...o };
}

export function queuePolicy(o: Opt<QueuePolicy, 'metric' | 'perInstance'>): QueuePolicy {
  return { kind: 'queue', ...POLICY_DEFAULTS.queue, ...o };
}

export function adaptivePolicy(o: Opt<AdaptivePolicy, 'metric'>): AdaptivePolicy {
  return { kind: 'adaptive', ...POLICY_DEFAULTS.adaptive, ...o };
}

/** How much history a {@link MetricStore} must keep for these policies (its `horizonMs`). */
export function historyNeededMs(policies: readonly Policy[], lookbackMs = DEFAULT_LOOKBACK_MS): number {
  let ms = lookbackMs;
  for (const p of policies) {
    if (p.kind === 'threshold') ms = Math.max(ms, p.forMs + lookbackMs);
    else if (p.kind === 'target') ms = Math.max(ms, p.windowMs);
  }
  return ms;
}

// ---------------------------------------------------------------------------------------------
// Context, state, decision

export interface PolicyContext {
  readonly role: string;
  readonly now: number;
  /** Instances counted as capacity (the count the decision starts from). */
  readonly current: number;
  readonly min: number;
  readonly max: number;
  /**
   * The role's live instances. Samples of instances not listed here (gone ones) are ignored;
   * `servingSince` null means not serving yet.
   */
  readonly instances: readonly { readonly id: string; readonly servingSince: number | null }[];
  /** Time after `servingSince` before an instance's samples count. */
  readonly warmupMs: number;
  readonly metrics: MetricStore;
  /** The role's key in `metrics`, when it is not the role's name (the controller keys by `app/role`). @default role */
  readonly metricsKey?: string;
  /** @default DEFAULT_LOOKBACK_MS (30000) */
  readonly lookbackMs?: number;
}

/** A change of the role's count. */
export interface ScaleEvent {
  readonly t: number;
  readonly from: number;
  readonly to: number;
}

/** A policy's raw recommendation, kept for its stabilization window. */
export interface Recommendation {
  readonly t: number;
  readonly desired: number;
}

/**
 * What evaluations remember, per role: plain JSON, so the controller can store it and the
 * simulator copy it. Treat it as opaque; it is pruned at every evaluation.
 */
export interface PolicyState {
  readonly v: 1;
  /** Recent scaling actions, oldest first; the last one is always kept (cooldowns start there). */
  readonly events: readonly ScaleEvent[];
  /** Raw recommendations by policy key (`target:cpu`, `queue:backlog`, `#2` for repeats). */
  readonly recommendations: Readonly<Record<string, readonly Recommendation[]>>;
  /** What `adaptive` policies have learned, by policy key. */
  readonly learned?: Readonly<Record<string, AdaptiveState>>;
}

/** What one `adaptive` policy has learned (plain JSON). */
export interface AdaptiveState {
  /** The newest sample time consumed. */
  readonly t: number;
  readonly capacity: CapacityEstimate;
  /** The minute being accumulated (epoch minute), its demand sum and sample count. */
  readonly minute: number;
  readonly sum: number;
  readonly count: number;
  /** Mean rate of recent whole minutes, oldest first (the window's). */
  readonly rates: readonly number[];
  /** Headroom measured when the last minute closed (undefined: not enough minutes yet). */
  readonly headroom: number | null;
  /** Backlog inferred from arrivals beyond the served rate (without a backlog metric). */
  readonly inferredBacklog: number;
  readonly forecast: ForecastState;
}

export const EMPTY_POLICY_STATE: PolicyState = { v: 1, events: [], recommendations: {} };

export interface PolicyOutcome {
  readonly kind: PolicyKind;
  readonly metric: string;
  /** The count this policy asks for, before min/max; the current count when it abstains. */
  readonly desired: number;
  /** What it saw, in words: `mean cpu 0.82 > 0.75 for 30s`. */
  readonly reason: string;
  /** The policy had no usable data and abstained. */
  readonly noData: boolean;
  readonly inputs: Readonly<Record<string, number>>;
}

export interface Decision {
  /** Within [min, max]. */
  readonly desired: number;
  readonly changed: boolean;
  /** One sentence: `api 2→3: mean cpu 0.82 > 0.75 for 30s (cooldown clear, max 6)`. */
  readonly reason: string;
  /** `current`, `min`, `max`, `desired`, and `<kind>.<metric>.<name>` per policy. */
  readonly inputs: Readonly<Record<string, number>>;
  readonly perPolicy: readonly PolicyOutcome[];
  /** Keep it for the next evaluation; it records this decision's action when `changed`. */
  readonly state: PolicyState;
}

/** Records a change of the role's count made outside {@link evaluate}. */
export function recordAction(state: PolicyState | undefined, now: number, from: number, to: number): PolicyState {
  const s = normalize(state);
  if (from === to) return s;
  return { ...s, events: [...s.events, { t: now, from, to }] };
}

// ---------------------------------------------------------------------------------------------
// Evaluation

interface Outcome extends PolicyOutcome {
  /** Parenthesised notes when this policy's proposal is carried out. */
  readonly notes: readonly string[];
  readonly history?: readonly Recommendation[];
  readonly learned?: AdaptiveState;
}

/** Instances' standing in the snapshot: which samples count, and how many are ready. */
class View {
  /** Instance → time from which its samples count. */
  readonly countsFrom = new Map<string, number>();
  readonly listed = new Set<string>();
  readonly ready: number;

  constructor(ctx: PolicyContext) {
    let ready = 0;
    for (const i of ctx.instances) {
      this.listed.add(i.id);
      if (i.servingSince === null) continue;
      const from = i.servingSince + ctx.warmupMs;
      this.countsFrom.set(i.id, from);
      if (from <= ctx.now) ready++;
    }
    this.ready = ready;
  }

  /** Samples past their instance's warm-up (role-wide samples always count). */
  warm(samples: readonly Sample[]): Sample[] {
    return samples.filter((s) => {
      if (s.instance === undefined) return true;
      const from = this.countsFrom.get(s.instance);
      return from !== undefined && s.t >= from;
    });
  }

  /** Samples of listed instances, warming or not (a backlog is work whoever reports it). */
  present(samples: readonly Sample[]): Sample[] {
    return samples.filter((s) => s.instance === undefined || this.listed.has(s.instance));
  }
}

/**
 * The desired count of one role. Deterministic: the same policies, context and state give the
 * same decision. O(samples read + evaluation points × instances).
 */
export function evaluate(policies: readonly Policy[], ctx: PolicyContext, state: PolicyState | undefined): Decision {
  const prev = normalize(state);
  const view = new View(ctx);
  const lastActionAt = prev.events.at(-1)?.t;
  const keys = policyKeys(policies);

  const outcomes: Outcome[] = policies.map((p, k) => {
    const history = prev.recommendations[keys[k] ?? ''] ?? [];
    switch (p.kind) {
      case 'threshold':
        return evalThreshold(p, ctx, view, lastActionAt);
      case 'target':
        return evalTarget(p, ctx, view, prev.events, history);
      case 'queue':
        return evalQueue(p, ctx, view, history);
      case 'adaptive':
        return evalAdaptive(p, ctx, view, history, prev.learned?.[keys[k] ?? '']);
    }
  });

  const { current, min, max, role } = ctx;
  const clamp = (n: number) => Math.min(max, Math.max(min, n));
  let top: Outcome | undefined;
  for (const o of outcomes) if (!top || o.desired > top.desired) top = o;
  const wanted = top?.desired ?? current;
  const desired = clamp(wanted);
  const changed = desired !== current;

  let reason: string;
  const all = outcomes.map((o) => o.reason).join('; ') || 'no scaling policy';
  if (!changed) {
    const bound = wanted > max && current === max ? `, already at max ${max}` : wanted < min && current === min ? `, already at min ${min}` : '';
    reason = `${role} stays at ${current}: ${top && bound ? top.reason + bound : all}`;
  } else if (desired > current && wanted < desired) {
    reason = `${role} ${current}→${desired}: raised to min ${min} (${all})`;
  } else if (desired < current && wanted > desired) {
    reason = `${role} ${current}→${desired}: lowered to max ${max} (${all})`;
  } else if (!top) {
    // Unreachable: without a policy, `wanted` is `current` and only a bound can move it.
    reason = `${role} ${current}→${desired}: ${all}`;
  } else {
    const notes = [...top.notes];
    let text = top.reason;
    if (desired > current) {
      if (wanted > max) {
        text += `, wants ${wanted}`;
        notes.push(`capped at max ${max}`);
      } else notes.push(`max ${max}`);
    } else if (wanted < min) {
      text += `, wants ${wanted}`;
      notes.push(`held at min ${min}`);
    }
    reason = `${role} ${current}→${desired}: ${text}${notes.length > 0 ? ` (${notes.join(', ')})` : ''}`;
  }

  const inputs: Record<string, number> = { current, min, max, desired };
  outcomes.forEach((o, k) => {
    const prefix = keys[k] ?? '';
    for (const [name, v] of Object.entries(o.inputs)) inputs[`${prefix.replace(':', '.')}.${name}`] = v;
  });

  const recommendations: Record<string, readonly Recommendation[]> = {};
  outcomes.forEach((o, k) => {
    if (o.history && o.history.length > 0) recommendations[keys[k] ?? ''] = o.history;
    else if (o.noData) {
      const kept = prev.recommendations[keys[k] ?? ''];
      if (kept && kept.length > 0) recommendations[keys[k] ?? ''] = kept;
    }
  });
  const events = changed ? [...prev.events, { t: ctx.now, from: current, to: desired }] : prev.events;
  let learned: Record<string, AdaptiveState> | undefined;
  outcomes.forEach((o, k) => {
    const l = o.learned ?? prev.learned?.[keys[k] ?? ''];
    if (l) (learned ??= {})[keys[k] ?? ''] = l;
  });

  return {
    desired,
    changed,
    reason,
    inputs,
    perPolicy: outcomes.map(({ kind, metric, desired: d, reason: r, noData, inputs: i }) => ({
      kind,
      metric,
      desired: d,
      reason: r,
      noData,
      inputs: i,
    })),
    state: { v: 1, events: pruneEvents(events, policies, ctx.now), recommendations, ...(learned ? { learned } : {}) },
  };
}

function normalize(state: PolicyState | undefined): PolicyState {
  return state && state.v === 1 ? state : EMPTY_POLICY_STATE;
}

/** `kind:metric`, with `#2`, `#3` for repeats: stable when policies are reordered. */
function policyKeys(policies: readonly Policy[]): string[] {
  const seen = new Map<string, number>();
  return policies.map((p) => {
    const base = `${p.kind}:${p.metric}`;
    const n = (seen.get(base) ?? 0) + 1;
    seen.set(base, n);
    return n === 1 ? base : `${base}#${n}`;
  });
}

/** Events any policy may still need: within the longest cooldown or rate-limit period, and the last one. */
function pruneEvents(events: readonly ScaleEvent[], policies: readonly Policy[], now: number): readonly ScaleEvent[] {
  let keep = 0;
  for (const p of policies) {
    if (p.kind === 'threshold') keep = Math.max(keep, p.cooldownMs);
    else if (p.kind === 'target') keep = Math.max(keep, p.scaleUp.periodMs, p.scaleDown.periodMs);
  }
  const last = events.length - 1;
  const kept = events.filter((e, k) => k === last || now - e.t < keep);
  return kept.length === events.length ? events : kept;
}

const abstain = (p: Policy, ctx: PolicyContext, reason: string): Outcome => ({
  kind: p.kind,
  metric: p.metric,
  desired: ctx.current,
  reason,
  noData: true,
  inputs: {},
  notes: [],
});

// --- threshold -------------------------------------------------------------------------------

/** Evaluation points per `for` window: enough to see a dip, few enough to stay cheap at 10,000 instances. */
const MAX_POINTS = 30;

function evalThreshold(p: ThresholdPolicy, ctx: PolicyContext, view: View, lastActionAt: number | undefined): Outcome {
  const { now, current } = ctx;
  const lookback = ctx.lookbackMs ?? DEFAULT_LOOKBACK_MS;
  const n = p.forMs <= 0 ? 0 : Math.min(MAX_POINTS, Math.max(1, Math.ceil(p.forMs / 1000)));
  const times = Array.from({ length: n + 1 }, (_, k) => (k === n ? now : now - p.forMs + (p.forMs * k) / n));
  const samples = view.warm(ctx.metrics.window(ctx.metricsKey ?? ctx.role, p.metric, now - p.forMs - lookback, now));
  const values = instantStats(samples, times, lookback).map((s) => (s ? s[p.stat] : undefined));
  const value = values[n];
  if (value === undefined) return abstain(p, ctx, `no ${p.metric} data from instances past warm-up in the last ${dur(lookback)}`);

  const label = `${p.stat} ${p.metric} ${num(value)}`;
  const inputs: Record<string, number> = { value, forMs: p.forMs };
  if (p.upper !== undefined) inputs.upper = p.upper;
  if (p.lower !== undefined) inputs.lower = p.lower;
  const up = p.upper !== undefined && value > p.upper;
  const down = !up && p.lower !== undefined && value < p.lower;
  const stay = (reason: string): Outcome => ({ kind: p.kind, metric: p.metric, desired: current, reason, noData: false, inputs, notes: [] });

  if (!up && !down) {
    const within =
      p.upper !== undefined && p.lower !== undefined
        ? `within [${num(p.lower)}, ${num(p.upper)}]`
        : p.upper !== undefined
          ? `not above ${num(p.upper)}`
          : `not below ${num(p.lower ?? 0)}`;
    return stay(`${label} ${within}`);
  }

  const bound = (up ? p.upper : p.lower) ?? 0;
  const breached = (v: number | undefined) => v !== undefined && (up ? v > bound : v < bound);
  let k = n;
  while (k > 0 && breached(values[k - 1])) k--;
  // The breach began between two points, at a sample: the first one after the last calm point.
  const calm = k > 0 ? (times[k - 1] ?? now) : -Infinity;
  const began = samples.find((s) => s.t > calm)?.t ?? times[k] ?? now;
  const lastedMs = now - Math.min(began, times[k] ?? now);
  inputs.breachMs = lastedMs;
  const head = `${label} ${up ? '>' : '<'} ${num(bound)} for ${dur(k === 0 ? p.forMs : lastedMs)}`;
  if (k > 0) return stay(`${head} of ${dur(p.forMs)}`);

  if (lastActionAt !== undefined && now - lastActionAt < p.cooldownMs) {
    inputs.cooldownLeftMs = p.cooldownMs - (now - lastActionAt);
    return stay(`${head}, cooling down (${dur(p.cooldownMs - (now - lastActionAt))} left)`);
  }
  return {
    kind: p.kind,
    metric: p.metric,
    desired: up ? current + p.step : Math.max(0, current - p.step),
    reason: head,
    noData: false,
    inputs,
    notes: up ? ['cooldown clear'] : [],
  };
}

// --- target ----------------------------------------------------------------------------------

/**
 * Ceiling and floor that absorb float error: 0.9 / 0.3 is 3.0000000000000004, and a mean of
 * 10,000 samples of 0.8 is not quite 0.8; neither may round up to one more instance.
 */
const slack = (x: number) => 1e-9 * Math.max(1, Math.abs(x));
const ceil = (x: number) => Math.ceil(x - slack(x));
const floor = (x: number) => Math.floor(x + slack(x));

function evalTarget(
  p: TargetPolicy,
  ctx: PolicyContext,
  view: View,
  events: readonly ScaleEvent[],
  history: readonly Recommendation[],
): Outcome {
  const { now, current } = ctx;
  const samples = view.warm(ctx.metrics.window(ctx.metricsKey ?? ctx.role, p.metric, now - p.windowMs, now));
  // Mean of per-instance means: an instance reporting twice as often does not weigh twice as much.
  const perSeries = new Map<string, { sum: number; n: number }>();
  for (const s of samples) {
    const key = s.instance ?? '';
    const acc = perSeries.get(key);
    if (acc) {
      acc.sum += s.value;
      acc.n++;
    } else perSeries.set(key, { sum: s.value, n: 1 });
  }
  const means = [...perSeries.values()].map((a) => a.sum / a.n);
  const value = statOf(means, 'mean');
  const instanceSeries = perSeries.has('') ? perSeries.size - 1 : perSeries.size;
  // A role-wide series measures the role as a whole; it is carried by the ready instances.
  const ready = instanceSeries > 0 ? instanceSeries : view.ready;
  if (value === undefined || ready === 0) {
    return abstain(p, ctx, `no ${p.metric} data from instances past warm-up in the last ${dur(p.windowMs)}`);
  }

  const ratio = value / p.target;
  let raw: number;
  if (Math.abs(ratio - 1) <= p.tolerance) raw = current;
  else {
    raw = Math.max(0, ceil(ready * ratio));
    // Fewer ready than current instances can turn "too busy" into "fewer": never against the metric.
    raw = ratio > 1 ? Math.max(raw, current) : Math.min(raw, current);
  }

  const kept = history.filter((r) => now - r.t < Math.max(p.scaleUpStabilizationMs, p.scaleDownStabilizationMs));
  const upRec = windowed(kept, now, p.scaleUpStabilizationMs, raw, Math.min);
  const downRec = windowed(kept, now, p.scaleDownStabilizationMs, raw, Math.max);
  let stabilized = current;
  if (stabilized < upRec) stabilized = upRec;
  if (stabilized > downRec) stabilized = downRec;

  let limited = stabilized;
  let limitNote = '';
  if (stabilized > current) {
    limited = Math.min(stabilized, upLimit(p.scaleUp, current, events, now));
    if (limited < stabilized) limitNote = `, wants ${stabilized}, rate-limited to ${limited} by ${rateText(p.scaleUp, '+')}`;
  } else if (stabilized < current) {
    limited = Math.max(stabilized, downLimit(p.scaleDown, current, events, now));
    if (limited > stabilized) limitNote = `, wants ${stabilized}, rate-limited to ${limited} by ${rateText(p.scaleDown, '-')}`;
  }

  const label = `mean ${p.metric} ${num(value)}`;
  let reason: string;
  if (raw === current && Math.abs(ratio - 1) <= p.tolerance)
    reason = `${label} within ${num(p.tolerance * 100)}% of target ${num(p.target)}`;
  else {
    reason = `${label} vs target ${num(p.target)} over ${dur(p.windowMs)}`;
    if (ready !== current) reason += `, measured on ${ready} of ${current}`;
    if (stabilized !== raw) {
      const rising = raw > current;
      const win = rising ? p.scaleUpStabilizationMs : p.scaleDownStabilizationMs;
      const held = rising ? upRec : downRec;
      reason += `, wants ${raw}, held by scale-${rising ? 'up' : 'down'} stabilization (${rising ? 'lowest' : 'highest'} in the last ${dur(win)}: ${held})`;
    }
    reason += limitNote;
  }
  return {
    kind: p.kind,
    metric: p.metric,
    desired: limited,
    reason,
    noData: false,
    inputs: { value, target: p.target, ratio, ready, raw, stabilized },
    notes: [],
    history: [...kept, { t: now, desired: raw }],
  };
}

/** Lowest (or highest) of `raw` and the recommendations of the last `ms`. */
function windowed(
  history: readonly Recommendation[],
  now: number,
  ms: number,
  raw: number,
  pick: (a: number, b: number) => number,
): number {
  let out = raw;
  for (const r of history) if (now - r.t < ms) out = pick(out, r.desired);
  return out;
}

function changedWithin(events: readonly ScaleEvent[], now: number, periodMs: number, sign: 1 | -1): number {
  let n = 0;
  for (const e of events) if (now - e.t < periodMs) n += Math.max(0, sign * (e.to - e.from));
  return n;
}

/** The highest count allowed now: from the count at the period's start, as the HPA computes it. */
function upLimit(rule: RateLimit, current: number, events: readonly ScaleEvent[], now: number): number {
  if (rule.select === 'disabled') return current;
  const start = Math.max(0, current - changedWithin(events, now, rule.periodMs, 1));
  const proposals: number[] = [];
  if (rule.instances !== undefined) proposals.push(start + rule.instances);
  if (rule.percent !== undefined) proposals.push(ceil(start * (1 + rule.percent / 100)));
  if (proposals.length === 0) return Infinity;
  return Math.max(current, rule.select === 'max' ? Math.max(...proposals) : Math.min(...proposals));
}

/** The lowest count allowed now. Percentages round down, as the HPA's do, so small roles can shrink. */
function downLimit(rule: RateLimit, current: number, events: readonly ScaleEvent[], now: number): number {
  if (rule.select === 'disabled') return current;
  const start = current + changedWithin(events, now, rule.periodMs, -1);
  const proposals: number[] = [];
  if (rule.instances !== undefined) proposals.push(start - rule.instances);
  if (rule.percent !== undefined) proposals.push(floor(start * (1 - rule.percent / 100)));
  if (proposals.length === 0) return 0;
  // `max` selects the policy allowing the larger change: the lower count.
  const limit = rule.select === 'max' ? Math.min(...proposals) : Math.max(...proposals);
  return Math.min(current, Math.max(0, limit));
}

function rateText(rule: RateLimit, sign: '+' | '-'): string {
  const parts: string[] = [];
  if (rule.instances !== undefined) parts.push(`${sign}${rule.instances}`);
  if (rule.percent !== undefined) parts.push(`${sign}${num(rule.percent)}%`);
  return `${parts.join(rule.select === 'max' ? ' or ' : ' and ')} per ${dur(rule.periodMs)}`;
}

// --- queue -----------------------------------------------------------------------------------

function evalQueue(p: QueuePolicy, ctx: PolicyContext, view: View, history: readonly Recommendation[]): Outcome {
  const { now, current } = ctx;
  const lookback = ctx.lookbackMs ?? DEFAULT_LOOKBACK_MS;
  const samples = view.present(ctx.metrics.window(ctx.metricsKey ?? ctx.role, p.metric, now - lookback, now));
  if (samples.length === 0) return abstain(p, ctx, `no ${p.metric} data in the last ${dur(lookback)}`);
  // The backlog is the sum of each series' latest reading (one series for a role-wide queue).
  const latest = new Map<string, number>();
  for (const s of samples) latest.set(s.instance ?? '', s.value);
  let backlog = 0;
  for (const v of latest.values()) backlog += v;

  const active = backlog >= p.activation;
  const raw = active ? Math.max(1, ceil(backlog / p.perInstance)) : 0;
  const kept = history.filter((r) => now - r.t < p.scaleDownStabilizationMs);
  const downRec = windowed(kept, now, p.scaleDownStabilizationMs, raw, Math.max);
  const desired = raw >= current ? raw : Math.min(current, downRec);

  let reason = active
    ? `${p.metric} ${num(backlog)} at ${num(p.perInstance)} per instance`
    : `${p.metric} ${num(backlog)} below activation ${num(p.activation)}`;
  if (desired !== raw) {
    reason += `, wants ${raw}, held by scale-down stabilization (highest in the last ${dur(p.scaleDownStabilizationMs)}: ${downRec})`;
  }
  return {
    kind: p.kind,
    metric: p.metric,
    desired,
    reason,
    noData: false,
    inputs: { value: backlog, perInstance: p.perInstance, activation: p.activation, raw },
    notes: [],
    history: [...kept, { t: now, desired: raw }],
  };
}

// --- adaptive --------------------------------------------------------------------------------

/** A gap in the rate longer than this (the controller was away) restarts the minute history. */
const MAX_GAP_MIN = 5;
/**
 * What the role's adaptive policies learned one instance serves (requests/s), by their rate
 * metric, from a decision's inputs: each adaptive policy's `capacity` is kept there as
 * `adaptive.<metric>.capacity`. Empty when the role has none.
 */
export function learnedCapacities(inputs: Readonly<Record<string, number>>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(inputs)) {
    const m = /^adaptive\.(.+)\.capacity$/.exec(k);
    if (m?.[1] !== undefined && Number.isFinite(v)) out[m[1]] = v;
  }
  return out;
}

/** A queue longer than this many seconds of arrivals means the instances are saturated. */
const SATURATED_QUEUE_S = 1;

function initialAdaptive(p: AdaptivePolicy, t: number): AdaptiveState {
  return {
    t,
    capacity: capacityPrior(p.perInstance),
    minute: Math.floor(t / MINUTE_MS),
    sum: 0,
    count: 0,
    rates: [],
    headroom: null,
    inferredBacklog: 0,
    forecast: EMPTY_FORECAST,
  };
}

function meanOf(samples: readonly Sample[]): number | undefined {
  if (samples.length === 0) return undefined;
  let s = 0;
  for (const x of samples) s += x.value;
  return s / samples.length;
}

function evalAdaptive(
  p: AdaptivePolicy,
  ctx: PolicyContext,
  view: View,
  history: readonly Recommendation[],
  learned: AdaptiveState | undefined,
): Outcome {
  const { now, current } = ctx;
  const key = ctx.metricsKey ?? ctx.role;
  const lookback = ctx.lookbackMs ?? DEFAULT_LOOKBACK_MS;
  let st = learned ?? initialAdaptive(p, now - lookback);
  const since = Math.max(st.t, now - Math.max(lookback, MAX_GAP_MIN * MINUTE_MS));
  const demand = ctx.metrics.window(key, p.metric, Math.min(since, now - lookback), now).filter((s) => s.instance === undefined);
  const latest = demand.at(-1);
  if (!latest || now - latest.t > lookback) {
    return { ...abstain(p, ctx, `no ${p.metric} data in the last ${dur(lookback)}`), ...(learned ? { learned } : {}) };
  }
  const fresh = demand.filter((s) => s.t > since);
  const rate = latest.value;
  const ahead = Math.max(1, Math.ceil(p.reactionMs / MINUTE_MS));
  const windowMin = Math.max(2, Math.min(1440, Math.round(p.windowMs / MINUTE_MS)));

  // The whole minutes of rate: volatility and the forecast are measured on them.
  let { minute, sum, count, rates, headroom, forecast } = st;
  for (const s of fresh) {
    const m = Math.floor(s.t / MINUTE_MS);
    if (m > minute) {
      if (count > 0) {
        const mean = sum / count;
        rates = m - minute > MAX_GAP_MIN ? [] : [...(rates.length >= windowMin ? rates.slice(rates.length - windowMin + 1) : rates), mean];
        if (p.forecast) forecast = observeMinute(forecast, minute, mean, ahead, { weekly: p.weekly, trustRatio: 0.9 });
        headroom = growthQuantile(rates, ahead, p.quantile) ?? null;
      }
      minute = m;
      sum = 0;
      count = 0;
    }
    sum += s.value;
    count++;
  }

  // The queue: the metric's latest reading, or what arrived beyond what was served.
  const minutes = Math.min(1, Math.max(0, now - since) / MINUTE_MS);
  const ready = view.ready;
  const cpuFresh = view.warm(ctx.metrics.window(key, p.cpu, since, now)).filter((s) => s.t > since && s.instance !== undefined);
  const servedFresh = p.served ? view.warm(ctx.metrics.window(key, p.served, since, now)).filter((s) => s.t > since && s.instance !== undefined) : [];
  const servedPer = p.served ? meanOf(servedFresh) : undefined;
  let backlog = 0;
  let inferredBacklog = st.inferredBacklog;
  if (p.backlog) {
    const b = view.present(ctx.metrics.window(key, p.backlog, now - lookback, now));
    const last = new Map<string, number>();
    for (const s of b) last.set(s.instance ?? '', s.value);
    for (const v of last.values()) backlog += v;
  } else if (servedPer !== undefined && fresh.length > 0) {
    const arrived = meanOf(fresh) ?? rate;
    inferredBacklog = Math.max(0, inferredBacklog + (arrived - servedPer * ready) * minutes * 60);
    backlog = inferredBacklog;
  }
  const saturated = backlog > Math.max(1, rate * SATURATED_QUEUE_S);

  // Capacity: served per instance over the CPU it took (busy 1 when saturated).
  let capacity: CapacityEstimate = st.capacity;
  const busy = meanOf(cpuFresh);
  if (ready > 0 && minutes > 0) {
    const per = servedPer ?? (saturated ? undefined : (meanOf(fresh) ?? rate) / ready);
    if (per !== undefined && (busy !== undefined || saturated)) {
      capacity = observeCapacity(capacity, per, (busy ?? 1) / p.cores, minutes, saturated, p.learnHalfLifeMs / MINUTE_MS);
    }
  }
  st = { t: Math.max(st.t, latest.t, cpuFresh.at(-1)?.t ?? 0), capacity, minute, sum, count, rates, headroom, inferredBacklog, forecast };

  const perInstance = capacityOf(capacity);
  if (perInstance === undefined) {
    return {
      ...abstain(p, ctx, `${p.metric} ${num(rate)}/s, learning capacity: no instance seen at load yet`),
      inputs: { value: rate, rate, backlog },
      learned: st,
    };
  }

  const room = Math.min(p.maxHeadroom, Math.max(p.minHeadroom, headroom ?? INITIAL_HEADROOM));
  let base = rate;
  let predicted: number | undefined;
  const useForecast = p.forecast && trusted(forecast);
  if (useForecast) {
    predicted = 0;
    for (let j = 1; j <= ahead + 1; j++) predicted = Math.max(predicted, predictRate(forecast, forecast.minute, j));
    base = Math.max(rate, predicted);
  }
  // What the queue grows by until new capacity serves (half a reaction on average), drained within drainWithin.
  const growth = Math.max(0, rate - ready * perInstance) * (p.reactionMs / 2000);
  const toDrain = backlog > 0 ? backlog + growth : 0;
  // Never above the highest minute of the window (plus the least headroom): the growths the
  // headroom was measured on led up to those peaks, so on a plateau or at a burst's top the
  // headroom would otherwise be paid a second time on top of the peak.
  // While the rate is still climbing (up by more than the least headroom within a reaction),
  // there is no such peak yet.
  let peak = base;
  for (const r of rates) peak = Math.max(peak, r);
  const before = rates[rates.length - 1 - ahead];
  const climbing = before === undefined || base > before * (1 + p.minHeadroom);
  const covered = climbing ? base * (1 + room) : Math.min(base * (1 + room), peak * (1 + p.minHeadroom));
  const needRate = covered + toDrain / (p.drainWithinMs / 1000);
  const raw = needRate > 0 ? Math.max(1, ceil(needRate / perInstance)) : 0;

  const holdMs = holdFor(room, p.reactionMs, p.holdPerHeadroom, p.minHoldMs, p.maxHoldMs);
  const kept = history.filter((r) => now - r.t < Math.max(p.maxHoldMs, holdMs));
  const downRec = windowed(kept, now, holdMs, raw, Math.max);
  const desired = raw >= current ? raw : Math.min(current, downRec);

  const learnedText =
    capacity.observed > 0
      ? `learned capacity ${num(perInstance)}/s (${num(Math.round(capacity.observed))} min at load${p.perInstance !== undefined ? `, prior ${num(p.perInstance)}` : ''})`
      : `capacity ${num(perInstance)}/s (prior, nothing learned yet)`;
  const roomText =
    headroom === null
      ? `headroom ${Math.round(room * 100)}% (initial, volatility not measured yet)`
      : `headroom ${Math.round(room * 100)}% from p${Math.round(p.quantile * 100)} growth within ${dur(ahead * MINUTE_MS)}`;
  let reason = `rate ${num(rate)}/s, backlog ${Math.round(backlog).toLocaleString('en-US')}, ${learnedText}, ${roomText}`;
  if (predicted !== undefined && predicted > rate) reason += `, forecast ${num(predicted)}/s within ${dur((ahead + 1) * MINUTE_MS)} (trusted: beat the naive forecast lately)`;
  if (covered < base * (1 + room)) reason += `, capped at the window's peak ${num(peak)}/s + ${Math.round(p.minHeadroom * 100)}%`;
  if (desired !== raw) reason += `, wants ${raw}, held ${dur(holdMs)} by scale-down hold (highest in it: ${downRec})`;

  const inputs: Record<string, number> = {
    value: rate,
    rate,
    backlog,
    capacity: perInstance,
    capacityObservedMin: capacity.observed,
    headroom: room,
    holdMs,
    raw,
    forecastTrusted: useForecast ? 1 : 0,
  };
  if (p.perInstance !== undefined) inputs.capacityPrior = p.perInstance;
  if (predicted !== undefined) inputs.forecast = predicted;
  return {
    kind: p.kind,
    metric: p.metric,
    desired,
    reason,
    noData: false,
    inputs,
    notes: [],
    history: [...kept, { t: now, desired: raw }],
    learned: st,
  };
}

// ---------------------------------------------------------------------------------------------
// Words

/** Integers as they are; fractions to 2 decimals; large values rounded. */
function num(v: number): string {
  if (Number.isInteger(v)) return String(v);
  if (Math.abs(v) >= 100) return String(Math.round(v));
  return v.toFixed(2);
}

/** `500ms`, `30s`, `120s`, `1.5s`: seconds, as the examples people read. */
function dur(ms: number): string {
  if (ms > 0 && ms < 1000) return `${Math.round(ms)}ms`;
  const s = ms / 1000;
  return Number.isInteger(s) ? `${s}s` : `${s.toFixed(1).replace(/\.0$/, '')}s`;
}
