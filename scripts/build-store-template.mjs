// Makes dist/store-template/: an empty embedded store (PGlite data folder) with drover's
// migrations applied, copied by a controller's first start on a new data folder instead of
// running initdb there (seconds). Run by `npm run build`, after tsc (it opens the store through
// dist/, so the template has exactly the migrations of this build).
import { chmodSync, cpSync, mkdtempSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { PGlite } from '@electric-sql/pglite';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const out = join(root, 'dist/store-template');
// Made from scratch, never seeded from the template of an earlier build.
rmSync(out, { recursive: true, force: true });
// Nor opened by an earlier build's store thread: the store starts its thread from
// dist/cli/store-worker.cjs when there is one (PGlite's JavaScript inside), which build-cli.mjs
// makes after this script; until then the thread runs tsc's fresh modules.
for (const f of ['store-worker.cjs', 'store-worker.cjs.cache']) rmSync(join(root, 'dist/cli', f), { force: true });
const { openPgliteStore } = await import(join(root, 'dist/adapters/store/index.js'));
const work = mkdtempSync(join(tmpdir(), 'drover-store-template-'));
try {
  const dir = join(work, 'db');
  const store = await openPgliteStore(dir);
  await store.close();
  await writeArrayTypes(dir);
  await slim(dir);
  cpSync(dir, `${out}.tmp`, { recursive: true });
  // An empty database, nothing secret: readable by whoever runs drover (a copy is made private).
  readable(`${out}.tmp`);
  // Whole or not at all: a build stopped halfway leaves no half template behind.
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
 *
 * Nor the free space maps and visibility maps of the database's tables (`<relfilenode>_fsm`,
 * `_vm`: 84 of its 431 files; a new store's copy makes every file, which costs more than their
 * bytes). PostgreSQL treats a missing map as an empty one and makes it when it first needs it,
 * as for any new table: the only difference is that a page already all-visible is not known as
 * such until the next VACUUM, so an index-only scan reads that page.
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
  for (const top of ['base', 'global']) for (const f of readdirSync(join(dir, top), { recursive: true })) if (/_(fsm|vm)$/.test(f)) rmSync(join(dir, top, f));
}

/**
 * dist/store-array-types.json: PostgreSQL's own array types, which PGlite otherwise queries at
 * every start (src/adapters/store/pglite-array-types.ts), with the sizes of the PGlite files they
 * were read with.
 */
async function writeArrayTypes(dir) {
  const { ARRAY_TYPES_FILE, ARRAY_TYPES_SQL, parseArrayTypes } = await import(join(root, 'dist/adapters/store/pglite-array-types.js'));
  const base = import.meta.resolve('@electric-sql/pglite');
  const size = (name) => statSync(fileURLToPath(new URL(name, base))).size;
  const db = await PGlite.create(dir);
  let pairs;
  try {
    pairs = (await db.query(ARRAY_TYPES_SQL)).rows.map((r) => [r.elem, r.arr]);
  } finally {
    await db.close();
  }
  const text = JSON.stringify({ wasmBytes: size('./pglite.wasm'), dataBytes: size('./pglite.data'), pairs });
  if (!parseArrayTypes(text)) throw new Error('the array types read from PGlite are not well-formed');
  writeFileSync(`${ARRAY_TYPES_FILE}.tmp`, text);
  chmodSync(`${ARRAY_TYPES_FILE}.tmp`, 0o644);
  renameSync(`${ARRAY_TYPES_FILE}.tmp`, ARRAY_TYPES_FILE);
}

function readable(path) {
  const dir = statSync(path).isDirectory();
  chmodSync(path, dir ? 0o755 : 0o644);
  if (dir) for (const e of readdirSync(path)) readable(join(path, e));
}
