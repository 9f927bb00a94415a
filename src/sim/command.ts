/**
 * `drover simulate`: the comparison for a user's app file and trace, printed as a table (or
 * JSON), with an optional SVG plot. The CLI passes its parsed flags straight through.
 */
import { writeFileSync } from 'node:fs';
import { SpecError } from '../core/index.js';
import { BASELINES, type BaselineName } from './baselines.js';
import { cloudBoot } from './clouds.js';
import { formatTable, type ComparisonOptions, type DroverVariant } from './compare.js';
import { defaultThreads, runComparisonParallel } from './parallel.js';
import { renderSvg } from './svg.js';
import { SYNTHETIC_FAMILIES, syntheticTrace, type SyntheticFamily } from './synthetic.js';
import { loadTrace, loadWorldCupTrace, type Trace } from './trace.js';
import { parseDuration, SimInputError } from './units.js';

/** The flags of `drover simulate`, as commander hands them over (strings, or already numbers). */
export interface SimulateCommandOptions {
  /** The app file; Drover's policy is its role with `scale:` policies (or `role`). */
  readonly app: string;
  /** A CSV path, `worldcup98` (the shared trace, read in place), or `synthetic:FAMILY[:SEED[:DAYS]]`. */
  readonly trace: string;
  readonly role?: string;
  /** Requests/s per instance. @default 25 */
  readonly capacity?: string | number;
  /** @default the provider's boot times, else 60s */
  readonly boot?: string;
  /** `local`, `ec2` or `openstack`: that provider's boot times (clouds.ts) and what warm spares buy there. @default the app file's `provider: kind:` */
  readonly provider?: string;
  /** Warm spares for Drover's role. @default the app file's */
  readonly spares?: string | number;
  /** @default wait:500ms */
  readonly slo?: string;
  /** @default 1 */
  readonly seed?: string | number;
  /** @default 15s */
  readonly tick?: string;
  /** Client timeout. @default 30s */
  readonly timeout?: string;
  /** Assignment to serving. @default 0s */
  readonly start?: string;
  /** Crashes per instance-hour. @default 0 */
  readonly crashRate?: string | number;
  /** What instances truly serve relative to `capacity` (0.8: 20% slower than the policies are told). @default 1 */
  readonly capacityFactor?: string | number;
  /** `erlang` (waits grow before saturation) or `fluid`. @default erlang */
  readonly queue?: string;
  /** commander's `--no-noise`: metrics exact instead of carrying one scrape's sampling noise. @default true */
  readonly noise?: boolean;
  /** Age of a sample when a policy can first read it. @default 5s */
  readonly metricLag?: string;
  /** How long a draining instance is billed after its drain order. @default the role's drainTimeout */
  readonly drain?: string;
  /** Comma-separated subset of oracle,fixed,threshold,hpa,aws. @default all */
  readonly baselines?: string;
  /** Add a `drover+forecast` row: the role's demand policy with the predictive forecast. */
  readonly forecast?: boolean;
  /** Print the report as JSON instead of the table. */
  readonly json?: boolean;
  /** Write the plot here. */
  readonly svg?: string;
  /** Worker threads. @default the cores, at most 8 */
  readonly threads?: string | number;
}

export interface CommandIo {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
}

const processIo: CommandIo = {
  stdout: (t) => process.stdout.write(t),
  stderr: (t) => process.stderr.write(t),
};

function number(value: string | number | undefined, option: string, fallback: number, check: (n: number) => boolean, expected: string): number {
  if (value === undefined) return fallback;
  const n = typeof value === 'number' ? value : Number(value);
  if (typeof value === 'string' && value.trim() === '') throw new SimInputError(option, `expected ${expected}`);
  if (!Number.isFinite(n) || !check(n)) throw new SimInputError(option, `expected ${expected}, got ${JSON.stringify(value)}`);
  return n;
}

/** `worldcup98`, `synthetic:flash:2:7`, or a CSV path. */
export function resolveTrace(spec: string): Trace {
  if (spec === 'worldcup98') return loadWorldCupTrace();
  if (spec.startsWith('synthetic:')) {
    const [, family = '', seed = '1', days = '3'] = spec.split(':');
    if (!SYNTHETIC_FAMILIES.includes(family as SyntheticFamily)) {
      throw new SimInputError('--trace', `unknown synthetic family ${JSON.stringify(family)}; expected ${SYNTHETIC_FAMILIES.join(', ')}`);
    }
    return syntheticTrace({
      family: family as SyntheticFamily,
      seed: number(seed, '--trace', 1, Number.isInteger, 'an integer seed'),
      days: number(days, '--trace', 3, (n) => Number.isInteger(n) && n > 0, 'a whole number of days'),
    });
  }
  return loadTrace(spec);
}

function queueModel(v: string): 'erlang' | 'fluid' {
  if (v === 'erlang' || v === 'fluid') return v;
  throw new SimInputError('--queue', `expected erlang or fluid, got ${JSON.stringify(v)}`);
}

/** The comparison options the flags describe; throws SimInputError naming a bad flag. */
export function commandOptions(o: SimulateCommandOptions): ComparisonOptions {
  const baselines = o.baselines === undefined ? BASELINES : o.baselines.split(',').map((b) => b.trim()).filter(Boolean);
  for (const b of baselines) {
    if (!BASELINES.includes(b as BaselineName)) throw new SimInputError('--baselines', `unknown baseline ${JSON.stringify(b)}; expected some of ${BASELINES.join(', ')}`);
  }
  const variants: DroverVariant[] = o.forecast ? [{ name: 'drover+forecast', forecast: true }] : [];
  return {
    app: o.app,
    ...(o.role !== undefined ? { role: o.role } : {}),
    trace: resolveTrace(o.trace),
    capacity: number(o.capacity, '--capacity', 25, (n) => n > 0, 'requests/s per instance, a number greater than 0'),
    ...(o.boot !== undefined ? { boot: o.boot } : {}),
    ...(o.provider !== undefined ? { provider: cloudBoot(o.provider).provider } : {}),
    ...(o.spares !== undefined ? { spares: number(o.spares, '--spares', 0, (n) => Number.isInteger(n) && n >= 0, 'an integer >= 0') } : {}),
    slo: o.slo ?? 'wait:500ms',
    seed: number(o.seed, '--seed', 1, Number.isInteger, 'an integer'),
    tickMs: o.tick !== undefined ? parseDuration(o.tick, '--tick') : 15_000,
    ...(o.timeout !== undefined ? { timeoutMs: parseDuration(o.timeout, '--timeout') } : {}),
    ...(o.start !== undefined ? { startMs: parseDuration(o.start, '--start') } : {}),
    crashRate: number(o.crashRate, '--crash-rate', 0, (n) => n >= 0, 'crashes per instance-hour, a number >= 0'),
    ...(o.capacityFactor !== undefined
      ? { capacityFactor: number(o.capacityFactor, '--capacity-factor', 1, (n) => n > 0 && n <= 10, 'a factor greater than 0 and at most 10 (0.8: instances 20% slower than --capacity)') }
      : {}),
    ...(o.queue !== undefined ? { queueModel: queueModel(o.queue) } : {}),
    ...(o.noise === false ? { metricNoise: false } : {}),
    ...(o.metricLag !== undefined ? { metricLagMs: parseDuration(o.metricLag, '--metric-lag') } : {}),
    ...(o.drain !== undefined ? { drainMs: parseDuration(o.drain, '--drain') } : {}),
    baselines: baselines as BaselineName[],
    variants,
  };
}

/**
 * Runs `drover simulate` and returns its exit code: 0, or 1 when an input is refused (the
 * message names the flag or the file's field).
 */
export async function simulateCommand(options: SimulateCommandOptions, io: CommandIo = processIo): Promise<number> {
  try {
    const threads = number(options.threads, '--threads', defaultThreads(), (n) => Number.isInteger(n) && n >= 1, 'an integer >= 1');
    const report = await runComparisonParallel(commandOptions(options), threads);
    if (options.svg) {
      writeFileSync(options.svg, renderSvg(report));
      io.stderr(`wrote ${options.svg}\n`);
    }
    io.stdout(options.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatTable(report)}\n`);
    return 0;
  } catch (e) {
    if (e instanceof SimInputError || e instanceof SpecError) {
      io.stderr(`drover simulate: ${e instanceof SpecError ? `${options.app}:\n${e.message}` : e.message}\n`);
      return 1;
    }
    throw e;
  }
}
