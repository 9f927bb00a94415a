/**
 * The controller's durable state, in drover's own words. Implementations: PGlite (embedded,
 * the default) and anything else speaking the same SQL through {@link SqlClient}.
 */
import type { AppSpec, EventKind, InstanceState, LastExit, TenantState } from '../../core/index.js';

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
  /** The member slot it holds (`db-0` is 0): which volumes are its. null: none (no volumes, or a spare). */
  readonly slot?: number | null;
  /** Every port of its role's `ports:` by number, as its agent reported them. null: none yet. */
  readonly ports?: Readonly<Record<string, number>> | null;
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

/**
 * A tenant: a customer placed on one instance of a tenant-hosting role. States and which of
 * them hold a seat: `TenantState` and `SEAT_HOLDING_STATES` in core.
 */
export interface TenantRecord {
  readonly id: string;
  readonly app: string;
  readonly role: string;
  /** Unique in the app among tenants not `removed`. */
  readonly name: string;
  /** Unique in the app (lowercase) among tenants not `removed`; null: none. */
  readonly host: string | null;
  readonly state: TenantState;
  /** The instance holding its seat (placing, ready, moving, removing); kept after failure/removal for history. */
  readonly instanceId: string | null;
  /** While `moving`: the instance it moves to, where a seat is held too. */
  readonly targetInstanceId: string | null;
  /** Why it waits (`pending`), failed (`failed`), or moves; null when there is nothing to say. */
  readonly reason: string | null;
  /** Consolidation never moves a pinned tenant. */
  readonly pinned: boolean;
  readonly callbackUrl: string | null;
  readonly email: string | null;
  /** The sign-up's `Idempotency-Key`: unique per app, for ever (also once removed). */
  readonly idempotencyKey: string | null;
  /** Runs of `add` so far for the current placement. */
  readonly attempts: number;
  /** The last lines of the last `add`/`remove` run's output. */
  readonly lastOutput: readonly string[] | null;
  /** Arrival order: strictly increasing in creation order, so placement takes the first to come first. */
  readonly seq: number;
  readonly createdAt: number;
  readonly updatedAt: number;
  /** Bumped by every update: a write that depends on a read gives the version it read. */
  readonly version: number;
}

/** A tenant as first stored: `pending`, no instance, no attempts, version 0. */
export interface NewTenant {
  readonly id: string;
  readonly app: string;
  readonly role: string;
  readonly name: string;
  readonly host: string | null;
  readonly callbackUrl: string | null;
  readonly email: string | null;
  /** @default false */
  readonly pinned?: boolean;
  /** Why it waits, from the start (e.g. the placement's reason). @default null */
  readonly reason?: string | null;
  readonly createdAt: number;
}

export type TenantPatch = Partial<
  Pick<TenantRecord, 'state' | 'instanceId' | 'targetInstanceId' | 'reason' | 'pinned' | 'callbackUrl' | 'email' | 'host' | 'attempts' | 'lastOutput' | 'updatedAt'>
>;

/** A seat-holding tenant as {@link Store.listTenantSeats} returns it. */
export interface TenantSeat {
  readonly id: string;
  readonly role: string;
  readonly host: string | null;
  readonly state: TenantState;
  readonly instanceId: string | null;
  readonly targetInstanceId: string | null;
}

export interface TenantFilter {
  readonly app?: string;
  readonly role?: string;
  /** One state or several. */
  readonly state?: TenantState | readonly TenantState[];
  /** Tenants whose `instanceId` is this one. */
  readonly instanceId?: string;
}

/** A write made for a lease holder that no longer holds it (a deposed leader): refused, nothing written. */
export class LeaseLostError extends Error {
  override readonly name = 'LeaseLostError';
  constructor(
    readonly lease: string,
    readonly holder: string,
    readonly epoch: number,
  ) {
    super(epoch === 0 ? `lease ${lease}: ${holder} does not hold it (standby); write refused` : `lease ${lease}: ${holder} no longer holds it with epoch ${epoch}; write refused`);
  }
}

/** A sign-up refused because another tenant of the app (not removed) has the same name or host. */
export class TenantConflictError extends Error {
  override readonly name = 'TenantConflictError';
  constructor(
    /** The field in conflict. */
    readonly field: 'name' | 'host',
    readonly value: string,
    /** The tenant that has it. */
    readonly existingId: string,
    options?: { cause?: unknown },
  ) {
    super(`a tenant with ${field} ${JSON.stringify(value)} already exists in this app (${existingId})`, options);
  }
}

/** One delivery attempt of a notification about a tenant (webhook or e-mail). */
export interface NotificationRecord {
  readonly id: number;
  readonly tenantId: string;
  /** The same for every attempt of one notification (the webhook's `webhook-id`). */
  readonly messageId: string;
  /** `webhook` or `email`. */
  readonly kind: 'webhook' | 'email';
  /** What it tells: `tenant.ready`, `tenant.failed`, `tenant.moved`, `tenant.removed`. */
  readonly event: string;
  /** The URL or the e-mail address. */
  readonly target: string;
  /** 1 for the first attempt. */
  readonly attempt: number;
  /** `delivered`; `failed` (will be retried); `abandoned` (the last attempt failed). */
  readonly status: 'delivered' | 'failed' | 'abandoned';
  /** What the other side said (`HTTP 500: …`, `250 OK`, `ECONNREFUSED`), cut short. */
  readonly response: string | null;
  readonly at: number;
}

export type NewNotification = Omit<NotificationRecord, 'id'>;

/** A join token (`drover token create`): only its sha256 is kept. */
export interface JoinTokenRecord {
  readonly id: string;
  /** sha256 of the whole token, hex. */
  readonly hash: string;
  /** The app whose pool a node joining with it enters. */
  readonly app: string;
  /** Labels given to every node that joins with it (a node's own labels win). */
  readonly labels: Readonly<Record<string, string>> | null;
  /** null: any number of joins. */
  readonly maxUses: number | null;
  readonly uses: number;
  /** null: never expires. */
  readonly expiresAt: number | null;
  readonly revokedAt: number | null;
  readonly createdAt: number;
  /**
   * A token made for one cloud machine (its user data): the node joining with it runs this
   * instance, never another, and does not enter the app's pool. null: a pool token.
   */
  readonly instanceId: string | null;
}

/** ready: joined (connected or not); gone: removed by the operator; revoked: its token was revoked. */
export type NodeState = 'ready' | 'gone' | 'revoked';

/** A host that joined an app's pool (`drover agent --join`). */
export interface NodeRecord {
  readonly id: string;
  readonly app: string;
  readonly tokenId: string;
  readonly hostname: string;
  /** The addresses the node reported (the first one is used for its instances). */
  readonly addresses: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
  /** The node's key (core/auth.ts), minted by the controller at the join. */
  readonly nodeKey: string;
  readonly state: NodeState;
  readonly joinedAt: number;
  readonly lastSeenAt: number;
  /** The instance this node was made for (it joined with that instance's token); null: a pool node. */
  readonly instanceId: string | null;
  readonly version: number;
}

export type NodePatch = Partial<Pick<NodeRecord, 'addresses' | 'state' | 'lastSeenAt' | 'labels'>>;

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
  /**
   * Retention of fleet records: nodes gone or revoked (last seen) before `before`, then join
   * tokens expired or revoked before it — and used-up tokens made for one cloud instance — that
   * no ready node still holds. Operator tokens that are only used up stay until they expire.
   */
  pruneFleet(q: { before: number }): Promise<{ tokens: number; nodes: number }>;
  /**
   * Signs a tenant up, `pending`. With `idempotencyKey`, a second call with the same key (in the
   * same app) returns the tenant the first made, `created: false`, whatever else it carries —
   * never a second tenant, also when the calls race. Throws {@link TenantConflictError} when
   * another tenant of the app (not removed) has the same name or host; nothing is stored then.
   */
  createTenant(t: NewTenant, idempotencyKey?: string): Promise<{ tenant: TenantRecord; created: boolean }>;
  getTenant(id: string): Promise<TenantRecord | undefined>;
  /** In arrival order (`seq`). */
  listTenants(filter?: TenantFilter): Promise<TenantRecord[]>;
  /** False: no such tenant, or `cond` failed. Every applied update bumps the version. */
  updateTenant(id: string, patch: TenantPatch, cond?: WriteCondition): Promise<boolean>;
  /**
   * Takes a seat for a `pending` tenant on an instance, atomically: the tenant becomes `placing`
   * on `instanceId` only if the instance (same app and role, goal run, provisioning … serving,
   * not destroyed) has fewer than `capacity` seats taken. Two reservations racing for the last
   * seat cannot both win, whatever the number of callers and connections. True when the seat is
   * the tenant's — also when it already held it there (a repeated order). False: no seat (full,
   * instance gone or leaving, tenant not pending); nothing changed.
   */
  reserveSeat(tenantId: string, instanceId: string, capacity: number, at?: number): Promise<boolean>;
  /**
   * Takes a seat on `targetInstanceId` for a `ready` tenant that is to move there, atomically,
   * like {@link reserveSeat}: the tenant becomes `moving` and holds seats on both instances until
   * the caller ends the move (`updateTenant(id, { state: 'ready', instanceId: target, targetInstanceId: null })`).
   */
  reserveMove(tenantId: string, targetInstanceId: string, capacity: number, at?: number): Promise<boolean>;
  /**
   * The seat-holding tenants of an app (placing, ready, moving, removing), narrowly: what a
   * reconcile pass reads each time to count seats and route hosts, without whole records. In
   * arrival order.
   */
  listTenantSeats(app: string): Promise<TenantSeat[]>;
  /** Seats taken on each instance (tenants placing, ready, moving, removing on it, and moves coming to it); 0 for none. */
  seatsUsed(instanceIds: readonly string[]): Promise<Map<string, number>>;
  appendNotification(n: NewNotification): Promise<NotificationRecord>;
  /** Oldest first. */
  listNotifications(tenantId: string): Promise<NotificationRecord[]>;

  /**
   * Takes the lease `name` for `holder` for `ttlMs`, on the database's clock: when nobody holds
   * it, its holder let it expire or released it, or `holder` holds it already (then it is
   * renewed, same epoch). Undefined: someone else holds it. Callers racing for a free lease,
   * on any number of connections or machines: exactly one gets it.
   */
  acquireLease(name: string, holder: string, ttlMs: number): Promise<Lease | undefined>;
  /**
   * Extends the lease by `ttlMs` from now if `holder` still holds it with `epoch` and it has not
   * expired. Undefined: it is lost (expired, or taken by another) — the holder must stop acting
   * as its holder.
   */
  renewLease(name: string, holder: string, epoch: number, ttlMs: number): Promise<Lease | undefined>;
  /** Gives the lease up (it expires now; the next holder gets epoch + 1). False: not held by `holder` with `epoch`. */
  releaseLease(name: string, holder: string, epoch: number): Promise<boolean>;
  /** The lease as stored (possibly expired: compare `expiresAt` with `now`), or undefined if never taken. */
  getLease(name: string): Promise<Lease | undefined>;
  /**
   * Fencing: throws {@link LeaseLostError} unless `holder` holds the lease with `epoch` and it has
   * not expired. Inside a transaction it also locks the lease row against a change of hands until
   * the transaction ends, so every write of that transaction lands before the next holder's epoch
   * begins, or not at all.
   */
  assertLease(name: string, holder: string, epoch: number): Promise<void>;

  createJoinToken(t: Omit<JoinTokenRecord, 'uses' | 'revokedAt' | 'instanceId'> & { readonly instanceId?: string | null }): Promise<void>;
  getJoinToken(id: string): Promise<JoinTokenRecord | undefined>;
  listJoinTokens(): Promise<JoinTokenRecord[]>;
  /** False: no such token, or already revoked. */
  revokeJoinToken(id: string, at: number): Promise<boolean>;
  /**
   * Takes one use of the token, in one conditional statement: false (nothing changed) when it is
   * revoked, expired at `at`, used up, or unknown. Racers never use it more than `maxUses` times.
   */
  useJoinToken(id: string, at: number): Promise<boolean>;
  insertNode(n: Omit<NodeRecord, 'version' | 'instanceId'> & { readonly instanceId?: string | null }): Promise<void>;
  /** False: no such node. Bumps the version. */
  updateNode(id: string, patch: NodePatch): Promise<boolean>;
  getNode(id: string): Promise<NodeRecord | undefined>;
  listNodes(filter?: { app?: string }): Promise<NodeRecord[]>;
}

/**
 * A named lease: who holds it and until when, all times on the database's clock (epoch ms), so
 * holders on machines whose clocks disagree still agree on who holds it. A holder must not act
 * as the holder past (its own clock when it sent the acquire or renew) + ttl, since the answer
 * may have been delayed.
 */
export interface Lease {
  readonly name: string;
  readonly holder: string;
  /**
   * Fencing token: 1 for the first holder, one more each time the lease changes hands (or is
   * taken again after it expired or was released); unchanged by renewals. Writes made for a
   * holder can carry it, so that those of a deposed holder are recognised.
   */
  readonly epoch: number;
  /** When this holder took it. */
  readonly acquiredAt: number;
  /** When it was last taken or renewed. */
  readonly renewedAt: number;
  /** When it ends unless renewed. */
  readonly expiresAt: number;
  /** The database's clock when it answered. */
  readonly now: number;
}
