import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { RoleLog } from './output.js';
import { ProcessSupervisor, type ProcessEvent } from './process.js';
import { readStat } from './procfs.js';
import { runScript } from './script.js';

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'drover-proc-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Alive and not a zombie (PID 1 here may never reap orphans). */
function alive(pid: number): boolean {
  const st = readStat(pid);
  return st !== undefined && st.state !== 'Z' && st.state !== 'X';
}

async function until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

void test('a crashing command is restarted with backoff, then fails with its exit code and output', async (t) => {
  const dir = tempDir(t);
  const log = new RoleLog(join(dir, 'role.log'));
  const events: (ProcessEvent & { at: number })[] = [];
  const sup = new ProcessSupervisor({
    command: 'echo "boot $$"; echo "oops" >&2; exit 3',
    env: process.env,
    cwd: dir,
    log,
    restartBackoffMs: 50,
    restartBackoffMaxMs: 150,
    maxRestarts: 3,
    onEvent: (e) => events.push({ ...e, at: Date.now() }),
  });
  t.after(() => sup.stop(100));
  sup.start();
  await until(() => sup.state === 'failed', 5000, 'failed');

  const exits = events.filter((e) => e.type === 'exited');
  assert.deepEqual(
    exits.map((e) => e.restartInMs),
    [50, 100, 150],
    'delays double up to the cap',
  );
  assert.equal(events.filter((e) => e.type === 'spawned').length, 4, 'maxRestarts + 1 runs');
  assert.equal(sup.restarts, 3);
  // Never a tight loop: each spawn comes at least its backoff after the previous exit.
  const spawns = events.filter((e) => e.type === 'spawned');
  for (let i = 0; i < exits.length; i++) {
    assert.ok(spawns[i + 1]!.at - exits[i]!.at >= exits[i]!.restartInMs - 5);
  }
  const failed = events.at(-1);
  assert.equal(failed?.type, 'failed');
  assert.equal(sup.lastExit?.code, 3);
  assert.equal(sup.lastExit?.signal, null);
  assert.match(sup.lastExit?.tail.join('\n') ?? '', /boot \d+/);
  assert.ok(sup.lastExit?.tail.includes('oops'));
  await log.close();
  const logged = readFileSync(join(dir, 'role.log'), 'utf8');
  assert.equal(logged.match(/oops/g)?.length, 4, 'every run is in role.log');
});

void test('stop ends the whole process tree, children of bash included', async (t) => {
  const dir = tempDir(t);
  const pidsFile = join(dir, 'pids');
  const sup = new ProcessSupervisor({
    command: `sleep 300 & echo $! >> ${pidsFile}; sleep 300 & echo $! >> ${pidsFile}; wait`,
    env: process.env,
    cwd: dir,
    stopTimeoutMs: 2000,
  });
  t.after(() => sup.stop(100));
  sup.start();
  const bash = sup.pid!;
  await until(() => (readFileSafe(pidsFile).trim().split('\n').length ?? 0) >= 2, 3000, 'children');
  const children = readFileSafe(pidsFile).trim().split('\n').map(Number);
  assert.equal(children.length, 2);
  for (const pid of [bash, ...children]) assert.ok(alive(pid), `${pid} runs before stop`);

  await sup.stop();
  assert.equal(sup.state, 'stopped');
  for (const pid of [bash, ...children]) assert.ok(!alive(pid), `${pid} is gone after stop`);
});

void test('stop escalates to SIGKILL when SIGTERM is ignored', async (t) => {
  const dir = tempDir(t);
  const sup = new ProcessSupervisor({
    command: `trap '' TERM; echo ready; while true; do sleep 0.05; done`,
    env: process.env,
    cwd: dir,
    stopTimeoutMs: 300,
  });
  t.after(() => sup.stop(100));
  sup.start();
  await until(() => sup.tail().includes('ready'), 3000, 'ready');
  const pid = sup.pid!;
  const t0 = Date.now();
  await sup.stop();
  assert.ok(Date.now() - t0 >= 250, 'waited for the timeout before SIGKILL');
  assert.ok(!alive(pid));
  assert.equal(sup.lastExit?.signal, 'SIGKILL');
});

void test('a stable run is not restarted, and a run past stableAfterMs resets the failure count', async (t) => {
  const dir = tempDir(t);
  const events: ProcessEvent[] = [];
  const sup = new ProcessSupervisor({
    command: 'sleep 0.4; exit 1',
    env: process.env,
    cwd: dir,
    restartBackoffMs: 50,
    stableAfterMs: 300,
    maxRestarts: 1,
    onEvent: (e) => events.push(e),
  });
  t.after(() => sup.stop(100));
  sup.start();
  await sleep(250);
  assert.deepEqual(
    events.map((e) => e.type),
    ['spawned'],
    'nothing happens while it runs',
  );
  // Each run outlives stableAfterMs, so with maxRestarts 1 it still never gives up.
  await until(() => events.filter((e) => e.type === 'exited').length >= 3, 5000, 'three exits');
  assert.notEqual(sup.state, 'failed');
  for (const e of events) if (e.type === 'exited') assert.equal(e.failures, 1);
});

void test('restart() kills the run and counts as a failure for backoff', async (t) => {
  const dir = tempDir(t);
  const events: ProcessEvent[] = [];
  const sup = new ProcessSupervisor({
    command: 'sleep 300',
    env: process.env,
    cwd: dir,
    restartBackoffMs: 50,
    stopTimeoutMs: 500,
    onEvent: (e) => events.push(e),
  });
  t.after(() => sup.stop(100));
  sup.start();
  const first = sup.pid!;
  sup.restart('health check failed 3 times');
  await until(() => sup.pid !== undefined && sup.pid !== first, 3000, 'second run');
  assert.ok(!alive(first));
  const exited = events.find((e) => e.type === 'exited');
  assert.ok(exited?.type === 'exited');
  assert.equal(exited.failures, 1);
  assert.equal(exited.exit.signal, 'SIGTERM');
  assert.ok(exited.exit.tail.some((l) => l.includes('health check failed 3 times')));
  assert.equal(sup.restarts, 1);
});

void test('runScript reports code and tail, and a timeout ends the whole group', async (t) => {
  const dir = tempDir(t);
  const ok = await runScript({ command: 'echo one; echo two >&2; exit 4', env: process.env, cwd: dir, timeoutMs: 5000 });
  assert.equal(ok.code, 4);
  assert.equal(ok.timedOut, false);
  assert.deepEqual([...ok.tail].sort(), ['one', 'two']);

  const pidsFile = join(dir, 'pids');
  const slow = await runScript({
    command: `sleep 300 & echo $! > ${pidsFile}; wait`,
    env: process.env,
    cwd: dir,
    timeoutMs: 300,
    killGraceMs: 200,
  });
  assert.equal(slow.timedOut, true);
  assert.equal(slow.code, null);
  const child = Number(readFileSafe(pidsFile).trim());
  assert.ok(child > 0 && !alive(child), 'the background child is gone too');

  const ac = new AbortController();
  const pending = runScript({ command: 'sleep 300', env: process.env, cwd: dir, timeoutMs: 10_000, signal: ac.signal });
  setTimeout(() => ac.abort(), 100);
  const aborted = await pending;
  assert.equal(aborted.aborted, true);
  assert.equal(aborted.signal, 'SIGTERM');
});

function readFileSafe(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}
