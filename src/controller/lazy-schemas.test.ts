import { test } from 'node:test';
import assert from 'node:assert/strict';
import Fastify from 'fastify';
import { lazySchemas } from './lazy-schemas.js';

void test('schemas compiled lazily validate and serialize as Fastify does; warm compiles the rest', async (t) => {
  const schemas = lazySchemas();
  const app = Fastify({ schemaController: { compilersFactory: schemas.compilersFactory }, ajv: { customOptions: { coerceTypes: false } } });
  t.after(() => app.close());
  const body = { type: 'object', required: ['count'], additionalProperties: false, properties: { count: { type: 'integer', minimum: 0 } } };
  const answer = { 200: { type: 'object', properties: { count: { type: 'integer' } } } };
  app.put('/a', { schema: { body, response: answer } }, async (req) => ({ ...(req.body as object), secret: 'not in the schema' }));
  app.put('/b', { schema: { body, response: answer } }, async (req) => req.body);
  await app.ready();
  const before = schemas.pending;
  assert.ok(before >= 4, `validators and serializers wait to be compiled (${before})`);
  // No coercion, the field named, as with Fastify's own compilers.
  const bad = await app.inject({ method: 'PUT', url: '/a', payload: { count: '2' } });
  assert.equal(bad.statusCode, 400);
  assert.match(bad.json<{ message: string }>().message, /^body\/count must be integer$/);
  const ok = await app.inject({ method: 'PUT', url: '/a', payload: { count: 2 } });
  assert.equal(ok.statusCode, 200);
  assert.deepEqual(ok.json(), { count: 2 }, 'the answer serialized by its schema');
  assert.ok(schemas.pending < before, 'what /a used is compiled');
  const errors: unknown[] = [];
  schemas.warm((err) => errors.push(err));
  for (let i = 0; i < 50 && schemas.pending > 0; i++) await new Promise((r) => setImmediate(r));
  assert.equal(schemas.pending, 0);
  assert.deepEqual(errors, []);
  const b = await app.inject({ method: 'PUT', url: '/b', payload: { count: -1 } });
  assert.equal(b.statusCode, 400);
  assert.match(b.json<{ message: string }>().message, /^body\/count must be >= 0$/);
});

void test('warmNow compiles the schemas of the routes asked for, and only those', async (t) => {
  const schemas = lazySchemas();
  const app = Fastify({ schemaController: { compilersFactory: schemas.compilersFactory }, ajv: { customOptions: { coerceTypes: false } } });
  t.after(() => app.close());
  const body = { type: 'object', required: ['n'], properties: { n: { type: 'integer' } } };
  const answer = { 200: { type: 'object', properties: { n: { type: 'integer' } } } };
  app.put('/a/:id', { schema: { body, response: answer } }, async (req) => req.body);
  app.put('/b', { schema: { body, response: answer } }, async (req) => req.body);
  app.get('/b', { schema: { response: answer } }, async () => ({ n: 1 }));
  await app.ready();
  const before = schemas.pending;
  const asked: string[] = [];
  schemas.warmNow((method, url) => {
    asked.push(`${method} ${url}`);
    return method === 'PUT' && url === '/a/:id';
  }, (err) => assert.fail(String(err)));
  assert.equal(schemas.pending, before - 2, "/a/:id's body validator and answer serializer");
  assert.ok(asked.includes('PUT /b') && asked.includes('GET /b') && asked.includes('PUT /a/:id'), asked.join(', '));
  const bad = await app.inject({ method: 'PUT', url: '/a/x', payload: { n: 'one' } });
  assert.equal(bad.statusCode, 400, 'the compiled validator is the one used');
  assert.equal(schemas.pending, before - 2, 'nothing compiled again');
});
