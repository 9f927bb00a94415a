/**
 * Fleet routes of the REST API (docs/fleet.md):
 *
 * - `POST /v1/tokens` `{ app, ttlSeconds?, uses?, labels? }`: a join token, shown once (only its
 *   sha256 is kept); `GET /v1/tokens`; `DELETE /v1/tokens/{id}` revokes one.
 * - `GET /v1/nodes[?app]`: joined hosts, their state, labels, and what they run.
 */
import type { FastifyInstance } from 'fastify';
import { labelsSchema, newJoinToken, type Clock } from '../core/index.js';
import type { JoinTokenRecord, Store } from '../adapters/store/index.js';
import { ApiError } from './errors.js';
import type { NodeRegistry } from './nodes.js';
import { tokenRefusal } from './nodes.js';

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
const APP = '^[a-z][a-z0-9-]{0,62}$';

export interface FleetRouteOptions {
  readonly store: Store;
  readonly clock: Clock;
  readonly nodes: NodeRegistry;
  readonly errors: (...codes: number[]) => Record<number, unknown>;
}

export function tokenJson(t: JoinTokenRecord, now: number) {
  const why = tokenRefusal(t, now);
  return {
    id: t.id,
    app: t.app,
    labels: t.labels ?? {},
    uses: t.uses,
    maxUses: t.maxUses,
    expiresAt: iso(t.expiresAt),
    revokedAt: iso(t.revokedAt),
    createdAt: iso(t.createdAt),
    // A token the controller made for one cloud machine (its user data): that instance's id.
    instance: t.instanceId,
    state: why === undefined ? 'valid' : t.revokedAt !== null ? 'revoked' : t.expiresAt !== null && t.expiresAt <= now ? 'expired' : 'used-up',
  };
}

export function registerFleetRoutes(app: FastifyInstance, o: FleetRouteOptions): void {
  const { store, clock, nodes, errors } = o;
  app.post<{ Body: { app: string; ttlSeconds?: number; uses?: number; labels?: Record<string, string> } }>(
    '/v1/tokens',
    {
      schema: {
        tags: ['fleet'],
        summary: 'Create a join token for an app\'s pool (shown once; only its hash is kept)',
        body: {
          type: 'object', additionalProperties: false, required: ['app'],
          properties: {
            app: { type: 'string', pattern: APP },
            ttlSeconds: { type: 'integer', minimum: 1, maximum: 31_536_000 },
            uses: { type: 'integer', minimum: 1, maximum: 100_000 },
            labels: { type: 'object', additionalProperties: { type: 'string' } },
          },
        },
        response: { 201: { type: 'object', additionalProperties: true }, ...errors(400, 401) },
      },
    },
    async (req, reply) => {
      const labels = req.body.labels ? labelsSchema.safeParse(req.body.labels) : undefined;
      if (labels && !labels.success) throw new ApiError('invalid_request', `body.labels: ${labels.error.issues[0]?.message ?? 'invalid'}`);
      const now = clock.now();
      const t = newJoinToken();
      const rec = {
        id: t.id, hash: t.hash, app: req.body.app, labels: labels?.data ?? null, maxUses: req.body.uses ?? null,
        expiresAt: req.body.ttlSeconds !== undefined ? now + req.body.ttlSeconds * 1000 : null, createdAt: now,
      };
      await store.createJoinToken(rec);
      return reply.status(201).send({ ...tokenJson({ ...rec, uses: 0, revokedAt: null, instanceId: null }, now), token: t.token });
    },
  );

  app.get('/v1/tokens', { schema: { tags: ['fleet'], summary: 'Join tokens (never the secret)', response: { 200: { type: 'object', additionalProperties: true }, ...errors(401) } } }, async () => {
    const now = clock.now();
    return { tokens: (await store.listJoinTokens()).map((t) => tokenJson(t, now)) };
  });

  app.delete<{ Params: { id: string } }>(
    '/v1/tokens/:id',
    { schema: { tags: ['fleet'], summary: 'Revoke a join token', params: { type: 'object', properties: { id: { type: 'string', maxLength: 64 } } }, response: { 200: { type: 'object', additionalProperties: true }, ...errors(401, 404) } } },
    async (req) => {
      const t = await store.getJoinToken(req.params.id);
      if (!t) throw new ApiError('not_found', `token ${req.params.id}: no such token`);
      await store.revokeJoinToken(t.id, clock.now());
      return tokenJson((await store.getJoinToken(t.id))!, clock.now());
    },
  );

  app.get<{ Querystring: { app?: string } }>(
    '/v1/nodes',
    { schema: { tags: ['fleet'], summary: 'Joined hosts: state, labels, what they run', querystring: { type: 'object', properties: { app: { type: 'string', maxLength: 63 } } }, response: { 200: { type: 'object', additionalProperties: true }, ...errors(401) } } },
    async (req) => {
      const list = await store.listNodes(req.query.app !== undefined ? { app: req.query.app } : {});
      const byNode = new Map<string, { id: string; role: string | null; state: string }>();
      for (const a of new Set(list.map((n) => n.app))) {
        for (const i of await store.listInstances({ app: a })) {
          const n = i.providerRef?.node;
          if (typeof n === 'string' && i.destroyedAt === null) byNode.set(n, { id: i.id, role: i.role, state: i.state });
        }
      }
      return {
        nodes: list.map((n) => {
          const runs = byNode.get(n.id) ?? null;
          const connected = nodes.connected(n.id);
          return {
            id: n.id, app: n.app, hostname: n.hostname, addresses: n.addresses, labels: n.labels,
            state: n.state !== 'ready' ? n.state : !connected ? 'unreachable' : runs ? 'busy' : 'idle',
            connected, instance: runs, tokenId: n.tokenId, joinedAt: iso(n.joinedAt), lastSeenAt: iso(n.lastSeenAt),
          };
        }),
      };
    },
  );
}
