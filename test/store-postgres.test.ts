/**
 * The store conformance suite (test/store-conformance.ts, also run against PGlite) against
 * PostgreSQL: a private server started here (initdb in a temp folder, a free loopback port), a
 * fresh database per test, real connections racing. Then what is PostgreSQL's own: migrations
 * under a lock when controllers start at once, reopening, and connection errors that name the
 * server but never the password.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { freePort } from '../src/adapters/providers/index.js';
import {
  checkPostgresUrl, openPostgresStore, redactStoreUrl, StoreUnavailableError, StoreUrlError, type Store,
} from '../src/adapters/store/index.js';
import { postgresSkip, startPostgres, type PrivatePostgres } from './postgres.js';
import { storeConformance } from './store-conformance.js';

const skip = postgresSkip();
let server: PrivatePostgres | undefined;
const pgServer = (): PrivatePostgres => {
  if (!server) throw new Error('the private PostgreSQL server did not start (see the first failure)');
  return server;
};

before(async () => {
  if (skip === false) server = await startPostgres();
});
after(async () => {
  await server?.stop();
});

if (skip !== false) {
  test('postgres: the conformance suite', { skip }, () => {});
} else {
  // Enough connections that racing writers really run side by side.
  storeConformance('postgres', async () => ({ store: await openPostgresStore({ url: await pgServer().createDatabase(), poolSize: 40 }), cleanup: () => {} }), {
    manyConnections: true,
  });

  test('postgres: controllers starting at once on a fresh database migrate it once', async () => {
    const url = await pgServer().createDatabase();
    const stores = await Promise.all(Array.from({ length: 5 }, () => openPostgresStore(url)));
    try {
      const db = new pg.Client({ connectionString: url });
      await db.connect();
      try {
        const r = await db.query<{ id: number; n: string }>('select id, count(*) as n from drover_migrations group by id order by id');
        assert.ok(r.rows.length >= 4);
        assert.ok(r.rows.every((x) => x.n === '1'), 'each migration recorded once');
      } finally {
        await db.end();
      }
      // All five work on the one schema.
      await stores[0]!.appendEvent({ at: 1, app: null, role: null, instance: null, kind: 'app.apply', message: 'from 0', data: null });
      assert.deepEqual((await stores[4]!.listEvents({})).map((e) => e.message), ['from 0']);
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
  });

  test('postgres: state survives closing and reopening; migrations do not run again', async () => {
    const url = await pgServer().createDatabase();
    const a = await openPostgresStore(url);
    await a.putApp({
      name: 'shop', spec: { app: 'shop', roles: {} } as unknown as Parameters<Store['putApp']>[0]['spec'], appDir: '/a', at: 1_764_457_000_000,
    });
    await a.close();
    const db = new pg.Client({ connectionString: url });
    await db.connect();
    const before = (await db.query<{ applied_at: string }>('select applied_at from drover_migrations order by id')).rows;
    const b = await openPostgresStore(url);
    try {
      assert.equal((await b.getApp('shop'))?.createdAt, 1_764_457_000_000);
      assert.deepEqual((await db.query<{ applied_at: string }>('select applied_at from drover_migrations order by id')).rows, before);
    } finally {
      await b.close();
      await db.end();
    }
  });

  test('postgres: a wrong password, a closed port or a missing database: a clear error naming the URL, never the password', async () => {
    const s = pgServer();
    const wrongPw = s.url('postgres', 'not-the-password-x7');
    await assert.rejects(openPostgresStore(wrongPw), (err: unknown) => {
      assert.ok(err instanceof StoreUnavailableError, String(err));
      assert.match(err.message, new RegExp(`^the PostgreSQL store at postgres://drover:\\*\\*\\*@127\\.0\\.0\\.1:${s.port}/postgres cannot be opened: .*password authentication failed`));
      assert.ok(!err.message.includes('not-the-password-x7') && !err.url.includes('not-the-password-x7'));
      return true;
    });
    const closed = await freePort();
    await assert.rejects(openPostgresStore(`postgresql://drover:${s.password}@127.0.0.1:${closed}/x`), (err: unknown) => {
      assert.ok(err instanceof StoreUnavailableError);
      assert.match(err.message, /ECONNREFUSED/);
      assert.ok(!err.message.includes(s.password));
      return true;
    });
    await assert.rejects(openPostgresStore(s.url('no_such_db')), /database "no_such_db" does not exist/);
  });
}

test('store URLs: postgres:// and postgresql:// are checked; the password never shows', () => {
  for (const ok of [
    'postgres://u:p@db.example.test:5432/drover',
    'postgresql://u@10.0.0.5/drover?sslmode=verify-full&sslrootcert=/etc/ca.pem',
    'postgres:///drover?host=/run/postgresql',
    'postgres://u:p%40ss@[::1]:6432/d',
  ]) {
    assert.doesNotThrow(() => checkPostgresUrl(ok), ok);
  }
  const bad: [string, RegExp][] = [
    ['mysql://u:secret@h/d', /^mysql:\/\/u:\*\*\*@h\/d: expected a postgres:\/\/ or postgresql:\/\/ URL/],
    ['postgres://u:secret@h:99999/d', /not a valid URL|out of range/],
    ['postgres://u:secret@h/d?sslmode=maybe', /sslmode=maybe is not one of/],
    ['/var/run/postgresql', /expected a postgres:\/\//],
  ];
  for (const [url, why] of bad) {
    assert.throws(() => checkPostgresUrl(url), (err: unknown) => {
      assert.ok(err instanceof StoreUrlError);
      assert.match(err.message, why);
      assert.ok(!err.message.includes('secret'), err.message);
      return true;
    });
  }
  assert.equal(redactStoreUrl('postgres://u:secret@h:5432/d?password=secret2&sslmode=require'), 'postgres://u:***@h:5432/d?password=***&sslmode=require');
  assert.ok(!redactStoreUrl('postgres://u:se cret@h/%zz').includes('se cret'));
});
