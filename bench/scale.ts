/**
 * `npm run bench:scale`: the controller core at 10,000 instances, which this machine cannot
 * host: one reconcile pass (`plan` over a 10,000-instance snapshot), one policy evaluation
 * (`evaluate` over 10,000 instances' metrics), the memory they hold, and the simulator running
 * the whole loop at that size. Each figure is set against what it must fit in: the
 * controller's decision interval (500 ms, its `evaluateMs` default). Writes the table into bench/README.md under
 * "## Scale (bench:scale)".
 *
 * Run with --expose-gc (the npm script does) for the memory figures.
 */
import {
  consolidationPlan,
  DEFAULT_PLANNER_OPTIONS,
  evaluate,
  historyNeededMs,
  MetricStore,
  placeTenants,
  plan,
  roleHash,
  type AppSpec,
  type ConsolidationTenant,
  type PendingTenant,
  type PlacementInput,
  type PlacementInstance,
  type PlanInput,
  type PlanInstance,
  type Policy,
} from '../src/core/index.js';
import { defaultApp, HPA_DEFAULTS, parseBoot, parseSlo, Rng, simulate, THRESHOLD_RULE, traceOf } from '../src/sim/index.js';
import { writeReadmeSection } from './readme.js';

const N = Number(process.env.BENCH_INSTANCES ?? 10_000);
/** The controller evaluates policies and plans this often while a role scales (its `evaluateMs` default). */
const DECISION_MS = 500;
const HEADING = '## Scale (bench:scale)';
const gc = (globalThis as { gc?: () => void }).gc;

function heapMb(): number {
  gc?.();
  gc?.();
  return process.memoryUsage().heapUsed / 2 ** 20;
}

/** Median and 95th percentile of `runs` timings of `fn`, in ms, after `warm` untimed runs. */
function time(fn: () => unknown, runs: number, warm = 3): { median: number; p95: number } {
  for (let k = 0; k < warm; k++) fn();
  const t: number[] = [];
  for (let k = 0; k < runs; k++) {
    const s = performance.now();
    fn();
    t.push(performance.now() - s);
  }
  t.sort((a, b) => a - b);
  return { median: t[Math.floor(t.length / 2)] ?? NaN, p95: t[Math.min(t.length - 1, Math.ceil(0.95 * t.length) - 1)] ?? NaN };
}

const ms = (v: number) => (v < 1 ? `${v.toFixed(2)} ms` : v < 100 ? `${v.toFixed(1)} ms` : `${Math.round(v)} ms`);
const share = (v: number) => `${((v / DECISION_MS) * 100).toFixed(v / DECISION_MS < 0.01 ? 2 : 1)}% of the ${DECISION_MS} ms decision interval`;

const rows: [string, string, string][] = [];

// ---------------------------------------------------------------------------------------------
// Tenant placement: the core's placeTenants (the code the controller runs every pass) over a
// fleet holding 1,000,000 tenants. Its input is one row per instance (seats taken, capacity,
// state) and the pending sign-ups: the tenants themselves stay in the store.

const TENANT_NOTE =
  "Tenant rows: the core's `placeTenants`, the code the controller runs each pass, over one row per instance (seats taken, capacity, state) " +
  `and the pending sign-ups; the tenants themselves stay in the store. Budget: a placement pass within ${DECISION_MS / 10} ms (a tenth of the ` +
  'decision interval), its snapshot within 64 MB. A role has at most 1,000 instances, so 52,000 is a stress figure fifty times the largest ' +
  'role; the seat reservation itself (one row-locked transaction per tenant in the store) is not in these rows. ' +
  '`BENCH_ONLY=tenants npm run bench:scale` prints these rows alone.';

/** A placement pass must fit in a tenth of the decision interval; its snapshot in 64 MB. */
const TENANT_BUDGET_MS = DECISION_MS / 10;
const TENANT_BUDGET_MB = 64;

function tenantRows(): [string, string, string][] {
  const out: [string, string, string][] = [];
  const capacity = 20;
  const now = 1_700_000_000_000;
  const fmt = (n: number) => n.toLocaleString('en-US');
  const signUps: PendingTenant[] = Array.from({ length: 10_000 }, (_, k) => ({ id: `t-new-${k}`, since: now - k }));

  // With room: 52,000 instances × 20 seats hold 1,000,000 tenants (40,000 seats free, spread at
  // random), 1% still booting, 1% draining, 1% unresponsive.
  const rng = new Rng(11, 7);
  const heapT0 = heapMb();
  const fleetN = 52_000;
  const tenantsOn = new Int32Array(fleetN).fill(capacity);
  for (let free = fleetN * capacity - 1_000_000; free > 0; ) {
    const k = Math.floor(rng.next() * fleetN);
    if (tenantsOn[k]! > 0) {
      tenantsOn[k]!--;
      free--;
    }
  }
  const states = ['starting', 'draining', 'unresponsive'] as const;
  const fleet: PlacementInstance[] = Array.from({ length: fleetN }, (_, k) => {
    const r = rng.next();
    return { id: `i-${String(k).padStart(6, '0')}`, role: 'web', state: r < 0.97 ? 'serving' : states[Math.floor((r - 0.97) / 0.01)] ?? 'unresponsive', tenants: tenantsOn[k]! };
  });
  const held = fleet.reduce((n, i) => n + i.tenants, 0);
  const heapFleet = heapMb() - heapT0;
  const live = fleet.filter((i) => i.state === 'serving' || i.state === 'starting').length;
  const roomy: PlacementInput = { role: 'web', capacity, max: 100_000, live, instances: fleet, pending: signUps, now };
  const room = placeTenants(roomy);
  const tRoom = time(() => placeTenants(roomy), 20);
  const budget = (v: number) => `budget ${TENANT_BUDGET_MS} ms: ${v <= TENANT_BUDGET_MS ? 'within' : 'OVER'} (${share(v)})`;
  out.push([
    `tenant placement: ${fmt(signUps.length)} sign-ups into ${fmt(fleetN)} instances holding ${fmt(held)} tenants (room: ${fmt(room.freeSeats.open)} seats free) → ${fmt(room.placements.length)} placed, ${room.newInstances} new`,
    `${ms(tRoom.median)} (p95 ${ms(tRoom.p95)})`,
    budget(tRoom.median),
  ]);

  // No room: 50,000 full instances (1,000,000 tenants); the sign-ups need 500 new instances.
  const full: PlacementInstance[] = Array.from({ length: 50_000 }, (_, k) => ({ id: `f-${k}`, role: 'web', state: 'serving', tenants: capacity }));
  const noRoom: PlacementInput = { role: 'web', capacity, max: 100_000, live: full.length, instances: full, pending: signUps, now };
  const none = placeTenants(noRoom);
  const tNone = time(() => placeTenants(noRoom), 20);
  out.push([
    `tenant placement: ${fmt(signUps.length)} sign-ups, ${fmt(full.length)} full instances (${fmt(full.length * capacity)} tenants) → ${fmt(none.newInstances)} new instances (minimum ${Math.ceil(signUps.length / capacity)})`,
    `${ms(tNone.median)} (p95 ${ms(tNone.p95)})`,
    budget(tNone.median),
  ]);

  // The pass right after: the 500 instances booting, the 10,000 sign-ups reserve seats on them, nothing more is ordered.
  const after: PlacementInput = {
    ...noRoom,
    live: full.length + none.newInstances,
    instances: [...full, ...Array.from({ length: none.newInstances }, (_, k): PlacementInstance => ({ id: `n-${k}`, role: 'web', state: 'provisioning', tenants: 0 }))],
  };
  const next = placeTenants(after);
  out.push([
    `tenant placement: the next pass, those ${none.newInstances} instances booting → ${fmt(next.placements.length)} seats reserved on them, ${next.newInstances} more ordered`,
    `${ms(time(() => placeTenants(after), 20).median)}`,
    'coalescing: seats on their way are counted',
  ]);
  out.push([
    `memory: the placement snapshot of ${fmt(fleetN)} instances holding ${fmt(held)} tenants`,
    `${heapFleet.toFixed(1)} MB`,
    `budget ${TENANT_BUDGET_MB} MB: ${heapFleet <= TENANT_BUDGET_MB ? 'within' : 'OVER'}; ${((heapFleet * 2 ** 20) / fleetN).toFixed(0)} bytes per instance, none per tenant`,
  ]);

  // Consolidation at the largest role (max 1000 instances), tenants spread at random.
  const crng = new Rng(11, 8);
  const role1k: PlacementInstance[] = Array.from({ length: 1000 }, (_, k) => ({ id: `c-${k}`, role: 'web', state: 'serving', tenants: Math.floor(crng.next() * (capacity + 1)) }));
  const ctenants: ConsolidationTenant[] = role1k.flatMap((i) => Array.from({ length: i.tenants }, (_, k) => ({ id: `${i.id}-${k}`, instanceId: i.id })));
  const cplan = consolidationPlan(role1k, ctenants, capacity, new Set(), 1_000_000);
  const tCons = time(() => consolidationPlan(role1k, ctenants, capacity, new Set(), 1_000_000), 5, 1);
  out.push([
    `consolidation plan: 1,000 instances (the largest role) holding ${fmt(ctenants.length)} tenants → ${fmt(cplan.saves)} instances emptied by ${fmt(cplan.moves.length)} moves (fewest possible ${cplan.minimum})`,
    `${ms(tCons.median)} (p95 ${ms(tCons.p95)})`,
    'a dry run on request (`drover tenants plan`), not every pass',
  ]);
  return out;
}

if (process.env.BENCH_ONLY === 'tenants') {
  console.log(['| measure | value | compared with |', '| --- | ---: | --- |', ...tenantRows().map(([a, b, c]) => `| ${a} | ${b} | ${c} |`)].join('\n'));
  process.exit(0);
}

// ---------------------------------------------------------------------------------------------
// The snapshot: one role at N serving instances.

const app: AppSpec = defaultApp(25);
const role = app.roles.web!;
const spec: AppSpec = { ...app, roles: { web: { ...role, max: 4 * N } } };
const hash = roleHash(spec.roles.web!);
const now = 1_700_000_000_000;
const heap0 = heapMb();
const instances: PlanInstance[] = Array.from({ length: N }, (_, k) => ({
  id: `i-${String(k + 1).padStart(7, '0')}`,
  role: 'web',
  pool: null,
  state: 'serving',
  goal: 'run',
  roleHash: hash,
  exports: { endpoint: `http://10.${(k >> 16) & 255}.${(k >> 8) & 255}.${k & 255}:8080` },
  importsSent: null,
  importsApplied: null,
  assignOrderId: `o-${k + 1}`,
  stopOrderId: null,
  drainOrderId: null,
  createdAt: now - 3_600_000 - k,
  stateSince: now - 3_600_000,
  stopRequestedAt: null,
  drainRequestedAt: null,
  destroyedAt: null,
  lastSeenAt: now - 500,
  busy: 0.5 + (k % 100) / 400,
  tenants: 0,
}));
const heapSnapshot = heapMb() - heap0;
const input = (desired: number): PlanInput => ({
  app: { name: app.app, spec, deleting: false },
  desired: { web: desired },
  instances,
  now,
  controllerStartedAt: now - 7_200_000,
  options: DEFAULT_PLANNER_OPTIONS,
});

const steady = time(() => plan(input(N)), 20);
const out = time(() => plan(input(N + N / 20)), 20);
const inn = time(() => plan(input(N - N / 20)), 20);
rows.push(
  [`reconcile pass: \`plan\`, ${N.toLocaleString('en-US')} instances, converged`, `${ms(steady.median)} (p95 ${ms(steady.p95)})`, share(steady.median)],
  [`reconcile pass: scale out by ${N / 20} (creates)`, `${ms(out.median)} (p95 ${ms(out.p95)})`, share(out.median)],
  [`reconcile pass: scale in by ${N / 20} (ranks victims, drains)`, `${ms(inn.median)} (p95 ${ms(inn.p95)})`, share(inn.median)],
);

// ---------------------------------------------------------------------------------------------
// Metrics: every instance reports cpu every 5 s (the agents' vitals), the load balancer its rate.

const policiesByName: [string, readonly Policy[]][] = [
  ["Drover's default (queue on demand + target cpu)", role.scale],
  ['threshold rule (cpu >90% / <15% for 60 s)', THRESHOLD_RULE],
  ['HPA defaults (target 80% cpu)', HPA_DEFAULTS],
];
const horizon = Math.max(...policiesByName.map(([, p]) => historyNeededMs(p)));
const heap1 = heapMb();
const metrics = new MetricStore({ horizonMs: horizon });
const intervalMs = 5000;
let samples = 0;
for (let t = now - horizon; t <= now; t += intervalMs) {
  for (let k = 0; k < N; k++) {
    metrics.add('web', 'cpu', { t: t - (k % intervalMs), value: 0.55 + 0.3 * Math.sin(k + t / 60_000), instance: instances[k]!.id });
    samples++;
  }
  metrics.add('web', 'demand', { t, value: N * 20 });
}
const heapMetrics = heapMb() - heap1;
const ctx = {
  role: 'web',
  now,
  current: N,
  min: 1,
  max: 4 * N,
  instances: instances.map((i) => ({ id: i.id, servingSince: now - 3_600_000 })),
  warmupMs: role.warmupMs,
  metrics,
};
for (const [name, policies] of policiesByName) {
  const e = time(() => evaluate(policies, ctx, undefined), 10, 2);
  rows.push([`policy evaluation: ${name}`, `${ms(e.median)} (p95 ${ms(e.p95)})`, share(e.median)]);
}
rows.push(
  [`memory: the ${N.toLocaleString('en-US')}-instance snapshot`, `${heapSnapshot.toFixed(1)} MB`, `${((heapSnapshot * 1024) / N).toFixed(2)} KB per instance`],
  [
    `memory: ${samples.toLocaleString('en-US')} metric samples (${horizon / 1000} s of cpu every 5 s)`,
    `${heapMetrics.toFixed(1)} MB`,
    `${((heapMetrics * 2 ** 20) / samples).toFixed(0)} bytes per sample`,
  ],
);

// ---------------------------------------------------------------------------------------------
// The whole loop in the simulator: an hour at ~N instances, demand ramping ±20% and back.

const rate = N * 22.5;
const hour = traceOf('ramp', 60_000, Array.from({ length: 60 }, (_, m) => rate * (0.9 + 0.2 * Math.sin((2 * Math.PI * m) / 60))));
for (const [name, policies] of [["Drover's default", undefined], ['HPA defaults', HPA_DEFAULTS]] as const) {
  const s = performance.now();
  const r = simulate({
    name,
    app: spec,
    role: 'web',
    ...(policies ? { policies } : {}),
    trace: hour,
    capacity: 25,
    boot: parseBoot('60s'),
    slo: parseSlo('wait:500ms'),
    seed: 1,
  });
  const took = performance.now() - s;
  const ticks = 240;
  rows.push([
    `simulator, ${name}: 1 h at ${Math.round(r.meanInstances).toLocaleString('en-US')} instances (peak ${r.peakInstances.toLocaleString('en-US')}), 15 s ticks`,
    `${(took / 1000).toFixed(1)} s, ${ms(took / ticks)} per tick`,
    `${share(took / ticks)} (a tick = evaluate + plan when needed + provider)`,
  ]);
}

rows.push(...tenantRows());

// ---------------------------------------------------------------------------------------------

const lines = [
  HEADING,
  '',
  `Generated by \`npm run bench:scale\` (${new Date().toISOString().slice(0, 10)}, Node ${process.version}${gc ? '' : ', without --expose-gc: memory figures are rough'}). ` +
    `The controller's core at ${N.toLocaleString('en-US')} instances of one role, set against the controller's ${DECISION_MS} ms decision ` +
    `interval (it evaluates the policies and plans that often while a role scales).`,
  '',
  '| measure | value | compared with |',
  '| --- | ---: | --- |',
  ...rows.map(([a, b, c]) => `| ${a} | ${b} | ${c} |`),
  '',
  TENANT_NOTE,
  '',
];
const markdown = lines.join('\n');
console.log(markdown);

const readme = writeReadmeSection(HEADING, markdown);
console.error(`bench:scale: wrote ${readme}`);
