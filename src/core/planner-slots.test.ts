import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAppFile } from './spec.js';
import { DEFAULT_PLANNER_OPTIONS, plan, roleHash, type PlanAction, type PlanInput, type PlanInstance } from './planner.js';
import type { InstanceState } from './states.js';

const spec = parseAppFile(`
app: shop
roles:
  db:
    count: 1
    start: db
    volumes: [data]
  front:
    count: 1
    start: front
    listen: 8080
`);
const oldHash = 'old-spec';

function inst(id: string, role: string, state: InstanceState, over: Partial<PlanInstance> = {}): PlanInstance {
  return {
    id, role, pool: null, state, goal: 'run', roleHash: roleHash(spec.roles[role]!), exports: null, importsSent: null, importsApplied: null,
    assignOrderId: state === 'provisioning' ? null : 'o-1', stopOrderId: null, drainOrderId: null, createdAt: 1000, stateSince: 1000,
    stopRequestedAt: null, drainRequestedAt: null, destroyedAt: null, lastSeenAt: 10_000, ...over,
  };
}
const input = (instances: PlanInstance[]): PlanInput => ({
  app: { name: 'shop', spec, deleting: false }, desired: {}, instances, now: 10_000, controllerStartedAt: 0, options: DEFAULT_PLANNER_OPTIONS,
});
const front = inst('i-f', 'front', 'serving');
const ofRole = (role: string) => (a: PlanAction) => 'role' in a && a.role === role;

test('a role with volumes gives each member a slot; a roll replaces the member in place, the new one taking its slot once it is gone', () => {
  // Nothing yet: the first member takes slot 0.
  const first = plan(input([front])).actions.filter(ofRole('db'));
  assert.deepEqual(first.map((a) => [a.kind, a.kind === 'create' ? a.slot : undefined]), [['create', 0]]);

  // An outdated member: no surge (the slot's data has one user at a time); it drains first.
  const old = inst('i-old', 'db', 'serving', { roleHash: oldHash, slot: 0 });
  const roll = plan(input([front, old])).actions.filter(ofRole('db'));
  assert.deepEqual(roll.map((a) => `${a.kind} ${'instanceId' in a ? a.instanceId : ''}`), ['drain i-old']);
  assert.match(roll[0]!.reason, /replacing it in place \(slot db-0, it leaves first\)/);

  // Draining: the replacement waits for slot 0, and says why.
  const draining = { ...old, goal: 'drain' as const, drainRequestedAt: 9000 };
  const wait = plan(input([front, draining])).actions.filter(ofRole('db'));
  assert.ok(!wait.some((a) => a.kind === 'create'), 'no member created while the slot is held');
  assert.match(wait.find((a) => a.kind === 'note')?.reason ?? '', /waiting for member slot db-0: i-old still holds it/);

  // Gone: the replacement takes slot 0, and with it the volumes.
  const gone = { ...draining, state: 'terminated' as const, destroyedAt: 9500 };
  const next = plan(input([front, gone])).actions.filter(ofRole('db'));
  assert.deepEqual(next.map((a) => [a.kind, a.kind === 'create' ? a.slot : undefined]), [['create', 0]]);
});

test('an unresponsive member of a role with volumes is destroyed at once: its replacement needs the slot', () => {
  const silent = inst('i-db', 'db', 'unresponsive', { slot: 0, stateSince: 9000 });
  const actions = plan(input([front, silent])).actions;
  assert.ok(actions.some((a) => a.kind === 'destroy' && a.instanceId === 'i-db'), JSON.stringify(actions));
});

test('a listen role still rolls with a surge: the port keeper holds the port for both members', () => {
  const old = inst('i-old', 'front', 'serving', { roleHash: oldHash });
  const db = inst('i-db', 'db', 'serving', { slot: 0 });
  const actions = plan(input([db, old])).actions.filter(ofRole('front'));
  assert.deepEqual(actions.map((a) => a.kind), ['create']);
});
