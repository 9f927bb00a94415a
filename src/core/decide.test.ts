import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decide, scaleInHoldMs } from './decide.js';
import { MetricStore } from './metrics.js';
import { DEFAULT_PLANNER_OPTIONS, roleHash, type PlanInstance } from './planner.js';
import { parseAppFile } from './spec.js';
import { AGENT_TRANSITIONS, ALL_STATES, canReport, isLive } from './states.js';

const spec = parseAppFile(`
app: d
roles:
  web:
    count: 2
    min: 1
    max: 6
    start: x
    warmup: 0s
    scale:
      - target: { metric: cpu, target: 0.5, scaleDown: { stabilization: 60s } }
`);
const web = spec.roles.web!;

function serving(id: string, since: number, now: number, cpu: number): PlanInstance {
  return {
    id, role: 'web', pool: null, state: 'serving', goal: 'run', roleHash: roleHash(web), exports: {}, importsSent: 'v', importsApplied: 'v',
    assignOrderId: 'o', stopOrderId: null, drainOrderId: null, createdAt: since, stateSince: since, startedAt: since, stopRequestedAt: null,
    drainRequestedAt: null, destroyedAt: null, lastSeenAt: now, busy: cpu,
  };
}

function step(now: number, since: number) {
  const metrics = new MetricStore();
  const instances = [serving('i-1', since, now, 0.01), serving('i-2', since, now, 0.01)];
  for (let t = since; t <= now; t += 1000) for (const i of instances) metrics.add('web', 'cpu', { t, value: 0.01, instance: i.id });
  return decide({
    app: { name: 'd', spec, deleting: false },
    roles: { web: { desired: 2, pinned: false } },
    instances,
    now,
    controllerStartedAt: since,
    metrics,
    options: DEFAULT_PLANNER_OPTIONS,
  });
}

test('no scale-in before the role has served for its scale-down stabilization: the initial count holds', () => {
  assert.equal(scaleInHoldMs(web.scale), 60_000);
  const early = step(116_000, 100_000);
  assert.equal(early.desired.web, 2);
  assert.equal(early.changes.length, 0);
  assert.match(early.decisions.web!.reason, /served for 16s of the 60s/);
  assert.ok(!early.plan.actions.some((a) => a.kind === 'drain' || a.kind === 'stop'));
});

test('once it has, the policy scales in, and the event names the victim', () => {
  const later = step(200_000, 100_000);
  assert.equal(later.desired.web, 1);
  assert.equal(later.changes[0]?.from, 2);
  assert.match(later.changes[0].reason, /victim i-\d/);
  assert.ok(later.plan.actions.some((a) => a.kind === 'drain'), JSON.stringify(later.plan.actions));
});

test('a pinned role is left to its operator', () => {
  const out = decide({
    app: { name: 'd', spec, deleting: false }, roles: { web: { desired: 3, pinned: true } }, instances: [], now: 1, controllerStartedAt: 0,
    metrics: new MetricStore(), options: DEFAULT_PLANNER_OPTIONS,
  });
  assert.equal(out.desired.web, 3);
  assert.equal(Object.keys(out.decisions).length, 0);
});

test('state machine: agents move forward, restart and undrain; nothing comes back from the end or to the start', () => {
  assert.ok(canReport('provisioning', 'serving'), 'heartbeats may skip steps');
  assert.ok(canReport('serving', 'starting'), 'a restart');
  assert.ok(canReport('draining', 'serving'), 'an undrain');
  assert.ok(!canReport('serving', 'spare'));
  assert.ok(!canReport('serving', 'waiting'));
  assert.ok(!canReport('stopping', 'serving'));
  for (const s of ['terminated', 'failed', 'unresponsive'] as const) for (const t of ALL_STATES) assert.equal(canReport(s, t), s === t);
  for (const [from, tos] of Object.entries(AGENT_TRANSITIONS)) for (const to of tos) assert.ok(ALL_STATES.includes(to), `${from} → ${to}`);
  assert.ok(isLive('serving') && isLive('spare') && !isLive('draining') && !isLive('stopping') && !isLive('unresponsive'));
});

test('tenants: policies never go below the floor the tenants need, and an instance with tenants is not a scale-in victim', () => {
  const tspec = parseAppFile(`
app: t
roles:
  labs:
    count: 1
    min: 1
    max: 6
    start: x
    tenants: { capacity: 2, add: "true", remove: "true" }
`);
  const labs = tspec.roles.labs!;
  const i = (id: string, tenants: number): PlanInstance => ({ ...serving(id, 0, 100_000, 0), role: 'labs', roleHash: roleHash(labs), tenants });
  const out = decide({
    app: { name: 't', spec: tspec, deleting: false },
    roles: { labs: { desired: 1, pinned: true, floor: 3 } },
    instances: [i('i-1', 2), i('i-2', 2), i('i-3', 1)],
    now: 100_000, controllerStartedAt: 0, metrics: new MetricStore(), options: DEFAULT_PLANNER_OPTIONS,
  });
  assert.equal(out.desired.labs, 3, 'a pin below the floor is raised to it');
  assert.ok(!out.plan.actions.some((a) => a.kind === 'drain' || a.kind === 'stop'));
  // Above the floor, only the instance without tenants may go.
  const more = decide({
    app: { name: 't', spec: tspec, deleting: false },
    roles: { labs: { desired: 1, pinned: true, floor: 1 } },
    instances: [i('i-1', 2), i('i-2', 0), i('i-3', 1)],
    now: 100_000, controllerStartedAt: 0, metrics: new MetricStore(), options: DEFAULT_PLANNER_OPTIONS,
  });
  const gone = more.plan.actions.filter((a) => a.kind === 'drain' || a.kind === 'stop').map((a) => ('instanceId' in a ? a.instanceId : ''));
  assert.deepEqual(gone, ['i-2']);
});
