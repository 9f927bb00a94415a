/**
 * Metric samples, the bounded store that holds them, the statistics policies read from them,
 * and the two formats roles expose metrics in (Prometheus text, JSON).
 *
 * Everything here is a function of its arguments: the store is told the time of each sample
 * and never reads a clock, so the simulator can fill it on a virtual one.
 *
 * Two readings of "the role's value" exist, and each policy names the one it uses:
 * - {@link stats} summarises every sample of a window: `mean` is the plain average of all
 *   values. With instances reporting at the same rate, that is the average over the window of
 *   the across-instance mean (target tracking reads this).
 * - {@link instantStats} gives the role's value *at* given times: each instance (each series)
 *   contributes its latest sample at or before that time, if it is no older than a lookback,
 *   and `mean`/`max`/`p95` are taken across those instances. "Above 0.75 for 30s" means this
 *   value stayed above 0.75 at every point of the 30s (threshold rules read this).
 */
import type { Vitals } from './protocol.js';

/** One observation. `instance` is absent for role-wide metrics, such as a queue's backlog. */
export interface Sample {
  /** Milliseconds since the epoch (or of the simulator's virtual clock). */
  readonly t: number;
  readonly value: number;
  readonly instance?: string;
}

export type StatName = 'mean' | 'max' | 'p95';

export interface Stats {
  /** Arithmetic mean of the values. */
  readonly mean: number;
  readonly max: number;
  /** Nearest-rank 95th percentile: the smallest value with at least 95% of values at or below it. */
  readonly p95: number;
  readonly count: number;
}

/** Metrics every agent reports without a `metrics:` entry, from its vitals. */
export const VITALS_METRICS = {
  cpu: "CPU used by the role's processes, in cores (1 = one core busy), per instance",
  host_cpu: "the instance's CPU utilisation, 0..1 of all its cores",
  load1: "the instance's 1-minute load average",
  memory: "resident memory of the role's processes, in bytes, per instance",
} as const;

/**
 * Metrics of a role that a load balancer role balances (`loadBalancer: { members: ROLE.key }`),
 * measured by the controller from the balancers' own counters: no `metrics:` entry, no scrape.
 */
export const BALANCER_METRICS = {
  lb_requests: 'requests/s the load balancer(s) sent to the role, role-wide (balanced roles only)',
  lb_member_requests: 'requests/s the load balancer(s) sent to each instance, per instance (balanced roles only)',
  lb_inflight: "requests in flight at the role's members through the balancer(s), role-wide (balanced roles only)",
} as const;

/** Every metric a policy may name without declaring it. */
export const BUILTIN_METRICS = { ...VITALS_METRICS, ...BALANCER_METRICS } as const;

export type BuiltinMetric = keyof typeof BUILTIN_METRICS;
export type BalancerMetric = keyof typeof BALANCER_METRICS;

export function isBuiltinMetric(name: string): name is BuiltinMetric {
  return Object.hasOwn(BUILTIN_METRICS, name);
}

export function isBalancerMetric(name: string): name is BalancerMetric {
  return Object.hasOwn(BALANCER_METRICS, name);
}

/** What one balancer reported of one member: its running request total and what it carries now. */
export interface BalancerMemberCount {
  readonly id: string;
  readonly totalRequests: number;
  readonly activeConnections: number;
}

/** A balancer's counters as last seen, to take rates from. */
export interface BalancerReading {
  /** When the balancer reported them (ms). */
  readonly t: number;
  readonly totals: ReadonlyMap<string, number>;
}

/**
 * The request rate one balancer sent to each member between two of its reports: the growth of
 * each member's running total over the time between them. A member new since the last reading
 * started from 0; a total that went down (the balancer restarted, or dropped and re-added the
 * member) counts from 0 again rather than as a negative rate. Undefined when no time passed.
 */
export function balancerRates(prev: BalancerReading | undefined, t: number, members: readonly BalancerMemberCount[]): Map<string, number> | undefined {
  if (!prev || !(t > prev.t)) return undefined;
  const seconds = (t - prev.t) / 1000;
  const out = new Map<string, number>();
  for (const m of members) {
    const before = prev.totals.get(m.id) ?? 0;
    const grew = m.totalRequests >= before ? m.totalRequests - before : m.totalRequests;
    out.set(m.id, grew / seconds);
  }
  return out;
}

/**
 * The samples one vitals report carries for `instance`: the built-in metrics, then the role's
 * own instance-scope metrics the agent scraped (`vitals.metrics`).
 */
export function samplesFromVitals(instance: string, vitals: Vitals): { metric: string; sample: Sample }[] {
  const t = vitals.at;
  const out: { metric: string; sample: Sample }[] = [
    { metric: 'host_cpu', sample: { t, value: vitals.cpu, instance } },
    { metric: 'load1', sample: { t, value: vitals.loadavg[0], instance } },
  ];
  // Without a role process there is no role usage to report; 0 would read as an idle role.
  if (vitals.role) {
    out.push({ metric: 'cpu', sample: { t, value: vitals.role.cpu, instance } });
    out.push({ metric: 'memory', sample: { t, value: vitals.role.rssBytes, instance } });
  }
  for (const [metric, value] of Object.entries(vitals.metrics ?? {})) {
    if (!isBuiltinMetric(metric)) out.push({ metric, sample: { t, value, instance } });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Store

/** @default 900000 (15 minutes) */
export const DEFAULT_HORIZON_MS = 15 * 60_000;

export interface MetricStoreOptions {
  /**
   * A series keeps samples no older than this before its newest one; it must cover the longest
   * window a policy reads (see `historyNeededMs` in policy.ts). @default 900000
   */
  readonly horizonMs?: number;
}

export interface WindowOptions {
  /** Instances whose samples are left out (those still warming up, say). */
  readonly excludeInstances?: ReadonlySet<string>;
}

/** One (role, metric) series, columnar: at 10,000 instances, objects per sample would dominate memory. */
interface Series {
  t: number[];
  v: number[];
  i: (string | undefined)[];
  /** Index of the oldest kept sample; dropping from the front is a cursor move, compacted now and then. */
  head: number;
}

/**
 * Samples by role and metric, in time order, each series trimmed to a horizon behind its newest
 * sample. Appends in time order are O(1); a late sample is inserted in place.
 */
export class MetricStore {
  readonly horizonMs: number;
  readonly #roles = new Map<string, Map<string, Series>>();

  constructor(options: MetricStoreOptions = {}) {
    this.horizonMs = options.horizonMs ?? DEFAULT_HORIZON_MS;
  }

  /** Non-finite values and times are dropped: one NaN would make every mean over it NaN. */
  add(role: string, metric: string, sample: Sample): void {
    if (!Number.isFinite(sample.value) || !Number.isFinite(sample.t)) return;
    let metrics = this.#roles.get(role);
    if (!metrics) this.#roles.set(role, (metrics = new Map<string, Series>()));
    let s = metrics.get(metric);
    if (!s) metrics.set(metric, (s = { t: [], v: [], i: [], head: 0 }));
    const n = s.t.length;
    if (n === s.head || sample.t >= (s.t[n - 1] ?? -Infinity)) {
      s.t.push(sample.t);
      s.v.push(sample.value);
      s.i.push(sample.instance);
    } else {
      const at = upperBound(s.t, sample.t, s.head, n);
      s.t.splice(at, 0, sample.t);
      s.v.splice(at, 0, sample.value);
      s.i.splice(at, 0, sample.instance);
    }
    const newest = s.t[s.t.length - 1] ?? sample.t;
    dropBefore(s, newest - this.horizonMs);
  }

  /** Samples with `fromT <= t <= toT`, oldest first. */
  window(role: string, metric: string, fromT: number, toT: number, opts: WindowOptions = {}): Sample[] {
    const s = this.#roles.get(role)?.get(metric);
    if (!s || toT < fromT) return [];
    const lo = lowerBound(s.t, fromT, s.head, s.t.length);
    const hi = upperBound(s.t, toT, lo, s.t.length);
    const ex = opts.excludeInstances;
    const out: Sample[] = [];
    for (let k = lo; k < hi; k++) {
      const instance = s.i[k];
      if (instance !== undefined && ex?.has(instance)) continue;
      const t = s.t[k] ?? 0;
      const value = s.v[k] ?? 0;
      out.push(instance === undefined ? { t, value } : { t, value, instance });
    }
    return out;
  }

  /** Drops every sample older than `beforeT`, and series left empty. */
  prune(beforeT: number): void {
    for (const [role, metrics] of this.#roles) {
      for (const [metric, s] of metrics) {
        dropBefore(s, beforeT);
        if (s.head >= s.t.length) metrics.delete(metric);
      }
      if (metrics.size === 0) this.#roles.delete(role);
    }
  }

  /** Forgets a role's samples (the role left the app). */
  forgetRole(role: string): void {
    this.#roles.delete(role);
  }

  /** Metric names with samples for `role`. */
  metricsOf(role: string): string[] {
    return [...(this.#roles.get(role)?.keys() ?? [])];
  }

  /** Samples held, over every series. */
  get size(): number {
    let n = 0;
    for (const metrics of this.#roles.values()) for (const s of metrics.values()) n += s.t.length - s.head;
    return n;
  }
}

function dropBefore(s: Series, cutoff: number): void {
  const n = s.t.length;
  s.head = lowerBound(s.t, cutoff, s.head, n);
  // Compact once the dead prefix is both large and most of the arrays: amortised O(1) per sample.
  if (s.head > 1024 && s.head * 2 > n) {
    s.t.splice(0, s.head);
    s.v.splice(0, s.head);
    s.i.splice(0, s.head);
    s.head = 0;
  }
}

/** First index in [lo, hi) with `a[k] >= x`. */
function lowerBound(a: readonly number[], x: number, lo: number, hi: number): number {
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((a[mid] ?? 0) < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** First index in [lo, hi) with `a[k] > x`. */
function upperBound(a: readonly number[], x: number, lo: number, hi: number): number {
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((a[mid] ?? 0) <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// ---------------------------------------------------------------------------------------------
// Statistics

/** Mean, max and p95 of every sample's value; undefined for no samples. */
export function stats(samples: readonly Sample[]): Stats | undefined {
  if (samples.length === 0) return undefined;
  const values = new Float64Array(samples.length);
  for (let k = 0; k < samples.length; k++) values[k] = samples[k]?.value ?? 0;
  return statsOf(values);
}

/** Statistics of plain numbers; undefined for none. */
export function statsOfValues(values: readonly number[]): Stats | undefined {
  return values.length === 0 ? undefined : statsOf(Float64Array.from(values));
}

/** One statistic of plain numbers (cheaper than {@link statsOfValues} for max or mean alone). */
export function statOf(values: readonly number[], stat: StatName): number | undefined {
  if (values.length === 0) return undefined;
  if (stat === 'mean') return meanOf(values);
  if (stat === 'max') return maxOf(values);
  return p95Of(Float64Array.from(values));
}

/** Takes ownership of `values` (reorders it). */
function statsOf(values: Float64Array): Stats {
  return { mean: meanOf(values), max: maxOf(values), p95: p95Of(values), count: values.length };
}

function meanOf(values: ArrayLike<number>): number {
  let sum = 0;
  for (let k = 0; k < values.length; k++) sum += values[k] ?? 0;
  return sum / values.length;
}

function maxOf(values: ArrayLike<number>): number {
  let max = -Infinity;
  for (let k = 0; k < values.length; k++) max = Math.max(max, values[k] ?? -Infinity);
  return max;
}

function p95Of(values: Float64Array): number {
  return select(values, Math.ceil(0.95 * values.length) - 1);
}

/**
 * The k-th smallest value (0-based), by quickselect with a median-of-three pivot: O(n) expected,
 * where sorting would be O(n log n) at every evaluation point of every policy.
 */
function select(a: Float64Array, k: number): number {
  let lo = 0;
  let hi = a.length - 1;
  const at = (x: number) => a[x] ?? 0;
  const swap = (x: number, y: number) => {
    const t = at(x);
    a[x] = at(y);
    a[y] = t;
  };
  while (hi > lo) {
    const mid = (lo + hi) >>> 1;
    if (at(mid) < at(lo)) swap(mid, lo);
    if (at(hi) < at(lo)) swap(hi, lo);
    if (at(hi) < at(mid)) swap(hi, mid);
    const pivot = at(mid);
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (at(i) < pivot) i++;
      while (at(j) > pivot) j--;
      if (i <= j) {
        swap(i, j);
        i++;
        j--;
      }
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return at(k);
  }
  return at(k);
}

/**
 * The role's value at each of `times`: every series (an instance, or the role itself for
 * samples without one) contributes its latest sample at or before that time, unless that
 * sample is more than `lookbackMs` old; the result is the stats across those contributions,
 * undefined where no series contributes.
 *
 * O(samples + times × series).
 */
export function instantStats(
  samples: readonly Sample[],
  times: readonly number[],
  lookbackMs: number,
): (Stats | undefined)[] {
  const sorted = isSortedByT(samples) ? samples : [...samples].sort((a, b) => a.t - b.t);
  const order = times.map((t, k) => ({ t, k })).sort((a, b) => a.t - b.t || a.k - b.k);
  const out: (Stats | undefined)[] = new Array<Stats | undefined>(times.length).fill(undefined);
  const latest = new Map<string, Sample>();
  let next = 0;
  for (const { t, k } of order) {
    for (; next < sorted.length; next++) {
      const s = sorted[next];
      if (!s || s.t > t) break;
      latest.set(s.instance ?? '', s);
    }
    const values: number[] = [];
    for (const s of latest.values()) if (t - s.t <= lookbackMs) values.push(s.value);
    out[k] = statsOfValues(values);
  }
  return out;
}

function isSortedByT(samples: readonly Sample[]): boolean {
  for (let k = 1; k < samples.length; k++) if ((samples[k]?.t ?? 0) < (samples[k - 1]?.t ?? 0)) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Prometheus text format

/** One series of a Prometheus text exposition. */
export interface PromSample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  /** NaN, +Inf and -Inf included, as exposed. */
  readonly value: number;
  /** As written (milliseconds in the Prometheus text format), when present. */
  readonly timestamp?: number;
}

const METRIC_NAME = /[a-zA-Z_:][a-zA-Z0-9_:]*/y;
const LABEL_NAME = /[a-zA-Z_][a-zA-Z0-9_]*/y;
const FLOAT = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/;

/**
 * Parses the Prometheus text format (and the OpenMetrics lines it shares): comments, HELP and
 * TYPE lines are skipped, label values unescaped, NaN and ±Inf read, timestamps kept, exemplars
 * ignored, quoted (UTF-8) metric names accepted. A malformed line is skipped; this never throws,
 * since a role's endpoint may expose anything.
 */
export function parsePrometheusText(text: string): PromSample[] {
  const out: PromSample[] = [];
  if (typeof text !== 'string') return out;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const s = parseSampleLine(line);
    if (s) out.push(s);
  }
  return out;
}

function parseSampleLine(line: string): PromSample | undefined {
  let pos = 0;
  let name: string | undefined;
  METRIC_NAME.lastIndex = 0;
  const m = METRIC_NAME.exec(line);
  if (m) {
    name = m[0];
    pos = name.length;
  }
  const labels = new Map<string, string>();
  const brace = skipSpace(line, pos);
  if (line[brace] === '{') {
    const end = parseLabelSet(line, brace + 1, (key, value) => {
      if (value === undefined) {
        // A quoted string with no `=`: the metric name, in the UTF-8 syntax.
        if (name !== undefined) return false;
        name = key;
        return true;
      }
      if (labels.has(key)) return false;
      labels.set(key, value);
      return true;
    });
    if (end === undefined) return undefined;
    pos = end;
  }
  if (name === undefined || name === '') return undefined;
  if (pos < line.length && line[pos] !== ' ' && line[pos] !== '\t') return undefined;
  let tokens = line.slice(pos).trim().split(/[ \t]+/);
  const exemplar = tokens.indexOf('#');
  if (exemplar >= 0) tokens = tokens.slice(0, exemplar);
  if (tokens.length < 1 || tokens.length > 2) return undefined;
  const value = parseFloatToken(tokens[0] ?? '');
  if (value === undefined) return undefined;
  const sample = { name, labels: Object.fromEntries(labels), value };
  if (tokens.length === 1) return sample;
  const ts = tokens[1] ?? '';
  if (!FLOAT.test(ts)) return undefined;
  return { ...sample, timestamp: Number(ts) };
}

/**
 * Reads `key="value", ...}` from just after a `{`; returns the index after the `}`. A quoted key
 * with no `=` reaches `onPair` with value undefined. `onPair` returning false refuses the set.
 */
function parseLabelSet(
  line: string,
  from: number,
  onPair: (key: string, value: string | undefined) => boolean,
): number | undefined {
  let pos = from;
  for (;;) {
    pos = skipSpace(line, pos);
    if (line[pos] === '}') return pos + 1;
    let key: string;
    let quoted = false;
    if (line[pos] === '"') {
      const q = readQuoted(line, pos);
      if (!q) return undefined;
      key = q.value;
      pos = q.end;
      quoted = true;
    } else {
      LABEL_NAME.lastIndex = pos;
      const lm = LABEL_NAME.exec(line);
      if (!lm) return undefined;
      key = lm[0];
      pos += key.length;
    }
    pos = skipSpace(line, pos);
    if (quoted && (line[pos] === ',' || line[pos] === '}')) {
      if (!onPair(key, undefined)) return undefined;
    } else {
      if (line[pos] !== '=') return undefined;
      pos = skipSpace(line, pos + 1);
      const q = readQuoted(line, pos);
      if (!q || !onPair(key, q.value)) return undefined;
      pos = skipSpace(line, q.end);
    }
    if (line[pos] === ',') pos++;
    else if (line[pos] !== '}') return undefined;
  }
}

/** A double-quoted string at `pos` with the format's three escapes (\\, \", \n); others are refused. */
function readQuoted(line: string, pos: number): { value: string; end: number } | undefined {
  if (line[pos] !== '"') return undefined;
  let value = '';
  for (let k = pos + 1; k < line.length; k++) {
    const c = line[k];
    if (c === '"') return { value, end: k + 1 };
    if (c === '\\') {
      const e = line[++k];
      if (e === '\\' || e === '"') value += e;
      else if (e === 'n') value += '\n';
      else return undefined;
    } else value += c;
  }
  return undefined;
}

function skipSpace(line: string, pos: number): number {
  while (line[pos] === ' ' || line[pos] === '\t') pos++;
  return pos;
}

function parseFloatToken(token: string): number | undefined {
  if (FLOAT.test(token)) return Number(token);
  switch (token.toLowerCase()) {
    case 'nan':
      return NaN;
    case 'inf':
    case '+inf':
    case 'infinity':
    case '+infinity':
      return Infinity;
    case '-inf':
    case '-infinity':
      return -Infinity;
    default:
      return undefined;
  }
}

/** A parsed selector: a metric name and label matchers. */
export interface PromSelector {
  readonly name: string;
  readonly matchers: readonly { readonly label: string; readonly op: '=' | '!='; readonly value: string }[];
}

/**
 * `name`, or `name{label="v", other!="w"}`; undefined if malformed. A label absent from a series
 * matches `=""`, as in PromQL.
 */
export function parsePrometheusSelector(text: string): PromSelector | undefined {
  const line = text.trim();
  METRIC_NAME.lastIndex = 0;
  const m = METRIC_NAME.exec(line);
  if (!m) return undefined;
  const name = m[0];
  let pos = skipSpace(line, name.length);
  const matchers: { label: string; op: '=' | '!='; value: string }[] = [];
  if (line[pos] === '{') {
    pos++;
    for (;;) {
      pos = skipSpace(line, pos);
      if (line[pos] === '}') {
        pos++;
        break;
      }
      LABEL_NAME.lastIndex = pos;
      const lm = LABEL_NAME.exec(line);
      if (!lm) return undefined;
      const label = lm[0];
      pos = skipSpace(line, pos + label.length);
      let op: '=' | '!=';
      if (line.startsWith('!=', pos)) op = '!=';
      else if (line[pos] === '=' && line[pos + 1] !== '~') op = '=';
      else return undefined;
      pos = skipSpace(line, pos + op.length);
      const q = readQuoted(line, pos);
      if (!q) return undefined;
      matchers.push({ label, op, value: q.value });
      pos = skipSpace(line, q.end);
      if (line[pos] === ',') pos++;
      else if (line[pos] !== '}') return undefined;
    }
  }
  return skipSpace(line, pos) === line.length ? { name, matchers } : undefined;
}

/**
 * The sum of the series matching `selector` (NaN series left out); undefined when none match
 * or the selector is malformed, so a missing metric reads as "no data", not as 0.
 */
export function pickPrometheus(parsed: readonly PromSample[], selector: string): number | undefined {
  const sel = parsePrometheusSelector(selector);
  if (!sel) return undefined;
  let sum = 0;
  let found = false;
  for (const s of parsed) {
    if (s.name !== sel.name || Number.isNaN(s.value)) continue;
    const ok = sel.matchers.every((mt) => ((Object.hasOwn(s.labels, mt.label) ? s.labels[mt.label] : '') === mt.value) === (mt.op === '='));
    if (!ok) continue;
    sum += s.value;
    found = true;
  }
  return found ? sum : undefined;
}

// ---------------------------------------------------------------------------------------------
// JSON

export type JsonPath = readonly (string | number)[];

const PATH_KEY = /[^.[\]"'\s]+/y;

/**
 * `stats.backlog`, `queues[0].depth`, `["odd.key"].n`, with an optional leading `$`
 * (`$` alone is the document itself); undefined if malformed.
 */
export function parseJsonPath(path: string): JsonPath | undefined {
  const p = path.trim();
  let pos = p.startsWith('$') ? 1 : 0;
  const out: (string | number)[] = [];
  let first = pos === 0;
  while (pos < p.length) {
    if (p[pos] === '[') {
      const idx = /\[(\d+)\]/y;
      idx.lastIndex = pos;
      const im = idx.exec(p);
      if (im) {
        out.push(Number(im[1]));
        pos += im[0].length;
      } else {
        const q = readJsonKey(p, pos + 1);
        if (!q || p[q.end] !== ']') return undefined;
        out.push(q.value);
        pos = q.end + 1;
      }
    } else {
      if (p[pos] === '.') pos++;
      else if (!first) return undefined;
      PATH_KEY.lastIndex = pos;
      const km = PATH_KEY.exec(p);
      if (!km) return undefined;
      out.push(km[0]);
      pos += km[0].length;
    }
    first = false;
  }
  return out;
}

/** A quoted key inside brackets, "..." or '...', with JSON-style backslash escapes of the quote and backslash. */
function readJsonKey(p: string, pos: number): { value: string; end: number } | undefined {
  const quote = p[pos];
  if (quote !== '"' && quote !== "'") return undefined;
  let value = '';
  for (let k = pos + 1; k < p.length; k++) {
    const c = p[k];
    if (c === quote) return { value, end: k + 1 };
    if (c === '\\') {
      const e = p[++k];
      if (e === undefined) return undefined;
      value += e;
    } else value += c;
  }
  return undefined;
}

/**
 * The number at `path` in a parsed JSON document: a finite number, or a string holding one
 * (some APIs quote their counters). Own properties only, plus `length` of arrays; anything else
 * is undefined.
 */
export function pickJson(doc: unknown, path: string): number | undefined {
  const segs = parseJsonPath(path);
  if (!segs) return undefined;
  let cur: unknown = doc;
  for (const seg of segs) {
    if (Array.isArray(cur)) {
      if (typeof seg === 'number') cur = cur[seg];
      else if (seg === 'length') cur = cur.length;
      else if (/^\d+$/.test(seg)) cur = cur[Number(seg)];
      else return undefined;
    } else if (typeof cur === 'object' && cur !== null) {
      const key = String(seg);
      if (!Object.hasOwn(cur, key)) return undefined;
      cur = (cur as Record<string, unknown>)[key];
    } else return undefined;
  }
  if (typeof cur === 'number') return Number.isFinite(cur) ? cur : undefined;
  if (typeof cur === 'string' && FLOAT.test(cur.trim())) return Number(cur.trim());
  return undefined;
}
