/**
 * One decision step, the same in the controller and the simulator: which instances count, each
 * role's current size, its policies' verdict (held while the role has too little history), then
 * the plan. Pure: a snapshot and a time in, decisions and actions out.
 *
 * ```ts
 * const step = decide({ app, roles, instances, now, controllerStartedAt, metrics, options });
 * for (const c of step.changes) store.setRoleCount(…c.to…); // and an event with c.reason
 * execute(step.plan.actions);
 * ```
 */
import { isLive } from './states.js';
import type { MetricStore } from './metrics.js';
import { plan, rankVictims, roleHash, victimWhy, type Plan, type PlanInput, type PlanInstance, type PlannerOptions } from './planner.js';
import { evaluate, type Decision, type Policy, type PolicyState } from './policy.js';
import type { RoleSpec } from './types.js';

/** A role's stored sizing: its desired count, whether an operator pinned it, its policy state. */
export interface RoleSizing {
  readonly desired: number;
  readonly pinned: boolean;
  readonly policyState?: PolicyState;
  /**
   * The least the role may shrink to whatever its policies say: the instances its tenants need
   * (⌈tenants / capacity⌉, plus instances ordered for pending sign-ups).
   */
  readonly floor?: number;
}

export interface DecideInput extends Omit<PlanInput, 'desired'> {
  readonly roles: Readonly<Record<string, RoleSizing>>;
  readonly metrics: MetricStore;
  /** The key of a role's samples in `metrics`. @default the role's name */
  readonly metricsKey?: (role: string) => string;
  /** Run the scaling policies in this step (the controller does every `evaluateMs`). @default true */
  readonly evaluatePolicies?: boolean;
  readonly options: PlannerOptions;
}

/** A role whose count the policies changed in this step. */
export interface SizeChange {
  readonly role: string;
  readonly from: number;
  readonly to: number;
  /** The policy's reason, with the victims a scale-in will take. */
  readonly reason: string;
  readonly decision: Decision;
}

export interface DecideOutput {
  /** Each evaluated role's decision (changed or not), with its new policy state. */
  readonly decisions: Readonly<Record<string, Decision>>;
  readonly changes: readonly SizeChange[];
  /** The desired count of every role after the policies. */
  readonly desired: Readonly<Record<string, number>>;
  readonly plan: Plan;
}

/**
 * How long a role must have served before its policies may shrink it: the longest scale-down
 * hold of its policies. Until then there is no history to stabilize on, and the count the app
 * file (or the operator) gave is kept.
 */
export function scaleInHoldMs(policies: readonly Policy[]): number {
  let ms = 0;
  for (const p of policies) {
    if (p.kind === 'target' || p.kind === 'queue') ms = Math.max(ms, p.scaleDownStabilizationMs);
    else if (p.kind === 'threshold') ms = Math.max(ms, p.forMs);
    else ms = Math.max(ms, p.minHoldMs);
  }
  return ms;
}

/** Instances a role's policies count: live, assigned to the role, not leaving. */
export function policyInstances(role: string, instances: readonly PlanInstance[]): PlanInstance[] {
  return instances.filter((i) => i.role === role && i.destroyedAt === null && i.goal === 'run' && isLive(i.state));
}

export function decide(input: DecideInput): DecideOutput {
  const sizes = decideSizes(input);
  return { ...sizes, plan: plan({ ...input, desired: sizes.desired }) };
}

/**
 * The policy half of {@link decide}: each role's new size and why. The simulator, which plans
 * several times within one of its ticks, calls this and {@link plan} itself.
 */
export function decideSizes(input: Omit<DecideInput, 'controllerStartedAt' | 'options'>): Omit<DecideOutput, 'plan'> {
  const { app, now } = input;
  const desired: Record<string, number> = Object.create(null) as Record<string, number>;
  for (const [name, r] of Object.entries(input.roles)) desired[name] = Math.max(r.desired, r.floor ?? 0);
  const decisions: Record<string, Decision> = Object.create(null) as Record<string, Decision>;
  const changes: SizeChange[] = [];
  if (!app.deleting && input.evaluatePolicies !== false) {
    for (const role of Object.values(app.spec.roles)) {
      const sizing = Object.hasOwn(input.roles, role.name) ? input.roles[role.name] : undefined;
      if (role.scale.length === 0 || !sizing || sizing.pinned) continue;
      const live = policyInstances(role.name, input.instances);
      const d = evaluate(
        role.scale,
        {
          role: role.name,
          now,
          current: sizing.desired,
          min: role.min,
          max: role.max,
          instances: live.map((i) => ({ id: i.id, servingSince: i.state === 'serving' ? (i.startedAt ?? i.stateSince) : null })),
          warmupMs: role.warmupMs,
          metrics: input.metrics,
          metricsKey: input.metricsKey?.(role.name) ?? role.name,
        },
        sizing.policyState,
      );
      const held = keepFloor(role, sizing, holdScaleIn(role, sizing.desired, live, d, now));
      decisions[role.name] = held;
      if (!held.changed) continue;
      desired[role.name] = held.desired;
      changes.push({ role: role.name, from: sizing.desired, to: held.desired, reason: withVictims(role, held, sizing.desired, live), decision: held });
    }
  }
  return { decisions, changes, desired };
}

/** Policies never take a role below what its tenants need. */
function keepFloor(role: RoleSpec, sizing: RoleSizing, d: Decision): Decision {
  const floor = sizing.floor ?? 0;
  if (d.desired >= floor) return d;
  const to = Math.max(floor, sizing.desired);
  return { ...d, desired: to, changed: to !== sizing.desired, reason: `${role.name} stays at ${to}: would go to ${d.desired} (${d.reason}), but its tenants need ${floor} instance(s)` };
}

/** No scale-in before the role has served for its policies' scale-down hold. */
function holdScaleIn(role: RoleSpec, current: number, live: readonly PlanInstance[], d: Decision, now: number): Decision {
  if (!d.changed || d.desired >= current) return d;
  const hold = scaleInHoldMs(role.scale);
  const since = live.reduce<number | null>((m, i) => {
    if (i.state !== 'serving') return m;
    const s = i.startedAt ?? i.stateSince;
    return m === null || s < m ? s : m;
  }, null);
  const served = since === null ? 0 : now - since;
  if (served >= hold) return d;
  return {
    ...d,
    desired: current,
    changed: false,
    reason: `${role.name} stays at ${current}: would go to ${d.desired} (${d.reason}), but it has served for ${Math.round(served / 1000)}s of the ${Math.round(hold / 1000)}s its policies need before scaling in`,
  };
}

/** The policy's reason, naming the victims the plan will choose, so the event tells the whole decision. */
function withVictims(role: RoleSpec, d: Decision, from: number, live: readonly PlanInstance[]): string {
  if (d.desired >= from) return d.reason;
  const hash = roleHash(role);
  const victims = rankVictims(live, hash).slice(0, from - d.desired);
  if (victims.length === 0) return d.reason;
  return `${d.reason}; victim${victims.length > 1 ? 's' : ''} ${victims.map((v) => `${v.id} (${victimWhy(v, hash)})`).join(', ')}`;
}
