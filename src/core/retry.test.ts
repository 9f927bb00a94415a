/** `drover retry` in the planner: failures up to the retry no longer hold replacements back. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_PLANNER_OPTIONS, parseAppFile, plan, roleHash, type PlanInstance } from './index.js';

const spec = parseAppFile('app: shop\nroles:\n  db:\n    count: 1\n    start: db\n');
const failed = (k: number, at: number): PlanInstance => ({
  id: `i-${k}`, role: 'db', pool: null, state: 'failed', goal: 'run', roleHash: roleHash(spec.roles.db!), exports: null, importsSent: null,
  assignOrderId: 'o-1', stopOrderId: null, drainOrderId: null, importsApplied: null, createdAt: at - 500, stateSince: at, stopRequestedAt: null,
  drainRequestedAt: null, destroyedAt: at + 10, lastSeenAt: at,
});
const now = 100_000;
const three = [failed(1, now - 3000), failed(2, now - 2000), failed(3, now - 1000)];
const base = { app: { name: 'shop', spec, deleting: false }, desired: { db: 1 }, instances: three, now, controllerStartedAt: 0, options: DEFAULT_PLANNER_OPTIONS };

void test('a degraded role is replaced at once after a retry, and is degraded again only by new failures', () => {
  const before = plan(base);
  assert.equal(before.roles.db?.degraded, true);
  assert.equal(before.actions.filter((a) => a.kind === 'create').length, 0);
  assert.match(before.actions.find((a) => a.kind === 'note')?.reason ?? '', /`drover retry db`$/);

  const retried = plan({ ...base, failuresClearedAt: { db: now - 500 } });
  assert.equal(retried.roles.db?.degraded, false);
  assert.equal(retried.actions.filter((a) => a.kind === 'create').length, 1, 'replaced now, no backoff');

  // Failures after the retry count again: two are a backoff, three degrade the role again.
  const again = [...three, failed(4, now + 1000), failed(5, now + 2000)];
  const two = plan({ ...base, instances: again, now: now + 2500, failuresClearedAt: { db: now - 500 } });
  assert.equal(two.roles.db?.degraded, false);
  assert.match(two.actions.find((a) => a.kind === 'note')?.reason ?? '', /^db: 2 failed instance\(s\)/);
  // A retry of another role changes nothing here.
  assert.equal(plan({ ...base, failuresClearedAt: { api: now } }).roles.db?.degraded, true);
});
