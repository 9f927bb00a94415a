/**
 * Retention: events and acknowledged orders would otherwise grow without end. A timer deletes
 * events older than an age or beyond a count, and orders acknowledged longer ago than an age
 * (with orders to instances destroyed that long ago, which no agent will ever take); nodes gone
 * and join tokens expired, revoked or (made for one cloud machine) used up go after the events'
 * age — each cloud machine leaves one of each.
 */
import type { Logger } from 'pino';
import type { Clock } from '../core/index.js';
import type { Store } from '../adapters/store/index.js';
import { ControllerStartError } from './datadir.js';

export interface RetentionOptions {
  /** Events recorded longer ago are deleted; 0 keeps them whatever their age. Env DROVER_EVENTS_MAX_AGE. @default 7 days */
  readonly eventsMaxAgeMs?: number;
  /** Only the newest events are kept; 0 keeps any number. Env DROVER_EVENTS_MAX_COUNT. @default 100000 */
  readonly eventsMaxCount?: number;
  /** Orders acknowledged longer ago are deleted; 0 keeps them. Env DROVER_ORDERS_MAX_AGE. @default 1 day */
  readonly ordersMaxAgeMs?: number;
  /** How often the store is pruned; 0 never (passes run only through `runOnce`). @default 10 minutes */
  readonly intervalMs?: number;
}

export type CompiledRetention = Required<RetentionOptions>;

export const DEFAULT_RETENTION: CompiledRetention = {
  eventsMaxAgeMs: 7 * 24 * 3_600_000,
  eventsMaxCount: 100_000,
  ordersMaxAgeMs: 24 * 3_600_000,
  intervalMs: 10 * 60_000,
};

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `7d`, `12h`, `30m`, `45s`, `500ms`, or `0` (no limit). */
function parseAge(name: string, text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(text.trim());
  if (!m || (m[2] === undefined && Number(m[1]) !== 0)) {
    throw new ControllerStartError('bad-setting', `${name}=${text}: expected a duration such as 7d, 12h or 30m, or 0 for no limit`);
  }
  return Math.round(Number(m[1]) * (UNIT_MS[m[2] ?? 'ms'] ?? 1));
}

function parseCount(name: string, text: string): number {
  if (!/^\d+$/.test(text.trim())) throw new ControllerStartError('bad-setting', `${name}=${text}: expected a whole number, or 0 for no limit`);
  return Number(text.trim());
}

/** The retention settings given in the environment; a bad value is refused, naming it. */
export function retentionFromEnv(env: NodeJS.ProcessEnv): RetentionOptions {
  const o: { -readonly [K in keyof RetentionOptions]: RetentionOptions[K] } = {};
  if (env.DROVER_EVENTS_MAX_AGE) o.eventsMaxAgeMs = parseAge('DROVER_EVENTS_MAX_AGE', env.DROVER_EVENTS_MAX_AGE);
  if (env.DROVER_EVENTS_MAX_COUNT) o.eventsMaxCount = parseCount('DROVER_EVENTS_MAX_COUNT', env.DROVER_EVENTS_MAX_COUNT);
  if (env.DROVER_ORDERS_MAX_AGE) o.ordersMaxAgeMs = parseAge('DROVER_ORDERS_MAX_AGE', env.DROVER_ORDERS_MAX_AGE);
  return o;
}

export function compileRetention(...layers: (RetentionOptions | undefined)[]): CompiledRetention {
  const out: { -readonly [K in keyof CompiledRetention]: number } = { ...DEFAULT_RETENTION };
  for (const l of layers) {
    for (const k of Object.keys(DEFAULT_RETENTION) as (keyof CompiledRetention)[]) {
      const v = l?.[k];
      if (v !== undefined) out[k] = v;
    }
  }
  return out;
}

export interface PruneResult {
  readonly events: number;
  readonly orders: number;
  /** Join tokens and node records of the fleet, kept as long as events are (by age). */
  readonly tokens: number;
  readonly nodes: number;
}

/** One pass: what retention deletes now. */
export async function prune(store: Store, now: number, r: CompiledRetention): Promise<PruneResult> {
  const events =
    r.eventsMaxAgeMs > 0 || r.eventsMaxCount > 0
      ? await store.pruneEvents({
          ...(r.eventsMaxAgeMs > 0 ? { before: now - r.eventsMaxAgeMs } : {}),
          ...(r.eventsMaxCount > 0 ? { keep: r.eventsMaxCount } : {}),
        })
      : 0;
  const orders = r.ordersMaxAgeMs > 0 ? await store.pruneOrders({ ackedBefore: now - r.ordersMaxAgeMs }) : 0;
  // A node gone or a token expired is kept as long as the events that tell of it.
  const fleet = r.eventsMaxAgeMs > 0 ? await store.pruneFleet({ before: now - r.eventsMaxAgeMs }) : { tokens: 0, nodes: 0 };
  return { events, orders, ...fleet };
}

export interface RetentionTask {
  /** Runs a pass now (also what the timer does). */
  runOnce(): Promise<PruneResult>;
  /** Stops the timer and waits for a pass in progress. */
  stop(): Promise<void>;
}

/** Prunes once shortly after start, then every `intervalMs`. Failures are logged, not thrown. */
export function startRetention(store: Store, clock: Clock, logger: Logger, r: CompiledRetention): RetentionTask {
  let running: Promise<PruneResult> | undefined;
  let stopped = false;
  const runOnce = (): Promise<PruneResult> =>
    (running ??= prune(store, clock.now(), r)
      .then((res) => {
        if (res.events || res.orders || res.tokens || res.nodes) logger.info(res, 'retention: pruned old events, orders and fleet records');
        return res;
      })
      .finally(() => (running = undefined)));
  const tick = () => {
    if (stopped) return;
    runOnce().catch((err: unknown) => logger.warn({ err }, 'retention: pruning failed; retrying later'));
  };
  const every = r.intervalMs > 0 ? r.intervalMs : undefined;
  const first = every === undefined ? undefined : setTimeout(tick, Math.min(every, 30_000));
  const timer = every === undefined ? undefined : setInterval(tick, every);
  first?.unref();
  timer?.unref();
  return {
    runOnce,
    stop: async () => {
      stopped = true;
      clearTimeout(first);
      clearInterval(timer);
      await running?.catch(() => undefined);
    },
  };
}
