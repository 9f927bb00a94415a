import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseAppFile } from './spec.js';
import { DEFAULT_PLANNER_OPTIONS, plan, roleHash, type Plan, type PlanAction, type PlanInput, type PlanInstance } from './planner.js';
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
  const applied = [db, ...apis, front].map((i) => ({ ...i, importsSent: ver.get(i.id) ?? null, importsApplied: ver.get(i.id) ?? null }));
  const p = plan(input(applied));
  assert.deepEqual(p.actions, []);
  assert.equal(p.converged, true);
  // An importer still running with older imports than it was sent is not converged, and says so.
  const stale = plan(input(applied.map((i) => (i.id === front.id ? { ...i, importsApplied: 'older' } : i))));
  assert.equal(stale.converged, false);
  assert.deepEqual(stale.roles.front?.staleImports, [front.id]);
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

// ---------------------------------------------------------------------------------------------
// Properties: random apps, random instance sets, random desired counts.

/** States that count toward a role (goal `run`), written out here so the test does not trust states.ts. */
const LIVE_HERE: readonly InstanceState[] = ['provisioning', 'spare', 'assigned', 'deploying', 'waiting', 'starting', 'serving'];
const EVERY_STATE: readonly InstanceState[] = [...LIVE_HERE, 'draining', 'stopping', 'terminated', 'unresponsive', 'failed'];
const NOW = 1_000_000;
const O = DEFAULT_PLANNER_OPTIONS;

interface RoleGen {
  readonly bounds: { readonly count: number } | { readonly min: number; readonly max: number; readonly count: number };
  readonly spares: number;
  readonly imports: readonly { readonly from: number; readonly optional: boolean }[];
}

/** 1–4 roles; role k imports only roles before it, so the imports form a DAG. */
const appArb: fc.Arbitrary<{ spec: AppSpec; yaml: string }> = fc
  .record({ n: fc.integer({ min: 1, max: 4 }), spares: fc.integer({ min: 0, max: 2 }) })
  .chain(({ n, spares }) =>
    fc
      .tuple(
        ...Array.from({ length: n }, (_, k) =>
          fc.record({
            bounds: fc.oneof(
              fc.record({ count: fc.integer({ min: 0, max: 4 }) }),
              fc
                .tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 1, max: 5 }), fc.nat())
                .filter(([min, max]) => min <= max)
                .map(([min, max, c]) => ({ min, max, count: min + (c % (max - min + 1)) })),
            ),
            spares: fc.integer({ min: 0, max: 2 }),
            imports: fc.subarray(Array.from({ length: k }, (_, j) => j)).chain((froms) =>
              fc.tuple(...froms.map((from) => fc.record({ from: fc.constant(from), optional: fc.boolean() }))),
            ),
          }) as fc.Arbitrary<RoleGen>,
        ),
      )
      .map((roles) => {
        const lines = ['app: prop', `spares: ${spares}`, 'roles:'];
        roles.forEach((r, k) => {
          lines.push(`  r${k}:`, '    start: run', '    exports: { url: "http://${ip}:${port}" }', `    spares: ${r.spares}`);
          for (const [key, v] of Object.entries(r.bounds)) lines.push(`    ${key}: ${v}`);
          if (r.imports.length > 0) lines.push(`    imports: [${r.imports.map((i) => `r${i.from}.url${i.optional ? '?' : ''}`).join(', ')}]`);
        });
        const yaml = lines.join('\n');
        return { spec: parseAppFile(yaml), yaml };
      }),
  );

interface InstGen {
  readonly role: number | null;
  readonly pool: number | null;
  readonly state: InstanceState;
  readonly goal: 'run' | 'drain' | 'stop';
  readonly old: boolean;
  readonly silent: boolean;
  readonly age: number;
  readonly assigned: boolean;
  readonly drainOrder: boolean;
  readonly leftAgo: number;
  readonly imports: 'none' | 'stale' | 'pending';
  readonly destroyed: boolean;
  readonly busy: number;
  readonly tenants: number;
}

function instGen(healthy: boolean): fc.Arbitrary<InstGen> {
  return fc.record({
    role: fc.option(fc.integer({ min: 0, max: 3 }), { freq: 4 }),
    pool: fc.option(fc.integer({ min: 0, max: 3 })),
    state: fc.constantFrom(...(healthy ? EVERY_STATE.filter((s) => s !== 'terminated' && s !== 'unresponsive' && s !== 'failed') : EVERY_STATE)),
    goal: fc.constantFrom('run', 'run', 'run', 'drain', 'stop'),
    old: fc.boolean(),
    silent: healthy ? fc.constant(false) : fc.integer({ min: 0, max: 7 }).map((k) => k === 0),
    age: fc.integer({ min: 0, max: healthy ? O.provisionTimeoutMs - 1000 : 120_000 }),
    assigned: fc.boolean(),
    drainOrder: fc.boolean(),
    leftAgo: fc.integer({ min: 0, max: healthy ? 5_000 : 120_000 }),
    imports: fc.constantFrom('none', 'stale', 'pending'),
    destroyed: healthy ? fc.constant(false) : fc.boolean(),
    busy: fc.double({ min: 0, max: 2, noNaN: true }),
    tenants: fc.integer({ min: 0, max: 3 }),
  });
}

function materialise(spec: AppSpec, gens: readonly InstGen[]): PlanInstance[] {
  const roles = Object.keys(spec.roles);
  return gens.map((g, k) => {
    const role = g.role === null ? null : roles[g.role % roles.length]!;
    const pool = role !== null ? null : g.pool === null ? '*' : roles[g.pool % roles.length]!;
    const state: InstanceState = role === null && !['provisioning', 'spare', 'stopping', 'terminated', 'failed'].includes(g.state) ? 'spare' : g.state;
    const hash = role === null ? '' : g.old ? 'old-spec' : roleHash(spec.roles[role]!);
    const registered = state !== 'provisioning';
    return {
      id: `i-${String(k).padStart(3, '0')}`,
      role,
      pool,
      state,
      goal: role === null && g.goal === 'drain' ? 'run' : g.goal,
      roleHash: hash,
      exports: state === 'serving' || state === 'draining' ? { url: `http://i-${k}` } : null,
      importsSent: g.imports === 'none' ? null : 'v-old',
      importsApplied: g.imports === 'stale' ? 'v-older' : g.imports === 'pending' ? 'v-old' : null,
      assignOrderId: role !== null && registered && (state !== 'spare' || g.assigned) ? `a-${k}` : null,
      stopOrderId: g.goal === 'stop' ? `s-${k}` : null,
      drainOrderId: g.goal === 'drain' && g.drainOrder ? `d-${k}` : null,
      createdAt: NOW - g.age,
      stateSince: NOW - Math.min(g.age, g.leftAgo),
      stopRequestedAt: g.goal === 'stop' ? NOW - g.leftAgo : null,
      drainRequestedAt: g.goal === 'drain' ? NOW - g.leftAgo : null,
      destroyedAt: g.destroyed && (state === 'failed' || state === 'terminated') ? NOW - 100 : null,
      lastSeenAt: !registered ? null : g.silent ? NOW - O.heartbeatTimeoutMs - 1 : NOW - 500,
      busy: g.busy,
      tenants: g.tenants,
    };
  });
}

function desiredArb(spec: AppSpec): fc.Arbitrary<Record<string, number>> {
  const names = Object.keys(spec.roles);
  return fc
    .tuple(...names.map(() => fc.option(fc.integer({ min: 0, max: 6 }), { freq: 4 })))
    .map((ds) => Object.fromEntries(names.flatMap((n, k) => (ds[k] === null || ds[k] === undefined ? [] : [[n, ds[k]]]))));
}

/** Whether the planner must see `i` as gone this pass (released, fenced or given up on), by the module comment's rules. */
function gone(i: PlanInstance, now: number, startedAt: number): boolean {
  if (i.destroyedAt !== null) return true;
  if (i.state === 'terminated' || i.state === 'failed' || i.state === 'unresponsive') return true;
  const since = Math.max(i.createdAt, startedAt);
  if (i.state === 'provisioning') return now - since >= O.provisionTimeoutMs;
  return now - (i.lastSeenAt ?? since) >= O.heartbeatTimeoutMs;
}

const targetOf = (a: PlanAction): string | undefined => ('instanceId' in a ? a.instanceId : undefined);

/** Every rule a single plan must keep, whatever the snapshot. */
function checkPlan(inp: PlanInput, p: Plan): void {
  const { spec } = inp.app;
  const byId = new Map(inp.instances.map((i) => [i.id, i]));
  const here = inp.instances.filter((i) => !gone(i, inp.now, inp.controllerStartedAt));
  const show = () => `\nplan: ${JSON.stringify(p.actions.map((a) => `${a.kind} ${targetOf(a) ?? ('role' in a ? a.role : '')}`))}`;

  // One lifecycle order per instance and pass: never drained and stopped, drained twice, ...
  // (fencing a silent instance and destroying it at once is one decision in two actions).
  const lifecycle = p.actions.filter((a) => ['assign', 'stop', 'drain', 'undrain', 'drainOrder', 'destroy'].includes(a.kind));
  const ids = lifecycle.map(targetOf);
  const twice = ids.filter((id, k) => ids.indexOf(id) !== k);
  assert.deepEqual(twice, [], `an instance got two lifecycle orders in one pass${show()}`);

  for (const role of Object.values(spec.roles)) {
    const hash = roleHash(role);
    const desired = Math.min(role.max, Math.max(role.min, inp.desired[role.name] ?? role.count));
    // An undrained instance still reporting `draining` is back in its role.
    const live = here.filter((i) => i.role === role.name && i.goal === 'run' && (LIVE_HERE.includes(i.state) || i.state === 'draining'));
    const fresh = live.filter((i) => i.roleHash === hash);
    const surge = live.length > fresh.length ? 1 : 0;
    const servingNow = live.filter((i) => i.state === 'serving');
    const mine = p.actions.filter((a) => 'role' in a && a.role === role.name);
    const added = mine.filter((a) => a.kind === 'create' || (a.kind === 'assign' && a.claim) || a.kind === 'undrain').length;
    const removed = mine.filter((a) => (a.kind === 'stop' || a.kind === 'drain') && live.some((i) => i.id === a.instanceId));
    const servingRemoved = removed.filter((a) => servingNow.some((i) => i.id === targetOf(a))).length;
    const ctx = `role ${role.name}: desired ${desired} (min ${role.min}, max ${role.max}), live ${live.length}, fresh ${fresh.length}, serving ${servingNow.length}, added ${added}, removed ${removed.length}${show()}`;

    if (added > 0) assert.ok(live.length + added <= desired + surge && desired + surge <= role.max + surge, `created beyond max + surge: ${ctx}`);
    assert.ok(added <= Math.max(0, desired - fresh.length), `two instances for one slot: ${ctx}`);
    assert.ok(servingNow.length - servingRemoved >= Math.min(desired, servingNow.length), `drained/stopped below what serves: ${ctx}`);
    assert.ok(removed.length <= Math.max(0, live.length + added - desired), `removed more than the excess: ${ctx}`);
  }

  // Assignments go only to registered agents: a spare of the right pool, or a role's own new agent.
  for (const a of p.actions) {
    if (a.kind !== 'assign') continue;
    const i = byId.get(a.instanceId);
    assert.ok(i, `assigned unknown ${a.instanceId}`);
    assert.ok(!gone(i, inp.now, inp.controllerStartedAt) && i.goal === 'run', `assigned ${i.id}, which is gone or leaving${show()}`);
    assert.equal(i.state, 'spare', `assigned ${i.id} in state ${i.state}: only a registered agent takes a role${show()}`);
    if (a.claim) {
      assert.equal(i.role, null, `claimed ${i.id}, which already has role ${i.role}`);
      assert.ok(i.pool === '*' || i.pool === null || i.pool === a.role, `${a.role} took ${i.id} from pool ${i.pool}${show()}`);
    } else {
      assert.equal(i.role, a.role);
      assert.equal(i.assignOrderId, null, `${i.id} assigned again`);
    }
  }
}

const snapshot = fc.tuple(appArb, fc.array(instGen(false), { maxLength: 14 })).chain(([app, gens]) =>
  fc.record({ app: fc.constant(app), gens: fc.constant(gens), desired: desiredArb(app.spec), started: fc.constantFrom(0, NOW - 2000) }),
);

test('property: one plan never overshoots max + surge, fills a slot twice, drops below what serves, or assigns an unregistered agent', () => {
  fc.assert(
    fc.property(snapshot, ({ app, gens, desired, started }) => {
      const inp: PlanInput = {
        app: { name: 'prop', spec: app.spec, deleting: false },
        desired,
        instances: materialise(app.spec, gens),
        now: NOW,
        controllerStartedAt: started,
        options: O,
      };
      const p = plan(inp);
      assert.deepEqual(plan(inp), p, 'the plan is a function of its input');
      checkPlan(inp, p);
    }),
    { numRuns: 400, includeErrorInReport: true },
  );
});

/**
 * A fake executor and fake agents, one step per second: the controller applies the plan's
 * actions, then every agent moves one state on (registers, starts, serves, stops) and heartbeats.
 */
function step(instances: PlanInstance[], p: Plan, now: number, seq: { n: number }): PlanInstance[] {
  const out = new Map(instances.map((i) => [i.id, { ...i }] as [string, { -readonly [K in keyof PlanInstance]: PlanInstance[K] }]));
  for (const a of p.actions) {
    const i = 'instanceId' in a ? out.get(a.instanceId) : undefined;
    switch (a.kind) {
      case 'create': {
        const id = `n-${String(seq.n++).padStart(3, '0')}`;
        out.set(id, {
          id, role: a.role, pool: a.pool, state: 'provisioning', goal: 'run', roleHash: a.roleHash, exports: null, importsSent: null, importsApplied: null,
          assignOrderId: null, stopOrderId: null, drainOrderId: null, createdAt: now, stateSince: now, stopRequestedAt: null, drainRequestedAt: null,
          destroyedAt: null, lastSeenAt: null,
        });
        break;
      }
      case 'assign':
        Object.assign(i!, { role: a.role, pool: null, roleHash: a.roleHash, assignOrderId: `a-${seq.n++}`, importsSent: a.importsVersion, state: 'assigned', stateSince: now });
        break;
      case 'imports':
        i!.importsSent = a.importsVersion;
        break;
      case 'stop':
        Object.assign(i!, { goal: 'stop', stopOrderId: `s-${seq.n++}`, stopRequestedAt: now });
        break;
      case 'drain':
        Object.assign(i!, { goal: 'drain', drainRequestedAt: now });
        break;
      case 'drainOrder':
        i!.drainOrderId = `d-${seq.n++}`;
        break;
      case 'undrain':
        Object.assign(i!, { goal: 'run', drainOrderId: null, drainRequestedAt: null });
        break;
      case 'unresponsive':
        Object.assign(i!, { state: 'unresponsive', stateSince: now });
        break;
      case 'destroy':
        Object.assign(i!, { destroyedAt: now, state: i!.state === 'terminated' || i!.state === 'failed' ? i!.state : a.finalState });
        break;
      case 'forgetApp':
      case 'note':
        break;
    }
  }
  const agentNow = now + 500;
  for (const i of out.values()) {
    if (i.destroyedAt !== null || i.state === 'unresponsive' || i.state === 'terminated' || i.state === 'failed') continue;
    const to = (s: InstanceState) => Object.assign(i, { state: s, stateSince: agentNow });
    i.lastSeenAt = agentNow;
    i.importsApplied = i.importsSent;
    if (i.goal === 'stop' || i.drainOrderId !== null) to('terminated');
    else if (i.state === 'provisioning') to('spare');
    else if (i.state === 'stopping') to('terminated');
    else if (i.state === 'draining') to('serving');
    else if (i.state === 'serving') continue;
    else if (i.role !== null && i.assignOrderId !== null) {
      if (i.state === 'starting') Object.assign(to('serving'), { exports: { url: `http://${i.id}` } });
      else to('starting');
    }
  }
  return [...out.values()];
}

test('property: planning again with the effects applied converges, without oscillating, and then plans nothing', () => {
  const healthyInst = instGen(true);
  const healthySnapshot = fc.tuple(appArb, fc.array(healthyInst, { maxLength: 12 })).chain(([app, gens]) =>
    fc.record({ app: fc.constant(app), gens: fc.constant(gens), desired: desiredArb(app.spec) }),
  );
  fc.assert(
    fc.property(healthySnapshot, ({ app, gens, desired }) => {
      let instances = materialise(app.spec, gens);
      const initial = new Set(instances.map((i) => i.id));
      const removedOnce = new Set<string>();
      const seq = { n: 0 };
      let quiet = 0;
      const trail: string[] = [];
      for (let k = 0; k < 80 && quiet < 3; k++) {
        const now = NOW + k * 1000;
        const inp: PlanInput = { app: { name: 'prop', spec: app.spec, deleting: false }, desired, instances, now, controllerStartedAt: 0, options: O };
        const p = plan(inp);
        checkPlan(inp, p);
        trail.push(`${k}: ${p.actions.map((a) => `${a.kind} ${targetOf(a) ?? ('role' in a ? a.role : '')}`).join(', ')}`);
        for (const a of p.actions) {
          const id = targetOf(a);
          if (id === undefined) continue;
          // Desired never changes here: what the run itself made is never taken away again, and
          // nothing it took out of service is brought back.
          if ((a.kind === 'stop' || a.kind === 'drain') && !initial.has(id)) assert.fail(`oscillation: ${id} made during the run, then ${a.kind}\n${trail.join('\n')}`);
          if (a.kind === 'drain') removedOnce.add(id);
          if (a.kind === 'undrain') assert.ok(!removedOnce.has(id), `oscillation: ${id} drained then undrained\n${trail.join('\n')}`);
        }
        quiet = p.actions.length === 0 && p.converged ? quiet + 1 : 0;
        instances = step(instances, p, now, seq);
      }
      assert.equal(quiet, 3, `did not converge within 80 steps:\n${trail.slice(-12).join('\n')}`);
      const live = instances.filter((i) => i.destroyedAt === null && i.role !== null);
      for (const role of Object.values(app.spec.roles)) {
        const want = Math.min(role.max, Math.max(role.min, desired[role.name] ?? role.count));
        const serving = live.filter((i) => i.role === role.name && i.state === 'serving' && i.roleHash === roleHash(role));
        assert.equal(serving.length, want, `${role.name} serves ${serving.length}, wants ${want}`);
      }
    }),
    { numRuns: 150, includeErrorInReport: true },
  );
});

// Defects the properties found in plan(), fixed; each keeps its own regression test.
const solo = parseAppFile(`
app: solo
roles:
  api:
    count: 1
    start: api
    exports: { endpoint: "http://\${ip}:\${port}" }
`);
const soloInput = (instances: PlanInstance[], desired: number): PlanInput => ({
  app: { name: 'solo', spec: solo, deleting: false }, desired: { api: desired }, instances, now: 10_000, controllerStartedAt: 0, options: O,
});
const soloInst = (state: InstanceState, over: Partial<PlanInstance> = {}) => inst('api', state, { roleHash: roleHash(solo.roles.api!), ...over });

test('a scale-in victim that registered but has no role yet is stopped, not also assigned', () => {
  const serving = soloInst('serving');
  const fresh = soloInst('spare', { assignOrderId: null });
  const p = plan(soloInput([serving, fresh], 1));
  assert.deepEqual(p.actions.filter((a) => targetOf(a) === fresh.id).map((a) => a.kind), ['stop']);
});

test('a drain cancelled before its drain order went is not drained anyway', () => {
  const serving = soloInst('serving');
  const leaving = soloInst('serving', { goal: 'drain', drainRequestedAt: 9_000, drainOrderId: null });
  const p = plan(soloInput([serving, leaving], 2));
  assert.deepEqual(p.actions.filter((a) => targetOf(a) === leaving.id).map((a) => a.kind), ['undrain']);
});

test('an undrained instance that still reports draining counts toward its role', () => {
  const serving = soloInst('serving');
  const back = soloInst('draining', { goal: 'run' });
  const p = plan(soloInput([serving, back], 2));
  assert.deepEqual(p.actions.filter((a) => a.kind === 'create' || a.kind === 'assign'), []);
});
