/**
 * Generated traces, one rate per minute, reproducible from a seed: the shapes a policy must
 * handle besides the WorldCup's. Each family draws its own parameters (levels, times, sizes)
 * from the seed, so seeds 1, 2, 3 are three different days of the same kind.
 */
import { Rng } from './rng.js';
import { traceOf, type Trace } from './trace.js';

export type SyntheticFamily = 'diurnal' | 'ramps' | 'flash';
export const SYNTHETIC_FAMILIES: readonly SyntheticFamily[] = ['diurnal', 'ramps', 'flash'];

export interface SyntheticOptions {
  readonly family: SyntheticFamily;
  readonly seed: number;
  /** @default 3 */
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

export function syntheticTrace(options: SyntheticOptions): Trace {
  const { family, seed } = options;
  const n = (options.days ?? 3) * DAY_MIN;
  const mean = options.meanRate ?? 300;
  const rng = new Rng(seed, 100 + SYNTHETIC_FAMILIES.indexOf(family));
  const rates = new Float64Array(n);

  if (family === 'diurnal') {
    // Night at 15-25% of the peak; each day's peak differs by ±20%.
    const floor = rng.uniform(0.15, 0.25);
    const peakMinute = Math.round(rng.uniform(17, 21) * 60);
    const dayScale = Array.from({ length: Math.ceil(n / DAY_MIN) }, () => rng.uniform(0.8, 1.2));
    const wobble = noise(rng, n, 0.08);
    for (let k = 0; k < n; k++) {
      const level = floor + (1 - floor) * dayShape(k % DAY_MIN, peakMinute);
      rates[k] = level * (dayScale[Math.floor(k / DAY_MIN)] ?? 1) * (wobble[k] ?? 1);
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
  return traceOf(`${family}-seed${seed}`, 60_000, rates, `generated: ${family}, seed ${seed}, ${options.days ?? 3} days, mean ${mean} req/s`);
}
