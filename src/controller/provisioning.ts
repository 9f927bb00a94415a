/**
 * The provisioning job: makes and destroys instances' machines through the provider without
 * ever holding up a reconcile pass (a cloud VM takes minutes). A pass records the instance and
 * hands it here; the provider is asked, and what it answers is observed (`describe`) until the
 * machine runs or is gone; results land in the store and wake the app's next pass.
 *
 * The instance id is the request's idempotency key, and the instance is in the store before
 * the provider is asked: a controller that stops at any point finds, when it starts again
 * ({@link Provisioning.inventory}), every machine the provider made — one it knows is adopted,
 * one it does not (or knows as destroyed) is reaped.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { setMaxListeners } from 'node:events';
import { providerSettingsOf, type ProviderSettings } from '../core/index.js';
import type { InstanceHandle, Machine } from '../adapters/providers/index.js';
import type { InstancePatch, InstanceRecord } from '../adapters/store/index.js';
import type { ControllerContext } from './context.js';

/** First wait before looking at a pending machine again; doubles up to {@link LOOK_MAX_MS}. */
const LOOK_FIRST_MS = 200;
const LOOK_MAX_MS = 5000;

/** What is under way for one instance. */
interface Work {
  readonly app: string;
  /** Its request and the watch of its machine coming up. */
  creating?: Promise<void>;
  /** The provider's request alone (a destroy waits for it, not for the watch). */
  request?: Promise<unknown>;
  destroying?: Promise<void>;
}

/** What asking for an instance's machine needs of its record (a new one has no version yet). */
export type ProvisionTarget = Pick<InstanceRecord, 'id' | 'app' | 'role' | 'pool' | 'epoch' | 'joinToken' | 'createdAt' | 'providerRef'>;

const errorText = (err: unknown) => (err instanceof Error ? err.message : String(err));
const handleOf = (i: { id: string; providerRef: InstanceHandle['providerRef'] }): InstanceHandle => ({ id: i.id, providerRef: i.providerRef });
/** The kind of provider a reference names (the router writes it), if any. */
const kindOfRef = (ref: InstanceHandle['providerRef']): string | undefined => (typeof ref?.provider === 'string' ? ref.provider : undefined);

/** Where a running machine is, as a store patch (only what the provider told). */
function addressPatch(m: Machine): InstancePatch {
  return {
    ...(m.providerRef ? { providerRef: m.providerRef } : {}),
    ...(m.ip !== undefined ? { ip: m.ip } : {}),
    ...(m.port !== undefined ? { port: m.port } : {}),
    ...(m.workdir !== undefined ? { workdir: m.workdir } : {}),
  };
}

export class Provisioning {
  private readonly work = new Map<string, Work>();
  private readonly running = new Set<Promise<void>>();
  /** Instances whose failed destroy was told once (it is retried every pass, quietly). */
  private readonly destroyTroubleTold = new Set<string>();
  private stopped = false;
  /** Ends every wait between two looks when the controller stops. */
  /** Aborts every watch's wait at stop; one listener per machine being watched, so no listener limit. */
  private readonly stopping = (() => {
    const c = new AbortController();
    setMaxListeners(0, c.signal);
    return c;
  })();

  constructor(private readonly ctx: ControllerContext) {}

  /** Whether the instance's machine is being destroyed now. */
  destroying(id: string): boolean {
    return this.work.get(id)?.destroying !== undefined;
  }

  /** Whether a machine of the app is being made or destroyed now (its records must stay until that is done). */
  busy(app: string): boolean {
    for (const w of this.work.values()) if (w.app === app) return true;
    return false;
  }

  /** Resolves once nothing is under way (tests; a graceful stop). */
  async settled(): Promise<void> {
    while (this.running.size > 0) await Promise.all([...this.running]);
  }

  /** No more observing: watches end now (machines are left as they are; the next start looks again). */
  stop(): void {
    this.stopped = true;
    this.stopping.abort();
  }

  /** Asks the provider for the instance's machine and watches it come up; returns at once. */
  create(inst: ProvisionTarget): void {
    this.track(inst.id, inst.app, 'creating', () => this.provision(inst));
  }

  /**
   * Destroys the instance's machine and, once the provider says it is gone, marks the record
   * destroyed and wakes the app. Returns at once; a second call while one is under way is a no-op.
   * A failed destroy leaves the record as it is: the next pass asks again.
   */
  destroy(inst: InstanceRecord): void {
    if (this.destroying(inst.id)) return;
    const asked = this.work.get(inst.id)?.request;
    this.track(inst.id, inst.app, 'destroying', async () => {
      // A request on its way is let finish: its machine is the one to destroy.
      await asked?.catch(() => undefined);
      const cur = (await this.ctx.store.getInstance(inst.id)) ?? inst;
      if (cur.destroyedAt !== null) return;
      if (!(await this.end(handleOf(cur), inst.app, inst.role, kindOfRef(cur.providerRef) ?? (await this.settingsOf(cur))?.kind))) return;
      this.destroyTroubleTold.delete(inst.id);
      const now = this.ctx.clock.now();
      await this.ctx.store.updateInstance(inst.id, { destroyedAt: now, exports: null });
      if (inst.drainRequestedAt !== null && inst.goal === 'drain') this.ctx.metrics.drainSeconds.observe((now - inst.drainRequestedAt) / 1000);
      this.ctx.live.delete(inst.id);
      this.ctx.enqueue(inst.app);
    });
  }

  /**
   * At controller start, before any loop runs: what the provider has against what the store
   * knows. A machine the store does not know, or knows as destroyed (the controller stopped
   * between making and recording, or during a destroy), is reaped; a record still provisioning
   * is matched with its machine: adopted if it exists (its address recorded, its watch resumed),
   * asked for again with the same key if the request never reached the provider, failed if its
   * machine is gone. Never throws: a provider that cannot answer now is told in the log.
   */
  async inventory(): Promise<void> {
    const provider = this.ctx.provider;
    try {
      const live = await this.ctx.store.listInstances({});
      const known = new Set(live.map((i) => i.id));
      for (const m of await provider.list()) {
        if (known.has(m.id) || this.work.has(m.id)) continue;
        const rec = await this.ctx.store.getInstance(m.id);
        // Recorded since the list above (an API call during the start): known.
        if (rec && rec.destroyedAt === null) continue;
        await this.ctx.record({
          app: rec?.app ?? null, role: rec?.role ?? null, instance: m.id, kind: 'instance.orphan',
          message: `${m.id}: a ${kindOfRef(m.providerRef) ?? provider.name} machine the store ${rec ? 'knows as destroyed' : 'does not know'} (the controller stopped before it recorded its end or its making); destroying it`,
          data: { action: 'reaped', providerRef: m.providerRef },
        });
        this.track(m.id, rec?.app ?? '', 'destroying', async () => {
          await this.end(handleOf(m), rec?.app ?? null, rec?.role ?? null, kindOfRef(m.providerRef));
        });
      }
      // What the job already works on (a pass that ran meanwhile) is its business.
      const provisioning = live.filter((i) => i.state === 'provisioning' && !this.work.has(i.id));
      if (provisioning.length === 0) return;
      const seen = await provider.describe(provisioning.map(handleOf));
      for (const [k, inst] of provisioning.entries()) {
        const m = seen[k] ?? { id: inst.id, state: 'gone', providerRef: inst.providerRef };
        if (m.state === 'gone' && inst.providerRef === null) {
          this.ctx.log.info({ instance: inst.id }, 'the provider has no machine for an instance still provisioning: asking for it again, with the same key');
          this.create(inst);
        } else if (m.state === 'gone') {
          await this.fail(inst, `its ${kindOfRef(m.providerRef) ?? provider.name} machine is gone (seen when the controller started)${m.message ? `: ${m.message}` : ''}`);
        } else {
          if (inst.providerRef === null) {
            await this.ctx.record({
              app: inst.app, role: inst.role, instance: inst.id, kind: 'instance.orphan',
              message: `${inst.id} (${inst.role ?? 'spare'}): its ${kindOfRef(m.providerRef) ?? provider.name} machine was made before the controller stopped but not recorded; adopted`,
              data: { action: 'adopted', providerRef: m.providerRef },
            });
          }
          const patch = addressPatch(m);
          if (Object.keys(patch).length > 0) await this.ctx.store.updateInstance(inst.id, patch);
          if (m.state === 'pending') this.track(inst.id, inst.app, 'creating', () => this.watch(inst, m, kindOfRef(m.providerRef)));
        }
      }
    } catch (err) {
      this.ctx.log.warn({ err }, `provider ${provider.name} could not be asked what machines it has; orphans are not looked for until the next start`);
    }
  }

  // ------------------------------------------------------------------------------------------

  private track(id: string, app: string, kind: 'creating' | 'destroying', fn: () => Promise<void>): void {
    let w = this.work.get(id);
    if (!w) this.work.set(id, (w = { app }));
    const work = w;
    const p: Promise<void> = fn()
      .catch((err: unknown) => {
        if (this.stopped) this.ctx.log.debug({ err, instance: id }, `${kind} ended with the controller`);
        else this.ctx.log.error({ err, instance: id }, `${kind} an instance failed`);
      })
      .finally(() => {
        if (work[kind] === p) delete work[kind];
        if (kind === 'creating') delete work.request;
        if (!work.creating && !work.destroying && this.work.get(id) === work) this.work.delete(id);
        this.running.delete(p);
      });
    work[kind] = p;
    this.running.add(p);
  }

  /** The `provider:` settings of the instance's role (a spare: of its pool), from the app's stored spec. */
  private async settingsOf(inst: Pick<ProvisionTarget, 'app' | 'role' | 'pool'>): Promise<ProviderSettings | undefined> {
    const app = await this.ctx.store.getApp(inst.app);
    return app ? providerSettingsOf(app.spec, inst.role ?? inst.pool) : undefined;
  }

  /** How long the provider of this kind lets a machine take (its own timeout, not the default chain's). */
  private timeoutFor(kind: string | undefined): number {
    const p = this.ctx.provider;
    return p.provisionTimeoutFor?.(kind) ?? p.provisionTimeoutMs;
  }

  private async provision(inst: ProvisionTarget): Promise<void> {
    const provider = this.ctx.provider;
    let m: Machine;
    const settings = await this.settingsOf(inst);
    const asked = provider.request({
      instanceId: inst.id, epoch: inst.epoch, key: inst.joinToken, controllerUrl: this.ctx.controllerUrl(), app: inst.app, role: inst.role,
      ...(settings ? { settings } : {}),
    });
    const work = this.work.get(inst.id);
    if (work) work.request = asked;
    try {
      m = await asked;
    } catch (err) {
      await this.fail(inst, `provider ${settings?.kind ?? provider.name} could not create it: ${errorText(err)}`, `could not be created: ${errorText(err)}`);
      return;
    }
    await this.watch(inst, m, settings?.kind);
  }

  /**
   * Records what the provider says of the machine, and looks again (200 ms doubling to 5 s)
   * while it is pending: until it runs (its address recorded), is gone (the instance failed),
   * is being destroyed, or the provider's provisioning timeout passed (the planner fails and
   * destroys the instance then, and says so).
   */
  private async watch(inst: ProvisionTarget, first: Machine, kind = kindOfRef(first.providerRef)): Promise<void> {
    const provider = this.ctx.provider;
    const deadline = inst.createdAt + this.timeoutFor(kind);
    let m = first;
    let ref = inst.providerRef;
    for (let wait = LOOK_FIRST_MS; ; wait = Math.min(wait * 2, LOOK_MAX_MS)) {
      if (this.stopped || this.destroying(inst.id)) return;
      if (m.state === 'gone') {
        await this.fail(inst, `its ${kind ?? provider.name} machine is gone${m.message ? `: ${m.message}` : ''}`);
        return;
      }
      const patch = addressPatch(m);
      if (m.state === 'running' || JSON.stringify(m.providerRef) !== JSON.stringify(ref)) {
        if (Object.keys(patch).length > 0 && !(await this.ctx.store.updateInstance(inst.id, patch))) return; // gone from the store
        ref = m.providerRef ?? ref;
      }
      if (m.state === 'running') {
        // Its agent may have said hello already: it can be given its role now that its address is known.
        if (patch.ip !== undefined) this.ctx.enqueue(inst.app);
        return;
      }
      if (this.ctx.clock.now() >= deadline) return;
      await sleep(wait, undefined, { signal: this.stopping.signal });
      if (this.stopped || this.destroying(inst.id)) return;
      try {
        const [now] = await provider.describe([{ id: inst.id, providerRef: ref }]);
        if (now) m = now;
      } catch (err) {
        this.ctx.log.warn({ err, instance: inst.id }, `provider ${provider.name} could not describe the machine; looking again`);
      }
    }
  }

  /** Fails an instance still provisioning (a later report or verdict wins) and wakes its app. */
  private async fail(inst: ProvisionTarget, message: string, told = message): Promise<void> {
    const cur = await this.ctx.store.getInstance(inst.id);
    if (!cur || cur.destroyedAt !== null || cur.state !== 'provisioning') return;
    const now = this.ctx.clock.now();
    if (!(await this.ctx.store.updateInstance(inst.id, { state: 'failed', stateSince: now, message }, { ifVersion: cur.version }))) {
      this.ctx.metrics.conflicts.inc({ what: 'instance' });
      this.ctx.enqueue(inst.app);
      return;
    }
    await this.ctx.record({ app: inst.app, role: inst.role, instance: inst.id, kind: 'instance.failed', message: `${inst.id} (${inst.role ?? 'spare'}) ${told}` });
    this.ctx.enqueue(inst.app);
  }

  /**
   * Asks the provider to end the machine and looks until it is gone (at most the provider's
   * provisioning timeout). False if it could not be ended now: the next pass asks again.
   */
  private async end(h: InstanceHandle, app: string | null, role: string | null, kind: string | undefined): Promise<boolean> {
    const provider = this.ctx.provider;
    const timeoutMs = this.timeoutFor(kind);
    const trouble = async (why: string) => {
      this.ctx.log.warn({ instance: h.id }, why);
      if (this.destroyTroubleTold.has(h.id) || this.stopped) return false;
      this.destroyTroubleTold.add(h.id);
      await this.ctx.record({ app, role, instance: h.id, kind: 'instance.destroy', message: `${h.id}: ${why}; trying again` });
      return false;
    };
    try {
      await provider.destroy(h);
    } catch (err) {
      return trouble(`provider ${provider.name} could not destroy it: ${errorText(err)}`);
    }
    const started = Date.now();
    for (let wait = LOOK_FIRST_MS; ; wait = Math.min(wait * 2, LOOK_MAX_MS)) {
      let m: Machine | undefined;
      try {
        [m] = await provider.describe([h]);
      } catch (err) {
        this.ctx.log.warn({ err, instance: h.id }, `provider ${provider.name} could not describe the machine; looking again`);
      }
      if (m?.state === 'gone') return true;
      if (this.stopped) return false;
      if (Date.now() - started >= timeoutMs) {
        return trouble(`its ${kind ?? provider.name} machine is still there ${Math.round(timeoutMs / 1000)}s after it was destroyed`);
      }
      await sleep(wait, undefined, { signal: this.stopping.signal });
    }
  }
}
