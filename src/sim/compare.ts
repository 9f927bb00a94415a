/**
 * A comparison: Drover's policy (the app file's) and the baselines on one trace, in one run,
 * with the same seed, provider, planner and queueing model, and cost relative to the oracle.
 */
import { existsSync, readFileSync } from 'node:fs';
import { parseAppFile, type AppSpec, type Policy, type RoleSpec } from '../core/index.js';
import { AWS_TARGET_TRACKING, BASELINES, fixedSchedule, HPA_DEFAULTS, neededPerTick, oracleSchedule, THRESHOLD_RULE, type BaselineName } from './baselines.js';
import { simulate, tickRates, type Report, type SimulateOptions } from './engine.js';
import { forecastPolicy, type ForecastPolicy } from './forecast.js';
import { loadTrace, traceDurationMs, type Trace } from './trace.js';
import { bootQuantileMs, CLOUD_BOOTS, cloudBoot, type SimProvider } from './clouds.js';
import { bootUpperMs, describeBoot, describeSlo, formatDuration, parseBoot, parseSlo, SimInputError, type BootDistribution, type Slo } from './units.js';

export interface ComparisonOptions {
  /** The app (or the path of its file); the role with `scale:` policies is Drover's. */
  readonly app: AppSpec | string;
  /** The role simulated. @default the first role with `scale:` policies, else the first role */
  readonly role?: string;
  /** A trace, or the path of its CSV. */
  readonly trace: Trace | string;
  /** Requests per second one instance serves, as configured (what the policies are told). */
  readonly capacity: number;
  /** What instances truly serve relative to `capacity` (0.8: 20% slower). @default 1 */
  readonly capacityFactor?: number;
  /** @default 'erlang' */
  readonly queueModel?: 'erlang' | 'fluid';
  /** @default true */
  readonly metricNoise?: boolean;
  /** @default 5000 */
  readonly metricLagMs?: number;
  /** @default the role's drainTimeoutMs */
  readonly drainMs?: number;
  /** Extra runs with a policy's main knob changed, for cost–SLO fronts. */
  readonly sweeps?: readonly SweepRun[];
  /**
   * A distribution or its text (`60s`, `uniform:30s..90s`, `lognormal:60s,0.5`).
   * @default the provider's (clouds.ts), else 60s
   */
  readonly boot?: BootDistribution | string;
  /**
   * Where the instances run: its boot-time distribution unless `boot` is given, and a run to
   * say what warm spares buy there. @default the role's `provider: kind:` from the app file
   */
  readonly provider?: SimProvider;
  /**
   * Add Drover's run with other warm spares (none if the role keeps some, else 2) and compare
   * the two. @default true when a provider is named (here or in the app file)
   */
  readonly compareSpares?: boolean;
  /** Warm spares for Drover's role; the baselines keep none. @default the app file's */
  readonly spares?: number;
  /** @default wait:500ms */
  readonly slo?: Slo | string;
  /** @default 1 */
  readonly seed?: number;
  /** @default 15000 */
  readonly tickMs?: number;
  /** Clients give up after this long. @default 30000 */
  readonly timeoutMs?: number;
  /** Role assignment to serving. @default 0 */
  readonly startMs?: number;
  /** Crashes per instance-hour. @default 0 */
  readonly crashRate?: number;
  /** @default all of BASELINES */
  readonly baselines?: readonly BaselineName[];
  /** Variants of Drover's run, reported beside it (other spares, the forecast policy). */
  readonly variants?: readonly DroverVariant[];
  /** @default 1200 */
  readonly seriesPoints?: number;
}

/** One point of a policy's cost–SLO front: its run with other policies (a knob changed). */
export interface SweepRun {
  readonly name: string;
  /** The run whose settings it takes (bounds, spares, evaluation period). */
  readonly like: 'drover' | 'threshold' | 'hpa' | 'aws';
  readonly policies: readonly Policy[];
  /** The knob and its value, in words: `target 0.6`. */
  readonly knob: string;
}

/** Drover's role with other warm spares and/or the predictive `forecast` policy added. */
export interface DroverVariant {
  /** Its row's name: `drover+forecast`. */
  readonly name: string;
  readonly spares?: number;
  /** `true`: the forecast derived from the role's `queue` policy on `demand` ({@link forecastFor}). */
  readonly forecast?: boolean | ForecastPolicy;
}

export interface TraceSummary {
  readonly name: string;
  readonly source: string;
  /** ISO time of the first interval, or null for offsets. */
  readonly start: string | null;
  readonly stepMs: number;
  readonly intervals: number;
  readonly filled: number;
  readonly hours: number;
  readonly meanRate: number;
  readonly peakRate: number;
}

export interface ComparisonRow extends Report {
  /** `drover`, a variant of it, or a baseline. */
  readonly kind: 'drover' | 'variant' | BaselineName;
  /** instanceHours / the oracle's. */
  readonly costVsOracle: number | null;
}

export interface ComparisonReport {
  readonly trace: TraceSummary;
  readonly settings: {
    readonly app: string;
    readonly role: string;
    readonly capacity: number;
    readonly boot: string;
    /** The provider whose boot times were used, if one was named. */
    readonly provider: SimProvider | null;
    /** The boot distribution's median, 90th and 99th percentiles. */
    readonly bootQuantilesMs: { readonly p50: number; readonly p90: number; readonly p99: number };
    readonly slo: string;
    readonly spares: number;
    readonly seed: number;
    readonly tickMs: number;
    readonly timeoutMs: number;
    readonly startMs: number;
    readonly crashRate: number;
    readonly capacityFactor: number;
    readonly queueModel: 'erlang' | 'fluid';
    readonly metricNoise: boolean;
  };
  readonly oracleInstanceHours: number | null;
  /** What warm spares buy: Drover's run with spares and the one without (row names), when compared. */
  readonly spares: { readonly with: RunName; readonly without: RunName; readonly spares: number } | null;
  /** Drover first, then the baselines in the order asked. */
  readonly rows: readonly ComparisonRow[];
}

/** The runs of a comparison, by name: `drover`, a variant's name, or a baseline. */
export type RunName = string;

interface Resolved {
  readonly app: AppSpec;
  readonly role: RoleSpec;
  readonly trace: Trace;
  readonly boot: BootDistribution;
  readonly provider: SimProvider | undefined;
  readonly slo: Slo;
  readonly tickMs: number;
  readonly seed: number;
  readonly spares: number;
  readonly baselines: readonly BaselineName[];
  /** The variants asked for, and the spares comparison's. */
  readonly variants: readonly DroverVariant[];
  readonly spareVariant: DroverVariant | undefined;
}

/** The warm spares the comparison tries when the role keeps none. */
const SPARES_TRIED = 2;

function resolve(o: ComparisonOptions): Resolved {
  if (typeof o.app === 'string' && !existsSync(o.app)) throw new SimInputError('--app', `no such file: ${o.app}`);
  const app = typeof o.app === 'string' ? parseAppFile(readFileSync(o.app, 'utf8')) : o.app;
  const roles = Object.values(app.roles);
  const role = o.role !== undefined ? app.roles[o.role] : (roles.find((r) => r.scale.length > 0) ?? roles[0]);
  if (!role) throw new SimInputError('--role', o.role !== undefined ? `no role ${JSON.stringify(o.role)} in app ${app.app}` : `app ${app.app} has no role`);
  const trace = typeof o.trace === 'string' ? loadTrace(o.trace) : o.trace;
  const baselines = o.baselines ?? BASELINES;
  for (const b of baselines) if (!BASELINES.includes(b)) throw new SimInputError('--baselines', `unknown baseline ${JSON.stringify(b)}; expected some of ${BASELINES.join(', ')}`);
  const provider = o.provider ?? role.provider?.kind;
  if (provider !== undefined) cloudBoot(provider, o.provider !== undefined ? '--provider' : `roles.${role.name}.provider.kind`);
  const boot = o.boot === undefined ? (provider !== undefined ? CLOUD_BOOTS[provider].boot : parseBoot('60s')) : typeof o.boot === 'string' ? parseBoot(o.boot) : o.boot;
  const spares = o.spares ?? role.spares + app.spares;
  const spareVariant: DroverVariant | undefined =
    (o.compareSpares ?? provider !== undefined) ? (spares > 0 ? { name: 'drover, no spares', spares: 0 } : { name: `drover, ${SPARES_TRIED} spares`, spares: SPARES_TRIED }) : undefined;
  return {
    app,
    role,
    trace,
    boot,
    provider,
    slo: o.slo === undefined ? { kind: 'wait', ms: 500 } : typeof o.slo === 'string' ? parseSlo(o.slo) : o.slo,
    tickMs: o.tickMs ?? 15_000,
    seed: o.seed ?? 1,
    spares,
    baselines,
    variants: [...(o.variants ?? []), ...(spareVariant ? [spareVariant] : [])],
    spareVariant,
  };
}

/** The names of the runs `runComparison` makes, in report order. */
export function comparisonRuns(options: ComparisonOptions): RunName[] {
  const r = resolve(options);
  return [
    'drover',
    ...r.variants.map((v) => v.name),
    ...r.baselines.filter((b) => b !== 'oracle'),
    ...(options.sweeps ?? []).map((w) => w.name),
    ...r.baselines.filter((b) => b === 'oracle'),
  ];
}

/** Whole ticks nearest to `ms`, at least one. */
const ticksOf = (ms: number, tickMs: number) => Math.max(1, Math.round(ms / tickMs)) * tickMs;

/** The options of one run of the comparison: what `runComparison` simulates under that name. */
export function comparisonRunOptions(options: ComparisonOptions, name: RunName): SimulateOptions {
  const sweep = options.sweeps?.find((w) => w.name === name);
  if (sweep) {
    const base = comparisonRunOptions({ ...options, sweeps: [] }, sweep.like);
    return { ...base, name, policies: sweep.policies, description: `${sweep.like} with ${sweep.knob}` };
  }
  const r = resolve(options);
  const common = {
    app: r.app,
    role: r.role.name,
    trace: r.trace,
    capacity: options.capacity,
    boot: r.boot,
    slo: r.slo,
    seed: r.seed,
    tickMs: r.tickMs,
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    ...(options.startMs !== undefined ? { startMs: options.startMs } : {}),
    ...(options.crashRate !== undefined ? { crashRate: options.crashRate } : {}),
    ...(options.seriesPoints !== undefined ? { seriesPoints: options.seriesPoints } : {}),
    ...(options.capacityFactor !== undefined ? { capacityFactor: options.capacityFactor } : {}),
    ...(options.queueModel !== undefined ? { queueModel: options.queueModel } : {}),
    ...(options.metricNoise !== undefined ? { metricNoise: options.metricNoise } : {}),
    ...(options.metricLagMs !== undefined ? { metricLagMs: options.metricLagMs } : {}),
    ...(options.drainMs !== undefined ? { drainMs: options.drainMs } : {}),
  };
  // Baselines are sized by nothing but their rule: no spares, no warm-up, bounds wide open.
  const open = { min: 1, max: 100_000, spares: 0, warmupMs: 0 };
  // The oracle and fixed provisioning know what an instance truly serves.
  const need = () =>
    neededPerTick(tickRates(r.trace, r.tickMs, Math.ceil(traceDurationMs(r.trace) / r.tickMs)), options.capacity * (options.capacityFactor ?? 1), r.slo, {
      model: options.queueModel ?? 'erlang',
      serversPerInstance: 1,
    });
  const variant = r.variants.find((v) => v.name === name);
  if (name === 'drover' || variant) {
    const spares = variant?.spares ?? r.spares;
    const forecast = variant?.forecast === true ? forecastFor(r.role, r.boot, r.tickMs, options.startMs ?? 0) : variant?.forecast || undefined;
    const what = describeDrover(r.role, spares) + (forecast ? `, + forecast ${forecast.metric} ${formatDuration(forecast.horizonMs)} ahead` : '');
    return { ...common, name, spares, ...(forecast ? { forecast } : {}), description: what };
  }
  switch (name as BaselineName) {
    case 'threshold':
      return { ...common, ...open, name, policies: THRESHOLD_RULE, evaluateEveryMs: ticksOf(60_000, r.tickMs), description: 'mean cpu >90% / <15% for 60s, ±1 instance, cooldown 60s, evaluated every 60s' };
    case 'hpa':
      return { ...common, ...open, name, policies: HPA_DEFAULTS, evaluateEveryMs: ticksOf(15_000, r.tickMs), description: 'Kubernetes HPA defaults: target 80% cpu, tolerance 10%, 5m scale-down stabilization, +max(4, 100%) / -100% per 15s, 15s sync' };
    case 'aws':
      return { ...common, ...open, name, policies: AWS_TARGET_TRACKING, evaluateEveryMs: ticksOf(60_000, r.tickMs), description: 'AWS target tracking (approximation): 50% cpu over 1-minute datapoints, scale-in after 3 minutes below, no rate limit' };
    case 'fixed': {
      const f = fixedSchedule(need());
      return { ...common, name, schedule: f.schedule, min: 0, max: 100_000, spares: 0, initial: f.count, description: `the peak's ${f.count} instances, all the time` };
    }
    case 'oracle': {
      const ahead = Math.ceil((bootUpperMs(r.boot) + (options.startMs ?? 0)) / r.tickMs);
      return {
        ...common,
        name,
        schedule: oracleSchedule(need(), ahead),
        min: 0,
        max: 100_000,
        spares: 0,
        description: `perfect foresight: the instances each tick needs, created ${formatDuration(ahead * r.tickMs)} (a boot) ahead`,
      };
    }
    default:
      throw new SimInputError('run', `no run ${JSON.stringify(name)}: expected drover, a variant's name, or one of ${BASELINES.join(', ')}`);
  }
}

/**
 * The forecast for a role that scales on `demand` with a `queue` policy: the same rate per
 * instance, extrapolated a boot (its rarely-exceeded value), a start and a tick ahead.
 */
export function forecastFor(role: RoleSpec, boot: BootDistribution, tickMs: number, startMs = 0): ForecastPolicy {
  const a = role.scale.find((p) => p.kind === 'adaptive' && p.metric === 'demand');
  if (a && a.kind === 'adaptive' && a.perInstance !== undefined) {
    return forecastPolicy({ metric: 'demand', perInstance: a.perInstance * 0.85, horizonMs: bootUpperMs(boot) + startMs + tickMs, scaleDownStabilizationMs: 180_000 });
  }
  const q = role.scale.find((p) => p.kind === 'queue' && p.metric === 'demand');
  if (!q || q.kind !== 'queue') throw new SimInputError('forecast', `role ${role.name} has no queue policy on demand to derive a forecast from`);
  return forecastPolicy({ metric: 'demand', perInstance: q.perInstance, horizonMs: bootUpperMs(boot) + startMs + tickMs, scaleDownStabilizationMs: 180_000 });
}

/** Simulates one run of the comparison (what a worker thread does). */
export function runComparisonRun(options: ComparisonOptions, name: RunName): Report {
  return simulate(comparisonRunOptions(options, name));
}

/** `queue demand/20 + target cpu 0.85, 3m scale-down stabilization, 1 spare`. */
function describeDrover(role: RoleSpec, spares: number): string {
  const policies = role.scale.map((p) => {
    if (p.kind === 'threshold') return `threshold ${p.metric}${p.upper !== undefined ? ` >${p.upper}` : ''}${p.lower !== undefined ? ` <${p.lower}` : ''}`;
    if (p.kind === 'target') return `target ${p.metric} ${p.target}`;
    if (p.kind === 'adaptive') return `adaptive ${p.metric} (learned capacity${p.perInstance !== undefined ? `, prior ${p.perInstance}/s` : ''}, p${Math.round(p.quantile * 100)} growth headroom${p.forecast ? ', gated forecast' : ''})`;
    return `queue ${p.metric}/${p.perInstance}`;
  });
  const parts = [`role ${role.name}: ${policies.join(' + ') || 'no policy (its count)'}`];
  const stab = role.scale.flatMap((p) => (p.kind === 'threshold' ? [p.cooldownMs] : p.kind === 'adaptive' ? [] : [p.scaleDownStabilizationMs]));
  if (stab.length > 0) parts.push(`${formatDuration(Math.max(...stab))} scale-down stabilization`);
  parts.push(`${spares} warm spare${spares === 1 ? '' : 's'}`);
  return parts.join(', ');
}

/** Puts the runs' reports together, with costs relative to the oracle's. */
export function assembleComparison(options: ComparisonOptions, reports: readonly Report[]): ComparisonReport {
  const r = resolve(options);
  const oracle = reports.find((x) => x.name === 'oracle');
  const rates = r.trace.rates;
  let sum = 0;
  let peak = 0;
  for (const v of rates) {
    sum += v;
    peak = Math.max(peak, v);
  }
  return {
    trace: {
      name: r.trace.name,
      source: r.trace.source,
      start: r.trace.startMs > 0 ? new Date(r.trace.startMs).toISOString() : null,
      stepMs: r.trace.stepMs,
      intervals: rates.length,
      filled: r.trace.filled,
      hours: traceDurationMs(r.trace) / 3_600_000,
      meanRate: rates.length > 0 ? Math.round((sum / rates.length) * 1000) / 1000 : 0,
      peakRate: Math.round(peak * 1000) / 1000,
    },
    settings: {
      app: r.app.app,
      role: r.role.name,
      capacity: options.capacity,
      boot: describeBoot(r.boot),
      provider: r.provider ?? null,
      bootQuantilesMs: { p50: bootQuantileMs(r.boot, 0.5), p90: bootQuantileMs(r.boot, 0.9), p99: bootQuantileMs(r.boot, 0.99) },
      slo: describeSlo(r.slo),
      spares: r.spares,
      seed: r.seed,
      tickMs: r.tickMs,
      timeoutMs: options.timeoutMs ?? 30_000,
      startMs: options.startMs ?? 0,
      crashRate: options.crashRate ?? 0,
      capacityFactor: options.capacityFactor ?? 1,
      queueModel: options.queueModel ?? 'erlang',
      metricNoise: options.metricNoise ?? true,
    },
    oracleInstanceHours: oracle ? oracle.instanceHours : null,
    spares: r.spareVariant
      ? r.spares > 0
        ? { with: 'drover', without: r.spareVariant.name, spares: r.spares }
        : { with: r.spareVariant.name, without: 'drover', spares: r.spareVariant.spares ?? SPARES_TRIED }
      : null,
    rows: reports.map((rep) => ({
      ...rep,
      kind: rep.name === 'drover' ? 'drover' : BASELINES.includes(rep.name as BaselineName) ? (rep.name as BaselineName) : 'variant',
      costVsOracle: oracle && oracle.instanceHours > 0 ? Math.round((rep.instanceHours / oracle.instanceHours) * 1000) / 1000 : null,
    })),
  };
}

/**
 * The options with files read, the trace parsed and texts compiled: what every run then
 * shares (and what a worker thread is sent, as plain data).
 */
export function prepareComparison(options: ComparisonOptions): ComparisonOptions {
  const r = resolve(options);
  return {
    ...options, app: r.app, role: r.role.name, trace: r.trace, boot: r.boot, slo: r.slo, seed: r.seed, tickMs: r.tickMs, spares: r.spares,
    ...(r.provider !== undefined ? { provider: r.provider } : {}),
    compareSpares: r.spareVariant !== undefined,
  };
}

/** Drover's policy and the baselines on one trace, one after the other on this thread. */
export function runComparison(options: ComparisonOptions): ComparisonReport {
  const prepared = prepareComparison(options);
  return assembleComparison(prepared, comparisonRuns(prepared).map((name) => runComparisonRun(prepared, name)));
}

// ---------------------------------------------------------------------------------------------
// Table

const int = (v: number) => Math.round(v).toLocaleString('en-US');
function pct(share: number): string {
  if (share === 0) return '0%';
  if (share < 0.0001) return '<0.01%';
  return `${(share * 100).toFixed(share < 0.01 ? 2 : 1)}%`;
}
function wait(ms: number): string {
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(1)} s`;
}

/** The comparison as a markdown table, with a line saying what was simulated. */
export function formatTable(report: ComparisonReport): string {
  const s = report.settings;
  const t = report.trace;
  const head =
    `**${t.name}** — ${t.hours.toFixed(t.hours < 48 ? 1 : 0)} h, mean ${int(t.meanRate)} req/s, peak ${int(t.peakRate)} req/s` +
    (t.filled > 0 ? `, ${t.filled} missing interval(s) held at the previous rate` : '') +
    `. Capacity ${s.capacity} req/s per instance, boot ${s.provider ? `on ${s.provider} ` : ''}${s.boot}${s.provider ? ` (p90 ${formatSeconds(s.bootQuantilesMs.p90)}, p99 ${formatSeconds(s.bootQuantilesMs.p99)})` : ''}, SLO ${s.slo}, client timeout ${formatDuration(s.timeoutMs)}, ` +
    `tick ${formatDuration(s.tickMs)}, seed ${s.seed}` +
    (s.capacityFactor !== 1 ? `, instances truly serve ${Math.round(s.capacityFactor * 100)}% of the configured capacity` : '') +
    `, ${s.queueModel === 'erlang' ? 'M/M/c waits below saturation' : 'fluid queue'}${s.metricNoise ? ', noisy metrics' : ''}` +
    (s.crashRate > 0 ? `, ${s.crashRate} crashes per instance-hour` : '') +
    '.';
  const cols = ['policy', 'instance-hours', '× oracle', 'SLO violated', 'queued', 'dropped', 'mean wait', 'scaling actions', 'peak'];
  const lines = [head, '', `| ${cols.join(' | ')} |`, `|${cols.map((_, k) => (k === 0 ? ' --- ' : ' ---: ')).join('|')}|`];
  for (const r of report.rows) {
    lines.push(
      `| ${r.name} | ${int(r.instanceHours)} | ${r.costVsOracle === null ? '—' : r.costVsOracle.toFixed(2)} | ${pct(r.sloViolationShare)} (${int(r.violatingMinutes)} min) | ` +
        `${int(r.queued)} | ${int(r.dropped)} | ${wait(r.meanWaitMs)} | ${int(r.scalingActions)} | ${r.peakInstances} |`,
    );
  }
  lines.push('');
  for (const r of report.rows) lines.push(`- **${r.name}**: ${r.description}`);
  const spares = sparesSection(report);
  if (spares.length > 0) lines.push('', ...spares);
  return lines.join('\n');
}

/** Instance-hours: one decimal below 100. */
const hours = (v: number) => (Math.abs(v) < 100 ? v.toFixed(1) : int(v));

/** `48 s`, `2.1 min`. */
function formatSeconds(ms: number): string {
  return ms < 120_000 ? `${Math.round(ms / 1000)} s` : `${(ms / 60_000).toFixed(1)} min`;
}

/**
 * What warm spares buy on the provider: the two runs side by side — their cost, SLO misses,
 * dropped requests, and how long a rise of the desired count took to serve — and a sentence.
 */
function sparesSection(report: ComparisonReport): string[] {
  const cmp = report.spares;
  const withRow = cmp && report.rows.find((r) => r.name === cmp.with);
  const without = cmp && report.rows.find((r) => r.name === cmp.without);
  if (!cmp || !withRow || !without) return [];
  const s = report.settings;
  const where = s.provider ? `on ${s.provider} (boot median ${formatSeconds(s.bootQuantilesMs.p50)}, p90 ${formatSeconds(s.bootQuantilesMs.p90)}, p99 ${formatSeconds(s.bootQuantilesMs.p99)})` : `with boot ${s.boot}`;
  const cols = ['run', 'warm spares', 'instance-hours', 'SLO violated', 'dropped', 'rise → serving, mean', 'p90', 'max'];
  const line = (r: ComparisonRow, n: number) =>
    `| ${r.name} | ${n} | ${hours(r.instanceHours)} | ${pct(r.sloViolationShare)} (${int(r.violatingMinutes)} min) | ${int(r.dropped)} | ` +
    `${formatSeconds(r.timeToServe.meanMs)} | ${formatSeconds(r.timeToServe.p90Ms)} | ${formatSeconds(r.timeToServe.maxMs)} |`;
  const extra = withRow.instanceHours - without.instanceHours;
  const saved = without.violatingMinutes - withRow.violatingMinutes;
  const sentence =
    `${cmp.spares} warm spare${cmp.spares === 1 ? '' : 's'} cost ${extra >= 0 ? '+' : ''}${hours(extra)} instance-hours ` +
    `(${without.instanceHours > 0 ? `${extra >= 0 ? '+' : ''}${((extra / without.instanceHours) * 100).toFixed(1)}%` : '—'}) and ` +
    `${saved >= 0 ? `save ${int(saved)}` : `add ${int(-saved)}`} SLO-violating minute${Math.abs(saved) === 1 ? '' : 's'}; ` +
    `a rise of the desired count serves in ${formatSeconds(withRow.timeToServe.meanMs)} on average instead of ${formatSeconds(without.timeToServe.meanMs)} ` +
    `(p90 ${formatSeconds(withRow.timeToServe.p90Ms)} instead of ${formatSeconds(without.timeToServe.p90Ms)}).`;
  return [
    `**What warm spares buy ${where}**`,
    '',
    `| ${cols.join(' | ')} |`,
    `|${cols.map((_, k) => (k === 0 ? ' --- ' : ' ---: ')).join('|')}|`,
    line(without, 0),
    line(withRow, cmp.spares),
    '',
    sentence,
  ];
}
