/**
 * Drover's default scaling policy for a request-serving role, as the app file a user would
 * write. The numbers were tuned with this simulator (bench:policies) on the WorldCup 1998 trace
 * and checked on the synthetic family; docs/simulator.md tells how and what they trade.
 */
import { parseAppFile, type AppSpec } from '../core/index.js';

export interface DefaultPolicyKnobs {
  /** Fewest instances kept: two, so one crash or one burst never leaves the role bare. */
  readonly min: number;
  /** Share of an instance's capacity the demand policy plans for. */
  readonly utilisation: number;
  /** CPU target of the safety net (it acts above target × 1.1). */
  readonly cpuTarget: number;
  readonly spares: number;
  readonly scaleDownStabilization: string;
}

export const DEFAULT_KNOBS: DefaultPolicyKnobs = {
  min: 2,
  utilisation: 0.85,
  cpuTarget: 0.9,
  spares: 0,
  scaleDownStabilization: '5m',
};

/**
 * The app file text of Drover's default policy for a role whose instances each serve
 * `capacity` requests/s. `demand` is the request rate at the role's load balancer (HAProxy's
 * `req_rate`, or the builtin proxy's), scraped once per role.
 */
export function defaultAppYaml(capacity: number, knobs: DefaultPolicyKnobs = DEFAULT_KNOBS): string {
  const perInstance = Math.round(capacity * knobs.utilisation * 1000) / 1000;
  return `# Drover's default policy, as simulated by bench:policies (capacity ${capacity} req/s per instance).
app: web
roles:
  web:
    min: ${knobs.min}
    max: 1000
    start: node server.js
    spares: ${knobs.spares}
    warmup: 0s
    scale:
      # Scale on what arrives, not on what is served: CPU saturates at 100% under overload and
      # hides how far demand has gone past capacity; the request rate does not.
      - queue: { metric: demand, perInstance: ${perInstance}, scaleDownStabilization: ${knobs.scaleDownStabilization} }
      # The safety net if the rate stops coming, or requests get heavier than the rate says.
      - target: { metric: cpu, target: ${knobs.cpuTarget}, scaleDown: { stabilization: ${knobs.scaleDownStabilization} } }
    metrics:
      - name: demand
        url: http://127.0.0.1:8404/stats
        format: json
        select: frontend.req_rate
`;
}

export function defaultApp(capacity: number, knobs?: DefaultPolicyKnobs): AppSpec {
  return parseAppFile(defaultAppYaml(capacity, knobs));
}
