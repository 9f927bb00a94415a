/**
 * The controller's own Prometheus metrics (`GET /metrics`), one registry per controller so
 * several controllers in one process (tests) do not collide.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export class ControllerMetrics {
  readonly registry = new Registry();
  readonly desired = new Gauge({ name: 'drover_role_desired', help: 'Desired instance count per role', labelNames: ['app', 'role'] as const, registers: [this.registry] });
  readonly actual = new Gauge({ name: 'drover_role_instances', help: 'Live instances per role (counting toward its size)', labelNames: ['app', 'role'] as const, registers: [this.registry] });
  readonly serving = new Gauge({ name: 'drover_role_serving', help: 'Serving instances per role', labelNames: ['app', 'role'] as const, registers: [this.registry] });
  readonly spares = new Gauge({ name: 'drover_spares', help: 'Warm spare instances per pool (a role, or * for the app)', labelNames: ['app', 'pool'] as const, registers: [this.registry] });
  readonly degraded = new Gauge({ name: 'drover_role_degraded', help: '1 while a role is degraded (replacements keep failing)', labelNames: ['app', 'role'] as const, registers: [this.registry] });
  readonly learnedCapacity = new Gauge({
    name: 'drover_policy_learned_capacity', help: "What one instance of a role serves, as its adaptive policy has learned it (the metric's unit per second)",
    labelNames: ['app', 'role', 'metric'] as const, registers: [this.registry],
  });
  readonly decisions = new Counter({ name: 'drover_decisions_total', help: 'Decisions taken, by kind', labelNames: ['kind'] as const, registers: [this.registry] });
  readonly replacements = new Counter({ name: 'drover_replacements_total', help: 'Instances replaced because they failed or stopped answering', labelNames: ['app', 'role', 'reason'] as const, registers: [this.registry] });
  readonly drainSeconds = new Histogram({ name: 'drover_drain_duration_seconds', help: 'From drain start to instance stopped', buckets: [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300], registers: [this.registry] });
  readonly reconcileSeconds = new Histogram({ name: 'drover_reconcile_duration_seconds', help: 'Time of one reconcile pass of one app', buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers: [this.registry] });
  readonly reconcileErrors = new Counter({ name: 'drover_reconcile_errors_total', help: 'Reconcile passes that failed (retried with backoff)', registers: [this.registry] });
  readonly conflicts = new Counter({ name: 'drover_store_conflicts_total', help: 'Conditional store writes refused because another writer changed the row first (the work is read and planned again)', labelNames: ['what'] as const, registers: [this.registry] });
  readonly suspicious = new Counter({ name: 'drover_agent_suspicious_total', help: 'Agent connections or reports refused as not authentic or impossible (forged frames, failed proofs, impossible reports)', registers: [this.registry] });
  readonly stalls = new Counter({ name: 'drover_controller_stalls_total', help: "Times the controller's event loop was blocked long enough to miss heartbeats (agents are not blamed for them)", registers: [this.registry] });
  readonly stalledSeconds = new Counter({ name: 'drover_controller_stalled_seconds_total', help: "Time the controller's event loop spent blocked in stalls", registers: [this.registry] });
  /** Where {@link loopLag} reads the event-loop delay from at each scrape. */
  loopLagSource?: () => { p99: number; max: number };
  readonly loopLag: Gauge<'stat'> = new Gauge({
    name: 'drover_event_loop_lag_seconds', help: "The controller's event-loop delay since the last scrape (p99, max)", labelNames: ['stat'] as const, registers: [this.registry],
    collect: () => {
      const d = this.loopLagSource?.();
      if (!d) return;
      this.loopLag.set({ stat: 'p99' }, d.p99);
      this.loopLag.set({ stat: 'max' }, d.max);
    },
  });
  readonly leader = new Gauge({ name: 'drover_leader', help: '1 while this controller holds the leader lease and acts, 0 on a standby', registers: [this.registry] });
  readonly leaderEpoch = new Gauge({ name: 'drover_leader_epoch', help: 'Epoch of the leader lease this controller holds (0 when it holds none)', registers: [this.registry] });
  readonly leaderTransitions = new Counter({ name: 'drover_leader_transitions_total', help: 'Times this controller took the leader lease (to=leader) or stepped down (to=stepped-down)', labelNames: ['to'] as const, registers: [this.registry] });
  readonly connectedAgents = new Gauge({ name: 'drover_agents_connected', help: 'Agents connected to this controller', registers: [this.registry] });
}
