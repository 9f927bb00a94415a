import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Intake, IntakeFullError } from './intake.js';

const tick = () => new Promise((r) => setImmediate(r));

test('intake: at most `concurrency` at once, the rest in arrival order, refused beyond maxWaiting', async () => {
  const intake = new Intake(2, 3);
  let live = 0;
  let most = 0;
  const order: number[] = [];
  const gates: (() => void)[] = [];
  const job = (k: number) => intake.run(async () => {
    live++;
    most = Math.max(most, live);
    order.push(k);
    await new Promise<void>((r) => gates.push(r));
    live--;
    return k;
  });
  const running = [0, 1, 2, 3, 4].map(job);
  await tick();
  assert.equal(live, 2);
  assert.equal(intake.queued, 3);
  await assert.rejects(job(5), IntakeFullError);
  while (order.length < 5 || gates.length > 0) {
    gates.shift()?.();
    await tick();
  }
  assert.deepEqual(await Promise.all(running), [0, 1, 2, 3, 4]);
  assert.deepEqual(order, [0, 1, 2, 3, 4]);
  assert.equal(most, 2);
  assert.equal(intake.queued, 0);
});

test('intake: a failing call frees its slot', async () => {
  const intake = new Intake(1, 10);
  await assert.rejects(intake.run(() => Promise.reject(new Error('boom'))), /boom/);
  assert.equal(await intake.run(() => Promise.resolve(7)), 7);
});
