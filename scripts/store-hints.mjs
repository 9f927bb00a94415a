// npm run store:hints — the training run behind src/adapters/store/pglite-hot-functions.ts.
//
// Runs `drover up examples/three-tier` (from dist/: build first) on a new data folder with V8
// tracing its WebAssembly compiles, stops it 1.5 s after the app is applied, and writes which of
// PGlite's functions were compiled: the ones a start and a first apply call. Two runs, their
// union. Run it again after a PGlite upgrade (a test says so when the file no longer matches).
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const { wasmLayout, hotBitmap } = await import(join(root, 'dist/adapters/store/pglite-hints.js'));
const wasmFile = fileURLToPath(new URL('./pglite.wasm', import.meta.resolve('@electric-sql/pglite')));
const wasm = readFileSync(wasmFile);
const layout = wasmLayout(wasm);
if (!layout) throw new Error(`${wasmFile} is not a WebAssembly module this script can read`);

/** One training run: the indices (in the whole function space) of every function compiled, by module. */
function trainingRun() {
  const dir = mkdtempSync(join(tmpdir(), 'drover-store-hints-'));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--trace-wasm-compilation-times', join(root, 'bin/drover.js'), 'up', join(root, 'examples/three-tier/drover.yaml'), '--port', '0'], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, DROVER_STORE_HINTS: 'off', DROVER_LOG_LEVEL: 'warn' },
    });
    let out = '';
    let applied = false;
    const killer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.stdout.on('data', (d) => {
      out += d;
      if (!applied && /^app \S+ applied$/m.test(out)) {
        applied = true;
        setTimeout(() => child.kill('SIGINT'), 1500);
      }
    });
    child.on('error', reject);
    child.on('exit', () => {
      clearTimeout(killer);
      rmSync(dir, { recursive: true, force: true });
      if (!applied) return reject(new Error(`the training run stopped before the app was applied:\n${out.slice(-2000)}`));
      const byModule = new Map();
      for (const m of out.matchAll(/^Compiled function (0x[0-9a-f]+)#(\d+) using Liftoff/gm)) {
        const set = byModule.get(m[1]) ?? new Set();
        set.add(Number(m[2]));
        byModule.set(m[1], set);
      }
      resolve(byModule);
    });
  });
}

const hot = new Set();
for (let run = 0; run < 2; run++) {
  const byModule = await trainingRun();
  // PGlite's is the module with by far the most functions compiled (undici's HTTP parser is the other one a controller may have).
  const pglite = [...byModule.values()].sort((a, b) => b.size - a.size)[0];
  if (!pglite || pglite.size < 100) throw new Error('the training run compiled no PGlite functions: is V8 tracing them (--trace-wasm-compilation-times)?');
  for (const i of pglite) {
    const own = i - layout.importedFunctions;
    if (own >= 0 && own < layout.declaredFunctions) hot.add(own);
  }
  console.log(`run ${run + 1}: ${pglite.size} functions compiled`);
}

const out = join(root, 'src/adapters/store/pglite-hot-functions.ts');
writeFileSync(
  out,
  `// Made by \`npm run store:hints\` (scripts/store-hints.mjs): do not edit. PGlite's functions that a
// controller's start and first apply call (${hot.size} of ${layout.declaredFunctions}), compiled ahead (pglite-hints.ts).
import type { HotFunctions } from './pglite-hints.js';

export const HOT_FUNCTIONS: HotFunctions = {
  wasmBytes: ${wasm.length},
  declared: ${layout.declaredFunctions},
  eager: '${hotBitmap(layout.declaredFunctions, hot)}',
};
`,
);
console.log(`${out}: ${hot.size} of ${layout.declaredFunctions} functions`);
