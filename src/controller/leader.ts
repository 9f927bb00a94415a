/**
 * Leader election between controllers sharing one database: a lease row (holder, epoch, expiry)
 * taken and renewed with conditional updates on the database's clock (store leases).
 *
 * A standby tries to take the lease every `retryMs`; the leader renews it every `renewMs`. The
 * leader trusts its lease only until (its own monotonic clock when it sent the last successful
 * renew) + `ttlMs` − `marginMs`: the database may have answered late, so that is the latest the
 * lease can still be its. By then, if no renew succeeded, it steps down — before the lease can
 * expire and a standby take it. A renew answered "not yours" (expired, taken) steps down at once.
 *
 * Every write the leader makes carries its epoch (store/fenced.ts), so even a leader that failed
 * to step down in time (a stalled process) cannot write after the next one took over.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { Lease, Store } from '../adapters/store/index.js';

export const LEADER_LEASE = 'controller';

/** Who a lease holder is, as written in the lease's holder column (JSON). */
export interface HolderInfo {
  readonly id: string;
  /** Where its API answers. */
  readonly url: string;
  readonly host: string;
  readonly pid: number;
}

export function holderName(url: string): { name: string; info: HolderInfo } {
  const info: HolderInfo = { id: randomBytes(6).toString('hex'), url, host: hostname(), pid: process.pid };
  return { name: JSON.stringify(info), info };
}

/** A holder column read back: what a controller wrote, or the raw text of anything else. */
export function parseHolder(holder: string): HolderInfo | { readonly raw: string } {
  try {
    const v = JSON.parse(holder) as Partial<HolderInfo>;
    if (typeof v.id === 'string' && typeof v.url === 'string' && typeof v.host === 'string' && typeof v.pid === 'number') {
      return { id: v.id, url: v.url, host: v.host, pid: v.pid };
    }
  } catch {
    // not ours
  }
  return { raw: holder };
}

export interface LeadershipTimes {
  /** How long a lease lasts unless renewed. @default 6000 */
  readonly ttlMs: number;
  /** How often the leader renews. @default ttl / 4 */
  readonly renewMs: number;
  /** How often a standby tries to take the lease. @default 1000 */
  readonly retryMs: number;
  /** How long before the lease could expire the leader stops trusting it. @default ttl / 4 */
  readonly marginMs: number;
}

export function leadershipTimes(ttlMs = 6000, over: Partial<Omit<LeadershipTimes, 'ttlMs'>> = {}): LeadershipTimes {
  return { ttlMs, renewMs: Math.max(50, Math.floor(ttlMs / 4)), retryMs: Math.min(1000, Math.max(50, Math.floor(ttlMs / 4))), marginMs: Math.floor(ttlMs / 4), ...over };
}

export interface LeadershipOptions {
  readonly store: Store;
  readonly holder: string;
  readonly times: LeadershipTimes;
  readonly log: Logger;
  /** The lease is ours: start acting under it. A throw steps down again. */
  readonly onElected: (lease: Lease) => Promise<void>;
  /** The lease is no longer ours (or may not be): stop acting. */
  readonly onDeposed: (reason: string) => Promise<void>;
  /** Monotonic ms. @default performance.now */
  readonly now?: () => number;
}

export type LeadershipState = 'standby' | 'leader' | 'stopped';

export class Leadership {
  #state: LeadershipState = 'standby';
  #lease: Lease | undefined;
  /** Monotonic time until which the lease is surely ours. */
  #trustUntil = 0;
  #timer: NodeJS.Timeout | undefined;
  #deadline: NodeJS.Timeout | undefined;
  #busy: Promise<void> = Promise.resolve();
  readonly #now: () => number;

  constructor(private readonly o: LeadershipOptions) {
    this.#now = o.now ?? (() => performance.now());
  }

  get state(): LeadershipState {
    return this.#state;
  }

  /** The lease while leading. */
  get lease(): Lease | undefined {
    return this.#state === 'leader' ? this.#lease : undefined;
  }

  /** Starts trying for the lease; resolves after the first attempt (elected or standing by). */
  async start(): Promise<void> {
    await this.#tick();
  }

  /** Stops; a leader steps down first and gives the lease up so a standby takes over at once. */
  async stop(): Promise<void> {
    if (this.#state === 'stopped') return;
    const wasLeading = this.#state === 'leader';
    const lease = this.#lease;
    this.#state = 'stopped';
    clearTimeout(this.#timer);
    clearTimeout(this.#deadline);
    await this.#busy.catch(() => undefined);
    if (wasLeading && lease) {
      await this.o.onDeposed('the controller is stopping').catch((err: unknown) => this.o.log.error({ err }, 'stepping down failed'));
      await this.o.store.releaseLease(lease.name, lease.holder, lease.epoch).catch((err: unknown) => this.o.log.warn({ err }, 'could not release the leader lease; it expires by itself'));
    }
  }

  #schedule(ms: number): void {
    clearTimeout(this.#timer);
    if (this.#state === 'stopped') return;
    this.#timer = setTimeout(() => void this.#tick(), ms);
  }

  #tick(): Promise<void> {
    this.#busy = this.#busy.then(() => (this.#state === 'leader' ? this.#renew() : this.#tryAcquire())).catch((err: unknown) => this.o.log.error({ err }, 'leader election step failed'));
    return this.#busy;
  }

  async #tryAcquire(): Promise<void> {
    if (this.#state !== 'standby') return;
    const sent = this.#now();
    let lease: Lease | undefined;
    try {
      lease = await this.o.store.acquireLease(LEADER_LEASE, this.o.holder, this.o.times.ttlMs);
    } catch (err) {
      this.o.log.warn({ err }, 'could not reach the database to try for the leader lease');
    }
    if (this.#state !== 'standby') return;
    if (!lease) {
      this.#schedule(this.o.times.retryMs);
      return;
    }
    this.#lease = lease;
    this.#state = 'leader';
    this.#trusted(sent);
    this.o.log.info({ epoch: lease.epoch }, 'took the leader lease: this controller acts');
    try {
      await this.o.onElected(lease);
    } catch (err) {
      this.o.log.error({ err }, 'could not start acting as the leader; stepping down');
      await this.#stepDown('starting to act failed');
      return;
    }
    this.#schedule(this.o.times.renewMs);
  }

  async #renew(): Promise<void> {
    const lease = this.#lease;
    if (this.#state !== 'leader' || !lease) return;
    const sent = this.#now();
    let renewed: Lease | undefined;
    try {
      renewed = await this.o.store.renewLease(lease.name, lease.holder, lease.epoch, this.o.times.ttlMs);
    } catch (err) {
      // The deadline timer steps down if this goes on too long.
      this.o.log.warn({ err }, 'could not renew the leader lease; retrying');
      this.#schedule(Math.min(this.o.times.renewMs, 250));
      return;
    }
    if (this.#state !== 'leader') return;
    if (!renewed) {
      await this.#stepDown('the leader lease was lost (expired or taken by another controller)');
      return;
    }
    this.#lease = renewed;
    this.#trusted(sent);
    this.#schedule(this.o.times.renewMs);
  }

  /** The lease is surely ours until `sent` + ttl − margin; past that without a renew, step down. */
  #trusted(sent: number): void {
    this.#trustUntil = sent + this.o.times.ttlMs - this.o.times.marginMs;
    this.#armDeadline();
  }

  #armDeadline(): void {
    clearTimeout(this.#deadline);
    // Timers may fire a fraction of a millisecond early: checked again until really past.
    this.#deadline = setTimeout(() => {
      if (this.#state !== 'leader') return;
      if (this.#now() >= this.#trustUntil) void this.#stepDown('the leader lease could not be renewed in time');
      else this.#armDeadline();
    }, Math.max(1, Math.ceil(this.#trustUntil - this.#now())));
  }

  async #stepDown(reason: string): Promise<void> {
    if (this.#state !== 'leader') return;
    this.#state = 'stopped';
    clearTimeout(this.#timer);
    clearTimeout(this.#deadline);
    this.o.log.error({ epoch: this.#lease?.epoch, reason }, 'stepping down: this controller no longer acts');
    await this.o.onDeposed(reason);
  }
}
