import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openPgliteStore } from './index.js';
import { dropStoreSeeds, seedFromTemplate, startStoreSeed, STORE_TEMPLATE_DIR } from './pglite-template.js';

void test('a new data folder is seeded from the template; an existing store never is', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-tpl-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const template = join(dir, 'template');
  mkdirSync(join(template, 'base'), { recursive: true });
  writeFileSync(join(template, 'PG_VERSION'), '17\n');
  writeFileSync(join(template, 'base', 'x'), 'template');
  assert.equal(seedFromTemplate(join(dir, 'new'), template), true);
  assert.equal(readFileSync(join(dir, 'new', 'base', 'x'), 'utf8'), 'template');
  // An empty folder (made by the data folder's setup) is new too.
  mkdirSync(join(dir, 'empty'));
  assert.equal(seedFromTemplate(join(dir, 'empty'), template), true);
  // A store already there is left alone.
  mkdirSync(join(dir, 'used'));
  writeFileSync(join(dir, 'used', 'PG_VERSION'), 'mine');
  assert.equal(seedFromTemplate(join(dir, 'used'), template), false);
  assert.equal(readFileSync(join(dir, 'used', 'PG_VERSION'), 'utf8'), 'mine');
  // No template, or turned off: PGlite makes the folder itself.
  assert.equal(seedFromTemplate(join(dir, 'none'), join(dir, 'no-template')), false);
  assert.equal(seedFromTemplate(join(dir, 'off'), template, { DROVER_STORE_TEMPLATE: 'off' }), false);
  assert.equal(existsSync(join(dir, 'off')), false);
  // A template that cannot be copied leaves nothing half-made behind: PGlite makes the store.
  writeFileSync(join(dir, 'file'), '');
  assert.equal(seedFromTemplate(join(dir, 'file', 'db'), template), false);
  assert.equal(existsSync(join(dir, 'file', 'db')), false);
});

void test('a copy started early (another thread) is renamed into place; one not needed, or left by a dead process, is removed', async (t) => {
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
  const seeded = await startStoreSeed(join(data, 'db'), template);
  assert.ok(seeded !== undefined && seeded.startsWith(join(data, `db.seed-${process.pid}-`)), 'copied beside the store');
  assert.equal(readFileSync(join(seeded, 'base', 'x'), 'utf8'), 'template');
  assert.ok(!existsSync(join(data, 'db.seed-99999999-dead')));
  assert.equal(seedFromTemplate(join(data, 'db'), join(dir, 'no-template'), {}, seeded), true, 'renamed, not copied');
  assert.equal(readFileSync(join(data, 'db', 'base', 'x'), 'utf8'), 'template');
  assert.deepEqual(readdirSync(data), ['db']);
  // A store there: nothing is copied, and a copy handed in anyway is removed.
  assert.equal(await startStoreSeed(join(data, 'db'), template), undefined);
  const spare = await startStoreSeed(join(data, 'other'), template);
  assert.ok(spare);
  assert.equal(seedFromTemplate(join(data, 'db'), template, {}, spare), false);
  assert.deepEqual(readdirSync(data), ['db']);
  // Off, or no template: no copy.
  assert.equal(await startStoreSeed(join(data, 'new'), template, { DROVER_STORE_TEMPLATE: 'off' }), undefined);
  assert.equal(await startStoreSeed(join(data, 'new'), join(dir, 'no-template')), undefined);
  // A copy that fails leaves nothing behind.
  writeFileSync(join(data, 'file'), '');
  assert.equal(await startStoreSeed(join(data, 'file', 'db'), template), undefined);
  // This process leaving without starting: its copies go.
  await startStoreSeed(join(data, 'gone'), template);
  dropStoreSeeds(join(data, 'gone'));
  assert.deepEqual(readdirSync(data).sort(), ['db', 'file']);
});

void test("the build's template opens as an empty, private store", { skip: !existsSync(join(STORE_TEMPLATE_DIR, 'PG_VERSION')) && !process.env.CI && 'no dist/store-template (run npm run build)' }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-tpl-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const store = await openPgliteStore(join(dir, 'db'));
  try {
    assert.deepEqual(await store.listApps(), []);
    assert.equal(statSync(join(dir, 'db', 'PG_VERSION')).mode & 0o077, 0, 'files made private');
  } finally {
    await store.close();
  }
});
