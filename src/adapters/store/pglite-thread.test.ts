import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openPgliteThread } from './pglite-thread.js';

void test('PGlite in its own thread: a transaction holds the database until it ends, a failing one rolls back, PostgreSQL errors keep their fields', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-pglite-thread-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const db = await openPgliteThread(join(dir, 'db'));
  try {
    await db.exec('CREATE TABLE t (k int PRIMARY KEY, at timestamptz, doc jsonb)');
    // Types survive the trip both ways.
    const at = new Date('2026-11-30T06:00:00.000Z');
    await db.query('INSERT INTO t VALUES ($1, $2, $3)', [1, at, JSON.stringify({ a: [1, 'x'] })]);
    assert.deepEqual((await db.query<{ k: number; at: Date; doc: unknown }>('SELECT * FROM t')).rows, [{ k: 1, at, doc: { a: [1, 'x'] } }]);

    // The store runs in UTC; the rest of the time zone database is left out of PGlite's files (pglite-durable.ts).
    assert.equal((await db.query<{ tz: string }>("SELECT current_setting('TimeZone') AS tz")).rows[0]!.tz, 'UTC');
    await db.exec("SET TIME ZONE 'Etc/UTC'");
    assert.equal((await db.query<{ t: string }>("SELECT ($1::timestamptz AT TIME ZONE 'UTC')::text AS t", [at])).rows[0]!.t, '2026-11-30 06:00:00');
    await assert.rejects(db.query("SELECT now() AT TIME ZONE 'Europe/Paris'"), /time zone "Europe\/Paris" not recognized/);

    // While a transaction is open, a statement from outside waits for its end and does not see inside it.
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const order: string[] = [];
    const tx = db.transaction(async (q) => {
      await q.query('INSERT INTO t (k) VALUES (2)');
      order.push('tx wrote');
      await gate;
      await q.query('INSERT INTO t (k) VALUES (3)');
      order.push('tx done');
    });
    await new Promise((r) => setTimeout(r, 50));
    const outside = db.query<{ n: number }>('SELECT count(*)::int AS n FROM t').then((r) => {
      order.push('outside');
      return r.rows[0]!.n;
    });
    await new Promise((r) => setTimeout(r, 50));
    release();
    await tx;
    assert.equal(await outside, 3);
    assert.deepEqual(order, ['tx wrote', 'tx done', 'outside']);

    // A transaction that throws leaves nothing behind; the error is the caller's.
    await assert.rejects(
      db.transaction(async (q) => {
        await q.query('INSERT INTO t (k) VALUES (4)');
        throw new Error('changed my mind');
      }),
      /changed my mind/,
    );
    assert.equal((await db.query<{ n: number }>('SELECT count(*)::int AS n FROM t WHERE k = 4')).rows[0]!.n, 0);

    // A PostgreSQL error, with its SQLSTATE.
    await assert.rejects(db.query('INSERT INTO t (k) VALUES (1)'), (err: Error & { code?: string }) => err.code === '23505' && /duplicate key/.test(err.message));
    // Arrays both ways: their types are known without PGlite's start-up query (pglite-array-types.ts).
    const arrays = await db.query<{ t: string[]; i: number[]; n: number }>("SELECT $1::text[] AS t, '{1,2,3}'::int[] AS i, cardinality($1::text[]) AS n", [['a', 'b,c', 'd"e', '']]);
    assert.deepEqual(arrays.rows, [{ t: ['a', 'b,c', 'd"e', ''], i: [1, 2, 3], n: 4 }]);
    // Many at once, in order.
    const many = await Promise.all(Array.from({ length: 50 }, (_, i) => db.query<{ v: number }>('SELECT $1::int AS v', [i])));
    assert.deepEqual(many.map((r) => r.rows[0]!.v), Array.from({ length: 50 }, (_, i) => i));
  } finally {
    await db.close();
  }
  await assert.rejects(db.query('SELECT 1'), /stopped/);
});

void test('PGlite in its own thread: a folder it cannot use is refused with PGlite\'s reason, and no thread is left', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-pglite-thread-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const { writeFileSync } = await import('node:fs');
  writeFileSync(join(dir, 'file'), '');
  await assert.rejects(openPgliteThread(join(dir, 'file', 'db')));
});
