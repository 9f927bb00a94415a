import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { compileInput, hotBitmap, wasmLayout, withCompilationHints } from './pglite-hints.js';
import { HOT_FUNCTIONS } from './pglite-hot-functions.js';

/** Node's WebAssembly (this project's TypeScript setup has no DOM types). */
interface Wasm {
  validate(bytes: Uint8Array): boolean;
  instantiate(bytes: Uint8Array, imports: object): Promise<{ instance: { exports: Record<string, unknown> } }>;
  Memory: new (d: { initial: number }) => object;
}
const WebAssembly = (globalThis as unknown as { WebAssembly: Wasm }).WebAssembly;

/** A module importing a function and a memory, with three functions of its own: f_k(x) = x + k. */
function tinyModule(): Uint8Array {
  const section = (id: number, body: number[]) => [id, body.length, ...body];
  const str = (s: string) => [s.length, ...Buffer.from(s)];
  const body = (k: number) => [7, 0x00, 0x20, 0x00, 0x41, k, 0x6a, 0x0b];
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, [1, 0x60, 1, 0x7f, 1, 0x7f]),
    ...section(2, [2, ...str('env'), ...str('f'), 0, 0, ...str('env'), ...str('mem'), 2, 0, 1]),
    ...section(3, [3, 0, 0, 0]),
    ...section(7, [3, ...str('a'), 0, 1, ...str('b'), 0, 2, ...str('c'), 0, 3]),
    ...section(10, [3, ...body(1), ...body(2), ...body(3)]),
  ]);
}

void test('compilation hints: a hints section is put before the code section, one byte per own function, and the module still works', async () => {
  const bytes = tinyModule();
  const layout = wasmLayout(bytes);
  assert.ok(layout);
  assert.equal(layout.importedFunctions, 1);
  assert.equal(layout.declaredFunctions, 3);
  assert.equal(bytes[layout.codeSectionAt], 10);
  const hot = { wasmBytes: bytes.length, declared: 3, eager: hotBitmap(3, [0, 2]) };
  const hinted = withCompilationHints(bytes, hot);
  assert.ok(hinted);
  const name = Buffer.from('compilationHints');
  const at = Buffer.from(hinted).indexOf(name);
  assert.ok(at > 0 && at < layout.codeSectionAt + name.length + 4, 'before the code section');
  assert.deepEqual([...hinted.subarray(at + name.length, at + name.length + 4)], [3, 2, 1, 2], 'count, then eager, lazy, eager');
  assert.ok(WebAssembly.validate(hinted));
  const { instance } = await WebAssembly.instantiate(hinted, { env: { f: (x: number) => x, mem: new WebAssembly.Memory({ initial: 1 }) } });
  const { a, b, c } = instance.exports as Record<string, (x: number) => number>;
  assert.deepEqual([a!(10), b!(10), c!(10)], [11, 12, 13]);
  // Hinted once only (V8 takes one such section), and only the module the hints were made for.
  assert.equal(withCompilationHints(hinted, { ...hot, wasmBytes: hinted.length }), undefined);
  assert.equal(withCompilationHints(bytes, { ...hot, wasmBytes: bytes.length + 1 }), undefined);
  assert.equal(withCompilationHints(bytes, { ...hot, declared: 4, eager: hotBitmap(4, []) }), undefined);
  assert.equal(withCompilationHints(bytes, { ...hot, eager: 'AAAA' }), undefined);
  // Not a module, or cut short: nothing.
  for (const bad of [new Uint8Array(0), Buffer.from('not wasm at all'), bytes.subarray(0, 30), new Uint8Array([...bytes.subarray(0, 8), 2, 0xff, 0xff, 0xff, 0xff, 0x7f])]) assert.equal(wasmLayout(bad), undefined);
  assert.throws(() => hotBitmap(3, [3]), /not one of/);
});

/** bin/wasm-flags.js: the launcher's flags and the V8 they are set on. */
const flags = (await import(new URL('../../../bin/wasm-flags.js', import.meta.url).href)) as { WASM_HINT_FLAGS: string[]; wasmHintsSupported(v?: string): boolean };

void test("compilation hints: this Node's V8, with the launcher's flags, compiles the eager functions with the module and the lazy ones not at all until called", { skip: !flags.wasmHintsSupported() && 'not the V8 the hints are used on' }, () => {
  const bytes = tinyModule();
  const hinted = withCompilationHints(bytes, { wasmBytes: bytes.length, declared: 3, eager: hotBitmap(3, [0, 2]) })!;
  const script = `const b = Buffer.from(${JSON.stringify(Buffer.from(hinted).toString('base64'))}, 'base64'); new WebAssembly.Module(b);`;
  const run = (flags: string[]) => {
    const r = spawnSync(process.execPath, [...flags, '--trace-wasm-compilation-times', '-e', script], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    return [...r.stdout.matchAll(/^Compiled function \S+#(\d+) using Liftoff/gm)].map((m) => Number(m[1])).sort();
  };
  assert.deepEqual(run(flags.WASM_HINT_FLAGS), [1, 3], 'own functions 0 and 2 (1 and 3 counting the import)');
  assert.deepEqual(run([]), [], 'without the flags: all lazy (V8 default)');
});

void test('compilation hints: the training run\'s functions eager, or every function lazy when turned off or made for other bytes', () => {
  const bytes = tinyModule();
  const hintsOf = (b: Uint8Array) => {
    const name = Buffer.from('compilationHints');
    const at = Buffer.from(b).indexOf(name);
    return at < 0 ? undefined : [...b.subarray(at + name.length + 1, at + name.length + 4)];
  };
  const hot = { wasmBytes: bytes.length, declared: 3, eager: hotBitmap(3, [1]) };
  assert.deepEqual(hintsOf(compileInput(bytes, hot, {}).bytes), [1, 2, 1]);
  assert.equal(compileInput(bytes, hot, {}).eager, true);
  assert.deepEqual(hintsOf(compileInput(bytes, hot, { DROVER_STORE_HINTS: 'off' }).bytes), [1, 1, 1], 'off: all lazy');
  assert.deepEqual(hintsOf(compileInput(bytes, { ...hot, wasmBytes: 1 }, {}).bytes), [1, 1, 1], 'another module: all lazy');
  const junk = Buffer.from('not wasm');
  assert.equal(compileInput(junk, hot, {}).bytes, junk, 'unreadable: as it is');
  assert.equal(flags.wasmHintsSupported('11.3.244.8-node.38'), true);
  assert.equal(flags.wasmHintsSupported('12.4.254.21-node.33'), false);
});

void test("compilation hints: the training run's functions are for the installed PGlite (else: npm run store:hints)", () => {
  const wasm = readFileSync(fileURLToPath(new URL('./pglite.wasm', import.meta.resolve('@electric-sql/pglite'))));
  assert.equal(HOT_FUNCTIONS.wasmBytes, wasm.length, 'PGlite changed since the training run: run npm run build && npm run store:hints');
  const hinted = withCompilationHints(wasm, HOT_FUNCTIONS);
  assert.ok(hinted, 'the hints do not fit this PGlite: run npm run store:hints');
  const eager = [...Buffer.from(HOT_FUNCTIONS.eager, 'base64')].reduce((n, byte) => n + byte.toString(2).replaceAll('0', '').length, 0);
  assert.ok(eager > 500 && eager < HOT_FUNCTIONS.declared / 2, `${eager} functions marked eager`);
});
