#!/usr/bin/env node
// Runs every *.test.ts under the given folders (default: src, test and examples) with node's test runner
// through tsx. Node 20's runner has no glob support, so the file list is built here.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

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
// Unit suites (beside the code in src/) run two files at a time. The integration suites (test/,
// examples/) start real controllers, agents, HAProxy and RabbitMQ and measure timings, so they
// run one file at a time: on a 2-core machine two of them side by side starve each other.
const unit = files.filter((f) => f.startsWith('src'));
const integration = files.filter((f) => !f.startsWith('src'));
const run = (list, concurrency) => {
  if (list.length === 0) return 0;
  const res = spawnSync(
    process.execPath,
    ['--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, '--test-reporter=spec', ...list],
    { stdio: 'inherit' },
  );
  return res.status ?? 1;
};
const a = run(unit, process.env.TEST_CONCURRENCY ?? '2');
const b = run(integration, process.env.TEST_CONCURRENCY ?? '1');
process.exit(a || b);
