/**
 * Generated traces, one rate per minute, reproducible from a seed: the shapes a policy must
 * handle besides the WorldCup's. Each family draws its own parameters (levels, times, sizes)
 * from the seed, so seeds 1, 2, 3 are three different days of the same kind.
 */
import { Rng } from './rng.js';
import { traceOf, type Trace } from './trace.js';

export type SyntheticFamily = 'diurnal' | 'ramps' | 'flash' | 'jumpy' | 'surge' | 'sawtooth' | 'weekly' | 'outage';
export const SYNTHETIC_FAMILIES: readonly SyntheticFamily[] = ['diurnal', 'ramps', 'flash', 'jumpy', 'surge', 'sawtooth', 'weekly', 'outage'];
/** Days a family's traces cover by default: weekly seasonality needs two weeks to be seen twice. */
export const FAMILY_DAYS: Readonly<Record<SyntheticFamily, number>> = {
  diurnal: 3,
  ramps: 3,
  flash: 3,
  jumpy: 3,
  surge: 3,
  sawtooth: 3,
  weekly: 14,
  outage: 3,
};

export interface SyntheticOptions {
  readonly family: SyntheticFamily;
  readonly seed: number;
  /** @default FAMILY_DAYS[family] */
  readonly days?: number;
  /** Mean demand the shape is scaled around, requests/s. @default 300 */
  readonly meanRate?: number;
}

const DAY_MIN = 1440;

/**
 * Multiplicative noise, log-AR(1): minute-to-minute wobble that is correlated, as real demand
 * is (independent noise per minute would average out within any policy's window).
 */
function noise(rng: Rng, n: number, sigma: number, rho = 0.9): Float64Array {
  const out = new Float64Array(n);
  let x = 0;
  const innovation = sigma * Math.sqrt(1 - rho * rho);
  for (let k = 0; k < n; k++) {
    x = rho * x + innovation * rng.normal();
    out[k] = Math.exp(x - (sigma * sigma) / 2);
  }
  return out;
}

/** 0 at night, 1 at the day's peak (early evening), with a lunchtime shoulder. */
function dayShape(minuteOfDay: number, peakMinute: number): number {
  const phase = (2 * Math.PI * (minuteOfDay - peakMinute)) / DAY_MIN;
  const main = 0.5 + 0.5 * Math.cos(phase);
  const shoulder = 0.5 + 0.5 * Math.cos(2 * phase);
  return Math.pow(0.8 * main + 0.2 * shoulder, 1.5);
}

/**
 * A per-day level at minute `k`, days blending into each other over the 4 hours around midnight,
 * as real days and weeks do: `levelOf(day)` alone from 02:00 to 22:00.
 */
function aroundMidnight(k: number, levelOf: (day: number) => number): number {
  const day = Math.floor(k / DAY_MIN);
  const into = k % DAY_MIN;
  if (into < 120) {
    const blend = 0.5 + into / 240;
    return levelOf(day - 1) * (1 - blend) + levelOf(day) * blend;
  }
  if (into >= DAY_MIN - 120) {
    const blend = (into - (DAY_MIN - 120)) / 240;
    return levelOf(day) * (1 - blend) + levelOf(day + 1) * blend;
  }
  return levelOf(day);
}

export function syntheticTrace(options: SyntheticOptions): Trace {
  const { family, seed } = options;
  const days = options.days ?? FAMILY_DAYS[family];
  const n = days * DAY_MIN;
  const mean = options.meanRate ?? 300;
  const rng = new Rng(seed, 100 + SYNTHETIC_FAMILIES.indexOf(family));
  const rates = new Float64Array(n);

  if (family === 'diurnal') {
    // Night at 15-25% of the peak; each day's peak differs by ±20%.
    const floor = rng.uniform(0.15, 0.25);
    const peakMinute = Math.round(rng.uniform(17, 21) * 60);
    const dayScale = Array.from({ length: Math.ceil(n / DAY_MIN) }, () => rng.uniform(0.8, 1.2));
    const wobble = noise(rng, n, 0.08);
    // Days blend into each other around midnight (as in the weekly family), rather than the
    // whole level jumping by up to 50% from one minute to the next at 00:00.
    const scaleOf = (day: number) => dayScale[Math.min(Math.max(day, 0), dayScale.length - 1)] ?? 1;
    for (let k = 0; k < n; k++) {
      const level = floor + (1 - floor) * dayShape(k % DAY_MIN, peakMinute);
      rates[k] = level * aroundMidnight(k, scaleOf) * (wobble[k] ?? 1);
    }
  } else if (family === 'ramps') {
    // Plateaus joined by ramps that multiply or divide the level by up to 3.5 in 5-40 minutes.
    let level = rng.uniform(0.5, 1.5);
    let k = 0;
    while (k < n) {
      const plateau = Math.round(rng.uniform(30, 180));
      for (let j = 0; j < plateau && k < n; j++) rates[k++] = level;
      const next = Math.min(4, Math.max(0.15, level * Math.exp(rng.uniform(-1.25, 1.25))));
      const ramp = Math.round(rng.uniform(5, 40));
      for (let j = 1; j <= ramp && k < n; j++) rates[k++] = level + ((next - level) * j) / ramp;
      level = next;
    }
    const wobble = noise(rng, n, 0.05);
    for (let j = 0; j < n; j++) rates[j] = (rates[j] ?? 0) * (wobble[j] ?? 1);
  } else if (family === 'jumpy') {
    // Real traffic at minute scale: the log rate jumps minute to minute with a standard
    // deviation of its difference of 0.5-0.7 (WorldCup's is about 0.17), around a diurnal base.
    const target = rng.uniform(0.5, 0.7);
    const rho = 0.3;
    const sigma = target / Math.sqrt(2 * (1 - rho));
    const peakMinute = Math.round(rng.uniform(17, 21) * 60);
    const jumps = noise(rng, n, sigma, rho);
    for (let k = 0; k < n; k++) rates[k] = (0.3 + 0.7 * dayShape(k % DAY_MIN, peakMinute)) * (jumps[k] ?? 1);
  } else if (family === 'surge') {
    // About six steep multi-minute surges a day: the level multiplies by 3-8 over 3-10 minutes
    // (exponentially, each minute steeper than a boot can follow), holds 10-60 minutes, decays
    // over 10-30.
    const peakMinute = Math.round(rng.uniform(17, 21) * 60);
    const wobble = noise(rng, n, 0.08);
    for (let k = 0; k < n; k++) rates[k] = (0.4 + 0.6 * dayShape(k % DAY_MIN, peakMinute)) * (wobble[k] ?? 1);
    let t = rng.exponential(DAY_MIN / 6);
    while (t < n) {
      const start = Math.floor(t);
      const height = rng.uniform(3, 8);
      const rise = rng.uniform(3, 10);
      const hold = rng.uniform(10, 60);
      const fall = rng.uniform(10, 30);
      for (let k = start; k < n && k - start < rise + hold + fall; k++) {
        const m = k - start;
        const f = m < rise ? Math.pow(height, m / rise) : m < rise + hold ? height : Math.pow(height, 1 - (m - rise - hold) / fall);
        rates[k] = (rates[k] ?? 0) * f;
      }
      t += rise + hold + fall + rng.exponential(DAY_MIN / 6);
    }
  } else if (family === 'sawtooth') {
    // Bursts on the clock (a batch, a newsletter, a cron job of the clients): every 30 or 60
    // minutes the rate jumps to 2-4× the base within a minute and decays linearly back over
    // most of the period; the same minutes every day, so a daily profile can learn them.
    const period = rng.next() < 0.5 ? 30 : 60;
    const height = rng.uniform(2, 4);
    const decay = Math.round(period * rng.uniform(0.5, 0.8));
    const peakMinute = Math.round(rng.uniform(17, 21) * 60);
    const wobble = noise(rng, n, 0.08);
    for (let k = 0; k < n; k++) {
      const into = k % period;
      const burst = into < decay ? 1 + (height - 1) * (1 - into / decay) : 1;
      rates[k] = (0.4 + 0.6 * dayShape(k % DAY_MIN, peakMinute)) * burst * (wobble[k] ?? 1);
    }
  } else if (family === 'weekly') {
    // Two weeks: weekdays alike, weekends at 35-60% of them, a diurnal shape with noise.
    const weekend = rng.uniform(0.35, 0.6);
    const firstDay = Math.floor(rng.uniform(0, 7));
    const peakMinute = Math.round(rng.uniform(15, 20) * 60);
    const wobble = noise(rng, n, 0.12);
    const levelOf = (day: number) => ((firstDay + day) % 7 >= 5 ? weekend : 1);
    for (let k = 0; k < n; k++) rates[k] = aroundMidnight(k, levelOf) * (0.2 + 0.8 * dayShape(k % DAY_MIN, peakMinute)) * (wobble[k] ?? 1);
  } else if (family === 'outage') {
    // Three to four upstream outages a day: demand falls to 2-10% for 5-30 minutes, then the
    // clients' retries come back at 2-3× the base, decaying over 3-8 minutes.
    const peakMinute = Math.round(rng.uniform(17, 21) * 60);
    const wobble = noise(rng, n, 0.08);
    for (let k = 0; k < n; k++) rates[k] = (0.35 + 0.65 * dayShape(k % DAY_MIN, peakMinute)) * (wobble[k] ?? 1);
    let t = rng.exponential(DAY_MIN / 3.5);
    while (t < n) {
      const start = Math.floor(t);
      const down = Math.round(rng.uniform(5, 30));
      const left = rng.uniform(0.02, 0.1);
      const retry = rng.uniform(2, 3);
      const tau = rng.uniform(3, 8);
      for (let k = start; k < n && k < start + down; k++) rates[k] = (rates[k] ?? 0) * left;
      for (let k = start + down; k < n && k < start + down + 5 * tau; k++) rates[k] = (rates[k] ?? 0) * (1 + (retry - 1) * Math.exp(-(k - start - down) / tau));
      t += down + rng.exponential(DAY_MIN / 3.5);
    }
  } else {
    // A quiet diurnal base with about four flash crowds a day: 4-10× the base within 1-3
    // minutes, decaying over 10-45 minutes.
    const peakMinute = Math.round(rng.uniform(17, 21) * 60);
    const wobble = noise(rng, n, 0.06);
    for (let k = 0; k < n; k++) rates[k] = (0.35 + 0.65 * dayShape(k % DAY_MIN, peakMinute)) * (wobble[k] ?? 1);
    let t = rng.exponential(DAY_MIN / 4);
    while (t < n) {
      const start = Math.floor(t);
      const height = rng.uniform(4, 10);
      const onset = rng.uniform(1, 3);
      const tau = rng.uniform(10, 45);
      const base = rates[start] ?? 0;
      for (let k = start; k < n; k++) {
        const dtm = k - start;
        const shape = dtm < onset ? dtm / onset : Math.exp(-(dtm - onset) / tau);
        if (dtm >= onset && shape < 0.01) break;
        rates[k] = (rates[k] ?? 0) + base * (height - 1) * shape;
      }
      t += rng.exponential(DAY_MIN / 4);
    }
  }

  let sum = 0;
  for (const r of rates) sum += r;
  const scale = sum > 0 ? mean / (sum / n) : 0;
  for (let k = 0; k < n; k++) rates[k] = Math.round((rates[k] ?? 0) * scale * 1000) / 1000;
  return traceOf(`${family}-seed${seed}`, 60_000, rates, `generated: ${family}, seed ${seed}, ${days} days, mean ${mean} req/s`);
}
