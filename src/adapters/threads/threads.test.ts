import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { startBundledWorker } from './index.js';

const door = new URL('./index.ts', import.meta.url).href;
// Run by a Node given options a thread refuses (V8's), and one it keeps (the TypeScript loader).
const child = (code: string) =>
  spawnSync(process.execPath, ['--max-semi-space-size=16', '--stack-size=2000', '--import', 'tsx', '--input-type=module', '-e', code], { encoding: 'utf8', timeout: 60_000 });

void test("a worker gets the process's options but those a thread refuses (V8's, --input-type) and the script of node -e", () => {
  const r = child(`
    import { Worker } from 'node:worker_threads';
    let plain;
    try { new Worker('1', { eval: true, execArgv: process.execArgv }); plain = 'started'; } catch (err) { plain = err.code; }
    const { startWorker } = await import(${JSON.stringify(door)});
    const w = startWorker("require('node:worker_threads').parentPort.postMessage(process.execArgv)", { eval: true });
    w.once('message', (argv) => { console.log(JSON.stringify({ plain, argv })); void w.terminate(); });
  `);
  assert.equal(r.status, 0, r.stderr);
  const { plain, argv } = JSON.parse(r.stdout) as { plain: string; argv: string[] };
  assert.equal(plain, 'ERR_WORKER_INVALID_EXEC_ARGV', "Node's own refusal, which startWorker gets around");
  assert.deepEqual(argv, ['--import', 'tsx']);
});

void test('a bundled worker runs the build\'s bundle when there is one (through bin/bundle.js), else its module', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-threads-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const say = (what: string) => `require('node:worker_threads').parentPort.postMessage(${JSON.stringify(what)});\n`;
  writeFileSync(join(dir, 'entry.js'), `import { parentPort } from 'node:worker_threads';\nparentPort.postMessage('module');\n`);
  writeFileSync(join(dir, 'entry.ts'), `import { parentPort } from 'node:worker_threads';\nparentPort?.postMessage('source');\n`);
  writeFileSync(join(dir, 'package.json'), '{"type":"module"}');
  writeFileSync(join(dir, 'entry.cjs'), say('bundle'));
  const first = (entry: string, bundle: string) =>
    new Promise<unknown>((resolve, reject) => {
      const w = startBundledWorker(pathToFileURL(join(dir, entry)), join(dir, bundle));
      w.once('message', (m) => void w.terminate().then(() => resolve(m)));
      w.once('error', reject);
    });
  assert.equal(await first('entry.js', 'entry.cjs'), 'bundle');
  assert.equal(await first('entry.js', 'missing.cjs'), 'module');
  assert.equal(await first('entry.ts', 'entry.cjs'), 'source', 'from source, the module (through tsx), not a bundle of another build');
});
