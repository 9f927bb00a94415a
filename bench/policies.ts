/**
 * `npm run bench:policies`: Drover's default policy against the classic ones, in the same
 * simulator, on the WorldCup 1998 trace (read in place from ../shared/traces/worldcup98) and on
 * the generated families, with instances serving what they are configured for and 20% less or
 * more; plus one cost–SLO front per policy (its main knob swept). Prints markdown and writes it
 * into bench/README.md under "## Policies (bench:policies)".
 *
 * Held-out discipline: the default's knobs were tuned on seed 1 of each family (TUNING_SEEDS);
 * the tables report seeds 3 and 4 (HELD_OUT_SEEDS), which tuning never saw, and the WorldCup.
 *
 * BENCH_THREADS (default: the cores) worker threads; BENCH_SVG_DIR, when set, gets one SVG plot
 * per trace; DROVER_WORLDCUP_TRACE overrides the trace's path.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { adaptivePolicy, targetPolicy, thresholdPolicy, type Policy } from '../src/core/policy.js';
import {
  assembleComparison,
  comparisonRuns,
  DEFAULT_KNOBS,
  defaultApp,
  defaultThreads,
  formatTable,
  HPA_DEFAULTS,
  legacyApp,
  loadWorldCupTrace,
  prepareComparison,
  renderSvg,
  runJobs,
  SimInputError,
  SYNTHETIC_FAMILIES,
  syntheticTrace,
  type BaselineName,
  type ComparisonOptions,
  type ComparisonReport,
  type ComparisonRow,
  type SweepRun,
  type Trace,
} from '../src/sim/index.js';
import { writeReadmeSection } from './readme.js';

const CAPACITY = 25;
const BOOT = '60s';
const SLO = 'wait:500ms';
const TUNING_SEEDS = [1, 2];
const HELD_OUT_SEEDS = [3, 4];
const FACTORS = [1, 0.8, 1.2];
const THREADS = Number(process.env.BENCH_THREADS ?? defaultThreads());
const HEADING = '## Policies (bench:policies)';

const app = defaultApp(CAPACITY);
const droverPolicies = app.roles.web?.scale ?? [];
const legacyPolicies = legacyApp(CAPACITY).roles.web?.scale ?? [];
const LEGACY: SweepRun = { name: 'drover (old)', like: 'drover', policies: legacyPolicies, knob: 'the previous default: queue on the rate at 85% of the configured capacity' };

/** The knob values of each policy's front (its default is the comparison's own row). */
function frontSweeps(): SweepRun[] {
  const adaptive = droverPolicies.find((p) => p.kind === 'adaptive');
  const rest = droverPolicies.filter((p) => p.kind !== 'adaptive');
  const out: SweepRun[] = [];
  if (adaptive && adaptive.kind === 'adaptive') {
    for (const q of [0.8, 0.99]) out.push({ name: `drover q${q}`, like: 'drover', policies: [adaptivePolicy({ ...adaptive, quantile: q }), ...rest], knob: `quantile ${q}` });
  }
  for (const t of [0.6, 0.9]) out.push({ name: `hpa ${t}`, like: 'hpa', policies: [targetPolicy({ ...(HPA_DEFAULTS[0] as Extract<Policy, { kind: 'target' }>), target: t })], knob: `target ${t}` });
  for (const u of [0.6, 0.75]) {
    out.push({
      name: `threshold ${u}`,
      like: 'threshold',
      policies: [thresholdPolicy({ metric: 'cpu', upper: u, lower: 0.15, forMs: 60_000, cooldownMs: 60_000, step: 1, stat: 'mean' })],
      knob: `upper ${u}`,
    });
  }
  return out;
}

interface Cell {
  readonly key: string;
  readonly trace: string;
  readonly family: string;
  readonly seed: number | null;
  readonly factor: number;
  readonly front: boolean;
  readonly options: ComparisonOptions;
}

function options(trace: Trace, factor: number, extra: { baselines: BaselineName[]; sweeps: SweepRun[] }): ComparisonOptions {
  return prepareComparison({ app, trace, capacity: CAPACITY, capacityFactor: factor, boot: BOOT, slo: SLO, seed: 1, variants: [], ...extra });
}

const started = performance.now();
let worldCup: Trace | undefined;
let missing: string | undefined;
try {
  worldCup = loadWorldCupTrace();
} catch (e) {
  if (!(e instanceof SimInputError)) throw e;
  missing = e.message;
  console.error(`bench:policies: ${e.message}\nContinuing with the generated traces only.`);
}

const cells: Cell[] = [];
const core: BaselineName[] = ['threshold', 'hpa', 'oracle'];
if (worldCup) {
  for (const factor of FACTORS) {
    const baselines: BaselineName[] = factor === 1 ? ['threshold', 'hpa', 'aws', 'fixed', 'oracle'] : core;
    cells.push({ key: `worldcup98@${factor}`, trace: 'worldcup98', family: 'worldcup98', seed: null, factor, front: false, options: options(worldCup, factor, { baselines, sweeps: [LEGACY] }) });
  }
}
for (const family of SYNTHETIC_FAMILIES) {
  for (const seed of HELD_OUT_SEEDS) {
    const trace = syntheticTrace({ family, seed });
    for (const factor of seed === HELD_OUT_SEEDS[0] ? FACTORS : [1]) {
      const front = seed === HELD_OUT_SEEDS[0] && factor === 1;
      cells.push({ key: `${family}-${seed}@${factor}`, trace: `${family}-${seed}`, family, seed, factor, front, options: options(trace, factor, { baselines: core, sweeps: front ? [LEGACY, ...frontSweeps()] : [LEGACY] }) });
    }
  }
}

// The longest runs first (the WorldCup's, its threshold rule's above all), so no worker is
// left with one long run at the end.
const jobs = cells.flatMap((c, ci) => comparisonRuns(c.options).map((name) => ({ ci, name, options: c.options })));
const weight = (j: (typeof jobs)[number]) => (j.options.trace === worldCup ? 100 : 0) + (j.name.startsWith('threshold') ? 10 : 0) + (j.name.startsWith('drover') ? 5 : 0);
const order = jobs.map((j, k) => ({ j, k })).sort((a, b) => weight(b.j) - weight(a.j) || a.k - b.k);
const done = await runJobs(order.map((x) => x.j), THREADS);
const byJob = new Map(order.map((x, pos) => [x.k, done[pos]!]));
const reports = new Map<number, ComparisonReport>();
cells.forEach((c, ci) => {
  const mine = jobs.flatMap((j, k) => (j.ci === ci ? [byJob.get(k)!] : []));
  reports.set(ci, assembleComparison(c.options, mine));
});
const seconds = (performance.now() - started) / 1000;

// ---------------------------------------------------------------------------------------------
// Markdown

const pick = (r: ComparisonReport, n: string): ComparisonRow => r.rows.find((x) => x.name === n)!;
const cell = (r: ComparisonRow) => `${r.costVsOracle?.toFixed(2)}× · ${r.violatingMinutes}`;
/** Cheaper, and no more violating minutes (fewer, or both none). */
const beats = (d: ComparisonRow, x: ComparisonRow) => d.instanceHours < x.instanceHours && d.violatingMinutes <= x.violatingMinutes;
const factorText = (f: number) => (f === 1 ? 'right' : f < 1 ? `${Math.round((1 - f) * 100)}% slower` : `${Math.round((f - 1) * 100)}% faster`);

const lines: string[] = [HEADING, ''];
lines.push(
  `Generated by \`npm run bench:policies\` (${new Date().toISOString().slice(0, 10)}, Node ${process.version}, ` +
    `${THREADS} worker thread(s) on ${cpus().length} core(s), ${seconds.toFixed(0)} s). ` +
    `Every row runs through the same simulator: Drover's \`evaluate\` and \`plan\` on a virtual clock; M/M/c waits below ` +
    `saturation and a fluid backlog beyond it; metrics with one 5 s scrape's sampling noise, seen 5 s late; drains billed ` +
    `for the role's drain timeout (docs/simulator.md). Cost is instance-hours, "× oracle" relative to perfect foresight ` +
    `(the fewest instances whose M/M/c wait meets the SLO, a boot ahead); a minute violates the SLO when its requests waited ` +
    `more than ${SLO.slice(5)} on average (a dropped request counts as the 30 s timeout). Capacity ${CAPACITY} req/s per ` +
    `instance as configured; "slower"/"faster": instances truly serve 20% less/more than that (the oracle knows, the policies are told ${CAPACITY}).`,
  '',
  `Drover's default (src/sim/default-app.ts): \`adaptive\` on the load balancer's request rate — capacity learned from served ` +
    `rate and CPU (the configured ${CAPACITY} req/s only a prior), headroom the p${DEFAULT_KNOBS.quantile * 100} of the rate's growth within ` +
    `a reaction (${DEFAULT_KNOBS.reaction}) over the last ${DEFAULT_KNOBS.window}, between ${DEFAULT_KNOBS.minHeadroom * 100}% and ${DEFAULT_KNOBS.maxHeadroom * 100}%, ` +
    `a backlog drained within a minute, a gated seasonal forecast, a scale-down hold that grows with the headroom — and a ` +
    `\`target\` cpu ${DEFAULT_KNOBS.cpuTarget} safety net, min ${DEFAULT_KNOBS.min}. \`drover (old)\` is the previous default ` +
    `(\`queue\` on the rate at 85% of the configured capacity, 5 min hold).`,
  '',
  `Knobs tuned on seed ${TUNING_SEEDS.join(', ')} of each family (never reported here); the tables show held-out seeds ` +
    `${HELD_OUT_SEEDS.join(' and ')} and the WorldCup. "beats" = cheaper and no more violating minutes.`,
  '',
  '### Every trace',
  '',
  'Each cell: cost × oracle · minutes violating the SLO.',
  '',
  '| trace | instances | drover | drover (old) | hpa | threshold | beats hpa | beats threshold | ≤ 1.3× oracle |',
  '| --- | --- | ---: | ---: | ---: | ---: | :---: | :---: | :---: |',
);
let wins = 0;
let total = 0;
const losses: string[] = [];
const lostFamilies = new Set<string>();
/** How Drover's row lost to another: on cost, on violating minutes, or both. */
const lostBy = (d: ComparisonRow, x: ComparisonRow): string => {
  const cost = (d.instanceHours / x.instanceHours - 1) * 100;
  const costText = cost >= 0 ? `${cost.toFixed(1)}% dearer` : `${(-cost).toFixed(1)}% cheaper`;
  const minutes = d.violatingMinutes - x.violatingMinutes;
  return `${costText}, ${minutes > 0 ? `${minutes} more` : minutes < 0 ? `${-minutes} fewer` : 'as many'} violating minutes`;
};
/** Why the goal cannot hold on a family, where the cause is the family's nature rather than a knob. */
const WHY: Record<string, string> = {
  jumpy:
    'jumpy: the log rate jumps with a minute-to-minute sd of 0.5–0.7 (demand doubles or halves from one minute to the next), ' +
    'faster than a 60 s boot; only the oracle, which knows the next minute, follows it. Each reactive policy picks a point ' +
    'between cost and misses: Drover\'s headroom sits at its 50% cap there (its quantile sweep does not move it), the HPA is ' +
    'cheaper and misses about twice as many minutes, and the threshold rule (scale-in only below 15% CPU, 60 s cooldowns) ' +
    'keeps the last burst\'s instances and sits on a better front here. Raising the cap buys minutes at more cost ' +
    '(50% → 100% on the tuning seeds: 1.8× → 2.4× the oracle, 370 → 100 violating minutes), not a win over both.',
  sawtooth:
    'sawtooth: 2–4× bursts on the clock, each steeper than a boot: the threshold rule\'s fewer violating minutes cost about ' +
    '2.5× the oracle (it stays close to peak provisioning); Drover\'s front (quantile 0.8–0.99) spans about 1.3–1.6× the oracle ' +
    'and 100–150 violating minutes, each burst\'s first minutes, and does not reach that corner.',
  weekly:
    'weekly: 12% minute-scale noise on a smooth week; single noisy minutes above the 15% least headroom are what is left, ' +
    'against the HPA\'s 25% margin at about 6% more cost.',
};
cells.forEach((c, ci) => {
  const r = reports.get(ci)!;
  const d = pick(r, 'drover');
  const h = pick(r, 'hpa');
  const t = pick(r, 'threshold');
  const bh = beats(d, h);
  const bt = beats(d, t);
  const cheap = (d.costVsOracle ?? Infinity) <= 1.3;
  total++;
  if (bh && bt && cheap) wins++;
  else {
    losses.push(`${c.trace} (${factorText(c.factor)}): ${[bh ? '' : `not HPA (${lostBy(d, h)})`, bt ? '' : `not threshold (${lostBy(d, t)})`, cheap ? '' : `${d.costVsOracle?.toFixed(2)}× oracle`].filter(Boolean).join(', ')}`);
    lostFamilies.add(c.family);
  }
  lines.push(`| ${c.trace} | ${factorText(c.factor)} | ${cell(d)} | ${cell(pick(r, 'drover (old)'))} | ${cell(h)} | ${cell(t)} | ${bh ? 'yes' : 'NO'} | ${bt ? 'yes' : 'NO'} | ${cheap ? 'yes' : 'NO'} |`);
});
lines.push('', `The goal (beats both, at ≤ 1.3× the oracle) is met on ${wins} of ${total} traces. Not met: ${losses.join('; ') || 'none'}.`, '');
const whys = [...lostFamilies].flatMap((f) => (WHY[f] ? [`- ${WHY[f]}`] : []));
if (whys.length) lines.push('Why, where the family itself is the cause:', '', ...whys, '');

lines.push(
  '### Cost–SLO fronts',
  '',
  `Each policy with its main knob swept (held-out seed ${HELD_OUT_SEEDS[0]}, capacity right): drover's headroom quantile ` +
    `(0.8, default ${DEFAULT_KNOBS.quantile}, 0.99), the HPA's CPU target (0.6, default 0.8, 0.9), the threshold rule's upper bound ` +
    '(0.6, 0.75, default 0.9). Points: cost × oracle · violating minutes, cheapest first.',
  '',
  '| trace | drover | hpa | threshold |',
  '| --- | --- | --- | --- |',
);
cells.forEach((c, ci) => {
  if (!c.front) return;
  const r = reports.get(ci)!;
  const front = (names: string[]) =>
    names
      .map((n) => pick(r, n))
      .sort((a, b) => a.instanceHours - b.instanceHours)
      .map((x) => `${x.name === 'drover' || x.name === 'hpa' || x.name === 'threshold' ? '**' : ''}${cell(x)}${x.name === 'drover' || x.name === 'hpa' || x.name === 'threshold' ? '**' : ''}`)
      .join(', ');
  lines.push(`| ${c.trace} | ${front(['drover q0.8', 'drover', 'drover q0.99'])} | ${front(['hpa 0.6', 'hpa', 'hpa 0.9'])} | ${front(['threshold 0.6', 'threshold 0.75', 'threshold'])} |`);
});
lines.push('', 'Bold: each policy\'s default.', '');

const wc = cells.findIndex((c) => c.family === 'worldcup98' && c.factor === 1);
if (wc >= 0) lines.push('### WorldCup 1998 (capacity right)', '', formatTable(reports.get(wc)!), '', `Trace: ${reports.get(wc)!.trace.source}. M. Arlitt and T. Jin, "1998 World Cup Web Site Access Logs", August 1998.`, '');
else lines.push('### WorldCup 1998', '', `Not run: ${missing ?? 'trace missing'}`, '');

const markdown = lines.join('\n');
console.log(markdown);

// ---------------------------------------------------------------------------------------------
// bench/README.md: replace this section, keep the others.

const readme = writeReadmeSection(HEADING, markdown);
console.error(`bench:policies: wrote ${readme} (${seconds.toFixed(0)} s)`);

const svgDir = process.env.BENCH_SVG_DIR;
if (svgDir) {
  mkdirSync(svgDir, { recursive: true });
  cells.forEach((c, ci) => {
    const r = reports.get(ci);
    if (r) writeFileSync(join(svgDir, `${c.key}.svg`), renderSvg(r));
  });
  console.error(`bench:policies: wrote SVG plots to ${svgDir}`);
}
