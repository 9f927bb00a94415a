import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import { ARRAY_TYPES_FILE, ARRAY_TYPES_SQL, KnownTypesPGlite, parseArrayTypes, readArrayTypes } from './pglite-array-types.js';

const sizes = () => {
  const base = import.meta.resolve('@electric-sql/pglite');
  return [statSync(fileURLToPath(new URL('./pglite.wasm', base))).size, statSync(fileURLToPath(new URL('./pglite.data', base))).size] as const;
};

void test("array types: the build's file is used only whole and for the same PGlite files", (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-arrays-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'a.json');
  const good = { wasmBytes: 10, dataBytes: 20, pairs: [[25, 1009], [23, 1007]] };
  writeFileSync(file, JSON.stringify(good));
  assert.deepEqual(readArrayTypes(10, 20, file), good);
  assert.equal(readArrayTypes(11, 20, file), undefined, 'another PGlite');
  assert.equal(readArrayTypes(10, 21, file), undefined, 'another PGlite');
  assert.equal(readArrayTypes(10, 20, join(dir, 'none.json')), undefined, 'no file');
  for (const bad of ['', '{', 'null', '[]', JSON.stringify({ ...good, pairs: [] }), JSON.stringify({ ...good, pairs: [[25]] }), JSON.stringify({ ...good, pairs: [[25, '1009']] }), JSON.stringify({ ...good, pairs: [[25, 16384]] }), JSON.stringify({ ...good, pairs: [[0, 1009]] }), JSON.stringify({ ...good, wasmBytes: '10' })]) {
    assert.equal(parseArrayTypes(bad), undefined, bad);
  }
});

void test("array types: the build's pairs are PostgreSQL's own, as PGlite's query finds them, and work without the query", { skip: !readArrayTypes(...sizes()) && !process.env.CI && 'no dist/store-array-types.json (run npm run build)' }, async () => {
  const known = readArrayTypes(...sizes());
  assert.ok(known, `${ARRAY_TYPES_FILE} is missing or was made with other PGlite files: run npm run build`);
  const asked = new PGlite();
  const told = new KnownTypesPGlite({}, known);
  try {
    await Promise.all([asked.waitReady, told.waitReady]);
    const now = (await asked.query<{ elem: number; arr: number }>(ARRAY_TYPES_SQL)).rows.map((r) => [r.elem, r.arr]);
    assert.deepEqual(known.pairs, now);
    // What PGlite's own query installs, the known pairs install too (PostgreSQL's own types).
    for (const [, arr] of known.pairs) {
      assert.equal(typeof told.serializers[arr], 'function', `serializer for ${arr}`);
      assert.equal(typeof told.parsers[arr], 'function', `parser for ${arr}`);
    }
    const q = "SELECT $1::text[] AS t, $2::int8[] AS b, '{{1,2},{3,4}}'::int[] AS m, '{t,f,NULL}'::bool[] AS f";
    const params = [['x', 'y z', 'q"u\\o', ''], [1, 2]];
    assert.deepEqual((await told.query(q, params)).rows, (await asked.query(q, params)).rows);
    assert.deepEqual((await told.query<{ t: string[] }>(q, params)).rows[0]!.t, params[0]);
    // A forced refresh asks PostgreSQL, as PGlite does.
    await told.refreshArrayTypes();
  } finally {
    await Promise.all([asked.close(), told.close()]);
  }
});
