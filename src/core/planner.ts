/**
 * The reconcile plan: a pure function from a snapshot of one app (desired counts, instances,
 * their states) and a time to the actions that move actual state toward desired state.
 *
 * It never does I/O or reads a clock; the controller executes the actions and the simulator
 * can run the same function on a virtual clock. Every action carries a sentence saying why.
 *
 * Rules, in the words an operator would use:
 * - A role keeps `desired` live instances. A changed role spec rolls its instances one at a time:
 *   a new instance first, the old one stopped once the new one serves (surge 1, none unavailable).
 * - Scale-in stops instances that are not serving first, then the newest.
 * - An instance whose agent stops heartbeating is `unresponsive`: it no longer counts, it is
 *   destroyed and replaced. An instance stuck provisioning is failed and replaced.
 * - The first failure is replaced at once; after that replacements back off (5 s doubling up
 *   to 5 min) so a broken role never
 *   becomes a tight crash loop across instances.
 * - Deleting an app stops roles in reverse dependency order: a role stops only once every role
 *   that imports it is gone.
 */
import { createHash } from 'node:crypto';
import { importsVersion, resolveImports, stopOrder } from './imports.js';
import type { InstanceState } from './states.js';
import type { AppSpec, ImportedMember, ResolvedImports, RoleSpec } from './types.js';

export interface PlannerOptions {
  /** An agent silent this long is unresponsive. @default 6000 */
  readonly heartbeatTimeoutMs: number;
  /** An instance whose agent has not registered after this long is failed. @default 60000 */
  readonly provisionTimeoutMs: number;
  /** Extra time past a role's stopTimeout before a stopping instance is destroyed anyway. @default 15000 */
  readonly stopGraceMs: number;
  /** First delay before replacing a failed instance; doubles per recent failure. @default 5000 */
  readonly failureBackoffMs: number;
  /** Cap of that delay. @default 300000 */
  readonly failureBackoffMaxMs: number;
  /** Failures older than this are forgotten by the backoff. @default 600000 */
  readonly failureWindowMs: number;
}

export const DEFAULT_PLANNER_OPTIONS: PlannerOptions = {
  heartbeatTimeoutMs: 6000,
  provisionTimeoutMs: 60000,
  stopGraceMs: 15000,
  failureBackoffMs: 5000,
  failureBackoffMaxMs: 300000,
  failureWindowMs: 600000,
};

/** What the planner needs to know of an instance (the store's record has all of it). */
export interface PlanInstance {
  readonly id: string;
  readonly role: string;
  readonly state: InstanceState;
  readonly goal: 'run' | 'stop';
  readonly roleHash: string;
  readonly exports: Readonly<Record<string, string>> | null;
  readonly importsSent: string | null;
  readonly assignOrderId: string | null;
  readonly stopOrderId: string | null;
  readonly createdAt: number;
  readonly stateSince: number;
  readonly stopRequestedAt: number | null;
  readonly destroyedAt: number | null;
  /** Last heartbeat seen; null if none since the controller started. */
  readonly lastSeenAt: number | null;
}

export interface PlanInput {
  readonly app: { readonly name: string; readonly spec: AppSpec; readonly deleting: boolean };
  readonly desired: Readonly<Record<string, number>>;
  /** Live instances, plus destroyed ones that failed recently (for the failure backoff). */
  readonly instances: readonly PlanInstance[];
  readonly now: number;
  /** When this controller started: the heartbeat clock of instances it has not heard from yet. */
  readonly controllerStartedAt: number;
  readonly options?: PlannerOptions;
}

export type PlanAction =
  | { readonly kind: 'create'; readonly role: string; readonly roleHash: string; readonly reason: string }
  | {
      readonly kind: 'assign';
      readonly instanceId: string;
      readonly role: string;
      readonly imports: ResolvedImports;
      readonly importsVersion: string;
      readonly reason: string;
    }
  | {
      readonly kind: 'imports';
      readonly instanceId: string;
      readonly role: string;
      readonly imports: ResolvedImports;
      readonly importsVersion: string;
      readonly reason: string;
    }
  | { readonly kind: 'stop'; readonly instanceId: string; readonly role: string; readonly reason: string }
  | {
      readonly kind: 'destroy';
      readonly instanceId: string;
      readonly role: string;
      /** The state to record if the instance is not already terminal. */
      readonly finalState: 'terminated' | 'failed' | 'unresponsive';
      readonly reason: string;
    }
  | { readonly kind: 'forgetApp'; readonly reason: string }
  /** Nothing to do now, but worth telling (a role waiting out a backoff). */
  | { readonly kind: 'note'; readonly role: string; readonly reason: string };

export interface RoleSummary {
  readonly desired: number;
  readonly live: number;
  readonly serving: number;
  /** Required imports with no member yet, as written (`db.url`). */
  readonly missingImports: readonly string[];
}

export interface Plan {
  readonly actions: readonly PlanAction[];
  /** Run again after this long even if nothing wakes the reconciler. */
  readonly requeueAfterMs?: number;
  readonly roles: Readonly<Record<string, RoleSummary>>;
  /** Every role has its desired count serving, nothing is leaving. */
  readonly converged: boolean;
}

/** Hash of what an instance runs; counts are left out, so scaling never rolls instances. */
export function roleHash(role: RoleSpec): string {
  const { min: _min, max: _max, count: _count, ...rest } = role;
  return createHash('sha256').update(JSON.stringify(rest)).digest('hex').slice(0, 16);
}

/** States in which an instance bound to a role counts toward that role's size. */
const LIVE: ReadonlySet<InstanceState> = new Set<InstanceState>([
  'provisioning',
  'spare',
  'assigned',
  'deploying',
  'waiting',
  'starting',
  'serving',
]);

const isGone = (i: PlanInstance) => i.destroyedAt !== null;

export function plan(input: PlanInput): Plan {
  const o = input.options ?? DEFAULT_PLANNER_OPTIONS;
  const { spec } = input.app;
  const now = input.now;
  const actions: PlanAction[] = [];
  let requeue: number | undefined;
  const wakeIn = (ms: number) => {
    const v = Math.max(50, Math.ceil(ms));
    requeue = requeue === undefined ? v : Math.min(requeue, v);
  };

  const present = input.instances.filter((i) => !isGone(i));
  const handled = new Set<string>();

  // 1. Instances that are over: terminal, silent, stuck, or asked to stop long ago.
  for (const i of present) {
    const role = spec.roles[i.role];
    if (i.state === 'terminated' || i.state === 'failed') {
      actions.push({ kind: 'destroy', instanceId: i.id, role: i.role, finalState: i.state, reason: `${i.id} is ${i.state}; releasing it` });
      handled.add(i.id);
      continue;
    }
    if (i.state === 'unresponsive') {
      actions.push({ kind: 'destroy', instanceId: i.id, role: i.role, finalState: 'unresponsive', reason: `${i.id} is unresponsive; fencing and destroying it` });
      handled.add(i.id);
      continue;
    }
    const seen = i.lastSeenAt ?? Math.max(i.createdAt, input.controllerStartedAt);
    if (i.state === 'provisioning') {
      const age = now - Math.max(i.createdAt, input.controllerStartedAt);
      if (age >= o.provisionTimeoutMs) {
        actions.push({
          kind: 'destroy', instanceId: i.id, role: i.role, finalState: 'failed',
          reason: `${i.id} did not register within ${Math.round(o.provisionTimeoutMs / 1000)}s; giving up on it`,
        });
        handled.add(i.id);
      } else wakeIn(o.provisionTimeoutMs - age);
      continue;
    }
    if (i.goal === 'stop' && i.stopRequestedAt !== null) {
      const deadline = i.stopRequestedAt + (role?.stopTimeoutMs ?? 10000) + o.stopGraceMs;
      if (now >= deadline) {
        actions.push({ kind: 'destroy', instanceId: i.id, role: i.role, finalState: 'terminated', reason: `${i.id} did not finish stopping in time; destroying it` });
        handled.add(i.id);
        continue;
      }
      wakeIn(deadline - now);
    }
    const silentFor = now - seen;
    if (silentFor >= o.heartbeatTimeoutMs) {
      actions.push({
        kind: 'destroy', instanceId: i.id, role: i.role, finalState: 'unresponsive',
        reason: `${i.id} (${i.role}) sent no heartbeat for ${(silentFor / 1000).toFixed(1)}s (timeout ${o.heartbeatTimeoutMs / 1000}s); replacing it`,
      });
      handled.add(i.id);
    } else wakeIn(o.heartbeatTimeoutMs - silentFor);
  }
  const alive = present.filter((i) => !handled.has(i.id));

  // Serving members, by role: what importers see.
  const serving: Record<string, ImportedMember[]> = {};
  for (const i of alive) {
    if (i.goal === 'run' && i.state === 'serving' && i.exports) (serving[i.role] ??= []).push({ instance: i.id, exports: i.exports });
  }

  const summaries: Record<string, RoleSummary> = {};
  let converged = !input.app.deleting;

  // 2. Deleting: stop in reverse dependency order, then forget the app.
  if (input.app.deleting) {
    if (alive.length === 0 && present.length === handled.size) {
      actions.push({ kind: 'forgetApp', reason: `app ${input.app.name} deleted: every instance is gone` });
      return { actions, roles: summaries, converged: false };
    }
    const remaining = (role: string) => present.some((i) => i.role === role);
    const orphanRoles = new Set(present.map((i) => i.role).filter((r) => !spec.roles[r]));
    let blocked = false;
    for (const wave of [[...orphanRoles], ...stopOrder(spec)]) {
      if (blocked) break;
      for (const role of wave) {
        for (const i of alive) {
          if (i.role === role && i.goal === 'run') {
            actions.push({ kind: 'stop', instanceId: i.id, role, reason: `app ${input.app.name} is being deleted; stopping ${role} (${i.id})` });
          }
        }
      }
      if (wave.some(remaining)) blocked = true;
    }
    return { actions, requeueAfterMs: requeue ?? 1000, roles: summaries, converged: false };
  }

  // 3. Instances of roles no longer in the app.
  for (const i of alive) {
    if (!spec.roles[i.role] && i.goal === 'run') {
      actions.push({ kind: 'stop', instanceId: i.id, role: i.role, reason: `role ${i.role} was removed from the app; stopping ${i.id}` });
      converged = false;
    }
  }

  // 4. Each role: size, rolling update, assignment, imports.
  const importsByRole = new Map<string, { imports: ResolvedImports; version: string; missing: string[] }>();
  const importsOf = (role: RoleSpec) => {
    let r = importsByRole.get(role.name);
    if (!r) {
      const res = resolveImports(role, serving);
      r = { imports: res.imports, version: importsVersion(res.imports), missing: res.missing.map((m) => m.raw) };
      importsByRole.set(role.name, r);
    }
    return r;
  };

  for (const role of Object.values(spec.roles)) {
    const hash = roleHash(role);
    const desired = input.desired[role.name] ?? role.count;
    const mine = alive.filter((i) => i.role === role.name);
    const live = mine.filter((i) => i.goal === 'run' && LIVE.has(i.state));
    const leaving = mine.filter((i) => i.goal === 'stop');
    const servingNow = live.filter((i) => i.state === 'serving');
    const fresh = live.filter((i) => i.roleHash === hash);
    const outdated = live.filter((i) => i.roleHash !== hash);
    const imp = importsOf(role);
    summaries[role.name] = { desired, live: live.length, serving: servingNow.length, missingImports: imp.missing };
    if (servingNow.length !== desired || live.length !== desired || outdated.length > 0 || leaving.length > 0) converged = false;

    // Scale out / surge.
    const surge = outdated.length > 0 ? 1 : 0;
    let toCreate = Math.max(0, Math.min(desired - fresh.length, desired + surge - live.length));
    if (toCreate > 0) {
      const backoff = failureBackoff(input.instances, role.name, now, o);
      if (backoff.waitMs > 0) {
        actions.push({
          kind: 'note', role: role.name,
          reason: `${role.name}: ${backoff.failures} failed instance(s) in the last ${Math.round(o.failureWindowMs / 60000)} min; next replacement in ${Math.ceil(backoff.waitMs / 1000)}s`,
        });
        wakeIn(backoff.waitMs);
        toCreate = 0;
      }
    }
    for (let k = 0; k < toCreate; k++) {
      const reason =
        outdated.length > 0 && fresh.length + k >= live.length - outdated.length
          ? `${role.name}: rolling to the new spec (${outdated.length} outdated); creating a replacement`
          : `${role.name} ${live.length + k}→${live.length + k + 1}: ${live.length + k} live, ${desired} desired`;
      actions.push({ kind: 'create', role: role.name, roleHash: hash, reason });
    }

    // Scale in / finish the roll: stop the least useful first, never dropping below the
    // serving count the role needs.
    let excess = live.length + toCreate - desired;
    if (excess > 0) {
      const rank = (i: PlanInstance) => (i.roleHash !== hash ? 0 : 2) + (i.state === 'serving' ? 1 : 0);
      const victims = [...live].sort((a, b) => rank(a) - rank(b) || b.createdAt - a.createdAt || (a.id < b.id ? 1 : -1));
      let servingLeft = servingNow.length;
      let remaining = live.length + toCreate;
      for (const v of victims) {
        if (excess <= 0) break;
        const isServing = v.state === 'serving';
        if (isServing && servingLeft - 1 < Math.min(desired, servingNow.length)) continue;
        // The surge instance of a roll is not an excess: it is what replaces an old one.
        if (v.roleHash === hash && remaining <= desired + surge) continue;
        if (isServing) servingLeft--;
        remaining--;
        excess--;
        const why =
          v.roleHash !== hash
            ? `${role.name}: ${v.id} runs an old spec; stopping it`
            : `${role.name} ${live.length}→${live.length - 1}: ${desired} desired; stopping ${v.id} (${isServing ? 'newest' : `not serving yet, ${v.state}`})`;
        actions.push({ kind: 'stop', instanceId: v.id, role: role.name, reason: why });
      }
    }

    // Assign registered agents; keep imports current.
    for (const i of live) {
      if (i.state === 'spare' && i.assignOrderId === null) {
        actions.push({
          kind: 'assign', instanceId: i.id, role: role.name, imports: imp.imports, importsVersion: imp.version,
          reason: `${i.id} registered; assigning role ${role.name}`,
        });
      } else if (i.assignOrderId !== null && i.importsSent !== imp.version && role.imports.length > 0) {
        const members = Object.entries(imp.imports).map(([r, m]) => `${r}: ${m.length}`).join(', ');
        actions.push({
          kind: 'imports', instanceId: i.id, role: role.name, imports: imp.imports, importsVersion: imp.version,
          reason: `${i.id} (${role.name}): imports changed (${members || 'none'})`,
        });
      }
    }
  }

  if (!converged && requeue === undefined) wakeIn(1000);
  return { actions, ...(requeue !== undefined ? { requeueAfterMs: requeue } : {}), roles: summaries, converged };
}

/** How long a role must still wait before another replacement, given its recent failures. */
export function failureBackoff(
  instances: readonly PlanInstance[],
  role: string,
  now: number,
  o: PlannerOptions,
): { failures: number; waitMs: number } {
  const recent = instances.filter((i) => i.role === role && i.state === 'failed' && now - i.stateSince < o.failureWindowMs);
  if (recent.length === 0) return { failures: 0, waitMs: 0 };
  // One failure is replaced at once (an agent can die for reasons of its own); repeated
  // failures are a pattern, and each one doubles the wait.
  if (recent.length < 2) return { failures: recent.length, waitMs: 0 };
  const last = Math.max(...recent.map((i) => i.stateSince));
  const delay = Math.min(o.failureBackoffMaxMs, o.failureBackoffMs * 2 ** (recent.length - 2));
  return { failures: recent.length, waitMs: Math.max(0, last + delay - now) };
}
