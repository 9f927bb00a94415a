/**
 * Carries out the planner's actions: records instances and hands them to the provisioning job
 * (which makes and destroys their machines in the background), stores and sends orders, and
 * records an event for each. No action waits on a provider.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { isTerminal, type Order, type PlanAction } from '../core/index.js';
import type { InstancePatch, InstanceRecord, NewInstance, StoredApp } from '../adapters/store/index.js';
import type { ControllerContext } from './context.js';
import { Provisioning } from './provisioning.js';

export interface ExecutorHooks {
  /** The app is gone from the store: forget everything kept about it in memory. */
  forgetApp(app: string): void;
}

const instanceId = () => `i-${randomBytes(4).toString('hex')}`;

export class ActionExecutor {
  /** Last note per `app/role/topic`, so a repeated note is recorded once. */
  private readonly notes = new Map<string, string>();
  /** Makes and destroys machines without holding up the pass (slow providers are observed, not awaited). */
  readonly provisioning: Provisioning;

  constructor(
    private readonly ctx: ControllerContext,
    private readonly hooks: ExecutorHooks,
  ) {
    this.provisioning = new Provisioning(ctx);
  }

  forgetApp(app: string): void {
    for (const k of [...this.notes.keys()]) if (k.startsWith(`${app}/`)) this.notes.delete(k);
  }

  /** Stores an order and sends it if the agent is connected; the resend loop covers the rest. */
  async order(instanceId: string, order: Order, patch: InstancePatch): Promise<void> {
    await this.ctx.store.transaction(async (tx) => {
      await tx.putOrder({ id: order.id, instanceId, kind: order.kind, payload: order, createdAt: this.ctx.clock.now() });
      await tx.updateInstance(instanceId, patch);
    });
    this.ctx.transport()?.send(instanceId, { type: 'order', order });
  }

  async execute(app: StoredApp, a: PlanAction): Promise<void> {
    const now = this.ctx.clock.now();
    this.ctx.metrics.decisions.inc({ kind: a.kind });
    switch (a.kind) {
      case 'create': {
        const id = instanceId();
        const rec: NewInstance = {
          id, app: app.name, role: a.role, pool: a.pool, state: 'provisioning', goal: 'run', epoch: 1, joinToken: randomBytes(32).toString('base64url'),
          ip: '', port: 0, workdir: '', providerRef: null, roleHash: a.roleHash, exports: null, importsSent: null,
          importsApplied: null, assignOrderId: null, stopOrderId: null, drainOrderId: null, restarts: 0, message: null, lastExit: null,
          createdAt: now, startedAt: null, stateSince: now, stopRequestedAt: null, drainRequestedAt: null, destroyedAt: null,
          ...(a.slot !== undefined ? { slot: a.slot } : {}),
        };
        // Recorded before the provider hears of it: whatever happens next, the machine has a record.
        await this.ctx.store.insertInstance(rec);
        await this.ctx.record({ app: app.name, role: a.role ?? a.pool, instance: id, kind: a.role ? 'instance.create' : 'spare.create', message: a.reason });
        this.provisioning.create(rec);
        return;
      }
      case 'assign': {
        const role = Object.hasOwn(app.spec.roles, a.role) ? app.spec.roles[a.role] : undefined;
        if (!role) return;
        const bundle = (await this.ctx.bundleFor?.(app, a.instanceId)) ?? {};
        const order: Order = {
          id: `o-${randomUUID()}`, kind: 'assign',
          assignment: { app: app.name, appDir: app.appDir, role, imports: a.imports, importsVersion: a.importsVersion, ...bundle, ...(a.slot !== undefined ? { slot: a.slot } : {}) },
        };
        const claim: InstancePatch = a.claim ? { role: a.role, pool: null, roleHash: a.roleHash, ...(a.slot !== undefined ? { slot: a.slot } : {}) } : {};
        await this.order(a.instanceId, order, { ...claim, assignOrderId: order.id, importsSent: a.importsVersion });
        await this.ctx.record({ app: app.name, role: a.role, instance: a.instanceId, kind: a.claim ? 'spare.claim' : 'instance.assign', message: a.reason });
        return;
      }
      case 'imports': {
        const order: Order = { id: `o-${randomUUID()}`, kind: 'imports', imports: a.imports, importsVersion: a.importsVersion };
        await this.order(a.instanceId, order, { importsSent: a.importsVersion });
        await this.ctx.record({ app: app.name, role: a.role, instance: a.instanceId, kind: 'instance.imports', message: a.reason, data: { version: a.importsVersion } });
        return;
      }
      case 'stop': {
        const inst = await this.ctx.store.getInstance(a.instanceId);
        if (!inst || inst.goal === 'stop') return;
        await this.ctx.record({ app: app.name, role: a.role, instance: a.instanceId, kind: 'instance.stop', message: a.reason });
        if (inst.state === 'provisioning' || inst.role === null || !inst.assignOrderId) {
          // Nothing runs there yet (or a spare): no role to stop gracefully.
          await this.ctx.store.updateInstance(a.instanceId, { goal: 'stop', stopRequestedAt: now });
          await this.destroy(app.name, inst, 'terminated', `${inst.id} had no role running; destroyed directly`);
          return;
        }
        const order: Order = { id: `o-${randomUUID()}`, kind: 'stop', reason: a.reason };
        await this.order(a.instanceId, order, { goal: 'stop', stopRequestedAt: now, stopOrderId: order.id, exports: null });
        return;
      }
      case 'drain': {
        await this.ctx.store.updateInstance(a.instanceId, { goal: 'drain', drainRequestedAt: now, drainOrderId: null, exports: null });
        await this.ctx.record({ app: app.name, role: a.role, instance: a.instanceId, kind: 'instance.drain', message: `${a.reason}; taking it out of rotation first` });
        return;
      }
      case 'drainOrder': {
        // A drain cancelled meanwhile (an undrain, an operator) is not carried out.
        const inst = await this.ctx.store.getInstance(a.instanceId);
        if (!inst || inst.goal !== 'drain' || inst.drainOrderId !== null) return;
        const order: Order = { id: `o-${randomUUID()}`, kind: 'drain', reason: a.reason, timeoutMs: a.timeoutMs };
        await this.order(a.instanceId, order, { drainOrderId: order.id });
        await this.ctx.record({ app: app.name, role: a.role, instance: a.instanceId, kind: 'instance.drain', message: a.reason });
        return;
      }
      case 'undrain': {
        const inst = await this.ctx.store.getInstance(a.instanceId);
        if (!inst || inst.goal !== 'drain') return;
        if (inst.drainOrderId !== null) {
          const order: Order = { id: `o-${randomUUID()}`, kind: 'undrain', reason: a.reason };
          await this.order(a.instanceId, order, { goal: 'run', drainRequestedAt: null, drainOrderId: null });
        } else if (!(await this.ctx.store.updateInstance(a.instanceId, { goal: 'run', drainRequestedAt: null }, { ifVersion: inst.version }))) {
          this.ctx.metrics.conflicts.inc({ what: 'instance' });
          this.ctx.enqueue(app.name);
          return;
        }
        await this.ctx.record({ app: app.name, role: a.role, instance: a.instanceId, kind: 'instance.undrain', message: a.reason });
        return;
      }
      case 'unresponsive': {
        const inst = await this.ctx.store.getInstance(a.instanceId);
        if (!inst || inst.destroyedAt !== null || inst.state === 'unresponsive') return;
        // A new epoch fences the old agent: if it comes back, its hello is refused and it must
        // stop its role; until then its exports are gone from every importer.
        if (!(await this.ctx.store.updateInstance(a.instanceId, { state: 'unresponsive', stateSince: now, epoch: inst.epoch + 1, exports: null }, { ifVersion: inst.version }))) {
          // A report came in meanwhile: the next pass judges again with it.
          this.ctx.metrics.conflicts.inc({ what: 'instance' });
          this.ctx.enqueue(app.name);
          return;
        }
        this.ctx.transport()?.fence(a.instanceId, a.reason);
        this.ctx.metrics.replacements.inc({ app: app.name, role: a.role ?? 'spare', reason: 'unresponsive' });
        await this.ctx.record({ app: app.name, role: a.role, instance: a.instanceId, kind: 'instance.unresponsive', message: a.reason });
        return;
      }
      case 'destroy': {
        const inst = await this.ctx.store.getInstance(a.instanceId);
        if (!inst || inst.destroyedAt !== null) return;
        await this.destroy(app.name, inst, a.finalState, a.reason);
        return;
      }
      case 'forgetApp': {
        // Its records stay until every machine is gone (the provisioning job wakes the app then).
        if (this.provisioning.busy(app.name)) return;
        await this.ctx.store.deleteApp(app.name);
        await this.ctx.record({ app: app.name, role: null, instance: null, kind: 'app.deleted', message: a.reason });
        this.hooks.forgetApp(app.name);
        return;
      }
      case 'note': {
        const key = `${app.name}/${a.role}/${a.topic}`;
        // Only the gist counts for de-duplication: the countdown in the sentence changes every pass.
        const gist = a.reason.replace(/\d+s$/, '');
        if (this.notes.get(key) === gist) return;
        this.notes.set(key, gist);
        await this.ctx.record({ app: app.name, role: a.role, instance: null, kind: a.topic === 'degraded' ? 'role.degraded' : 'role.backoff', message: a.reason });
        return;
      }
    }
  }

  /** Forgets the notes told about a role, so the next backoff or degraded mark is told again. */
  forgetNotes(app: string, role: string): void {
    for (const k of [...this.notes.keys()]) if (k.startsWith(`${app}/${role}/`)) this.notes.delete(k);
  }

  /** Takes the instance out (fenced, its final state, the event) and has its machine destroyed in the background. */
  async destroy(app: string, inst: InstanceRecord, finalState: 'terminated' | 'failed' | 'unresponsive', reason: string): Promise<void> {
    if (this.provisioning.destroying(inst.id)) return;
    const now = this.ctx.clock.now();
    this.ctx.transport()?.fence(inst.id, reason);
    const state = isTerminal(inst.state) ? inst.state : finalState;
    if (state !== inst.state) {
      await this.ctx.store.updateInstance(inst.id, { state, stateSince: now, exports: null });
    }
    await this.ctx.record({ app, role: inst.role, instance: inst.id, kind: 'instance.destroy', message: reason });
    this.provisioning.destroy(inst);
  }
}
