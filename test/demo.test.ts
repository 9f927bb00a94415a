// drover-test: alone (drives load and times scaling)
/**
 * The README's main job, end to end: `npm run demo` with 30 tasks and a worker killed midway.
 * Every task completes, the work is spread over more than one worker, and nothing is left running.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { processesWithEnv, ROOT, until } from './helpers.js';

test('demo: 30 tasks, a worker killed midway, none lost', { timeout: 300_000 }, async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts/demo.ts'), '--tasks', '30', '--size', '512', '--kill-worker'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  assert.equal(code, 0, out.slice(-3000));
  assert.match(out, /tasks lost\s+0/);
  const used = Number(/workers used\s+(\d+)/.exec(out)?.[1]);
  assert.ok(used > 1, `workers used: ${used}`);
  assert.match(out, /worker killed mid-burst\s+i-[0-9a-f]+/);
  const dataDir = /data in (\S+)\)/.exec(out)?.[1] ?? 'drover-demo-';
  await until('no process left', async () => (processesWithEnv(dataDir).length === 0 ? true : undefined), 10_000);
});
