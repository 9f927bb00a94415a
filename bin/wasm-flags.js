// V8's flags for compiling PGlite's WebAssembly with hints (src/adapters/store/pglite-hints.ts):
// set by bin/drover.js before it loads anything, and by the build before it makes the code
// caches (scripts/build-cli.mjs). Both must agree: V8 refuses a code cache made under other
// flags, and the flags can only be set for the whole process, so setting them later (when the
// store starts) made every bundle loaded after that moment compile without its cache.
//
// Only on Node 20's V8 (11.x), where they were measured. With them, a WebAssembly module with no
// hints is compiled whole when loaded instead of function by function when called: PGlite's
// always carries hints (all lazy but for a start's functions); the only other one a controller
// may load, undici's HTTP parser, is small.
import v8 from 'node:v8';

export const WASM_HINT_FLAGS = ['--experimental-wasm-compilation-hints', '--no-wasm-lazy-compilation'];

/** Whether this V8 is one the hints are used on. */
export function wasmHintsSupported(v8Version = process.versions.v8) {
  return /^11\./.test(v8Version);
}

/** Sets {@link WASM_HINT_FLAGS} where supported; returns whether it did. */
export function applyWasmFlags() {
  if (!wasmHintsSupported()) return false;
  for (const f of WASM_HINT_FLAGS) v8.setFlagsFromString(f);
  return true;
}
