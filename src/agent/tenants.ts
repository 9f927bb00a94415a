/**
 * The tenants of one instance: runs the role's `tenants.add` / `move` / `remove` commands, one
 * at a time, in the order the controller asked, once the role serves. A failing `add` is retried
 * with backoff (1 s doubling to a minute) up to the role's `maxAttempts`, then the tenant is
 * `failed` with the reason and the last output lines. Orders are idempotent: a tenant already
 * added (or on its way) is not added twice; removing an unknown tenant runs `remove` anyway
 * (the controller knows better than a restarted agent what lives here).
 */
import { fitLines, tenantRetryDelayMs, truncate, WIRE_LIMITS, type TenantRef, type TenantReport, type TenantsSpec } from '../core/index.js';
import type { ScriptResult } from './script.js';

export interface TenantRunnerDeps {
  /** The role's tenant spec (undefined: the role hosts no tenants). */
  readonly spec: () => TenantsSpec | undefined;
  /** Resolves true once the role serves, false if it never will (failed, stopping). */
  readonly whenServing: (signal: AbortSignal) => Promise<boolean>;
  /** Runs one command of the role with these extra variables. */
  readonly run: (step: string, command: string, env: Record<string, string>, timeoutMs: number, signal: AbortSignal) => Promise<ScriptResult>;
  /** Something changed worth a status report. */
  readonly changed: () => void;
  readonly sleep: (ms: number, signal: AbortSignal) => Promise<void>;
}

interface Entry {
  report: TenantReport;
  /** When a removed tenant may be forgotten. */
  forgetAt?: number;
}

/** Removed tenants are reported for this long, so the controller sees it, then forgotten. */
const KEEP_REMOVED_MS = 10 * 60_000;

function outcome(r: ScriptResult, timeoutMs: number): string {
  if (r.timedOut) return `timed out after ${Math.round(timeoutMs / 1000)}s`;
  if (r.signal) return `was killed by ${r.signal}`;
  return r.code === null ? 'could not be run' : `exited with code ${r.code}`;
}

export class TenantRunner {
  readonly #d: TenantRunnerDeps;
  readonly #tenants = new Map<string, Entry>();
  #queue: Promise<void> = Promise.resolve();
  readonly #abort = new AbortController();

  constructor(deps: TenantRunnerDeps) {
    this.#d = deps;
  }

  /** Each tenant this instance was told about, for the status. */
  report(now = Date.now()): Record<string, TenantReport> | undefined {
    if (this.#tenants.size === 0) return undefined;
    const out: Record<string, TenantReport> = {};
    for (const [id, e] of this.#tenants) {
      if (e.forgetAt !== undefined && e.forgetAt <= now) {
        this.#tenants.delete(id);
        continue;
      }
      out[id] = e.report;
    }
    return out;
  }

  add(t: TenantRef, fromInstance?: string): void {
    const cur = this.#tenants.get(t.id)?.report.phase;
    if (cur === 'adding' || cur === 'ready') return;
    if (this.#tenants.size >= WIRE_LIMITS.tenants && cur === undefined) return;
    this.#set(t.id, { phase: 'adding', attempts: 0 });
    this.#enqueue(() => this.#add(t, fromInstance));
  }

  remove(t: TenantRef): void {
    const cur = this.#tenants.get(t.id)?.report.phase;
    if (cur === 'removing' || cur === 'removed') return;
    this.#set(t.id, { phase: 'removing', attempts: 0 });
    this.#enqueue(() => this.#remove(t));
  }

  /** Stops waiting and running (the role is going away). */
  stop(): void {
    this.#abort.abort();
  }

  #set(id: string, report: TenantReport, forgetAt?: number): void {
    this.#tenants.set(id, forgetAt === undefined ? { report } : { report, forgetAt });
    this.#d.changed();
  }

  #enqueue(job: () => Promise<void>): void {
    this.#queue = this.#queue.then(job).catch(() => undefined);
  }

  #env(t: TenantRef, fromInstance?: string): Record<string, string> {
    return { TENANT_ID: t.id, TENANT_NAME: t.name, TENANT_HOST: t.host ?? '', ...(fromInstance ? { TENANT_FROM_INSTANCE: fromInstance } : {}) };
  }

  async #add(t: TenantRef, fromInstance?: string): Promise<void> {
    const signal = this.#abort.signal;
    const spec = this.#d.spec();
    if (!spec) {
      this.#set(t.id, { phase: 'failed', attempts: 0, reason: 'the role hosts no tenants (no tenants: in its spec)' });
      return;
    }
    if (!(await this.#d.whenServing(signal))) {
      if (!signal.aborted) this.#set(t.id, { phase: 'failed', attempts: 0, reason: 'the role is not serving on this instance' });
      return;
    }
    const command = fromInstance && spec.move ? spec.move : spec.add;
    const step = fromInstance && spec.move ? 'tenant move' : 'tenant add';
    for (let attempt = 1; !signal.aborted; attempt++) {
      if (this.#tenants.get(t.id)?.report.phase !== 'adding') return; // removed meanwhile
      const r = await this.#d.run(step, command, this.#env(t, fromInstance), spec.addTimeoutMs, signal);
      if (signal.aborted) return;
      if (r.code === 0) {
        this.#set(t.id, { phase: 'ready', attempts: attempt });
        return;
      }
      const reason = `${step} ${outcome(r, spec.addTimeoutMs)} (attempt ${attempt} of ${spec.maxAttempts})`;
      const tail = fitLines(r.tail, WIRE_LIMITS.tenantTail);
      if (attempt >= spec.maxAttempts) {
        this.#set(t.id, { phase: 'failed', attempts: attempt, reason: truncate(reason, WIRE_LIMITS.messageChars), tail });
        return;
      }
      const delay = tenantRetryDelayMs(attempt);
      this.#set(t.id, { phase: 'adding', attempts: attempt, reason: truncate(`${reason}; retrying in ${Math.round(delay / 1000)}s`, WIRE_LIMITS.messageChars), tail });
      await this.#d.sleep(delay, signal);
    }
  }

  async #remove(t: TenantRef): Promise<void> {
    const signal = this.#abort.signal;
    const spec = this.#d.spec();
    if (!spec) {
      this.#set(t.id, { phase: 'removed', attempts: 0 }, Date.now() + KEEP_REMOVED_MS);
      return;
    }
    for (let attempt = 1; !signal.aborted; attempt++) {
      const r = await this.#d.run('tenant remove', spec.remove, this.#env(t), spec.removeTimeoutMs, signal);
      if (signal.aborted) return;
      if (r.code === 0 || attempt >= spec.maxAttempts) {
        // A remove that keeps failing still frees the seat: the tenant's data lives outside the
        // instance (docs/app-file.md), and the failure is reported.
        const failed = r.code !== 0 ? { reason: truncate(`tenant remove ${outcome(r, spec.removeTimeoutMs)} after ${attempt} attempts`, WIRE_LIMITS.messageChars), tail: fitLines(r.tail, WIRE_LIMITS.tenantTail) } : {};
        this.#set(t.id, { phase: 'removed', attempts: attempt, ...failed }, Date.now() + KEEP_REMOVED_MS);
        return;
      }
      await this.#d.sleep(tenantRetryDelayMs(attempt), signal);
    }
  }
}
