import { test } from 'node:test';
import assert from 'node:assert/strict';
import { balancerRates, parseAppFile } from '../core/index.js';
import type { ControllerContext } from './context.js';
import { RoleMetrics } from './scraper.js';

const spec = parseAppFile(
  [
    'app: shop',
    'roles:',
    '  api:',
    '    min: 1',
    '    max: 5',
    '    start: node api.js',
    '    exports: { endpoint: "http://${ip}:${port}" }',
    '  lb:',
    '    count: 2',
    '    imports: [api.*]',
    '    loadBalancer: { members: api.endpoint }',
    '',
  ].join('\n'),
);

/** RoleMetrics over a store that knows one app, on a clock the test moves. */
async function metrics() {
  let now = 0;
  const ctx = {
    clock: { now: () => now },
    store: { listApps: async () => [{ name: 'shop', deleting: false, spec, appDir: '/tmp' }] },
  } as unknown as ControllerContext;
  const m = new RoleMetrics(ctx);
  await m.scrapeDue(); // learns which role each balancer balances
  return { m, at: (t: number) => (now = t) };
}

const member = (id: string, totalRequests: number, activeConnections = 0, removing = false) => ({
  id, address: `127.0.0.1:${id.length}`, state: 'ready', removing, activeConnections, totalRequests, failures: 0, ejected: false,
});

test('balancerRates: growth of each total over the interval; a new member starts at 0; a reset counts from 0', () => {
  const prev = { t: 1000, totals: new Map([['a', 100], ['b', 50]]) };
  const r = balancerRates(prev, 3000, [member('a', 300), member('b', 10), member('c', 40)]);
  assert.deepEqual(Object.fromEntries(r!), { a: 100, b: 5, c: 20 });
  assert.equal(balancerRates(undefined, 3000, [member('a', 1)]), undefined);
  assert.equal(balancerRates(prev, 1000, [member('a', 1)]), undefined);
});

test('the balanced role gets lb_requests, lb_member_requests and lb_inflight summed over its balancers', async () => {
  const { m } = await metrics();
  // Two balancers of the role; each sees its own share of requests.
  m.balancer('shop', 'lb', 'lb-1', 0, [member('api-1', 0), member('api-2', 0)]);
  m.balancer('shop', 'lb', 'lb-2', 500, [member('api-1', 0), member('api-2', 0)]);
  m.balancer('shop', 'lb', 'lb-1', 2000, [member('api-1', 100, 3), member('api-2', 60, 1)]);
  m.balancer('shop', 'lb', 'lb-2', 2500, [member('api-1', 40, 2), member('api-2', 0)]);
  const window = (metric: string) => m.store.window('shop/api', metric, 0, 10_000);
  const total = window('lb_requests');
  // After lb-1: 80/s; after lb-2 too: 80 + 20.
  assert.deepEqual(total.map((s) => [s.t, s.value, s.instance]), [[2000, 80, undefined], [2500, 100, undefined]]);
  assert.deepEqual(window('lb_inflight').map((s) => s.value), [4, 6]);
  const perMember = window('lb_member_requests').filter((s) => s.t === 2500);
  assert.deepEqual(Object.fromEntries(perMember.map((s) => [s.instance, s.value])), { 'api-1': 70, 'api-2': 30 });
  // Nothing for the balancer's own role, nor for a role that balances nothing.
  assert.equal(m.store.window('shop/lb', 'lb_requests', 0, 10_000).length, 0);
  m.balancer('shop', 'api', 'api-1', 3000, [member('x', 5)]);
  assert.equal(m.store.window('shop/api', 'lb_requests', 0, 10_000).length, 2);
});

test('a balancer gone quiet stops counting; a leaving member is not a serving one', async () => {
  const { m } = await metrics();
  m.balancer('shop', 'lb', 'lb-1', 0, [member('api-1', 0)]);
  m.balancer('shop', 'lb', 'lb-2', 0, [member('api-1', 0)]);
  m.balancer('shop', 'lb', 'lb-1', 1000, [member('api-1', 10)]);
  m.balancer('shop', 'lb', 'lb-2', 1000, [member('api-1', 10)]);
  // lb-2 says nothing more; 20 s later only lb-1 counts.
  m.balancer('shop', 'lb', 'lb-1', 21_000, [member('api-1', 210), member('api-2', 0, 4, true)]);
  const last = m.store.window('shop/api', 'lb_requests', 0, 30_000).at(-1);
  assert.equal(last?.value, 10);
  const members = m.store.window('shop/api', 'lb_member_requests', 21_000, 21_000).map((s) => s.instance);
  assert.deepEqual(members, ['api-1']);
  assert.equal(m.store.window('shop/api', 'lb_inflight', 21_000, 21_000)[0]?.value, 4);
});
