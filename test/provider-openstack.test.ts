/**
 * The openstack provider against a fake OpenStack (test/fakes/openstack.ts): the provider
 * conformance suite, then what is particular to a cloud without client tokens — a request
 * repeated after a crash, or after a lost answer, finds the server it made (one create in the
 * fake's log); a token that expires mid-run is replaced; the cloud's refusals become typed
 * errors that say whether trying again may help; answers that are not what Nova says are
 * refused with a clear error, never a crash.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CloudSettingError, credentialsFromEnv, openStackFactory, OpenStackError, OpenStackProvider, providerFactories, type CreateInstanceRequest, type OpenStackProviderOptions } from '../src/adapters/providers/index.js';
import type { OpenStackProviderSettings } from '../src/core/index.js';
import { FakeOpenStack, IMAGES, NETWORKS, startFakeOpenStack, type FakeOpenStackOptions } from './fakes/openstack.js';
import { providerConformance } from './provider-conformance.js';
import { until } from './helpers.js';

const settings: OpenStackProviderSettings = { kind: 'openstack', flavor: 'm1.small', image: 'debian-12', network: 'private', securityGroups: ['drover'], keyPair: 'ops', availabilityZone: 'nova', metadata: { team: 'labs' } };

const req = (instanceId: string, s: OpenStackProviderSettings = settings): CreateInstanceRequest => ({
  instanceId, epoch: 1, key: 'x'.repeat(32), controllerUrl: 'http://127.0.0.1:9', app: 'shop', role: 'api', settings: s,
  userData: `#cloud-config\n# join ${instanceId}\n`,
});

async function cloud(t: { after: (fn: () => Promise<void>) => void }, opts: FakeOpenStackOptions = {}, provider: Partial<OpenStackProviderOptions> = {}): Promise<{ fake: FakeOpenStack; make: () => OpenStackProvider }> {
  const fake = await startFakeOpenStack({ buildMs: 100, deleteMs: 50, ...opts });
  const made: OpenStackProvider[] = [];
  t.after(async () => {
    await Promise.all(made.map((p) => p.close()));
    await fake.close();
  });
  const make = () => {
    const p = new OpenStackProvider({ credentials: credentialsFromEnv(fake.env), controllerId: 'ctl-test', provisionTimeoutMs: 60_000, ...provider });
    made.push(p);
    return p;
  };
  return { fake, make };
}

// --- the conformance suite ------------------------------------------------------------------

let shared: FakeOpenStack | undefined;
const fakeReady = startFakeOpenStack({ buildMs: 150, deleteMs: 80 }).then((f) => (shared = f));
test.after(async () => shared?.close());

/** The conformance suite asks without settings (it is every provider's): the role's settings are added here. */
class WithSettings extends OpenStackProvider {
  override request(r: CreateInstanceRequest) {
    return super.request({ ...r, settings });
  }
}

test('the fake cloud is up', async () => {
  await fakeReady;
});

providerConformance('openstack', {
  make: () => new WithSettings({ credentials: credentialsFromEnv(shared!.env), controllerId: 'ctl-conformance', pageSize: 2 }),
  addressOk: (ip) => /^10\.0\.\d+\.\d+$/.test(ip),
  reportsExit: () => false,
  remote: { exists: (id) => shared!.serversOf(id).length > 0 },
});

// --- idempotency ----------------------------------------------------------------------------

test('openstack: a request repeated after a crash (a new provider, nothing in memory) finds the server it made: one create', async (t) => {
  const { fake, make } = await cloud(t);
  const first = await make().request(req('i-cafe0001'));
  assert.equal(first.state, 'pending');
  assert.equal(first.providerRef?.flavor, 'm1.small', 'the flavor by name: the machine type drover status shows');
  // The controller stopped here, before recording the reference; the next one asks again.
  const again = await make().request(req('i-cafe0001'));
  assert.deepEqual(again.providerRef, first.providerRef, 'the same server');
  assert.equal(fake.count('server.create'), 1, 'one POST /servers');
  assert.equal(fake.serversOf('i-cafe0001').length, 1);
  const s = fake.serversOf('i-cafe0001')[0]!;
  assert.equal(s.name, 'drover-i-cafe0001');
  assert.deepEqual(s.metadata, { team: 'labs', 'drover:app': 'shop', 'drover:role': 'api', 'drover:instance': 'i-cafe0001', 'drover:controller': 'ctl-test' });
  assert.equal(s.userData, '#cloud-config\n# join i-cafe0001\n', 'the user data, base64 on the wire');
  assert.deepEqual([s.flavorId, s.imageId, s.networkId, s.keyName, s.availabilityZone, s.securityGroups], ['2', IMAGES[0]!.id, NETWORKS[0]!.id, 'ops', 'nova', ['drover']]);
  // And the machine is found by its id alone, as the inventory asks after a restart.
  const p = make();
  const [m] = await until('running', async () => {
    const [x] = await p.describe([{ id: 'i-cafe0001', providerRef: null }]);
    return x?.state === 'running' ? [x] : undefined;
  }, 10_000, 50);
  assert.deepEqual(m.providerRef, first.providerRef);
  assert.equal(m.port, undefined, "the port is the agent's, told when it joins");
});

test('openstack: a create whose answer was lost (the server made, the connection reset) is found, not made again', async (t) => {
  const { fake, make } = await cloud(t);
  fake.dropCreateAnswer(1);
  const m = await make().request(req('i-cafe0002'));
  assert.notEqual(m.state, 'gone');
  assert.equal(fake.count('server.create.dropped'), 1);
  assert.equal(fake.count('server.create'), 0, 'no second POST');
  assert.equal(fake.serversOf('i-cafe0002').length, 1);
  assert.deepEqual(m.providerRef, { serverId: fake.serversOf('i-cafe0002')[0]!.id, region: 'RegionOne', flavor: 'm1.small' });
});

test('openstack: a duplicate server for one instance (two creates racing) is deleted at the next look, one kept', async (t) => {
  const { fake, make } = await cloud(t);
  const p = make();
  const first = await p.request(req('i-cafe0003'));
  // Another controller process's create that raced this one (it did not see the first yet).
  fake.addForeign('drover-i-cafe0003', { 'drover:app': 'shop', 'drover:role': 'api', 'drover:instance': 'i-cafe0003', 'drover:controller': 'ctl-test' });
  assert.equal(fake.serversOf('i-cafe0003').length, 2);
  const [m] = await p.describe([{ id: 'i-cafe0003', providerRef: null }]);
  assert.notEqual(m!.state, 'gone');
  await until('the duplicate gone', async () => (fake.serversOf('i-cafe0003').length === 1 ? true : undefined), 5000, 20);
  // The one kept is the one described (Nova's `created` has whole seconds: a tie is broken by id, the same way by every controller).
  assert.equal(m!.providerRef?.serverId, fake.serversOf('i-cafe0003')[0]!.id);
  assert.ok(first.providerRef);
});

test('openstack: list sees only this controller\'s servers, across pages; ERROR servers are listed as gone (they hold quota until deleted)', async (t) => {
  const { fake, make } = await cloud(t, {}, { pageSize: 2 });
  const p = make();
  fake.addForeign('drover-i-0therc01', { 'drover:app': 'shop', 'drover:role': 'api', 'drover:instance': 'i-0therc01', 'drover:controller': 'another' });
  fake.addForeign('web-1', {});
  fake.addForeign('drover-i-n0meta01', {});
  for (const id of ['i-11570001', 'i-11570002', 'i-11570003']) await p.request(req(id));
  fake.noValidHost(1);
  await p.request(req('i-11570004'));
  const listed = await until('all listed, one in ERROR', async () => {
    const l = await p.list();
    return l.length === 4 && l.some((m) => m.state === 'gone') ? l : undefined;
  }, 10_000, 50);
  assert.deepEqual(listed.map((m) => m.id).sort(), ['i-11570001', 'i-11570002', 'i-11570003', 'i-11570004']);
  const bad = listed.find((m) => m.id === 'i-11570004')!;
  assert.equal(bad.state, 'gone');
  assert.match(bad.message ?? '', /ERROR: No valid host was found/);
  assert.ok(fake.count('server.list') >= 3, 'paged');
});

// --- tokens ---------------------------------------------------------------------------------

test('openstack: one token for many calls; a token that expires mid-run is replaced (re-auth on 401), and an expiring one before it is used', async (t) => {
  const { fake, make } = await cloud(t);
  const p = make();
  await p.request(req('i-70ce0001'));
  await p.describe([{ id: 'i-70ce0001', providerRef: null }]);
  await p.list();
  assert.equal(fake.count('auth'), 1, 'the token is cached');
  fake.expireTokens();
  const [m] = await p.describe([{ id: 'i-70ce0001', providerRef: null }]);
  assert.notEqual(m!.state, 'gone');
  assert.equal(fake.count('unauthorized'), 1);
  assert.equal(fake.count('auth'), 2, 'authenticated again after the 401');

  // A token about to expire is replaced before a call, not after a refusal.
  const short = await cloud(t, { tokenTtlMs: 1500 });
  const q = short.make();
  await q.list();
  await new Promise((r) => setTimeout(r, 1400));
  await q.list();
  assert.equal(short.fake.count('auth'), 2);
  assert.equal(short.fake.count('unauthorized'), 0);
});

test('openstack: an application credential authenticates too; a wrong password is an auth error naming the variables', async (t) => {
  const { fake } = await cloud(t);
  const app = new OpenStackProvider({ credentials: credentialsFromEnv(fake.appCredentialEnv), controllerId: 'ctl-test' });
  assert.deepEqual(await app.list(), []);
  const wrong = new OpenStackProvider({ credentials: credentialsFromEnv({ ...fake.env, OS_PASSWORD: 'nope' }), controllerId: 'ctl-test' });
  await assert.rejects(wrong.list(), (err: unknown) => {
    assert.ok(err instanceof OpenStackError);
    assert.equal(err.kind, 'auth');
    assert.equal(err.retryable, false);
    assert.match(err.message, /refused the credentials.*OS_PASSWORD/);
    assert.doesNotMatch(err.message, /nope/, 'no secret in the message');
    return true;
  });
});

test('openstack: the OS_* variables are checked, the wrong one named', () => {
  const bad = (env: Record<string, string>, re: RegExp) =>
    assert.throws(() => credentialsFromEnv(env), (err: unknown) => err instanceof OpenStackError && err.kind === 'config' && re.test(err.message));
  bad({}, /OS_AUTH_URL: required/);
  bad({ OS_AUTH_URL: 'ftp://x' }, /OS_AUTH_URL:/);
  bad({ OS_AUTH_URL: 'https://k:5000' }, /OS_PASSWORD: required/);
  bad({ OS_AUTH_URL: 'https://k:5000', OS_PASSWORD: 'p' }, /OS_USERNAME: required/);
  bad({ OS_AUTH_URL: 'https://k:5000', OS_PASSWORD: 'p', OS_USERNAME: 'u' }, /OS_PROJECT_NAME: required/);
  bad({ OS_AUTH_URL: 'https://k:5000', OS_APPLICATION_CREDENTIAL_ID: 'a' }, /OS_APPLICATION_CREDENTIAL_SECRET: required/);
  bad({ OS_AUTH_URL: 'https://k:5000', OS_PASSWORD: 'p', OS_USERNAME: 'u', OS_PROJECT_ID: 'x', OS_INTERFACE: 'private' }, /OS_INTERFACE:/);
  const c = credentialsFromEnv({ OS_AUTH_URL: 'https://k:5000/', OS_PASSWORD: 'p', OS_USERNAME: 'u', OS_PROJECT_NAME: 'p1', OS_PROJECT_DOMAIN_NAME: 'D' });
  assert.equal(c.authUrl, 'https://k:5000/v3');
  assert.deepEqual(c.auth, { method: 'password', user: { name: 'u', domain: { name: 'Default' } }, password: 'p', project: { name: 'p1', domain: { name: 'D' } } });
  assert.equal(c.interface, 'public');
});

// --- errors ---------------------------------------------------------------------------------

test('openstack: the cloud\'s refusals are typed errors that say why and whether to try again', async (t) => {
  const { fake, make } = await cloud(t);
  const p = make();
  const rejects = async (id: string, kind: string, retryable: boolean, re: RegExp, s?: OpenStackProviderSettings) =>
    assert.rejects(p.request(req(id, s)), (err: unknown) => {
      assert.ok(err instanceof OpenStackError, String(err));
      assert.equal(err.kind, kind, err.message);
      assert.equal(err.retryable, retryable, err.message);
      assert.match(err.message, re);
      return true;
    });
  fake.rateLimit(2, 7);
  await rejects('i-e0000001', 'rate_limit', true, /rate limited \(429, retry after 7 s\)/);
  await assert.rejects(p.request(req('i-e0000001')), (err: unknown) => err instanceof OpenStackError && err.retryAfterMs === 7000);
  fake.quotaExceeded(1);
  await rejects('i-e0000002', 'quota', true, /over the project's quota.*Quota exceeded for instances/);
  fake.serverError(1);
  await rejects('i-e0000003', 'server', true, /the cloud failed \(500\)/);
  await rejects('i-e0000004', 'bad_request', false, /provider\.flavor: no flavor "m1\.huge" in region RegionOne/, { ...settings, flavor: 'm1.huge' });
  await rejects('i-e0000005', 'bad_request', false, /provider\.image: 2 active images are named "dup-image".*give the id/, { ...settings, image: 'dup-image' });
  await rejects('i-e0000006', 'bad_request', false, /provider\.network: no network "nowhere"/, { ...settings, network: 'nowhere' });
  await rejects('i-e0000007', 'bad_request', false, /Security group nope not found/, { ...settings, securityGroups: ['nope'] });
  await rejects('i-e0000008', 'config', false, /no openstack provider settings/, { kind: 'local' } as unknown as OpenStackProviderSettings);
  await rejects('i-e0000009', 'config', false, /no public compute endpoint in region Mars/, { ...settings, region: 'Mars' });
  // Then the cloud answers again: the same ids succeed, each made once.
  assert.equal((await p.request(req('i-e0000001'))).state, 'pending');
  assert.equal(fake.serversOf('i-e0000001').length, 1);
  assert.equal(fake.count('server.create.limited'), 2);
  // Names are resolved once per settings and cached: the network was looked up for the good settings and for "nowhere" only.
  assert.equal(fake.count('network.list'), 2, JSON.stringify(fake.log.map((o) => o.op)));
});

test('openstack: no valid host → gone with Nova\'s fault; stuck in BUILD → pending; a malformed answer is a clear error, not a crash', async (t) => {
  const { fake, make } = await cloud(t);
  const p = make();
  fake.noValidHost(1);
  const a = await p.request(req('i-f0000001'));
  const gone = await until('gone', async () => {
    const [m] = await p.describe([{ id: a.id, providerRef: a.providerRef }]);
    return m?.state === 'gone' ? m : undefined;
  }, 10_000, 50);
  assert.match(gone.message ?? '', /is ERROR: No valid host was found/);
  fake.stuckInBuild(1);
  const b = await p.request(req('i-f0000002'));
  await new Promise((r) => setTimeout(r, 400));
  assert.equal((await p.describe([{ id: b.id, providerRef: b.providerRef }]))[0]!.state, 'pending');
  fake.malformed(1);
  await assert.rejects(p.describe([{ id: b.id, providerRef: b.providerRef }]), (err: unknown) => err instanceof OpenStackError && err.kind === 'malformed' && /not JSON/.test(err.message));
  // Destroyed: gone at once (the delete is under way), then gone from the cloud.
  await p.destroy({ id: b.id, providerRef: b.providerRef });
  assert.equal((await p.describe([{ id: b.id, providerRef: b.providerRef }]))[0]!.state, 'gone');
  await until('deleted', async () => (fake.serversOf('i-f0000002').length === 0 ? true : undefined), 5000, 20);
  await p.destroy({ id: b.id, providerRef: b.providerRef }); // again: fine
  await p.destroy({ id: a.id, providerRef: a.providerRef });
});

test('openstack: user data above Nova\'s limit is refused before asking the cloud', async (t) => {
  const { fake, make } = await cloud(t);
  await assert.rejects(make().request({ ...req('i-b16b16b1'), userData: 'x'.repeat(60_000) }), /above Nova's limit of 65535/);
  assert.equal(fake.count('server.create'), 0);
});

test('openstack: the controller\'s factory (--provider openstack) reads OS_* and DROVER_OPENSTACK_PROVISION_TIMEOUT, and names what is wrong', async (t) => {
  const { fake } = await cloud(t);
  const p = openStackFactory({ env: { ...fake.env, DROVER_OPENSTACK_PROVISION_TIMEOUT: '600' }, controllerId: 'ctl-f' });
  t.after(() => p.close());
  assert.equal(p.provisionTimeoutMs, 600_000);
  assert.deepEqual(await p.list(), []);
  // The controller registers it: `--provider openstack` is a kind it knows.
  await import('../src/controller/index.js');
  assert.equal(providerFactories.openstack, openStackFactory);
  assert.throws(() => openStackFactory({ env: {}, controllerId: 'c' }), (e: unknown) => e instanceof CloudSettingError && /^OS_AUTH_URL: required/.test(e.message));
  assert.throws(() => openStackFactory({ env: { ...fake.env, DROVER_OPENSTACK_PROVISION_TIMEOUT: '5' }, controllerId: 'c' }), /DROVER_OPENSTACK_PROVISION_TIMEOUT=5: expected whole seconds/);
  // The operator's billing: per started hour unless said otherwise; a wrong word is named.
  assert.equal(p.billing, undefined);
  const perMinute = openStackFactory({ env: { ...fake.env, DROVER_OPENSTACK_BILLING: 'minute' }, controllerId: 'ctl-m' });
  t.after(() => perMinute.close());
  assert.deepEqual(perMinute.billing, { granularitySeconds: 60, minimumSeconds: 60 });
  assert.throws(
    () => openStackFactory({ env: { ...fake.env, DROVER_OPENSTACK_BILLING: 'daily' }, controllerId: 'c' }),
    (e: unknown) => e instanceof CloudSettingError && /^DROVER_OPENSTACK_BILLING=daily: expected hour, minute, second, none/.test(e.message),
  );
});

test('openstack: a read the API refuses while loaded (503, 429) is tried twice more after its Retry-After; a third refusal is the error', async (t) => {
  const { fake, make } = await cloud(t);
  const p = make();
  const a = await p.request(req('i-a0a0a0a1'));
  fake.unavailable(2);
  const [m] = await p.describe([{ id: a.id, providerRef: a.providerRef }]);
  assert.notEqual(m!.state, 'gone');
  assert.equal(fake.count('unavailable'), 2);
  fake.unavailable(3);
  await assert.rejects(p.describe([{ id: a.id, providerRef: a.providerRef }]), (err: unknown) => err instanceof OpenStackError && err.kind === 'server' && err.retryable && err.status === 503);
  assert.equal(fake.count('unavailable'), 5);
});
