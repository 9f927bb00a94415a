import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { consolidationPlan, placeTenants, seatAvailability, type PlacementInput, type PlacementInstance } from './placement.js';
import { ALL_STATES, isLive, type InstanceState } from './states.js';

const NOW = 1_700_000_000_000;
const serving = (id: string, tenants: number, over: Partial<PlacementInstance> = {}): PlacementInstance => ({ id, role: 'web', state: 'serving', tenants, ...over });
const pending = (n: number, from = 1) => Array.from({ length: n }, (_, k) => ({ id: `t-${from + k}` }));
const input = (over: Partial<PlacementInput>): PlacementInput => ({ role: 'web', capacity: 20, max: 10, live: 0, instances: [], pending: [], now: NOW, ...over });
const onto = (plan: ReturnType<typeof placeTenants>) => {
  const m = new Map<string, number>();
  for (const p of plan.placements) m.set(p.instanceId, (m.get(p.instanceId) ?? 0) + 1);
  return Object.fromEntries(m);
};

// ---------------------------------------------------------------------------------------------
// Hand-computed cases

test('best fit: the fullest instance with room first, until it is full; then the next fullest', () => {
  const plan = placeTenants(input({ live: 3, instances: [serving('a', 5), serving('b', 17), serving('c', 12)], pending: pending(5) }));
  assert.deepEqual(plan.placements, [
    { tenantId: 't-1', instanceId: 'b', addable: true },
    { tenantId: 't-2', instanceId: 'b', addable: true },
    { tenantId: 't-3', instanceId: 'b', addable: true },
    { tenantId: 't-4', instanceId: 'c', addable: true },
    { tenantId: 't-5', instanceId: 'c', addable: true },
  ]);
  assert.equal(plan.newInstances, 0);
  assert.deepEqual(plan.waiting, []);
  assert.deepEqual(plan.freeSeats, { open: 26, coming: 0 });
  assert.equal(plan.reason, 'web: 5 tenants placed on serving instances (free seats: 26 open, 0 on their way)');
});

test('booting instances are capacity on its way: seats reserved there (not addable), nothing ordered for them', () => {
  const plan = placeTenants(
    input({
      max: 5,
      live: 2,
      instances: [serving('i-1', 18), { id: 'i-2', role: 'web', state: 'starting', tenants: 0 }],
      pending: pending(25),
    }),
  );
  assert.deepEqual(onto(plan), { 'i-1': 2, 'i-2': 20 });
  assert.deepEqual(plan.placements.filter((p) => p.addable).map((p) => p.tenantId), ['t-1', 't-2'], 'serving first, in arrival order');
  assert.equal(plan.placements.filter((p) => !p.addable).length, 20);
  assert.equal(plan.newInstances, 1, 'ceil((25 − 2 − 20) / 20)');
  assert.deepEqual(
    plan.waiting.map((w) => [w.tenantId, w.cause]),
    [['t-23', 'capacity'], ['t-24', 'capacity'], ['t-25', 'capacity']],
  );
  assert.equal(plan.waiting[0]!.reason, 'waiting for 1 new instance (ordered for 3 tenants)');
});

test('coalescing: 1,000 sign-ups with no room order 50 instances; the next pass, with those 50 booting, orders none', () => {
  const first = placeTenants(input({ max: 100, live: 0, pending: pending(1000) }));
  assert.equal(first.newInstances, 50);
  assert.equal(first.placements.length, 0);
  assert.ok(first.waiting.every((w) => w.cause === 'capacity'));
  const booting = Array.from({ length: 50 }, (_, k): PlacementInstance => ({ id: `n-${k}`, role: 'web', state: 'provisioning', tenants: 0 }));
  const second = placeTenants(input({ max: 100, live: 50, instances: booting, pending: pending(1001) }));
  assert.equal(second.newInstances, 1, 'one more sign-up: one more instance, not fifty-one');
  assert.equal(second.placements.length, 1000);
  assert.ok(second.placements.every((p) => !p.addable));
  // Once the seats are reserved, the same fleet plus the one new sign-up asks for one instance only.
  const reserved = booting.map((i) => ({ ...i, tenants: 20 }));
  assert.equal(placeTenants(input({ max: 100, live: 50, instances: reserved, pending: pending(1, 1001) })).newInstances, 1);
});

test('max is respected: tenants past it stay pending with the reason', () => {
  const full = Array.from({ length: 5 }, (_, k) => serving(`i-${k + 1}`, 20));
  const plan = placeTenants(input({ max: 5, live: 5, instances: full, pending: [{ id: 't-1', since: NOW - 45_000 }, { id: 't-2' }] }));
  assert.equal(plan.newInstances, 0);
  assert.deepEqual(plan.waiting, [
    { tenantId: 't-1', cause: 'max', reason: 'max 5 reached: 5 instances × 20 seats full; pending for 45s' },
    { tenantId: 't-2', cause: 'max', reason: 'max 5 reached: 5 instances × 20 seats full' },
  ]);
  // Part of the burst fits under max: those wait for capacity, the rest for max.
  const some = placeTenants(input({ max: 6, live: 5, instances: full, pending: pending(30) }));
  assert.equal(some.newInstances, 1);
  assert.equal(some.waiting.filter((w) => w.cause === 'capacity').length, 20);
  assert.equal(some.waiting.filter((w) => w.cause === 'max').length, 10);
  assert.equal(some.waiting[29]!.reason, 'max 6 reached: 5 instances × 20 seats full and 1 more instance ordered');
  assert.match(some.reason, /1 new instance for 20 tenants \(20 seats each\); 10 tenants pending: max 6 reached/);
});

test('never on draining, stopping, unresponsive, failed or spare instances, another role, or one being taken away', () => {
  const instances: PlacementInstance[] = [
    { id: 'd', role: 'web', state: 'draining', tenants: 0 },
    { id: 's', role: 'web', state: 'stopping', tenants: 0 },
    { id: 'u', role: 'web', state: 'unresponsive', tenants: 0 },
    { id: 'f', role: 'web', state: 'failed', tenants: 0 },
    { id: 'x', role: null, state: 'spare', tenants: 0 },
    { id: 'o', role: 'api', state: 'serving', tenants: 0 },
    { id: 'g', role: 'web', state: 'serving', goal: 'drain', tenants: 0 },
    { id: 'h', role: 'web', state: 'starting', goal: 'stop', tenants: 0 },
  ];
  const plan = placeTenants(input({ live: 1, instances, pending: pending(3) }));
  assert.deepEqual(plan.placements, []);
  assert.equal(plan.newInstances, 1);
  assert.deepEqual(plan.freeSeats, { open: 0, coming: 0 });
});

test('an instance made for the role whose agent said hello (state spare, role not assigned yet) brings seats on their way: no second instance ordered', () => {
  // Found by kill -9 of a leader mid-placement: the new leader's first pass saw the booting
  // instances as spares, counted no seat coming and ordered two instances too many.
  const instances: PlacementInstance[] = [
    { id: 'a', role: 'web', state: 'serving', tenants: 3 },
    { id: 'b', role: 'web', state: 'spare', tenants: 1 },
    { id: 'c', role: 'web', state: 'spare', tenants: 0 },
  ];
  const plan = placeTenants(input({ capacity: 3, live: 3, instances, pending: pending(5) }));
  assert.deepEqual(plan.freeSeats, { open: 0, coming: 5 });
  assert.equal(plan.newInstances, 0);
  assert.deepEqual(onto(plan), { b: 2, c: 3 });
});

test('a lowered capacity leaves an instance over it with no free seat; an instance keeps its own capacity if given', () => {
  const plan = placeTenants(input({ capacity: 10, live: 2, instances: [serving('a', 15), serving('b', 15, { capacity: 20 })], pending: pending(6) }));
  assert.deepEqual(onto(plan), { b: 5 });
  assert.equal(plan.newInstances, 1);
});

test('seat availability by state and goal', () => {
  const open = ALL_STATES.filter((s) => seatAvailability(s) === 'open');
  const coming = ALL_STATES.filter((s) => seatAvailability(s) === 'coming');
  assert.deepEqual(open, ['serving']);
  assert.deepEqual(coming, ['provisioning', 'spare', 'assigned', 'deploying', 'waiting', 'starting']);
  assert.equal(seatAvailability('serving', 'drain'), 'closed');
  assert.throws(() => placeTenants(input({ capacity: 0 })), RangeError);
  assert.equal(placeTenants(input({})).reason, 'no tenant pending');
});

// ---------------------------------------------------------------------------------------------
// Properties of one pass

const anyState = fc.constantFrom<InstanceState>(...ALL_STATES);
const fleet = fc
  .record({
    capacity: fc.integer({ min: 1, max: 40 }),
    instances: fc.array(
      fc.record({
        state: fc.oneof({ weight: 4, arbitrary: fc.constant<InstanceState>('serving') }, { weight: 1, arbitrary: fc.constant<InstanceState>('starting') }, { weight: 2, arbitrary: anyState }),
        goal: fc.constantFrom<'run' | 'drain' | 'stop'>('run', 'run', 'run', 'run', 'drain', 'stop'),
        role: fc.constantFrom('web', 'web', 'web', 'api'),
        fill: fc.integer({ min: 0, max: 120 }).map((p) => p / 100),
        own: fc.option(fc.integer({ min: 1, max: 40 }), { freq: 5 }),
      }),
      { maxLength: 60 },
    ),
    pending: fc.integer({ min: 0, max: 1000 }),
    extraMax: fc.integer({ min: -5, max: 80 }),
  })
  .map(({ capacity, instances, pending: p, extraMax }) => {
    const list: PlacementInstance[] = instances.map((i, k) => {
      const cap = i.own ?? capacity;
      return {
        id: `i-${String(k).padStart(3, '0')}`,
        role: i.state === 'spare' ? null : i.role,
        state: i.state,
        goal: i.goal,
        tenants: Math.floor(i.fill * cap),
        ...(i.own !== null ? { capacity: i.own } : {}),
      };
    });
    const live = list.filter((i) => i.role === 'web' && i.goal === 'run' && isLive(i.state)).length;
    return input({ capacity, instances: list, pending: pending(p), live, max: Math.max(1, live + extraMax) });
  });

test('property: every tenant exactly once, no instance over capacity, only open or booting instances, best fit, the fewest new instances', () => {
  fc.assert(
    fc.property(fleet, (inp) => {
      const plan = placeTenants(inp);
      // Every pending tenant once: placed, or waiting; the placed ones are the first to have come.
      const seen = [...plan.placements.map((p) => p.tenantId), ...plan.waiting.map((w) => w.tenantId)];
      assert.deepEqual(seen, inp.pending.map((t) => t.id));
      const byId = new Map(inp.instances.map((i) => [i.id, i]));
      const added = new Map<string, number>();
      for (const p of plan.placements) {
        const i = byId.get(p.instanceId)!;
        assert.equal(i.role, 'web');
        assert.equal(seatAvailability(i.state, i.goal), p.addable ? 'open' : 'coming');
        added.set(i.id, (added.get(i.id) ?? 0) + 1);
      }
      const cap = (i: PlacementInstance) => i.capacity ?? inp.capacity;
      for (const [id, n] of added) assert.ok(byId.get(id)!.tenants + n <= cap(byId.get(id)!), `${id} over capacity`);
      // Booting instances only once the serving ones are full.
      const web = inp.instances.filter((i) => i.role === 'web');
      const left = (i: PlacementInstance) => cap(i) - i.tenants - (added.get(i.id) ?? 0);
      if (plan.placements.some((p) => !p.addable)) {
        for (const i of web) if (seatAvailability(i.state, i.goal) === 'open') assert.ok(left(i) <= 0);
      }
      // Best fit: an open instance left with room that got nobody had at least as much room as any that did.
      for (const kind of ['open', 'coming'] as const) {
        const got = web.filter((i) => seatAvailability(i.state, i.goal) === kind && added.has(i.id));
        const idle = web.filter((i) => seatAvailability(i.state, i.goal) === kind && !added.has(i.id) && cap(i) - i.tenants > 0);
        for (const a of got) for (const b of idle) assert.ok(cap(a) - a.tenants <= cap(b) - b.tenants, `best fit: ${a.id} before ${b.id}`);
      }
      // Fewest new instances: none while a seat is free; ⌈rest / capacity⌉, within max.
      const rest = plan.waiting.length;
      if (rest > 0) for (const i of web) if (seatAvailability(i.state, i.goal) !== 'closed') assert.ok(left(i) <= 0, `${i.id} has room`);
      assert.equal(plan.newInstances, Math.min(Math.ceil(rest / inp.capacity), Math.max(0, inp.max - inp.live)));
      assert.equal(plan.waiting.filter((w) => w.cause === 'capacity').length, Math.min(rest, plan.newInstances * inp.capacity));
    }),
    { numRuns: 500 },
  );
});

// ---------------------------------------------------------------------------------------------
// A burst over time: instances boot, crash (their tenants pending again), the controller places
// every pass what it can and creates what is asked.

interface SimInstance {
  id: string;
  state: InstanceState;
  tenants: Set<string>;
}

const scenario = fc.record({
  capacity: fc.integer({ min: 1, max: 30 }),
  initial: fc.array(fc.integer({ min: 0, max: 100 }).map((p) => p / 100), { maxLength: 10 }),
  arrivals: fc.array(fc.integer({ min: 0, max: 250 }), { minLength: 1, maxLength: 12 }),
  boots: fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 12, maxLength: 12 }),
  crashes: fc.array(fc.array(fc.nat(), { maxLength: 2 }), { minLength: 12, maxLength: 12 }),
  maxExtra: fc.option(fc.integer({ min: 0, max: 40 }), { freq: 3 }),
});

test('property: a burst of up to 1,000 sign-ups with crashes mid-way: never over capacity, each tenant once, the fewest instances', () => {
  fc.assert(
    fc.property(scenario, ({ capacity, initial, arrivals, boots, crashes, maxExtra }) => {
      const fleetNow = new Map<string, SimInstance>();
      let nextId = 0;
      const make = (state: InstanceState) => {
        const i: SimInstance = { id: `i-${nextId++}`, state, tenants: new Set() };
        fleetNow.set(i.id, i);
        return i;
      };
      let tenantSeq = 0;
      const arrival = new Map<string, number>();
      const queue: string[] = []; // pending, in arrival order
      const newTenant = () => {
        const id = `t-${tenantSeq++}`;
        arrival.set(id, tenantSeq);
        queue.push(id);
        return id;
      };
      for (const fill of initial) {
        const i = make('serving');
        for (let k = 0; k < Math.floor(fill * capacity); k++) i.tenants.add(`t-${tenantSeq++}`);
      }
      const initialTenants = tenantSeq;
      const max = maxExtra === null ? 1000 : initial.length + maxExtra;

      const check = () => {
        const where = new Map<string, string>();
        for (const i of fleetNow.values()) {
          assert.ok(i.tenants.size <= capacity, `${i.id} holds ${i.tenants.size} > ${capacity}`);
          for (const t of i.tenants) {
            assert.ok(!where.has(t), `${t} placed twice`);
            where.set(t, i.id);
          }
        }
        for (const t of queue) assert.ok(!where.has(t), `${t} both pending and placed`);
        assert.equal(where.size + queue.length, tenantSeq, 'no tenant lost');
      };
      const pass = () => {
        const instances = [...fleetNow.values()].map((i) => ({ id: i.id, role: 'web', state: i.state, tenants: i.tenants.size }));
        const plan = placeTenants({ role: 'web', capacity, max, live: fleetNow.size, instances, pending: queue.map((id) => ({ id })), now: NOW });
        const free = instances.reduce((n, i) => n + Math.max(0, capacity - i.tenants), 0);
        assert.equal(plan.newInstances, Math.min(Math.max(0, max - fleetNow.size), Math.ceil(Math.max(0, queue.length - free) / capacity)), 'the fewest new instances');
        for (const p of plan.placements) fleetNow.get(p.instanceId)!.tenants.add(p.tenantId); // reserved or added: the seat is held
        const placed = new Set(plan.placements.map((p) => p.tenantId));
        queue.splice(0, queue.length, ...queue.filter((t) => !placed.has(t)));
        for (let k = 0; k < plan.newInstances; k++) make('provisioning');
        check();
      };

      let crashed = 0;
      for (let step = 0; step < arrivals.length; step++) {
        const budget = 1000 - (tenantSeq - initialTenants);
        for (let k = 0; k < Math.min(arrivals[step]!, budget); k++) newTenant();
        pass();
        // Some booting instances come up.
        for (const i of fleetNow.values()) if (i.state !== 'serving' && (Number(i.id.slice(2)) + step) % 3 < boots[step]!) i.state = 'serving';
        // Some instances crash: their tenants are pending again, in their arrival order.
        for (const pick of crashes[step]!) {
          const ids = [...fleetNow.keys()];
          if (ids.length === 0) break;
          const victim = fleetNow.get(ids[pick % ids.length]!)!;
          fleetNow.delete(victim.id);
          crashed++;
          queue.push(...victim.tenants);
          queue.sort((a, b) => arrival.get(a)! - arrival.get(b)! || (a < b ? -1 : 1));
        }
        check();
      }
      // Calm: everything boots, nothing arrives or crashes; the fleet settles.
      for (let k = 0; k < 3; k++) {
        pass();
        for (const i of fleetNow.values()) i.state = 'serving';
      }
      pass();
      const total = tenantSeq;
      if (queue.length > 0) {
        // Left pending only at max, with every seat taken.
        assert.equal(fleetNow.size, max, 'max reached, not passed');
        for (const i of fleetNow.values()) assert.equal(i.tenants.size, capacity);
      } else if (initial.length === 0) {
        // From an empty fleet, whatever crashed on the way: exactly the instances the tenants need.
        assert.equal(fleetNow.size, Math.ceil(total / capacity), `instances = ⌈${total} / ${capacity}⌉ (crashes: ${crashed})`);
      }
    }),
    { numRuns: 300 },
  );
});

// ---------------------------------------------------------------------------------------------
// Consolidation

const tenantsOn = (counts: Record<string, number>) =>
  Object.entries(counts).flatMap(([id, n]) => Array.from({ length: n }, (_, k) => ({ id: `${id}-t${k}`, instanceId: id })));

test('consolidation: fewest moves first, onto the fullest instance with room, never past capacity', () => {
  const counts = { a: 15, b: 3, c: 2, d: 10 };
  const instances = Object.entries(counts).map(([id, n]) => serving(id, n));
  const plan = consolidationPlan(instances, tenantsOn(counts), 20, new Set(), 100);
  // c (2) first: onto a (15 → 17); then b (3): onto a (17 → 20); d (10) has no room left (a full, b and c emptied).
  assert.deepEqual(plan.emptied, ['c', 'b']);
  assert.deepEqual(plan.moves.map((m) => `${m.tenantId}>${m.to}`), ['c-t0>a', 'c-t1>a', 'b-t0>a', 'b-t1>a', 'b-t2>a']);
  assert.equal(plan.saves, 2);
  assert.deepEqual([plan.before, plan.after, plan.minimum], [4, 2, 2]);
  assert.deepEqual(plan.kept, [
    { instanceId: 'd', reason: 'no room elsewhere: 10 tenants, 0 free seats on the other instances' },
    { instanceId: 'a', reason: 'receives tenants from an emptied instance' },
  ]);
  assert.equal(plan.summary, 'empty c, b by moving 5 tenants: 2 instances saved (4 → 2; fewest possible 2)');
});

test('consolidation: pinned and busy tenants hold their instance; the move budget is kept; only serving instances take part', () => {
  const counts = { a: 10, b: 2, c: 3, e: 1 };
  const instances = [serving('a', 10), serving('b', 2), serving('c', 3), { id: 'e', role: 'web', state: 'draining' as const, tenants: 1 }, { id: 'f', role: 'web', state: 'starting' as const, tenants: 0 }];
  const tenants = tenantsOn(counts).map((t) => (t.id === 'c-t1' ? { ...t, state: 'placing' as const } : t));
  const pinned = consolidationPlan(instances, tenants, 20, new Set(['b-t0']), 5);
  assert.deepEqual(pinned.emptied, []);
  assert.deepEqual(pinned.kept.map((k) => k.reason), ['tenant b-t0 is pinned', 'tenant c-t1 is placing', '10 moves needed, 5 left of --max-moves 5']);
  // With the budget for it, the big one is emptied around them: onto the fullest with room (c, 17 free, then b).
  const around = consolidationPlan(instances, tenants, 20, new Set(['b-t0']), 10);
  assert.deepEqual(around.emptied, ['a']);
  assert.ok(around.moves.every((m) => m.to === 'c'));
  const budget = consolidationPlan(instances, tenantsOn(counts), 20, new Set(), 4);
  assert.deepEqual(budget.emptied, ['b']);
  assert.ok(budget.moves.every((m) => m.to === 'a' || m.to === 'c'));
  assert.ok(budget.kept.some((k) => k.instanceId === 'c' && k.reason === '3 moves needed, 2 left of --max-moves 4'));
  assert.equal(consolidationPlan([], [], 20, new Set(), 10).summary, 'nothing to consolidate: 0 instances hold 0 tenants (fewest possible 0)');
});

test('property: consolidation never overfills, never moves a pinned tenant, moves each at most once, within the budget', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 30 }),
      fc.array(fc.record({ fill: fc.integer({ min: 0, max: 100 }).map((p) => p / 100), state: fc.constantFrom<InstanceState>('serving', 'serving', 'serving', 'draining', 'starting') }), { maxLength: 30 }),
      fc.double({ min: 0, max: 0.3, noNaN: true }),
      fc.integer({ min: 0, max: 200 }),
      (capacity, specs, pinShare, maxMoves) => {
        const instances = specs.map((s, k): PlacementInstance => ({ id: `i-${k}`, role: 'web', state: s.state, tenants: Math.floor(s.fill * capacity) }));
        const tenants = instances.flatMap((i) => Array.from({ length: i.tenants }, (_, k) => ({ id: `${i.id}-t${k}`, instanceId: i.id })));
        const pinned = new Set(tenants.filter((_, k) => (k * 7919) % 100 < pinShare * 100).map((t) => t.id));
        const plan = consolidationPlan(instances, tenants, capacity, pinned, maxMoves);
        assert.ok(plan.moves.length <= maxMoves);
        const count = new Map(instances.map((i) => [i.id, i.tenants]));
        const moved = new Set<string>();
        const byId = new Map(instances.map((i) => [i.id, i]));
        for (const m of plan.moves) {
          assert.ok(!pinned.has(m.tenantId), 'pinned tenant moved');
          assert.ok(!moved.has(m.tenantId), 'moved twice');
          moved.add(m.tenantId);
          assert.equal(byId.get(m.to)!.state, 'serving');
          assert.equal(byId.get(m.from)!.state, 'serving');
          count.set(m.from, count.get(m.from)! - 1);
          count.set(m.to, count.get(m.to)! + 1);
          assert.ok(count.get(m.to)! <= capacity, `${m.to} over capacity`);
        }
        for (const id of plan.emptied) assert.equal(count.get(id), 0);
        for (const m of plan.moves) assert.ok(!plan.emptied.includes(m.to));
        assert.equal(plan.after, plan.before - plan.saves);
        assert.ok(plan.after >= plan.minimum || plan.before === 0);
      },
    ),
    { numRuns: 400 },
  );
});
