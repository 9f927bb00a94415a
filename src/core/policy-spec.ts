/**
 * The YAML side of scaling: a role's `scale:` (its policies) and `metrics:` (where its own
 * metrics come from), as zod schemas for the role schema of spec.ts, and their compilers to
 * {@link Policy} and {@link MetricSource}.
 *
 * @example
 * ```yaml
 * roles:
 *   api:
 *     min: 2
 *     max: 6
 *     scale:
 *       - threshold: { metric: cpu, upper: 0.75, lower: 0.30, for: 30s, cooldown: 2m }
 *       - target: { metric: rps, target: 200, scaleDown: { stabilization: 2m } }
 *     metrics:
 *       - name: rps
 *         http: /metrics
 *         select: 'http_requests_per_second{route!="/health"}'
 *   worker:
 *     min: 0
 *     max: 8
 *     imports: [queue.url]
 *     scale:
 *       - queue: { metric: backlog, perInstance: 10 }
 *     metrics:
 *       - name: backlog
 *         url: "${queue.url}/stats"
 *         format: json
 *         select: stats.backlog
 * ```
 */
import { z } from 'zod';
import { BUILTIN_METRICS, isBalancerMetric, isBuiltinMetric, VITALS_METRICS, parseJsonPath, parsePrometheusSelector } from './metrics.js';
import { duration, err, intAtLeast } from './schema-words.js';
import {
  adaptivePolicy,
  POLICY_DEFAULTS,
  queuePolicy,
  targetPolicy,
  thresholdPolicy,
  type Policy,
  type RateLimit,
  type ThresholdPolicy,
} from './policy.js';

// ---------------------------------------------------------------------------------------------
// Helpers (the duration, integer and error wording is shared with spec.ts: schema-words.ts)


/** The text a default duration is written as: `5m`, `15s`, `500ms`. */
function durationText(ms: number): string {
  if (ms >= 60_000 && ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}


const number = (msg = 'expected a number') => z.number(err(msg));
const positiveNumber = () => number('expected a number greater than 0').gt(0, err('expected a number greater than 0'));
const q = (s: string) => JSON.stringify(s);

const METRIC_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const METRIC_NAME_MSG = 'expected a metric name: letters, digits and "_", not starting with a digit';
const BUILTIN_LIST = Object.keys(BUILTIN_METRICS).join(', ');
const VITALS_LIST = Object.keys(VITALS_METRICS).join(', ');

const metricRef = z
  .string(err(METRIC_NAME_MSG))
  .regex(METRIC_NAME, err(METRIC_NAME_MSG))
  .meta({ description: `A built-in metric (${BUILTIN_LIST}) or one declared under the role's metrics.` });

// ---------------------------------------------------------------------------------------------
// scale:

const T = POLICY_DEFAULTS.threshold;
const G = POLICY_DEFAULTS.target;
const Q = POLICY_DEFAULTS.queue;
const A = POLICY_DEFAULTS.adaptive;

const thresholdSchema = z
  .strictObject(
    {
      metric: metricRef,
      upper: number().optional().meta({ description: 'Add `step` instances while the value stays above this for `for`.' }),
      lower: number().optional().meta({ description: 'Remove `step` instances while the value stays below this for `for`.' }),
      for: duration({ positive: false })
        .prefault(durationText(T.forMs))
        .meta({ description: 'How long the value must stay past a bound.' }),
      step: intAtLeast(1).default(T.step).meta({ description: 'Instances added or removed per action.' }),
      cooldown: duration({ positive: false })
        .prefault(durationText(T.cooldownMs))
        .meta({ description: "Time after the role's last scaling action before this policy acts again." }),
      stat: z
        .enum(['mean', 'max', 'p95'], err('expected mean, max or p95'))
        .default(T.stat)
        .meta({ description: 'Across instances: mean, the hottest (max), or the 95th percentile.' }),
    },
    err('expected a mapping such as { metric: cpu, upper: 0.75, lower: 0.3, for: 30s }'),
  )
  .superRefine((t, ctx) => {
    if (t.upper === undefined && t.lower === undefined) {
      ctx.addIssue({ code: 'custom', input: t, message: 'expected upper, lower or both' });
    } else if (t.upper !== undefined && t.lower !== undefined && t.lower >= t.upper) {
      ctx.addIssue({ code: 'custom', input: t, path: ['lower'], message: `must be below upper (${t.upper})` });
    }
  })
  .meta({
    description: 'Step scaling: add `step` instances when the metric stays above `upper` for `for`, remove when below `lower`.',
    anyOf: [{ required: ['upper'] }, { required: ['lower'] }],
  });

function rateSchema(dir: 'up' | 'down') {
  const defaults = dir === 'up' ? G.scaleUp : G.scaleDown;
  const stabilization = dir === 'up' ? G.scaleUpStabilizationMs : G.scaleDownStabilizationMs;
  const verb = dir === 'up' ? 'added' : 'removed';
  const limits = dir === 'up' ? '4 instances or 100%' : '100%';
  return z
    .strictObject(
      {
        stabilization: duration({ positive: false })
          .prefault(durationText(stabilization))
          .meta({
            description:
              dir === 'up'
                ? 'Scale up only to the lowest recommendation of this window.'
                : 'Scale down only to the highest recommendation of this window (damps flapping).',
          }),
        instances: intAtLeast(1).optional().meta({ description: `At most this many instances ${verb} per period.` }),
        percent: positiveNumber()
          .optional()
          .meta({ description: `At most this percentage of the count at the period's start ${verb} per period.` }),
        period: duration({ positive: true })
          .prefault(durationText(defaults.periodMs))
          .meta({ description: 'The period the limits apply to.' }),
        select: z
          .enum(['max', 'min', 'disabled'], err('expected max, min or disabled'))
          .default('max')
          .meta({ description: 'With both limits: max allows the larger change, min the smaller; disabled forbids this direction.' }),
      },
      err('expected a mapping such as { stabilization: 5m, percent: 100, period: 15s }'),
    )
    .prefault({})
    .meta({
      description: `How fast target tracking scales ${dir}. Without instances or percent: ${limits} per period.`,
    });
}

const targetSchema = z
  .strictObject(
    {
      metric: metricRef,
      target: positiveNumber().meta({ description: 'The per-instance mean to keep the metric at.' }),
      tolerance: number('expected a number between 0 and 1')
        .min(0, err('expected a number between 0 and 1'))
        .max(1, err('expected a number between 0 and 1'))
        .default(G.tolerance)
        .meta({ description: 'No change while the mean is within this fraction of the target.' }),
      window: duration({ positive: true })
        .prefault(durationText(G.windowMs))
        .meta({ description: 'The samples averaged: those of this last stretch of time.' }),
      scaleUp: rateSchema('up'),
      scaleDown: rateSchema('down'),
    },
    err('expected a mapping such as { metric: cpu, target: 0.6 }'),
  )
  .meta({ description: 'Target tracking, as the Kubernetes HPA does it: desired = ceil(ready × mean / target).' });

const queueSchema = z
  .strictObject(
    {
      metric: metricRef,
      perInstance: positiveNumber().meta({ description: 'Backlog one instance is expected to handle.' }),
      activation: number('expected a number >= 0')
        .min(0, err('expected a number >= 0'))
        .default(Q.activation)
        .meta({ description: 'Backlog at which the role wakes from zero; below it, the role may go to zero (with min 0).' }),
      scaleDownStabilization: duration({ positive: false })
        .prefault(durationText(Q.scaleDownStabilizationMs))
        .meta({ description: 'Scale down only to the highest recommendation of this window.' }),
    },
    err('expected a mapping such as { metric: backlog, perInstance: 10 }'),
  )
  .meta({ description: 'Queue length: desired = ceil(backlog / perInstance); 0 below activation.' });

const share = (what: string) =>
  number(`expected ${what} between 0 and 1`).min(0, err(`expected ${what} between 0 and 1`)).max(1, err(`expected ${what} between 0 and 1`));

const adaptiveSchema = z
  .strictObject(
    {
      metric: metricRef.meta({ description: 'The role-wide arrival rate, requests/s (the load balancer\'s request rate).' }),
      perInstance: positiveNumber()
        .optional()
        .meta({ description: "Prior of one instance's capacity (requests/s at full use); learned from what the role serves, this only starts it." }),
      cpu: metricRef.default(A.cpu).meta({ description: 'Per-instance CPU, the capacity is learned from (served rate over CPU).' }),
      cores: positiveNumber().default(A.cores).meta({ description: 'The cpu reading of one instance at full use.' }),
      served: metricRef.optional().meta({ description: 'Per-instance served rate; without it, the arrival rate over ready instances while no queue grows.' }),
      backlog: metricRef.optional().meta({ description: 'Role-wide queue length (requests waiting); sized to drain within drainWithin.' }),
      reaction: duration({ positive: true })
        .prefault(durationText(A.reactionMs))
        .meta({ description: 'From ordering an instance to its serving (boot + start): how far ahead headroom must look.' }),
      drainWithin: duration({ positive: true })
        .prefault(durationText(A.drainWithinMs))
        .meta({ description: 'A backlog is sized to drain within this (the SLO interval).' }),
      quantile: share('a quantile')
        .default(A.quantile)
        .meta({ description: 'Share of recent growths (within one reaction) the headroom covers.' }),
      window: duration({ positive: true })
        .prefault(durationText(A.windowMs))
        .meta({ description: 'The recent history volatility is measured on.' }),
      minHeadroom: number().min(0, err('expected a number >= 0')).default(A.minHeadroom).meta({ description: 'Smallest headroom (0.05 = 5%).' }),
      maxHeadroom: number().min(0, err('expected a number >= 0')).default(A.maxHeadroom).meta({ description: 'Largest headroom.' }),
      holdPerHeadroom: number().min(0, err('expected a number >= 0')).default(A.holdPerHeadroom).meta({ description: 'Scale-down hold: reaction times added per 100% of headroom.' }),
      minHold: duration({ positive: false }).prefault(durationText(A.minHoldMs)).meta({ description: 'Shortest scale-down hold.' }),
      maxHold: duration({ positive: false }).prefault(durationText(A.maxHoldMs)).meta({ description: 'Longest scale-down hold.' }),
      learnHalfLife: duration({ positive: true })
        .prefault(durationText(A.learnHalfLifeMs))
        .meta({ description: 'Learned capacity: an observation loses half its weight per this much newer observation at full use.' }),
      forecast: z.boolean(err('expected true or false')).default(A.forecast).meta({ description: 'Pre-scale on a seasonal + trend forecast while it beats the naive one.' }),
      weekly: z.boolean(err('expected true or false')).default(A.weekly).meta({ description: 'The forecast learns a day-of-week offset besides the daily profile.' }),
    },
    err('expected a mapping such as { metric: demand, backlog: backlog }'),
  )
  .superRefine((a, ctx) => {
    if (a.minHeadroom > a.maxHeadroom) ctx.addIssue({ code: 'custom', input: a, path: ['minHeadroom'], message: `must not exceed maxHeadroom (${a.maxHeadroom})` });
    if (a.minHold > a.maxHold) ctx.addIssue({ code: 'custom', input: a, path: ['minHold'], message: `must not exceed maxHold (${durationText(a.maxHold)})` });
  })
  .meta({ description: 'Request-driven scaling with learned capacity, volatility headroom, backlog draining and a gated forecast.' });

const KINDS = ['threshold', 'target', 'queue', 'adaptive'] as const;

const policyEntry = z
  .strictObject(
    { threshold: thresholdSchema.optional(), target: targetSchema.optional(), queue: queueSchema.optional(), adaptive: adaptiveSchema.optional() },
    err('expected a mapping with one of threshold, target, queue or adaptive'),
  )
  .superRefine((p, ctx) => {
    const found = KINDS.filter((k) => p[k] !== undefined);
    if (found.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        input: p,
        message: `expected exactly one of threshold, target, queue or adaptive (found ${found.length === 0 ? 'none' : found.join(' and ')})`,
      });
    }
  })
  .meta({
    description: 'One scaling policy.',
    oneOf: [{ required: ['threshold'] }, { required: ['target'] }, { required: ['queue'] }, { required: ['adaptive'] }],
  });

/** A role's `scale:`: a list of policies; the largest desired count wins. */
export const scaleSchema = z
  .array(policyEntry, err('expected a list of policies, e.g. [{ target: { metric: cpu, target: 0.6 } }]'))
  .meta({ description: 'Scaling policies; with several, the largest desired count wins. min and max bound the result.' });

export type ScaleInput = z.output<typeof scaleSchema>;

/** Parsed `scale:` → policies, in the order written (so `scale[i]` is `policies[i]`). */
export function compileScale(parsed: ScaleInput): Policy[] {
  const out: Policy[] = [];
  for (const e of parsed) {
    if (e.threshold) {
      const t = e.threshold;
      const bounds: Pick<ThresholdPolicy, 'upper' | 'lower'> = {
        ...(t.upper !== undefined ? { upper: t.upper } : {}),
        ...(t.lower !== undefined ? { lower: t.lower } : {}),
      };
      out.push(thresholdPolicy({ metric: t.metric, ...bounds, forMs: t.for, step: t.step, cooldownMs: t.cooldown, stat: t.stat }));
    } else if (e.target) {
      const t = e.target;
      out.push(
        targetPolicy({
          metric: t.metric,
          target: t.target,
          tolerance: t.tolerance,
          windowMs: t.window,
          scaleUpStabilizationMs: t.scaleUp.stabilization,
          scaleDownStabilizationMs: t.scaleDown.stabilization,
          scaleUp: rateLimit(t.scaleUp, G.scaleUp),
          scaleDown: rateLimit(t.scaleDown, G.scaleDown),
        }),
      );
    } else if (e.queue) {
      const t = e.queue;
      out.push(
        queuePolicy({
          metric: t.metric,
          perInstance: t.perInstance,
          activation: t.activation,
          scaleDownStabilizationMs: t.scaleDownStabilization,
        }),
      );
    } else if (e.adaptive) {
      const a = e.adaptive;
      out.push(
        adaptivePolicy({
          metric: a.metric,
          ...(a.perInstance !== undefined ? { perInstance: a.perInstance } : {}),
          cpu: a.cpu,
          cores: a.cores,
          ...(a.served !== undefined ? { served: a.served } : {}),
          ...(a.backlog !== undefined ? { backlog: a.backlog } : {}),
          reactionMs: a.reaction,
          drainWithinMs: a.drainWithin,
          quantile: a.quantile,
          windowMs: a.window,
          minHeadroom: a.minHeadroom,
          maxHeadroom: a.maxHeadroom,
          holdPerHeadroom: a.holdPerHeadroom,
          minHoldMs: a.minHold,
          maxHoldMs: a.maxHold,
          learnHalfLifeMs: a.learnHalfLife,
          forecast: a.forecast,
          weekly: a.weekly,
        }),
      );
    }
  }
  return out;
}

/** Limits written replace the default limits whole, as in an HPA behavior. */
function rateLimit(
  r: { instances?: number | undefined; percent?: number | undefined; period: number; select: RateLimit['select'] },
  defaults: { readonly instances?: number; readonly percent?: number },
): RateLimit {
  const given = r.instances !== undefined || r.percent !== undefined;
  const src = given ? r : defaults;
  return {
    ...(src.instances !== undefined ? { instances: src.instances } : {}),
    ...(src.percent !== undefined ? { percent: src.percent } : {}),
    periodMs: r.period,
    select: r.select,
  };
}

// ---------------------------------------------------------------------------------------------
// metrics:

/** Where one of a role's metrics is read from. */
export type MetricSource = {
  readonly name: string;
  readonly format: 'prometheus' | 'json';
  /** A Prometheus selector (`name` or `name{label="v"}`, summed) or a JSON path (`stats.backlog`). */
  readonly select: string;
  /** @default 5000 */
  readonly intervalMs: number;
  /** @default 2000 */
  readonly timeoutMs: number;
} & (
  | {
      /** Scraped by each agent from its own role process, GET 127.0.0.1:${port}${http}. */
      readonly scope: 'instance';
      readonly http: string;
    }
  | {
      /** Scraped once per role by the controller; `url` is templated (`${queue.url}/stats`). */
      readonly scope: 'role';
      readonly url: string;
    }
);

const SELECT_MSG = {
  prometheus: 'expected a Prometheus selector such as http_requests_total or queue_depth{queue="jobs"}',
  json: 'expected a JSON path such as stats.backlog or queues[0].depth',
} as const;

const metricSourceSchema = z
  .strictObject(
    {
      name: z
        .string(err(METRIC_NAME_MSG))
        .regex(METRIC_NAME, { ...err(METRIC_NAME_MSG), abort: true })
        .refine((n) => !isBuiltinMetric(n), {
          error: (iss) => `${q(String(iss.input))} is a built-in metric (${BUILTIN_LIST}); choose another name`,
        })
        .meta({ description: 'The name policies refer to.' }),
      http: z
        .string(err('expected a path starting with "/"'))
        .regex(/^\//, err('expected a path starting with "/"'))
        .optional()
        .meta({ description: "Path each agent scrapes from its role's process, on 127.0.0.1:${port}: a per-instance metric." }),
      url: z
        .string(err('expected a URL such as "${queue.url}/stats"'))
        .refine((u) => u.trim() !== '' && (u.includes('${') || /^https?:\/\/\S+$/.test(u)), {
          error: 'expected an http:// or https:// URL (templated, e.g. "${queue.url}/stats")',
        })
        .optional()
        .meta({ description: 'URL the controller scrapes once per role (templated): a role-wide metric, such as a backlog.' }),
      scope: z
        .enum(['instance', 'role'], err('expected instance or role'))
        .optional()
        .meta({ description: 'instance with http, role with url; follows from which of the two is set.' }),
      format: z
        .enum(['prometheus', 'json'], err('expected prometheus or json'))
        .default('prometheus')
        .meta({ description: 'What the endpoint returns: Prometheus text format or JSON.' }),
      select: z
        .string(err('expected a selector (prometheus) or a path (json)'))
        .meta({ description: 'Prometheus: a series name, optionally with labels (matching series are summed). JSON: a dotted path.' }),
      interval: duration({ positive: true }).prefault('5s').meta({ description: 'Time between scrapes.' }),
      timeout: duration({ positive: true }).prefault('2s').meta({ description: 'Time one scrape may take.' }),
    },
    err('expected a mapping such as { name: rps, http: /metrics, select: http_requests_per_second }'),
  )
  .superRefine((m, ctx) => {
    const issue = (path: string | undefined, message: string) =>
      ctx.addIssue({ code: 'custom', input: m, ...(path ? { path: [path] } : {}), message });
    if ((m.http === undefined) === (m.url === undefined)) {
      issue(
        undefined,
        `expected exactly one of http (scraped by each agent from its role's process) or url (scraped once by the controller)${m.http !== undefined ? ' (found both)' : ''}`,
      );
    } else if (m.scope === 'instance' && m.url !== undefined) {
      issue('scope', "an instance metric is scraped from the role's own port: use http: /path instead of url");
    } else if (m.scope === 'role' && m.http !== undefined) {
      issue('scope', 'a role metric is scraped once by the controller: use url instead of http');
    }
    const ok = m.format === 'json' ? parseJsonPath(m.select) !== undefined : parsePrometheusSelector(m.select) !== undefined;
    if (!ok || m.select.trim() === '') issue('select', SELECT_MSG[m.format]);
    if (m.timeout > m.interval) issue('timeout', `must not exceed interval (${durationText(m.interval)})`);
  })
  .meta({
    description: "One of the role's own metrics: where it is scraped and which value to take.",
    oneOf: [{ required: ['http'] }, { required: ['url'] }],
  });

/** A role's `metrics:`: its own metrics, beyond the built-in ones. */
export const metricsSchema = z
  .array(metricSourceSchema, err('expected a list of metrics, e.g. [{ name: rps, http: /metrics, select: rps }]'))
  .superRefine((list, ctx) => {
    const seen = new Map<string, number>();
    list.forEach((m, k) => {
      const first = seen.get(m.name);
      if (first !== undefined) {
        ctx.addIssue({ code: 'custom', input: m, path: [k, 'name'], message: `duplicate metric ${q(m.name)} (already at metrics[${first}])` });
      } else seen.set(m.name, k);
    });
  })
  .meta({ description: `The role's own metrics, for its scaling policies. Built in, without an entry: ${BUILTIN_LIST}.` });

export type MetricsInput = z.output<typeof metricsSchema>;

/** Parsed `metrics:` → sources, in the order written. */
export function compileMetrics(parsed: MetricsInput): MetricSource[] {
  return parsed.map((m): MetricSource => {
    const common = { name: m.name, format: m.format, select: m.select.trim(), intervalMs: m.interval, timeoutMs: m.timeout };
    return m.url !== undefined ? { ...common, scope: 'role', url: m.url } : { ...common, scope: 'instance', http: m.http ?? '/' };
  });
}

/**
 * Policies naming a metric that is neither built in nor declared. Paths are relative to the
 * role (`scale[0].threshold.metric`); `policies[i]` must come from `scale[i]`, as compileScale keeps it.
 */
export function checkPolicyMetrics(
  policies: readonly Policy[],
  sources: readonly Pick<MetricSource, 'name'>[],
  /** A load balancer role balances this one: the `lb_` metrics exist. */
  balanced = false,
): { path: string; message: string }[] {
  const declared = new Set(sources.map((s) => s.name));
  const issues: { path: string; message: string }[] = [];
  policies.forEach((p, k) => {
    const refs: [string, string][] = [['metric', p.metric]];
    if (p.kind === 'adaptive') {
      refs.push(['cpu', p.cpu]);
      if (p.served !== undefined) refs.push(['served', p.served]);
      if (p.backlog !== undefined) refs.push(['backlog', p.backlog]);
    }
    for (const [field, metric] of refs) {
      if (declared.has(metric)) continue;
      if (isBalancerMetric(metric) && !balanced) {
        issues.push({
          path: `scale[${k}].${p.kind}.${field}`,
          message: `${q(metric)} is measured at a load balancer, and no role balances this one (give a role loadBalancer: { members: <this role>.<export> }), or use another metric`,
        });
        continue;
      }
      if (isBuiltinMetric(metric)) continue;
      issues.push({
        path: `scale[${k}].${p.kind}.${field}`,
        message: `no metric ${q(metric)}: declare it under metrics, or use a built-in one (${balanced ? BUILTIN_LIST : VITALS_LIST})`,
      });
    }
  });
  return issues;
}
