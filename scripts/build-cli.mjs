// Bundles what bin/drover.js runs, as CommonJS files loaded with a V8 code cache
// (bin/bundle.js says why and how):
//
// - dist/cli/drover.cjs: the CLI (src/cli) with commander and the token proof of the core —
//   all that `drover status` and the other API commands load.
// - dist/cli/controller.cjs: the controller with the doors the CLI loads on demand (core,
//   store, transport, providers) and their packages, loaded by `up`, `controller`, `apply`
//   (which reads the app file) and the like. One file instead of ~600 modules.
// - dist/cli/parse-worker.cjs: the app-file parser's worker thread (core's parser, yaml, zod),
//   started by the controller's API at every start.
// - dist/cli/store-worker.cjs: the embedded store's thread with PGlite's JavaScript (its
//   WebAssembly and files stay in the package, found where PGlite keeps them).
//
// Each file ends with its build id; FILE.cache (made by running the bundles once in a child
// process with no flags, as `drover` runs: after the store's template, which the controller's
// training start uses) begins with the same id.
//
// Left outside, as packages: PGlite (finds its .wasm and .data beside its own module; but in
// store-worker.cjs, where its `import.meta.url` is its package's own file),
// thread-stream (a pino transport runs its files in a worker thread; Drover uses none: its
// foreground logger formats in the controller's thread, src/controller/console-log.ts), ssh2
// (native parts), optional native packages. The agent and the simulator stay dist/'s own
// modules (`import()`ed when used).
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, relative, resolve } from 'node:path';

const root = fileURLToPath(new URL('..', import.meta.url));
const src = resolve(root, 'src');
const cliDir = resolve(src, 'cli');
const outDir = resolve(root, 'dist/cli');
const CLI = resolve(outDir, 'drover.cjs');
const CONTROLLER = resolve(outDir, 'controller.cjs');
const PARSER = resolve(outDir, 'parse-worker.cjs');
const STORE = resolve(outDir, 'store-worker.cjs');

/** Doors in controller.cjs, by the name the CLI's `import()` uses, and the export that holds each. */
const HEAVY = {
  'core/index.ts': 'core',
  'controller/index.ts': 'controller',
  'adapters/store/index.ts': 'store',
  'adapters/transport/index.ts': 'transport',
  'adapters/providers/index.ts': 'providers',
};

const EXTERNAL = ['thread-stream', '@electric-sql/pglite', '@electric-sql/pglite/*', 'ssh2', 'cpu-features', 'pg-native', 'bufferutil', 'utf-8-validate', 'tsx', 'tsx/*'];

/**
 * `import.meta.url` of a bundled source file is its own dist/ module's URL, as if unbundled:
 * a file finds what lies beside it (the agent's entry, the dashboard, the store template).
 */
const metaUrl = {
  name: 'drover-meta-url',
  setup(b) {
    b.onLoad({ filter: /\/src\/.*\.ts$/ }, (args) => {
      const code = readFileSync(args.path, 'utf8');
      if (!code.includes('import.meta')) return undefined;
      const own = resolve(root, 'dist', relative(src, args.path)).replace(/\.ts$/, '.js');
      const rel = `./${relative(outDir, own)}`;
      // import.meta.resolve: only on the from-source branches (tsx), never taken in a bundle.
      const rewritten = code.replaceAll('import.meta.url', `__droverUrl(${JSON.stringify(rel)})`).replaceAll('import.meta.resolve(', '__droverResolve(');
      if (rewritten.includes('import.meta')) throw new Error(`${relative(root, args.path)}: import.meta other than .url cannot be bundled`);
      return { contents: rewritten, loader: 'ts' };
    });
  },
};

/** The CLI's imports: its own folder bundled; the heavy doors from controller.cjs; agent and sim left to dist/. */
const cliSplit = {
  name: 'drover-cli-split',
  setup(b) {
    // Packages: commander bundled; the rest (pino, for `up` and `agent`) left as packages.
    b.onResolve({ filter: /^[^./]/ }, (args) => (args.path === 'commander' || args.path.startsWith('node:') ? undefined : { path: args.path, external: true }));
    b.onResolve({ filter: /^\.\.?\// }, (args) => {
      if (args.namespace === 'drover-heavy') return { path: args.path, external: true };
      if (!args.importer.startsWith(src)) return undefined;
      const target = resolve(dirname(args.importer), args.path);
      if (target.startsWith(cliDir + '/')) return undefined;
      const door = relative(src, target).replace(/\.js$/, '.ts');
      if (args.kind === 'dynamic-import') {
        if (HEAVY[door]) return { path: door, namespace: 'drover-heavy' };
        return { path: `./${relative(outDir, resolve(root, 'dist', relative(src, target)))}`, external: true };
      }
      // A door imported statically (the core's token proof, the controller's data-folder check,
      // the store's template copy): bundled, shaken — only what the CLI uses, none of the
      // packages behind the rest. The modules of src/ do nothing when loaded but define.
      return { path: target.replace(/\.js$/, '.ts'), sideEffects: false };
    });
    b.onLoad({ filter: /.*/, namespace: 'drover-heavy' }, (args) => ({
      contents: `module.exports = require("./controller.cjs").${HEAVY[args.path]};`,
      loader: 'js',
    }));
  },
};

/**
 * PGlite's modules bundled: their `import.meta.url` (where PGlite finds pglite.wasm, pglite.data
 * and initdb.wasm beside its own files) is the URL of the package's main file, resolved where the
 * bundle runs (its files all sit in the package's dist/ folder, as that main file does).
 */
const pgliteMetaUrl = {
  name: 'drover-pglite-meta-url',
  setup(b) {
    b.onLoad({ filter: /[\\/]@electric-sql[\\/]pglite[\\/]dist[\\/][^\\/]+\.js$/ }, (args) => {
      const code = readFileSync(args.path, 'utf8');
      if (!code.includes('import.meta')) return undefined;
      const rewritten = code.replaceAll('import.meta.url', '__droverResolve("@electric-sql/pglite")');
      if (rewritten.includes('import.meta')) throw new Error(`${args.path}: import.meta other than .url cannot be bundled`);
      return { contents: rewritten, loader: 'js' };
    });
  },
};

const common = {
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  logLevel: 'warning',
  // import.meta left anywhere would be empty in CommonJS: an error, not a warning.
  logOverride: { 'empty-import-meta': 'error' },
  banner: {
    js: [
      'var __droverUrl = (p) => require("node:url").pathToFileURL(require("node:path").join(__dirname, p)).href;',
      'var __droverResolve = (s) => require("node:url").pathToFileURL(require.resolve(s)).href;',
    ].join('\n'),
  },
  write: false,
};

const [cli, heavy, parser, store] = await Promise.all([
  build({ ...common, entryPoints: [resolve(cliDir, 'main.ts')], outfile: CLI, plugins: [cliSplit, metaUrl] }),
  build({
    ...common,
    stdin: {
      contents: Object.entries(HEAVY).map(([door, name]) => `export * as ${name} from './src/${door}';`).join('\n'),
      resolveDir: root,
      sourcefile: 'controller-bundle.ts',
      loader: 'ts',
    },
    outfile: CONTROLLER,
    external: EXTERNAL,
    plugins: [metaUrl],
  }),
  // The app-file parser's worker thread (src/controller/app-file-parser.ts loads it).
  build({ ...common, entryPoints: [resolve(src, 'controller/parse-worker.ts')], outfile: PARSER, external: EXTERNAL, plugins: [metaUrl] }),
  // The embedded store's thread (src/adapters/store/pglite-thread.ts loads it), PGlite included.
  build({ ...common, entryPoints: [resolve(src, 'adapters/store/pglite-worker.ts')], outfile: STORE, external: EXTERNAL.filter((e) => !e.startsWith('@electric-sql/pglite')), plugins: [metaUrl, pgliteMetaUrl] }),
]);

// `import()` inside a node:vm script needs a flag on Node 20: the launcher passes its own.
// esbuild writes each import() it leaves as `import("specifier")`.
for (const [file, result] of [[CLI, cli], [CONTROLLER, heavy], [PARSER, parser], [STORE, store]]) {
  const code = result.outputFiles[0].text.replace(/(?<![\w$.])import\("/g, '__droverImport("');
  const id = createHash('sha256').update(code).digest('hex');
  rmSync(`${file}.cache`, { force: true });
  writeFileSync(file, `${code}//# drover-build=${id}\n`);
}
// The bundle of earlier builds (an ES module): gone, so nothing runs it by mistake.
rmSync(resolve(outDir, 'drover.js'), { force: true });

// The code caches: made by a `node` with no flags (V8 refuses a cache made under other flags,
// Node's own modules' caches included: nothing in drover may change V8's flags at run time),
// after running what `drover` runs first, so the functions it compiles are in the cache:
// for the controller's, a start on a new embedded store and an app applied, read and deleted
// through the API (what `drover up` does before it says "applied"; a function first run after
// the cache was made is compiled at every start, on the controller's thread). A training start
// that fails (a machine where the build may not listen on 127.0.0.1) is said, and the cache is
// made without it.
const made = spawnSync(process.execPath, ['--input-type=module', '-e', `
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadBundle } from ${JSON.stringify(resolve(root, 'bin/bundle.js'))};
const caches = [];
const keep = (file) => (script) => caches.push([file, script]);
const cli = loadBundle(${JSON.stringify(CLI)}, keep(${JSON.stringify(CLI)}));
cli.buildProgram();
const heavy = loadBundle(${JSON.stringify(CONTROLLER)}, keep(${JSON.stringify(CONTROLLER)}));
const dataDir = mkdtempSync(join(tmpdir(), 'drover-code-cache-'));
try {
  await train();
} catch (err) {
  console.warn('build-cli: the code cache of controller.cjs is made without its training start: ' + (err instanceof Error ? err.message : String(err)));
} finally {
  rmSync(dataDir, { recursive: true, force: true });
}
async function train() {
  const server = await heavy.controller.startServer({ dataDir, host: '127.0.0.1', port: 0, logger: heavy.controller.consoleLogger('silent') });
  const call = async (method, path, body) => {
    const res = await fetch(server.url + path, { method, headers: { authorization: 'Bearer ' + server.token, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined });
    if (!res.ok) throw new Error(method + ' ' + path + ': ' + res.status + ' ' + (await res.text()));
    return res.json();
  };
  const yaml = ['app: warm', 'roles:', '  db:', '    count: 0', '    start: node db.mjs', '    exports: { url: "http://\${ip}:\${port}" }', '    health: { http: /health, interval: 500ms }', '  api:', '    count: 0', '    imports: [db.url]', '    start: node api.mjs', '    exports: { endpoint: "http://\${ip}:\${port}" }', ''].join('\\n');
  try {
    await call('GET', '/v1/health');
    await call('PUT', '/v1/apps/warm', { yaml, appDir: dataDir });
    await call('GET', '/v1/apps');
    await call('DELETE', '/v1/apps/warm');
  } finally {
    await server.close();
  }
}
// The store thread's cache holds PGlite's code compiled by a start on a copy of the template
// and the statements a controller's start runs first (here in this thread: a worker's script
// cannot be reached to make its cache).
const storeWorker = loadBundle(${JSON.stringify(STORE)}, keep(${JSON.stringify(STORE)}));
const storeDir = mkdtempSync(join(tmpdir(), 'drover-store-cache-'));
try {
  const db = await storeWorker.openStoreDb(join(storeDir, 'db'), ${JSON.stringify(resolve(root, 'dist/store-template'))}, storeWorker.readArtifacts());
  try {
    await db.query('select id from drover_migrations');
    await db.exec('BEGIN');
    await db.query("insert into leases (name, holder, epoch, acquired_at, renewed_at, expires_at) values ($1, $2, 1, 0, 0, 0) on conflict (name) do update set holder = excluded.holder returning *", ['warm', 'warm']);
    await db.query('select * from apps where name = $1', ['warm']);
    await db.exec('COMMIT');
  } finally {
    await db.close();
  }
} finally {
  rmSync(storeDir, { recursive: true, force: true });
}
// The parser's cache holds its code compiled by a parse, as in the worker.
const parser = loadBundle(${JSON.stringify(PARSER)}, keep(${JSON.stringify(PARSER)}));
if (!parser.handle({ id: 0, kind: 'yaml', text: parser.WARM_UP_FILE }).ok) throw new Error('the parser bundle did not parse its warm-up file');
for (const [file, script] of caches) {
  const id = /drover-build=([0-9a-f]{64})/.exec(readFileSync(file, 'latin1').slice(-100))[1];
  writeFileSync(file + '.cache', Buffer.concat([Buffer.from(id, 'latin1'), script.createCachedData()]));
  // Readable as the bundles are (the controller's start above set a private umask in this process).
  chmodSync(file + '.cache', 0o644);
}
`], { cwd: root, env: { ...process.env, NODE_OPTIONS: '' }, stdio: 'inherit' });
if (made.status !== 0) throw new Error(`making the code caches failed (exit ${made.status})`);
