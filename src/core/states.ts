/**
 * Instance states. The controller creates an instance in `provisioning`; from then on the agent
 * reports its state, except `failed`/`terminated`, which the controller may also set when the
 * instance's process is gone.
 */
export const InstanceState = {
  /** The provider is making the instance; no agent has registered yet. */
  provisioning: 'provisioning',
  /** An agent is up and has no role (a warm spare). */
  spare: 'spare',
  /** The agent accepted a role and has not begun to deploy it. */
  assigned: 'assigned',
  /** The `deploy` step is running. */
  deploying: 'deploying',
  /** Deployed; at least one required import is unresolved. */
  waiting: 'waiting',
  /** The start command runs; the health check has not passed yet. */
  starting: 'starting',
  /** Started and healthy; exports are published. */
  serving: 'serving',
  /** Leaving: out of rotation, finishing in-flight work. */
  draining: 'draining',
  /** `stop`/`undeploy` running, process being ended. */
  stopping: 'stopping',
  /** Gone. Terminal. */
  terminated: 'terminated',
  /** No heartbeat within the timeout. */
  unresponsive: 'unresponsive',
  /** Gave up: the role kept crashing, or the agent died. Terminal for this instance. */
  failed: 'failed',
} as const;
export type InstanceState = (typeof InstanceState)[keyof typeof InstanceState];

export const ALL_STATES: readonly InstanceState[] = Object.values(InstanceState);

/** States from which an instance never comes back. */
export function isTerminal(s: InstanceState): boolean {
  return s === 'terminated' || s === 'failed';
}

/**
 * Goal and state are two things. The **state** is what the instance is doing, as its agent
 * reports it (or as the controller concludes: `unresponsive`, and `failed`/`terminated` when its
 * process is gone). The **goal** (`run`, `drain`, `stop`) is what the controller wants of it; a
 * drain is a goal that the agent carries out through the `draining` state. Only the controller
 * writes goals; only the transitions below are accepted from agents.
 */

/** States in which an instance counts as capacity of its role (or, without a role, as a spare). */
export const LIVE_STATES: ReadonlySet<InstanceState> = new Set<InstanceState>([
  'provisioning',
  'spare',
  'assigned',
  'deploying',
  'waiting',
  'starting',
  'serving',
]);

/** Whether an instance in state `s` (with goal `run`) counts toward its role's size. */
export function isLive(s: InstanceState): boolean {
  return LIVE_STATES.has(s);
}

/**
 * One step an agent may report, from each state. A role restarts (`serving → starting`), a drain
 * can be cancelled (`draining → serving`); nothing goes back to `spare`, `assigned`, `deploying`
 * or `waiting` once past them, and nothing leaves a terminal state.
 */
export const AGENT_TRANSITIONS: Readonly<Record<InstanceState, readonly InstanceState[]>> = {
  provisioning: ['spare', 'failed', 'terminated'],
  spare: ['assigned', 'stopping', 'terminated', 'failed'],
  assigned: ['deploying', 'stopping', 'failed', 'terminated'],
  deploying: ['waiting', 'starting', 'serving', 'stopping', 'failed', 'terminated'],
  waiting: ['starting', 'serving', 'stopping', 'failed', 'terminated'],
  starting: ['serving', 'draining', 'stopping', 'failed', 'terminated'],
  serving: ['starting', 'draining', 'stopping', 'failed', 'terminated'],
  draining: ['serving', 'starting', 'stopping', 'failed', 'terminated'],
  stopping: ['terminated', 'failed'],
  terminated: [],
  unresponsive: [],
  failed: [],
};

const REACHABLE: ReadonlyMap<InstanceState, ReadonlySet<InstanceState>> = (() => {
  const out = new Map<InstanceState, Set<InstanceState>>();
  for (const from of Object.keys(AGENT_TRANSITIONS) as InstanceState[]) {
    const seen = new Set<InstanceState>();
    const todo = [...AGENT_TRANSITIONS[from]];
    while (todo.length) {
      const s = todo.pop()!;
      if (seen.has(s)) continue;
      seen.add(s);
      todo.push(...AGENT_TRANSITIONS[s]);
    }
    out.set(from, seen);
  }
  return out;
})();

/**
 * Whether an agent may report `to` when the controller last knew `from`. Reports are
 * level-triggered (a heartbeat carries the state now, not each step), so any state reachable by
 * allowed steps is accepted; anything else is impossible.
 */
export function canReport(from: InstanceState, to: InstanceState): boolean {
  return from === to || (REACHABLE.get(from)?.has(to) ?? false);
}
