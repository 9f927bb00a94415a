/**
 * The embedded store's commits reach the disk (src/adapters/store/pglite-durable.ts): PGlite as
 * shipped never calls fsync. Checked from outside, as the kernel sees it: strace counts the
 * fsync calls of a process that opens a store and commits.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const hasStrace = spawnSync('strace', ['-V']).status === 0;
const THREAD = new URL('../dist/adapters/store/pglite-thread.js', import.meta.url).href;
const TEMPLATE = new URL('../dist/store-template/', import.meta.url).pathname;

/** Runs a process that opens the store in `dir` and commits `commits` inserts, one by one, under strace; the fsync calls it made. */
function fsyncsOf(dir: string, commits: number, out: string): { fsyncs: number } {
  const script = `
    const { openPgliteThread } = await import(${JSON.stringify(THREAD)});
    const c = await openPgliteThread(${JSON.stringify(join(dir, 'db'))}, ${JSON.stringify(TEMPLATE)});
    await c.exec('create table if not exists t (x int)');
    for (let i = 0; i < ${commits}; i++) await c.query('insert into t values ($1)', [i]);
    await c.close();`;
  const r = spawnSync('strace', ['-f', '-qq', '-e', 'trace=fsync', '-o', out, process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  const lines = readFileSync(out, 'utf8').split('\n');
  // A call another thread interrupts is written in two lines: `fsync(7 <unfinished ...>`, then `<... fsync resumed>) = 0`.
  return { fsyncs: lines.filter((l) => / fsync\(\d+(\)\s+= 0| <unfinished)/.test(l)).length };
}

test('a new store is synced to disk, and each commit fsyncs the WAL before it returns', { skip: !hasStrace && process.env.CI !== 'true' && 'needs strace', timeout: 240_000 }, () => {
  assert.ok(hasStrace, 'strace is needed (CI installs it: .ci/run)');
  const dir = mkdtempSync(join(tmpdir(), 'drover-durable-'));
  try {
    const files = (d: string): number => readdirSync(d, { withFileTypes: true }).reduce((n, e) => n + (e.isDirectory() ? 1 + files(join(d, e.name)) : 1), 0);
    const seeded = fsyncsOf(dir, 0, join(dir, 'seed.trace'));
    const copied = files(join(dir, 'db'));
    assert.ok(seeded.fsyncs >= copied * 0.9, `the copy of the template is synced: ${seeded.fsyncs} fsyncs for ${copied} files and folders`);
    // Reopened (no copy): what is left is PostgreSQL's own, one at least per commit.
    const few = fsyncsOf(dir, 2, join(dir, 'few.trace'));
    const many = fsyncsOf(dir, 42, join(dir, 'many.trace'));
    // About one per commit (PostgreSQL skips a flush the WAL had already had); none at all before the fix.
    assert.ok(many.fsyncs - few.fsyncs >= 32, `40 more commits, ${many.fsyncs - few.fsyncs} more fsyncs (${few.fsyncs} then ${many.fsyncs})`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
