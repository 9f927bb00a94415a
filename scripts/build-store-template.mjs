// Makes dist/store-template/: an empty embedded store (PGlite data folder) with drover's
// migrations applied, copied by a controller's first start on a new data folder instead of
// running initdb there (seconds). Run by `npm run build`, after tsc (it opens the store through
// dist/, so the template has exactly the migrations of this build).
import { chmodSync, cpSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { PGlite } from '@electric-sql/pglite';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const out = join(root, 'dist/store-template');
// Made from scratch, never seeded from the template of an earlier build.
rmSync(out, { recursive: true, force: true });
const { openPgliteStore } = await import(join(root, 'dist/adapters/store/index.js'));
const work = mkdtempSync(join(tmpdir(), 'drover-store-template-'));
try {
  const dir = join(work, 'db');
  const store = await openPgliteStore(dir);
  await store.close();
  await slim(dir);
  cpSync(dir, `${out}.tmp`, { recursive: true });
  // An empty database, nothing secret: readable by whoever runs drover (a copy is made private).
  readable(`${out}.tmp`);
  // Whole or not at all: a build stopped halfway leaves no half template behind.
  const { renameSync } = await import('node:fs');
  // Another build may have made one meanwhile (the same content): this one replaces it.
  rmSync(out, { recursive: true, force: true });
  renameSync(`${out}.tmp`, out);
} finally {
  rmSync(work, { recursive: true, force: true });
  rmSync(`${out}.tmp`, { recursive: true, force: true });
}

/**
 * What a new store does not need, left out of the template: the databases template0 and
 * template1 (only CREATE DATABASE copies them; drover's store is the database "postgres", the
 * only one PGlite opens) and the write-ahead log written by initdb and the migrations. After a
 * switch to a new segment and a clean shutdown, the segment holding the last checkpoint is all
 * PostgreSQL reads; the others are deleted (it makes new ones as it needs them). That segment is
 * nearly all zeros, which the copy leaves as a hole (src/adapters/store/pglite-copy.ts).
 */
async function slim(dir) {
  const db = await PGlite.create(dir);
  let current;
  try {
    await db.exec("update pg_database set datistemplate = false where datname in ('template0', 'template1')");
    await db.exec('drop database template0');
    await db.exec('drop database template1');
    await db.query('select pg_switch_wal()');
    await db.exec('checkpoint');
    current = (await db.query('select pg_walfile_name(pg_current_wal_insert_lsn()) as f')).rows[0].f;
  } finally {
    await db.close();
  }
  for (const f of readdirSync(join(dir, 'pg_wal'))) if (/^[0-9A-F]{24}$/.test(f) && f !== current) rmSync(join(dir, 'pg_wal', f));
}

function readable(path) {
  const dir = statSync(path).isDirectory();
  chmodSync(path, dir ? 0o755 : 0o644);
  if (dir) for (const e of readdirSync(path)) readable(join(path, e));
}
