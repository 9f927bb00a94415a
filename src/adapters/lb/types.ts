/**
 * The load-balancer driver interface, in drover's words. A driver puts members into and out of
 * one HTTP load balancer while it serves: `setMembers` and `setHostMap` are declarative (the
 * whole desired set each time) and never restart or reload the balancer.
 */
import { isIP } from 'node:net';
import type { Logger } from 'pino';

export const LB_DRIVER_KINDS = ['builtin', 'haproxy'] as const;
/** `builtin`: a Node reverse proxy in this process. `haproxy`: a supervised HAProxy process driven through its runtime API. */
export type LbDriverKind = (typeof LB_DRIVER_KINDS)[number];

/**
 * What a member may be asked to do.
 *
 * - `ready`: gets new requests and connections.
 * - `drain`: gets no new requests or connections; those in flight (slow requests, WebSockets)
 *   finish. Its stats keep counting them so the caller can remove it at zero.
 * - `maint`: out of service now: gets nothing, and whatever it still carries is cut. This is
 *   the caller's deadline tool: drain, wait for zero or the deadline, then maint.
 */
export const MEMBER_STATES = { ready: 'ready', drain: 'drain', maint: 'maint' } as const;
export type MemberState = keyof typeof MEMBER_STATES;

export interface LbMember {
  /** Stable and unique among members; drover uses the instance id. */
  readonly id: string;
  /**
   * `IPv4:port` or `[IPv6]:port`. Names are refused: HAProxy does not resolve a member added
   * at run time, and both drivers must accept the same input.
   */
  readonly address: string;
  readonly state: MemberState;
}

/** A host (lowercase, no port) → the id of the member that serves it. */
export type HostMap = Readonly<Record<string, string>>;

export type LbBalance = 'roundrobin' | 'leastconn';

export interface LbHealthCheckOptions {
  /** An HTTP GET probe of this path; without it the probe is a TCP connect. */
  readonly path?: string;
  /** @default 2000 */
  readonly intervalMs?: number;
  /** @default 1000 */
  readonly timeoutMs?: number;
  /** Consecutive failed probes that take a member out of rotation until a probe passes. @default 3 */
  readonly failureThreshold?: number;
}

export interface LbOptions {
  /** Where clients connect. Port 0 picks a free port; `start()` returns the one chosen. */
  readonly listen: { readonly host: string; readonly port: number };
  /** @default 'roundrobin' */
  readonly balance?: LbBalance;
  /** A folder the driver owns (haproxy: configuration, runtime socket, map file, pid). Required by haproxy. */
  readonly workdir?: string;
  /** Active health checks. Without them, only failed connections (passive health) eject a member. */
  readonly healthCheck?: LbHealthCheckOptions;
  /** Consecutive failed connections to a member that eject it. @default 3 */
  readonly ejectAfterFailures?: number;
  /** How long an ejected member is left out before it is tried again. @default 10000 */
  readonly ejectForMs?: number;
  /** @default 2000 */
  readonly connectTimeoutMs?: number;
  /**
   * A member removed from the set while it still carries requests is drained; after this long
   * whatever it still carries is cut and it is gone. @default 300000
   */
  readonly removeTimeoutMs?: number;
  /** The HAProxy executable. @default 'haproxy' (on PATH, else /usr/sbin or /usr/local/sbin) */
  readonly haproxyBin?: string;
  /** @default pino() to stdout */
  readonly logger?: Logger;
}

/** {@link LbOptions} checked and with every default filled in. */
export interface CompiledLbOptions {
  readonly listen: { readonly host: string; readonly port: number };
  readonly balance: LbBalance;
  readonly workdir: string | undefined;
  readonly healthCheck:
    | { readonly path: string | undefined; readonly intervalMs: number; readonly timeoutMs: number; readonly failureThreshold: number }
    | undefined;
  readonly ejectAfterFailures: number;
  readonly ejectForMs: number;
  readonly connectTimeoutMs: number;
  readonly removeTimeoutMs: number;
  readonly haproxyBin: string;
}

export interface LbAddress {
  readonly host: string;
  readonly port: number;
}

export interface LbMemberStats {
  readonly id: string;
  readonly address: string;
  /** The state asked for; a member being removed reports `drain` (or `maint` once cut). */
  readonly state: MemberState;
  /** No longer in the desired set; still listed while it finishes what it carries. */
  readonly removing: boolean;
  /** Requests in flight plus open tunnels (WebSockets). Remove a draining member at zero. */
  readonly activeConnections: number;
  readonly totalRequests: number;
  /** Failed connections and failed exchanges since the member was added. */
  readonly failures: number;
  /** Out of rotation because of failed connections or failed health checks. */
  readonly ejected: boolean;
}

export interface LoadBalancerDriver {
  readonly name: LbDriverKind;
  /** Starts serving on `listen`; members set before start are applied at once. */
  start(): Promise<LbAddress>;
  /** Where clients connect; undefined before start. */
  readonly address: LbAddress | undefined;
  /**
   * The whole desired member set: adds the new, changes states, removes the missing. A removed
   * member still carrying requests is drained and disappears once idle (or after
   * `removeTimeoutMs`). Bad input is refused whole with an {@link LbInputError}.
   */
  setMembers(members: readonly LbMember[]): Promise<void>;
  /**
   * The whole host map. A request whose Host (port ignored, case ignored) is in the map goes to
   * that member while it is `ready` and not ejected; otherwise it is balanced like any other.
   * A member id not (yet) in the set is accepted and simply not routable.
   */
  setHostMap(map: HostMap): Promise<void>;
  stats(): Promise<LbMemberStats[]>;
  /** Stops serving at once; drain members first for a graceful stop. Idempotent. */
  stop(): Promise<void>;
}

export const LB_ERROR_CODES = {
  lb_bad_input: 'Members, host map or options are invalid; nothing was applied.',
  lb_haproxy_missing: 'The haproxy executable was not found.',
  lb_haproxy_too_old: 'The haproxy executable is older than the driver needs.',
  lb_haproxy_failed: 'HAProxy did not start or ended unexpectedly.',
  lb_runtime_api: 'A command on the HAProxy runtime API failed.',
  lb_listen_failed: 'The balancer could not listen on its address (in use, or not on this machine).',
  lb_not_started: 'The driver is not running.',
} as const;
export type LbErrorCode = keyof typeof LB_ERROR_CODES;

export class LbError extends Error {
  constructor(
    readonly code: LbErrorCode,
    message: string,
    readonly context: Readonly<Record<string, unknown>> = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'LbError';
  }
}

/** Bad input, refused whole. `field` is a path such as `members[2].address`. */
export class LbInputError extends LbError {
  constructor(
    readonly field: string,
    readonly reason: string,
  ) {
    super('lb_bad_input', `${field}: ${reason}`, { field, reason });
    this.name = 'LbInputError';
  }
}

export class HaproxyVersionError extends LbError {
  constructor(
    readonly found: string,
    readonly needed: string,
    readonly bin: string,
  ) {
    super(
      'lb_haproxy_too_old',
      `HAProxy ${found} found (${bin}), but the haproxy driver needs ${needed} or later ` +
        `(dynamic servers with health checks through the runtime API, without experimental mode)`,
      { found, needed, bin },
    );
    this.name = 'HaproxyVersionError';
  }
}

const DEFAULTS = {
  balance: 'roundrobin',
  ejectAfterFailures: 3,
  ejectForMs: 10_000,
  connectTimeoutMs: 2_000,
  removeTimeoutMs: 300_000,
  haproxyBin: 'haproxy',
  healthCheck: { intervalMs: 2_000, timeoutMs: 1_000, failureThreshold: 3 },
} as const;

function positiveInt(value: number | undefined, fallback: number, field: string, min = 1): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < min) throw new LbInputError(field, `must be an integer ≥ ${min}, got ${String(value)}`);
  return value;
}

export function compileLbOptions(opts: LbOptions): CompiledLbOptions {
  const { host, port } = opts.listen ?? {};
  if (typeof host !== 'string' || isIP(host) === 0) throw new LbInputError('listen.host', `must be an IP address, got ${JSON.stringify(host)}`);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new LbInputError('listen.port', `must be 0..65535, got ${String(port)}`);
  const balance = opts.balance ?? DEFAULTS.balance;
  if (balance !== 'roundrobin' && balance !== 'leastconn') throw new LbInputError('balance', `must be roundrobin or leastconn, got ${JSON.stringify(balance)}`);
  const hc = opts.healthCheck;
  if (hc?.path !== undefined && !/^\/[\x21-\x7e]*$/.test(hc.path)) throw new LbInputError('healthCheck.path', 'must start with / and hold no spaces or control characters');
  return {
    listen: { host, port },
    balance,
    workdir: opts.workdir,
    healthCheck: hc
      ? {
          path: hc.path,
          intervalMs: positiveInt(hc.intervalMs, DEFAULTS.healthCheck.intervalMs, 'healthCheck.intervalMs', 100),
          timeoutMs: positiveInt(hc.timeoutMs, DEFAULTS.healthCheck.timeoutMs, 'healthCheck.timeoutMs', 10),
          failureThreshold: positiveInt(hc.failureThreshold, DEFAULTS.healthCheck.failureThreshold, 'healthCheck.failureThreshold'),
        }
      : undefined,
    ejectAfterFailures: positiveInt(opts.ejectAfterFailures, DEFAULTS.ejectAfterFailures, 'ejectAfterFailures'),
    ejectForMs: positiveInt(opts.ejectForMs, DEFAULTS.ejectForMs, 'ejectForMs', 100),
    connectTimeoutMs: positiveInt(opts.connectTimeoutMs, DEFAULTS.connectTimeoutMs, 'connectTimeoutMs', 10),
    removeTimeoutMs: positiveInt(opts.removeTimeoutMs, DEFAULTS.removeTimeoutMs, 'removeTimeoutMs', 0),
    haproxyBin: opts.haproxyBin ?? DEFAULTS.haproxyBin,
  };
}

/** A member address split into parts; `host` is a bare IP (no brackets). */
export interface ParsedAddress {
  readonly host: string;
  readonly port: number;
  readonly family: 4 | 6;
}

export function parseAddress(address: string): ParsedAddress | undefined {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([0-9.]+)):(\d{1,5})$/.exec(address);
  if (!m) return undefined;
  const host = m[1] ?? m[2]!;
  const family = isIP(host);
  const port = Number(m[3]);
  if (family === 0 || (family === 6) !== (m[1] !== undefined) || port < 1 || port > 65535) return undefined;
  return { host, port, family: family as 4 | 6 };
}

/** Checks a whole member set before any of it is applied. */
export function validateMembers(members: readonly LbMember[]): readonly LbMember[] {
  // Callers are typed, but members often come straight from parsed JSON or YAML.
  const list: unknown = members;
  if (!Array.isArray(list)) throw new LbInputError('members', 'must be an array');
  const seen = new Set<string>();
  members.forEach((m: LbMember | undefined, i) => {
    if (typeof m?.id !== 'string' || !/^[\x21-\x7e]{1,128}$/.test(m.id)) {
      throw new LbInputError(`members[${i}].id`, 'must be 1..128 printable characters without spaces');
    }
    if (seen.has(m.id)) throw new LbInputError(`members[${i}].id`, `duplicate id ${JSON.stringify(m.id)}`);
    seen.add(m.id);
    if (typeof m.address !== 'string' || !parseAddress(m.address)) {
      throw new LbInputError(`members[${i}].address`, `must be IPv4:port or [IPv6]:port, got ${JSON.stringify(m.address)}`);
    }
    if (!Object.hasOwn(MEMBER_STATES, m.state)) {
      throw new LbInputError(`members[${i}].state`, `must be ready, drain or maint, got ${JSON.stringify(m.state)}`);
    }
  });
  return members.map((m) => ({ id: m.id, address: m.address, state: m.state }));
}

const HOSTNAME = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?)*$/;

/** Checks a host map; keys come back lowercased. */
export function validateHostMap(map: HostMap): ReadonlyMap<string, string> {
  if (typeof map !== 'object' || map === null || Array.isArray(map)) throw new LbInputError('hostMap', 'must be an object of host → member id');
  const out = new Map<string, string>();
  for (const [rawHost, id] of Object.entries(map)) {
    const host = rawHost.toLowerCase();
    if (!HOSTNAME.test(host)) throw new LbInputError(`hostMap[${JSON.stringify(rawHost)}]`, 'must be a host name without port');
    if (typeof id !== 'string' || !/^[\x21-\x7e]{1,128}$/.test(id)) {
      throw new LbInputError(`hostMap[${JSON.stringify(rawHost)}]`, 'must name a member id');
    }
    if (out.has(host) && out.get(host) !== id) throw new LbInputError(`hostMap[${JSON.stringify(rawHost)}]`, 'listed twice with different members');
    out.set(host, id);
  }
  return out;
}

/** The host part of a Host header value, lowercased, without port. */
export function hostOnly(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const h = header.trim().toLowerCase();
  if (h.startsWith('[')) return h.slice(0, h.indexOf(']') + 1) || undefined;
  const colon = h.indexOf(':');
  return colon === -1 ? h : h.slice(0, colon);
}
