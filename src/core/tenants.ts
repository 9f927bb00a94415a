/**
 * The tenant model shared by the app file, the store, the controller and the API: a tenant's
 * states, which of them hold a seat, the rule for tenant names, and the host-name template
 * (`tenants.host: "${tenant}.labs.example.test"`).
 */

/**
 * Tenant states. A tenant is created `pending`; the controller reserves a seat for it
 * (`placing`), runs the role's `add` on the instance, routes its host and then reports it
 * `ready`. Seats are counted by the store under a lock on the instance (`reserveSeat`).
 */
export const TenantState = {
  /** Waiting for a seat: no instance has room (capacity is being built, or `max` is reached). Holds no seat. */
  pending: 'pending',
  /** A seat is reserved on `instanceId`; `add` runs (or waits for the instance to finish booting). */
  placing: 'placing',
  /** `add` succeeded and the host is routed: the tenant is served by `instanceId`. */
  ready: 'ready',
  /** `add` failed after every attempt, or the tenant could not be placed again; `reason` says why. Holds no seat. */
  failed: 'failed',
  /** `DELETE` asked: the host is unrouted, then `remove` runs; the seat is held until it has. */
  removing: 'removing',
  /** Being moved from `instanceId` to `targetInstanceId`: a seat is held on both until the move ends. */
  moving: 'moving',
  /** Gone; kept for history (its name and host may be used again). Holds no seat. */
  removed: 'removed',
} as const;
export type TenantState = (typeof TenantState)[keyof typeof TenantState];

export const TENANT_STATES: readonly TenantState[] = Object.values(TenantState);

/** States in which a tenant holds a seat on its instance (and, `moving`, on its target too). */
export const SEAT_HOLDING_STATES: ReadonlySet<TenantState> = new Set<TenantState>(['placing', 'ready', 'moving', 'removing']);

/** Whether a tenant in state `s` holds a seat on its instance. */
export function holdsSeat(s: TenantState): boolean {
  return SEAT_HOLDING_STATES.has(s);
}

/**
 * A tenant's name: one DNS label, lowercase (`lab-7`, `acme`, `42`). It becomes part of a host
 * name (`${tenant}.labs.example.test`) and the `TENANT_NAME` variable of the role's commands.
 */
export const TENANT_NAME = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
export const TENANT_NAME_RULE = 'lowercase letters, digits and "-", 1 to 63 characters, starting and ending with a letter or digit';

export function isTenantName(name: string): boolean {
  return TENANT_NAME.test(name);
}

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
/** The longest host name DNS carries (253 characters written without the trailing dot). */
export const MAX_HOST_LENGTH = 253;

/**
 * Whether `host` is a DNS host name as a load balancer matches it: lowercase labels of letters,
 * digits and inner `-`, 1–63 characters each, at most 253 in all, no trailing dot, at least two
 * labels (a bare `lab7` never reaches the balancer through DNS). Lowercase only: the balancers
 * compare host names as written, and a host map with `Lab7.x` and `lab7.x` would route twice.
 */
export function isHostName(host: string): boolean {
  if (host.length === 0 || host.length > MAX_HOST_LENGTH) return false;
  const labels = host.split('.');
  return labels.length >= 2 && labels.every((l) => LABEL.test(l));
}

const TEMPLATE_REF = /\$\{([^}]*)\}/g;

/**
 * The host of tenant `name` from the role's `tenants.host` template: every `${tenant}` replaced
 * by the name. Undefined when the result is not a valid host name ({@link isHostName}) — a long
 * name can push a label past 63 characters — so a sign-up with that name must be refused.
 */
export function tenantHost(template: string, name: string): string | undefined {
  const host = template.replace(TEMPLATE_REF, (text, ref: string) => (ref === 'tenant' ? name : text));
  return isHostName(host) ? host : undefined;
}

/** A tenant name used to check a host template when the app file is compiled. */
export const SAMPLE_TENANT_NAME = 'lab-7';

/**
 * Why a `tenants.host` template is unusable, or undefined when it is fine: it must use
 * `${tenant}` (else every tenant would get the same host), no other `${…}`, and render to a valid
 * host name for a sample tenant name. A longer name may still render too long a label; that
 * name is then refused at sign-up ({@link tenantHost} returns undefined).
 */
export function hostTemplateProblem(template: string): string | undefined {
  const refs = [...template.matchAll(TEMPLATE_REF)].map((m) => m[1] ?? '');
  const other = refs.find((r) => r !== 'tenant');
  if (other !== undefined) return `\${${other}} is not allowed: the only variable of a host template is \${tenant}`;
  if (refs.length === 0) return 'expected ${tenant} in the template (e.g. "${tenant}.labs.example.test"): without it every tenant gets the same host';
  const sample = template.replaceAll('${tenant}', SAMPLE_TENANT_NAME);
  if (!isHostName(sample)) {
    return `renders to ${JSON.stringify(sample)} for a tenant named ${JSON.stringify(SAMPLE_TENANT_NAME)}, not a valid host name ` +
      '(lowercase labels of letters, digits and inner "-", at most 63 characters each, at least two labels, 253 in all)';
  }
  return undefined;
}

/** Backoff between runs of a failing `add`: 1 s, doubling, at most 1 min. */
export const TENANT_RETRY_BACKOFF = { firstMs: 1000, maxMs: 60_000 } as const;

/**
 * How long to wait before the next run of `add` after `failedAttempts` failed runs (1, 2, …):
 * 1 s, 2 s, 4 s … capped at 1 min. The tenant is `failed` once `failedAttempts` reaches the
 * role's `tenants.maxAttempts` (retries + 1); this says nothing about that.
 */
export function tenantRetryDelayMs(failedAttempts: number): number {
  const n = Math.max(1, Math.floor(failedAttempts));
  return Math.min(TENANT_RETRY_BACKOFF.maxMs, TENANT_RETRY_BACKOFF.firstMs * 2 ** Math.min(n - 1, 30));
}
