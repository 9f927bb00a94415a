import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openPgliteStore } from './index.js';
import { dropStoreSeeds, seedStore, storeTemplate, STORE_TEMPLATE_DIR } from './pglite-template.js';
import { copyStoreTree, syncCopy, usedLength } from './pglite-copy.js';

void test('a new store folder is seeded from the template, whole or not at all, and synced; an existing store never is', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-tpl-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const template = join(dir, 'template');
  mkdirSync(join(template, 'base'), { recursive: true });
  writeFileSync(join(template, 'PG_VERSION'), '17\n');
  writeFileSync(join(template, 'base', 'x'), 'template');
  const data = join(dir, 'data');
  mkdirSync(data);
  // Left by a process killed while copying: gone at the next start.
  mkdirSync(join(data, 'db.seed-99999999-dead'));
  const synced = seedStore(join(data, 'db'), template);
  assert.ok(synced, 'seeded');
  await synced;
  assert.equal(readFileSync(join(data, 'db', 'base', 'x'), 'utf8'), 'template');
  assert.deepEqual(readdirSync(data), ['db'], 'the copy renamed into place, the dead one removed');
  assert.equal(statSync(join(data, 'db')).mode & 0o777, 0o700);
  assert.equal(statSync(join(data, 'db', 'base', 'x')).mode & 0o777, 0o600);
  // An empty folder (made by the data folder's setup) is new too.
  mkdirSync(join(data, 'empty'));
  await seedStore(join(data, 'empty'), template);
  assert.equal(readFileSync(join(data, 'empty', 'base', 'x'), 'utf8'), 'template');
  // A store already there is left alone.
  mkdirSync(join(data, 'used'));
  writeFileSync(join(data, 'used', 'PG_VERSION'), 'mine');
  assert.equal(seedStore(join(data, 'used'), template), undefined);
  assert.equal(readFileSync(join(data, 'used', 'PG_VERSION'), 'utf8'), 'mine');
  // No template, or turned off: PGlite makes the folder itself.
  assert.equal(seedStore(join(data, 'none'), join(dir, 'no-template')), undefined);
  assert.equal(seedStore(join(data, 'off'), storeTemplate({ DROVER_STORE_TEMPLATE: 'off' })), undefined);
  assert.equal(storeTemplate({}), STORE_TEMPLATE_DIR);
  // A template that cannot be copied leaves nothing half-made behind.
  symlinkSync('/etc/hostname', join(template, 'base', 'link'));
  const opened = readdirSync('/proc/self/fd').length;
  assert.equal(seedStore(join(data, 'bad'), template), undefined);
  assert.equal(readdirSync('/proc/self/fd').length, opened, 'the files copied before the failure are closed');
  assert.deepEqual(readdirSync(data).sort(), ['db', 'empty', 'used']);
  // This process leaving while its store's thread copies: its copies go.
  mkdirSync(join(data, `gone.seed-${process.pid}-abcd`));
  dropStoreSeeds(join(data, 'gone'));
  assert.deepEqual(readdirSync(data).sort(), ['db', 'empty', 'used']);
});

void test('the copy is sparse where a file ends in zero pages, and reads the same', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-tpl-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const from = join(dir, 'from');
  mkdirSync(join(from, 'pg_wal'), { recursive: true });
  const wal = Buffer.alloc(16 << 20);
  wal.write('a checkpoint record', 100);
  wal[3 * 8192 + 5] = 7;
  writeFileSync(join(from, 'pg_wal', 'seg'), wal);
  writeFileSync(join(from, 'small'), 'x');
  writeFileSync(join(from, 'empty'), '');
  writeFileSync(join(from, 'zeros'), Buffer.alloc(10_000));
  const copied = copyStoreTree(from, join(dir, 'to'));
  assert.equal(copied.files.length, 4, 'each file copied, still open for its sync');
  assert.deepEqual(copied.folders, ['', 'pg_wal']);
  await syncCopy(copied, join(dir, 'to'), [dir]);
  assert.equal(copied.files.length, 0, 'closed once synced');
  for (const f of ['pg_wal/seg', 'small', 'empty', 'zeros']) assert.ok(readFileSync(join(dir, 'to', f)).equals(readFileSync(join(from, f))), f);
  // Four pages written of 2048; the rest a hole (where the file system has holes).
  assert.ok(statSync(join(dir, 'to', 'pg_wal', 'seg')).blocks * 512 < 1 << 20, 'the zero tail is not written');
  assert.equal(usedLength(wal), 4 * 8192);
  assert.equal(usedLength(Buffer.alloc(10_000)), 0);
  assert.equal(usedLength(Buffer.from('abc')), 3);
  assert.throws(() => copyStoreTree(from, join(dir, 'to')), /EEXIST/);
});

void test("the build's template opens as an empty, private store", { skip: !existsSync(join(STORE_TEMPLATE_DIR, 'PG_VERSION')) && !process.env.CI && 'no dist/store-template (run npm run build)' }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-tpl-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const store = await openPgliteStore(join(dir, 'db'));
  try {
    assert.deepEqual(await store.listApps(), []);
    assert.equal(statSync(join(dir, 'db', 'PG_VERSION')).mode & 0o077, 0, 'files made private');
    // Slimmed at build: one database ("postgres"), one log segment.
    assert.deepEqual(readdirSync(join(STORE_TEMPLATE_DIR, 'base')), ['5']);
    assert.equal(readdirSync(join(STORE_TEMPLATE_DIR, 'pg_wal')).filter((f) => /^[0-9A-F]{24}$/.test(f)).length, 1);
    // No free space or visibility maps (PostgreSQL makes them when it needs them).
    assert.deepEqual(readdirSync(join(STORE_TEMPLATE_DIR, 'base', '5')).filter((f) => /_(fsm|vm)$/.test(f)), []);
  } finally {
    await store.close();
  }
  // Which it does: a table of the store filled, thinned and vacuumed has both maps, and so does a catalog.
  const { PGlite } = await import('@electric-sql/pglite');
  const db = await PGlite.create(join(dir, 'db'));
  try {
    await db.exec("insert into events (at, kind, message) select g, 'test', repeat('x', 200) from generate_series(1, 400) g");
    await db.exec('delete from events where at % 2 = 0');
    await db.exec('vacuum events');
    await db.exec('vacuum pg_class');
    for (const rel of ['events', 'pg_class']) {
      const path = (await db.query<{ p: string }>(`select pg_relation_filepath('${rel}') as p`)).rows[0]!.p;
      assert.ok(existsSync(join(dir, 'db', `${path}_fsm`)) && existsSync(join(dir, 'db', `${path}_vm`)), `${rel}: maps made again`);
    }
  } finally {
    await db.close();
  }
});
