/**
 * Building blocks shared by the app file's schemas (spec.ts, policy-spec.ts), so every field
 * of the file words its errors the same way: durations, integers, a missing field.
 */
import { z } from 'zod';
import { MAX_ROLE_COUNT } from './limits.js';

export const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;
const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;
/**
 * The longest duration an app file may give. Node's timers would allow 596h; nothing a role
 * waits for (a stop, a drain, a probe, a cooldown) should take more than a day, and a bound
 * keeps sums of durations far from the timer limit.
 */
export const MAX_DURATION_MS = 24 * 3_600_000;
export const DURATION_MSG = 'expected a duration such as "5s" or "500ms"';

/** An error for a schema that says `required` for a missing field, `message` for anything else wrong. */
export function err(message: string): { error: (iss: { input?: unknown }) => string } {
  return { error: (iss) => (iss.input === undefined ? 'required' : message) };
}

/** `1.5s` → 1500; NaN for anything that is not a duration. */
export function parseDuration(text: string): number {
  const m = DURATION.exec(text);
  if (!m) return NaN;
  return Math.round(Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS]);
}

/** A duration field, compiled to milliseconds. */
export function duration(opts: { positive: boolean }) {
  const positive = opts.positive ? (ms: number) => ms > 0 : () => true;
  return z
    .string(err(DURATION_MSG))
    .regex(DURATION, { ...err(DURATION_MSG), abort: true })
    .refine((s) => parseDuration(s) <= MAX_DURATION_MS, { error: 'expected a duration of at most 24h' })
    .refine((s) => positive(parseDuration(s)), { error: 'expected a duration greater than 0' })
    .transform(parseDuration);
}

/**
 * An integer of at least `min` and at most `max`: every number of the app file has a bound.
 * @param max @default MAX_ROLE_COUNT (1000): most integers of the file count instances.
 */
export function intAtLeast(min: number, max: number = MAX_ROLE_COUNT) {
  const msg = `expected an integer >= ${min}`;
  return z.int(err(msg)).min(min, err(msg)).max(max, { error: `must be at most ${max}` });
}
