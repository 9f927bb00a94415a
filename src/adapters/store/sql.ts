/**
 * A {@link Store} over any SQL client that speaks PostgreSQL: embedded PGlite by default,
 * a PostgreSQL server through `pg` for production. The SQL is the same for both.
 */
import { seatAvailability, type AppSpec, type EventKind, type InstanceState, type LastExit, type TenantState } from '../../core/index.js';
import { MIGRATIONS } from './migrations.js';
import { LeaseLostError, TenantConflictError } from './types.js';
import type {
  EventRecord,
  NewNotification,
  NewTenant,
  NotificationRecord,
  TenantFilter,
  TenantPatch,
  TenantRecord,
  TenantSeat,
  InstanceFilter,
  InstancePatch,
  InstanceRecord,
  JoinTokenRecord,
  Lease,
  NodePatch,
  NodeRecord,
  NewEvent,
  NewInstance,
  WriteCondition,
  Store,
  StoredApp,
  StoredOrder,
  StoredRole,
} from './types.js';

/** The little of a SQL driver the store needs. */
export interface SqlClient {
  query<T>(sql: string, params?: readonly unknown[]): Promise<{ rows: T[] }>;
  exec(sql: string): Promise<void>;
  transaction<T>(fn: (tx: SqlClient) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

type Row = Record<string, unknown>;

/**
 * Advisory lock keys (`pg_advisory_xact_lock(class, key)`): the class is Drover's ("drov" in
 * ASCII), so other users of the database do not collide with them.
 */
const LOCK_CLASS = 0x64726f76;
const LOCK_MIGRATIONS = 1;
const LOCK_EVENTS = 2;

const num = (v: unknown): number => (typeof v === 'number' ? v : Number(v));
const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : num(v));
const strOrNull = (v: unknown): string | null => (typeof v === 'string' ? v : v === null || v === undefined ? null : JSON.stringify(v));
const json = (v: unknown): string | null => (v === null || v === undefined ? null : JSON.stringify(v));

const INSTANCE_COLUMNS: Record<keyof InstancePatch, string> = {
  role: 'role',
  pool: 'pool',
  state: 'state',
  goal: 'goal',
  epoch: 'epoch',
  joinToken: 'join_token',
  ip: 'ip',
  port: 'port',
  workdir: 'workdir',
  providerRef: 'provider_ref',
  roleHash: 'role_hash',
  exports: 'exports',
  importsSent: 'imports_sent',
  importsApplied: 'imports_applied',
  assignOrderId: 'assign_order_id',
  stopOrderId: 'stop_order_id',
  drainOrderId: 'drain_order_id',
  restarts: 'restarts',
  message: 'message',
  lastExit: 'last_exit',
  startedAt: 'started_at',
  stateSince: 'state_since',
  stopRequestedAt: 'stop_requested_at',
  drainRequestedAt: 'drain_requested_at',
  destroyedAt: 'destroyed_at',
  slot: 'slot',
  ports: 'ports',
};
const JSON_COLUMNS = new Set(['provider_ref', 'exports', 'last_exit', 'ports']);

function toApp(r: Row): StoredApp {
  return {
    name: String(r.name),
    spec: r.spec as AppSpec,
    appDir: String(r.app_dir),
    generation: num(r.generation),
    deleting: Boolean(r.deleting),
    createdAt: num(r.created_at),
    updatedAt: num(r.updated_at),
  };
}

function toInstance(r: Row): InstanceRecord {
  return {
    id: String(r.id),
    app: String(r.app),
    role: strOrNull(r.role),
    pool: strOrNull(r.pool),
    state: r.state as InstanceState,
    goal: r.goal === 'stop' || r.goal === 'drain' ? r.goal : 'run',
    epoch: num(r.epoch),
    joinToken: String(r.join_token),
    ip: String(r.ip),
    port: num(r.port),
    workdir: String(r.workdir),
    providerRef: (r.provider_ref as Record<string, unknown> | null) ?? null,
    roleHash: String(r.role_hash),
    exports: (r.exports as Record<string, string> | null) ?? null,
    importsSent: strOrNull(r.imports_sent),
    importsApplied: strOrNull(r.imports_applied),
    assignOrderId: strOrNull(r.assign_order_id),
    stopOrderId: strOrNull(r.stop_order_id),
    drainOrderId: strOrNull(r.drain_order_id),
    restarts: num(r.restarts),
    message: strOrNull(r.message),
    lastExit: (r.last_exit as LastExit | null) ?? null,
    createdAt: num(r.created_at),
    startedAt: numOrNull(r.started_at),
    stateSince: num(r.state_since),
    stopRequestedAt: numOrNull(r.stop_requested_at),
    drainRequestedAt: numOrNull(r.drain_requested_at),
    destroyedAt: numOrNull(r.destroyed_at),
    // Left out when null: most instances have neither, and records compare as they were written.
    ...(r.slot !== null && r.slot !== undefined ? { slot: num(r.slot) } : {}),
    ...(r.ports ? { ports: r.ports as Record<string, number> } : {}),
    version: num(r.version ?? 0),
  };
}

function toEvent(r: Row): EventRecord {
  return {
    id: num(r.id),
    at: num(r.at),
    app: strOrNull(r.app),
    role: strOrNull(r.role),
    instance: strOrNull(r.instance),
    // Written only through appendEvent, whose type allows the documented kinds alone.
    kind: String(r.kind) as EventKind,
    message: String(r.message),
    data: (r.data as Record<string, unknown> | null) ?? null,
  };
}

const TENANT_COLUMNS: Record<keyof TenantPatch, string> = {
  state: 'state',
  instanceId: 'instance_id',
  targetInstanceId: 'target_instance_id',
  reason: 'reason',
  pinned: 'pinned',
  callbackUrl: 'callback_url',
  email: 'email',
  host: 'host',
  attempts: 'attempts',
  lastOutput: 'last_output',
  updatedAt: 'updated_at',
};
/** The database's clock in epoch ms, the same all through one statement. */
const DB_NOW_MS = 'floor(extract(epoch from statement_timestamp()) * 1000)::bigint';

/** Leases last from a millisecond to a day. */
function checkTtl(ttlMs: number): void {
  if (!Number.isInteger(ttlMs) || ttlMs < 1 || ttlMs > 86_400_000) throw new RangeError(`lease ttl ${ttlMs}: expected a whole number of ms from 1 to 86400000`);
}

function toLease(r: Row): Lease {
  return {
    name: String(r.name),
    holder: String(r.holder),
    epoch: num(r.epoch),
    acquiredAt: num(r.acquired_at),
    renewedAt: num(r.renewed_at),
    expiresAt: num(r.expires_at),
    now: num(r.now),
  };
}

function toJoinToken(r: Row): JoinTokenRecord {
  return {
    id: String(r.id),
    hash: String(r.hash),
    app: String(r.app),
    labels: (r.labels as Record<string, string> | null) ?? null,
    maxUses: numOrNull(r.max_uses),
    uses: num(r.uses),
    expiresAt: numOrNull(r.expires_at),
    revokedAt: numOrNull(r.revoked_at),
    createdAt: num(r.created_at),
    instanceId: typeof r.instance_id === 'string' ? r.instance_id : null,
  };
}

function toNode(r: Row): NodeRecord {
  return {
    id: String(r.id),
    app: String(r.app),
    tokenId: String(r.token_id),
    hostname: String(r.hostname),
    addresses: (r.addresses as string[] | null) ?? [],
    labels: (r.labels as Record<string, string> | null) ?? {},
    nodeKey: String(r.node_key),
    state: r.state as NodeRecord['state'],
    joinedAt: num(r.joined_at),
    lastSeenAt: num(r.last_seen_at),
    instanceId: typeof r.instance_id === 'string' ? r.instance_id : null,
    version: num(r.version ?? 0),
  };
}

/** Tenant states that hold a seat on `instance_id` (core's SEAT_HOLDING_STATES, as SQL). */
const SEAT_STATES_SQL = `('placing', 'ready', 'moving', 'removing')`;

function toTenant(r: Row): TenantRecord {
  return {
    id: String(r.id),
    app: String(r.app),
    role: String(r.role),
    name: String(r.name),
    host: strOrNull(r.host),
    state: r.state as TenantState,
    instanceId: strOrNull(r.instance_id),
    targetInstanceId: strOrNull(r.target_instance_id),
    reason: strOrNull(r.reason),
    pinned: Boolean(r.pinned),
    callbackUrl: strOrNull(r.callback_url),
    email: strOrNull(r.email),
    idempotencyKey: strOrNull(r.idempotency_key),
    attempts: num(r.attempts),
    lastOutput: (r.last_output as string[] | null) ?? null,
    seq: num(r.seq),
    createdAt: num(r.created_at),
    updatedAt: num(r.updated_at),
    version: num(r.version ?? 0),
  };
}

function toNotification(r: Row): NotificationRecord {
  return {
    id: num(r.id),
    tenantId: String(r.tenant_id),
    messageId: String(r.message_id),
    kind: r.kind === 'email' ? 'email' : 'webhook',
    event: String(r.event),
    target: String(r.target),
    attempt: num(r.attempt),
    status: r.status === 'delivered' || r.status === 'abandoned' ? r.status : 'failed',
    response: strOrNull(r.response),
    at: num(r.at),
  };
}

/** True when every migration this version knows is applied; false when some is not (or there is no migration table yet). */
async function migrated(db: SqlClient): Promise<boolean> {
  let rows: { id: number }[];
  try {
    rows = (await db.query<{ id: number }>('select id from drover_migrations')).rows;
  } catch (err) {
    if ((err as { code?: unknown }).code === '42P01') return false; // undefined_table: a new database
    throw err;
  }
  const done = new Set(rows.map((r) => num(r.id)));
  return MIGRATIONS.every((m) => done.has(m.id));
}

export class SqlStore implements Store {
  private constructor(
    private readonly db: SqlClient,
    private readonly inTx: boolean,
  ) {}

  /**
   * Opens the store and applies pending migrations, all in one transaction under an advisory
   * lock: controllers starting at once on one database wait for each other, and the second
   * finds the work done. A migration that fails leaves the schema as it was.
   */
  static async open(db: SqlClient): Promise<SqlStore> {
    // Most opens find every migration applied (a store made from the build's template is): one
    // read says so, without the lock and the transaction that applying one needs.
    if (await migrated(db)) return new SqlStore(db, false);
    await db.transaction(async (tx) => {
      await tx.query('select pg_advisory_xact_lock($1, $2)', [LOCK_CLASS, LOCK_MIGRATIONS]);
      await tx.exec(`create table if not exists drover_migrations (id integer primary key, name text not null, applied_at bigint not null)`);
      const done = new Set((await tx.query<{ id: number }>('select id from drover_migrations')).rows.map((r) => num(r.id)));
      for (const m of MIGRATIONS) {
        if (done.has(m.id)) continue;
        await tx.exec(m.sql);
        await tx.query('insert into drover_migrations (id, name, applied_at) values ($1, $2, $3)', [m.id, m.name, Date.now()]);
      }
    });
    return new SqlStore(db, false);
  }

  async close(): Promise<void> {
    if (!this.inTx) await this.db.close();
  }

  async transaction<T>(fn: (tx: Store) => Promise<T>): Promise<T> {
    if (this.inTx) return fn(this);
    return this.db.transaction((tx) => fn(new SqlStore(tx, true)));
  }

  async putApp(a: { name: string; spec: AppSpec; appDir: string; at: number }): Promise<{ app: StoredApp; changed: boolean }> {
    return this.transaction(async (tx) => {
      const self = tx as SqlStore;
      // Two applies of one app at once (two API calls, two controllers on one database) run one
      // after the other: a new app's insert waits on the other's, an existing app's row is locked,
      // and so are its roles (an operator's pin is not overwritten with a count read before it).
      const inserted = await self.db.query<Row>(
        `insert into apps (name, spec, app_dir, generation, deleting, created_at, updated_at) values ($1, $2::json, $3, 1, false, $4, $4)
         on conflict (name) do nothing returning name`,
        [a.name, JSON.stringify(a.spec), a.appDir, a.at],
      );
      const prevRow = inserted.rows.length > 0 ? undefined : (await self.db.query<Row>('select * from apps where name = $1 for update', [a.name])).rows[0];
      const prev = prevRow ? toApp(prevRow) : undefined;
      const changed = !prev || JSON.stringify(prev.spec) !== JSON.stringify(a.spec) || prev.appDir !== a.appDir || prev.deleting;
      if (prev && changed) {
        await self.db.query(
          'update apps set spec = $2::json, app_dir = $3, generation = generation + 1, deleting = false, updated_at = $4 where name = $1',
          [a.name, JSON.stringify(a.spec), a.appDir, a.at],
        );
      }
      await self.db.query('select role from roles where app = $1 order by role for update', [a.name]);
      const roles = await self.listRoles(a.name);
      const byName = new Map(roles.map((r) => [r.role, r]));
      for (const role of Object.values(a.spec.roles)) {
        const old = byName.get(role.name);
        const oldSpec = prev?.spec.roles[role.name];
        if (!old) {
          await self.db.query('insert into roles (app, role, desired, pinned) values ($1, $2, $3, false)', [a.name, role.name, role.count]);
        } else {
          // The file's count wins when the file changed it; otherwise a hand-set count stays,
          // clamped into the (possibly new) bounds.
          const fileChanged = !oldSpec || oldSpec.count !== role.count || oldSpec.min !== role.min || oldSpec.max !== role.max;
          const desired = fileChanged && !old.pinned ? role.count : Math.min(role.max, Math.max(role.min, old.desired));
          if (desired !== old.desired) await self.setRoleCount(a.name, role.name, desired, old.pinned);
        }
        byName.delete(role.name);
      }
      for (const gone of byName.keys()) await self.db.query('delete from roles where app = $1 and role = $2', [a.name, gone]);
      const app = await self.getApp(a.name);
      if (!app) throw new Error(`app ${a.name} vanished during putApp`);
      return { app, changed };
    });
  }

  async getApp(name: string): Promise<StoredApp | undefined> {
    const r = await this.db.query<Row>('select * from apps where name = $1', [name]);
    return r.rows[0] ? toApp(r.rows[0]) : undefined;
  }

  async listApps(): Promise<StoredApp[]> {
    return (await this.db.query<Row>('select * from apps order by name')).rows.map(toApp);
  }

  async setAppDeleting(name: string, at: number): Promise<void> {
    await this.db.query('update apps set deleting = true, updated_at = $2 where name = $1', [name, at]);
  }

  async deleteApp(name: string): Promise<void> {
    await this.db.query('delete from apps where name = $1', [name]);
  }

  async listRoles(app: string): Promise<StoredRole[]> {
    const r = await this.db.query<Row>('select * from roles where app = $1 order by role', [app]);
    return r.rows.map((x) => ({
      app: String(x.app), role: String(x.role), desired: num(x.desired), pinned: Boolean(x.pinned), policyState: x.policy_state ?? null, version: num(x.version ?? 0),
    }));
  }

  async setRoleCount(app: string, role: string, desired: number, pinned: boolean, cond: WriteCondition = {}): Promise<boolean> {
    const params: unknown[] = [app, role, desired, pinned];
    let where = 'app = $1 and role = $2';
    if (cond.ifVersion !== undefined) {
      params.push(cond.ifVersion);
      where += ` and version = $${params.length}`;
    }
    const r = await this.db.query<Row>(`update roles set desired = $3, pinned = $4, version = version + 1 where ${where} returning role`, params);
    return r.rows.length > 0;
  }

  async setPolicyState(app: string, role: string, state: unknown): Promise<void> {
    await this.db.query('update roles set policy_state = $3::json where app = $1 and role = $2', [app, role, json(state)]);
  }

  async insertInstance(i: NewInstance): Promise<void> {
    await this.db.query(
      `insert into instances (id, app, role, pool, state, goal, epoch, join_token, ip, port, workdir, provider_ref, role_hash,
         exports, imports_sent, imports_applied, assign_order_id, stop_order_id, drain_order_id, restarts, message, last_exit,
         created_at, started_at, state_since, stop_requested_at, drain_requested_at, destroyed_at, slot, ports)
       values ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12::jsonb,$13,$14::jsonb,$15,$16,$17,$18,$19,$20,$21,$22::jsonb,$23,$24,$25,$26,$27,$28,$29,$30::jsonb)`,
      [
        i.id, i.app, i.role, i.pool, i.state, i.goal, i.epoch, i.joinToken, i.ip, i.port, i.workdir, json(i.providerRef), i.roleHash,
        json(i.exports), i.importsSent, i.importsApplied, i.assignOrderId, i.stopOrderId, i.drainOrderId, i.restarts, i.message, json(i.lastExit),
        i.createdAt, i.startedAt, i.stateSince, i.stopRequestedAt, i.drainRequestedAt, i.destroyedAt, i.slot ?? null, json(i.ports ?? null),
      ],
    );
  }

  async updateInstance(id: string, patch: InstancePatch, cond: WriteCondition = {}): Promise<boolean> {
    const sets: string[] = ['version = version + 1'];
    const params: unknown[] = [id];
    for (const [k, v] of Object.entries(patch)) {
      const col = Object.hasOwn(INSTANCE_COLUMNS, k) ? INSTANCE_COLUMNS[k as keyof InstancePatch] : undefined;
      if (!col || v === undefined) continue;
      params.push(JSON_COLUMNS.has(col) ? json(v) : v);
      sets.push(`${col} = $${params.length}${JSON_COLUMNS.has(col) ? '::jsonb' : ''}`);
    }
    let where = 'id = $1';
    if (cond.ifVersion !== undefined) {
      params.push(cond.ifVersion);
      where += ` and version = $${params.length}`;
    }
    const r = await this.db.query<Row>(`update instances set ${sets.join(', ')} where ${where} returning id`, params);
    return r.rows.length > 0;
  }

  async getInstance(id: string): Promise<InstanceRecord | undefined> {
    const r = await this.db.query<Row>('select * from instances where id = $1', [id]);
    return r.rows[0] ? toInstance(r.rows[0]) : undefined;
  }

  async listInstances(f: InstanceFilter = {}): Promise<InstanceRecord[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (f.app !== undefined) {
      params.push(f.app);
      where.push(`app = $${params.length}`);
    }
    if (f.role !== undefined) {
      params.push(f.role);
      where.push(`role = $${params.length}`);
    }
    if (f.goneSince !== undefined && !f.includeGone) {
      params.push(f.goneSince);
      where.push(`(destroyed_at is null or destroyed_at >= $${params.length})`);
    } else if (!f.includeGone) where.push('destroyed_at is null');
    const sql = `select * from instances ${where.length ? 'where ' + where.join(' and ') : ''} order by created_at, id`;
    return (await this.db.query<Row>(sql, params)).rows.map(toInstance);
  }

  async putOrder(o: Omit<StoredOrder, 'ackedAt'>): Promise<void> {
    await this.db.query(
      'insert into orders (id, instance_id, kind, payload, created_at) values ($1, $2, $3, $4::jsonb, $5) on conflict (id) do nothing',
      [o.id, o.instanceId, o.kind, JSON.stringify(o.payload), o.createdAt],
    );
  }

  async ackOrder(id: string, instanceId: string, at: number): Promise<boolean> {
    const r = await this.db.query<Row>('update orders set acked_at = $3 where id = $1 and instance_id = $2 and acked_at is null returning id', [id, instanceId, at]);
    return r.rows.length > 0;
  }

  async pendingOrders(instanceId: string): Promise<StoredOrder[]> {
    const r = await this.db.query<Row>('select * from orders where instance_id = $1 and acked_at is null order by created_at, id', [instanceId]);
    return r.rows.map((x) => ({
      id: String(x.id),
      instanceId: String(x.instance_id),
      kind: String(x.kind),
      payload: x.payload,
      createdAt: num(x.created_at),
      ackedAt: null,
    }));
  }

  /**
   * An event's id comes from a sequence when it is inserted but is seen by others only once its
   * transaction commits: two appends on two connections can commit in the other order, and a
   * reader following `after` (the last id it saw) would step over the one that came in late.
   * Appends therefore take their id and commit one at a time, under an advisory lock (inside a
   * caller's transaction, until that commits).
   */
  async appendEvent(e: NewEvent): Promise<EventRecord> {
    return this.transaction(async (tx) => {
      const db = (tx as SqlStore).db;
      await db.query('select pg_advisory_xact_lock($1, $2)', [LOCK_CLASS, LOCK_EVENTS]);
      const r = await db.query<Row>(
        'insert into events (at, app, role, instance, kind, message, data) values ($1,$2,$3,$4,$5,$6,$7::jsonb) returning *',
        [e.at, e.app, e.role, e.instance, e.kind, e.message, json(e.data)],
      );
      return toEvent(r.rows[0]!);
    });
  }

  async listEvents(q: { after?: number; app?: string; limit?: number }): Promise<EventRecord[]> {
    const params: unknown[] = [q.after ?? 0];
    let sql = 'select * from events where id > $1';
    if (q.app !== undefined) {
      params.push(q.app);
      sql += ` and app = $${params.length}`;
    }
    params.push(Math.min(Math.max(q.limit ?? 100, 1), 1000));
    // Without `after`, the newest events are wanted (then shown oldest first).
    if (q.after === undefined) {
      sql = `select * from (${sql} order by id desc limit $${params.length}) t order by id`;
    } else {
      sql += ` order by id limit $${params.length}`;
    }
    return (await this.db.query<Row>(sql, params)).rows.map(toEvent);
  }

  async pruneEvents(q: { before?: number; keep?: number }): Promise<number> {
    let deleted = 0;
    if (q.before !== undefined) {
      const r = await this.db.query<Row>('with d as (delete from events where at < $1 returning 1) select count(*) as n from d', [q.before]);
      deleted += num(r.rows[0]?.n ?? 0);
    }
    if (q.keep !== undefined) {
      // Ids only grow, so "all but the newest N" is every id at or below the (N+1)th newest.
      const r = await this.db.query<Row>(
        `with d as (delete from events where id <= (select id from events order by id desc offset $1 limit 1) returning 1)
         select count(*) as n from d`,
        [Math.max(0, Math.floor(q.keep))],
      );
      deleted += num(r.rows[0]?.n ?? 0);
    }
    return deleted;
  }

  async pruneOrders(q: { ackedBefore: number }): Promise<number> {
    const r = await this.db.query<Row>(
      `with d as (
         delete from orders o where o.acked_at < $1
            or (o.acked_at is null and exists (select 1 from instances i where i.id = o.instance_id and i.destroyed_at < $1))
         returning 1)
       select count(*) as n from d`,
      [q.ackedBefore],
    );
    return num(r.rows[0]?.n ?? 0);
  }
  async pruneFleet(q: { before: number }): Promise<{ tokens: number; nodes: number }> {
    const nodes = await this.db.query<Row>(
      `with d as (delete from nodes where state in ('gone', 'revoked') and last_seen_at < $1 returning 1) select count(*) as n from d`,
      [q.before],
    );
    const tokens = await this.db.query<Row>(
      `with d as (
         delete from join_tokens t
          where t.created_at < $1
            and (t.revoked_at < $1 or t.expires_at < $1 or (t.instance_id is not null and t.max_uses is not null and t.uses >= t.max_uses))
            and not exists (select 1 from nodes n where n.token_id = t.id and n.state = 'ready')
         returning 1)
       select count(*) as n from d`,
      [q.before],
    );
    return { tokens: num(tokens.rows[0]?.n ?? 0), nodes: num(nodes.rows[0]?.n ?? 0) };
  }

  // -------------------------------------------------------------------------------------------
  // Tenants

  async createTenant(t: NewTenant, idempotencyKey?: string): Promise<{ tenant: TenantRecord; created: boolean }> {
    const host = t.host === null ? null : t.host.toLowerCase();
    // `on conflict do nothing` covers every unique index (id, name, host, key): a racing twin
    // waits for the first insert to commit or roll back, then finds its row below.
    for (let round = 0; round < 5; round++) {
      const r = await this.db.query<Row>(
        `insert into tenants (id, app, role, name, host, state, reason, pinned, callback_url, email, idempotency_key, attempts, created_at, updated_at)
         values ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9, $10, 0, $11, $11)
         on conflict do nothing returning *`,
        [t.id, t.app, t.role, t.name, host, t.reason ?? null, t.pinned ?? false, t.callbackUrl, t.email, idempotencyKey ?? null, t.createdAt],
      );
      if (r.rows[0]) return { tenant: toTenant(r.rows[0]), created: true };
      if (idempotencyKey !== undefined) {
        const same = await this.db.query<Row>('select * from tenants where app = $1 and idempotency_key = $2', [t.app, idempotencyKey]);
        if (same.rows[0]) return { tenant: toTenant(same.rows[0]), created: false };
      }
      const byName = await this.db.query<Row>(`select id from tenants where app = $1 and name = $2 and state <> 'removed'`, [t.app, t.name]);
      if (byName.rows[0]) throw new TenantConflictError('name', t.name, String(byName.rows[0].id));
      if (host !== null) {
        const byHost = await this.db.query<Row>(`select id from tenants where app = $1 and lower(host) = $2 and state <> 'removed'`, [t.app, host]);
        if (byHost.rows[0]) throw new TenantConflictError('host', host, String(byHost.rows[0].id));
      }
      if (await this.getTenant(t.id)) throw new Error(`tenant id ${t.id} is taken`);
      // The row in the way was removed or rolled back meanwhile: try again.
    }
    throw new Error(`tenant ${t.name}: the insert kept conflicting with rows that went away`);
  }

  async getTenant(id: string): Promise<TenantRecord | undefined> {
    const r = await this.db.query<Row>('select * from tenants where id = $1', [id]);
    return r.rows[0] ? toTenant(r.rows[0]) : undefined;
  }

  async listTenants(f: TenantFilter = {}): Promise<TenantRecord[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    const eq = (col: string, v: unknown) => {
      params.push(v);
      where.push(`${col} = $${params.length}`);
    };
    if (f.app !== undefined) eq('app', f.app);
    if (f.role !== undefined) eq('role', f.role);
    if (f.instanceId !== undefined) eq('instance_id', f.instanceId);
    if (f.state !== undefined) {
      const states: readonly string[] = typeof f.state === 'string' ? [f.state] : f.state;
      if (states.length === 0) return [];
      const marks = states.map((s) => {
        params.push(s);
        return `$${params.length}`;
      });
      where.push(`state in (${marks.join(', ')})`);
    }
    const sql = `select * from tenants ${where.length ? 'where ' + where.join(' and ') : ''} order by seq`;
    return (await this.db.query<Row>(sql, params)).rows.map(toTenant);
  }

  /**
   * Seats are taken only by reserveSeat and reserveMove, under the instance's lock: an update
   * that would put the tenant in a seat-holding state on an instance it holds no seat on (neither
   * its `instanceId` nor its move target) is refused (false), like a failed condition.
   */
  async updateTenant(id: string, patch: TenantPatch, cond: WriteCondition = {}): Promise<boolean> {
    const sets: string[] = ['version = version + 1'];
    const params: unknown[] = [id];
    for (const [k, v] of Object.entries(patch)) {
      const col = Object.hasOwn(TENANT_COLUMNS, k) ? TENANT_COLUMNS[k as keyof TenantPatch] : undefined;
      if (!col || v === undefined) continue;
      const value = col === 'last_output' ? json(v) : col === 'host' && typeof v === 'string' ? v.toLowerCase() : v;
      params.push(value);
      sets.push(`${col} = $${params.length}${col === 'last_output' ? '::jsonb' : ''}`);
    }
    let where = 'id = $1';
    if (patch.instanceId !== undefined && patch.instanceId !== null) {
      params.push(patch.instanceId);
      const inst = `$${params.length}`;
      let state = 'state';
      if (patch.state !== undefined) {
        params.push(patch.state);
        state = `$${params.length}::text`;
      }
      where += ` and (instance_id = ${inst} or target_instance_id = ${inst} or ${state} not in ${SEAT_STATES_SQL})`;
    }
    if (cond.ifVersion !== undefined) {
      params.push(cond.ifVersion);
      where += ` and version = $${params.length}`;
    }
    const r = await this.db.query<Row>(`update tenants set ${sets.join(', ')} where ${where} returning id`, params);
    return r.rows.length > 0;
  }

  /**
   * The seat check and the write happen in one transaction that first locks the instance's row
   * (`select … for update`). Every reservation on that instance queues on the lock, so the
   * count below runs only after the previous holder has committed or rolled back. That is
   * correct on PostgreSQL under READ COMMITTED with any number of connections: each statement
   * there takes a fresh snapshot, so the count sees every seat committed before the lock was
   * granted. (PGlite, one connection, serializes transactions anyway.) A counter column, or
   * `insert … where (select count(*)) < capacity` without the lock, would let two transactions
   * both see 19 of 20 seats taken and both win.
   */
  async reserveSeat(tenantId: string, instanceId: string, capacity: number, at?: number): Promise<boolean> {
    return this.#reserve(tenantId, instanceId, capacity, at, 'place');
  }

  async reserveMove(tenantId: string, targetInstanceId: string, capacity: number, at?: number): Promise<boolean> {
    return this.#reserve(tenantId, targetInstanceId, capacity, at, 'move');
  }

  async #reserve(tenantId: string, instanceId: string, capacity: number, at: number | undefined, kind: 'place' | 'move'): Promise<boolean> {
    return this.transaction(async (tx) => {
      const db = (tx as SqlStore).db;
      // Lock order, always: the instance, then the tenant.
      const inst = (await db.query<Row>('select app, role, state, goal, destroyed_at from instances where id = $1 for update', [instanceId])).rows[0];
      if (!inst) return false;
      const ten = (await db.query<Row>('select app, role, state, instance_id, target_instance_id from tenants where id = $1 for update', [tenantId])).rows[0];
      if (!ten) return false;
      // A repeated order (at-least-once delivery, a controller restarted mid-way): the seat is already its own.
      if (kind === 'place' && ten.instance_id === instanceId && (ten.state === 'placing' || ten.state === 'ready')) return true;
      if (kind === 'move' && ten.target_instance_id === instanceId && ten.state === 'moving') return true;
      if (ten.state !== (kind === 'place' ? 'pending' : 'ready') || ten.app !== inst.app || ten.role !== inst.role) return false;
      if (kind === 'move' && ten.instance_id === instanceId) return false;
      const goal = inst.goal === 'drain' || inst.goal === 'stop' ? inst.goal : 'run';
      if (inst.destroyed_at !== null || seatAvailability(inst.state as InstanceState, goal) === 'closed') return false;
      const used = await db.query<Row>(
        `select count(*) as n from tenants
          where (instance_id = $1 and state in ${SEAT_STATES_SQL}) or (target_instance_id = $1 and state = 'moving')`,
        [instanceId],
      );
      if (num(used.rows[0]?.n ?? 0) >= capacity) return false;
      const r =
        kind === 'place'
          ? await db.query<Row>(
              `update tenants set state = 'placing', instance_id = $2, target_instance_id = null, reason = null, attempts = 0,
                 updated_at = coalesce($3, updated_at), version = version + 1
               where id = $1 and state = 'pending' returning id`,
              [tenantId, instanceId, at ?? null],
            )
          : await db.query<Row>(
              `update tenants set state = 'moving', target_instance_id = $2, updated_at = coalesce($3, updated_at), version = version + 1
               where id = $1 and state = 'ready' returning id`,
              [tenantId, instanceId, at ?? null],
            );
      return r.rows.length > 0;
    });
  }

  async listTenantSeats(app: string): Promise<TenantSeat[]> {
    const r = await this.db.query<Row>(
      `select id, role, host, state, instance_id, target_instance_id from tenants where app = $1 and state in ${SEAT_STATES_SQL} order by seq`,
      [app],
    );
    return r.rows.map((x) => ({
      id: String(x.id),
      role: String(x.role),
      host: strOrNull(x.host),
      state: x.state as TenantState,
      instanceId: strOrNull(x.instance_id),
      targetInstanceId: strOrNull(x.target_instance_id),
    }));
  }

  async seatsUsed(instanceIds: readonly string[]): Promise<Map<string, number>> {
    const out = new Map<string, number>(instanceIds.map((id) => [id, 0]));
    if (instanceIds.length === 0) return out;
    const r = await this.db.query<Row>(
      `select iid, count(*) as n from (
         select instance_id as iid from tenants where instance_id = any($1::text[]) and state in ${SEAT_STATES_SQL}
         union all
         select target_instance_id as iid from tenants where target_instance_id = any($1::text[]) and state = 'moving'
       ) s group by iid`,
      [[...instanceIds]],
    );
    for (const row of r.rows) out.set(String(row.iid), num(row.n));
    return out;
  }

  async appendNotification(n: NewNotification): Promise<NotificationRecord> {
    const r = await this.db.query<Row>(
      `insert into notifications (tenant_id, message_id, kind, event, target, attempt, status, response, at)
       values ($1, $2, $3, $4, $5, $6, $7, $8, $9) returning *`,
      [n.tenantId, n.messageId, n.kind, n.event, n.target, n.attempt, n.status, n.response, n.at],
    );
    return toNotification(r.rows[0]!);
  }

  async listNotifications(tenantId: string): Promise<NotificationRecord[]> {
    const r = await this.db.query<Row>('select * from notifications where tenant_id = $1 order by id', [tenantId]);
    return r.rows.map(toNotification);
  }
  // -------------------------------------------------------------------------------------------
  // Leases: conditional writes on the database's clock, one statement each.

  async acquireLease(name: string, holder: string, ttlMs: number): Promise<Lease | undefined> {
    checkTtl(ttlMs);
    // One statement: a free or expired lease is taken (epoch + 1), the holder's own renewed; a
    // racer that loses waits on the row and then finds it held (the where clause is checked
    // again on the winner's row), so exactly one of them gets it.
    const r = await this.db.query<Row>(
      `insert into leases as l (name, holder, epoch, acquired_at, renewed_at, expires_at)
       select $1, $2, 1, t.now, t.now, t.now + $3 from (select ${DB_NOW_MS} as now) t
       on conflict (name) do update set
         holder = excluded.holder,
         epoch = case when l.holder = excluded.holder and l.expires_at > excluded.renewed_at then l.epoch else l.epoch + 1 end,
         acquired_at = case when l.holder = excluded.holder and l.expires_at > excluded.renewed_at then l.acquired_at else excluded.acquired_at end,
         renewed_at = excluded.renewed_at,
         expires_at = excluded.expires_at
       where l.expires_at <= excluded.renewed_at or l.holder = excluded.holder
       returning l.*, l.renewed_at as now`,
      [name, holder, ttlMs],
    );
    return r.rows[0] ? toLease(r.rows[0]) : undefined;
  }

  async renewLease(name: string, holder: string, epoch: number, ttlMs: number): Promise<Lease | undefined> {
    checkTtl(ttlMs);
    const r = await this.db.query<Row>(
      `update leases set renewed_at = ${DB_NOW_MS}, expires_at = ${DB_NOW_MS} + $4
       where name = $1 and holder = $2 and epoch = $3 and expires_at > ${DB_NOW_MS}
       returning *, renewed_at as now`,
      [name, holder, epoch, ttlMs],
    );
    return r.rows[0] ? toLease(r.rows[0]) : undefined;
  }

  async releaseLease(name: string, holder: string, epoch: number): Promise<boolean> {
    const r = await this.db.query<Row>(
      `update leases set expires_at = ${DB_NOW_MS} where name = $1 and holder = $2 and epoch = $3 and expires_at > ${DB_NOW_MS} returning name`,
      [name, holder, epoch],
    );
    return r.rows.length > 0;
  }

  async assertLease(name: string, holder: string, epoch: number): Promise<void> {
    // `for share`: a concurrent acquire (a standby taking over) waits for this transaction to end.
    const r = await this.db.query<Row>(
      `select name from leases where name = $1 and holder = $2 and epoch = $3 and expires_at > ${DB_NOW_MS} for share`,
      [name, holder, epoch],
    );
    if (r.rows.length === 0) throw new LeaseLostError(name, holder, epoch);
  }

  async getLease(name: string): Promise<Lease | undefined> {
    const r = await this.db.query<Row>(`select *, ${DB_NOW_MS} as now from leases where name = $1`, [name]);
    return r.rows[0] ? toLease(r.rows[0]) : undefined;
  }

  // -------------------------------------------------------------------------------------------
  // Join tokens and nodes (the fleet).

  async createJoinToken(t: Omit<JoinTokenRecord, 'uses' | 'revokedAt' | 'instanceId'> & { readonly instanceId?: string | null }): Promise<void> {
    await this.db.query(
      'insert into join_tokens (id, hash, app, labels, max_uses, expires_at, created_at, instance_id) values ($1, $2, $3, $4, $5, $6, $7, $8)',
      [t.id, t.hash, t.app, json(t.labels), t.maxUses, t.expiresAt, t.createdAt, t.instanceId ?? null],
    );
  }

  async getJoinToken(id: string): Promise<JoinTokenRecord | undefined> {
    const r = await this.db.query<Row>('select * from join_tokens where id = $1', [id]);
    return r.rows[0] ? toJoinToken(r.rows[0]) : undefined;
  }

  async listJoinTokens(): Promise<JoinTokenRecord[]> {
    const r = await this.db.query<Row>('select * from join_tokens order by created_at, id');
    return r.rows.map(toJoinToken);
  }

  async revokeJoinToken(id: string, at: number): Promise<boolean> {
    const r = await this.db.query<Row>('update join_tokens set revoked_at = $2 where id = $1 and revoked_at is null returning id', [id, at]);
    return r.rows.length > 0;
  }

  async useJoinToken(id: string, at: number): Promise<boolean> {
    const r = await this.db.query<Row>(
      `update join_tokens set uses = uses + 1
       where id = $1 and revoked_at is null and (expires_at is null or expires_at > $2) and (max_uses is null or uses < max_uses)
       returning id`,
      [id, at],
    );
    return r.rows.length > 0;
  }

  async insertNode(n: Omit<NodeRecord, 'version' | 'instanceId'> & { readonly instanceId?: string | null }): Promise<void> {
    await this.db.query(
      `insert into nodes (id, app, token_id, hostname, addresses, labels, node_key, state, joined_at, last_seen_at, instance_id)
       values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
      [n.id, n.app, n.tokenId, n.hostname, json(n.addresses), json(n.labels), n.nodeKey, n.state, n.joinedAt, n.lastSeenAt, n.instanceId ?? null],
    );
  }

  async updateNode(id: string, patch: NodePatch): Promise<boolean> {
    const cols: string[] = [];
    const vals: unknown[] = [id];
    const set = (col: string, v: unknown) => {
      vals.push(v);
      cols.push(`${col} = $${vals.length}`);
    };
    if (patch.addresses !== undefined) set('addresses', json(patch.addresses));
    if (patch.labels !== undefined) set('labels', json(patch.labels));
    if (patch.state !== undefined) set('state', patch.state);
    if (patch.lastSeenAt !== undefined) set('last_seen_at', patch.lastSeenAt);
    cols.push('version = version + 1');
    const r = await this.db.query<Row>(`update nodes set ${cols.join(', ')} where id = $1 returning id`, vals);
    return r.rows.length > 0;
  }

  async getNode(id: string): Promise<NodeRecord | undefined> {
    const r = await this.db.query<Row>('select * from nodes where id = $1', [id]);
    return r.rows[0] ? toNode(r.rows[0]) : undefined;
  }

  async listNodes(filter: { app?: string } = {}): Promise<NodeRecord[]> {
    const r = filter.app !== undefined
      ? await this.db.query<Row>('select * from nodes where app = $1 order by joined_at, id', [filter.app])
      : await this.db.query<Row>('select * from nodes order by joined_at, id');
    return r.rows.map(toNode);
  }
}
