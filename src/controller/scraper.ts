/**
 * Role metrics: the samples the scaling policies read. Instance-scope samples come with agents'
 * heartbeats ({@link RoleMetrics.add}); role-scope ones (a queue's backlog, say) are scraped here
 * from their templated URLs when due.
 */
import {
  MetricStore,
  parsePrometheusText,
  pickJson,
  pickPrometheus,
  renderTemplate,
  resolveImports,
  type ImportedMember,
  type MetricSource,
} from '../core/index.js';
import { servingMembers, type ControllerContext } from './context.js';
import type { SampleSink } from './agents.js';

export class RoleMetrics implements SampleSink {
  readonly store = new MetricStore();
  /** Keys (`app/role`) the metric store holds samples for. */
  private readonly roles = new Set<string>();
  /** When each role-scope metric (`app/role/metric`) is next due. */
  private readonly due = new Map<string, number>();

  constructor(private readonly ctx: ControllerContext) {}

  add(key: string, metric: string, sample: { t: number; value: number; instance?: string }): void {
    this.store.add(key, metric, sample);
    this.roles.add(key);
  }

  forgetApp(app: string): void {
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
