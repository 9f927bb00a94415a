import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import Fastify from 'fastify';
import type { Controller } from './controller.js';
import { registerStream } from './stream.js';

void test('a live stream that cannot open is answered 500 in the API error format, and the next one tries again', async (t) => {
  let storeUp = false;
  const controller = {
    events: new EventEmitter(),
    startedAt: new Date().toISOString(),
    listInstances: async () => [],
    listEvents: async () => {
      if (!storeUp) throw new Error('the store is down');
      return [];
    },
  } as unknown as Controller;
  const errors: unknown[] = [];
  const app = Fastify();
  t.after(() => app.close());
  registerStream(app, { controller, version: 'test', apps: async () => [], roles: async () => [], onError: (e) => errors.push(e) });
  await app.ready();
  const r = await app.inject({ method: 'GET', url: '/v1/stream' });
  assert.equal(r.statusCode, 500);
  assert.equal(r.json<{ error: { code: string } }>().error.code, 'internal');
  // The store back: the next stream starts the hub (it never started) and opens.
  storeUp = true;
  const hub = await app.inject({ method: 'GET', url: '/v1/stream', payloadAsStream: true });
  assert.equal(hub.statusCode, 200);
  assert.match(hub.headers['content-type'] as string, /^text\/event-stream/);
  hub.stream().destroy();
});
