/**
 * PGlite in a folder: durability across a restart, private files, damaged files. The conformance
 * suite every store passes (PGlite and PostgreSQL) is test/store-conformance.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { lstatSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAppFile } from '../../core/index.js';
import { openPgliteStore, StoreOpenError } from './pglite.js';
import type { NewInstance } from './types.js';
import type { SqlClient } from './sql.js';

const spec = parseAppFile(`
app: shop
roles:
  web:
    count: 2
    start: web
  db:
    min: 1
    max: 3
    start: db
`);

const rec = (id: string, over: Partial<NewInstance> = {}): NewInstance => ({
  id, app: 'shop', role: 'web', pool: null, state: 'provisioning', goal: 'run', epoch: 1, joinToken: 't', ip: '127.0.0.1', port: 1000,
  workdir: '/tmp/x', providerRef: { pid: 1 }, roleHash: 'h', exports: null, importsSent: null, importsApplied: null,
  assignOrderId: null, stopOrderId: null, drainOrderId: null, restarts: 0, message: null, lastExit: null, createdAt: 1, startedAt: null,
  stateSince: 1, stopRequestedAt: null, drainRequestedAt: null, destroyedAt: null, ...over,
});

test('pglite (folder): state survives a restart; migrations run once', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-store-'));
  try {
    const a = await openPgliteStore(join(dir, 'db'));
    await a.putApp({ name: 'shop', spec, appDir: '/a', at: 10 });
    await a.insertInstance(rec('i-1'));
    await a.close();
    const b = await openPgliteStore(join(dir, 'db'));
    assert.equal((await b.getApp('shop'))?.name, 'shop');
    assert.equal((await b.getInstance('i-1'))?.id, 'i-1');
    await b.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('pglite (folder): its files are private (0600, folders 0700), WAL included, after writes', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-store-'));
  const umask = process.umask(0o077);
  try {
    const s = await openPgliteStore(join(dir, 'db'));
    for (let k = 0; k < 200; k++) await s.appendEvent({ at: k, app: null, role: null, instance: null, kind: 'app.apply', message: `m${k}`.repeat(50), data: null });
    const open: string[] = [];
    const walk = (p: string) => {
      const st = lstatSync(p);
      if ((st.mode & 0o077) !== 0) open.push(`${p} ${(st.mode & 0o777).toString(8)}`);
      if (st.isDirectory()) for (const e of readdirSync(p)) walk(join(p, e));
    };
    walk(join(dir, 'db'));
    assert.ok(readdirSync(join(dir, 'db', 'pg_wal')).some((f) => /^[0-9A-F]{24}$/.test(f)), 'a WAL segment exists');
    assert.deepEqual(open, [], 'no file or folder open to group or others');
    await s.close();
  } finally {
    process.umask(umask);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('pglite (folder): damaged files give a StoreOpenError naming the folder', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-store-'));
  try {
    const a = await openPgliteStore(join(dir, 'db'));
    await a.putApp({ name: 'shop', spec, appDir: '/a', at: 10 });
    await a.close();
    for (const f of [join(dir, 'db', 'global', 'pg_control'), ...readdirSync(join(dir, 'db', 'pg_wal')).filter((f) => /^[0-9A-F]{24}$/.test(f)).map((f) => join(dir, 'db', 'pg_wal', f))]) {
      writeFileSync(f, randomBytes(8192));
    }
    await assert.rejects(openPgliteStore(join(dir, 'db')), (err: unknown) => {
      assert.ok(err instanceof StoreOpenError);
      assert.ok(err.message.startsWith(`the store in ${join(dir, 'db')} cannot be opened`), err.message);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('opening a store whose migrations are all applied is one read; a missing one takes the lock and applies it', async () => {
  const { PGlite } = await import('@electric-sql/pglite');
  const { SqlStore } = await import('./sql.js');
  const pg = new PGlite();
  const seen: string[] = [];
  let hide: number | undefined;
  /** A client over `db` that records each statement, and hides one migration from the table's next read. */
  const recording = (db: Pick<typeof pg, 'query' | 'exec'>): SqlClient => ({
    async query<T>(sql: string, params: readonly unknown[] = []) {
      seen.push(sql);
      const rows = (await db.query<T>(sql, params as unknown[])).rows;
      if (sql !== 'select id from drover_migrations' || hide === undefined) return { rows };
      const hidden = hide;
      hide = undefined; // once: the locked path reads the table as it is
      return { rows: rows.filter((r) => (r as { id: number }).id !== hidden) };
    },
    async exec(sql: string) {
      seen.push(sql);
      await db.exec(sql);
    },
    transaction: (fn) => pg.transaction((tx) => fn(recording(tx))),
    close: () => pg.close(),
  });
  const db = recording(pg);
  try {
    await SqlStore.open(db);
    assert.ok(seen.some((s) => s.startsWith('select pg_advisory_xact_lock')), 'a new database is migrated under the lock');
    const ids = (await pg.query<{ id: number }>('select id from drover_migrations order by id')).rows.map((r) => r.id);
    assert.ok(ids.length > 5);
    seen.length = 0;
    await SqlStore.open(db);
    assert.deepEqual(seen, ['select id from drover_migrations'], 'migrated: one read');
    seen.length = 0;
    hide = ids[ids.length - 1];
    await SqlStore.open(db);
    assert.ok(seen.some((s) => s.startsWith('select pg_advisory_xact_lock')), 'a migration missing: the locked path');
    assert.equal(seen.filter((s) => s === 'select id from drover_migrations').length, 2, 'read again under the lock');
  } finally {
    await pg.close();
  }
});
