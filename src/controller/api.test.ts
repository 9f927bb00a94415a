import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { systemClock } from '../core/index.js';
import { openPgliteStore, type Store } from '../adapters/store/index.js';
import { LocalProvider } from '../adapters/providers/index.js';
import { buildApi } from './api.js';
import { Controller } from './controller.js';
import { ERROR_CODES } from './errors.js';

const TOKEN = 'test-token-0123456789';
const auth = { authorization: `Bearer ${TOKEN}` };
let app: FastifyInstance;
let store: Store;
let controller: Controller;
let dir: string;

// Roles at count 0: the API is exercised without starting processes (the e2e suite does that).
const yaml = `
app: shop
roles:
  db:
    min: 0
    max: 3
    count: 0
    start: sleep 100
    exports: { url: "http://\${ip}:\${port}" }
  api:
    min: 0
    max: 4
    count: 0
    imports: [db.url]
    start: sleep 100
`;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'drover-api-'));
  store = await openPgliteStore();
  const logger = pino({ level: 'silent' });
  controller = new Controller({ store, provider: new LocalProvider({ baseDir: dir }), clock: systemClock, logger });
  app = await buildApi({ controller, token: TOKEN, logger: false, defaultAppDir: dir, version: 'test' });
  await controller.start({ name: 'none', send: () => false, isConnected: () => false, fence: () => {}, connected: () => [], close: async () => {} }, 'http://127.0.0.1:1');
});

after(async () => {
  await controller.stop();
  await app.close();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

test('health needs no token; everything else does, and a 401 says nothing more', async () => {
  const h = await app.inject({ method: 'GET', url: '/v1/health' });
  assert.equal(h.statusCode, 200);
  assert.equal(h.json<{ status: string }>().status, 'ok');
  for (const url of ['/v1/apps', '/v1/apps/shop', '/v1/nope', '/v1/openapi.json', '/anything']) {
    for (const headers of [{}, { authorization: 'Bearer wrong' }, { authorization: TOKEN }]) {
      const r = await app.inject({ method: 'GET', url, headers });
      assert.equal(r.statusCode, 401, `${url} ${JSON.stringify(headers)}`);
      assert.deepEqual(r.json(), { error: { code: 'unauthorized', message: 'missing or invalid bearer token' } });
    }
  }
});

test('/metrics serves Prometheus text to a client with the token only', async () => {
  const denied = await app.inject({ method: 'GET', url: '/metrics' });
  assert.equal(denied.statusCode, 401);
  const r = await app.inject({ method: 'GET', url: '/metrics', headers: auth });
  assert.equal(r.statusCode, 200);
  assert.match(String(r.headers['content-type']), /^text\/plain/);
  for (const name of ['drover_role_desired', 'drover_decisions_total', 'drover_replacements_total', 'drover_drain_duration_seconds', 'drover_reconcile_duration_seconds']) {
    assert.match(r.body, new RegExp(`# TYPE ${name} `), name);
  }
});

test('the OpenAPI document lists the routes', async () => {
  const r = await app.inject({ method: 'GET', url: '/v1/openapi.json', headers: auth });
  assert.equal(r.statusCode, 200);
  const doc = r.json<{ openapi: string; paths: Record<string, unknown> }>();
  assert.equal(doc.openapi, '3.0.3');
  for (const p of ['/v1/apps', '/v1/apps/{name}', '/v1/apps/{name}/roles/{role}/count', '/v1/instances', '/v1/events', '/v1/health']) {
    assert.ok(doc.paths[p], `missing ${p}`);
  }
});

test('apply, read, scale, events', async () => {
  const put = await app.inject({ method: 'PUT', url: '/v1/apps/shop', headers: auth, payload: { yaml, appDir: dir } });
  assert.equal(put.statusCode, 201, put.body);
  const again = await app.inject({ method: 'PUT', url: '/v1/apps/shop', headers: auth, payload: { yaml, appDir: dir } });
  assert.equal(again.statusCode, 200);
  assert.equal(again.json<{ changed: boolean }>().changed, false);

  const got = await app.inject({ method: 'GET', url: '/v1/apps/shop', headers: auth });
  const body = got.json<{ startOrder: string[][]; roles: { name: string; desired: number }[] }>();
  assert.deepEqual(body.startOrder, [['db'], ['api']]);
  assert.deepEqual(body.roles.map((r) => [r.name, r.desired]), [['db', 0], ['api', 0]]);

  const bad = await app.inject({ method: 'PUT', url: '/v1/apps/shop/roles/api/count', headers: auth, payload: { count: 9 } });
  assert.equal(bad.statusCode, 422);
  assert.equal(bad.json<{ error: { code: string; message: string } }>().error.message, "count: 9 is outside api's bounds [0, 4]");

  const missing = await app.inject({ method: 'PUT', url: '/v1/apps/shop/roles/nope/count', headers: auth, payload: { count: 1 } });
  assert.equal(missing.statusCode, 404);

  const ev = await app.inject({ method: 'GET', url: '/v1/events?app=shop', headers: auth });
  const kinds = ev.json<{ events: { kind: string; message: string }[] }>().events.map((e) => e.kind);
  assert.ok(kinds.includes('app.apply'));
});

test('an invalid app file is refused whole with every reason, and nothing is applied', async () => {
  const r = await app.inject({
    method: 'PUT',
    url: '/v1/apps/other',
    headers: auth,
    payload: { yaml: 'app: other\nroles:\n  api:\n    imports: [db.url]\n    strat: x\n' },
  });
  assert.equal(r.statusCode, 422);
  const e = r.json<{ error: { code: string; details: { path: string; message: string }[] } }>().error;
  assert.equal(e.code, 'invalid_spec');
  assert.ok(e.details.length >= 1);
  const list = await app.inject({ method: 'GET', url: '/v1/apps', headers: auth });
  assert.deepEqual(list.json<{ apps: { name: string }[] }>().apps.map((a) => a.name), ['shop']);

  const mismatch = await app.inject({ method: 'PUT', url: '/v1/apps/other', headers: auth, payload: { yaml } });
  assert.equal(mismatch.statusCode, 400);
  assert.equal(mismatch.json<{ error: { code: string } }>().error.code, 'name_mismatch');
});

test('fuzz: every route answers generated input with a 4xx and a registered code, never a 5xx', async () => {
  const codes = new Set(Object.keys(ERROR_CODES));
  const segment = fc.oneof(fc.constantFrom('shop', 'api', 'db', 'nope', '%00', '..', 'i-1', 'A'), fc.string({ maxLength: 12 }).map(encodeURIComponent));
  const routes = fc.oneof(
    fc.tuple(fc.constant('PUT'), segment).map(([m, n]) => [m, `/v1/apps/${n}`] as const),
    fc.tuple(fc.constant('GET'), segment).map(([m, n]) => [m, `/v1/apps/${n}`] as const),
    fc.tuple(fc.constant('DELETE'), segment).map(([m, n]) => [m, `/v1/apps/${n}-x`] as const),
    fc.tuple(fc.constant('PUT'), segment, segment).map(([m, a, r]) => [m, `/v1/apps/${a}/roles/${r}/count`] as const),
    fc.tuple(fc.constant('GET'), segment).map(([m, q]) => [m, `/v1/instances/${q}`] as const),
    fc.tuple(fc.constant('GET'), fc.string({ maxLength: 20 })).map(([m, q]) => [m, `/v1/events?${encodeURIComponent(q)}=${encodeURIComponent(q)}`] as const),
    fc.tuple(fc.constant('GET'), fc.string({ maxLength: 20 })).map(([m, q]) => [m, `/v1/instances?app=${encodeURIComponent(q)}`] as const),
  );
  const bodies = fc.oneof(
    fc.jsonValue(),
    fc.record({ yaml: fc.string() }),
    fc.record({ spec: fc.object() }),
    fc.record({ count: fc.oneof(fc.integer(), fc.double(), fc.string()) }),
    fc.string(),
  );
  await fc.assert(
    fc.asyncProperty(routes, bodies, fc.boolean(), async ([method, url], body, asText) => {
      const r = await app.inject({
        method,
        url,
        headers: { ...auth, 'content-type': asText ? 'text/plain' : 'application/json' },
        payload: method === 'GET' || method === 'DELETE' ? undefined : JSON.stringify(body),
      });
      assert.ok(r.statusCode < 500, `${method} ${url} ${JSON.stringify(body)} → ${r.statusCode} ${r.body}`);
      if (r.statusCode >= 400) {
        const code = r.json<{ error: { code: string } }>().error.code;
        assert.ok(codes.has(code), `unregistered code ${code}`);
        assert.equal(ERROR_CODES[code as keyof typeof ERROR_CODES].status, r.statusCode, `${code} with ${r.statusCode}`);
      }
    }),
    { numRuns: 300 },
  );
  // The fuzz must not have applied anything new or deleted the app.
  const list = await app.inject({ method: 'GET', url: '/v1/apps', headers: auth });
  assert.deepEqual(list.json<{ apps: { name: string }[] }>().apps.map((a) => a.name).filter((n) => n !== 'shop'), []);
});

test('the error codes in docs/api.md are exactly the registry', () => {
  const doc = readFileSync(new URL('../../docs/api.md', import.meta.url), 'utf8');
  const documented = [...doc.matchAll(/^\| `([a-z_]+)` \| (\d{3}) \|/gm)].map((m) => [m[1], Number(m[2])]);
  assert.deepEqual(
    documented.sort(),
    Object.entries(ERROR_CODES).map(([k, v]) => [k, v.status]).sort(),
  );
});
