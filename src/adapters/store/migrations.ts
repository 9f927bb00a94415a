/**
 * Schema migrations, applied in order; a start applies all that are pending in one transaction,
 * under an advisory lock (SqlStore.open). Append only: a released
 * migration never changes. Times are epoch milliseconds (bigint) so both PGlite and PostgreSQL
 * return plain numbers without time-zone surprises.
 */
export const MIGRATIONS: readonly { readonly id: number; readonly name: string; readonly sql: string }[] = [
  {
    id: 1,
    name: 'initial',
    sql: `
      create table apps (
        name text primary key,
        spec json not null, -- json, not jsonb: keeps the order roles were written in
        app_dir text not null,
        generation integer not null default 1,
        deleting boolean not null default false,
        created_at bigint not null,
        updated_at bigint not null
      );
      create table roles (
        app text not null references apps(name) on delete cascade,
        role text not null,
        desired integer not null,
        pinned boolean not null default false,
        -- the autoscaler's memory (stabilization windows, cooldowns), so a restart keeps it
        policy_state json,
        primary key (app, role)
      );
      create table instances (
        id text primary key,
        app text not null,
        role text, -- null: a warm spare
        pool text, -- for a spare: the role it is kept for, or '*'
        state text not null,
        goal text not null,
        epoch integer not null,
        join_token text not null,
        ip text not null,
        port integer not null,
        workdir text not null,
        provider_ref jsonb,
        role_hash text not null,
        exports jsonb,
        imports_sent text,
        imports_applied text,
        assign_order_id text,
        stop_order_id text,
        drain_order_id text,
        restarts integer not null default 0,
        message text,
        last_exit jsonb,
        created_at bigint not null,
        started_at bigint,
        state_since bigint not null,
        stop_requested_at bigint,
        drain_requested_at bigint,
        destroyed_at bigint
      );
      create index instances_live on instances (app, role) where destroyed_at is null;
      create table orders (
        id text primary key,
        instance_id text not null,
        kind text not null,
        payload jsonb not null,
        created_at bigint not null,
        acked_at bigint
      );
      create index orders_pending on orders (instance_id) where acked_at is null;
      create table events (
        id bigserial primary key,
        at bigint not null,
        app text,
        role text,
        instance text,
        kind text not null,
        message text not null,
        data jsonb
      );
      create index events_app on events (app, id);
    `,
  },
  {
    id: 2,
    name: 'retention indexes',
    // Retention deletes by age: events by time, orders by acknowledgement time.
    sql: `
      create index events_at on events (at);
      create index orders_acked on orders (acked_at) where acked_at is not null;
    `,
  },
  {
    id: 3,
    name: 'row versions for conditional writes',
    sql: `
      alter table instances add column version bigint not null default 0;
      alter table roles add column version bigint not null default 0;
    `,
  },
  {
    id: 4,
    name: 'tenants and notification attempts',
    // Seats are counted, not stored: a tenant holds a seat on instance_id while placing, ready,
    // moving or removing, and on target_instance_id while moving. reserveSeat counts them under a
    // row lock on the instance, so no counter can drift from the tenants themselves.
    sql: `
      create table tenants (
        id text primary key,
        seq bigserial not null, -- arrival order
        app text not null,
        role text not null,
        name text not null,
        host text,
        state text not null check (state in ('pending', 'placing', 'ready', 'failed', 'removing', 'moving', 'removed')),
        instance_id text,
        target_instance_id text,
        reason text,
        pinned boolean not null default false,
        callback_url text,
        email text,
        idempotency_key text,
        attempts integer not null default 0,
        last_output jsonb,
        created_at bigint not null,
        updated_at bigint not null,
        version bigint not null default 0
      );
      -- Names and hosts are unique among the tenants of an app that are not removed; a key for ever.
      create unique index tenants_name on tenants (app, name) where state <> 'removed';
      create unique index tenants_host on tenants (app, lower(host)) where host is not null and state <> 'removed';
      create unique index tenants_idempotency_key on tenants (app, idempotency_key) where idempotency_key is not null;
      create index tenants_instance on tenants (instance_id) where instance_id is not null;
      create index tenants_target on tenants (target_instance_id) where target_instance_id is not null;
      create index tenants_app_state on tenants (app, role, state, seq);
      create table notifications (
        id bigserial primary key,
        tenant_id text not null references tenants(id) on delete cascade,
        message_id text not null,
        kind text not null,
        event text not null,
        target text not null,
        attempt integer not null,
        status text not null,
        response text,
        at bigint not null
      );
      create index notifications_tenant on notifications (tenant_id, id);
    `,
  },
  {
    id: 5,
    name: 'leases',
    // A named lease on the database's clock (Store.acquireLease): one holder at a time, until
    // expires_at. A released lease is expired, not deleted, so its epoch never goes back.
    sql: `
      create table leases (
        name text primary key,
        holder text not null,
        epoch bigint not null, -- fencing token: grows each time the lease changes hands
        acquired_at bigint not null,
        renewed_at bigint not null,
        expires_at bigint not null
      );
    `,
  },
  {
    id: 6,
    name: 'fleet',
    // Join tokens (only their sha256 is kept) and the hosts that joined with them (docs/fleet.md).
    sql: `
      create table join_tokens (
        id text primary key,
        hash text not null,
        app text not null,
        labels json,
        max_uses integer, -- null: any number
        uses integer not null default 0,
        expires_at bigint, -- null: never
        revoked_at bigint,
        created_at bigint not null
      );
      create table nodes (
        id text primary key,
        app text not null,
        token_id text not null,
        hostname text not null,
        addresses json not null,
        labels json not null,
        node_key text not null,
        state text not null check (state in ('ready', 'gone', 'revoked')),
        joined_at bigint not null,
        last_seen_at bigint not null,
        version bigint not null default 0
      );
      create index nodes_app on nodes (app);
    `,
  },
  {
    id: 7,
    name: 'member-slots-and-ports',
    // slot: the member slot an instance holds (`db-0`), which names its volumes; null for roles
    // without volumes and for spares. ports: every port of the role's `ports:` by number, as
    // the agent chose its extra auto ports.
    sql: `
      alter table instances add column slot integer;
      alter table instances add column ports jsonb;
    `,
  },
  {
    id: 8,
    name: 'instance-bound-join-tokens',
    // A join token made for one cloud machine (docs/cloud.md): the node that joins with it runs
    // that instance and no other; null for the tokens of `drover token create`.
    sql: `
      alter table join_tokens add column instance_id text;
      alter table nodes add column instance_id text;
    `,
  },
];
