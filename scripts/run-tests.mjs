#!/usr/bin/env node
// Runs every *.test.ts under the given folders (default: src, test and examples) with node's test runner
// through tsx. Node 20's runner has no glob support, so the file list is built here.
//
// Unit suites (beside the code in src/) run in one runner, two files at a time. Integration suites
// (test/, examples/) start real controllers, agents, HAProxy, RabbitMQ, PostgreSQL and Chromium;
// each file runs in a runner of its own, TEST_CONCURRENCY (default 2) at a time — except a file
// that says `// drover-test: alone` in its first lines (it measures timings or loads the CPU), which
// runs after the others, with nothing beside it. The end prints each integration file's wall time, slowest
// first, so the suite's budget (about 20 minutes on 2 cores) can be watched.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawn, spawnSync } from 'node:child_process';

const roots = process.argv.slice(2).length ? process.argv.slice(2) : ['src', 'test', 'examples'];
const files = [];
const walk = (dir) => {
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name.startsWith('.')) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith('.test.ts')) files.push(p);
  }
};
for (const r of roots) {
  if (statSync(r, { throwIfNoEntry: false })?.isDirectory()) walk(r);
  else if (r.endsWith('.ts')) files.push(r);
}
files.sort();
if (files.length === 0) {
  console.error('no test files found under', roots.join(', '));
  process.exit(1);
}
const unit = files.filter((f) => f.startsWith('src'));
const integration = files.filter((f) => !f.startsWith('src'));
const runnerArgs = (list, concurrency) => ['--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, '--test-reporter=spec', ...list];

const unitStatus = unit.length ? (spawnSync(process.execPath, runnerArgs(unit, process.env.TEST_CONCURRENCY ?? '2'), { stdio: 'inherit' }).status ?? 1) : 0;

const alone = (f) => /\/\/ drover-test: alone\b/.test(readFileSync(f, 'utf8').split('\n').slice(0, 15).join('\n'));
const width = Math.max(1, Number(process.env.TEST_CONCURRENCY ?? '2'));
const timings = [];
const failed = [];

/** One integration file in a runner of its own; beside others, its output is printed whole when it ends, so files do not interleave. */
function runFile(file, live) {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(process.execPath, runnerArgs([file], 1), { stdio: live ? ['ignore', 'inherit', 'inherit'] : ['ignore', 'pipe', 'pipe'] });
    const out = [];
    child.stdout?.on('data', (d) => out.push(d));
    child.stderr?.on('data', (d) => out.push(d));
    child.on('close', (code, signal) => {
      if (!live) process.stdout.write(Buffer.concat(out));
      const seconds = (Date.now() - started) / 1000;
      timings.push({ file, seconds });
      if (code !== 0) failed.push(`${file} (${signal ?? `exit ${code}`})`);
      resolve();
    });
  });
}

const started = Date.now();
const together = integration.filter((f) => !alone(f));
const separate = integration.filter(alone);
const queue = [...together];
await Promise.all(Array.from({ length: Math.min(width, queue.length) }, async () => {
  for (let f = queue.shift(); f !== undefined; f = queue.shift()) await runFile(f, width === 1);
}));
for (const f of separate) await runFile(f, true);

if (integration.length) {
  timings.sort((a, b) => b.seconds - a.seconds);
  const total = (Date.now() - started) / 1000;
  console.log(`\nintegration files: ${integration.length} in ${total.toFixed(0)} s (${width} at a time, ${separate.length} alone)`);
  for (const t of timings) console.log(`  ${t.seconds.toFixed(1).padStart(7)} s  ${t.file}`);
  if (failed.length) console.log(`\nfailed: ${failed.join(', ')}`);
}
process.exit(unitStatus || (failed.length ? 1 : 0));
