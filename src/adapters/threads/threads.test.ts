import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

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
