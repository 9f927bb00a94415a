/**
 * The simulator's small languages: durations (`60s`), boot-time distributions
 * (`60s`, `uniform:30s..90s`, `lognormal:60s,0.5`) and SLOs (`wait:500ms`, `util:0.8`).
 * Each parser throws {@link SimInputError} naming the option and what it expected.
 */
import type { Rng } from './rng.js';

/** Input the simulator cannot use: `option` names the flag or field, the message says why. */
export class SimInputError extends Error {
  override readonly name = 'SimInputError';
  constructor(
    readonly option: string,
    reason: string,
  ) {
    super(`${option}: ${reason}`);
  }
}

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/;
const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** `500ms`, `60s`, `1.5m`, `2h`, `1d`; a bare number is seconds. */
export function parseDuration(text: string, option: string): number {
  const s = text.trim();
  if (/^\d+(?:\.\d+)?$/.test(s)) return Math.round(Number(s) * 1000);
  const m = DURATION.exec(s);
  if (!m) throw new SimInputError(option, `expected a duration such as "60s" or "500ms", got ${JSON.stringify(text)}`);
  return Math.round(Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS]);
}

/** `500ms`, `60s`, `90s`, `5m`, `2h`: an exact text of a duration. */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0 && ms >= 120_000) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

// ---------------------------------------------------------------------------------------------
// Boot time

/** Time from "create an instance" to its agent registering (the VM or process booting). */
export type BootDistribution =
  | { readonly kind: 'fixed'; readonly ms: number }
  | { readonly kind: 'uniform'; readonly minMs: number; readonly maxMs: number }
  /** exp(N(ln median, sigma²)): a long right tail, as cloud boot times have. */
  | { readonly kind: 'lognormal'; readonly medianMs: number; readonly sigma: number };

export function parseBoot(text: string, option = '--boot'): BootDistribution {
  const s = text.trim();
  if (s.startsWith('uniform:')) {
    const parts = s.slice('uniform:'.length).split('..');
    if (parts.length !== 2) throw new SimInputError(option, `expected uniform:MIN..MAX such as uniform:30s..90s, got ${JSON.stringify(text)}`);
    const minMs = parseDuration(parts[0] ?? '', option);
    const maxMs = parseDuration(parts[1] ?? '', option);
    if (maxMs < minMs) throw new SimInputError(option, `uniform: MIN (${formatDuration(minMs)}) is above MAX (${formatDuration(maxMs)})`);
    return { kind: 'uniform', minMs, maxMs };
  }
  if (s.startsWith('lognormal:')) {
    const parts = s.slice('lognormal:'.length).split(',');
    const sigma = Number(parts[1]);
    if (parts.length !== 2 || !Number.isFinite(sigma) || sigma < 0) {
      throw new SimInputError(option, `expected lognormal:MEDIAN,SIGMA such as lognormal:60s,0.5, got ${JSON.stringify(text)}`);
    }
    return { kind: 'lognormal', medianMs: parseDuration(parts[0] ?? '', option), sigma };
  }
  const fixed = s.startsWith('fixed:') ? s.slice('fixed:'.length) : s;
  return { kind: 'fixed', ms: parseDuration(fixed, option) };
}

export function describeBoot(b: BootDistribution): string {
  if (b.kind === 'fixed') return formatDuration(b.ms);
  if (b.kind === 'uniform') return `uniform ${formatDuration(b.minMs)}..${formatDuration(b.maxMs)}`;
  return `lognormal median ${formatDuration(b.medianMs)} σ ${b.sigma}`;
}

export function sampleBoot(b: BootDistribution, rng: Rng): number {
  if (b.kind === 'fixed') return b.ms;
  if (b.kind === 'uniform') return Math.round(rng.uniform(b.minMs, b.maxMs));
  return Math.round(b.medianMs * Math.exp(b.sigma * rng.normal()));
}

/**
 * A boot time that is rarely exceeded: what a planner with perfect foresight of demand must
 * provision ahead by (the 99th percentile of the lognormal: median × e^(2.326σ)).
 */
export function bootUpperMs(b: BootDistribution): number {
  if (b.kind === 'fixed') return b.ms;
  if (b.kind === 'uniform') return b.maxMs;
  return Math.ceil(b.medianMs * Math.exp(2.3263 * b.sigma));
}

// ---------------------------------------------------------------------------------------------
// SLO

/**
 * When a minute counts as violating:
 * - `wait`: its requests waited longer than `ms` on average (a dropped request counts as
 *   having waited the client timeout);
 * - `util`: demand was above `max` of the serving capacity (the classic "keep CPU under 80%").
 */
export type Slo = { readonly kind: 'wait'; readonly ms: number } | { readonly kind: 'util'; readonly max: number };

export function parseSlo(text: string, option = '--slo'): Slo {
  const s = text.trim();
  const sep = s.indexOf(':');
  const kind = sep < 0 ? '' : s.slice(0, sep);
  const value = s.slice(sep + 1);
  if (kind === 'wait') return { kind: 'wait', ms: parseDuration(value, option) };
  if (kind === 'util') {
    const max = value.endsWith('%') ? Number(value.slice(0, -1)) / 100 : Number(value);
    if (!Number.isFinite(max) || max <= 0) throw new SimInputError(option, `expected util:FRACTION such as util:0.8 or util:80%, got ${JSON.stringify(text)}`);
    return { kind: 'util', max };
  }
  throw new SimInputError(option, `expected wait:DURATION (e.g. wait:500ms) or util:FRACTION (e.g. util:0.8), got ${JSON.stringify(text)}`);
}

export function describeSlo(slo: Slo): string {
  return slo.kind === 'wait' ? `mean wait ≤ ${formatDuration(slo.ms)} per minute` : `utilisation ≤ ${Math.round(slo.max * 100)}% per minute`;
}
