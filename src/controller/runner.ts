/**
 * One loop owner, in the manner of controller-runtime: keys are queued, de-duplicated, and
 * reconciled one at a time per key. A reconcile returns `{ requeueAfterMs }` to be called again
 * later; a thrown error is retried with exponential backoff, a {@link TerminalError} is not.
 */
import type { Logger } from 'pino';

export class TerminalError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TerminalError';
  }
}

export interface ReconcileResult {
  readonly requeueAfterMs?: number;
}

export type ReconcileFn = (key: string) => Promise<ReconcileResult>;

interface KeyState {
  timer?: NodeJS.Timeout;
  dueAt?: number;
  running: boolean;
  dirty: boolean;
  failures: number;
}

export class Runner {
  private readonly keys = new Map<string, KeyState>();
  private stopped = false;

  constructor(
    private readonly reconcile: ReconcileFn,
    private readonly log: Logger,
    private readonly opts: { baseBackoffMs?: number; maxBackoffMs?: number } = {},
  ) {}

  /** Asks for `key` to be reconciled after `delayMs` (sooner requests win). */
  enqueue(key: string, delayMs = 0): void {
    if (this.stopped) return;
    let s = this.keys.get(key);
    if (!s) {
      s = { running: false, dirty: false, failures: 0 };
      this.keys.set(key, s);
    }
    if (s.running) {
      if (delayMs === 0) s.dirty = true;
      else this.schedule(key, s, delayMs);
      return;
    }
    this.schedule(key, s, delayMs);
  }

  private schedule(key: string, s: KeyState, delayMs: number): void {
    const due = Date.now() + delayMs;
    if (s.timer && s.dueAt !== undefined && s.dueAt <= due) return;
    if (s.timer) clearTimeout(s.timer);
    s.dueAt = due;
    s.timer = setTimeout(() => {
      s.timer = undefined;
      s.dueAt = undefined;
      void this.run(key, s);
    }, delayMs);
  }

  private async run(key: string, s: KeyState): Promise<void> {
    if (this.stopped) return;
    if (s.running) {
      s.dirty = true;
      return;
    }
    s.running = true;
    s.dirty = false;
    let next: number | undefined;
    try {
      const r = await this.reconcile(key);
      s.failures = 0;
      next = r.requeueAfterMs;
    } catch (err) {
      if (err instanceof TerminalError) {
        this.log.error({ err, key }, 'reconcile failed for good');
      } else {
        s.failures++;
        next = Math.min(this.opts.maxBackoffMs ?? 30_000, (this.opts.baseBackoffMs ?? 200) * 2 ** (s.failures - 1));
        this.log.warn({ err, key, retryInMs: next }, 'reconcile failed; retrying');
      }
    } finally {
      s.running = false;
    }
    if (s.dirty || next === 0) this.enqueue(key, 0);
    else if (next !== undefined) this.enqueue(key, next);
  }

  forget(key: string): void {
    const s = this.keys.get(key);
    if (s?.timer) clearTimeout(s.timer);
    this.keys.delete(key);
  }

  stop(): void {
    this.stopped = true;
    for (const s of this.keys.values()) if (s.timer) clearTimeout(s.timer);
    this.keys.clear();
  }
}
