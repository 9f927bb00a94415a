import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type AddressInfo } from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import fc from 'fast-check';
import type { FastifyInstance, InjectOptions } from 'fastify';
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

// ---- bounded, strict input ----------------------------------------------------------------------

type ErrorJson = { error: { code: string; message: string; details?: { path: string; message: string }[] } };

/** The documented error format, exactly: `{ error: { code, message, details? } }`, the code registered with this status. */
function assertErrorShape(status: number, body: string, context = ''): ErrorJson['error'] {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    assert.fail(`${context} ${status}: not JSON: ${body.slice(0, 200)}`);
  }
  assert.ok(typeof json === 'object' && json !== null && Object.keys(json).join() === 'error', `${context} ${body.slice(0, 200)}`);
  const e = (json as ErrorJson).error;
  assert.ok(Object.keys(e).every((k) => ['code', 'message', 'details'].includes(k)), `${context} ${body.slice(0, 200)}`);
  assert.equal(typeof e.message, 'string');
  assert.ok(Object.hasOwn(ERROR_CODES, e.code), `${context} unregistered code ${e.code}`);
  assert.equal(ERROR_CODES[e.code as keyof typeof ERROR_CODES].status, status, `${context} ${e.code} with ${status}`);
  if (e.details !== undefined) for (const d of e.details) assert.deepEqual(Object.keys(d).sort(), ['message', 'path']);
  return e;
}

/** Runs `work` while probing the event loop; returns the longest stall seen, in ms. */
async function longestStall(work: () => Promise<void>): Promise<number> {
  const h = monitorEventLoopDelay({ resolution: 5 });
  // A drift probe besides the histogram: a 10 ms interval that fires late means a blocked loop.
  let last = performance.now();
  let drift = 0;
  const probe = setInterval(() => {
    const now = performance.now();
    drift = Math.max(drift, now - last - 10);
    last = now;
  }, 10);
  h.enable();
  try {
    await work();
  } finally {
    h.disable();
    clearInterval(probe);
  }
  return Math.max(h.max / 1e6, drift);
}

const appNames = async () => (await store.listApps()).map((a) => `${a.name}@${a.generation}`).sort();

test('a ~1 MiB hostile app file is refused with a 4xx in the error format, without blocking the event loop', async () => {
  const keys = (n: number) => `app: hostile\nroles:\n  a:\n    env:\n${Array.from({ length: n }, (_, i) => `      K${i}: v\n`).join('')}`;
  const files: [string, string, RegExp][] = [
    // The attacker's file: ~1 MiB of keys in one mapping (the duplicate-key check is quadratic).
    ['1 MiB of keys', keys(70_000).slice(0, 950_000), /^yaml: the app file is \d+ bytes; at most 262144 \(256 KiB\) are allowed$/],
    ['1 MiB of nesting', `app: hostile\nroles: ${'['.repeat(480_000)}${']'.repeat(480_000)}`.slice(0, 1_000_000), /^yaml: the app file is/],
    // Under the size limit, so the worker sees them.
    ['256 KiB of keys', keys(20_000).slice(0, 250_000), /^invalid_spec: a mapping or list with more than 1000 entries/],
    ['256 KiB of nesting', `app: hostile\nroles: ${'['.repeat(120_000)}${']'.repeat(120_000)}`, /^invalid_spec: nested more than 32 levels deep/],
    ['many aliases', `app: hostile\nx: &a [1, 2, 3]\nroles: [${Array.from({ length: 60_000 }, () => '*a').join(',')}]`, /^invalid_spec: a mapping or list with more than 1000 entries/],
    ['an alias bomb', ['a: &a [x,x,x,x,x,x,x,x,x]', 'b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]', 'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]', 'd: [*c,*c,*c,*c,*c,*c,*c,*c,*c]', 'app: hostile', 'roles: { a: {} }'].join('\n'), /^invalid_spec: YAML error: Excessive alias count/],
    ['many roles', `app: hostile\nroles:\n${Array.from({ length: 5000 }, (_, i) => `  r${i}: { start: x }\n`).join('')}`, /^invalid_spec: (roles: at most 100 roles|a mapping or list with more than 1000 entries)/],
  ];
  const before = await appNames();
  for (const [name, yamlText] of files) {
    let r: Awaited<ReturnType<typeof app.inject>> | undefined;
    const stall = await longestStall(async () => {
      r = await app.inject({ method: 'PUT', url: '/v1/apps/hostile', headers: auth, payload: { yaml: yamlText } });
    });
    assert.ok(r);
    assert.ok(r.statusCode === 413 || r.statusCode === 422, `${name}: ${r.statusCode} ${r.body.slice(0, 300)}`);
    const e = assertErrorShape(r.statusCode, r.body, name);
    const line = e.code === 'invalid_spec' ? `invalid_spec: ${e.details?.[0]?.message ?? ''}` : e.message;
    assert.match(line, files.find((f) => f[0] === name)![2], name);
    assert.ok(stall < 200, `${name}: the event loop was blocked for ${Math.round(stall)} ms`);
  }
  assert.deepEqual(await appNames(), before, 'nothing was applied');
});

test('a NUL byte or another control character in any string is refused with the field named', async () => {
  const r = await app.inject({
    method: 'PUT',
    url: '/v1/apps/shop',
    headers: auth,
    payload: { spec: { app: 'shop', roles: { db: { count: 0, start: 'sleep 100\u0000; rm -rf /', exports: { url: 'http://x\ny' } } } } },
  });
  assert.equal(r.statusCode, 422, r.body);
  const e = assertErrorShape(422, r.body);
  assert.deepEqual([...(e.details ?? [])].sort((a, b) => a.path.localeCompare(b.path)), [
    { path: 'roles.db.exports.url', message: 'control character U+000A is not allowed here (only commands and env values may hold tabs and newlines)' },
    { path: 'roles.db.start', message: 'control character U+0000 is not allowed' },
  ]);
  const viaYaml = await app.inject({ method: 'PUT', url: '/v1/apps/shop', headers: auth, payload: { yaml: 'app: shop\nroles:\n  db:\n    start: "sleep 1\\0"\n' } });
  assert.equal(assertErrorShape(viaYaml.statusCode, viaYaml.body).details?.[0]?.path, 'roles.db.start');
  const dir = await app.inject({ method: 'PUT', url: '/v1/apps/shop', headers: auth, payload: { yaml, appDir: '/tmp/x\u0000y' } });
  assert.equal(dir.statusCode, 400);
  assert.match(assertErrorShape(400, dir.body).message, /^body\.appDir: /);
});

test('a role named like an Object built-in is refused; looking one up is a 404, never a 500', async () => {
  const r = await app.inject({ method: 'PUT', url: '/v1/apps/proto', headers: auth, payload: { yaml: 'app: proto\nroles:\n  constructor: { count: 0, start: x }\n' } });
  assert.equal(r.statusCode, 422);
  assert.deepEqual(assertErrorShape(422, r.body).details, [{ path: 'roles.constructor', message: '"constructor" is a reserved name' }]);
  for (const role of ['constructor', 'tostring', 'prototype', '__proto__', 'hasownproperty']) {
    for (const [method, url, payload] of [
      ['PUT', `/v1/apps/shop/roles/${role}/count`, { count: 1 }],
      ['GET', `/v1/apps/shop/roles/${role}`, undefined],
    ] as const) {
      const res = await app.inject({ method, url, headers: auth, ...(payload ? { payload } : {}) });
      assert.ok(res.statusCode === 404 || res.statusCode === 400, `${method} ${url}: ${res.statusCode} ${res.body}`);
      assertErrorShape(res.statusCode, res.body, url);
    }
  }
  for (const name of ['constructor', '__proto__']) {
    const res = await app.inject({ method: 'GET', url: `/v1/apps/${name}`, headers: auth });
    assert.ok(res.statusCode === 404 || res.statusCode === 400, `${name}: ${res.statusCode}`);
  }
});

test('the scale API takes a count as a JSON integer only: no coercion of null, false or "2"', async () => {
  const desired = async () => (await store.listRoles('shop')).find((r) => r.role === 'api')?.desired;
  const was = await desired();
  for (const payload of [{ count: '2' }, { count: null }, { count: false }, { count: true }, { count: 2.5 }, { count: [2] }, { count: 1001 }, { auto: 'true' }, { auto: false }, {}, { count: 1, auto: true }, { count: 1, extra: 1 }]) {
    const r = await app.inject({ method: 'PUT', url: '/v1/apps/shop/roles/api/count', headers: auth, payload });
    assert.equal(r.statusCode, 400, `${JSON.stringify(payload)} → ${r.statusCode} ${r.body}`);
    assert.match(assertErrorShape(400, r.body).message, /^body/, JSON.stringify(payload));
  }
  assert.equal(await desired(), was);
  const bad = await app.inject({ method: 'PUT', url: '/v1/apps/shop/roles/api/count', headers: auth, payload: { count: '2' } });
  assert.equal(bad.json<ErrorJson>().error.message, 'body.count: must be integer');
  const extra = await app.inject({ method: 'PUT', url: '/v1/apps/shop/roles/api/count', headers: auth, payload: { count: 1, extra: 1 } });
  assert.equal(extra.json<ErrorJson>().error.message, 'body: unknown field "extra"');
  const ok = await app.inject({ method: 'PUT', url: '/v1/apps/shop/roles/api/count', headers: auth, payload: { count: 2 } });
  assert.equal(ok.statusCode, 200, ok.body);
  assert.equal(await desired(), 2);
  await app.inject({ method: 'PUT', url: '/v1/apps/shop/roles/api/count', headers: auth, payload: { count: was ?? 0 } });
});

test('numeric query parameters are whole numbers, parsed strictly, with the parameter named', async () => {
  const cases: [string, string][] = [
    ['/v1/events?limit=abc', 'querystring.limit: expected a whole number'],
    ['/v1/events?limit=0', 'querystring.limit: expected a whole number from 1 to 1000'],
    ['/v1/events?limit=1001', 'querystring.limit: expected a whole number from 1 to 1000'],
    ['/v1/events?limit=1e3', 'querystring.limit: expected a whole number'],
    ['/v1/events?after=-1', 'querystring.after: expected a whole number'],
    ['/v1/events?after=%20', 'querystring.after: expected a whole number'],
    ['/v1/events?waitMs=60001&after=0', 'querystring.waitMs: expected a whole number from 0 to 60000'],
    ['/v1/events?limit=1&limit=2', 'querystring.limit: must be string'],
    ['/v1/events?nope=1', 'querystring: unknown field "nope"'],
    ['/v1/instances?all=1', 'querystring.all: expected "true" or "false"'],
  ];
  for (const [url, message] of cases) {
    const r = await app.inject({ method: 'GET', url, headers: auth });
    assert.equal(r.statusCode, 400, `${url}: ${r.body}`);
    assert.equal(assertErrorShape(400, r.body, url).message, message, url);
  }
  for (const url of ['/v1/events?limit=1000&after=0', '/v1/events?app=shop&limit=1', '/v1/instances?all=true', '/v1/instances?all=false&app=shop']) {
    const r = await app.inject({ method: 'GET', url, headers: auth });
    assert.equal(r.statusCode, 200, `${url}: ${r.body}`);
  }
});

test('every error is in the documented format: 404, bad JSON, 413, 414, 415, 500', async () => {
  const cases: [InjectOptions, number, string][] = [
    [{ method: 'GET', url: '/v1/nope', headers: auth }, 404, 'not_found'],
    [{ method: 'PATCH', url: '/v1/apps/shop', headers: auth }, 404, 'not_found'],
    [{ method: 'PUT', url: '/v1/apps/shop', headers: { ...auth, 'content-type': 'application/json' }, payload: '{"yaml": ' }, 400, 'invalid_request'],
    [{ method: 'PUT', url: '/v1/apps/shop', headers: { ...auth, 'content-type': 'application/json' }, payload: '{"__proto__": {"x": 1}}' }, 400, 'invalid_request'],
    [{ method: 'PUT', url: '/v1/apps/shop', headers: { ...auth, 'content-type': 'application/json' }, payload: '' }, 400, 'invalid_request'],
    [{ method: 'PUT', url: '/v1/apps/shop', headers: { ...auth, 'content-type': 'application/json' }, payload: JSON.stringify({ yaml: 'x'.repeat(1 << 20) }) }, 413, 'payload_too_large'],
    [{ method: 'GET', url: `/v1/apps/${'a'.repeat(101)}`, headers: auth }, 414, 'uri_too_long'],
    [{ method: 'GET', url: `/v1/apps/${'a'.repeat(101)}` }, 401, 'unauthorized'],
    [{ method: 'GET', url: '/v1/apps/%E0%A4%A', headers: auth }, 400, 'invalid_request'],
    [{ method: 'PUT', url: '/v1/apps/shop', headers: { ...auth, 'content-type': 'text/plain' }, payload: yaml }, 415, 'unsupported_media_type'],
    [{ method: 'PUT', url: '/v1/apps/shop', headers: { ...auth, 'content-type': 'application/x-yaml' }, payload: yaml }, 415, 'unsupported_media_type'],
  ];
  for (const [req, status, code] of cases) {
    const r = await app.inject(req);
    const what = `${req.method ?? ''} ${typeof req.url === 'string' ? req.url : ''}`.slice(0, 60);
    assert.equal(r.statusCode, status, `${what}: ${r.body.slice(0, 200)}`);
    assert.equal(assertErrorShape(status, r.body, what).code, code, what);
    assert.doesNotMatch(r.body, /FST_|Fastify|SyntaxError|Unexpected token/, what);
  }
  // A bug: "internal error" and the request id; the error's own text only in the log.
  const original = controller.listApps.bind(controller);
  controller.listApps = () => Promise.reject(new Error('secret: connection string postgres://u:p@db'));
  try {
    const r = await app.inject({ method: 'GET', url: '/v1/apps', headers: auth });
    assert.equal(r.statusCode, 500);
    assert.match(assertErrorShape(500, r.body).message, /^internal error \(request req-[0-9a-z]+\)$/);
    assert.doesNotMatch(r.body, /secret|postgres/);
  } finally {
    controller.listApps = original;
  }
});

test('HTTP server limits: slow headers time out, oversized headers get a 431, both in the error format', async () => {
  const fast = await buildApi({ controller, token: TOKEN, logger: false, defaultAppDir: dir, version: 'test', timeouts: { headersMs: 400, requestMs: 800, keepAliveMs: 300 } });
  await fast.listen({ host: '127.0.0.1', port: 0 });
  const port = (fast.server.address() as AddressInfo).port;
  /** Writes `data`, then waits for the server to close the socket; what it answered, and when. */
  const exchange = (data: string) =>
    new Promise<{ ms: number; answer: string }>((resolve, reject) => {
      const t0 = performance.now();
      const sock = connect({ host: '127.0.0.1', port }, () => sock.write(data));
      let answer = '';
      sock.setEncoding('utf8');
      sock.on('data', (d: string) => (answer += d));
      sock.on('error', reject);
      sock.on('close', () => resolve({ ms: performance.now() - t0, answer }));
      setTimeout(() => {
        sock.destroy();
        reject(new Error(`still open after 5 s; got ${answer}`));
      }, 5000).unref();
    });
  const bodyOf = (answer: string) => answer.slice(answer.indexOf('\r\n\r\n') + 4);
  try {
    // A header line that never ends (slowloris): closed within headersMs plus the 1 s check interval.
    const slow = await exchange('GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: aaa');
    assert.ok(slow.ms < 400 + 1000 + 1000, `closed after ${Math.round(slow.ms)} ms`);
    assert.match(slow.answer, /^HTTP\/1\.1 408 /);
    assert.equal(assertErrorShape(408, bodyOf(slow.answer)).code, 'request_timeout');
    // A connection that sends nothing at all is closed too.
    const silent = await exchange('');
    assert.ok(silent.ms < 400 + 1000 + 1000, `closed after ${Math.round(silent.ms)} ms`);
    // A body that trickles in: the whole request must arrive within requestMs.
    const trickle = await exchange(`PUT /v1/apps/shop HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"y`);
    assert.ok(trickle.ms < 800 + 1000 + 1000, `closed after ${Math.round(trickle.ms)} ms`);
    // Headers larger than 16 KiB.
    const big = await exchange(`GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    assert.match(big.answer, /^HTTP\/1\.1 431 /);
    assert.equal(assertErrorShape(431, bodyOf(big.answer)).code, 'headers_too_large');
    // A request line longer than that: the same.
    const longUrl = await exchange(`GET /v1/apps/${'a'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`);
    assert.equal(assertErrorShape(431, bodyOf(longUrl.answer)).code, 'headers_too_large');
    // Not HTTP at all.
    const junk = await exchange('\x00\x01 hello\r\n\r\n');
    assert.match(junk.answer, /^HTTP\/1\.1 400 /);
    assert.equal(assertErrorShape(400, bodyOf(junk.answer)).code, 'invalid_request');
    // A well-behaved client is still served, and its idle keep-alive connection closed after keepAliveMs.
    const ok = await exchange('GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.match(ok.answer, /^HTTP\/1\.1 200 /);
    assert.ok(ok.ms < 300 + 1000 + 1000, `keep-alive closed after ${Math.round(ok.ms)} ms`);
  } finally {
    await fast.close();
  }
});

test('the HTTP server timeouts are set by default', async () => {
  const s = app.server;
  assert.equal(s.headersTimeout, 10_000);
  assert.equal(s.requestTimeout, 30_000);
  assert.equal(s.keepAliveTimeout, 5_000);
});

test('fuzz: every route, random bodies, paths and queries: never a 5xx, errors in the format, nothing changed by a refusal', async () => {
  const snapshot = async () =>
    JSON.stringify({
      apps: (await store.listApps()).map((a) => [a.name, a.generation, a.deleting, a.spec]),
      roles: await store.listRoles('shop'),
    });
  const segment = fc.oneof(
    fc.constantFrom('shop', 'api', 'db', 'nope', 'constructor', '__proto__', 'toString', '%00', '%ZZ', '..', 'i-1', 'A', 'a'.repeat(101)),
    fc.string({ maxLength: 12 }).map(encodeURIComponent),
  );
  const queryValue = fc.oneof(fc.constantFrom('0', '1', '-1', '1e3', 'true', 'false', 'null', '', '00', '999999999999999999', 'shop'), fc.string({ maxLength: 10 }));
  const query = fc
    .dictionary(fc.constantFrom('app', 'role', 'all', 'after', 'limit', 'waitMs', 'x', '__proto__'), queryValue, { maxKeys: 3 })
    // waitMs long-polls: only values that are refused, or 0, so the fuzz does not wait.
    .map((q) => (q.waitMs !== undefined && /^[0-9]+$/.test(q.waitMs) ? { ...q, waitMs: '0' } : q))
    .map((q) => new URLSearchParams(q).toString());
  const routes = fc.oneof(
    fc.constant(['GET', '/v1/health'] as const),
    fc.constant(['GET', '/v1/openapi.json'] as const),
    fc.constant(['GET', '/metrics'] as const),
    fc.constant(['GET', '/v1/apps'] as const),
    fc.tuple(fc.constantFrom('GET', 'PUT', 'POST', 'PATCH'), segment).map(([m, n]) => [m, `/v1/apps/${n}`] as const),
    // Not shop itself: a DELETE of it would be a legitimate change.
    segment.map((n) => ['DELETE', `/v1/apps/${n}-x`] as const),
    segment.map((n) => ['GET', `/v1/apps/${n}/roles`] as const),
    fc.tuple(segment, segment).map(([a, r]) => ['GET', `/v1/apps/${a}/roles/${r}`] as const),
    fc.tuple(fc.constantFrom('PUT', 'GET'), segment, segment).map(([m, a, r]) => [m, `/v1/apps/${a}/roles/${r}/count`] as const),
    fc.tuple(segment, query).map(([id, q]) => ['GET', `/v1/instances/${id}?${q}`] as const),
    query.map((q) => ['GET', `/v1/instances?${q}`] as const),
    query.map((q) => ['GET', `/v1/events?${q}`] as const),
  );
  const bodies = fc.oneof(
    fc.jsonValue(),
    fc.record({ yaml: fc.oneof(fc.string(), fc.constant(yaml.replace('sleep 100', 'sleep 1\u0000'))) }, { requiredKeys: [] }),
    fc.record({ spec: fc.oneof(fc.object(), fc.constant({ app: 'shop', roles: { constructor: {} } })), appDir: fc.string() }, { requiredKeys: [] }),
    fc.record({ count: fc.oneof(fc.integer(), fc.double(), fc.string(), fc.constant(null), fc.boolean()), auto: fc.jsonValue() }, { requiredKeys: [] }),
    fc.string(),
  );
  const contentType = fc.constantFrom('application/json', 'text/plain', 'application/json; charset=utf-8', 'application/x-www-form-urlencoded', undefined);
  await fc.assert(
    fc.asyncProperty(routes, bodies, contentType, fc.boolean(), async ([method, url], body, type, raw) => {
      const before = await snapshot();
      const hasBody = method !== 'GET' && method !== 'DELETE';
      const payload = hasBody ? (raw && typeof body === 'string' ? body : JSON.stringify(body)) : undefined;
      const r = await app.inject({ method, url, headers: { ...auth, ...(type && hasBody ? { 'content-type': type } : {}) }, ...(payload !== undefined ? { payload } : {}) });
      const what = `${method} ${url} ${String(payload).slice(0, 100)} → ${r.statusCode} ${r.body.slice(0, 200)}`;
      assert.ok(r.statusCode < 500, what);
      if (r.statusCode >= 400) {
        assertErrorShape(r.statusCode, r.body, what);
        assert.equal(await snapshot(), before, `refused, yet the store changed: ${what}`);
      }
    }),
    { numRuns: 300 },
  );
});

test('an app forgotten between a list and its summary (its deletion just done) is not a 404 of the list or the status', async () => {
  const listApps = controller.listApps.bind(controller);
  for (const url of ['/v1/apps', '/v1/status']) {
    const put = await app.inject({ method: 'PUT', url: '/v1/apps/going', headers: auth, payload: { yaml: 'app: going\nroles:\n  w: { count: 0, start: sleep 100 }\n' } });
    assert.equal(put.statusCode, 201, put.body);
    // The reconciler forgets the app right after the list read it (as it does once a deleted app's
    // last instance is gone).
    controller.listApps = async () => {
      const list = await listApps();
      controller.listApps = listApps;
      await store.deleteApp('going');
      return list;
    };
    const r = await app.inject({ method: 'GET', url, headers: auth });
    controller.listApps = listApps;
    assert.equal(r.statusCode, 200, `${url}: ${r.body}`);
  }
});

/** An API over the shared controller whose start is not over until the test says so. */
async function startingApi(startWaitMs?: number) {
  let open!: () => void;
  let fail!: () => void;
  const gate: { state: 'starting' | 'ready' | 'failed'; ready: Promise<void> } = { state: 'starting', ready: new Promise<void>((res, rej) => ((open = res), (fail = () => rej(new Error('no store'))))) };
  gate.ready.catch(() => undefined);
  const api = await buildApi({ controller, token: TOKEN, logger: false, defaultAppDir: dir, version: 'test', starting: gate, ...(startWaitMs !== undefined ? { startWaitMs } : {}) });
  return {
    api,
    open: () => ((gate.state = 'ready'), open()),
    fail: () => ((gate.state = 'failed'), fail()),
  };
}

test('while the controller starts, health says so and answers; other requests wait for the start, then are handled', async (t) => {
  const s = await startingApi();
  t.after(() => s.api.close());
  const h = await s.api.inject({ method: 'GET', url: '/v1/health' });
  assert.equal(h.statusCode, 200);
  assert.equal(h.json<{ status: string }>().status, 'starting');
  const id = await s.api.inject({ method: 'GET', url: '/v1/identity?challenge=abcdefghijklmnop' });
  assert.equal(id.statusCode, 200, 'the identity proof needs no store');
  // A bad token is refused at once, not after the start.
  const denied = await s.api.inject({ method: 'GET', url: '/v1/apps', headers: { authorization: 'Bearer wrong' } });
  assert.equal(denied.statusCode, 401);
  let answered = false;
  const list = s.api.inject({ method: 'GET', url: '/v1/apps', headers: auth }).then((r) => ((answered = true), r));
  const change = s.api.inject({ method: 'PUT', url: '/v1/apps/shop', headers: auth, payload: { yaml } });
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(answered, false, 'waits for the start');
  s.open();
  assert.equal((await list).statusCode, 200);
  const applied = await change;
  assert.ok([200, 201].includes(applied.statusCode), applied.body);
  assert.equal((await s.api.inject({ method: 'GET', url: '/v1/health' })).json<{ status: string }>().status, 'ok');
});

test('a start that fails, or does not end in time, answers waiting requests 503 starting', async (t) => {
  const failing = await startingApi();
  t.after(() => failing.api.close());
  const waiting = failing.api.inject({ method: 'GET', url: '/v1/apps', headers: auth });
  await new Promise((r) => setTimeout(r, 50));
  failing.fail();
  for (const r of [await waiting, await failing.api.inject({ method: 'GET', url: '/v1/apps', headers: auth })]) {
    assert.equal(r.statusCode, 503, 'waiting, and coming after the failure');
    assert.equal(r.json<{ error: { code: string } }>().error.code, 'starting');
    assert.match(r.json<{ error: { message: string } }>().error.message, /could not start/);
  }
  assert.equal((await failing.api.inject({ method: 'GET', url: '/v1/health' })).json<{ status: string }>().status, 'failed');

  const slow = await startingApi(100);
  t.after(() => slow.api.close());
  const late = await slow.api.inject({ method: 'POST', url: '/v1/apps/shop/roles/db/count', headers: auth, payload: { count: 1 } });
  assert.equal(late.statusCode, 503);
  assert.match(late.json<{ error: { message: string } }>().error.message, /still starting .* after 0\.1s/);
});
