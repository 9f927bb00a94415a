/**
 * The controller's own event-loop lag. While the loop is blocked (a huge request, a GC pause, a
 * stopped process) nothing reads the agents' heartbeats, so their silence says nothing about
 * them: {@link LagMonitor.seenAfterStalls} moves an agent's "last seen" to the end of any such
 * stall, and the heartbeat verdict only counts silence the controller was awake to hear.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

export interface LagMonitorOptions {
  /** How often the loop is probed. @default 100 */
  readonly intervalMs?: number;
  /** A probe late by more than this is a stall. @default 250 */
  readonly stallMs?: number;
  /** Wall clock; the controller's injected clock in tests. */
  readonly now: () => number;
  /** Told about each stall once it is over. */
  readonly onStall?: (ms: number) => void;
}

export class LagMonitor {
  readonly #o: Required<Omit<LagMonitorOptions, 'onStall'>> & Pick<LagMonitorOptions, 'onStall'>;
  #lastTick: number;
  #lastStallEnd = -Infinity;
  #timer?: NodeJS.Timeout;
  readonly #histogram: IntervalHistogram;

  constructor(opts: LagMonitorOptions) {
    this.#o = { intervalMs: 100, stallMs: 250, ...opts };
    this.#lastTick = opts.now();
    this.#histogram = monitorEventLoopDelay({ resolution: 20 });
  }

  start(): void {
    this.#histogram.enable();
    this.#lastTick = this.#o.now();
    this.#timer = setInterval(() => this.tick(), this.#o.intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#histogram.disable();
  }

  /** One probe (called by the interval; tests call it by hand). */
  tick(): void {
    const now = this.#o.now();
    const late = now - this.#lastTick - this.#o.intervalMs;
    if (late > this.#o.stallMs) {
      this.#lastStallEnd = now;
      this.#o.onStall?.(late);
    }
    this.#lastTick = now;
  }

  /** When the last stall ended; `now` while one is going on (or has just ended unprobed). */
  lastStallEnd(): number {
    const now = this.#o.now();
    if (now - this.#lastTick - this.#o.intervalMs > this.#o.stallMs) return now;
    return this.#lastStallEnd;
  }

  /** `seenAt`, moved to the end of any controller stall since. */
  seenAfterStalls(seenAt: number): number {
    return Math.max(seenAt, this.lastStallEnd());
  }

  /** Event-loop delay: p99 and max in seconds since the last reset. */
  delaySeconds(): { p99: number; max: number } {
    const p99 = this.#histogram.percentile(99) / 1e9;
    const max = this.#histogram.max / 1e9;
    this.#histogram.reset();
    return { p99: Number.isFinite(p99) ? p99 : 0, max: Number.isFinite(max) ? max : 0 };
  }
}
