// Loads a bundle of dist/ (a CommonJS file made by scripts/build-cli.mjs) with the V8 code
// cache the build left beside it (FILE.cache), through node:vm. Node 20 keeps no compile cache
// of its own (module.enableCompileCache came with Node 22): without one, every start parses and
// compiles the bundle again — a tenth of a second for the controller's.
//
// V8 checks a cache against its own version and flags (a mismatch is refused and the bundle is
// compiled as usual) but, of the source, only its length: the build therefore ends each bundle
// with its own id (`//# drover-build=<sha256>`) and writes the same id at the head of the cache,
// and a cache whose id differs is not used.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import vm from 'node:vm';

const ID = /\/\/# drover-build=([0-9a-f]{64})\n?$/;
const loaded = new Map();

/** The code cache of `source` if `cacheFile` holds one made for this very build, else undefined. */
function cacheFor(source, cacheFile) {
  const id = ID.exec(source.slice(-100))?.[1];
  if (!id) return undefined;
  let data;
  try {
    data = readFileSync(cacheFile);
  } catch {
    return undefined;
  }
  return data.subarray(0, 64).toString('latin1') === id ? data.subarray(64) : undefined;
}

/**
 * Runs the bundle `file` (once per process) and returns its exports. In it, `require` of
 * `./x.cjs` loads that bundle the same way; `import()` is the launcher's (`__droverImport`) (relative specifiers
 * resolved against the bundle's own folder). `onLoaded` gets the script (the build makes the
 * cache with it).
 */
export function loadBundle(file, onLoaded) {
  const known = loaded.get(file);
  if (known) return known.exports;
  const source = readFileSync(file, 'utf8');
  const cachedData = cacheFor(source, `${file}.cache`);
  const script = new vm.Script(`(function (exports, require, module, __filename, __dirname, __droverImport) {${source}\n})`, {
    filename: file,
    ...(cachedData ? { cachedData } : {}),
  });
  const module = { exports: {}, cacheRejected: cachedData ? script.cachedDataRejected === true : undefined };
  loaded.set(file, module);
  const dir = dirname(file);
  const base = createRequire(file);
  const require = Object.assign((id) => (/^\.\.?\/.*\.cjs$/.test(id) ? loadBundle(resolve(dir, id)) : base(id)), { resolve: base.resolve, cache: base.cache });
  const url = pathToFileURL(file);
  const importer = (specifier) => import(/^\.\.?\//.test(specifier) ? new URL(specifier, url).href : specifier);
  script.runInThisContext()(module.exports, require, module, file, dir, importer);
  onLoaded?.(script, module);
  return module.exports;
}

/** Whether `file` was loaded with its code cache (false: none or refused; undefined: not loaded). */
export function usedCache(file) {
  const m = loaded.get(file);
  return m ? m.cacheRejected === false : undefined;
}
