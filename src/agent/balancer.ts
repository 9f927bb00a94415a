/**
 * A load-balancer role, run by its agent: the driver (builtin proxy or HAProxy) listens on the
 * role's port and its members follow the role's imports — a member that leaves the imports
 * (drained or gone) is drained in the balancer first and removed once idle.
 */
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { BalancerStatus, LoadBalancerSpec, ResolvedImports } from '../core/index.js';
import { createDriver, membersFromImports, type LoadBalancerDriver } from '../adapters/lb/index.js';

export class RoleBalancer {
  readonly #driver: LoadBalancerDriver;
  readonly #listen: string;
  #status?: BalancerStatus;

  constructor(
    readonly spec: LoadBalancerSpec,
    opts: { ip: string; port: number; workdir: string; logger: Logger },
    private readonly log: Logger = opts.logger,
  ) {
    const port = spec.listen ?? opts.port;
    this.#listen = `${opts.ip}:${port}`;
    this.#driver = createDriver(spec.driver, {
      listen: { host: opts.ip, port },
      balance: spec.balance,
      // Short: HAProxy's runtime socket path must fit in 107 bytes.
      workdir: join(opts.workdir, 'lb'),
      ...(spec.healthCheck
        ? { healthCheck: { ...(spec.healthCheck.path !== undefined ? { path: spec.healthCheck.path } : {}), intervalMs: spec.healthCheck.intervalMs, failureThreshold: spec.healthCheck.failureThreshold } }
        : {}),
      ejectAfterFailures: spec.ejectAfterFailures,
      ejectForMs: spec.ejectForMs,
      logger: opts.logger,
    });
  }

  async start(imports: ResolvedImports): Promise<void> {
    await this.#driver.start();
    await this.update(imports);
  }

  /**
   * Members := the importing role's serving members, and the host map := the tenant hosts each
   * carries; returns why some were left out.
   */
  async update(imports: ResolvedImports): Promise<string[]> {
    const imported = imports[this.spec.members.role] ?? [];
    const { members, skipped } = membersFromImports(imported, this.spec.members.key);
    await this.#driver.setMembers(members);
    const added = new Set(members.map((m) => m.id));
    const hostMap: Record<string, string> = {};
    for (const m of imported) if (added.has(m.instance)) for (const h of m.hosts ?? []) hostMap[h] = m.instance;
    await this.#driver.setHostMap(hostMap);
    await this.refresh();
    const why = skipped.map((s) => `${s.instance}: ${s.reason}`);
    if (why.length) this.log.warn({ skipped: why }, 'some members could not be added to the balancer');
    return why;
  }

  /** Polls the driver's stats for the next status report. */
  async refresh(): Promise<void> {
    try {
      const stats = await this.#driver.stats();
      this.#status = {
        driver: this.spec.driver,
        listen: this.#listen,
        members: stats.map((s) => ({
          id: s.id,
          address: s.address,
          state: s.state,
          removing: s.removing,
          activeConnections: s.activeConnections,
          totalRequests: s.totalRequests,
          failures: s.failures,
          ejected: s.ejected,
        })),
      };
    } catch (err) {
      // HAProxy restarting: keep the last picture rather than report an empty pool.
      this.log.debug({ err }, 'balancer stats unavailable');
    }
  }

  status(): BalancerStatus | undefined {
    return this.#status;
  }

  async stop(): Promise<void> {
    await this.#driver.stop();
  }
}
