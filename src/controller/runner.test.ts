import { afterEach, beforeEach, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { Runner, TerminalError, type ReconcileResult } from './runner.js';

// A fake clock: setTimeout and Date move only when the test ticks, so backoffs and requeues are
// checked to the millisecond. setImmediate is real and lets the promises in between settle.
beforeEach(() => mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 0 }));
afterEach(() => mock.timers.reset());

/** A delay of 0 fires on the next millisecond, as Node's real setTimeout does. */
const SOON = 1;

const settle = async () => {
  for (let k = 0; k < 5; k++) await new Promise<void>((r) => setImmediate(r));
};
/** Moves the fake clock `ms` forward, settling promises at each step so chained timers fire too. */
async function advance(ms: number): Promise<void> {
  for (let k = 0; k < ms; k++) {
    await settle();
    mock.timers.tick(1);
  }
  await settle();
}

interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly key?: string;
  readonly retryInMs?: number;
}

interface Deferred {
  readonly promise: Promise<ReconcileResult>;
  resolve(r?: ReconcileResult): void;
  reject(e: Error): void;
}
function deferred(): Deferred {
  let resolve!: (r: ReconcileResult) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<ReconcileResult>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve: (r = {}) => resolve(r), reject };
}

/**
 * A runner around a scripted reconcile: `script(key, n)` says what the n-th call (from 0) of that
 * key does. Records every call with its time and the most reconciles of one key at once.
 */
function harness(script: (key: string, n: number) => Promise<ReconcileResult> | ReconcileResult, opts?: { baseBackoffMs?: number; maxBackoffMs?: number }) {
  const calls: { key: string; at: number }[] = [];
  const running = new Map<string, number>();
  const mostAtOnce = new Map<string, number>();
  const logs: LogLine[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as LogLine) });
  const runner = new Runner(
    async (key) => {
      const n = calls.filter((c) => c.key === key).length;
      calls.push({ key, at: Date.now() });
      running.set(key, (running.get(key) ?? 0) + 1);
      mostAtOnce.set(key, Math.max(mostAtOnce.get(key) ?? 0, running.get(key)!));
      try {
        return await script(key, n);
      } finally {
        running.set(key, running.get(key)! - 1);
      }
    },
    log,
    opts,
  );
  const times = (key: string) => calls.filter((c) => c.key === key).map((c) => c.at);
  return { runner, calls, times, mostAtOnce, logs };
}

test('enqueues of one key are de-duplicated; the soonest request wins', async () => {
  const h = harness(() => ({}));
  for (let k = 0; k < 5; k++) h.runner.enqueue('app/a');
  await advance(10);
  assert.deepEqual(h.times('app/a'), [SOON], 'five wake-ups, one reconcile');

  h.runner.enqueue('app/b', 500);
  h.runner.enqueue('app/b', 100);
  h.runner.enqueue('app/b', 300);
  await advance(1000);
  assert.deepEqual(h.times('app/b'), [110], 'the 100 ms request replaced the 500 ms one; the 300 ms one was already covered');
  h.runner.stop();
});

test('one reconcile per key at a time; wake-ups during it coalesce into one more pass; other keys go on', async () => {
  const gates: Deferred[] = [];
  const h = harness((key) => {
    if (key !== 'slow') return {};
    const d = deferred();
    gates.push(d);
    return d.promise;
  });
  h.runner.enqueue('slow');
  await advance(1);
  assert.equal(gates.length, 1);
  for (let k = 0; k < 4; k++) h.runner.enqueue('slow');
  h.runner.enqueue('slow', 50); // a delayed request falling due while it still runs
  h.runner.enqueue('fast');
  await advance(100);
  assert.equal(gates.length, 1, 'no second reconcile of a key while one runs');
  assert.deepEqual(h.times('fast'), [1 + SOON], 'another key is not held up');

  gates[0]!.resolve();
  await advance(1);
  assert.equal(gates.length, 2, 'the wake-ups during the pass are not lost: one more pass');
  gates[1]!.resolve();
  await advance(1000);
  assert.equal(gates.length, 2, 'and only one');
  assert.equal(h.mostAtOnce.get('slow'), 1);
  h.runner.stop();
});

test('requeueAfterMs is honoured to the millisecond, and 0 means again at once', async () => {
  const h = harness((key, n) => {
    if (key === 'later') return n === 0 ? { requeueAfterMs: 750 } : {};
    return n < 2 ? { requeueAfterMs: 0 } : {};
  });
  h.runner.enqueue('later');
  h.runner.enqueue('now');
  await advance(2000);
  assert.deepEqual(h.times('later'), [SOON, SOON + 750]);
  assert.deepEqual(h.times('now'), [SOON, 2 * SOON, 3 * SOON]);
  h.runner.stop();
});

test('a thrown error is retried with exponential backoff, capped; success resets it', async () => {
  const fails = new Set([0, 1, 2, 3, 4, 6]);
  const h = harness((_key, n) => {
    if (fails.has(n)) throw new Error(`attempt ${n} failed`);
    return {};
  }, { baseBackoffMs: 100, maxBackoffMs: 500 });
  h.runner.enqueue('app/a');
  await advance(1500);
  // 100, 200, 400, then capped at 500; the 6th call succeeds.
  assert.deepEqual(h.times('app/a'), [0, 100, 300, 700, 1200].map((t) => SOON + t));
  await advance(500);
  assert.equal(h.times('app/a').length, 6);
  assert.deepEqual(h.logs.filter((l) => l.msg === 'reconcile failed; retrying').map((l) => l.retryInMs), [100, 200, 400, 500, 500]);

  h.runner.enqueue('app/a'); // fails again: the backoff starts over at 100
  await advance(1000);
  assert.deepEqual(h.times('app/a').slice(6), [2000 + SOON, 2100 + SOON]);
  h.runner.stop();
});

test('a TerminalError is logged and not retried; the key still runs when asked again', async () => {
  const h = harness((_key, n) => {
    if (n === 0) throw new TerminalError('the app file is invalid', { cause: new Error('bad field') });
    return {};
  });
  h.runner.enqueue('app/a');
  await advance(60_000);
  assert.deepEqual(h.times('app/a'), [SOON]);
  const line = h.logs.find((l) => l.msg === 'reconcile failed for good');
  assert.equal(line?.key, 'app/a');
  h.runner.enqueue('app/a');
  await advance(1);
  assert.deepEqual(h.times('app/a'), [SOON, 60_000 + SOON]);
  h.runner.stop();
});

test('a reconcile that panics (throws before returning a promise, or a non-Error) is caught and retried; the process lives on', async () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown) => void unhandled.push(e);
  process.on('unhandledRejection', onUnhandled);
  try {
    const calls: string[] = [];
    const logs: LogLine[] = [];
    const runner = new Runner(
      (key) => {
        calls.push(key);
        if (calls.length === 1) throw new TypeError("Cannot read properties of undefined (reading 'roles')");
        // A rejection with no Error in it, as some libraries do.
        if (calls.length === 2) return Promise.reject(Object.assign(Object.create(null) as Error, { code: 'EWEIRD' }));
        return Promise.resolve({});
      },
      pino({ level: 'warn' }, { write: (line: string) => void logs.push(JSON.parse(line) as LogLine) }),
      { baseBackoffMs: 10 },
    );
    runner.enqueue('app/a');
    await advance(100);
    assert.deepEqual(calls, ['app/a', 'app/a', 'app/a'], 'retried after each panic, then succeeded');
    assert.equal(logs.filter((l) => l.msg === 'reconcile failed; retrying').length, 2);
    runner.stop();
  } finally {
    await settle();
    process.off('unhandledRejection', onUnhandled);
  }
  assert.deepEqual(unhandled, []);
});

test('stop() cancels what is queued, ignores later enqueues, and a pass still running requeues nothing', async () => {
  const gate = deferred();
  const h = harness((key) => (key === 'running' ? gate.promise : {}));
  h.runner.enqueue('running');
  h.runner.enqueue('queued', 200);
  await advance(1);
  h.runner.enqueue('running'); // would make it run again after this pass
  h.runner.stop();
  h.runner.enqueue('late');
  gate.resolve({ requeueAfterMs: 0 });
  await advance(5000);
  assert.deepEqual(
    h.calls.map((c) => c.key),
    ['running'],
  );
});

test('stop() also ends a failing key: no retry after it', async () => {
  const gate = deferred();
  const h = harness(() => gate.promise, { baseBackoffMs: 10 });
  h.runner.enqueue('app/a');
  await advance(1);
  h.runner.stop();
  gate.reject(new Error('store closed'));
  await advance(1000);
  assert.equal(h.calls.length, 1);
});

test('forget() drops a key: its pending requeue does not fire', async () => {
  const h = harness(() => ({ requeueAfterMs: 100 }));
  h.runner.enqueue('app/a');
  h.runner.enqueue('app/b');
  await advance(1);
  h.runner.forget('app/a');
  await advance(250);
  assert.deepEqual(h.times('app/a'), [SOON]);
  assert.deepEqual(h.times('app/b'), [SOON, SOON + 100, SOON + 200]);
  h.runner.stop();
});

test('stop() leaves no timer behind, so the process can exit', () => {
  mock.timers.reset(); // real timers: what keeps a process alive is what matters here
  const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const before = timers();
  const h = harness(() => ({}));
  h.runner.enqueue('app/a', 60_000);
  h.runner.enqueue('app/b', 30_000);
  assert.equal(timers(), before + 2);
  h.runner.stop();
  assert.equal(timers(), before);
});
