/**
 * The controller's durable state, in drover's own words. Implementations: PGlite (embedded,
 * the default) and anything else speaking the same SQL through {@link SqlClient}.
 */
import type { AppSpec, EventKind, InstanceState, LastExit } from '../../core/index.js';

export interface StoredApp {
  readonly name: string;
  readonly spec: AppSpec;
  /** Folder holding the app file (`${appDir}`). */
  readonly appDir: string;
  /** Incremented on every apply that changed the spec. */
  readonly generation: number;
  /** Set by `DELETE /v1/apps/{name}`: roles stop in reverse dependency order, then the app goes. */
  readonly deleting: boolean;
  readonly createdAt: number;
  readonly updatedAt: number;
}

export interface StoredRole {
  readonly app: string;
  readonly role: string;
  readonly desired: number;
  /** Count set by hand (`drover scale`): the autoscaler leaves the role alone until `--auto`. */
  readonly pinned: boolean;
  /** The autoscaler's state for this role (plain JSON), kept across controller restarts. */
  readonly policyState: unknown;
  /** Bumped by every change of the count or pin: a write that depends on a read gives the version it read. */
  readonly version: number;
}

/** run: keep serving. drain: leaving gracefully (out of importers, finishing work). stop: leaving now. */
export type InstanceGoal = 'run' | 'drain' | 'stop';

export interface InstanceRecord {
  readonly id: string;
  readonly app: string;
  /** null: a warm spare with no role yet. */
  readonly role: string | null;
  /** For a spare: the role it is kept for, or `*` for any role of the app. */
  readonly pool: string | null;
  readonly state: InstanceState;
  readonly goal: InstanceGoal;
  /** Fencing generation: an agent presenting another epoch is refused. */
  readonly epoch: number;
  readonly joinToken: string;
  readonly ip: string;
  readonly port: number;
  readonly workdir: string;
  /** Provider-specific handle (the local provider keeps the agent's pid). */
  readonly providerRef: Readonly<Record<string, unknown>> | null;
  /** Hash of the role spec the instance was created for; a changed role rolls its instances. */
  readonly roleHash: string;
  readonly exports: Readonly<Record<string, string>> | null;
  /** Version of the imports last sent (assign or imports order). */
  readonly importsSent: string | null;
  /** Version the agent reports having applied. */
  readonly importsApplied: string | null;
  readonly assignOrderId: string | null;
  readonly stopOrderId: string | null;
  readonly drainOrderId: string | null;
  readonly restarts: number;
  readonly message: string | null;
  readonly lastExit: LastExit | null;
  readonly createdAt: number;
  /** When the role first became healthy on this instance. */
  readonly startedAt: number | null;
  readonly stateSince: number;
  /** When the controller asked it to stop (goal became `stop`). */
  readonly stopRequestedAt: number | null;
  /** When the controller decided to drain it (goal became `drain`). */
  readonly drainRequestedAt: number | null;
  /** When the provider destroyed it. */
  readonly destroyedAt: number | null;
  /** Bumped by every update: a write that depends on a read gives the version it read. */
  readonly version: number;
}

/** An instance as first stored (its version starts at 0). */
export type NewInstance = Omit<InstanceRecord, 'version'>;

export type InstancePatch = Partial<Omit<InstanceRecord, 'id' | 'app' | 'createdAt' | 'version'>>;

/**
 * A condition on a write: apply it only if the row still has the version that was read. A write
 * whose condition fails changes nothing and returns false: someone else wrote meanwhile, and the
 * caller reads again (the reconciler plans again) rather than overwrite what it did not see.
 */
export interface WriteCondition {
  readonly ifVersion?: number;
}

export interface EventRecord {
  readonly id: number;
  readonly at: number;
  readonly app: string | null;
  readonly role: string | null;
  readonly instance: string | null;
  /** One of the documented kinds (src/core/events.ts, docs/api.md "Event kinds"). */
  readonly kind: EventKind;
  /** A sentence a person can read. */
  readonly message: string;
  readonly data: Readonly<Record<string, unknown>> | null;
}

export type NewEvent = Omit<EventRecord, 'id'>;

export interface StoredOrder {
  readonly id: string;
  readonly instanceId: string;
  readonly kind: string;
  readonly payload: unknown;
  readonly createdAt: number;
  readonly ackedAt: number | null;
}

export interface InstanceFilter {
  readonly app?: string;
  readonly role?: string;
  /** Also destroyed instances. */
  readonly includeGone?: boolean;
  /** Also instances destroyed at or after this time. */
  readonly goneSince?: number;
}

export interface Store {
  close(): Promise<void>;
  /** Runs `fn` atomically. Nested calls reuse the outer transaction. */
  transaction<T>(fn: (tx: Store) => Promise<T>): Promise<T>;

  /** Saves an app (new or changed) and its roles' desired counts; returns the stored app. */
  putApp(app: { name: string; spec: AppSpec; appDir: string; at: number }): Promise<{ app: StoredApp; changed: boolean }>;
  getApp(name: string): Promise<StoredApp | undefined>;
  listApps(): Promise<StoredApp[]>;
  setAppDeleting(name: string, at: number): Promise<void>;
  deleteApp(name: string): Promise<void>;

  listRoles(app: string): Promise<StoredRole[]>;
  /** Sets the count (and whether it is pinned by hand). False: the role is gone, or `cond` failed. */
  setRoleCount(app: string, role: string, desired: number, pinned: boolean, cond?: WriteCondition): Promise<boolean>;
  /** The autoscaler's own state; does not bump the role's version (nobody else writes it). */
  setPolicyState(app: string, role: string, state: unknown): Promise<void>;

  insertInstance(rec: NewInstance): Promise<void>;
  /** False: no such instance, or `cond` failed. Every applied update bumps the version. */
  updateInstance(id: string, patch: InstancePatch, cond?: WriteCondition): Promise<boolean>;
  getInstance(id: string): Promise<InstanceRecord | undefined>;
  /** Instances not yet destroyed (or all, with `includeGone`). */
  listInstances(filter?: InstanceFilter): Promise<InstanceRecord[]>;

  putOrder(order: Omit<StoredOrder, 'ackedAt'>): Promise<void>;
  /** Marks a pending order of `instanceId` acknowledged; false if it is not one (another instance's, or already acked). */
  ackOrder(id: string, instanceId: string, at: number): Promise<boolean>;
  pendingOrders(instanceId: string): Promise<StoredOrder[]>;

  appendEvent(ev: NewEvent): Promise<EventRecord>;
  listEvents(q: { after?: number; app?: string; limit?: number }): Promise<EventRecord[]>;

  /**
   * Retention: deletes events recorded before `before` (epoch ms) and all but the newest `keep`
   * events. Either bound may be left out. Returns how many events were deleted.
   */
  pruneEvents(q: { before?: number; keep?: number }): Promise<number>;
  /**
   * Retention: deletes orders acknowledged before `ackedBefore`, and orders never acknowledged
   * whose instance was destroyed before it (no agent is left to take them). Pending orders of
   * live instances are kept whatever their age. Returns how many orders were deleted.
   */
  pruneOrders(q: { ackedBefore: number }): Promise<number>;
}
