/**
 * The REST API, `/v1`. Built by {@link buildApi} so tests drive it with `inject()`.
 * Every route but `/v1/health` (and the agents' WebSocket, which has its own join tokens) needs
 * `Authorization: Bearer <token>`; without it the answer is 401 and nothing else, not even
 * whether the route exists.
 */
import { timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance } from 'fastify';
import swagger from '@fastify/swagger';
import websocket from '@fastify/websocket';
import { compileAppSpec, parseAppFile, SpecError, startOrder, type AppSpec } from '../core/index.js';
import type { EventRecord } from '../adapters/store/index.js';
import { EmbeddedTransport } from '../adapters/transport/index.js';
import { ApiError, ERROR_CODES, type ErrorCode } from './errors.js';
import type { Controller, InstanceView } from './controller.js';

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
  /** The embedded transport to mount at /v1/agent. */
  readonly transport?: EmbeddedTransport;
  /** @default 1 MiB */
  readonly bodyLimit?: number;
}

const NAME = '^[a-z][a-z0-9-]{0,62}$';
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

export function instanceJson(i: InstanceView) {
  return {
    id: i.id,
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
  const app = Fastify({
    // Per-request logs would drown the events; errors still get through at warn.
    ...(opts.logger === false ? { logger: false } : { loggerInstance: opts.logger.child({}, { level: 'warn' }) }),
    bodyLimit: opts.bodyLimit ?? 1 << 20,
    ajv: { customOptions: { allErrors: false, coerceTypes: 'array', removeAdditional: false } },
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'Drover controller API', version: opts.version, description: 'Apply apps, read roles, instances and events, scale roles.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  await app.register(websocket, { options: EmbeddedTransport.wsOptions });

  app.addHook('onRequest', async (req) => {
    const path = req.url.split('?')[0] ?? '';
    if (path === '/v1/health' || path === '/v1/agent') return;
    const h = req.headers.authorization ?? '';
    const m = /^Bearer (.+)$/.exec(h);
    if (!m?.[1] || !sameToken(m[1], opts.token)) throw new ApiError('unauthorized', 'missing or invalid bearer token');
  });

  app.setErrorHandler((err: FastifyError | ApiError, req, reply) => {
    if (err instanceof ApiError) return reply.status(err.status).send(err.body());
    if (err.validation) {
      const v = err.validation[0];
      const where = (err.validationContext ?? 'request') + (v?.instancePath ? v.instancePath.replace(/\//g, '.') : '');
      const extra = v?.keyword === 'additionalProperties' ? ` "${String((v.params as { additionalProperty?: unknown }).additionalProperty)}"` : '';
      const e = new ApiError('invalid_request', `${where}: ${v?.message ?? 'invalid'}${extra}`);
      return reply.status(e.status).send(e.body());
    }
    const status = err.statusCode ?? 500;
    if (status === 413) return reply.status(413).send(new ApiError('payload_too_large', `body: larger than ${opts.bodyLimit ?? 1 << 20} bytes`).body());
    if (status === 415) return reply.status(415).send(new ApiError('unsupported_media_type', `content-type: ${req.headers['content-type'] ?? 'none'} is not supported; send application/json`).body());
    if (status >= 400 && status < 500) return reply.status(400).send(new ApiError('invalid_request', `body: ${err.message}`).body());
    req.log.error({ err }, 'request failed');
    return reply.status(500).send(new ApiError('internal', `internal error (request ${req.id})`).body());
  });
  app.setNotFoundHandler((req, reply) => {
    const e = new ApiError('not_found', `no route ${req.method} ${req.url.split('?')[0] ?? ''}`);
    return reply.status(404).send(e.body());
  });

  opts.transport?.register(app);

  app.get('/v1/health', { schema: { security: [], response: { 200: { type: 'object', properties: { status: { type: 'string' }, version: { type: 'string' }, uptimeMs: { type: 'number' } } } } } }, async () => ({
    status: 'ok',
    version: opts.version,
    uptimeMs: Date.now() - c.startedAt,
  }));

  app.get('/v1/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  const appSummary = async (name: string) => {
    const stored = await storeApp(name);
    const p = await c.preview(name);
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

  const rolesOf = async (name: string) => {
    const stored = await storeApp(name);
    const p = await c.preview(name);
    const desired = await c.roleCounts(name);
    const instances = await c.listInstances({ app: name });
    return Object.values(stored.spec.roles).map((r) => {
      const s = p?.roles[r.name];
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
        draining: s?.draining ?? 0,
        spares: s?.spares ?? 0,
        degraded: s?.degraded ?? false,
        policies: r.scale.map((pol) => `${pol.kind} on ${pol.metric}`),
        lastDecision: (() => {
          const d = c.decisionFor(name, r.name);
          return d ? { at: iso(d.at), desired: d.desired, reason: d.reason } : null;
        })(),
        imports: r.imports.map((i) => i.raw),
        exports: Object.keys(r.exports),
        instances: instances.filter((i) => i.role === r.name).map(instanceJson),
      };
    });
  };

  const nameParams = { type: 'object', properties: { name: { type: 'string', pattern: NAME } }, required: ['name'] } as const;

  app.get('/v1/apps', { schema: { tags: ['apps'], response: { 200: { type: 'object', properties: { apps: { type: 'array', items: { type: 'object', additionalProperties: true } } } }, 401: errorSchema } } }, async () => {
    const apps = await c.listApps();
    return { apps: await Promise.all(apps.map((a) => appSummary(a.name))) };
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
            yaml: { type: 'string', description: 'The app file, as YAML text' },
            spec: { type: 'object', description: 'The app file, as JSON' },
            appDir: { type: 'string', description: 'Folder of the app file (${appDir})' },
          },
        },
        response: { 200: { type: 'object', additionalProperties: true }, 201: { type: 'object', additionalProperties: true }, ...errors(400, 401, 409, 413, 415, 422) },
      },
    },
    async (req, reply) => {
      const b = req.body ?? {};
      if ((b.yaml === undefined) === (b.spec === undefined)) fail('invalid_request', 'body: give exactly one of "yaml" or "spec"');
      let spec: AppSpec;
      try {
        spec = b.yaml !== undefined ? parseAppFile(b.yaml) : compileAppSpec(b.spec);
      } catch (err) {
        if (err instanceof SpecError) throw new ApiError('invalid_spec', err.message, err.issues);
        throw err;
      }
      if (spec.app !== req.params.name) fail('name_mismatch', `app: "${spec.app}" does not match the name in the path ("${req.params.name}")`);
      const existed = (await c.listApps()).some((a) => a.name === spec.app);
      const res = await c.apply(spec, b.appDir ?? opts.defaultAppDir);
      return reply.status(existed ? 200 : 201).send({ app: await appSummary(res.app.name), changed: res.changed });
    },
  );

  app.get<{ Params: { name: string } }>('/v1/apps/:name', { schema: { tags: ['apps'], params: nameParams, response: { 200: { type: 'object', additionalProperties: true }, ...errors(400, 401, 404) } } }, async (req) => ({
    ...(await appSummary(req.params.name)),
    roles: await rolesOf(req.params.name),
  }));

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
          properties: { count: { type: 'integer', minimum: 0, maximum: 10000 }, auto: { type: 'boolean', enum: [true] } },
          oneOf: [{ required: ['count'] }, { required: ['auto'] }],
        },
        response: { 200: roleSchema, ...errors(400, 401, 404, 409, 422) },
      },
    },
    async (req) => {
      const b = req.body;
      await c.scale(req.params.name, req.params.role, b.count !== undefined ? { count: b.count } : { auto: true });
      const roles = await rolesOf(req.params.name);
      return roles.find((r) => r.name === req.params.role);
    },
  );

  app.get<{ Querystring: { app?: string; role?: string; all?: boolean } }>(
    '/v1/instances',
    {
      schema: {
        tags: ['instances'],
        querystring: { type: 'object', additionalProperties: false, properties: { app: { type: 'string', pattern: NAME }, role: { type: 'string', pattern: NAME }, all: { type: 'boolean', description: 'include destroyed instances' } } },
        response: { 200: { type: 'object', properties: { instances: { type: 'array', items: instanceSchema } } }, ...errors(400, 401) },
      },
    },
    async (req) => {
      const q = req.query;
      const list = await c.listInstances({ ...(q.app ? { app: q.app } : {}), ...(q.role ? { role: q.role } : {}), includeGone: q.all === true });
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

  app.get<{ Querystring: { after?: number; app?: string; limit?: number; waitMs?: number } }>(
    '/v1/events',
    {
      schema: {
        tags: ['events'],
        summary: 'Recorded decisions and changes. With `after` and `waitMs`, waits (long poll) until a newer event exists.',
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            after: { type: 'integer', minimum: 0 },
            app: { type: 'string', pattern: NAME },
            limit: { type: 'integer', minimum: 1, maximum: 1000 },
            waitMs: { type: 'integer', minimum: 0, maximum: 60000 },
          },
        },
        response: { 200: { type: 'object', properties: { events: { type: 'array', items: eventSchema } } }, ...errors(400, 401) },
      },
    },
    async (req) => {
      const q = req.query;
      const query = { ...(q.after !== undefined ? { after: q.after } : {}), ...(q.app ? { app: q.app } : {}), limit: q.limit ?? 100 };
      let events = await c.listEvents(query);
      if (events.length === 0 && q.waitMs && q.after !== undefined) {
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
          const timer = setTimeout(done, q.waitMs);
          c.events.on('event', onEvent);
          req.raw.on('close', done);
        });
        events = await c.listEvents(query);
      }
      return { events: events.map(eventJson) };
    },
  );

  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) => {
    const m = c.metrics.registry;
    return reply.header('content-type', m.contentType).send(await m.metrics());
  });

  app.post('/v1/shutdown', { schema: { tags: ['controller'], summary: 'Stop the controller (apps keep running unless deleted first)', response: { 202: { type: 'object', additionalProperties: true }, 401: errorSchema } } }, async (_req, reply) => {
    reply.raw.on('finish', () => setImmediate(() => opts.onShutdown?.()));
    return reply.status(202).send({ stopping: true });
  });

  return app;
}
