/**
 * The arithmetic of the `adaptive` policy (policy.ts): an instance's capacity learned from what
 * the role is seen doing, headroom and scale-down hold from how much demand has recently jumped.
 * Pure functions on plain JSON, kept apart from the evaluation so each can be tested alone.
 */

// ---------------------------------------------------------------------------------------------
// Capacity: requests/s one instance serves at full use

/**
 * Load-weighted sums of observations: `served` (requests/s per instance, times minutes) over
 * `busy` (utilisation 0..1, times minutes). Their ratio is the capacity under a CPU that grows
 * in proportion to the rate served, and a saturated instance (a growing queue) counts as busy 1
 * whatever its CPU reads, so the served rate then *is* its capacity. A configured capacity
 * enters as `PRIOR_WEIGHT` minutes at full use; older observations fade with every new one
 * (half their weight per `halfLifeMin` minutes at full use), never with mere time, so an idle
 * night does not bring a wrong prior back.
 */
export interface CapacityEstimate {
  readonly served: number;
  readonly busy: number;
  /** Minutes observed at load (utilisation-weighted), for the reason. */
  readonly observed: number;
}

/** The prior's weight, in minutes at full use: it is outweighed within minutes of real load. */
export const PRIOR_WEIGHT = 2;
/** Observations below this utilisation say too little (and idle CPU would bias them). */
export const MIN_BUSY = 0.1;

export function capacityPrior(perInstance: number | undefined): CapacityEstimate {
  return perInstance !== undefined && perInstance > 0
    ? { served: perInstance * PRIOR_WEIGHT, busy: PRIOR_WEIGHT, observed: 0 }
    : { served: 0, busy: 0, observed: 0 };
}

/**
 * Adds `minutes` of observation: `served` requests/s per instance at utilisation `busy`.
 * `saturated`: a queue was growing, so the instances were serving all they could.
 */
export function observeCapacity(
  c: CapacityEstimate,
  served: number,
  busy: number,
  minutes: number,
  saturated: boolean,
  halfLifeMin: number,
): CapacityEstimate {
  const u = saturated ? 1 : busy;
  if (!(minutes > 0) || !(served >= 0) || !Number.isFinite(served) || !(u >= MIN_BUSY) || !Number.isFinite(u)) return c;
  const w = u * minutes;
  const keep = Math.pow(0.5, w / halfLifeMin);
  return { served: c.served * keep + served * minutes, busy: c.busy * keep + u * minutes, observed: c.observed + w };
}

/** Requests/s per instance, or undefined while nothing is known (no prior, no load seen). */
export function capacityOf(c: CapacityEstimate): number | undefined {
  return c.busy >= 0.5 && c.served > 0 ? c.served / c.busy : undefined;
}

// ---------------------------------------------------------------------------------------------
// Headroom and hold from volatility

/** Headroom before enough minutes are seen to measure it. */
export const INITIAL_HEADROOM = 0.3;
/** Minutes of history before the measured headroom replaces the initial one. */
export const MIN_MINUTES = 10;

/**
 * The `quantile` of the largest growth within `ahead` minutes, over the window's minutes:
 * for each minute i, max over 1 ≤ j ≤ ahead of rate[i + j] / rate[i], minus 1. It is what the
 * capacity ordered now must absorb before instances ordered now can serve. Minutes with no
 * rate (≤ 0) are skipped. Undefined with fewer than MIN_MINUTES usable minutes.
 */
export function growthQuantile(rates: readonly number[], ahead: number, quantile: number): number | undefined {
  const ratios: number[] = [];
  const h = Math.max(1, Math.round(ahead));
  for (let i = 0; i + 1 < rates.length; i++) {
    const base = rates[i] ?? 0;
    if (!(base > 0)) continue;
    let top = 0;
    for (let j = 1; j <= h && i + j < rates.length; j++) top = Math.max(top, rates[i + j] ?? 0);
    ratios.push(top / base - 1);
  }
  if (ratios.length < MIN_MINUTES) return undefined;
  ratios.sort((a, b) => a - b);
  // Nearest rank: the smallest value with at least `quantile` of them at or below it.
  const rank = Math.min(ratios.length, Math.max(1, Math.ceil(quantile * ratios.length)));
  return ratios[rank - 1];
}

/** Standard deviation of the minute-to-minute change of the log rate: the volatility people quote. */
export function logDiffSd(rates: readonly number[]): number | undefined {
  const d: number[] = [];
  for (let i = 1; i < rates.length; i++) {
    const a = rates[i - 1] ?? 0;
    const b = rates[i] ?? 0;
    if (a > 0 && b > 0) d.push(Math.log(b / a));
  }
  if (d.length < 2) return undefined;
  const m = d.reduce((s, x) => s + x, 0) / d.length;
  return Math.sqrt(d.reduce((s, x) => s + (x - m) ** 2, 0) / (d.length - 1));
}

/**
 * How long a scale-down waits: a reaction time (what releasing too early costs: capacity is
 * that long away again), longer the more demand jumps (`holdPerHeadroom` reactions per 100% of
 * headroom), within [minMs, maxMs].
 */
export function holdFor(headroom: number, reactionMs: number, holdPerHeadroom: number, minMs: number, maxMs: number): number {
  return Math.min(maxMs, Math.max(minMs, reactionMs * (1 + holdPerHeadroom * Math.max(0, headroom))));
}
