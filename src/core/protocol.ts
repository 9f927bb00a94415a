/**
 * Messages between the controller and its agents, whatever the transport (JSON over a
 * WebSocket for `embedded`). Orders carry ids; the agent applies each id once and acknowledges
 * it; the controller re-sends until acknowledged. Agent status is level-triggered: every
 * heartbeat carries the whole status, so a lost message costs nothing.
 */
import type { InstanceState } from './states.js';
import type { AppSpec, ResolvedImports, RoleSpec } from './types.js';
import type { BundleRef } from './bundle.js';

/** 2: mutual authentication and sealed frames (auth.ts). */
export const PROTOCOL_VERSION = 3;

/** Everything the agent needs to run one role. */
export interface Assignment {
  readonly app: string;
  /** Folder holding the app file; `${appDir}` in templates. */
  readonly appDir: string;
  readonly role: RoleSpec;
  readonly imports: ResolvedImports;
  /** Hash of `imports`; the agent reports the one it last applied. */
  readonly importsVersion: string;
  /** The member slot the instance holds (`db-0` is slot 0): which volumes are its. Absent: none. */
  readonly slot?: number;
  /** The app bundle to fetch and unpack before `deploy`; `${appDir}` is then the unpacked folder (docs/fleet.md). Absent: `appDir` as given. */
  readonly bundle?: BundleRef;
  /** Why the app folder could not be bundled: the agent fails the role with it rather than run without its files. */
  readonly bundleError?: string;
}

export type Order =
  | { readonly id: string; readonly kind: 'assign'; readonly assignment: Assignment }
  | {
      readonly id: string;
      readonly kind: 'imports';
      readonly imports: ResolvedImports;
      readonly importsVersion: string;
    }
  | { readonly id: string; readonly kind: 'stop'; readonly reason: string }
  /**
   * Leave gracefully: the instance is already out of its importers' member lists (out of the load
   * balancer). Wait until in-flight work is done (no established connection to the role's port)
   * or `timeoutMs`, then stop as for `stop`, sending the last log lines first.
   */
  | { readonly id: string; readonly kind: 'drain'; readonly reason: string; readonly timeoutMs: number }
  /** Load came back: if the drain has not begun to stop the role, serve again. */
  | { readonly id: string; readonly kind: 'undrain'; readonly reason: string }
  /**
   * Run the role's `tenants.add` for this tenant (or `tenants.move` when `fromInstance` is set),
   * once the role serves; retried with backoff up to the role's `maxAttempts`. Idempotent: a
   * tenant already added (or being added) is not added again.
   */
  | { readonly id: string; readonly kind: 'tenantAdd'; readonly tenant: TenantRef; readonly fromInstance?: string }
  /** Run the role's `tenants.remove` for this tenant (its host is already unrouted). Idempotent. */
  | { readonly id: string; readonly kind: 'tenantRemove'; readonly tenant: TenantRef };

/** A tenant as its instance's commands see it: `TENANT_ID`, `TENANT_NAME`, `TENANT_HOST`. */
export interface TenantRef {
  readonly id: string;
  readonly name: string;
  readonly host: string | null;
}

/** Where a tenant is on its instance, as the agent reports it. */
export type TenantPhase = 'adding' | 'ready' | 'failed' | 'removing' | 'removed';

export interface TenantReport {
  readonly phase: TenantPhase;
  /** Runs of `add` (or `remove`) so far. */
  readonly attempts: number;
  /** Why the last run failed (exit code, timeout). */
  readonly reason?: string;
  /** Last output lines of the last failed run. */
  readonly tail?: readonly string[];
}

export type OrderKind = Order['kind'];

/** Instance vitals sampled by the agent: host CPU as a fraction of all cores, role CPU in cores. */
export interface Vitals {
  readonly at: number;
  /** 1, 5, 15 minute load averages. */
  readonly loadavg: readonly [number, number, number];
  /** Host CPU utilisation over the last interval, 0..1 of all cores. */
  readonly cpu: number;
  readonly memUsedBytes: number;
  readonly memTotalBytes: number;
  /** The role's process tree: CPU in cores (1 = one core busy), resident memory. */
  readonly role?: {
    readonly cpu: number;
    readonly rssBytes: number;
    readonly pids: number;
    /** Established TCP connections to the role's port: its in-flight work. */
    readonly connections?: number;
  };
  /** Instance-scope metrics declared by the role (`metrics:`), last scraped values. */
  readonly metrics?: Readonly<Record<string, number>>;
}

export interface LastExit {
  readonly code: number | null;
  readonly signal: string | null;
  /** Last lines of the process's stdout/stderr. */
  readonly tail: readonly string[];
}

export interface AgentStatus {
  readonly state: InstanceState;
  readonly role?: string;
  /** Rendered exports; present only while serving. */
  readonly exports?: Readonly<Record<string, string>>;
  readonly importsVersion?: string;
  /** Times the start command was restarted since assignment. */
  readonly restarts: number;
  readonly lastExit?: LastExit;
  /** A sentence for people: why the agent is in this state. */
  readonly message?: string;
  /** When the role's process last became healthy (ms epoch). */
  readonly servingSince?: number;
  /** For a load-balancer role: its driver and members as the balancer sees them. */
  readonly balancer?: BalancerStatus;
  /** For a role that hosts tenants: each tenant it was told about, by tenant id. */
  readonly tenants?: Readonly<Record<string, TenantReport>>;
  /** Every port of the role's `ports:` by number (its extra auto ports chosen by the agent). */
  readonly ports?: Readonly<Record<string, number>>;
}

export interface BalancerStatus {
  readonly driver: string;
  /** ip:port clients connect to. */
  readonly listen: string;
  readonly members: readonly {
    readonly id: string;
    readonly address: string;
    /** ready, drain or maint; `removing` while a member that left is finishing its connections. */
    readonly state: string;
    readonly removing: boolean;
    readonly activeConnections: number;
    readonly totalRequests: number;
    readonly failures: number;
    readonly ejected: boolean;
  }[];
}

/**
 * The agent's first message on a new connection, in the clear: who it says it is and a fresh
 * nonce. No secret: the controller answers with a {@link ChallengeMessage} that proves it holds the
 * instance's key, and the agent proves the same with its first sealed frame (auth.ts).
 */
export interface HelloMessage {
  readonly type: 'hello';
  readonly protocol: number;
  readonly instanceId: string;
  readonly epoch: number;
  /** 32 random bytes, base64url. */
  readonly nonce: string;
}

/** The controller's answer to a hello, in the clear. */
export type PlainControllerMessage =
  | { readonly type: 'challenge'; readonly nonce: string; readonly proof: string }
  /**
   * A refusal the controller cannot prove (it does not know the instance, or the hello was
   * malformed). The agent does not obey it: it keeps its role and tries again later.
   */
  | { readonly type: 'refused'; readonly reason: string };

/** What an agent sends inside sealed frames once the handshake is done. */
export type AgentMessage =
  | {
      /** The first sealed message: proves the agent holds the key, and tells the whole status. */
      readonly type: 'join';
      readonly pid: number;
      readonly status: AgentStatus;
      /** Order ids already applied (so a reconnect does not re-apply). */
      readonly applied: readonly string[];
    }
  | { readonly type: 'ack'; readonly orderId: string }
  | { readonly type: 'status'; readonly status: AgentStatus; readonly vitals?: Vitals }
  | { readonly type: 'log'; readonly lines: readonly string[] };

/** What the controller sends inside sealed frames. */
export type ControllerMessage =
  | { readonly type: 'welcome'; readonly heartbeatMs: number }
  /** The instance is fenced (destroyed, replaced or unknown): the agent must stop its role and exit. */
  | { readonly type: 'refused'; readonly reason: string }
  | { readonly type: 'order'; readonly order: Order };

/**
 * A controller message as it travels: stamped with the epoch of the leader lease its sender
 * held (controller/leader.ts). An agent ignores messages from an older leader than the newest
 * it has heard, so a deposed controller cannot order it about.
 */
export type SealedControllerMessage = ControllerMessage & { readonly leader: number };

/**
 * Bounds of what an agent may say. The agent trims its own messages to fit (a long line is cut
 * with a marker, never dropped); the controller refuses anything larger. A frame carrying the
 * largest legal status stays well under the transport's 1 MiB message limit.
 */
export const WIRE_LIMITS = {
  /** One output line, in characters. */
  lineChars: 2000,
  /** Lines in one `log` message, and in `lastExit.tail`. */
  lines: 60,
  /** `status.message`. */
  messageChars: 2000,
  /** An id, a role or state name, a version hash. */
  idChars: 200,
  /** One export value. */
  exportChars: 65_536,
  exportKeys: 64,
  /** Order ids in `join.applied`. */
  applied: 1000,
  balancerMembers: 1000,
  metrics: 64,
  /** Tenants reported by one instance (a role's `tenants.capacity` is at most 10,000). */
  tenants: 10_000,
  /** Output lines kept with a failed tenant command. */
  tenantTail: 20,
} as const;
export type { AppSpec };
