/**
 * A predictive policy kind, `forecast`, kept in the simulator until it earns its place in
 * core/policy.ts: it extrapolates a role-wide rate (the load balancer's `demand`) a boot time
 * ahead along its recent trend, and asks for the instances that rate will need, so capacity
 * ordered now is serving when the rate gets there.
 *
 * It only ever adds to what the other policies want: when the trend is flat or falling it asks
 * for the instances of the latest rate (the `queue` policy's answer), and its scale-down is
 * held, like theirs, by the highest of its recent proposals. Combined with the core policies
 * as the core combines its own: the largest count wins, then min and max.
 */
import {
  evaluate,
  recordAction,
  type Decision,
  type Policy,
  type PolicyContext,
  type PolicyState,
  type Recommendation,
} from '../core/index.js';

export interface ForecastPolicy {
  readonly kind: 'forecast';
  /** A role-wide rate. */
  readonly metric: string;
  /** The rate one instance is planned for. */
  readonly perInstance: number;
  /** How far ahead to extrapolate: about a boot plus an evaluation interval. */
  readonly horizonMs: number;
  /** The trend is the least-squares slope over this much history. @default 180000 */
  readonly windowMs: number;
  /** Scale down to the highest proposal of this window. @default 300000 */
  readonly scaleDownStabilizationMs: number;
}

export function forecastPolicy(o: Pick<ForecastPolicy, 'metric' | 'perInstance' | 'horizonMs'> & Partial<ForecastPolicy>): ForecastPolicy {
  return { kind: 'forecast', windowMs: 180_000, scaleDownStabilizationMs: 300_000, ...o };
}

/** The core's state plus the forecast's own proposals (plain JSON, as the core's). */
export interface CombinedState {
  readonly core: PolicyState | undefined;
  readonly forecast: readonly Recommendation[];
}

export interface ForecastOutcome {
  readonly desired: number;
  readonly predicted: number;
  readonly slope: number;
  readonly reason: string;
  readonly history: readonly Recommendation[];
}

export function evalForecast(p: ForecastPolicy, ctx: PolicyContext, history: readonly Recommendation[]): ForecastOutcome | undefined {
  const { now } = ctx;
  const samples = ctx.metrics.window(ctx.metricsKey ?? ctx.role, p.metric, now - p.windowMs, now).filter((s) => s.instance === undefined);
  const last = samples[samples.length - 1];
  if (!last) return undefined;
  let slope = 0;
  if (samples.length >= 3) {
    let mt = 0;
    let mv = 0;
    for (const s of samples) {
      mt += s.t;
      mv += s.value;
    }
    mt /= samples.length;
    mv /= samples.length;
    let num = 0;
    let den = 0;
    for (const s of samples) {
      num += (s.t - mt) * (s.value - mv);
      den += (s.t - mt) * (s.t - mt);
    }
    slope = den > 0 ? num / den : 0;
  }
  // From the fitted line's value now, not the last sample: one noisy minute is not a trend.
  const fitted = samples.length >= 3 ? averageOf(samples.map((s) => s.value)) + slope * (now - averageOf(samples.map((s) => s.t))) : last.value;
  const predicted = Math.max(last.value, fitted + Math.max(0, slope) * p.horizonMs);
  const raw = Math.max(0, Math.ceil(predicted / p.perInstance - 1e-9));
  const kept = history.filter((r) => now - r.t < p.scaleDownStabilizationMs);
  let held = raw;
  for (const r of kept) held = Math.max(held, r.desired);
  const desired = raw >= ctx.current ? raw : Math.min(ctx.current, held);
  const reason = `${p.metric} ${last.value.toFixed(0)} rising ${(slope * 60_000).toFixed(1)}/min → ${predicted.toFixed(0)} in ${p.horizonMs / 1000}s at ${p.perInstance} per instance`;
  return { desired, predicted, slope, reason, history: [...kept, { t: now, desired: raw }] };
}

function averageOf(v: readonly number[]): number {
  let s = 0;
  for (const x of v) s += x;
  return v.length > 0 ? s / v.length : 0;
}

export interface CombinedDecision {
  readonly desired: number;
  readonly changed: boolean;
  readonly reason: string;
  readonly state: CombinedState;
}

/**
 * The core's {@link evaluate} over `policies`, raised by the forecast where it wants more. The
 * core state records the action actually taken, so cooldowns and rate limits see it.
 */
export function evaluateWithForecast(
  policies: readonly Policy[],
  forecast: ForecastPolicy,
  ctx: PolicyContext,
  state: CombinedState | undefined,
): CombinedDecision {
  const d: Decision = evaluate(policies, ctx, state?.core);
  const f = evalForecast(forecast, ctx, state?.forecast ?? []);
  const history = f?.history ?? state?.forecast ?? [];
  const desired = f ? Math.min(ctx.max, Math.max(ctx.min, Math.max(d.desired, f.desired))) : d.desired;
  if (!f || desired === d.desired) return { desired: d.desired, changed: d.changed, reason: d.reason, state: { core: d.state, forecast: history } };
  const coreState = d.changed ? { ...d.state, events: d.state.events.slice(0, -1) } : d.state;
  return {
    desired,
    changed: desired !== ctx.current,
    reason: `${ctx.role} ${ctx.current}→${desired}: ${f.reason}`,
    state: { core: recordAction(coreState, ctx.now, ctx.current, desired), forecast: history },
  };
}
