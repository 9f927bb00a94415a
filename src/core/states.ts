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

/** States that count toward a role's size: the instance exists for that role and is not leaving. */
export function countsTowardRole(s: InstanceState): boolean {
  return (
    s === 'provisioning' ||
    s === 'assigned' ||
    s === 'deploying' ||
    s === 'waiting' ||
    s === 'starting' ||
    s === 'serving'
  );
}
