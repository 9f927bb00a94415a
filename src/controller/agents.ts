/**
 * Applies what agents report: joins, statuses, acks, log lines and their processes' exits. A
 * report is checked before it is believed (reports.ts, and the transition table in core); what
 * an instance could not have said fences it.
 */
import { canReport, isTerminal, samplesFromVitals, type AgentStatus, type BalancerStatus, type Order, type Vitals } from '../core/index.js';
import type { InstancePatch, InstanceRecord } from '../adapters/store/index.js';
import type { JoinMessage, TransportHandlers } from '../adapters/transport/index.js';
import { servingMembers, type ControllerContext } from './context.js';
import { checkReport } from './reports.js';

/** Where samples from agents' vitals go (the role metrics the policies read). */
export interface SampleSink {
  add(key: string, metric: string, sample: { t: number; value: number; instance?: string }): void;
  /** A load balancer instance's member counters, as it reported them at `t`. */
  balancer?(app: string, role: string, instance: string, t: number, members: BalancerStatus['members']): void;
}

/** A repeated report is applied (its instance read) at least this often. */
const RECHECK_MS = 10_000;
/** How long an exited agent's connection may take to close and its last frames to be handled. */
const SETTLE_MS = 2000;

export class AgentReports {
  private readonly suspiciousSeen = new Map<string, number>();
  /**
   * The last report applied per instance, and when its record was last read for it. A heartbeat
   * that repeats it within {@link RECHECK_MS} is not applied again (it would change nothing):
   * no store read per heartbeat. The record is read again at least that often, and at once after
   * a join or any change in the report.
   */
  private readonly applied = new Map<string, { key: string; at: number; app: string; role: string | null }>();
  private stopped = false;

  constructor(
    private readonly ctx: ControllerContext,
    private readonly samples: SampleSink,
  ) {}

  stop(): void {
    this.stopped = true;
  }

  readonly handlers: TransportHandlers = {
    keyFor: async (id: string) => (await this.ctx.store.getInstance(id))?.joinToken,
    onJoin: async (id: string, epoch: number, _msg: JoinMessage) => {
      this.applied.delete(id);
      const inst = await this.ctx.store.getInstance(id);
      if (!inst) return { accept: false, reason: 'unknown instance' };
      if (inst.destroyedAt !== null || isTerminal(inst.state) || inst.state === 'unresponsive') {
        return { accept: false, reason: `instance ${inst.id} is ${inst.destroyedAt !== null ? 'destroyed' : inst.state}; it must not serve again` };
      }
      if (epoch !== inst.epoch) return { accept: false, reason: `stale epoch ${epoch} (current ${inst.epoch})` };
      return { accept: true };
    },
    onSuspicious: ({ instanceId, reason, remote }) => {
      this.ctx.metrics.suspicious.inc();
      this.ctx.log.warn({ instance: instanceId, remote }, `agent connection: ${reason}`);
      // One event per instance and reason a minute: a flood of bad frames must not flood the events.
      const key = `${instanceId ?? '-'}/${reason.replace(/\(.*\)$/, '')}`;
      const now = this.ctx.clock.now();
      if ((this.suspiciousSeen.get(key) ?? -Infinity) > now - 60_000) return;
      this.suspiciousSeen.set(key, now);
      if (this.suspiciousSeen.size > 1000) this.suspiciousSeen.clear();
      void this.ctx.store.getInstance(instanceId ?? '').then(async (inst) => {
        await this.ctx.record({
          app: inst?.app ?? null, role: inst?.role ?? null, instance: inst ? inst.id : null, kind: 'security.agent',
          message: `agent connection${instanceId ? ` for ${instanceId}` : ''}${remote ? ` from ${remote}` : ''}: ${reason}`,
        });
      }).catch((err: unknown) => this.ctx.log.warn({ err }, 'could not record a security event'));
    },
    onConnect: async (id: string) => {
      for (const o of await this.ctx.store.pendingOrders(id)) this.ctx.transport()?.send(id, { type: 'order', order: o.payload as Order });
    },
    onStatus: async (id: string, status: AgentStatus, vitals: Vitals | undefined) => {
      const now = this.ctx.clock.now();
      const prev = this.ctx.live.get(id);
      const v = vitals ?? prev?.vitals;
      this.ctx.live.set(id, {
        lastSeenAt: now, ...(v ? { vitals: v } : {}), ...(status.balancer ? { balancer: status.balancer } : {}), ...(status.tenants ? { tenants: status.tenants } : {}),
      });
      const key = JSON.stringify(status);
      const same = this.applied.get(id);
      if (same && same.key === key && now - same.at < RECHECK_MS) {
        if (vitals && same.role !== null && status.state === 'serving') {
          for (const { metric, sample } of samplesFromVitals(id, vitals)) this.samples.add(`${same.app}/${same.role}`, metric, sample);
        }
        if (status.balancer && same.role !== null) this.samples.balancer?.(same.app, same.role, id, now, status.balancer.members);
        return;
      }
      const inst = await this.ctx.store.getInstance(id);
      if (!inst || inst.destroyedAt !== null) {
        this.applied.delete(id);
        this.ctx.transport()?.fence(id, 'instance no longer exists');
        return;
      }
      if (vitals && inst.role !== null && status.state === 'serving') {
        for (const { metric, sample } of samplesFromVitals(id, vitals)) this.samples.add(`${inst.app}/${inst.role}`, metric, sample);
      }
      if (status.balancer && inst.role !== null) this.samples.balancer?.(inst.app, inst.role, id, now, status.balancer.members);
      await this.applyStatus(inst, status, now);
      this.applied.set(id, { key, at: now, app: inst.app, role: inst.role });
      // A tenant added, failed or removed moves its tenant along in the next pass.
      if (status.tenants && JSON.stringify(status.tenants) !== JSON.stringify(prev?.tenants)) this.ctx.enqueue(inst.app);
    },
    onAck: async (id: string, orderId: string) => {
      // Only an order sent to this instance can be acknowledged by it.
      if (!(await this.ctx.store.ackOrder(orderId, id, this.ctx.clock.now()))) {
        this.ctx.log.debug({ instance: id, orderId }, 'ignored an ack for an order this instance does not have pending');
      }
    },
    onLog: (id: string, lines: readonly string[]) => {
      void this.ctx.store.getInstance(id).then(async (inst) => {
        if (!inst || lines.length === 0) return;
        // The reason and where to read the rest: the lines themselves stay in `data` (what is
        // left once the instance's folder is gone), not in the sentence.
        const gist = (lines[0] ?? '').replace(/^\[agent\] /, '').replace(/; last output of role [^:]*:$/, '').slice(0, 300);
        await this.ctx.record({
          app: inst.app, role: inst.role, instance: id, kind: 'instance.log',
          message: `${id}${inst.role ? ` (${inst.role})` : ''}: ${gist}; its output: \`drover logs ${id}\``,
          data: { lines: [...lines] },
        });
      }).catch((err: unknown) => this.ctx.log.warn({ err }, 'could not record agent log lines'));
    },
    onDisconnect: (id: string) => {
      this.applied.delete(id);
      this.ctx.log.debug({ instance: id }, 'agent disconnected');
    },
  };

  /** Applies a report; if the instance changed under it (a destroy, an order), reads it again and retries. */
  private async applyStatus(first: InstanceRecord, s: AgentStatus, now: number): Promise<void> {
    let inst: InstanceRecord | undefined = first;
    for (let attempt = 0; inst && inst.destroyedAt === null; attempt++) {
      if (await this.applyStatusOnce(inst, s, now)) return;
      this.ctx.metrics.conflicts.inc({ what: 'instance' });
      if (attempt >= 4) throw new Error(`instance ${first.id} kept changing while a report was applied`);
      inst = await this.ctx.store.getInstance(first.id);
    }
  }

  /** False: the instance changed since it was read (nothing written). */
  private async applyStatusOnce(inst: InstanceRecord, s: AgentStatus, now: number): Promise<boolean> {
    // A controller-side verdict (unresponsive, failed) is not overturned by a late report.
    if (isTerminal(inst.state) || inst.state === 'unresponsive') return true;
    const v = s.state !== inst.state && !canReport(inst.state, s.state)
      ? { kind: 'impossible' as const, reason: `reported state ${s.state} after ${inst.state}, which cannot follow it` }
      : await checkReport(inst, s, () => this.ctx.store.getApp(inst.app), () => servingMembers(this.ctx.store, inst.app));
    if (v.kind === 'impossible') {
      await this.fenceImpossible(inst, v.reason, now);
      return true;
    }
    const patch: { -readonly [K in keyof InstancePatch]: InstancePatch[K] } = {};
    const exports = v.kind === 'ok' ? v.exports : inst.exports;
    if (s.state !== inst.state) {
      patch.state = s.state;
      patch.stateSince = now;
    }
    if (JSON.stringify(exports) !== JSON.stringify(inst.exports)) patch.exports = exports;
    if ((s.importsVersion ?? null) !== inst.importsApplied) patch.importsApplied = s.importsVersion ?? null;
    if (s.restarts !== inst.restarts) patch.restarts = s.restarts;
    if ((s.message ?? null) !== inst.message) patch.message = s.message ?? null;
    if (s.lastExit && JSON.stringify(s.lastExit) !== JSON.stringify(inst.lastExit)) patch.lastExit = s.lastExit;
    if (s.state === 'serving' && inst.startedAt === null) patch.startedAt = s.servingSince ?? now;
    if (v.ports) patch.ports = v.ports;
    if (Object.keys(patch).length === 0) return true;
    if (!(await this.ctx.store.updateInstance(inst.id, patch, { ifVersion: inst.version }))) return false;
    if (patch.state !== undefined) {
      const why = s.message ? `: ${s.message}` : '';
      if (s.state === 'failed') {
        const exit = s.lastExit;
        const code = exit ? (exit.signal ? `signal ${exit.signal}` : `exit code ${exit.code}`) : 'no exit status';
        const tail = exit?.tail.length ? `\n  | ${exit.tail.slice(-10).join('\n  | ')}` : '';
        await this.ctx.record({
          app: inst.app, role: inst.role, instance: inst.id, kind: 'instance.failed',
          message: `${inst.id} (${inst.role ?? 'spare'}) failed after ${s.restarts} restart(s), ${code}${why}${tail}`,
          data: { lastExit: exit ?? null, restarts: s.restarts },
        });
      } else {
        await this.ctx.record({
          app: inst.app, role: inst.role, instance: inst.id, kind: 'instance.state',
          message: `${inst.id} (${inst.role ?? 'spare'}): ${inst.state} → ${s.state}${why}`,
          data: { from: inst.state, to: s.state },
        });
      }
    }
    if (patch.state !== undefined || patch.exports !== undefined) this.ctx.enqueue(inst.app);
    return true;
  }

  /**
   * An instance reported what it could not have been doing: its agent is not carrying out our
   * orders (tampered with, or confused). It serves no more: exports gone, fenced (the agent stops
   * its role and exits), marked failed, and the planner replaces it.
   */
  private async fenceImpossible(inst: InstanceRecord, reason: string, now: number): Promise<void> {
    this.ctx.transport()?.fence(inst.id, `impossible report: ${reason}`);
    await this.ctx.store.updateInstance(inst.id, { state: 'failed', stateSince: now, exports: null, message: `fenced: ${reason}` });
    this.ctx.metrics.suspicious.inc();
    await this.ctx.record({
      app: inst.app, role: inst.role, instance: inst.id, kind: 'security.report',
      message: `${inst.id} (${inst.role ?? 'spare'}) ${reason}; fenced and replaced`,
    });
    this.ctx.enqueue(inst.app);
  }

  async onAgentExit(id: string, code: number | null, signal: string | null): Promise<void> {
    if (this.stopped) return;
    // Its last words first: a role that stopped sends its last lines and its final status just
    // before the agent exits, and the exit can be seen before they are handled.
    await this.ctx.transport()?.settle?.(id, SETTLE_MS);
    if (this.stopped) return;
    const inst = await this.ctx.store.getInstance(id);
    if (!inst || inst.destroyedAt !== null) return;
    this.ctx.transport()?.fence(id, 'agent exited');
    const now = this.ctx.clock.now();
    // Already fenced and being replaced: its exit is the fencing working, not a new failure.
    if (inst.state === 'unresponsive') return;
    if (inst.goal !== 'run' || isTerminal(inst.state)) {
      if (!isTerminal(inst.state)) await this.ctx.store.updateInstance(id, { state: 'terminated', stateSince: now, exports: null });
    } else {
      const how = signal ? `signal ${signal}` : `exit code ${code}`;
      await this.ctx.store.updateInstance(id, { state: 'failed', stateSince: now, exports: null, message: `agent process ended (${how})` });
      await this.ctx.record({ app: inst.app, role: inst.role, instance: id, kind: 'instance.failed', message: `${id} (${inst.role ?? 'spare'}): agent process ended (${how}); replacing it` });
    }
    this.ctx.enqueue(inst.app);
  }
}
