/**
 * Drover's default scaling policy for a request-serving role, as the app file a user would
 * write: the `adaptive` kind (learned capacity, volatility headroom, backlog draining, a gated
 * seasonal forecast) with a CPU target as a safety net. The knobs were tuned with this
 * simulator (bench:policies) on tuning seeds of the synthetic families and checked on held-out
 * seeds and the WorldCup 1998 trace; docs/simulator.md tells how and what they trade.
 * `legacyAppYaml` is the previous default (a `queue` policy on the rate at 85% of a hand-set
 * capacity), kept as a comparison row.
 */
import { DEFAULT_KNOBS, parseAppFile, type AppSpec, type DefaultPolicyKnobs } from '../core/index.js';

/** The knobs live in core: the controller gives the same policy to a balanced role by default. */
export { DEFAULT_KNOBS, type DefaultPolicyKnobs } from '../core/index.js';

/**
 * The app file text of Drover's default policy for a role whose instances are believed to
 * serve `capacity` requests/s each (a prior: the policy learns the real figure). `demand` is
 * the request rate at the role's load balancer, `backlog` the requests waiting in it, both
 * scraped once per role; `rps` is what each instance served.
 */
export function defaultAppYaml(capacity: number, knobs: DefaultPolicyKnobs = DEFAULT_KNOBS): string {
  return `# Drover's default policy, as simulated by bench:policies (capacity prior ${capacity} req/s per instance).
app: web
roles:
  web:
    min: ${knobs.min}
    max: 1000
    start: node server.js
    spares: ${knobs.spares}
    warmup: 0s
    scale:
      # Scale on what arrives, sized by what an instance is seen to serve, with the headroom
      # recent jumps of demand call for, and room to drain what has queued.
      - adaptive:
          metric: demand
          perInstance: ${capacity}
          served: rps
          backlog: backlog
          reaction: ${knobs.reaction}
          quantile: ${knobs.quantile}
          minHeadroom: ${knobs.minHeadroom}
          maxHeadroom: ${knobs.maxHeadroom}
          window: ${knobs.window}
          holdPerHeadroom: ${knobs.holdPerHeadroom}
          minHold: ${knobs.minHold}
          maxHold: ${knobs.maxHold}
          forecast: ${knobs.forecast}
      # The safety net if the rate stops coming, or requests get heavier than the rate says.
      - target: { metric: cpu, target: ${knobs.cpuTarget}, scaleDown: { stabilization: 5m } }
    metrics:
      - { name: demand, url: http://127.0.0.1:8404/stats, format: json, select: frontend.req_rate }
      - { name: backlog, url: http://127.0.0.1:8404/stats, format: json, select: backend.qcur }
      - { name: rps, http: /metrics, select: http_requests_per_second }
`;
}

export function defaultApp(capacity: number, knobs?: DefaultPolicyKnobs): AppSpec {
  return parseAppFile(defaultAppYaml(capacity, knobs));
}

/** The previous default: `queue` on the rate at 85% of the configured capacity, 5 min hold. */
export function legacyAppYaml(capacity: number): string {
  const perInstance = Math.round(capacity * 0.85 * 1000) / 1000;
  return `app: web
roles:
  web:
    min: 2
    max: 1000
    start: node server.js
    warmup: 0s
    scale:
      - queue: { metric: demand, perInstance: ${perInstance}, scaleDownStabilization: 5m }
      - target: { metric: cpu, target: 0.9, scaleDown: { stabilization: 5m } }
    metrics:
      - { name: demand, url: http://127.0.0.1:8404/stats, format: json, select: frontend.req_rate }
`;
}

export function legacyApp(capacity: number): AppSpec {
  return parseAppFile(legacyAppYaml(capacity));
}
