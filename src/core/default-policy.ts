/**
 * Drover's default scaling for a request-driven role: a role with a range to scale in
 * (`min` < `max`), balanced by a load balancer role, and no `scale:` of its own. It gets the
 * policy bench:policies measures (the simulator's default app, src/sim/default-app.ts, is built
 * from the same knobs): `adaptive` on the balancer's request rate — capacity learned from what
 * each member is seen to serve and the CPU it takes, headroom from recent jumps of demand,
 * requests in flight drained — with a CPU target as the safety net when the rate stops coming.
 *
 * `scale: []` in the file keeps a role at its count (no default); a role no balancer balances
 * gets no default (there is no request rate to read), and `appFileWarnings` says so.
 */
import { compileScale, scaleSchema } from './policy-spec.js';
import type { Policy } from './policy.js';

export interface DefaultPolicyKnobs {
  /** Fewest instances the simulator's default app keeps: two, so one crash or one burst never leaves the role bare. */
  readonly min: number;
  /** Share of recent growths (within one reaction) the headroom covers: the policy's main knob. */
  readonly quantile: number;
  /** From ordering an instance to its serving: boot + tick. */
  readonly reaction: string;
  /** CPU target of the safety net (it acts above target × 1.1). */
  readonly cpuTarget: number;
  readonly spares: number;
  /** Scale-down hold: reactions per 100% of headroom, and its bounds. */
  readonly holdPerHeadroom: number;
  readonly minHold: string;
  readonly maxHold: string;
  readonly minHeadroom: number;
  /** The forecast pre-scales while it beats the naive one. */
  readonly forecast: boolean;
  /** History volatility (and the peak that caps headroom) is measured on. */
  readonly window: string;
  readonly maxHeadroom: number;
}

/** Tuned with the simulator on tuning seeds of the synthetic families (docs/simulator.md). */
export const DEFAULT_KNOBS: DefaultPolicyKnobs = {
  min: 2,
  quantile: 0.9,
  reaction: '75s',
  cpuTarget: 0.9,
  spares: 0,
  holdPerHeadroom: 2,
  minHold: '1m',
  maxHold: '15m',
  minHeadroom: 0.15,
  forecast: true,
  window: '1h',
  maxHeadroom: 0.5,
};

/** The metrics the default reads: the balancer's, which every balanced role has without a `metrics:` entry. */
export const DEFAULT_POLICY_METRICS = { rate: 'lb_requests', served: 'lb_member_requests', backlog: 'lb_inflight' } as const;

/**
 * The `scale:` entries of the default, as an app file would write them (so they go through the
 * same schema and defaults as a written one). `metrics` names the rate, per-instance served rate
 * and backlog metrics; `perInstance` is an optional capacity prior.
 */
export function defaultScaleEntries(
  knobs: DefaultPolicyKnobs = DEFAULT_KNOBS,
  metrics: { readonly rate: string; readonly served: string; readonly backlog: string } = DEFAULT_POLICY_METRICS,
  perInstance?: number,
): unknown[] {
  return [
    {
      adaptive: {
        metric: metrics.rate,
        ...(perInstance !== undefined ? { perInstance } : {}),
        served: metrics.served,
        backlog: metrics.backlog,
        reaction: knobs.reaction,
        quantile: knobs.quantile,
        minHeadroom: knobs.minHeadroom,
        maxHeadroom: knobs.maxHeadroom,
        window: knobs.window,
        holdPerHeadroom: knobs.holdPerHeadroom,
        minHold: knobs.minHold,
        maxHold: knobs.maxHold,
        forecast: knobs.forecast,
      },
    },
    { target: { metric: 'cpu', target: knobs.cpuTarget, scaleDown: { stabilization: '5m' } } },
  ];
}

/** The default policies of a balanced, request-driven role. */
export function defaultRequestPolicies(knobs: DefaultPolicyKnobs = DEFAULT_KNOBS): Policy[] {
  return compileScale(scaleSchema.parse(defaultScaleEntries(knobs)));
}

/** Roles some load balancer role balances (its `loadBalancer.members.role`). */
export function balancedRoles(roles: Iterable<{ readonly loadBalancer?: { readonly members: { readonly role: string } } }>): Set<string> {
  const out = new Set<string>();
  for (const r of roles) if (r.loadBalancer) out.add(r.loadBalancer.members.role);
  return out;
}
