/**
 * The tenant job of a reconcile pass. Before the decision step it tells the planner how many
 * tenants each instance holds (scale-in leaves those alone), which hosts to route where (they
 * travel to the load balancer with the imports), and the least each role may shrink to. After
 * the plan it moves tenants along: places the pending ones (pure placement, then an atomic seat
 * reservation in the store), orders `add` on their instance, marks them ready once `add` has
 * succeeded *and* their route is live on every balancer, re-places the tenants of a lost
 * instance, removes the ones being deleted, and orders new capacity for the rest — one new
 * instance per `capacity` waiting sign-ups, never one per sign-up.
 *
 * Level-triggered like the rest: everything is read from the store and the agents' last
 * reports each pass; orders are idempotent, so a controller that restarts just sends again.
 */
import { randomUUID } from 'node:crypto';
import {
  isLive,
  placeTenants,
  type TenantState,
  type Order,
  type TenantMove,
  type Plan,
  type RoleSpec,
  type TenantReport,
} from '../core/index.js';
import type { InstanceRecord, StoredApp, StoredRole, TenantRecord, TenantPatch, TenantSeat } from '../adapters/store/index.js';
import type { ControllerContext } from './context.js';
import type { ActionExecutor } from './executor.js';

/** What the decision step needs from the tenants. */
export interface TenantPass {
  /** Whole records of the tenants on the move (pending, placing, moving, removing). */
  readonly tenants: readonly TenantRecord[];
  /** Every seat-holding tenant, narrowly (ready ones included). */
  readonly held: readonly TenantSeat[];
  /** Seats held on each instance. */
  readonly seats: ReadonlyMap<string, number>;
  /** Tenant hosts to route to each instance. */
  readonly hosts: ReadonlyMap<string, readonly string[]>;
  /** Least count per role: ⌈seats held / capacity⌉. */
  readonly floors: Readonly<Record<string, number>>;
}

/** Something a tenant went through, for the notifier (webhook, e-mail). */
export interface TenantNotice {
  readonly kind: 'tenant.ready' | 'tenant.failed' | 'tenant.moved' | 'tenant.removed';
  readonly tenant: TenantRecord;
}

/** Tenants a pass may have to act on (ready ones only when their instance is lost, read then). */
const WORKING_STATES: readonly TenantState[] = ['pending', 'placing', 'moving', 'removing'];

const BOOTING_OR_SERVING = (i: InstanceRecord) => i.destroyedAt === null && i.goal === 'run' && isLive(i.state) && i.role !== null;

export class TenantJob {
  /** `tenantId→instanceId` of add orders sent by this controller (re-sent after a restart: orders are idempotent). */
  private readonly addOrdered = new Map<string, string>();
  private readonly removeOrdered = new Map<string, string>();
  /** Tenants re-placed after their instance was lost: their next `ready` is a `tenant.moved`. */
  private readonly moved = new Set<string>();

  constructor(
    private readonly ctx: ControllerContext,
    private readonly executor: ActionExecutor,
    private readonly notify: (n: TenantNotice) => void,
  ) {}

  private report(t: Pick<TenantRecord, 'id' | 'instanceId'>): TenantReport | undefined {
    if (!t.instanceId) return undefined;
    const r = this.ctx.live.get(t.instanceId)?.tenants;
    return r && Object.hasOwn(r, t.id) ? r[t.id] : undefined;
  }

  private reportOn(instanceId: string, tenantId: string): TenantReport | undefined {
    const r = this.ctx.live.get(instanceId)?.tenants;
    return r && Object.hasOwn(r, tenantId) ? r[tenantId] : undefined;
  }

  /** Moves asked by `rebalance`, per `app/role`, run one at a time. */
  private readonly moves = new Map<string, TenantMove[]>();

  /** Queues moves (a rebalance); they run one tenant at a time, each unrouted from its old instance only once added on the new. */
  queueMoves(app: string, role: string, moves: readonly TenantMove[]): void {
    this.moves.set(`${app}/${role}`, [...moves]);
    this.ctx.enqueue(app);
  }

  /** Routed: `add` succeeded on its instance and it is not being removed. */
  private routable(t: TenantSeat): boolean {
    return t.host !== null && t.instanceId !== null && (t.state === 'ready' || t.state === 'moving' || (t.state === 'placing' && this.report(t)?.phase === 'ready'));
  }

  async prepare(app: StoredApp): Promise<TenantPass | undefined> {
    const roles = Object.values(app.spec.roles).filter((r) => r.tenants);
    if (roles.length === 0) return undefined;
    // Seats and routes from narrow rows; whole records only for tenants on the move.
    const held = await this.ctx.store.listTenantSeats(app.name);
    const tenants = await this.ctx.store.listTenants({ app: app.name, state: WORKING_STATES });
    const seats = new Map<string, number>();
    const hosts = new Map<string, string[]>();
    const perRole: Record<string, number> = {};
    for (const t of held) {
      perRole[t.role] = (perRole[t.role] ?? 0) + 1;
      if (!t.instanceId) continue;
      seats.set(t.instanceId, (seats.get(t.instanceId) ?? 0) + 1);
      if (t.targetInstanceId) seats.set(t.targetInstanceId, (seats.get(t.targetInstanceId) ?? 0) + 1);
      if (!this.routable(t)) continue;
      // A move switches the route once the tenant is added on its target.
      const at = t.state === 'moving' && t.targetInstanceId && this.reportOn(t.targetInstanceId, t.id)?.phase === 'ready' ? t.targetInstanceId : t.instanceId;
      hosts.set(at, [...(hosts.get(at) ?? []), t.host!]);
    }
    const floors: Record<string, number> = {};
    for (const r of roles) floors[r.name] = Math.min(r.max, Math.ceil((perRole[r.name] ?? 0) / r.tenants!.capacity));
    return { tenants, held, seats, hosts, floors };
  }

  /** After the plan of this pass: moves every tenant of the app one step along. Returns when to look again. */
  async settle(app: StoredApp, pass: TenantPass, roles: readonly StoredRole[], instances: readonly InstanceRecord[], plan: Plan): Promise<number | undefined> {
    let again: number | undefined;
    const byId = new Map(instances.map((i) => [i.id, i]));
    for (const role of Object.values(app.spec.roles)) {
      if (!role.tenants) continue;
      const mine = pass.tenants.filter((t) => t.role === role.name);
      // Ready tenants whose instance is gone or going: read whole, to be placed again.
      for (const s of pass.held) {
        if (s.role !== role.name || s.state !== 'ready') continue;
        const inst = s.instanceId ? byId.get(s.instanceId) : undefined;
        if (inst && BOOTING_OR_SERVING(inst)) continue;
        const t = await this.ctx.store.getTenant(s.id);
        if (t) mine.push(t);
      }
      if (mine.length === 0 && !this.moves.has(`${app.name}/${role.name}`)) continue;
      const next = await this.settleRole(app, role, mine, pass, roles, instances, plan);
      if (next !== undefined) again = Math.min(again ?? next, next);
    }
    return again;
  }

  private async update(t: TenantRecord, patch: TenantPatch): Promise<boolean> {
    const ok = await this.ctx.store.updateTenant(t.id, { ...patch, updatedAt: this.ctx.clock.now() }, { ifVersion: t.version });
    if (!ok) this.ctx.metrics.conflicts.inc({ what: 'tenant' });
    return ok;
  }

  private async order(instanceId: string, order: Order): Promise<void> {
    await this.executor.order(instanceId, order, {});
  }

  /** Whether every load balancer in front of `role` has applied the current host map. */
  private routesLive(app: StoredApp, role: RoleSpec, instances: readonly InstanceRecord[], plan: Plan): boolean {
    for (const b of Object.values(app.spec.roles)) {
      if (!b.loadBalancer || b.loadBalancer.members.role !== role.name) continue;
      const lbs = instances.filter((i) => i.role === b.name && i.destroyedAt === null && i.goal === 'run' && i.state === 'serving');
      if (lbs.length === 0) return false;
      if ((plan.roles[b.name]?.staleImports.length ?? 0) > 0) return false;
      const ids = new Set(lbs.map((i) => i.id));
      if (plan.actions.some((a) => (a.kind === 'imports' || a.kind === 'assign') && ids.has(a.instanceId))) return false;
    }
    return true;
  }

  private async settleRole(
    app: StoredApp, role: RoleSpec, tenants: readonly TenantRecord[], pass: TenantPass, roles: readonly StoredRole[], instances: readonly InstanceRecord[], plan: Plan,
  ): Promise<number | undefined> {
    const spec = role.tenants!;
    const now = this.ctx.clock.now();
    const byId = new Map(instances.map((i) => [i.id, i]));
    const live = instances.filter((i) => BOOTING_OR_SERVING(i) && i.role === role.name);
    const routesLive = this.routesLive(app, role, instances, plan);
    const ref = (t: TenantRecord) => ({ id: t.id, name: t.name, host: t.host });
    let again: number | undefined;
    const soon = (ms: number) => (again = Math.min(again ?? ms, ms));
    const pending: TenantRecord[] = [];

    for (const t of tenants) {
      const inst = t.instanceId ? byId.get(t.instanceId) : undefined;
      const report = this.report(t);
      // A seat on an instance that is gone, failing, or being taken away: place the tenant again.
      if ((t.state === 'placing' || t.state === 'ready' || t.state === 'moving') && (!inst || !BOOTING_OR_SERVING(inst))) {
        const why = `instance ${t.instanceId ?? '?'} ${inst ? `is ${inst.goal !== 'run' ? `leaving (${inst.goal})` : inst.state}` : 'is gone'}; placing ${t.name} again`;
        if (await this.update(t, { state: 'pending', instanceId: null, targetInstanceId: null, reason: why })) {
          if (t.state === 'ready') this.moved.add(t.id);
          this.addOrdered.delete(t.id);
          await this.ctx.record({ app: app.name, role: role.name, instance: t.instanceId, kind: 'tenant.lost', message: `tenant ${t.name}: ${why}`, data: { tenant: t.id } });
        }
        soon(0);
        continue;
      }
      switch (t.state) {
        case 'pending':
          pending.push(t);
          break;
        case 'placing': {
          if (report?.phase === 'failed') {
            const reason = report.reason ?? 'add failed';
            if (await this.update(t, { state: 'failed', instanceId: null, reason, attempts: report.attempts, lastOutput: report.tail ?? null })) {
              await this.ctx.record({ app: app.name, role: role.name, instance: t.instanceId, kind: 'tenant.failed', message: `tenant ${t.name} failed on ${t.instanceId}: ${reason}${report.tail?.length ? `\n  | ${report.tail.slice(-10).join('\n  | ')}` : ''}`, data: { tenant: t.id } });
              this.notify({ kind: 'tenant.failed', tenant: { ...t, state: 'failed', reason } });
            }
            break;
          }
          if (report?.phase === 'ready' && (t.host === null || routesLive)) {
            if (await this.update(t, { state: 'ready', reason: null, attempts: report.attempts })) {
              const kind = this.moved.delete(t.id) ? 'tenant.moved' : 'tenant.ready';
              await this.ctx.record({ app: app.name, role: role.name, instance: t.instanceId, kind: 'tenant.ready', message: `tenant ${t.name} is ready on ${t.instanceId}${t.host ? `, routed as ${t.host}` : ''}`, data: { tenant: t.id } });
              this.notify({ kind, tenant: { ...t, state: 'ready', reason: null } });
            }
            break;
          }
          if (report?.phase === 'ready') {
            soon(200); // waiting for the balancers to apply the route
            break;
          }
          // Not added yet: order it once the instance serves (idempotent; re-sent after a restart).
          if (inst?.state === 'serving' && this.addOrdered.get(t.id) !== inst.id && report === undefined) {
            await this.order(inst.id, { id: `o-${randomUUID()}`, kind: 'tenantAdd', tenant: ref(t) });
            this.addOrdered.set(t.id, inst.id);
          }
          soon(500);
          break;
        }
        case 'removing': {
          if (!inst || !BOOTING_OR_SERVING(inst) || report?.phase === 'removed') {
            if (await this.update(t, { state: 'removed', instanceId: null, reason: report?.reason ?? null })) {
              await this.ctx.record({ app: app.name, role: role.name, instance: t.instanceId, kind: 'tenant.removed', message: `tenant ${t.name} removed${t.instanceId ? ` from ${t.instanceId}` : ''}`, data: { tenant: t.id } });
              this.notify({ kind: 'tenant.removed', tenant: { ...t, state: 'removed' } });
            }
            break;
          }
          // Unrouted first: `remove` runs once every balancer has dropped the host.
          if (routesLive && this.removeOrdered.get(t.id) !== inst.id) {
            await this.order(inst.id, { id: `o-${randomUUID()}`, kind: 'tenantRemove', tenant: ref(t) });
            this.removeOrdered.set(t.id, inst.id);
          }
          soon(500);
          break;
        }
        case 'moving': {
          const target = t.targetInstanceId ? byId.get(t.targetInstanceId) : undefined;
          const there = t.targetInstanceId ? this.reportOn(t.targetInstanceId, t.id) : undefined;
          if (!target || !BOOTING_OR_SERVING(target) || there?.phase === 'failed') {
            const why = `move of ${t.name} to ${t.targetInstanceId ?? '?'} abandoned: ${there?.phase === 'failed' ? (there.reason ?? 'add failed there') : 'the instance is gone'}`;
            if (await this.update(t, { state: 'ready', targetInstanceId: null, reason: why })) {
              await this.ctx.record({ app: app.name, role: role.name, instance: t.instanceId, kind: 'tenant.lost', message: why, data: { tenant: t.id } });
            }
            break;
          }
          if (there === undefined) {
            if (target.state === 'serving' && this.addOrdered.get(t.id) !== target.id) {
              await this.order(target.id, { id: `o-${randomUUID()}`, kind: 'tenantAdd', tenant: ref(t), fromInstance: t.instanceId! });
              this.addOrdered.set(t.id, target.id);
            }
          } else if (there.phase === 'ready' && (t.host === null || routesLive)) {
            // Added on the target and routed there: now off the old instance.
            if (report?.phase === 'removed') {
              if (await this.update(t, { state: 'ready', instanceId: target.id, targetInstanceId: null, reason: null })) {
                await this.ctx.record({ app: app.name, role: role.name, instance: target.id, kind: 'tenant.ready', message: `tenant ${t.name} moved from ${t.instanceId} to ${target.id}`, data: { tenant: t.id, from: t.instanceId } });
                this.notify({ kind: 'tenant.moved', tenant: { ...t, state: 'ready', instanceId: target.id, targetInstanceId: null } });
              }
            } else if (this.removeOrdered.get(t.id) !== inst!.id) {
              await this.order(inst!.id, { id: `o-${randomUUID()}`, kind: 'tenantRemove', tenant: ref(t) });
              this.removeOrdered.set(t.id, inst!.id);
            }
          }
          soon(300);
          break;
        }
        default:
          break;
      }
    }

    // Rebalance: one move at a time, for tenants still where the plan found them.
    const queue = this.moves.get(`${app.name}/${role.name}`);
    if (queue?.length && !tenants.some((t) => t.state === 'moving')) {
      while (queue.length) {
        const m = queue.shift()!;
        const t = await this.ctx.store.getTenant(m.tenantId);
        if (!t || t.state !== 'ready' || t.instanceId !== m.from || t.pinned) continue;
        if (await this.ctx.store.reserveMove(t.id, m.to, spec.capacity)) {
          await this.ctx.record({ app: app.name, role: role.name, instance: m.from, kind: 'tenant.placing', message: `rebalance: moving tenant ${t.name} from ${m.from} to ${m.to} (${queue.length} more)`, data: { tenant: t.id, to: m.to } });
          this.removeOrdered.delete(t.id);
          this.addOrdered.delete(t.id);
          soon(0);
          break;
        }
      }
      if (queue.length === 0) this.moves.delete(`${app.name}/${role.name}`);
    }

    if (pending.length === 0) return again;
    // Place the waiting, in arrival order: pure placement on the seats as the store holds them…
    const pendingSorted = [...pending].sort((a, b) => a.seq - b.seq);
    const placement = placeTenants({
      role: role.name,
      capacity: spec.capacity,
      max: role.max,
      live: live.length,
      instances: live.map((i) => ({ id: i.id, role: i.role, state: i.state, goal: i.goal, tenants: pass.seats.get(i.id) ?? 0 })),
      pending: pendingSorted.map((t) => ({ id: t.id, since: t.createdAt })),
      now,
    });
    const tenantById = new Map(pendingSorted.map((t) => [t.id, t]));
    // …then each seat reserved atomically (a racing writer can take it; never overfill).
    for (const p of placement.placements) {
      const t = tenantById.get(p.tenantId)!;
      if (!(await this.ctx.store.reserveSeat(t.id, p.instanceId, spec.capacity))) {
        this.ctx.metrics.conflicts.inc({ what: 'seat' });
        soon(0);
        continue;
      }
      await this.ctx.record({ app: app.name, role: role.name, instance: p.instanceId, kind: 'tenant.placing', message: `tenant ${t.name} placed on ${p.instanceId}${p.addable ? '' : ' (seat reserved while it boots)'}`, data: { tenant: t.id } });
      const inst = byId.get(p.instanceId);
      if (p.addable && inst?.state === 'serving') {
        await this.order(p.instanceId, { id: `o-${randomUUID()}`, kind: 'tenantAdd', tenant: ref(t) });
        this.addOrdered.set(t.id, p.instanceId);
      }
      soon(500);
    }
    for (const w of placement.waiting) {
      const t = tenantById.get(w.tenantId)!;
      if (t.reason !== w.reason) await this.update(t, { reason: w.reason });
    }
    // New capacity for the rest: the role's count raised by what the placement asks, at once.
    if (placement.newInstances > 0) {
      const row = roles.find((r) => r.role === role.name);
      const current = row?.desired ?? role.count;
      const want = Math.min(role.max, Math.max(current, live.length + placement.newInstances));
      if (want > current && (await this.ctx.store.setRoleCount(app.name, role.name, want, row?.pinned ?? false, row ? { ifVersion: row.version } : {}))) {
        await this.ctx.record({
          app: app.name, role: role.name, instance: null, kind: 'tenant.capacity',
          message: `${role.name} ${current}→${want}: ${placement.reason}`, data: { from: current, to: want, waiting: placement.waiting.length },
        });
        soon(0);
      }
    }
    return again;
  }
}
