/**
 * Tenant routes of the REST API:
 *
 * - `POST /v1/apps/{app}/roles/{role}/tenants` `{ name, host?, callbackUrl?, email? }`, with an
 *   optional `Idempotency-Key` header (the same key returns the same tenant, never a second):
 *   `201 Created` once `add` has succeeded when a seat was free; `202 Accepted` with `Location:
 *   /v1/tenants/{id}` and `Retry-After` when capacity must be made (or `add` is still retrying).
 * - `GET /v1/tenants[?app&role&state]`, `GET /v1/tenants/{id}` (with its notification attempts),
 *   `DELETE /v1/tenants/{id}` (unroutes, runs `remove`, frees the seat: 202).
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import { TENANT_STATES, type TenantState } from '../core/index.js';
import type { NotificationRecord, TenantRecord } from '../adapters/store/index.js';
import type { Controller } from './controller.js';
import { ApiError } from './errors.js';

const NAME = '^[a-z][a-z0-9-]{0,62}$';
const iso = (ms: number) => new Date(ms).toISOString();

export function tenantJson(t: TenantRecord, address?: string | null, notifications?: readonly NotificationRecord[]) {
  return {
    id: t.id,
    app: t.app,
    role: t.role,
    name: t.name,
    host: t.host,
    state: t.state,
    instance: t.instanceId,
    ...(address !== undefined ? { address } : {}),
    reason: t.reason,
    pinned: t.pinned,
    attempts: t.attempts,
    lastOutput: t.lastOutput ?? [],
    callbackUrl: t.callbackUrl,
    email: t.email,
    createdAt: iso(t.createdAt),
    updatedAt: iso(t.updatedAt),
    ...(notifications ? { notifications: notifications.map((n) => ({ ...n, at: iso(n.at) })) } : {}),
  };
}

const tenantSchema = { type: 'object', additionalProperties: true, properties: { id: { type: 'string' }, name: { type: 'string' }, state: { type: 'string', enum: [...TENANT_STATES] } } } as const;

export interface TenantRouteOptions {
  /** How long a sign-up with a free seat waits for `add` before answering 202. @default 30000 */
  readonly waitMs?: number;
  readonly errors: (...codes: number[]) => Record<number, unknown>;
}

export function registerTenantRoutes(app: FastifyInstance, c: Controller, o: TenantRouteOptions): void {
  const address = async (t: TenantRecord) => {
    if (!t.instanceId) return null;
    const i = await c.getInstance(t.instanceId);
    return i && i.port ? `${i.ip}:${i.port}` : null;
  };
  const accepted = (reply: FastifyReply, t: TenantRecord, retryAfterS: number) =>
    reply.status(202).header('location', `/v1/tenants/${t.id}`).header('retry-after', String(retryAfterS)).send(tenantJson(t, null));

  app.post<{ Params: { name: string; role: string }; Body: { name: string; host?: string; callbackUrl?: string; email?: string }; Headers: { 'idempotency-key'?: string } }>(
    '/v1/apps/:name/roles/:role/tenants',
    {
      schema: {
        tags: ['tenants'],
        summary: 'Sign a tenant up: 201 once placed and added when a seat is free, else 202 with its status URL',
        params: { type: 'object', properties: { name: { type: 'string', pattern: NAME }, role: { type: 'string', pattern: NAME } }, required: ['name', 'role'] },
        headers: { type: 'object', properties: { 'idempotency-key': { type: 'string', minLength: 1, maxLength: 200, pattern: '^[\\x21-\\x7e]+$' } } },
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['name'],
          properties: {
            name: { type: 'string', minLength: 1, maxLength: 63 },
            host: { type: 'string', minLength: 1, maxLength: 253 },
            callbackUrl: { type: 'string', minLength: 1, maxLength: 2048, pattern: '^https?://[^\\s]+$' },
            email: { type: 'string', minLength: 3, maxLength: 254, pattern: '^[^\\s@<>,;"]+@[^\\s@<>,;"]+\\.[^\\s@<>,;"]+$' },
          },
        },
        response: { 201: tenantSchema, 202: tenantSchema, ...o.errors(400, 401, 404, 409, 422) },
      },
    },
    async (req, reply) => {
      const key = req.headers['idempotency-key'];
      const { tenant, created, room } = await c.addTenant(req.params.name, req.params.role, req.body, key);
      if (!created) {
        // The same request again: answer as the first one would be answered now.
        if (tenant.state === 'ready') return reply.status(201).header('location', `/v1/tenants/${tenant.id}`).send(tenantJson(tenant, await address(tenant)));
        return accepted(reply, tenant, 2);
      }
      if (!room) return accepted(reply, tenant, 10);
      const t = (await c.waitTenant(tenant.id, o.waitMs ?? 30_000)) ?? tenant;
      if (t.state === 'ready') return reply.status(201).header('location', `/v1/tenants/${t.id}`).send(tenantJson(t, await address(t)));
      if (t.state === 'failed') {
        void reply.header('location', `/v1/tenants/${t.id}`);
        throw new ApiError('tenant_failed', `tenant ${t.name}: ${t.reason ?? 'add failed'}`);
      }
      return accepted(reply, t, 2);
    },
  );

  app.get<{ Querystring: { app?: string; role?: string; state?: TenantState } }>(
    '/v1/tenants',
    {
      schema: {
        tags: ['tenants'],
        summary: 'Tenants, in arrival order',
        querystring: {
          type: 'object', additionalProperties: false,
          properties: { app: { type: 'string', pattern: NAME }, role: { type: 'string', pattern: NAME }, state: { type: 'string', enum: [...TENANT_STATES] } },
        },
        response: { 200: { type: 'object', properties: { tenants: { type: 'array', items: tenantSchema } } }, ...o.errors(400, 401) },
      },
    },
    async (req) => {
      const q = req.query;
      const list = await c.listTenants({ ...(q.app ? { app: q.app } : {}), ...(q.role ? { role: q.role } : {}), ...(q.state ? { state: q.state } : {}) });
      return { tenants: list.map((t) => tenantJson(t)) };
    },
  );

  const roleParams = { type: 'object', properties: { name: { type: 'string', pattern: NAME }, role: { type: 'string', pattern: NAME } }, required: ['name', 'role'] } as const;
  const planSchema = { type: 'object', additionalProperties: true, properties: { summary: { type: 'string' }, saves: { type: 'integer' } } } as const;

  app.get<{ Params: { name: string; role: string }; Querystring: { maxMoves?: string } }>(
    '/v1/apps/:name/roles/:role/tenants/plan',
    {
      schema: {
        tags: ['tenants'],
        summary: 'Consolidation as a dry run: which instances moving tenants could empty, and what it saves',
        params: roleParams,
        querystring: { type: 'object', additionalProperties: false, properties: { maxMoves: { type: 'string', pattern: '^[0-9]{1,5}$' } } },
        response: { 200: planSchema, ...o.errors(400, 401, 404, 422) },
      },
    },
    async (req) => c.tenantPlan(req.params.name, req.params.role, req.query.maxMoves !== undefined ? Number(req.query.maxMoves) : 10_000),
  );

  app.post<{ Params: { name: string; role: string }; Body: { maxMoves?: number } | undefined }>(
    '/v1/apps/:name/roles/:role/tenants/rebalance',
    {
      schema: {
        tags: ['tenants'],
        summary: 'Apply the consolidation plan: one tenant at a time, added on its new instance and routed there before it leaves the old',
        params: roleParams,
        body: { type: ['object', 'null'], additionalProperties: false, properties: { maxMoves: { type: 'integer', minimum: 0, maximum: 10_000 } } },
        response: { 202: planSchema, ...o.errors(400, 401, 404, 422) },
      },
    },
    async (req, reply) => reply.status(202).send(await c.rebalance(req.params.name, req.params.role, req.body?.maxMoves ?? 10_000)),
  );

  const idParams = { type: 'object', properties: { id: { type: 'string', pattern: '^t-[0-9a-f-]{36}$' } }, required: ['id'] } as const;

  app.put<{ Params: { id: string }; Body: { pinned: boolean } }>(
    '/v1/tenants/:id/pinned',
    {
      schema: {
        tags: ['tenants'], summary: 'Pin a tenant to its instance (consolidation never moves it), or unpin it', params: idParams,
        body: { type: 'object', additionalProperties: false, required: ['pinned'], properties: { pinned: { type: 'boolean' } } },
        response: { 200: tenantSchema, ...o.errors(400, 401, 404) },
      },
    },
    async (req) => tenantJson(await c.pinTenant(req.params.id, req.body.pinned)),
  );

  app.get<{ Params: { id: string } }>(
    '/v1/tenants/:id',
    { schema: { tags: ['tenants'], summary: 'One tenant: state, instance and address, reason, last output, notification attempts', params: idParams, response: { 200: tenantSchema, ...o.errors(400, 401, 404) } } },
    async (req) => {
      const t = await c.getTenant(req.params.id);
      if (!t) throw new ApiError('not_found', `no tenant ${req.params.id}`);
      return tenantJson(t, await address(t), await c.tenantNotifications(t.id));
    },
  );

  app.delete<{ Params: { id: string } }>(
    '/v1/tenants/:id',
    { schema: { tags: ['tenants'], summary: 'Remove a tenant: unrouted, then `remove` on its instance, then its seat is free', params: idParams, response: { 202: tenantSchema, ...o.errors(400, 401, 404) } } },
    async (req, reply) => {
      const t = await c.removeTenant(req.params.id);
      return reply.status(202).header('location', `/v1/tenants/${t.id}`).send(tenantJson(t));
    },
  );
}
