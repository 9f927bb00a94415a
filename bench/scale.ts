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
  DEFAULT_PLANNER_OPTIONS,
  evaluate,
  historyNeededMs,
  MetricStore,
  plan,
  roleHash,
  type AppSpec,
  type PlanInput,
  type PlanInstance,
  type Policy,
} from '../src/core/index.js';
import { defaultApp, HPA_DEFAULTS, parseBoot, parseSlo, simulate, THRESHOLD_RULE, traceOf } from '../src/sim/index.js';
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

rows.push(
  ['tenant placement: 1,000,000 tenants', 'n/a (tenant placement not built yet)', '—'],
  ['tenant placement: 10,000 sign-ups', 'n/a (tenant placement not built yet)', '—'],
);

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
];
const markdown = lines.join('\n');
console.log(markdown);

const readme = writeReadmeSection(HEADING, markdown);
console.error(`bench:scale: wrote ${readme}`);
