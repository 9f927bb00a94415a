/**
 * The classic policies Drover is compared with, written as Drover policies and run through
 * the same `evaluate` and `plan` (never a copy of their algorithm), plus the two schedules that
 * bound the comparison: fixed provisioning at the peak, and the oracle.
 */
import { targetPolicy, thresholdPolicy, type Policy } from '../core/index.js';
import { needed, type Schedule } from './engine.js';
import { erlangWait } from './queue.js';
import type { Slo } from './units.js';

export type BaselineName = 'oracle' | 'fixed' | 'threshold' | 'hpa' | 'aws';
export const BASELINES: readonly BaselineName[] = ['oracle', 'fixed', 'threshold', 'hpa', 'aws'];

/**
 * The step rule of countless tutorials and CloudWatch alarm pairs: mean CPU above 90% for 60 s
 * adds one instance, below 15% for 60 s removes one, 60 s between actions.
 */
export const THRESHOLD_RULE: readonly Policy[] = [
  thresholdPolicy({ metric: 'cpu', upper: 0.9, lower: 0.15, forMs: 60_000, cooldownMs: 60_000, step: 1, stat: 'mean' }),
];

/**
 * The Kubernetes HPA as it ships: target 80% CPU (what `kubectl autoscale` sets when no target
 * is given), tolerance 10%, scale-down stabilization 5 min, up by max(4 pods, 100%) and down by
 * 100% per 15 s; Drover's target-policy defaults are exactly those behaviours. The window is
 * 30 s: the metrics-server's CPU rate (15 s resolution) as two syncs see it.
 */
export const HPA_DEFAULTS: readonly Policy[] = [targetPolicy({ metric: 'cpu', target: 0.8, windowMs: 30_000 })];

/**
 * AWS target tracking, approximated: target 50% CPU over 1-minute datapoints, scale-out on
 * the first minute above it (lowest recommendation of the last 60 s), scale-in once the low
 * alarm has held 3 minutes (highest recommendation of the last 180 s) and nothing more; no
 * rate limit (AWS sizes the step proportionally in one go); tolerance 10% stands for the gap
 * AWS leaves between its high alarm (the target) and low alarm (90% of it).
 */
export const AWS_TARGET_TRACKING: readonly Policy[] = [
  targetPolicy({
    metric: 'cpu',
    target: 0.5,
    tolerance: 0.1,
    windowMs: 60_000,
    scaleUpStabilizationMs: 60_000,
    scaleDownStabilizationMs: 180_000,
    scaleUp: { periodMs: 60_000, select: 'max' },
    scaleDown: { periodMs: 60_000, select: 'max' },
  }),
];

/**
 * Instances each tick needs, at least one: its demand at `capacity` each — and, when `slo` is
 * given, the fewest that meet it in the queueing model: a mean M/M/c wait within the wait
 * target (each instance `serversPerInstance` servers), or demand within the utilisation bound.
 */
export function neededPerTick(
  lambdas: ArrayLike<number>,
  capacity: number,
  slo?: Slo,
  queue: { model: 'erlang' | 'fluid'; serversPerInstance: number } = { model: 'fluid', serversPerInstance: 1 },
): Int32Array {
  const out = new Int32Array(lambdas.length);
  const spi = Math.max(1, Math.round(queue.serversPerInstance));
  for (let k = 0; k < lambdas.length; k++) {
    const lambda = lambdas[k] ?? 0;
    let n = Math.max(1, needed(lambda, capacity));
    if (slo?.kind === 'util') n = Math.max(1, needed(lambda, capacity * slo.max));
    else if (slo?.kind === 'wait' && queue.model === 'erlang' && lambda > 0) {
      if (lambda >= n * capacity) n++;
      while (erlangWait(n * spi, lambda, capacity / spi) * 1000 > slo.ms) n++;
    }
    out[k] = n;
  }
  return out;
}

/**
 * Perfect foresight that honours boot time: at each tick, the most instances any tick of the
 * next `aheadTicks` needs. An instance is thus created exactly a boot ahead of the tick that
 * needs it, kept through gaps shorter than a boot (re-creating would cost the boot again), and
 * released when no tick within a boot needs it: the least instance-time that keeps demand at
 * or under capacity at every tick.
 */
export function oracleSchedule(need: Int32Array, aheadTicks: number): Schedule {
  const n = need.length;
  const out = new Int32Array(n);
  // Sliding-window maximum over [k, k + ahead], with a deque of indices: O(n).
  const dq = new Int32Array(n);
  let head = 0;
  let tail = 0;
  let next = 0;
  for (let k = 0; k < n; k++) {
    const last = Math.min(n - 1, k + aheadTicks);
    for (; next <= last; next++) {
      const v = need[next] ?? 0;
      while (tail > head && (need[dq[tail - 1] ?? 0] ?? 0) <= v) tail--;
      dq[tail++] = next;
    }
    while ((dq[head] ?? 0) < k) head++;
    out[k] = need[dq[head] ?? 0] ?? 0;
  }
  return { desiredAt: (k) => out[Math.min(n - 1, Math.max(0, k))] ?? 1 };
}

/** The peak's count, all the time. */
export function fixedSchedule(need: Int32Array): { schedule: Schedule; count: number } {
  let peak = 1;
  for (const v of need) peak = Math.max(peak, v);
  return { schedule: { desiredAt: () => peak }, count: peak };
}
