import type { Policy } from './policy.js';
import type { MetricSource } from './policy-spec.js';
import type { ListenSpec, PortValue } from './ports.js';
import type { ProviderSettings } from './provider-settings.js';

/**
 * The compiled (validated, defaulted) form of an app file. `parseAppFile` in `spec.ts` turns
 * YAML text into an {@link AppSpec}; everything downstream works on these types only.
 */

/** A health check run by the agent against its role's process. */
export interface HealthSpec {
  /** Exactly one of http / tcp / exec is set. `http` is a path, probed on 127.0.0.1:${port}. */
  readonly http?: string;
  /** Probe that the role's port accepts TCP connections. */
  readonly tcp?: boolean;
  /** A bash command; exit 0 is healthy. Runs with the role's environment. */
  readonly exec?: string;
  /** @default 2000 */
  readonly intervalMs: number;
  /** @default 1000 */
  readonly timeoutMs: number;
  /** Consecutive failures before the check counts as failed. @default 3 */
  readonly failureThreshold: number;
}

/** One entry of a role's `imports`, e.g. `db.url`, `api.*`, `cache.url?`. */
export interface ImportRef {
  /** The text as written in the app file. */
  readonly raw: string;
  readonly role: string;
  /** An export key, or `*` for every export of every member. */
  readonly key: string;
  /** A trailing `?`: the role starts without it and gets it later through `update`. */
  readonly optional: boolean;
}

/** A role that balances load over another role's members (`loadBalancer:`). */
export interface LoadBalancerSpec {
  /** @default 'builtin' */
  readonly driver: 'builtin' | 'haproxy';
  /** Port to listen on; absent: the instance's port. */
  readonly listen?: number;
  /** The imported export that gives each member's address, e.g. api.endpoint. */
  readonly members: { readonly role: string; readonly key: string };
  /** @default 'roundrobin' */
  readonly balance: 'roundrobin' | 'leastconn';
  readonly healthCheck?: { readonly path?: string; readonly intervalMs: number; readonly failureThreshold: number };
  /** @default 3 */
  readonly ejectAfterFailures: number;
  /** @default 10000 */
  readonly ejectForMs: number;
}

/**
 * A role that hosts SaaS tenants (`tenants:`): how many fit on one instance and the commands
 * that add and remove one. The commands run on the tenant's instance, as bash, with the role's
 * environment plus `TENANT_ID`, `TENANT_NAME` and `TENANT_HOST` (never spliced into the text).
 */
export interface TenantsSpec {
  /** Tenants one instance holds, 1 to 10,000. */
  readonly capacity: number;
  /** Adds a tenant on its instance; exit 0 = placed. Non-zero or a timeout is retried with backoff. */
  readonly add: string;
  /** Removes a tenant from its instance (after its host is unrouted). */
  readonly remove: string;
  /**
   * Runs on the new instance instead of `add` when a tenant moves off a live instance
   * (consolidation, scale-in), with `TENANT_FROM_INSTANCE` set; `remove` then runs on the old
   * instance once the route has switched. Absent: `add` on the new instance, then `remove`.
   */
  readonly move?: string;
  /** Host-name template whose only variable is `${tenant}`; absent: hosts come with the sign-up, or none. */
  readonly host?: string;
  /** Time one run of `add` (and of `move`) may take. @default 120000 */
  readonly addTimeoutMs: number;
  /** Time one run of `remove` may take. @default 120000 */
  readonly removeTimeoutMs: number;
  /** Runs of `add` before the tenant is `failed`: `retries` + 1. @default 6 */
  readonly maxAttempts: number;
}

/** A role's constraints on the hosts of its members (docs/fleet.md, Placement). */
export interface PlacementSpec {
  /** Labels a host must all have (`disk: ssd`); this machine has `host=<hostname>` and `local=true`. @default {} */
  readonly labels: Readonly<Record<string, string>>;
  /** `host`: prefer a host that runs no member of the role yet (Kubernetes' topology spread, `ScheduleAnyway`). */
  readonly spread?: 'host';
  /** With `spread`: never stack two members on one host; the role waits instead (`DoNotSchedule`). @default false */
  readonly strict: boolean;
}

export interface RoleSpec {
  readonly name: string;
  /** Bounds of the role's count. `count: N` alone compiles to min 0, max MAX_ROLE_COUNT, count N. */
  readonly min: number;
  readonly max: number;
  /** The count the role starts at. @default min */
  readonly count: number;
  /** Long-running command supervised by the agent (the process plug-in). Optional. */
  readonly start?: string;
  /** Lifecycle steps run by bash (the script plug-in). */
  readonly deploy?: string;
  readonly stop?: string;
  readonly update?: string;
  readonly undeploy?: string;
  /**
   * The Unix user (a name, or a uid as digits) the role's commands run as. Needs the agent to
   * run as root; the instance folder is made writable for that user. Absent: the agent's user.
   */
  readonly user?: string;
  /** Extra environment (templated). */
  readonly env: Readonly<Record<string, string>>;
  /** Templated values published once the role serves. */
  readonly exports: Readonly<Record<string, string>>;
  readonly imports: readonly ImportRef[];
  readonly health?: HealthSpec;
  /** The role is a load balancer run by its agent (no start command). */
  readonly loadBalancer?: LoadBalancerSpec;
  /** Named ports the role binds (`ports:`), in the order written; absent: the single `${port}`. */
  readonly ports?: Readonly<Record<string, PortValue>>;
  /** Fixed ports held by the host's port keeper, each leading to a port of the role (`listen:`). */
  readonly listen?: readonly ListenSpec[];
  /** Names of the role's volumes (`volumes:`): folders kept per member slot and host. */
  readonly volumes?: readonly string[];
  /** Time `stop` (or SIGTERM) has before SIGKILL. @default 10000 */
  readonly stopTimeoutMs: number;
  /** Warm spares kept for this role: agents running, no role, ready to take it. @default 0 */
  readonly spares: number;
  /** After it starts serving, an instance's metrics are left out of averages this long. @default 30000 */
  readonly warmupMs: number;
  /** How long a draining instance may take to finish in-flight work before it is stopped. @default 30000 */
  readonly drainTimeoutMs: number;
  /** The role hosts tenants (`tenants:`). */
  readonly tenants?: TenantsSpec;
  /**
   * The sha256 of the app bundle packed at apply — set by the controller, never by the file. It is
   * part of the role's hash, so an apply after the app folder changed rolls the role as a changed
   * file does (docs/fleet.md, App bundles). Absent: no bundle was packed at apply.
   */
  readonly bundle?: string;
  /** Which hosts may run the role (`placement:`); absent: any host of the app's pool, or this machine. */
  readonly placement?: PlacementSpec;
  /**
   * Where the role's instances run (`provider:` on the role, else the app's): a cloud's settings.
   * Absent: the controller's default (joined hosts, then this machine or its ssh hosts).
   */
  readonly provider?: ProviderSettings;
  /** Scaling policies; empty = the count is set by the file or by hand. @default [] */
  readonly scale: readonly Policy[];
  /**
   * The policies are Drover's default for a balanced role with `min`/`max` and no `scale:`
   * (core/default-policy.ts), not the file's.
   */
  readonly scaleDefault?: true;
  /** Metrics scraped besides the built-in vitals. @default [] */
  readonly metrics: readonly MetricSource[];
}

export interface AppSpec {
  readonly app: string;
  /** Warm spares kept for any role of the app. @default 0 */
  readonly spares: number;
  /** The app's `provider:` block: where its pool's spares (and roles without their own) run. */
  readonly provider?: ProviderSettings;
  /** Roles in the order written in the file. */
  readonly roles: Readonly<Record<string, RoleSpec>>;
}

/** One member of an imported role, as seen by the importer. */
export interface ImportedMember {
  readonly instance: string;
  readonly exports: Readonly<Record<string, string>>;
  /**
   * Tenant host names routed to this member (a role that hosts tenants), sorted. A load balancer
   * importing the role maps each to the member; the imports version covers them, so the
   * importer's applied version tells when a route is live.
   */
  readonly hosts?: readonly string[];
}

/**
 * What a role's imports resolve to: for each imported role, its serving members (sorted by
 * instance id) with the exports the importer asked for.
 */
export type ResolvedImports = Readonly<Record<string, readonly ImportedMember[]>>;
