/**
 * Demand traces: requests per second on a regular grid of intervals, read from CSV or
 * generated (see synthetic.ts).
 *
 * The CSV has a header naming its two columns: the first is a time, the second a count of
 * requests in the interval (`count`, `requests`, `hits`) or a rate (`rate`, `rps`, `per_s`).
 * Times are timestamps (`1998-04-30 21:30:00`, GMT when no zone is written; or ISO 8601) or
 * offsets (`0`, `60`, `120` seconds; or `90s`, `2m`). The interval is the smallest step between
 * rows; missing rows (gaps) hold the previous rate and are counted in {@link Trace.filled}.
 * The WorldCup 1998 file (`period,count`) reads as is.
 */
import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatDuration, parseDuration, SimInputError } from './units.js';

export interface Trace {
  readonly name: string;
  /** Epoch ms of the first interval (0 when the file gives offsets). */
  readonly startMs: number;
  readonly stepMs: number;
  /** Requests per second during each interval. */
  readonly rates: Float64Array;
  /** Intervals absent from the source, filled with the rate before them. */
  readonly filled: number;
  /** Where the trace came from, and its notice when it has one. */
  readonly source: string;
}

export function traceDurationMs(t: Trace): number {
  return t.rates.length * t.stepMs;
}

/** The rate at `ms` after the trace's start (the last interval's after its end). */
export function rateAt(t: Trace, ms: number): number {
  const k = Math.min(t.rates.length - 1, Math.max(0, Math.floor(ms / t.stepMs)));
  return t.rates[k] ?? 0;
}

const RATE_COL = /rate|rps|per_?s(ec(ond)?)?$/i;
const COUNT_COL = /count|requests|hits|reqs|^n$/i;
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$/;

function parseTime(text: string, where: string): { ms: number; absolute: boolean } {
  const s = text.trim();
  if (TIMESTAMP.test(s)) {
    let iso = s.replace(' ', 'T');
    if (!/(Z|[+-]\d{2}:?\d{2})$/.test(iso)) iso += 'Z';
    const ms = Date.parse(iso);
    if (Number.isFinite(ms)) return { ms, absolute: true };
  }
  try {
    return { ms: parseDuration(s, where), absolute: false };
  } catch {
    throw new SimInputError(where, `expected a timestamp (1998-04-30 21:30:00) or an offset (60, 90s), got ${JSON.stringify(text)}`);
  }
}

/** CSV text → {@link Trace}. `name` is used in messages and reports. */
export function parseTrace(text: string, name = 'trace', source = name): Trace {
  const lines = text.split(/\r?\n/);
  let header: string[] | undefined;
  let headerLine = 0;
  const times: number[] = [];
  const values: number[] = [];
  let absolute: boolean | undefined;
  for (let n = 0; n < lines.length; n++) {
    const line = (lines[n] ?? '').trim();
    if (line === '' || line.startsWith('#')) continue;
    const cells = line.split(',').map((c) => c.trim().replace(/^"(.*)"$/, '$1'));
    if (!header) {
      header = cells;
      headerLine = n + 1;
      if (cells.length < 2) throw new SimInputError(`${name}:${n + 1}`, 'expected a header with two columns, such as "period,count" or "time,rate"');
      continue;
    }
    const where = `${name}:${n + 1}`;
    if (cells.length < 2) throw new SimInputError(where, `expected two columns, got ${JSON.stringify(line)}`);
    const t = parseTime(cells[0] ?? '', where);
    if (absolute === undefined) absolute = t.absolute;
    else if (absolute !== t.absolute) throw new SimInputError(where, 'mixes timestamps and offsets');
    const v = Number(cells[1]);
    if (cells[1] === '' || !Number.isFinite(v) || v < 0) throw new SimInputError(where, `expected a number >= 0, got ${JSON.stringify(cells[1])}`);
    if (times.length > 0 && t.ms <= (times[times.length - 1] ?? -Infinity)) {
      throw new SimInputError(where, 'times must increase from row to row');
    }
    times.push(t.ms);
    values.push(v);
  }
  if (!header) throw new SimInputError(name, 'empty trace: expected a header ("period,count" or "time,rate") and rows');
  if (times.length === 0) throw new SimInputError(name, 'no rows after the header');
  const valueCol = header[1] ?? '';
  const isRate = RATE_COL.test(valueCol);
  if (!isRate && !COUNT_COL.test(valueCol)) {
    throw new SimInputError(
      `${name}:${headerLine}`,
      `cannot tell whether column ${JSON.stringify(valueCol)} is a rate or a count: name it "rate" (requests/s) or "count" (requests per interval)`,
    );
  }

  let stepMs = Infinity;
  for (let k = 1; k < times.length; k++) stepMs = Math.min(stepMs, (times[k] ?? 0) - (times[k - 1] ?? 0));
  if (!Number.isFinite(stepMs)) {
    if (isRate) stepMs = 60_000;
    else throw new SimInputError(name, 'one row of counts: the interval cannot be told (add a second row)');
  }
  const start = times[0] ?? 0;
  const slots = Math.round(((times[times.length - 1] ?? start) - start) / stepMs) + 1;
  const rates = new Float64Array(slots);
  const have = new Uint8Array(slots);
  for (let k = 0; k < times.length; k++) {
    const pos = ((times[k] ?? 0) - start) / stepMs;
    const slot = Math.round(pos);
    if (Math.abs(pos - slot) > 1e-6) {
      throw new SimInputError(`${name}`, `row ${k + 1} is not on the ${formatDuration(stepMs)} grid the other rows follow (irregular intervals are not supported)`);
    }
    const v = values[k] ?? 0;
    rates[slot] = isRate ? v : v / (stepMs / 1000);
    have[slot] = 1;
  }
  let filled = 0;
  for (let k = 1; k < slots; k++) {
    if (have[k]) continue;
    rates[k] = rates[k - 1] ?? 0;
    filled++;
  }
  return { name, startMs: absolute ? start : 0, stepMs, rates, filled, source };
}

/**
 * Reads a trace file. A COPYRIGHT or WorldCup.html beside it is named in {@link Trace.source},
 * so reports carry the notice with the numbers.
 */
export function loadTrace(path: string): Trace {
  if (!existsSync(path)) throw new SimInputError('--trace', `no such file: ${path}`);
  const name = basename(path);
  const dir = dirname(resolve(path));
  const notices = ['COPYRIGHT', 'WorldCup.html'].filter((f) => existsSync(join(dir, f)));
  const source = notices.length > 0 ? `${path} (notices: ${notices.map((f) => join(dir, f)).join(', ')})` : path;
  return parseTrace(readFileSync(path, 'utf8'), name, source);
}

/** The repository root: src/sim is two folders down. */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * The WorldCup 1998 requests-per-minute trace, read in place from the shared traces folder
 * (`../shared/traces/worldcup98` beside the repository) so its notices stay with it.
 * `DROVER_WORLDCUP_TRACE` overrides the path.
 */
export function worldCupTracePath(env: NodeJS.ProcessEnv = process.env): string {
  return env.DROVER_WORLDCUP_TRACE ?? join(REPO_ROOT, '..', 'shared', 'traces', 'worldcup98', 'requests_per_minute.csv');
}

export function loadWorldCupTrace(env: NodeJS.ProcessEnv = process.env): Trace {
  const path = worldCupTracePath(env);
  if (!existsSync(path)) {
    throw new SimInputError(
      'worldcup98',
      `trace not found at ${path}. It is read in place (with its COPYRIGHT and WorldCup.html) from ../shared/traces/worldcup98 ` +
        'beside the repository; set DROVER_WORLDCUP_TRACE to its requests_per_minute.csv elsewhere.',
    );
  }
  const shown = relative(REPO_ROOT, path).startsWith('..' + sep) ? relative(REPO_ROOT, path) : path;
  return {
    ...loadTrace(path),
    name: 'worldcup98',
    source: `${shown} (read in place; COPYRIGHT and WorldCup.html beside it)`,
  };
}

/** A trace from rates given in code (tests, generators). */
export function traceOf(name: string, stepMs: number, rates: ArrayLike<number>, source = 'generated'): Trace {
  return { name, startMs: 0, stepMs, rates: Float64Array.from(rates), filled: 0, source };
}
