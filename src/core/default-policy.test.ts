import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defaultRequestPolicies } from './default-policy.js';
import { parseAppFile, SpecError } from './spec.js';

const app = (apiLines: string[], lbLines = ['    loadBalancer: { members: api.endpoint }']) =>
  [
    'app: shop',
    'roles:',
    '  api:',
    '    start: node api.js',
    '    exports: { endpoint: "http://${ip}:${port}" }',
    ...apiLines,
    '  lb:',
    '    count: 1',
    '    imports: [api.*]',
    ...lbLines,
    '',
  ].join('\n');

test('a balanced role with min and max and no scale: gets the default: adaptive on the balancer rate, CPU target as safety net', () => {
  const api = parseAppFile(app(['    min: 2', '    max: 10'])).roles.api!;
  assert.equal(api.scaleDefault, true);
  assert.deepEqual(api.scale, defaultRequestPolicies());
  const [adaptive, target] = api.scale;
  assert.equal(adaptive?.kind, 'adaptive');
  assert.equal(adaptive?.metric, 'lb_requests');
  assert.ok(adaptive?.kind === 'adaptive' && adaptive.served === 'lb_member_requests' && adaptive.backlog === 'lb_inflight');
  assert.equal(adaptive?.kind === 'adaptive' ? adaptive.reactionMs : 0, 75_000);
  assert.equal(target?.kind, 'target');
  assert.equal(target?.metric, 'cpu');
});

test('no default where the file says otherwise or there is nothing to read', () => {
  // scale: [] keeps the role at its count.
  const none = parseAppFile(app(['    min: 2', '    max: 10', '    scale: []'])).roles.api!;
  assert.deepEqual(none.scale, []);
  assert.equal(none.scaleDefault, undefined);
  // Its own policies win.
  const own = parseAppFile(app(['    min: 2', '    max: 10', '    scale: [{ target: { metric: cpu, target: 0.5 } }]'])).roles.api!;
  assert.equal(own.scale.length, 1);
  assert.equal(own.scaleDefault, undefined);
  // count alone is a size, not a range; min = max is no range either.
  assert.deepEqual(parseAppFile(app(['    count: 3'])).roles.api!.scale, []);
  assert.deepEqual(parseAppFile(app(['    min: 3', '    max: 3'])).roles.api!.scale, []);
  // Not balanced: no request rate to read.
  const alone = parseAppFile(app(['    min: 1', '    max: 5'], ['    start: sleep 1000'])).roles.api!;
  assert.deepEqual(alone.scale, []);
  // The balancer itself gets none.
  assert.deepEqual(parseAppFile(app(['    min: 1', '    max: 5'])).roles.lb!.scale, []);
});

test('a role with tenants is sized by their seats, not by the default', () => {
  const spec = parseAppFile(
    app(['    min: 1', '    max: 5', '    tenants: { capacity: 5, add: "true", remove: "true" }'], ['    loadBalancer: { members: api.endpoint, driver: haproxy }']),
  );
  assert.deepEqual(spec.roles.api!.scale, []);
});

test('the balancer metrics: usable by a balanced role, refused with the reason on one no balancer balances', () => {
  const spec = parseAppFile(app(['    min: 1', '    max: 5', '    scale: [{ adaptive: { metric: lb_requests, backlog: lb_inflight } }]']));
  assert.equal(spec.roles.api!.scale[0]?.metric, 'lb_requests');
  try {
    parseAppFile(app(['    min: 1', '    max: 5', '    scale: [{ adaptive: { metric: lb_requests } }]'], ['    start: sleep 1000']));
    assert.fail('expected a refusal');
  } catch (e) {
    assert.ok(e instanceof SpecError);
    assert.match(e.message, /roles\.api\.scale\[0\]\.adaptive\.metric: "lb_requests" is measured at a load balancer, and no role balances this one/);
  }
  // A declared metric may not take a built-in name.
  assert.throws(
    () => parseAppFile(app(['    min: 1', '    max: 5', '    metrics: [{ name: lb_requests, http: /metrics, select: x }]'])),
    /roles\.api\.metrics\[0\]\.name: "lb_requests" is a built-in metric/,
  );
});
