/**
 * A small OpenStack client over `fetch`: Keystone v3 authentication (a password or an
 * application credential from the controller's OS_* variables), the token cached until shortly
 * before it expires and fetched again on a 401, and JSON calls to the services the token's
 * catalog names (compute, network, image), each answer checked against a schema.
 *
 * Why no package: npm has no maintained OpenStack client for Node. `pkgcloud` (2.2.0) is built on
 * the deprecated `request` and the AWS SDK v2 and pulls in a dozen clouds' dependencies;
 * `openstack-wrapper` (2.2.0) is also built on `request`; `openclient` depends on `async` and
 * `underscore` at any version. None has types, `fetch` or timeouts per call. The subset Drover
 * needs (one token, five Nova calls, two lookups) is smaller than any of them.
 *
 * Every answer is bounded (size) and validated (zod): a malformed or oversized answer is an
 * {@link OpenStackError} of kind `malformed`, never a crash. Errors say which service and call
 * failed and why, and whether trying again later may help ({@link OpenStackError.retryable}).
 */
import { z } from 'zod';

/** What went wrong, in Drover's words. */
export type OpenStackErrorKind =
  /** Keystone refused the credentials, or a service refused the token twice. */
  | 'auth'
  /** The project may not do this (policy). */
  | 'forbidden'
  /** Over a quota (instances, cores, RAM): may pass as other servers go. */
  | 'quota'
  /** Too many requests: try again after {@link OpenStackError.retryAfterMs}. */
  | 'rate_limit'
  /** The resource is busy (a task in progress, locked). */
  | 'conflict'
  | 'not_found'
  /** The cloud refused the request's content (a bad flavor, image, network, or setting). */
  | 'bad_request'
  /** 5xx from the cloud. */
  | 'server'
  /** No answer (refused, reset, timed out): the request may or may not have been carried out. */
  | 'network'
  /** An answer this client cannot read (not JSON, too large, not the expected shape). */
  | 'malformed'
  /** The controller's OS_* settings, or the catalog, lack what is needed. */
  | 'config';

export class OpenStackError extends Error {
  override readonly name = 'OpenStackError';
  constructor(
    readonly kind: OpenStackErrorKind,
    message: string,
    readonly details: {
      readonly status?: number;
      /** Whether the same call may succeed later (the controller backs off and asks again). */
      readonly retryable: boolean;
      /** From a `Retry-After` header. */
      readonly retryAfterMs?: number;
      readonly cause?: unknown;
    },
  ) {
    super(message, details.cause !== undefined ? { cause: details.cause } : undefined);
  }
  get status(): number | undefined {
    return this.details.status;
  }
  get retryable(): boolean {
    return this.details.retryable;
  }
  get retryAfterMs(): number | undefined {
    return this.details.retryAfterMs;
  }
}

// ---------------------------------------------------------------------------------------------
// Credentials

const INTERFACES = ['public', 'internal', 'admin'] as const;
const envText = (max: number) => z.string().trim().min(1).max(max).optional();

/** The OS_* variables an `openrc` file or `clouds.yaml` export sets; only these are read. */
const envSchema = z.object({
  OS_AUTH_URL: z.url({ protocol: /^https?$/, error: 'expected the Keystone URL, e.g. https://keystone.example.com:5000/v3' }).max(2048),
  OS_USERNAME: envText(255),
  OS_USER_ID: envText(255),
  OS_PASSWORD: z.string().min(1).max(4096).optional(),
  OS_PROJECT_NAME: envText(255),
  OS_PROJECT_ID: envText(255),
  OS_TENANT_NAME: envText(255),
  OS_TENANT_ID: envText(255),
  OS_USER_DOMAIN_NAME: envText(255),
  OS_USER_DOMAIN_ID: envText(255),
  OS_PROJECT_DOMAIN_NAME: envText(255),
  OS_PROJECT_DOMAIN_ID: envText(255),
  OS_REGION_NAME: envText(255),
  OS_INTERFACE: z.enum(INTERFACES).optional(),
  OS_APPLICATION_CREDENTIAL_ID: envText(255),
  OS_APPLICATION_CREDENTIAL_SECRET: z.string().min(1).max(4096).optional(),
});

export type OpenStackAuth =
  | {
      readonly method: 'password';
      readonly user: { readonly id: string } | { readonly name: string; readonly domain: { readonly id: string } | { readonly name: string } };
      readonly password: string;
      readonly project: { readonly id: string } | { readonly name: string; readonly domain: { readonly id: string } | { readonly name: string } };
    }
  | { readonly method: 'application_credential'; readonly id: string; readonly secret: string };

export interface OpenStackCredentials {
  /** Keystone's v3 root, without a trailing slash (`…/v3`). */
  readonly authUrl: string;
  readonly auth: OpenStackAuth;
  /** The default region (a role's `region:` wins). */
  readonly region?: string;
  /** Which of a service's endpoints to call. @default public */
  readonly interface: (typeof INTERFACES)[number];
}

/**
 * The credentials in the controller's environment (OS_* as an openrc file sets them). Throws an
 * {@link OpenStackError} of kind `config` naming the variable that is missing or wrong. Secrets
 * are never part of a message.
 */
export function credentialsFromEnv(env: NodeJS.ProcessEnv): OpenStackCredentials {
  const picked = Object.fromEntries(Object.keys(envSchema.shape).filter((k) => env[k] !== undefined && env[k] !== '').map((k) => [k, env[k]]));
  const parsed = envSchema.safeParse(picked);
  const bad = (variable: string, why: string) => new OpenStackError('config', `openstack: ${variable}: ${why}`, { retryable: false });
  if (!parsed.success) {
    const i = parsed.error.issues[0]!;
    const variable = String(i.path[0] ?? 'OS_*');
    throw bad(variable, i.code === 'invalid_type' && picked[variable] === undefined ? 'required (source your openrc file)' : i.message);
  }
  const e = parsed.data;
  let authUrl = e.OS_AUTH_URL.replace(/\/+$/, '');
  if (!/\/v3$/.test(authUrl)) authUrl = `${authUrl.replace(/\/v2\.0$/, '')}/v3`;
  const common = { authUrl, interface: e.OS_INTERFACE ?? 'public', ...(e.OS_REGION_NAME ? { region: e.OS_REGION_NAME } : {}) } as const;
  if (e.OS_APPLICATION_CREDENTIAL_ID !== undefined || e.OS_APPLICATION_CREDENTIAL_SECRET !== undefined) {
    if (!e.OS_APPLICATION_CREDENTIAL_ID) throw bad('OS_APPLICATION_CREDENTIAL_ID', 'required with OS_APPLICATION_CREDENTIAL_SECRET');
    if (!e.OS_APPLICATION_CREDENTIAL_SECRET) throw bad('OS_APPLICATION_CREDENTIAL_SECRET', 'required with OS_APPLICATION_CREDENTIAL_ID');
    return { ...common, auth: { method: 'application_credential', id: e.OS_APPLICATION_CREDENTIAL_ID, secret: e.OS_APPLICATION_CREDENTIAL_SECRET } };
  }
  if (e.OS_PASSWORD === undefined) throw bad('OS_PASSWORD', 'required (or OS_APPLICATION_CREDENTIAL_ID and _SECRET)');
  const domain = (id: string | undefined, name: string | undefined) => (id ? { id } : { name: name ?? 'Default' });
  const user = e.OS_USER_ID
    ? { id: e.OS_USER_ID }
    : e.OS_USERNAME
      ? { name: e.OS_USERNAME, domain: domain(e.OS_USER_DOMAIN_ID, e.OS_USER_DOMAIN_NAME) }
      : undefined;
  if (!user) throw bad('OS_USERNAME', 'required (or OS_USER_ID)');
  const projectId = e.OS_PROJECT_ID ?? e.OS_TENANT_ID;
  const projectName = e.OS_PROJECT_NAME ?? e.OS_TENANT_NAME;
  const project = projectId ? { id: projectId } : projectName ? { name: projectName, domain: domain(e.OS_PROJECT_DOMAIN_ID, e.OS_PROJECT_DOMAIN_NAME ?? e.OS_USER_DOMAIN_NAME) } : undefined;
  if (!project) throw bad('OS_PROJECT_NAME', 'required (or OS_PROJECT_ID): Drover makes servers in one project');
  return { ...common, auth: { method: 'password', user, password: e.OS_PASSWORD, project } };
}

// ---------------------------------------------------------------------------------------------
// Keystone

const catalogSchema = z
  .array(
    z.object({
      type: z.string().max(255),
      name: z.string().max(255).optional(),
      endpoints: z
        .array(z.object({ interface: z.string().max(32), region: z.string().max(255).nullish(), region_id: z.string().max(255).nullish(), url: z.url().max(2048) }))
        .max(1000),
    }),
  )
  .max(1000);

const tokenSchema = z.object({
  token: z.object({
    expires_at: z.string().max(64).regex(/^\d{4}-\d\d-\d\dT/, { error: 'expected an ISO 8601 time' }),
    issued_at: z.string().max(64).optional(),
    catalog: catalogSchema.optional(),
  }),
});

interface Token {
  readonly value: string;
  /** When to stop using it: somewhat before Keystone's expiry. */
  readonly refreshAt: number;
  readonly catalog: z.output<typeof catalogSchema>;
}

/** The service types Drover calls. */
export type OpenStackService = 'compute' | 'network' | 'image';

export interface OpenStackClientOptions {
  /** @default globalThis.fetch */
  readonly fetch?: typeof fetch;
  /** Each call gives up after this long. @default 30000 */
  readonly timeoutMs?: number;
  /** The largest answer read. @default 8 MiB */
  readonly maxResponseBytes?: number;
  /** @default Date.now */
  readonly now?: () => number;
}

export interface CallOptions<T> {
  readonly region?: string;
  readonly body?: unknown;
  /** The answer's shape (ignored for an answer without a body). */
  readonly schema?: z.ZodType<T>;
  /** A 404 answers `undefined` instead of throwing. */
  readonly notFoundOk?: boolean;
  /** The call in words, for messages: `create server drover-i-1`. */
  readonly what: string;
}

/** The longest wait before trying an idempotent call again. */
const RETRY_WAIT_MAX_MS = 5000;

/** A service refused the token once: fetch a new one and try again (once). */
class ReauthNeeded extends Error {}

const errorText = (err: unknown) => (err instanceof Error ? err.message : String(err));

/** `Retry-After` in seconds or as an HTTP date; bounded to an hour. */
function retryAfter(header: string | null, now: number): number | undefined {
  if (!header) return undefined;
  const s = Number(header);
  const ms = Number.isFinite(s) ? s * 1000 : Date.parse(header) - now;
  return Number.isFinite(ms) ? Math.max(0, Math.min(ms, 3_600_000)) : undefined;
}

/**
 * The message in an OpenStack error body: Nova `{"badRequest": {"message"}}`, Keystone
 * `{"error": {"message"}}`, Neutron `{"NeutronError": {"message"}}`; at most 500 characters.
 */
function faultMessage(text: string): string | undefined {
  try {
    const body: unknown = JSON.parse(text);
    if (body && typeof body === 'object') {
      for (const v of Object.values(body as Record<string, unknown>)) {
        if (v && typeof v === 'object' && typeof (v as { message?: unknown }).message === 'string') return (v as { message: string }).message.slice(0, 500);
      }
      const m = (body as { message?: unknown }).message;
      if (typeof m === 'string') return m.slice(0, 500);
    }
  } catch {
    // not JSON
  }
  const plain = text.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim();
  return plain ? plain.slice(0, 200) : undefined;
}

export class OpenStackClient {
  private token?: Token;
  private authenticating?: Promise<Token>;
  private readonly fetch: typeof fetch;
  private readonly timeoutMs: number;
  private readonly maxBytes: number;
  private readonly now: () => number;

  constructor(
    readonly credentials: OpenStackCredentials,
    opts: OpenStackClientOptions = {},
  ) {
    this.fetch = opts.fetch ?? globalThis.fetch;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.maxBytes = opts.maxResponseBytes ?? 8 * 1024 * 1024;
    this.now = opts.now ?? Date.now;
  }

  /** Forgets the token (the next call authenticates again). */
  forgetToken(): void {
    this.token = undefined;
  }

  /** A token, from the cache while it has more than a tenth of its life (at most a minute) left. */
  private async validToken(): Promise<Token> {
    if (this.token && this.now() < this.token.refreshAt) return this.token;
    this.authenticating ??= this.authenticate().finally(() => {
      this.authenticating = undefined;
    });
    return (this.token = await this.authenticating);
  }

  private async authenticate(): Promise<Token> {
    const a = this.credentials.auth;
    const identity =
      a.method === 'password'
        ? { methods: ['password'], password: { user: { ...a.user, password: a.password } } }
        : { methods: ['application_credential'], application_credential: { id: a.id, secret: a.secret } };
    // An application credential is scoped already; a scope with it is refused.
    const body = { auth: { identity, ...(a.method === 'password' ? { scope: { project: a.project } } : {}) } };
    const res = await this.send('POST', `${this.credentials.authUrl}/auth/tokens`, undefined, body, 'authenticate with Keystone');
    const text = await this.read(res, 'authenticate with Keystone');
    if (res.status === 401 || res.status === 403) {
      const who = a.method === 'password' ? 'OS_USERNAME/OS_USER_ID, OS_PASSWORD, OS_PROJECT_NAME/OS_PROJECT_ID and their domains' : 'OS_APPLICATION_CREDENTIAL_ID and OS_APPLICATION_CREDENTIAL_SECRET';
      throw new OpenStackError('auth', `openstack: Keystone at ${this.credentials.authUrl} refused the credentials (${res.status}${faultMessage(text) ? `: ${faultMessage(text)}` : ''}); check ${who}`, { status: res.status, retryable: false });
    }
    if (res.status !== 201 && res.status !== 200) throw this.httpError(res, text, 'authenticate with Keystone');
    const value = res.headers.get('x-subject-token');
    if (!value || value.length > 16_384 || !/^[\x21-\x7e]+$/.test(value)) {
      throw new OpenStackError('malformed', 'openstack: Keystone answered without a usable X-Subject-Token header', { status: res.status, retryable: true });
    }
    const parsed = this.parse(text, tokenSchema, 'authenticate with Keystone');
    const expires = Date.parse(parsed.token.expires_at);
    const issued = parsed.token.issued_at ? Date.parse(parsed.token.issued_at) : this.now();
    if (!Number.isFinite(expires)) throw new OpenStackError('malformed', `openstack: Keystone's token has an unreadable expires_at ${JSON.stringify(parsed.token.expires_at)}`, { retryable: true });
    const life = expires - (Number.isFinite(issued) ? issued : this.now());
    const margin = Math.min(60_000, Math.max(0, life / 10));
    if (!parsed.token.catalog || parsed.token.catalog.length === 0) {
      throw new OpenStackError('config', 'openstack: the token has no service catalog (is it scoped to a project? set OS_PROJECT_NAME or OS_PROJECT_ID)', { retryable: false });
    }
    return { value, refreshAt: expires - margin, catalog: parsed.token.catalog };
  }

  /** The URL of a service in a region, from the token's catalog (trailing slash removed). */
  async endpoint(service: OpenStackService, region?: string): Promise<string> {
    const token = await this.validToken();
    return this.endpointIn(token, service, region ?? this.credentials.region);
  }

  private endpointIn(token: Token, service: OpenStackService, region: string | undefined): string {
    const entry = token.catalog.find((s) => s.type === service);
    if (!entry) throw new OpenStackError('config', `openstack: the catalog has no ${service} service`, { retryable: false });
    const iface = this.credentials.interface;
    const candidates = entry.endpoints.filter((e) => e.interface === iface);
    const inRegion = region === undefined ? candidates : candidates.filter((e) => e.region_id === region || e.region === region);
    const regions = [...new Set(candidates.map((e) => e.region_id ?? e.region ?? '?'))];
    if (inRegion.length === 0) {
      throw new OpenStackError('config', `openstack: no ${iface} ${service} endpoint${region !== undefined ? ` in region ${region}` : ''} (the catalog has: ${regions.join(', ') || 'none'})`, { retryable: false });
    }
    if (region === undefined && regions.length > 1) {
      throw new OpenStackError('config', `openstack: the ${service} service is in several regions (${regions.join(', ')}): set OS_REGION_NAME or the provider's region:`, { retryable: false });
    }
    return inRegion[0]!.url.replace(/\/+$/, '');
  }

  /**
   * One JSON call to a service: `path` is relative to its catalog endpoint. A 401 fetches a new
   * token and tries once more (a token revoked or expired early). A GET or DELETE (idempotent)
   * refused as rate limited or failed with a 5xx is tried twice more, after the `Retry-After` the
   * cloud asked for (at most {@link RETRY_WAIT_MAX_MS}; 0.5 s, then 1 s without one); a POST never
   * is, since it may have been carried out. Errors are {@link OpenStackError}s.
   */
  async call<T>(service: OpenStackService, method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, opts: CallOptions<T>): Promise<T | undefined> {
    let reauthed = false;
    for (let retry = 0; ; retry++) {
      try {
        return await this.once(service, method, path, opts, reauthed);
      } catch (err) {
        if (err instanceof ReauthNeeded) {
          reauthed = true;
          retry--;
          continue;
        }
        const again = (method === 'GET' || method === 'DELETE') && err instanceof OpenStackError && (err.kind === 'rate_limit' || err.kind === 'server') && retry < 2;
        if (!again) throw err;
        await new Promise((r) => setTimeout(r, Math.min(err.retryAfterMs ?? 500 * 2 ** retry, RETRY_WAIT_MAX_MS)));
      }
    }
  }

  private async once<T>(service: OpenStackService, method: string, path: string, opts: CallOptions<T>, reauthed: boolean): Promise<T | undefined> {
    const token = await this.validToken();
    const url = `${this.endpointIn(token, service, opts.region ?? this.credentials.region)}${path}`;
    const res = await this.send(method, url, token.value, opts.body, opts.what);
    const text = await this.read(res, opts.what);
    if (res.status === 401 && !reauthed) {
      if (this.token === token) this.token = undefined;
      throw new ReauthNeeded();
    }
    if (res.status === 404 && opts.notFoundOk) return undefined;
    if (res.status < 200 || res.status >= 300) throw this.httpError(res, text, opts.what);
    if (!opts.schema || text.trim() === '') return undefined;
    return this.parse(text, opts.schema, opts.what);
  }

  private async send(method: string, url: string, token: string | undefined, body: unknown, what: string): Promise<Response> {
    try {
      return await this.fetch(url, {
        method,
        headers: {
          accept: 'application/json',
          'user-agent': 'drover',
          ...(token !== undefined ? { 'x-auth-token': token } : {}),
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(this.timeoutMs),
        redirect: 'error',
      });
    } catch (err) {
      const timedOut = err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError');
      throw new OpenStackError('network', `openstack: ${what}: ${timedOut ? `no answer within ${this.timeoutMs} ms` : `no answer (${errorText((err as { cause?: unknown }).cause ?? err)})`}`, { retryable: true, cause: err });
    }
  }

  /** The body as text, refused past {@link OpenStackClientOptions.maxResponseBytes}. */
  private async read(res: Response, what: string): Promise<string> {
    const declared = Number(res.headers.get('content-length'));
    const tooLarge = () => new OpenStackError('malformed', `openstack: ${what}: the answer is larger than ${this.maxBytes} bytes`, { status: res.status, retryable: true });
    if (Number.isFinite(declared) && declared > this.maxBytes) {
      await res.body?.cancel().catch(() => undefined);
      throw tooLarge();
    }
    if (!res.body) return '';
    const chunks: Uint8Array[] = [];
    let size = 0;
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    try {
      for (;;) {
        const { done, value } = (await reader.read()) as { done: boolean; value?: Uint8Array };
        if (done || !value) break;
        size += value.byteLength;
        if (size > this.maxBytes) {
          await reader.cancel().catch(() => undefined);
          throw tooLarge();
        }
        chunks.push(value);
      }
    } catch (err) {
      if (err instanceof OpenStackError) throw err;
      throw new OpenStackError('network', `openstack: ${what}: the answer broke off (${errorText(err)})`, { status: res.status, retryable: true, cause: err });
    }
    return Buffer.concat(chunks).toString('utf8');
  }

  private parse<T>(text: string, schema: z.ZodType<T>, what: string): T {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new OpenStackError('malformed', `openstack: ${what}: the answer is not JSON (${text.slice(0, 80).replace(/\s+/g, ' ')})`, { retryable: true });
    }
    const r = schema.safeParse(json);
    if (!r.success) {
      const i = r.error.issues[0]!;
      throw new OpenStackError('malformed', `openstack: ${what}: unexpected answer at ${i.path.join('.') || '(top)'}: ${i.message}`, { retryable: true });
    }
    return r.data;
  }

  private httpError(res: Response, text: string, what: string): OpenStackError {
    const status = res.status;
    const said = faultMessage(text);
    const after = retryAfter(res.headers.get('retry-after'), this.now());
    const base = { status, ...(after !== undefined ? { retryAfterMs: after } : {}) };
    const msg = (why: string) => `openstack: ${what}: ${why}${said ? `: ${said}` : ''}`;
    // Nova says "Quota exceeded" with a 403 (or 413 before microversion 2.x).
    if ((status === 403 || status === 413) && /quota/i.test(said ?? '')) return new OpenStackError('quota', msg(`over the project's quota (${status})`), { ...base, retryable: true });
    if (status === 413 || status === 429) return new OpenStackError('rate_limit', msg(`rate limited (${status}${after !== undefined ? `, retry after ${Math.ceil(after / 1000)} s` : ''})`), { ...base, retryable: true });
    if (status === 401) return new OpenStackError('auth', msg('the token was refused twice (401)'), { ...base, retryable: false });
    if (status === 403) return new OpenStackError('forbidden', msg('forbidden by the cloud\'s policy (403)'), { ...base, retryable: false });
    if (status === 404) return new OpenStackError('not_found', msg('not found (404)'), { ...base, retryable: false });
    if (status === 409) return new OpenStackError('conflict', msg('conflict (409)'), { ...base, retryable: true });
    if (status >= 500) return new OpenStackError('server', msg(`the cloud failed (${status})`), { ...base, retryable: true });
    return new OpenStackError('bad_request', msg(`refused (${status})`), { ...base, retryable: false });
  }
}
