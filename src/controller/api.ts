/**
 * The REST API, `/v1`. Built by {@link buildApi} so tests drive it with `inject()`.
 * Every route but `/v1/health` (and the agents' WebSocket, which has its own join tokens) needs
 * `Authorization: Bearer <token>`; without it the answer is 401 and nothing else, not even
 * whether the route exists.
 */
import { timingSafeEqual } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import { APP_FILE_LIMITS, apiProof, appFileWarnings, learnedCapacities, own, SpecError, startOrder, type AppSpec, type Plan } from '../core/index.js';
import { LeaseLostError, type EventRecord, type StoredApp } from '../adapters/store/index.js';
import type { ControllerTransport } from '../adapters/transport/index.js';
import { lazySchemas } from './lazy-schemas.js';
import { AppFileParser, type AppFileParserOptions } from './app-file-parser.js';
import { ApiError, ERROR_CODES, type ErrorCode } from './errors.js';
import type { Controller, InstanceView } from './controller.js';
import { registerStream, type StreamOptions } from './stream.js';
import { registerUi, UiSessions } from './ui.js';
import { registerTenantRoutes } from './tenant-routes.js';
import { registerLogRoutes } from './logs.js';

export interface ApiOptions {
  readonly controller: Controller;
  /** The bearer token clients must present. */
  readonly token: string;
  readonly logger: FastifyBaseLogger | false;
  /** Folder used as `${appDir}` when an apply names none. */
  readonly defaultAppDir: string;
  readonly version: string;
  /** Called after `POST /v1/shutdown` has been answered. */
  readonly onShutdown?: () => void;
  /** The transport, which may mount routes of its own (the embedded one: /v1/agent). */
  readonly transport?: ControllerTransport;
  /** More routes to mount (the fleet's: /v1/tokens, /v1/nodes, the node endpoint /v1/node); `errors` gives error response schemas. */
  readonly routes?: (app: FastifyInstance, errors: (...codes: number[]) => Record<number, unknown>) => void | Promise<void>;
  /** @default 1 MiB */
  readonly bodyLimit?: number;
  /** Limits of the HTTP server; see {@link ApiTimeouts}. */
  readonly timeouts?: Partial<ApiTimeouts>;
  /** The worker that parses app files (time and memory limits). */
  readonly appFile?: AppFileParserOptions;
  /** The dashboard (`/ui`): where its built files are, how long a session lasts. */
  readonly ui?: { readonly dir?: string; readonly sessionMs?: number };
  /** The live stream (`/v1/stream`): coalescing and per-client bounds. */
  readonly stream?: Partial<StreamOptions>;
  /**
   * The controller's start, when the API listens before it is over (server.ts: the port opens
   * while the embedded store is still opening). Until then a request waits (at most a minute)
   * before it is handled; `/v1/health` answers at once with `status: starting`.
   */
  readonly starting?: StartGate;
  /** How long a request waits for the start before it is answered `503 starting`. @default 60000 */
  readonly startWaitMs?: number;
}

/** A controller's start: its state now, and `ready`, resolving when it succeeded, rejecting when it failed. */
export interface StartGate {
  readonly state: 'starting' | 'ready' | 'failed';
  readonly ready: Promise<void>;
}

const START_WAIT_MS = 60_000;
/** The routes a client calls first (the CLI's `up`, `apply`, `status`): compiled while the store opens. */
const FIRST_ROUTES = new Set(['GET /v1/identity', 'PUT /v1/apps/:name', 'GET /v1/apps/:name', 'GET /v1/apps', 'GET /v1/status', 'GET /v1/events']);

/**
 * How long a client may take. A request whose headers, or whole body, do not arrive in time is
 * answered 408 and its connection closed, so slow clients cannot hold sockets open.
 * There is no idle timeout on a connection while a request is being answered: a long poll of
 * `/v1/events` waits up to 60 s, and agents' WebSockets stay open for good.
 */
export interface ApiTimeouts {
  /** Time from a connection's first byte (or the previous request) to the end of a request's headers. @default 10000 */
  readonly headersMs: number;
  /** Time to receive a whole request, headers and body. @default 30000 */
  readonly requestMs: number;
  /** An idle keep-alive connection is closed after this. @default 5000 */
  readonly keepAliveMs: number;
}

export const DEFAULT_TIMEOUTS: ApiTimeouts = { headersMs: 10_000, requestMs: 30_000, keepAliveMs: 5_000 };

const NAME = '^[a-z][a-z0-9-]{0,62}$';
/** A whole number in a query string (which is text by nature): digits only, no sign, no exponent. */
const DIGITS = '^[0-9]{1,15}$';
/** Request line and headers, together (Node's own limit): past it, 431. */
const MAX_HEADER_BYTES = 16 * 1024;
/** Longest path parameter: an app or role name is at most 63 characters, an instance id 34. Past it, 414. */
const MAX_PARAM_LENGTH = 100;
/** After the API is ready, when the routes' schemas not used yet are compiled. */
const SCHEMA_WARM_DELAY_MS = 5000;
const errorSchema = {
  type: 'object',
  properties: {
    error: {
      type: 'object',
      properties: {
        code: { type: 'string', enum: Object.keys(ERROR_CODES) },
        message: { type: 'string' },
        details: { type: 'array', items: { type: 'object', properties: { path: { type: 'string' }, message: { type: 'string' } } } },
      },
      required: ['code', 'message'],
    },
  },
  required: ['error'],
} as const;
const errors = (...codes: number[]) => Object.fromEntries(codes.map((c) => [c, errorSchema]));

const instanceSchema = {
  type: 'object',
  additionalProperties: true,
  properties: {
    id: { type: 'string' },
    type: { type: 'string', description: 'the EC2 instance type, the OpenStack flavor, or node (a joined host), ssh (an ssh host), process (this machine)' },
    ageSeconds: { type: 'integer', description: 'seconds since the instance was asked for (what a cloud bills from, within a boot)' },
    app: { type: 'string' },
    role: { type: ['string', 'null'], description: 'null for a warm spare' },
    pool: { type: ['string', 'null'], description: "a spare's pool: the role it is kept for, or *" },
    state: { type: 'string' },
    goal: { type: 'string', enum: ['run', 'drain', 'stop'] },
    address: { type: 'string', description: 'ip:port of the role' },
    exports: { type: 'object', additionalProperties: { type: 'string' } },
    startedAt: { type: ['string', 'null'], description: 'When the role first became healthy (ISO 8601)' },
    createdAt: { type: 'string' },
    restarts: { type: 'integer' },
    message: { type: ['string', 'null'] },
    connected: { type: 'boolean' },
    ports: { type: 'object', additionalProperties: { type: 'integer' }, description: "every port of the role's ports: by name (absent: the role has none)" },
    slot: { type: 'string', description: 'the member slot it holds, <role>-<n> (a role with volumes)' },
    agent: {
      type: 'object',
      description: "The instance's agent: its process id (null when its provider does not say) and the host it runs on",
      properties: { pid: { type: ['integer', 'null'] }, host: { type: 'string' } },
    },
  },
} as const;

const roleSchema = {
  type: 'object',
  additionalProperties: true,
  properties: {
    name: { type: 'string' },
    desired: { type: 'integer' },
    pinned: { type: 'boolean' },
    min: { type: 'integer' },
    max: { type: 'integer' },
    live: { type: 'integer' },
    serving: { type: 'integer' },
    missingImports: { type: 'array', items: { type: 'string' } },
    staleImports: { type: 'array', items: { type: 'string' }, description: 'instances that have not yet applied the imports last sent to them (their update is pending or failing)' },
    instances: { type: 'array', items: instanceSchema },
  },
} as const;

const eventSchema = {
  type: 'object',
  additionalProperties: true,
  properties: {
    id: { type: 'integer' },
    at: { type: 'string' },
    app: { type: ['string', 'null'] },
    role: { type: ['string', 'null'] },
    instance: { type: ['string', 'null'] },
    kind: { type: 'string' },
    message: { type: 'string' },
  },
} as const;

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/**
 * What kind of machine an instance is: the EC2 instance type, the OpenStack flavor, else `node`
 * (a joined host), `ssh` (an ssh host) or `process` (this machine).
 */
export function machineType(ref: Readonly<Record<string, unknown>> | null): string {
  if (typeof ref?.instanceType === 'string') return ref.instanceType;
  if (typeof ref?.flavor === 'string') return ref.flavor;
  if (typeof ref?.node === 'string') return 'node';
  if (typeof ref?.host === 'string') return 'ssh';
  return 'process';
}

export function instanceJson(i: InstanceView) {
  const now = Date.now();
  return {
    id: i.id,
    type: machineType(i.providerRef),
    ageSeconds: Math.max(0, Math.round((now - i.createdAt) / 1000)),
    app: i.app,
    role: i.role,
    pool: i.pool,
    state: i.state,
    goal: i.goal,
    address: i.port ? `${i.ip}:${i.port}` : null,
    exports: i.exports ?? {},
    startedAt: iso(i.startedAt),
    createdAt: iso(i.createdAt),
    stateSince: iso(i.stateSince),
    destroyedAt: iso(i.destroyedAt),
    restarts: i.restarts,
    message: i.message,
    lastExit: i.lastExit,
    connected: i.connected,
    lastSeenAt: iso(i.lastSeenAt),
    vitals: i.vitals,
    balancer: i.balancer,
    workdir: i.workdir,
    agent: i.agent,
    ...(i.ports ? { ports: i.ports } : {}),
    ...(i.slot !== null && i.slot !== undefined && i.role !== null ? { slot: `${i.role}-${i.slot}` } : {}),
  };
}

export function eventJson(e: EventRecord) {
  return { ...e, at: new Date(e.at).toISOString() };
}

function sameToken(given: string, want: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(want);
  return a.length === b.length && timingSafeEqual(a, b);
}

function fail(code: ErrorCode, message: string): never {
  throw new ApiError(code, message);
}

export async function buildApi(opts: ApiOptions): Promise<FastifyInstance> {
  const c = opts.controller;
  const t = { ...DEFAULT_TIMEOUTS, ...opts.timeouts };
  const bodyLimit = opts.bodyLimit ?? 1 << 20;
  const authorized = (header: string | undefined) => {
    const m = /^Bearer (.+)$/.exec(header ?? '');
    return m?.[1] !== undefined && sameToken(m[1], opts.token);
  };
  const send = (reply: FastifyReply, e: ApiError) => reply.status(e.status).send(e.body());
  // Each route's schemas compiled on first use, the rest once the API is up (lazy-schemas.ts).
  const schemas = lazySchemas();
  const app = Fastify({
    schemaController: { compilersFactory: schemas.compilersFactory },
    // Per-request logs would drown the events; errors still get through at warn.
    ...(opts.logger === false ? { logger: false } : { loggerInstance: opts.logger.child({}, { level: 'warn' }) }),
    bodyLimit,
    // No coercion: `"2"`, `null` or `false` is not a count. Query strings are text, parsed by hand (queryInt).
    ajv: { customOptions: { allErrors: false, coerceTypes: false, removeAdditional: false, useDefaults: true } },
    requestTimeout: t.requestMs,
    keepAliveTimeout: t.keepAliveMs,
    // Node checks the two timeouts above on this interval (30 s by default): the bounds then hold within a second.
    http: { headersTimeout: t.headersMs, maxHeaderSize: MAX_HEADER_BYTES, connectionsCheckingInterval: Math.min(1000, t.headersMs) },
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    // Errors Node's HTTP parser meets before Fastify sees a request: answered in the API's error format too.
    clientErrorHandler: (err: NodeJS.ErrnoException, socket: Socket) => {
      if (err.code === 'ECONNRESET' || socket.destroyed) return;
      const e =
        err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? new ApiError('request_timeout', `request: not received in time (headers within ${t.headersMs} ms, the whole request within ${t.requestMs} ms)`)
          : err.code === 'HPE_HEADER_OVERFLOW'
            ? new ApiError('headers_too_large', `headers: the request line and headers are larger than ${MAX_HEADER_BYTES} bytes`)
            : new ApiError('invalid_request', 'request: not a valid HTTP/1.1 request');
      if (socket.writable) {
        const body = JSON.stringify(e.body());
        socket.end(`HTTP/1.1 ${e.status} ${STATUS_CODES[e.status] ?? ''}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
      }
      // A client that does not read its answer does not keep the socket either.
      setTimeout(() => socket.destroy(), 1000).unref();
    },
    // Bad URL encoding and over-long path parameters, found by the router before any hook runs.
    frameworkErrors: (err: FastifyError, req: FastifyRequest, reply: FastifyReply) => {
      const e = !authorized(req.headers.authorization)
        ? new ApiError('unauthorized', 'missing or invalid bearer token')
        : err.code === 'FST_ERR_MAX_PARAM_LENGTH'
          ? new ApiError('uri_too_long', `path: a parameter is longer than ${MAX_PARAM_LENGTH} characters`)
          : new ApiError('invalid_request', 'path: not valid URL encoding');
      void send(reply, e);
    },
  });
  const parser = new AppFileParser(opts.appFile);
  parser.warm();
  // The rest compiled a few seconds after ready, one route at a time between other work: not
  // while a start's store, first apply and first instances want the CPU.
  app.addHook('onReady', async () => {
    schemas.warmNow((method, url) => FIRST_ROUTES.has(`${method} ${url}`), (err) => app.log.error({ err }, 'a route schema does not compile'));
    setTimeout(() => schemas.warm((err) => app.log.error({ err }, 'a route schema does not compile')), SCHEMA_WARM_DELAY_MS).unref();
  });
  app.addHook('onClose', async () => parser.close());
  // JSON only: without this, Fastify would hand a text/plain body to the routes as a string.
  app.removeContentTypeParser('text/plain');

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'Drover controller API', version: opts.version, description: 'Apply apps, read roles, instances and events, scale roles.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });

  const ui = new UiSessions({ token: opts.token, ...opts.ui });
  /** Waits for the controller's start, if it is not over (see {@link ApiOptions.starting}). */
  const untilStarted = async (): Promise<void> => {
    const gate = opts.starting;
    if (!gate || gate.state === 'ready') return;
    const waitMs = opts.startWaitMs ?? START_WAIT_MS;
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      gate.ready.then(() => 'ready' as const, () => 'failed' as const),
      new Promise<'late'>((r) => (timer = setTimeout(() => r('late'), waitMs))),
    ]);
    clearTimeout(timer);
    if (outcome === 'failed') throw new ApiError('starting', 'the controller could not start (its log says why); it is stopping');
    if (outcome === 'late') throw new ApiError('starting', `the controller is still starting (opening its store) after ${waitMs / 1000}s; try again shortly`);
  };
  app.addHook('onRequest', async (req) => {
    const path = req.url.split('?')[0] ?? '';
    // Neither needs the store: they answer while the controller starts.
    if (path === '/v1/health' || path === '/v1/identity') return;
    // Agents and hosts authenticate in their own protocol; the controller must be running to take them.
    if (path === '/v1/agent' || path === '/v1/node') return untilStarted();
    // Agents prove their instance key to the bundle route itself (bundle.ts), not the admin token.
    if (req.method === 'GET' && /^\/v1\/bundles\/[a-z][a-z0-9-]{0,62}\/[0-9a-f]{64}$/.test(path)) return untilStarted();
    // The agent bundle cloud machines install at boot: public code; they check its sha256 (bootstrap.ts).
    if (req.method === 'GET' && /^\/v1\/agent-bundle\/[0-9a-f]{64}$/.test(path)) return;
    if (ui.isPublic(req.method, path)) return;
    // The bearer token (CLI, scripts), or a dashboard session cookie with its CSRF token on changes (ui.ts).
    if (!authorized(req.headers.authorization) && !ui.allows(req)) throw new ApiError('unauthorized', 'missing or invalid bearer token');
    await untilStarted();
    // A standby serves reads; changes go to the leader (its writes would be refused anyway).
    if (!c.isLeader && req.method !== 'GET' && req.method !== 'HEAD' && path !== '/v1/shutdown') throw await notLeader();
  });
  const notLeader = async (): Promise<ApiError> => {
    const v = await c.leadership().catch(() => undefined);
    const who = v?.leader ? `the leader is ${v.leader.url} (${v.leader.host}, pid ${v.leader.pid}, since ${v.since ?? '?'})` : 'no controller leads right now; retry in a few seconds';
    return new ApiError('not_leader', `this controller is ${v?.role === 'stepped-down' ? 'stepping down' : 'a standby'} and serves reads only; ${who}`);
  };

  // Every error leaves in the documented format, with a registered code; the text of an
  // unexpected error goes to the log only.
  app.setErrorHandler((err: FastifyError | ApiError, req, reply) => {
    if (err instanceof ApiError) return send(reply, err);
    if (err instanceof LeaseLostError) return notLeader().then((e) => send(reply, e));
    if (err.validation) return send(reply, new ApiError('invalid_request', validationMessage(err)));
    const status = err.statusCode ?? 500;
    if (status === 413 || err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return send(reply, new ApiError('payload_too_large', `body: larger than ${bodyLimit} bytes`));
    if (status === 415) {
      const type = JSON.stringify(String(req.headers['content-type'] ?? 'none').slice(0, 100));
      return send(reply, new ApiError('unsupported_media_type', `content-type: ${type} is not supported; send application/json`));
    }
    if (status >= 400 && status < 500) return send(reply, new ApiError('invalid_request', CLIENT_ERRORS[err.code] ?? 'request: malformed'));
    req.log.error({ err, reqId: req.id }, 'request failed');
    return send(reply, new ApiError('internal', `internal error (request ${req.id})`));
  });
  app.setNotFoundHandler((req, reply) => {
    const e = new ApiError('not_found', `no route ${req.method} ${req.url.split('?')[0] ?? ''}`);
    return reply.status(404).send(e.body());
  });

  await opts.transport?.register?.(app);

  app.get('/v1/health', { schema: { security: [], response: { 200: { type: 'object', properties: { status: { type: 'string' }, version: { type: 'string' }, uptimeMs: { type: 'number' } } } } } }, async () => ({
    status: opts.starting && opts.starting.state !== 'ready' ? opts.starting.state : 'ok',
    version: opts.version,
    uptimeMs: Date.now() - c.startedAt,
  }));

  app.get('/v1/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  // Proof of holding the token, asked for by clients before they send it (docs/security.md).
  app.get<{ Querystring: { challenge: string } }>(
    '/v1/identity',
    {
      schema: {
        tags: ['controller'],
        summary: 'Prove this controller holds the admin token, without revealing it (HMAC of a client challenge)',
        security: [],
        querystring: { type: 'object', additionalProperties: false, required: ['challenge'], properties: { challenge: { type: 'string', pattern: '^[A-Za-z0-9_-]{16,128}$' } } },
        response: { 200: { type: 'object', properties: { proof: { type: 'string' } } }, ...errors(400) },
      },
    },
    async (req) => ({ proof: apiProof(opts.token, req.query.challenge) }),
  );

  // A list is summarised from what it read: an app forgotten meanwhile (its deletion done) is not
  // looked up again, which would answer 404 to a list or a status that found it.
  // `plan`: the app's preview, when the caller has it already (an app's answer plans it once).
  const summaryOf = async (stored: StoredApp, plan?: Promise<Plan | undefined>) => {
    const p = await (plan ?? c.preview(stored.name));
    return {
      name: stored.name,
      generation: stored.generation,
      deleting: stored.deleting,
      appDir: stored.appDir,
      createdAt: iso(stored.createdAt),
      updatedAt: iso(stored.updatedAt),
      converged: p?.converged ?? false,
      spares: p?.spares ?? {},
      startOrder: startOrder(stored.spec),
      spec: stored.spec,
    };
  };
  const storeApp = async (name: string) => {
    const list = await c.listApps();
    return list.find((a) => a.name === name) ?? fail('not_found', `no app "${name}"`);
  };

  const rolesOf = async (name: string) => rolesFor(await storeApp(name));
  /** An app as GET /v1/apps/{name} answers it: its summary and its roles, from one plan. */
  const appView = async (stored: StoredApp) => {
    const plan = c.preview(stored.name);
    const [summary, roles] = await Promise.all([summaryOf(stored, plan), rolesFor(stored, plan)]);
    return { ...summary, roles };
  };

  const rolesFor = async (stored: StoredApp, plan?: Promise<Plan | undefined>) => {
    const name = stored.name;
    // Asked together: the store answers them one after another without waiting for this thread.
    const [p, desired, instances] = await Promise.all([plan ?? c.preview(name), c.roleCounts(name), c.listInstances({ app: name })]);
    return Object.values(stored.spec.roles).map((r) => {
      const s = p ? own(p.roles, r.name) : undefined;
      const d = desired.find((x) => x.role === r.name);
      return {
        name: r.name,
        desired: d?.desired ?? r.count,
        pinned: d?.pinned ?? false,
        min: r.min,
        max: r.max,
        live: s?.live ?? 0,
        serving: s?.serving ?? 0,
        missingImports: s?.missingImports ?? [],
        staleImports: s?.staleImports ?? [],
        draining: s?.draining ?? 0,
        spares: s?.spares ?? 0,
        degraded: s?.degraded ?? false,
        // Only while the role is short: a role that needs no new member has nothing to place.
        unplaceable: (s?.live ?? 0) < (d?.desired ?? r.count) ? (c.unplaceable(name, r.name) ?? null) : null,
        policies: r.scale.map((pol) => `${pol.kind} on ${pol.metric}`),
        defaultPolicy: r.scaleDefault === true,
        metric: r.scale[0]?.metric ?? null,
        ...(() => {
          const d = c.decisionFor(name, r.name);
          const learned = learnedCapacities(d?.inputs ?? {});
          return {
            lastDecision: d ? { at: iso(d.at), desired: d.desired, reason: d.reason } : null,
            learnedCapacity: Object.keys(learned).length ? learned : null,
          };
        })(),
        imports: r.imports.map((i) => i.raw),
        exports: Object.keys(r.exports),
        tenants: r.tenants ? { capacity: r.tenants.capacity, host: r.tenants.host ?? null } : null,
        instances: instances.filter((i) => i.role === r.name).map(instanceJson),
      };
    });
  };

  const nameParams = { type: 'object', properties: { name: { type: 'string', pattern: NAME } }, required: ['name'] } as const;

  app.get('/v1/apps', { schema: { tags: ['apps'], response: { 200: { type: 'object', properties: { apps: { type: 'array', items: { type: 'object', additionalProperties: true } } } }, 401: errorSchema } } }, async () => {
    const apps = await c.listApps();
    return { apps: await Promise.all(apps.map((a) => summaryOf(a))) };
  });

  app.put<{ Params: { name: string }; Body: { yaml?: string; spec?: unknown; appDir?: string } }>(
    '/v1/apps/:name',
    {
      schema: {
        tags: ['apps'],
        summary: 'Apply an app: create it or change it. The whole file is validated first; on error nothing is applied.',
        params: nameParams,
        body: {
          type: 'object',
          additionalProperties: false,
          properties: {
            yaml: { type: 'string', description: 'The app file, as YAML text (at most 256 KiB)' },
            spec: { type: 'object', description: 'The app file, as JSON' },
            appDir: {
              type: 'string',
              // Absolute, one line, no control character: it becomes ${appDir} in every command.
              pattern: '^/[^\\u0000-\\u001f\\u007f]*$',
              maxLength: 4096,
              description: 'Folder of the app file (${appDir}): an absolute path',
            },
          },
        },
        response: { 200: { type: 'object', additionalProperties: true }, 201: { type: 'object', additionalProperties: true }, ...errors(400, 401, 409, 413, 415, 422, 500) },
      },
    },
    async (req, reply) => {
      const b = req.body ?? {};
      if ((b.yaml === undefined) === (b.spec === undefined)) fail('invalid_request', 'body: give exactly one of "yaml" or "spec"');
      if (b.yaml !== undefined && Buffer.byteLength(b.yaml, 'utf8') > APP_FILE_LIMITS.bytes) {
        fail('payload_too_large', `yaml: the app file is ${Buffer.byteLength(b.yaml, 'utf8')} bytes; at most ${APP_FILE_LIMITS.bytes} (256 KiB) are allowed`);
      }
      let spec: AppSpec;
      try {
        // Off the event loop, with a time limit: app-file-parser.ts says why.
        spec = b.yaml !== undefined ? await parser.parseYaml(b.yaml) : await parser.compile(b.spec);
      } catch (err) {
        if (err instanceof SpecError) throw new ApiError('invalid_spec', err.message, err.issues);
        throw err;
      }
      if (spec.app !== req.params.name) fail('name_mismatch', `app: "${spec.app}" does not match the name in the path ("${req.params.name}")`);
      const existed = (await c.listApps()).some((a) => a.name === spec.app);
      const res = await c.apply(spec, b.appDir ?? opts.defaultAppDir);
      const bundle = res.bundle ? { sha256: res.bundle.sha256, size: res.bundle.size, unpackedBytes: res.bundle.unpackedBytes, files: res.bundle.files } : null;
      return reply.status(existed ? 200 : 201).send({ app: await summaryOf(res.app), changed: res.changed, warnings: appFileWarnings(spec), bundle });
    },
  );

  app.get<{ Params: { name: string } }>('/v1/apps/:name', { schema: { tags: ['apps'], params: nameParams, response: { 200: { type: 'object', additionalProperties: true }, ...errors(400, 401, 404) } } }, async (req) => appView(await storeApp(req.params.name)));

  app.delete<{ Params: { name: string } }>('/v1/apps/:name', { schema: { tags: ['apps'], summary: 'Stop the app (reverse dependency order) and forget it', params: nameParams, response: { 202: { type: 'object', additionalProperties: true }, ...errors(400, 401, 404) } } }, async (req, reply) => {
    await c.deleteApp(req.params.name);
    return reply.status(202).send({ name: req.params.name, deleting: true });
  });

  app.get<{ Params: { name: string } }>('/v1/apps/:name/roles', { schema: { tags: ['roles'], params: nameParams, response: { 200: { type: 'object', properties: { roles: { type: 'array', items: roleSchema } } }, ...errors(400, 401, 404) } } }, async (req) => ({
    roles: await rolesOf(req.params.name),
  }));

  const roleParams = { type: 'object', properties: { name: { type: 'string', pattern: NAME }, role: { type: 'string', pattern: NAME } }, required: ['name', 'role'] } as const;
  app.get<{ Params: { name: string; role: string } }>('/v1/apps/:name/roles/:role', { schema: { tags: ['roles'], params: roleParams, response: { 200: roleSchema, ...errors(400, 401, 404) } } }, async (req) => {
    const roles = await rolesOf(req.params.name);
    return roles.find((r) => r.name === req.params.role) ?? fail('not_found', `app "${req.params.name}" has no role "${req.params.role}"`);
  });

  app.put<{ Params: { name: string; role: string }; Body: { count?: number; auto?: boolean } }>(
    '/v1/apps/:name/roles/:role/count',
    {
      schema: {
        tags: ['roles'],
        summary: "Set a role's count by hand (it stays until the file changes it or it is set again)",
        params: roleParams,
        body: {
          type: 'object',
          additionalProperties: false,
          properties: { count: { type: 'integer', minimum: 0, maximum: 1000 }, auto: { type: 'boolean', enum: [true] } },
        },
        response: { 200: roleSchema, ...errors(400, 401, 404, 409, 422) },
      },
    },
    async (req) => {
      const b = req.body ?? {};
      if ((b.count === undefined) === (b.auto === undefined)) fail('invalid_request', 'body: give exactly one of "count" or "auto"');
      await c.scale(req.params.name, req.params.role, b.count !== undefined ? { count: b.count } : { auto: true });
      const roles = await rolesOf(req.params.name);
      return roles.find((r) => r.name === req.params.role) ?? fail('not_found', `app "${req.params.name}" has no role "${req.params.role}"`);
    },
  );

  app.post<{ Params: { name: string; role: string } }>(
    '/v1/apps/:name/roles/:role/retry',
    {
      schema: {
        tags: ['roles'],
        summary: "After fixing what made a role fail: forget its recent failures (backoff, degraded mark) so replacements start now",
        params: roleParams,
        response: { 200: { type: 'object', additionalProperties: true, properties: { retry: { type: 'object', additionalProperties: true }, role: roleSchema } }, ...errors(400, 401, 404, 409) },
      },
    },
    async (req) => {
      const who = `${authorized(req.headers.authorization) ? 'the API token' : 'a dashboard session'} from ${req.ip}`;
      const retry = await c.retryRole(req.params.name, req.params.role, who);
      const roles = await rolesOf(req.params.name);
      return { retry, role: roles.find((r) => r.name === req.params.role) ?? fail('not_found', `app "${req.params.name}" has no role "${req.params.role}"`) };
    },
  );

  app.get<{ Querystring: { app?: string; role?: string; all?: 'true' | 'false' } }>(
    '/v1/instances',
    {
      schema: {
        tags: ['instances'],
        querystring: { type: 'object', additionalProperties: false, properties: { app: { type: 'string', pattern: NAME }, role: { type: 'string', pattern: NAME }, all: { type: 'string', enum: ['true', 'false'], description: 'include destroyed instances' } } },
        response: { 200: { type: 'object', properties: { instances: { type: 'array', items: instanceSchema } } }, ...errors(400, 401) },
      },
    },
    async (req) => {
      const q = req.query;
      const list = await c.listInstances({ ...(q.app ? { app: q.app } : {}), ...(q.role ? { role: q.role } : {}), includeGone: q.all === 'true' });
      return { instances: list.map(instanceJson) };
    },
  );

  app.get<{ Params: { id: string } }>(
    '/v1/instances/:id',
    { schema: { tags: ['instances'], params: { type: 'object', properties: { id: { type: 'string', pattern: '^i-[0-9a-f]{1,32}$' } }, required: ['id'] }, response: { 200: instanceSchema, ...errors(400, 401, 404) } } },
    async (req) => {
      const i = await c.getInstance(req.params.id);
      return i ? instanceJson(i) : fail('not_found', `no instance "${req.params.id}"`);
    },
  );

  app.post<{ Params: { id: string } }>(
    '/v1/instances/:id/drain',
    {
      schema: {
        tags: ['instances'],
        summary: "Drain one serving instance by hand: its role's count goes down by one (pinned) and this instance leaves through the drain path, with no replacement",
        params: { type: 'object', properties: { id: { type: 'string', pattern: '^i-[0-9a-f]{1,32}$' } }, required: ['id'] },
        response: { 202: instanceSchema, ...errors(400, 401, 403, 404, 409, 422) },
      },
    },
    async (req, reply) => reply.status(202).send(instanceJson(await c.getInstance((await c.drainInstance(req.params.id)).id) ?? fail('not_found', `no instance "${req.params.id}"`))),
  );

  app.get<{ Querystring: { after?: string; app?: string; limit?: string; waitMs?: string } }>(
    '/v1/events',
    {
      schema: {
        tags: ['events'],
        summary: 'Recorded decisions and changes. With `after` and `waitMs`, waits (long poll) until a newer event exists.',
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            after: { type: 'string', pattern: DIGITS, description: 'an event id (integer >= 0)' },
            app: { type: 'string', pattern: NAME },
            limit: { type: 'string', pattern: DIGITS, description: 'an integer from 1 to 1000; default 100' },
            waitMs: { type: 'string', pattern: DIGITS, description: 'an integer from 0 to 60000' },
          },
        },
        response: { 200: { type: 'object', properties: { events: { type: 'array', items: eventSchema } } }, ...errors(400, 401) },
      },
    },
    async (req) => {
      const q = req.query;
      const after = queryInt('after', q.after, 0, Number.MAX_SAFE_INTEGER);
      const limit = queryInt('limit', q.limit, 1, 1000) ?? 100;
      const waitMs = queryInt('waitMs', q.waitMs, 0, 60_000);
      const query = { ...(after !== undefined ? { after } : {}), ...(q.app ? { app: q.app } : {}), limit };
      let events = await c.listEvents(query);
      if (events.length === 0 && waitMs && after !== undefined) {
        await new Promise<void>((resolve) => {
          const done = () => {
            clearTimeout(timer);
            c.events.off('event', onEvent);
            req.raw.off('close', done);
            resolve();
          };
          const onEvent = (e: EventRecord) => {
            if (!q.app || e.app === q.app) done();
          };
          const timer = setTimeout(done, waitMs);
          c.events.on('event', onEvent);
          req.raw.on('close', done);
        });
        events = await c.listEvents(query);
      }
      return { events: events.map(eventJson) };
    },
  );

  registerStream(
    app,
    {
      controller: c,
      version: opts.version,
      apps: async () => (await Promise.all((await c.listApps()).map((a) => summaryOf(a)))).map(({ spec: _spec, ...rest }) => rest),
      roles: async (name) => (await rolesOf(name)).map(({ instances: _instances, ...rest }) => rest),
      onError: (err) => app.log.warn({ err }, 'stream tick failed'),
    },
    opts.stream,
  );
  await registerUi(app, ui);

  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) => {
    const m = c.metrics.registry;
    return reply.header('content-type', m.contentType).send(await m.metrics());
  });

  registerTenantRoutes(app, c, { errors });
  registerLogRoutes(app, c);
  await opts.routes?.(app, errors);

  app.get('/v1/controller', {
    schema: {
      tags: ['controller'], summary: 'Which controller leads (controllers on a shared store elect one), this one\'s role, the lease epoch and since when',
      response: { 200: { type: 'object', additionalProperties: true }, 401: errorSchema },
    },
  }, async () => c.leadership());

  // What `drover status` shows, in one answer: the CLI pays for one request, not one per app.
  app.get('/v1/status', {
    schema: {
      tags: ['controller'], summary: 'Who leads (as GET /v1/controller) and every app as GET /v1/apps/{name} answers it: roles and instances',
      response: { 200: { type: 'object', additionalProperties: true }, 401: errorSchema },
    },
  }, async () => {
    const [leadership, apps] = await Promise.all([c.leadership(), c.listApps()]);
    return { controller: leadership, apps: await Promise.all(apps.map((a) => appView(a))) };
  });

  app.post('/v1/shutdown', { schema: { tags: ['controller'], summary: 'Stop the controller (apps keep running unless deleted first)', response: { 202: { type: 'object', additionalProperties: true }, 401: errorSchema } } }, async (_req, reply) => {
    reply.raw.on('finish', () => setImmediate(() => opts.onShutdown?.()));
    return reply.status(202).send({ stopping: true });
  });

  return app;
}

/** Wording for Fastify's own 4xx errors: the field and the reason, never the library's text. */
const CLIENT_ERRORS: Partial<Record<string, string>> = {
  FST_ERR_CTP_EMPTY_JSON_BODY: 'body: empty; send a JSON object',
  FST_ERR_CTP_INVALID_JSON_BODY: 'body: not valid JSON (or it has a "__proto__" or "constructor.prototype" key)',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'body: its size does not match Content-Length',
};

/** A whole number from a query string, within [min, max]; undefined when absent. */
function queryInt(name: string, text: string | undefined, min: number, max: number): number | undefined {
  if (text === undefined) return undefined;
  const n = /^[0-9]{1,15}$/.test(text) ? Number(text) : NaN;
  if (!(n >= min && n <= max)) throw new ApiError('invalid_request', `querystring.${name}: expected a whole number from ${min} to ${max}`);
  return n;
}

/** `body.count: must be integer`, naming the field (and the missing or unknown one). */
function validationMessage(err: FastifyError): string {
  const v = err.validation?.[0];
  const params = (v?.params ?? {}) as { missingProperty?: unknown; additionalProperty?: unknown; allowedValues?: unknown };
  let where = (err.validationContext ?? 'request') + (v?.instancePath ? v.instancePath.replace(/\//g, '.') : '');
  let message = v?.message ?? 'invalid';
  if (v?.keyword === 'required') {
    where += `.${String(params.missingProperty)}`;
    message = 'required';
  } else if (v?.keyword === 'additionalProperties') {
    message = `unknown field ${JSON.stringify(String(params.additionalProperty))}`;
  } else if (v?.keyword === 'pattern' && (v.params as { pattern?: unknown }).pattern === DIGITS) {
    message = 'expected a whole number';
  } else if (v?.keyword === 'enum' && Array.isArray(params.allowedValues)) {
    message = `expected ${params.allowedValues.map((x) => JSON.stringify(x)).join(' or ')}`;
  }
  return `${where}: ${message}`;
}
