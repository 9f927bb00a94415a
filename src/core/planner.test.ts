import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAppFile } from './spec.js';
import { DEFAULT_PLANNER_OPTIONS, plan, roleHash, type PlanInput, type PlanInstance } from './planner.js';
import type { InstanceState } from './states.js';
import type { AppSpec } from './types.js';

const spec: AppSpec = parseAppFile(`
app: shop
roles:
  db:
    count: 1
    start: db
    exports: { url: "http://\${ip}:\${port}" }
  api:
    count: 2
    imports: [db.url]
    start: api
    exports: { endpoint: "http://\${ip}:\${port}" }
  front:
    count: 1
    imports: [api.*]
    start: front
`);

let seq = 0;
function inst(role: string, state: InstanceState, over: Partial<PlanInstance> = {}): PlanInstance {
  seq++;
  return {
    id: `i-${String(seq).padStart(4, '0')}`,
    role,
    pool: null,
    state,
    goal: 'run',
    roleHash: roleHash(spec.roles[role]!),
    exports: state === 'serving' ? { url: `u${seq}`, endpoint: `e${seq}` } : null,
    importsSent: null,
    assignOrderId: state === 'provisioning' || state === 'spare' ? null : 'o-1',
    stopOrderId: null,
    drainOrderId: null,
    importsApplied: null,
    createdAt: 1000 + seq,
    stateSince: 1000 + seq,
    stopRequestedAt: null,
    drainRequestedAt: null,
    destroyedAt: null,
    lastSeenAt: 10_000,
    ...over,
  };
}

const input = (instances: PlanInstance[], over: Partial<PlanInput> = {}): PlanInput => ({
  app: { name: 'shop', spec, deleting: false },
  desired: { db: 1, api: 2, front: 1 },
  instances,
  now: 10_000,
  controllerStartedAt: 0,
  options: DEFAULT_PLANNER_OPTIONS,
  ...over,
});

test('an empty app creates every role at its count, all at once', () => {
  const p = plan(input([]));
  const creates = p.actions.filter((a) => a.kind === 'create').map((a) => a.role);
  assert.deepEqual(creates.sort(), ['api', 'api', 'db', 'front']);
  assert.equal(p.converged, false);
  assert.deepEqual(p.roles.api?.missingImports, ['db.url']);
});

test('registered agents are assigned with the imports resolved so far', () => {
  const db = inst('db', 'serving');
  const api = inst('api', 'spare');
  const p = plan(input([db, api, inst('api', 'waiting'), inst('front', 'waiting')]));
  const assign = p.actions.find((a) => a.kind === 'assign');
  assert.ok(assign && assign.kind === 'assign');
  assert.equal(assign.instanceId, api.id);
  assert.deepEqual(assign.imports, { db: [{ instance: db.id, exports: { url: db.exports!.url } }] });
});

test('imports are re-sent only when what they resolve to changes', () => {
  const db = inst('db', 'serving');
  const a1 = inst('api', 'serving');
  const first = plan(input([db, a1, inst('api', 'serving'), inst('front', 'serving')]));
  const sent = first.actions.filter((a) => a.kind === 'imports');
  assert.equal(sent.length, 3);
  const versions = new Map(sent.map((a) => [a.instanceId, a.kind === 'imports' ? a.importsVersion : '']));
  const again = plan(
    input([db, a1, inst('api', 'serving'), inst('front', 'serving')].map((i) => ({ ...i, importsSent: versions.get(i.id) ?? null }))),
  );
  // api members are new objects with new ids in the second call, so front sees a change; db/api imports do not.
  const apiImports = again.actions.filter((a) => a.kind === 'imports' && a.role === 'api' && a.instanceId === a1.id);
  assert.equal(apiImports.length, 0);
});

test('a converged app plans nothing', () => {
  const db = inst('db', 'serving');
  const apis = [inst('api', 'serving'), inst('api', 'serving')];
  const front = inst('front', 'serving');
  const p0 = plan(input([db, ...apis, front]));
  const ver = new Map(p0.actions.flatMap((a) => (a.kind === 'imports' ? [[a.instanceId, a.importsVersion] as const] : [])));
  const p = plan(input([db, ...apis, front].map((i) => ({ ...i, importsSent: ver.get(i.id) ?? null }))));
  assert.deepEqual(p.actions, []);
  assert.equal(p.converged, true);
});

test('scale-in stops instances that are not serving first, then drains the least busy, then the newest', () => {
  const old = inst('api', 'serving', { createdAt: 1 });
  const newer = inst('api', 'serving', { createdAt: 5 });
  const starting = inst('api', 'starting', { createdAt: 3 });
  const p = plan(input([inst('db', 'serving'), old, newer, starting, inst('front', 'serving')], { desired: { db: 1, api: 1, front: 1 } }));
  const leaving = p.actions.filter((a) => a.kind === 'stop' || a.kind === 'drain').map((a) => `${a.kind} ${'instanceId' in a ? a.instanceId : ''}`);
  assert.deepEqual(leaving, [`stop ${starting.id}`, `drain ${newer.id}`]);
  const drain = p.actions.find((a) => a.kind === 'drain');
  assert.match(drain?.reason ?? '', /^api 2→1: 1 desired; victim i-\d+ \(no tenants, cpu 0\.00\)$/);

  const busyNew = inst('api', 'serving', { createdAt: 9, busy: 0.9 });
  const idleOld = inst('api', 'serving', { createdAt: 1, busy: 0.1 });
  const q = plan(input([inst('db', 'serving'), busyNew, idleOld, inst('front', 'serving')], { desired: { db: 1, api: 1, front: 1 } }));
  assert.deepEqual(q.actions.filter((a) => a.kind === 'drain').map((a) => ('instanceId' in a ? a.instanceId : '')), [idleOld.id], 'least busy before newest');
});

test('a drained member leaves its importers before its drain order goes; load coming back cancels the drain', () => {
  const db = inst('db', 'serving');
  const a1 = inst('api', 'serving');
  const a2 = inst('api', 'serving', { goal: 'drain', drainRequestedAt: 9_000, exports: null });
  const front = inst('front', 'serving', { importsSent: 'old', importsApplied: 'old' });
  const p = plan(input([db, a1, a2, front], { desired: { db: 1, api: 1, front: 1 } }));
  assert.ok(p.actions.some((a) => a.kind === 'imports' && a.instanceId === front.id), 'front is told first');
  assert.ok(!p.actions.some((a) => a.kind === 'drainOrder'), 'no drain order before front applied it');
  const version = p.actions.find((a) => a.kind === 'imports' && a.instanceId === front.id);
  const sent = version?.kind === 'imports' ? version.importsVersion : '';
  const p2 = plan(input([db, a1, a2, { ...front, importsSent: sent, importsApplied: sent }], { desired: { db: 1, api: 1, front: 1 } }));
  assert.deepEqual(p2.actions.filter((a) => a.kind !== 'imports' || a.instanceId === front.id).map((a) => a.kind), ['drainOrder']);

  const back = plan(input([db, a1, { ...a2, drainOrderId: 'o-9' }, { ...front, importsSent: sent, importsApplied: sent }], { desired: { db: 1, api: 2, front: 1 } }));
  const undrain = back.actions.find((a) => a.kind === 'undrain');
  assert.equal(undrain?.kind === 'undrain' ? undrain.instanceId : '', a2.id);
  assert.ok(!back.actions.some((a) => a.kind === 'create'), 'no new instance while a drain can be cancelled');
});

test('scale-out takes a warm spare first and refills the pool in the same pass', () => {
  const withSpares = parseAppFile(`
app: shop
spares: 1
roles:
  api:
    count: 1
    spares: 1
    start: api
`);
  const base = { app: { name: 'shop', spec: withSpares, deleting: false } };
  const spareApi = { ...inst('api', 'spare'), role: null, pool: 'api', roleHash: '' };
  const spareAny = { ...inst('api', 'spare'), role: null, pool: '*', roleHash: '' };
  const a1 = { ...inst('api', 'serving'), roleHash: roleHash(withSpares.roles.api!) };
  const steady = plan(input([a1, spareApi, spareAny], { ...base, desired: { api: 1 } }));
  assert.deepEqual(steady.actions, []);
  assert.deepEqual(steady.spares, { '*': 1, api: 1 });

  const p = plan(input([a1, spareApi, spareAny], { ...base, desired: { api: 3 } }));
  const claims = p.actions.filter((a) => a.kind === 'assign' && a.claim).map((a) => ('instanceId' in a ? a.instanceId : ''));
  assert.deepEqual(claims, [spareApi.id, spareAny.id], "the role's own pool first, then the app's");
  const creates = p.actions.filter((a) => a.kind === 'create').map((a) => (a.kind === 'create' ? `${a.role ?? 'spare'}:${a.pool ?? ''}` : ''));
  assert.deepEqual(creates.sort(), ['spare:*', 'spare:api']);
  const assign = p.actions.find((a) => a.kind === 'assign');
  assert.match(assign?.reason ?? '', /warm spare i-\d+ takes the role$/);
});

test('three failures in the window mark a role degraded and stop replacements', () => {
  const now = 100_000;
  const h = roleHash(spec.roles.db!);
  const failed = [1, 2, 3].map((k) => inst('db', 'failed', { stateSince: now - k * 1000, destroyedAt: now - k * 900, roleHash: h }));
  const p = plan(input(failed, { now, desired: { db: 1, api: 0, front: 0 } }));
  assert.equal(p.actions.filter((a) => a.kind === 'create').length, 0);
  assert.equal(p.roles.db?.degraded, true);
  assert.match(p.actions.find((a) => a.kind === 'note')?.reason ?? '', /^db is degraded: 3 instances failed in the last 10 min/);
});

test('a silent agent is declared unresponsive and replaced', () => {
  const api = inst('api', 'serving', { lastSeenAt: 1000 });
  const p = plan(input([inst('db', 'serving'), api, inst('api', 'serving'), inst('front', 'serving')], { now: 1000 + DEFAULT_PLANNER_OPTIONS.heartbeatTimeoutMs }));
  const mark = p.actions.find((a) => a.kind === 'unresponsive');
  assert.ok(mark && mark.kind === 'unresponsive');
  assert.equal(mark.instanceId, api.id);
  assert.match(mark.reason, /sent no heartbeat for 6\.0s/);
  assert.equal(p.actions.filter((a) => a.kind === 'create' && a.role === 'api').length, 1, 'a replacement is commissioned');
  assert.ok(!p.actions.some((a) => a.kind === 'destroy'), 'the old one stays fenced until the role is back to strength');
  // Later: the replacement serves; the unresponsive one is destroyed.
  const marked = { ...api, state: 'unresponsive' as const, stateSince: 7000 };
  const repl = inst('api', 'serving');
  const q = plan(input([inst('db', 'serving'), marked, inst('api', 'serving'), repl, inst('front', 'serving')], { now: 8000 }));
  assert.ok(q.actions.some((a) => a.kind === 'destroy' && a.instanceId === api.id));
});

test('failed instances are released; repeated failures back off before replacement', () => {
  const now = 100_000;
  const f1 = inst('db', 'failed', { stateSince: now - 1000, destroyedAt: now - 900 });
  const once = plan(input([f1], { now, desired: { db: 1, api: 0, front: 0 } }));
  assert.equal(once.actions.filter((a) => a.kind === 'create').length, 1, 'first failure: replaced at once');

  const f2 = inst('db', 'failed', { stateSince: now - 500 });
  const twice = plan(input([f1, f2], { now, desired: { db: 1, api: 0, front: 0 } }));
  assert.equal(twice.actions.filter((a) => a.kind === 'create').length, 0);
  assert.ok(twice.actions.some((a) => a.kind === 'destroy' && a.instanceId === f2.id));
  const note = twice.actions.find((a) => a.kind === 'note');
  assert.match(note?.reason ?? '', /2 failed instance\(s\).*next replacement in 5s/);
  assert.equal(twice.requeueAfterMs, 4500);
  const later = plan(input([f1, { ...f2, destroyedAt: now }], { now: now + 5000, desired: { db: 1, api: 0, front: 0 } }));
  assert.equal(later.actions.filter((a) => a.kind === 'create').length, 1);
});

test('a changed role spec rolls instances one at a time, never below the serving count', () => {
  const changed = parseAppFile(`
app: shop
roles:
  api:
    count: 2
    start: api --v2
    exports: { endpoint: "x" }
`);
  const a = inst('api', 'serving');
  const b = inst('api', 'serving');
  const base = { app: { name: 'shop', spec: changed, deleting: false }, desired: { api: 2 } };
  const p1 = plan(input([a, b], base));
  assert.deepEqual(p1.actions.map((x) => x.kind), ['create']);
  const fresh = inst('api', 'starting', { roleHash: roleHash(changed.roles.api!) });
  const p2 = plan(input([a, b, fresh], base));
  assert.deepEqual(p2.actions.filter((x) => x.kind !== 'assign').map((x) => x.kind), [], 'waits for the new one to serve');
  const p3 = plan(input([a, b, { ...fresh, state: 'serving', exports: { endpoint: 'x' } }], base));
  const stops = p3.actions.filter((x) => x.kind === 'drain');
  assert.equal(stops.length, 1);
  assert.ok(stops[0]?.kind === 'drain' && [a.id, b.id].includes(stops[0].instanceId));
});

test('deleting an app stops dependents before what they import', () => {
  const db = inst('db', 'serving');
  const api = inst('api', 'serving');
  const front = inst('front', 'serving');
  const p = plan(input([db, api, front], { app: { name: 'shop', spec, deleting: true } }));
  assert.deepEqual(p.actions.map((a) => (a.kind === 'stop' ? a.role : a.kind)), ['front']);
  const p2 = plan(input([db, api], { app: { name: 'shop', spec, deleting: true } }));
  assert.deepEqual(p2.actions.map((a) => (a.kind === 'stop' ? a.role : a.kind)), ['api']);
  const p3 = plan(input([], { app: { name: 'shop', spec, deleting: true } }));
  assert.deepEqual(p3.actions.map((a) => a.kind), ['forgetApp']);
});

test('an agent that never registers is failed after the provisioning timeout', () => {
  const stuck = inst('db', 'provisioning', { lastSeenAt: null, createdAt: 0 });
  const p = plan(input([stuck], { now: DEFAULT_PLANNER_OPTIONS.provisionTimeoutMs, desired: { db: 1, api: 0, front: 0 } }));
  assert.ok(p.actions.some((a) => a.kind === 'destroy' && a.finalState === 'failed'));
});

test('a backoff holds back replacements only, not the rest of a scale-out', () => {
  const now = 100_000;
  const h = roleHash(spec.roles.db!);
  const failed = [1, 2].map((k) => inst('db', 'failed', { stateSince: now - k * 500, destroyedAt: now - k * 400, roleHash: h }));
  const serving = inst('db', 'serving', { roleHash: h });
  const p = plan(input([...failed, serving], { now, desired: { db: 5, api: 0, front: 0 } }));
  // 4 missing: 2 stand for the failed instances and wait; 2 are new capacity.
  assert.equal(p.actions.filter((a) => a.kind === 'create').length, 2);
  assert.ok(p.actions.some((a) => a.kind === 'note' && a.topic === 'backoff'));
});
