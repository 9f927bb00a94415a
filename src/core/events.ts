/**
 * The kinds of recorded events: every decision or change the controller stores, lists
 * (`GET /v1/events`, `drover events`) and streams (`GET /v1/stream`). One list, so the store, the
 * API, the dashboard and the docs (docs/api.md, "Event kinds") agree on the words.
 *
 * ```ts
 * import { EventKind, isEventKind } from '../core/index.js';
 * record({ kind: EventKind.scalePolicy, ... });
 * ```
 */
export const EventKind = {
  /** An app was created or its file changed (`data.generation`). */
  appApply: 'app.apply',
  /** `DELETE /v1/apps/{name}`: its roles are being stopped in reverse dependency order. */
  appDelete: 'app.delete',
  /** Every instance of a deleted app is gone; the app is forgotten. */
  appDeleted: 'app.deleted',
  /** A scaling policy changed a role's count; the message says why, `data` has `from`, `to` and the policy's `inputs`. */
  scalePolicy: 'scale.policy',
  /** An operator pinned a role's count (`drover scale`, the dashboard); `data.from`, `data.to`. */
  scaleManual: 'scale.manual',
  /** An operator handed a role back to its scaling policies. */
  scaleAuto: 'scale.auto',
  /** A replacement keeps failing: the role waits out a backoff. */
  roleBackoff: 'role.backoff',
  /** Three failures within the window: no more replacements until it passes or the role changes. */
  roleDegraded: 'role.degraded',
  /** No host fits a role's `placement` (labels, strict spread): no instance is made; the message names what was asked and every host seen with why it did not fit. */
  roleUnplaceable: 'role.unplaceable',
  /** An operator asked to retry a role (`drover retry`): its recent failures are forgotten; `data.by`, `data.forgotten`. */
  roleRetry: 'role.retry',
  /** An instance was requested from the provider for a role. */
  instanceCreate: 'instance.create',
  /** A registered agent was given its role. */
  instanceAssign: 'instance.assign',
  /** An agent reported a new state (`starting → serving`, …). */
  instanceState: 'instance.state',
  /** An importer was sent a changed set of imports (its `update` runs). */
  instanceImports: 'instance.imports',
  /** An instance leaves its importers and finishes in-flight work (scale-in, or an operator's drain). */
  instanceDrain: 'instance.drain',
  /** A drain was cancelled: load came back. */
  instanceUndrain: 'instance.undrain',
  /** An instance is told to stop now. */
  instanceStop: 'instance.stop',
  /** An instance was destroyed through its provider. */
  instanceDestroy: 'instance.destroy',
  /** An instance could not be made, kept crashing, or its agent died; it is replaced. */
  instanceFailed: 'instance.failed',
  /** An agent missed its heartbeats: fenced and replaced. */
  instanceUnresponsive: 'instance.unresponsive',
  /** At controller start, a machine the store did not fully know: reaped (unknown, or known as destroyed) or adopted (its record was still provisioning); `data.action`, `data.providerRef`. */
  instanceOrphan: 'instance.orphan',
  /** A role stopped or a step failed: the reason and a pointer (`drover logs <instance>`); `data.lines` has its last lines. */
  instanceLog: 'instance.log',
  /** A warm spare was requested from the provider. */
  spareCreate: 'spare.create',
  /** A warm spare took a role. */
  spareClaim: 'spare.claim',
  /** An agent failed a proof or sent a forged or malformed frame (rate-limited per instance and reason). */
  securityAgent: 'security.agent',
  /** An authenticated agent reported something it may not (an export its role cannot render, a role it was never given): fenced and replaced. */
  securityReport: 'security.report',
  /** A host joined an app's pool with a join token (`drover agent --join`): its node id, hostname, addresses, labels. */
  nodeJoined: 'node.joined',
  /** An instance was placed on a joined node: the node, its host name and address. */
  nodeAssigned: 'node.assigned',
  /** A node's instance was destroyed: its agent and role stopped, its folder removed, the node back in the pool (told when it is back, if out of reach). */
  nodeReleased: 'node.released',
  /** An operator removed a volume (`drover volumes rm`): the app, the member slot and the volume's name. */
  volumeRemoved: 'volume.removed',
  /** A join was refused: the reason (unknown, wrong, expired, used-up or revoked token) for the operator; the node was told only "refused". */
  securityJoin: 'security.join',
  /** A tenant got a seat on an instance (`add` follows once the instance serves). */
  tenantPlacing: 'tenant.placing',
  /** A tenant's `add` succeeded and its host is routed on every balancer. */
  tenantReady: 'tenant.ready',
  /** A tenant's `add` failed on every attempt; the message has the reason and the last output lines. */
  tenantFailed: 'tenant.failed',
  /** A tenant's instance was lost or is leaving: the tenant is placed again. */
  tenantLost: 'tenant.lost',
  /** A tenant was removed (unrouted, then `remove` ran). */
  tenantRemoved: 'tenant.removed',
  /** Waiting sign-ups raised a role's count: one instance per `capacity` of them (`data.from`, `data.to`, `data.waiting`). */
  tenantCapacity: 'tenant.capacity',
} as const;

export type EventKind = (typeof EventKind)[keyof typeof EventKind];

export const EVENT_KINDS: readonly EventKind[] = Object.values(EventKind);

export function isEventKind(s: string): s is EventKind {
  return (EVENT_KINDS as readonly string[]).includes(s);
}

/** Kinds that change a role's count: the dashboard marks them on its charts. */
export const SCALING_EVENT_KINDS: readonly EventKind[] = [EventKind.scalePolicy, EventKind.scaleManual, EventKind.scaleAuto];
