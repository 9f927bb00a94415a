/**
 * Schema migrations, applied in order inside one transaction each. Append only: a released
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
];
