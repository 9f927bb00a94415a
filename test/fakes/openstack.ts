/**
 * A fake OpenStack cloud for tests: one HTTP server on a free loopback port speaking the subset of
 * Keystone v3, Nova, Glance and Neutron that the openstack provider uses. It is a test fixture,
 * not a product feature, and stands in only for what cannot run here (a cloud).
 *
 * What it checks, strictly: the password or application credential at Keystone; an
 * `X-Auth-Token` on every other call that it issued and that has not expired; every field of a
 * server create (unknown fields refused, the flavor, image, network, key pair and security groups
 * must exist, the `drover:*` metadata present, user data valid base64 within Nova's limit).
 * What it cannot prove: that a real Nova agrees on the details it does not model (microversions,
 * policies, scheduling), which only the live suite (test/provider-openstack-live.test.ts) shows.
 *
 * Error injection: rate limits (429 with Retry-After), a loaded API (503), quota exceeded (403), no valid host (the
 * server goes to ERROR), a server stuck in BUILD, a create whose answer is lost (the server is
 * made, the connection reset), a malformed answer, and every token expiring at once. Every call
 * lands in {@link FakeOpenStack.log}, which tests assert on.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';

export interface FakeServer {
  readonly id: string;
  readonly name: string;
  status: 'BUILD' | 'ACTIVE' | 'ERROR';
  taskState: string | null;
  readonly metadata: Record<string, string>;
  /** The user data, decoded. */
  readonly userData?: string;
  readonly flavorId: string;
  readonly imageId: string;
  readonly networkId: string;
  readonly keyName?: string;
  readonly securityGroups: readonly string[];
  readonly availabilityZone?: string;
  readonly created: string;
  addresses: Record<string, { addr: string; version: number; 'OS-EXT-IPS:type': string }[]>;
  fault?: { code: number; message: string };
  /** Set when a test adds a server by hand (another controller's, or one Drover never made). */
  readonly foreign?: boolean;
}

/** Boots a server's machine once it is ACTIVE and ends it when deleted (e.g. a real agent from its user data). */
export interface FakeBoot {
  boot(server: FakeServer): Promise<void> | void;
  halt(server: FakeServer): Promise<void> | void;
}

export interface FakeOpenStackOptions {
  /** @default 3600000 */
  readonly tokenTtlMs?: number;
  /** BUILD → ACTIVE. @default 300 */
  readonly buildMs?: number;
  /** A delete takes this long (task_state `deleting` meanwhile). @default 100 */
  readonly deleteMs?: number;
  /** The fixed address of the n-th server (from 1). @default 10.0.x.y */
  readonly address?: (n: number) => string;
  readonly boot?: FakeBoot;
}

export interface Op {
  readonly at: number;
  readonly method: string;
  readonly path: string;
  readonly status: number;
  /** `auth`, `server.create`, `server.get`, `server.list`, `server.delete`, `flavor.list`, `image.list`, `network.get`, `network.list`, `unauthorized`, `refused`. */
  readonly op: string;
  readonly server?: string;
}

const REGION = 'RegionOne';
const PROJECT = { id: 'f00dfacef00dfacef00dfacef00dface', name: 'drover-test', domain: 'Default' };
const USER = { id: 'u5e7u5e7u5e7u5e7u5e7u5e7u5e7u5e7', name: 'drover', domain: 'Default' };
const APP_CRED = { id: 'ac1ac1ac1ac1ac1ac1ac1ac1ac1ac1ac', secret: randomBytes(16).toString('hex') };
export const FLAVORS = [
  { id: '1', name: 'm1.tiny' },
  { id: '2', name: 'm1.small' },
  { id: 'c0ffee00-0000-4000-8000-000000000003', name: 'm1.medium' },
];
export const IMAGES = [
  { id: '6e2b0c39-8d43-4c6c-9a0e-2f1b3f6f7a11', name: 'debian-12', status: 'active' },
  { id: '0a7c0c39-8d43-4c6c-9a0e-2f1b3f6f7a12', name: 'dup-image', status: 'active' },
  { id: '0a7c0c39-8d43-4c6c-9a0e-2f1b3f6f7a13', name: 'dup-image', status: 'active' },
];
export const NETWORKS = [
  { id: '3b9e1e52-6a0e-4e0a-9d7e-6a1f0c2d4e51', name: 'private' },
  { id: '3b9e1e52-6a0e-4e0a-9d7e-6a1f0c2d4e52', name: 'public' },
];
const KEYPAIRS = ['ops'];
const SECURITY_GROUPS = ['default', 'drover'];
const ZONES = ['nova'];

const base64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const createSchema = z.strictObject({
  server: z.strictObject({
    name: z.string().min(1).max(255),
    flavorRef: z.string().min(1).max(255),
    imageRef: z.string().min(1).max(255),
    networks: z.array(z.strictObject({ uuid: z.string().min(1) })).min(1).max(16),
    key_name: z.string().min(1).max(255).optional(),
    security_groups: z.array(z.strictObject({ name: z.string().min(1).max(255) })).max(10).optional(),
    availability_zone: z.string().min(1).max(255).optional(),
    metadata: z.record(z.string().min(1).max(255), z.string().max(255)).refine((m) => Object.keys(m).length <= 128, 'Quota exceeded for metadata items'),
    user_data: z.string().max(65_535).regex(base64, 'user_data is not valid base64').optional(),
  }),
});
const authSchema = z.strictObject({
  auth: z.strictObject({
    identity: z.union([
      z.strictObject({
        methods: z.tuple([z.literal('password')]),
        password: z.strictObject({
          user: z.union([
            z.strictObject({ id: z.string(), password: z.string() }),
            z.strictObject({ name: z.string(), domain: z.union([z.strictObject({ id: z.string() }), z.strictObject({ name: z.string() })]), password: z.string() }),
          ]),
        }),
      }),
      z.strictObject({ methods: z.tuple([z.literal('application_credential')]), application_credential: z.strictObject({ id: z.string(), secret: z.string() }) }),
    ]),
    scope: z
      .strictObject({
        project: z.union([z.strictObject({ id: z.string() }), z.strictObject({ name: z.string(), domain: z.union([z.strictObject({ id: z.string() }), z.strictObject({ name: z.string() })]) })]),
      })
      .optional(),
  }),
});

const DROVER_META = ['drover:app', 'drover:role', 'drover:instance', 'drover:controller'];

export class FakeOpenStack {
  readonly log: Op[] = [];
  readonly servers = new Map<string, FakeServer>();
  /** The password of the one user. */
  readonly password = randomBytes(12).toString('hex');
  private readonly tokens = new Map<string, number>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly faults = { rateLimit: 0, retryAfterS: 1, quota: 0, noValidHost: 0, stuck: 0, dropCreate: 0, malformed: 0, serverError: 0, unavailable: 0 };
  private made = 0;
  private addressed = 0;
  private http?: HttpServer;
  url = '';

  constructor(private readonly opts: FakeOpenStackOptions = {}) {}

  async start(): Promise<this> {
    const http = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) this.json(res, 500, { computeFault: { code: 500, message: `fake: ${err instanceof Error ? err.message : String(err)}` } });
      });
    });
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    this.http = http;
    this.url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
    return this;
  }

  /** OS_* variables as an openrc file would set them for the password user. */
  get env(): Record<string, string> {
    return {
      OS_AUTH_URL: `${this.url}/v3`,
      OS_USERNAME: USER.name,
      OS_PASSWORD: this.password,
      OS_PROJECT_NAME: PROJECT.name,
      OS_USER_DOMAIN_NAME: USER.domain,
      OS_PROJECT_DOMAIN_NAME: PROJECT.domain,
      OS_REGION_NAME: REGION,
    };
  }

  /** OS_* variables for an application credential. */
  get appCredentialEnv(): Record<string, string> {
    return { OS_AUTH_URL: `${this.url}/v3`, OS_APPLICATION_CREDENTIAL_ID: APP_CRED.id, OS_APPLICATION_CREDENTIAL_SECRET: APP_CRED.secret, OS_REGION_NAME: REGION };
  }

  /** The next `n` server creates are refused with 429 and `Retry-After: retryAfterS`. */
  rateLimit(n: number, retryAfterS = 1): void {
    this.faults.rateLimit = n;
    this.faults.retryAfterS = retryAfterS;
  }
  /** The next `n` server creates are refused as over the instance quota (403). */
  quotaExceeded(n = 1): void {
    this.faults.quota = n;
  }
  /** The next `n` servers made go to ERROR ("No valid host was found"). */
  noValidHost(n = 1): void {
    this.faults.noValidHost = n;
  }
  /** The next `n` servers made stay in BUILD. */
  stuckInBuild(n = 1): void {
    this.faults.stuck = n;
  }
  /** The next `n` server creates are carried out, and their answer lost (the connection reset). */
  dropCreateAnswer(n = 1): void {
    this.faults.dropCreate = n;
  }
  /** The next `n` calls to Nova (other than create) answer HTML instead of JSON. */
  malformed(n = 1): void {
    this.faults.malformed = n;
  }
  /** The next `n` calls to Nova other than a create answer 503 with `Retry-After: 0` (a loaded API). */
  unavailable(n = 1): void {
    this.faults.unavailable = n;
  }
  /** The next `n` server creates fail with a 500 before doing anything. */
  serverError(n = 1): void {
    this.faults.serverError = n;
  }
  /** Every token issued so far stops being valid (a token expiring mid-run, or revoked). */
  expireTokens(): void {
    this.tokens.clear();
  }

  /** A server Drover did not make (or another controller's), for the filters. */
  addForeign(name: string, metadata: Record<string, string>): FakeServer {
    const s = this.newServer({ name, flavorId: '1', imageId: IMAGES[0]!.id, networkId: NETWORKS[0]!.id, metadata, securityGroups: ['default'], foreign: true });
    s.status = 'ACTIVE';
    return s;
  }

  /** Servers of an instance id (by their `drover:instance` metadata). */
  serversOf(instanceId: string): FakeServer[] {
    return [...this.servers.values()].filter((s) => s.metadata['drover:instance'] === instanceId);
  }

  count(op: string): number {
    return this.log.filter((o) => o.op === op).length;
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    const halting = [...this.servers.values()].filter((s) => s.status === 'ACTIVE' && !s.foreign).map(async (s) => this.opts.boot?.halt(s));
    await Promise.allSettled(halting);
    this.servers.clear();
    const http = this.http;
    if (http) {
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    }
  }

  // --------------------------------------------------------------------------------------------

  private later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    t.unref();
    this.timers.add(t);
  }

  private json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    const text = body === undefined ? '' : JSON.stringify(body);
    res.writeHead(status, { ...(text ? { 'content-type': 'application/json' } : {}), ...headers });
    res.end(text);
  }

  private record(req: IncomingMessage, status: number, op: string, server?: string): void {
    this.log.push({ at: Date.now(), method: req.method ?? '', path: (req.url ?? '').split('?')[0]!, status, op, ...(server !== undefined ? { server } : {}) });
  }

  private async body(req: IncomingMessage): Promise<unknown> {
    if (!(req.headers['content-type'] ?? '').startsWith('application/json')) throw new Refusal(415, 'expected Content-Type: application/json');
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req as AsyncIterable<Buffer>) {
      size += c.length;
      if (size > 1024 * 1024) throw new Refusal(413, 'request body too large');
      chunks.push(c);
    }
    try {
      return JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      throw new Refusal(400, 'malformed JSON');
    }
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.url);
    const path = url.pathname;
    const method = req.method ?? 'GET';
    try {
      if (method === 'POST' && path === '/v3/auth/tokens') return await this.auth(req, res);
      const token = req.headers['x-auth-token'];
      const expiry = typeof token === 'string' ? this.tokens.get(token) : undefined;
      if (expiry === undefined || expiry <= Date.now()) {
        if (typeof token === 'string') this.tokens.delete(token);
        this.record(req, 401, 'unauthorized');
        return this.json(res, 401, { error: { code: 401, title: 'Unauthorized', message: 'The request you have made requires authentication.' } });
      }
      if (path.startsWith('/compute/v2.1/')) return await this.nova(req, res, method, path.slice('/compute/v2.1'.length), url.searchParams);
      if (method === 'GET' && path === '/image/v2/images') {
        const name = url.searchParams.get('name');
        this.record(req, 200, 'image.list');
        return this.json(res, 200, { images: IMAGES.filter((i) => name === null || i.name === name) });
      }
      if (method === 'GET' && path === '/network/v2.0/networks') {
        const name = url.searchParams.get('name');
        this.record(req, 200, 'network.list');
        return this.json(res, 200, { networks: NETWORKS.filter((n) => name === null || n.name === name) });
      }
      const net = /^\/network\/v2\.0\/networks\/([^/]+)$/.exec(path);
      if (method === 'GET' && net) {
        const n = NETWORKS.find((x) => x.id === net[1]);
        this.record(req, n ? 200 : 404, 'network.get');
        return n ? this.json(res, 200, { network: n }) : this.json(res, 404, { NeutronError: { type: 'NetworkNotFound', message: `Network ${net[1]} could not be found.`, detail: '' } });
      }
      throw new Refusal(404, `no route ${method} ${path}`);
    } catch (err) {
      if (!(err instanceof Refusal)) throw err;
      this.record(req, err.status, 'refused');
      this.json(res, err.status, { [err.status === 404 ? 'itemNotFound' : 'badRequest']: { code: err.status, message: err.message } });
    }
  }

  private async auth(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const parsed = authSchema.safeParse(await this.body(req));
    if (!parsed.success) throw new Refusal(400, `malformed auth request: ${parsed.error.issues[0]?.message ?? ''}`);
    const { identity, scope } = parsed.data.auth;
    let ok: boolean;
    if ('password' in identity) {
      const u = identity.password.user;
      const userOk = 'id' in u ? u.id === USER.id : u.name === USER.name && ('id' in u.domain ? u.domain.id === 'default' : u.domain.name === USER.domain);
      const p = scope?.project;
      const projectOk = p !== undefined && ('id' in p ? p.id === PROJECT.id : p.name === PROJECT.name && ('id' in p.domain ? p.domain.id === 'default' : p.domain.name === PROJECT.domain));
      ok = userOk && u.password === this.password && projectOk;
    } else {
      // An application credential carries its own scope: a scope beside it is refused.
      if (scope !== undefined) throw new Refusal(400, 'an application credential takes no scope');
      ok = identity.application_credential.id === APP_CRED.id && identity.application_credential.secret === APP_CRED.secret;
    }
    if (!ok) {
      this.record(req, 401, 'auth.refused');
      return this.json(res, 401, { error: { code: 401, title: 'Unauthorized', message: 'The request you have made requires authentication.' } });
    }
    const token = `gAAAA${randomBytes(24).toString('base64url')}`;
    const now = Date.now();
    const expires = now + (this.opts.tokenTtlMs ?? 3_600_000);
    this.tokens.set(token, expires);
    this.record(req, 201, 'auth');
    const ep = (path: string) => ['public', 'internal', 'admin'].map((iface) => ({ id: randomUUID(), interface: iface, region: REGION, region_id: REGION, url: `${this.url}${path}` }));
    this.json(
      res,
      201,
      {
        token: {
          methods: [Object.keys(identity).includes('password') ? 'password' : 'application_credential'],
          issued_at: new Date(now).toISOString().replace('Z', '000Z'),
          expires_at: new Date(expires).toISOString().replace('Z', '000Z'),
          project: { id: PROJECT.id, name: PROJECT.name, domain: { id: 'default', name: PROJECT.domain } },
          user: { id: USER.id, name: USER.name, domain: { id: 'default', name: USER.domain } },
          catalog: [
            { type: 'identity', name: 'keystone', endpoints: ep('/v3') },
            { type: 'compute', name: 'nova', endpoints: ep('/compute/v2.1') },
            { type: 'network', name: 'neutron', endpoints: ep('/network') },
            { type: 'image', name: 'glance', endpoints: ep('/image') },
          ],
        },
      },
      { 'x-subject-token': token },
    );
  }

  private async nova(req: IncomingMessage, res: ServerResponse, method: string, path: string, query: URLSearchParams): Promise<void> {
    if (method === 'POST' && path === '/servers') return this.createServer(req, res);
    if (this.faults.unavailable > 0) {
      this.faults.unavailable--;
      this.record(req, 503, 'unavailable');
      return this.json(res, 503, { computeFault: { code: 503, message: 'Service Unavailable' } }, { 'retry-after': '0' });
    }
    if (this.faults.malformed > 0) {
      this.faults.malformed--;
      this.record(req, 200, 'malformed');
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<html><body>502 Bad Gateway</body></html>');
      return;
    }
    if (method === 'GET' && path === '/flavors') {
      this.record(req, 200, 'flavor.list');
      return this.json(res, 200, { flavors: this.page(FLAVORS, query) });
    }
    if (method === 'GET' && path === '/servers/detail') {
      const name = query.get('name');
      if (name !== null && name.length > 255) throw new Refusal(400, 'name filter too long');
      const re = name !== null ? new RegExp(name) : undefined;
      // Nova lists the newest first.
      const all = [...this.servers.values()].filter((s) => !re || re.test(s.name)).reverse();
      this.record(req, 200, 'server.list');
      return this.json(res, 200, { servers: this.page(all, query).map((s) => this.view(s)) });
    }
    const one = /^\/servers\/([^/]+)$/.exec(path);
    if (one) {
      const s = this.servers.get(one[1]!);
      if (method === 'GET') {
        this.record(req, s ? 200 : 404, 'server.get', one[1]);
        return s ? this.json(res, 200, { server: this.view(s) }) : this.json(res, 404, { itemNotFound: { code: 404, message: 'Instance could not be found' } });
      }
      if (method === 'DELETE') {
        this.record(req, s ? 204 : 404, 'server.delete', one[1]);
        if (!s) return this.json(res, 404, { itemNotFound: { code: 404, message: 'Instance could not be found' } });
        if (s.taskState !== 'deleting') {
          s.taskState = 'deleting';
          this.later(this.opts.deleteMs ?? 100, () => {
            this.servers.delete(s.id);
            if (s.status === 'ACTIVE' && !s.foreign) void Promise.resolve(this.opts.boot?.halt(s)).catch(() => undefined);
          });
        }
        return this.json(res, 204, undefined);
      }
    }
    throw new Refusal(404, `no route ${method} /compute/v2.1${path}`);
  }

  /** Nova's paging: `limit` (at most 1000) after `marker` (an id that must exist). */
  private page<T extends { id: string }>(all: readonly T[], query: URLSearchParams): T[] {
    const limit = Number(query.get('limit') ?? '1000');
    if (!Number.isInteger(limit) || limit < 0 || limit > 1000) throw new Refusal(400, `invalid limit ${query.get('limit')}`);
    const marker = query.get('marker');
    let from = 0;
    if (marker !== null) {
      const k = all.findIndex((x) => x.id === marker);
      if (k < 0) throw new Refusal(400, `marker [${marker}] not found`);
      from = k + 1;
    }
    return all.slice(from, from + limit);
  }

  private async createServer(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await this.body(req);
    if (this.faults.rateLimit > 0) {
      this.faults.rateLimit--;
      this.record(req, 429, 'server.create.limited');
      return this.json(res, 429, { overLimit: { code: 429, message: 'This request was rate-limited.', retryAfter: String(this.faults.retryAfterS) } }, { 'retry-after': String(this.faults.retryAfterS) });
    }
    if (this.faults.quota > 0) {
      this.faults.quota--;
      this.record(req, 403, 'server.create.quota');
      return this.json(res, 403, { forbidden: { code: 403, message: 'Quota exceeded for instances: Requested 1, but already used 10 of 10 instances' } });
    }
    if (this.faults.serverError > 0) {
      this.faults.serverError--;
      this.record(req, 500, 'server.create.failed');
      return this.json(res, 500, { computeFault: { code: 500, message: 'Unexpected API Error.' } });
    }
    const parsed = createSchema.safeParse(body);
    if (!parsed.success) {
      const i = parsed.error.issues[0]!;
      throw new Refusal(400, `Invalid input for field/attribute ${i.path.join('.')}: ${i.message}`);
    }
    const s = parsed.data.server;
    const flavor = FLAVORS.find((f) => f.id === s.flavorRef);
    if (!flavor) throw new Refusal(400, `Flavor ${s.flavorRef} could not be found.`);
    if (!IMAGES.some((i) => i.id === s.imageRef)) throw new Refusal(400, `Can not find requested image`);
    const net = s.networks[0]!;
    if (s.networks.length !== 1 || !NETWORKS.some((n) => n.id === net.uuid)) throw new Refusal(400, `Network ${net.uuid} could not be found.`);
    if (s.key_name !== undefined && !KEYPAIRS.includes(s.key_name)) throw new Refusal(400, `Invalid key_name provided.`);
    for (const g of s.security_groups ?? []) if (!SECURITY_GROUPS.includes(g.name)) throw new Refusal(400, `Security group ${g.name} not found for project ${PROJECT.id}.`);
    if (s.availability_zone !== undefined && !ZONES.includes(s.availability_zone)) throw new Refusal(400, `The requested availability zone is not available`);
    for (const k of DROVER_META) if (s.metadata[k] === undefined) throw new Refusal(400, `fake: metadata ${k} is missing (Drover tags every server)`);
    if (s.name !== `drover-${s.metadata['drover:instance']}`) throw new Refusal(400, `fake: the name ${s.name} does not match drover:instance`);
    const userData = s.user_data !== undefined ? Buffer.from(s.user_data, 'base64').toString('utf8') : undefined;
    const server = this.newServer({
      name: s.name, flavorId: flavor.id, imageId: s.imageRef, networkId: net.uuid, metadata: s.metadata,
      securityGroups: (s.security_groups ?? [{ name: 'default' }]).map((g) => g.name),
      ...(s.key_name !== undefined ? { keyName: s.key_name } : {}),
      ...(s.availability_zone !== undefined ? { availabilityZone: s.availability_zone } : {}),
      ...(userData !== undefined ? { userData } : {}),
    });
    const fate = this.faults.noValidHost > 0 ? (this.faults.noValidHost--, 'error') : this.faults.stuck > 0 ? (this.faults.stuck--, 'stuck') : 'boot';
    if (fate !== 'stuck') {
      this.later(this.opts.buildMs ?? 300, () => {
        if (!this.servers.has(server.id) || server.taskState === 'deleting') return;
        if (fate === 'error') {
          server.status = 'ERROR';
          server.taskState = null;
          server.fault = { code: 500, message: 'No valid host was found. There are not enough hosts available.' };
          return;
        }
        const netName = NETWORKS.find((n) => n.id === server.networkId)!.name;
        server.addresses = { [netName]: [{ addr: this.addressOf(server), version: 4, 'OS-EXT-IPS:type': 'fixed' }] };
        server.status = 'ACTIVE';
        server.taskState = null;
        void Promise.resolve(this.opts.boot?.boot(server)).catch(() => undefined);
      });
    }
    if (this.faults.dropCreate > 0) {
      this.faults.dropCreate--;
      this.record(req, 0, 'server.create.dropped', server.id);
      req.socket.destroy();
      return;
    }
    this.record(req, 202, 'server.create', server.id);
    this.json(res, 202, { server: { id: server.id, links: [], OS_DCF_diskConfig: 'MANUAL', security_groups: server.securityGroups.map((name) => ({ name })), adminPass: randomBytes(9).toString('base64') } });
  }

  private addressOf(_server: FakeServer): string {
    const n = ++this.addressed;
    return this.opts.address?.(n) ?? `10.0.${Math.floor(n / 250)}.${(n % 250) + 2}`;
  }

  private newServer(f: Omit<FakeServer, 'id' | 'status' | 'taskState' | 'created' | 'addresses'>): FakeServer {
    this.made++;
    const created = new Date(Date.now() + this.made).toISOString().replace(/\.\d+Z$/, 'Z');
    const server: FakeServer = { ...f, id: randomUUID(), status: 'BUILD', taskState: 'spawning', created, addresses: {} };
    this.servers.set(server.id, server);
    return server;
  }

  /** A server as Nova's `GET /servers/{id}` shows it (the fields Drover reads, and some it does not). */
  private view(s: FakeServer): Record<string, unknown> {
    return {
      id: s.id, name: s.name, status: s.status, metadata: s.metadata, addresses: s.addresses, created: s.created, updated: s.created,
      tenant_id: PROJECT.id, user_id: USER.id, hostId: '', key_name: s.keyName ?? null,
      flavor: { id: s.flavorId, links: [] }, image: { id: s.imageId, links: [] },
      'OS-EXT-STS:task_state': s.status === 'BUILD' && s.taskState === 'spawning' ? 'spawning' : s.taskState === 'deleting' ? 'deleting' : null,
      'OS-EXT-STS:vm_state': s.status.toLowerCase(), 'OS-EXT-AZ:availability_zone': s.availabilityZone ?? 'nova',
      security_groups: s.securityGroups.map((name) => ({ name })),
      ...(s.fault ? { fault: { ...s.fault, created: s.created } } : {}),
    };
  }
}

class Refusal extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export async function startFakeOpenStack(opts: FakeOpenStackOptions = {}): Promise<FakeOpenStack> {
  return new FakeOpenStack(opts).start();
}
