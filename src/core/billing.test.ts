import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BILLING, billingOf, paidLeftText, paidSecondsLeft, parseBilling } from './billing.js';
import { parseAppFile } from './spec.js';
import { DEFAULT_PLANNER_OPTIONS, plan, roleHash, type PlanInstance } from './planner.js';

test('paid time left: ec2 bills per second after a 60 s minimum; openstack (default) per started hour; local not at all', () => {
  assert.equal(paidSecondsLeft(BILLING.ec2, 20_000), 40);
  assert.equal(paidSecondsLeft(BILLING.ec2, 60_000), 0);
  assert.equal(paidSecondsLeft(BILLING.ec2, 3_600_000), 0, 'past its minimum: ending it wastes nothing');
  assert.equal(paidSecondsLeft(BILLING.openstack, 10 * 60_000), 50 * 60);
  assert.equal(paidSecondsLeft(BILLING.openstack, 65 * 60_000), 55 * 60, 'the second hour was started');
  assert.equal(paidSecondsLeft(BILLING.openstack, 120 * 60_000), 0);
  assert.equal(paidSecondsLeft(BILLING.local, 5000), 0);
  assert.equal(paidLeftText(250), '4m 10s');
  assert.equal(paidLeftText(59.2), '1m');
  assert.equal(paidLeftText(42), '42s');
});

const spec = (provider: string) => parseAppFile(`
app: shop
roles:
  api:
    count: 2
    start: api
    provider: ${provider}
`);
const EC2 = '{ kind: ec2, region: eu-west-1, image: ami-0abcdef1234567890, instanceType: t3.small, subnet: subnet-0abc1234, securityGroups: [sg-0abc1234] }';
const OPENSTACK = '{ kind: openstack, flavor: m1.small, image: debian-12, network: net }';

function serving(s: ReturnType<typeof spec>, id: string, createdAt: number, busy: number): PlanInstance {
  return {
    id, role: 'api', pool: null, state: 'serving', goal: 'run', roleHash: roleHash(s.roles.api!), exports: {}, importsSent: null, assignOrderId: 'o-1',
    stopOrderId: null, drainOrderId: null, importsApplied: null, createdAt, stateSince: createdAt, stopRequestedAt: null, drainRequestedAt: null, destroyedAt: null,
    lastSeenAt: 100_000_000, busy,
  };
}

const victim = (provider: string, a: PlanInstance, b: PlanInstance, now: number, options = DEFAULT_PLANNER_OPTIONS) => {
  const s = spec(provider);
  const p = plan({ app: { name: 'shop', spec: s, deleting: false }, desired: { api: 1 }, instances: [a, b], now, controllerStartedAt: 0, options });
  const drain = p.actions.find((x) => x.kind === 'drain');
  return { id: drain && 'instanceId' in drain ? drain.instanceId : undefined, reason: drain?.reason ?? '' };
};

test('scale-in on ec2: a machine still inside its paid first minute is kept over one past it, even if that one is busier', () => {
  const now = 100_000_000;
  const s = spec(EC2);
  const young = serving(s, 'i-young', now - 20_000, 0.1); // 40 s of its minute paid and left
  const old = serving(s, 'i-old', now - 3_600_000, 0.5);
  const v = victim(EC2, young, old, now);
  assert.equal(v.id, 'i-old');
  assert.match(v.reason, /victim i-old \(no tenants, past its paid period, cpu 0\.50\)/);
  // Both past the minimum: nothing to save; the least busy goes, as on any provider.
  const v2 = victim(EC2, serving(s, 'i-a', now - 120_000, 0.1), serving(s, 'i-b', now - 3_600_000, 0.5), now);
  assert.equal(v2.id, 'i-a');
});

test('scale-in on openstack (hourly): the machine whose paid hour ends soonest goes; on local the least busy, as before', () => {
  const now = 100_000_000;
  const s = spec(OPENSTACK);
  const endsSoon = serving(s, 'i-soon', now - 55 * 60_000, 0.9); // 5 min of its hour left
  const endsLate = serving(s, 'i-late', now - 10 * 60_000, 0.1); // 50 min left
  const v = victim(OPENSTACK, endsSoon, endsLate, now);
  assert.equal(v.id, 'i-soon');
  assert.match(v.reason, /paid for 5m more/);
  const l = spec('{ kind: local }');
  assert.equal(victim('{ kind: local }', serving(l, 'i-busy', now - 60_000, 0.9), serving(l, 'i-idle', now - 3_000_000, 0.1), now).id, 'i-idle');
});

test('a role on another provider than the app\'s never claims an app-wide spare (that spare is the wrong machine); a role on the app\'s does', () => {
  const s = parseAppFile(`
app: shop
spares: 1
provider: ${EC2}
roles:
  db: { count: 1, start: db, provider: { kind: local } }
  api: { count: 1, start: api }
`);
  const now = 100_000_000;
  const spare: PlanInstance = {
    id: 'i-spare', role: null, pool: '*', state: 'spare', goal: 'run', roleHash: '', exports: null, importsSent: null, assignOrderId: null, stopOrderId: null,
    drainOrderId: null, importsApplied: null, createdAt: now - 600_000, stateSince: now - 600_000, stopRequestedAt: null, drainRequestedAt: null, destroyedAt: null, lastSeenAt: now,
  };
  const p = plan({ app: { name: 'shop', spec: s, deleting: false }, desired: { api: 1, db: 1 }, instances: [spare], now, controllerStartedAt: 0, options: DEFAULT_PLANNER_OPTIONS });
  const claims = p.actions.filter((a) => a.kind === 'assign').map((a) => ('role' in a ? a.role : ''));
  const creates = p.actions.flatMap((a) => (a.kind === 'create' && a.role !== null ? [a.role] : []));
  assert.deepEqual(claims, ['api'], 'api (ec2, as the app) takes the ec2 spare');
  assert.deepEqual(creates, ['db'], 'db (local) gets a machine of its own');
});

test('surplus spares on ec2: the one past its paid minute is released before one inside it', () => {
  const s = parseAppFile(`
app: shop
spares: 1
provider: ${EC2}
roles:
  api: { count: 0, start: api }
`);
  const now = 100_000_000;
  const mk = (id: string, age: number): PlanInstance => ({
    id, role: null, pool: '*', state: 'spare', goal: 'run', roleHash: '', exports: null, importsSent: null, assignOrderId: null, stopOrderId: null,
    drainOrderId: null, importsApplied: null, createdAt: now - age, stateSince: now - age, stopRequestedAt: null, drainRequestedAt: null, destroyedAt: null, lastSeenAt: now,
  });
  const p = plan({ app: { name: 'shop', spec: s, deleting: false }, desired: { api: 0 }, instances: [mk('i-young', 10_000), mk('i-old', 3_600_000)], now, controllerStartedAt: 0, options: DEFAULT_PLANNER_OPTIONS });
  assert.deepEqual(p.actions.filter((a) => a.kind === 'stop').map((a) => ('instanceId' in a ? a.instanceId : '')), ['i-old']);
});

test('an operator\'s billing words (DROVER_OPENSTACK_BILLING), and the planner following them', () => {
  assert.deepEqual(parseBilling('hour'), { granularitySeconds: 3600, minimumSeconds: 3600 });
  assert.deepEqual(parseBilling(' Minute '), { granularitySeconds: 60, minimumSeconds: 60 });
  assert.deepEqual(parseBilling('second'), { granularitySeconds: 1, minimumSeconds: 0 });
  assert.equal(parseBilling('none'), null);
  assert.equal(parseBilling('daily'), undefined);
  assert.equal(parseBilling('constructor'), undefined);
  assert.equal(billingOf('openstack', undefined), BILLING.openstack);
  assert.equal(billingOf('openstack', { openstack: null }), null);
  assert.equal(billingOf('ec2', { openstack: null }), BILLING.ec2);
  // Per second on this OpenStack: nothing is paid ahead, so the least busy goes, not the one whose hour ends soonest.
  const now = 100_000_000;
  const s = spec(OPENSTACK);
  const endsSoon = serving(s, 'i-soon', now - 55 * 60_000, 0.9);
  const endsLate = serving(s, 'i-late', now - 10 * 60_000, 0.1);
  assert.equal(victim(OPENSTACK, endsSoon, endsLate, now).id, 'i-soon');
  const perSecond = { ...DEFAULT_PLANNER_OPTIONS, billing: { openstack: parseBilling('second') ?? null } };
  assert.equal(victim(OPENSTACK, endsSoon, endsLate, now, perSecond).id, 'i-late');
});
