/**
 * The CLI starts fast because a command loads only what it needs, compiled once at build time:
 * bin/drover.js runs dist/cli/drover.cjs (the CLI and commander, one file) with its V8 code
 * cache, and the controller, the store, the app-file schema (zod, yaml) and the logger come
 * from dist/cli/controller.cjs (again with its cache) and packages only for the commands that
 * use them. bench:startup measures the time; this keeps the shape that makes it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_PORT as CONTROLLER_PORT } from '../src/controller/index.js';
import { DEFAULT_PORT } from '../src/cli/main.js';
import { drover, killableController, ROOT } from './helpers.js';

const CLI = `${ROOT}dist/cli/drover.cjs`;
const CONTROLLER = `${ROOT}dist/cli/controller.cjs`;
const STORE = `${ROOT}dist/cli/store-worker.cjs`;
const unbuilt = !existsSync(CLI) && !process.env.CI && 'no dist/cli/drover.cjs (run npm run build)';

test('the CLI bundle holds the client and commander; the controller, the logger, the agent and the simulator load on demand', { skip: unbuilt }, () => {
  const code = readFileSync(CLI, 'utf8');
  // No package is required (commander is bundled); pino is imported by `drover node` when it runs (`up` logs through the controller bundle).
  const packages = new Set([...code.matchAll(/\brequire\("([^".][^"]*)"\)/g)].map((m) => m[1]!).filter((s) => !s.startsWith('node:')));
  assert.deepEqual([...packages], []);
  assert.match(code, /require\("\.\/controller\.cjs"\)\.controller/);
  for (const lazy of ['./../agent/index.js', './../sim/index.js', 'pino']) assert.ok(code.includes(`__droverImport("${lazy}")`), `${lazy} is loaded on demand`);
  // The app-file schema (zod, yaml) is not in it: only the core's token proof is.
  assert.ok(!/node_modules\/(zod|yaml)\//.test(code));
  // Each bundle ends with its build id, which its cache begins with.
  for (const file of [CLI, CONTROLLER, STORE]) {
    const id = /\/\/# drover-build=([0-9a-f]{64})\n$/.exec(readFileSync(file, 'utf8').slice(-100))?.[1];
    assert.ok(id, `${file} ends with its build id`);
    assert.equal(readFileSync(`${file}.cache`).subarray(0, 64).toString('latin1'), id);
  }
});

/** Runs the CLI as bin/drover.js does, then says which bundles it loaded (with their cache or not) and which packages. */
function probe(args: string[], env: NodeJS.ProcessEnv, cwd: string): Promise<{ code: number; stdout: string; cli: boolean | null; controller: boolean | null; packages: string[] }> {
  const script = `
import { createRequire } from 'node:module';
import { loadBundle, usedCache } from ${JSON.stringify(`${ROOT}bin/bundle.js`)};
const code = await loadBundle(${JSON.stringify(CLI)}).main(['node', 'drover', ...${JSON.stringify(args)}]);
const packages = [...new Set(Object.keys(createRequire(import.meta.url).cache).flatMap((f) => /node_modules\\/((?:@[^/]+\\/)?[^/]+)/.exec(f)?.[1] ?? []))];
process.stderr.write('\\nPROBE ' + JSON.stringify({ code, cli: usedCache(${JSON.stringify(CLI)}) ?? null, controller: usedCache(${JSON.stringify(CONTROLLER)}) ?? null, packages }) + '\\n');
process.exit(0);`;
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.once('error', reject);
    p.once('close', () => {
      const line = /^PROBE (.*)$/m.exec(stderr)?.[1];
      if (!line) return reject(new Error(`the probe said nothing: ${stderr}`));
      resolve({ stdout, ...(JSON.parse(line) as { code: number; cli: boolean | null; controller: boolean | null; packages: string[] }) });
    });
  });
}

test('`drover status` runs from the CLI bundle and its code cache alone; reading an app file loads the controller bundle, with its cache', { skip: unbuilt, timeout: 120_000 }, async (t) => {
  const ctl = await killableController(t, 'drover-cli-startup-');
  await ctl.start();
  const env = { ...process.env, DROVER_URL: ctl.server.url, DROVER_TOKEN: ctl.server.token, NODE_OPTIONS: '' };
  const status = await probe(['status'], env, ctl.dir);
  assert.equal(status.code, 0);
  assert.equal(status.stdout, 'no apps\n');
  assert.equal(status.cli, true, 'the CLI bundle was loaded with its code cache');
  assert.equal(status.controller, null, 'status does not load the controller bundle');
  assert.deepEqual(status.packages, [], 'status loads no package (commander is in the bundle)');

  const dir = mkdtempSync(join(tmpdir(), 'drover-cli-startup-file-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'drover.yaml'), 'app: x\nroles:\n  web: { start: 1 }\n');
  const apply = await probe(['apply', join(dir, 'drover.yaml')], env, dir);
  assert.equal(apply.code, 1, 'the invalid file is refused');
  assert.equal(apply.controller, true, 'the schema came from the controller bundle, with its code cache');
  assert.ok(!apply.packages.includes('zod') && !apply.packages.includes('yaml'), 'zod and yaml are in the bundle');
});

test("the bundles keep their code caches when loaded after the store's thread compiled PGlite: nothing changes V8's flags at run time", { skip: unbuilt, timeout: 120_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-cli-startup-flags-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // As bin/drover.js runs `up`: the CLI bundle, the store's thread started; here the controller's
  // and the parser's bundles are loaded only once the store is ready (a store's thread that
  // changed V8's flags while starting made V8 refuse every cache checked after it).
  const script = `
import { loadBundle, usedCache } from ${JSON.stringify(`${ROOT}bin/bundle.js`)};
loadBundle(${JSON.stringify(CLI)});
const { startEmbeddedDb } = await import(${JSON.stringify(`${ROOT}dist/adapters/store/index.js`)});
const db = await startEmbeddedDb(${JSON.stringify(join(dir, 'db'))});
await db.query('select 1');
loadBundle(${JSON.stringify(CONTROLLER)});
loadBundle(${JSON.stringify(`${ROOT}dist/cli/parse-worker.cjs`)});
// The store's thread ran its bundle; loaded here too (it does nothing outside a thread), its cache is checked as the thread's was.
loadBundle(${JSON.stringify(STORE)});
process.stdout.write(JSON.stringify([${JSON.stringify(CLI)}, ${JSON.stringify(CONTROLLER)}, ${JSON.stringify(`${ROOT}dist/cli/parse-worker.cjs`)}, ${JSON.stringify(STORE)}].map((f) => usedCache(f))));
await db.close();`;
  const out = await new Promise<string>((resolve, reject) => {
    const p = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: dir, env: { ...process.env, NODE_OPTIONS: '' }, stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.once('error', reject);
    p.once('close', (code) => (code === 0 ? resolve(stdout) : reject(new Error(`exit ${code}`))));
  });
  assert.deepEqual(JSON.parse(out), [true, true, true, true], "CLI, controller, parser and store thread's bundles, each with its code cache");
});

test('--version answers without loading the CLI; the default port is the controller\'s', async () => {
  const pkg = JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as { version: string };
  const r = await drover(['--version'], { cwd: ROOT });
  assert.equal(r.code, 0);
  assert.equal(r.stdout, `${pkg.version}\n`);
  assert.equal(DEFAULT_PORT, CONTROLLER_PORT);
  const help = await drover(['up', '--help'], { cwd: ROOT });
  assert.match(help.stdout, /default: 7420/);
});
