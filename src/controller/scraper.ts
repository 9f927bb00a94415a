/**
 * Role metrics: the samples the scaling policies read. Instance-scope samples come with agents'
 * heartbeats ({@link RoleMetrics.add}); role-scope ones (a queue's backlog, say) are scraped here
 * from their templated URLs when due.
 */
import {
  balancerRates,
  MetricStore,
  parsePrometheusText,
  pickJson,
  pickPrometheus,
  renderTemplate,
  resolveImports,
  type BalancerReading,
  type BalancerStatus,
  type ImportedMember,
  type MetricSource,
} from '../core/index.js';
import { servingMembers, type ControllerContext } from './context.js';
import type { SampleSink } from './agents.js';

/** A balancer's reading older than this no longer counts in its role's totals (it stopped reporting). */
const BALANCER_FRESH_MS = 10_000;

/** What one load balancer instance last told of the role it balances. */
interface BalancerSeen {
  /** `app/role` of the balanced role. */
  readonly key: string;
  readonly reading: BalancerReading;
  /** Requests/s it sent to each member over its last interval. */
  readonly rates: ReadonlyMap<string, number>;
  readonly inflight: number;
}

export class RoleMetrics implements SampleSink {
  readonly store = new MetricStore();
  /** Keys (`app/role`) the metric store holds samples for. */
  private readonly roles = new Set<string>();
  /** When each role-scope metric (`app/role/metric`) is next due. */
  private readonly due = new Map<string, number>();
  /** `app/lbRole` → the role it balances, from the applied specs. */
  private readonly balances = new Map<string, string>();
  /** By load balancer instance id. */
  private readonly balancers = new Map<string, BalancerSeen>();

  constructor(private readonly ctx: ControllerContext) {}

  add(key: string, metric: string, sample: { t: number; value: number; instance?: string }): void {
    this.store.add(key, metric, sample);
    this.roles.add(key);
  }

  /**
   * The balancer metrics of the role a load balancer balances (core/metrics.ts BALANCER_METRICS),
   * from one balancer's report: each member's rate over the balancer's last interval, summed over
   * every balancer of the role that reported lately, and the role's total and requests in flight.
   */
  balancer(app: string, role: string, instance: string, t: number, members: BalancerStatus['members']): void {
    const target = this.balances.get(`${app}/${role}`);
    if (target === undefined) return;
    const key = `${app}/${target}`;
    const prev = this.balancers.get(instance);
    const reading: BalancerReading = { t, totals: new Map(members.map((m) => [m.id, m.totalRequests])) };
    const rates = balancerRates(prev?.key === key ? prev.reading : undefined, t, members);
    let inflight = 0;
    for (const m of members) inflight += m.activeConnections;
    this.balancers.set(instance, { key, reading, rates: rates ?? prev?.rates ?? new Map(), inflight });
    if (!rates) return;
    // Every balancer of the role still reporting; one that went quiet is forgotten.
    const perMember = new Map<string, number>();
    let total = 0;
    let carried = 0;
    for (const [id, b] of this.balancers) {
      if (t - b.reading.t > BALANCER_FRESH_MS * 6) this.balancers.delete(id);
      if (b.key !== key || t - b.reading.t > BALANCER_FRESH_MS) continue;
      carried += b.inflight;
      for (const [m, r] of b.rates) {
        perMember.set(m, (perMember.get(m) ?? 0) + r);
        total += r;
      }
    }
    for (const m of members) {
      // A member leaving (drained, removed) is no longer the role's serving capacity.
      if (m.removing) continue;
      this.add(key, 'lb_member_requests', { t, value: perMember.get(m.id) ?? 0, instance: m.id });
    }
    this.add(key, 'lb_requests', { t, value: total });
    this.add(key, 'lb_inflight', { t, value: carried });
  }

  forgetApp(app: string): void {
    for (const k of [...this.balances.keys()]) if (k.startsWith(`${app}/`)) this.balances.delete(k);
    for (const [id, b] of [...this.balancers]) if (b.key.startsWith(`${app}/`)) this.balancers.delete(id);
    for (const k of [...this.due.keys()]) if (k.startsWith(`${app}/`)) this.due.delete(k);
    for (const r of [...this.roles]) {
      if (!r.startsWith(`${app}/`)) continue;
      this.store.forgetRole(r);
      this.roles.delete(r);
    }
  }

  /** Scrapes the role-scope metrics that are due; each scrape runs on its own, with its timeout. */
  async scrapeDue(): Promise<void> {
    const now = this.ctx.clock.now();
    for (const app of await this.ctx.store.listApps()) {
      if (app.deleting) continue;
      let serving: Record<string, ImportedMember[]> | undefined;
      for (const role of Object.values(app.spec.roles)) {
        const lbKey = `${app.name}/${role.name}`;
        if (role.loadBalancer) this.balances.set(lbKey, role.loadBalancer.members.role);
        else this.balances.delete(lbKey);
        for (const m of role.metrics) {
          if (m.scope !== 'role') continue;
          const key = `${app.name}/${role.name}/${m.name}`;
          if ((this.due.get(key) ?? 0) > now) continue;
          this.due.set(key, now + m.intervalMs);
          serving ??= await servingMembers(this.ctx.store, app.name);
          const { imports } = resolveImports(role, serving);
          const url = renderTemplate(m.url, { port: '', ip: '', instance: '', role: role.name, app: app.name, workdir: '', appDir: app.appDir }, imports);
          void this.scrapeOne(`${app.name}/${role.name}`, m, url);
        }
      }
    }
  }

  private async scrapeOne(key: string, m: MetricSource, url: string): Promise<void> {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(m.timeoutMs) });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const text = await res.text();
      const value = m.format === 'json' ? pickJson(JSON.parse(text) as unknown, m.select) : pickPrometheus(parsePrometheusText(text), m.select);
      if (value === undefined) throw new Error(`no value at ${m.select}`);
      this.add(key, m.name, { t: this.ctx.clock.now(), value });
    } catch (err) {
      this.ctx.log.debug({ err, url, metric: m.name }, 'role metric scrape failed');
    }
  }
}
