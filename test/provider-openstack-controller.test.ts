/**
 * A controller running the openstack provider against the fake OpenStack (test/fakes/openstack.ts):
 * a role whose `provider:` says openstack gets Nova servers tagged with its app, role, instance
 * and controller; a refusal of the cloud (over quota) is an event on the instance and the
 * instance is replaced; a server whose agent never says hello is failed after the provider's
 * timeout and deleted; deleting the app deletes every server; a restarted controller finds its
 * servers again. No agent joins here (the fake boots no machine): test/provider-openstack-boot.test.ts
 * boots them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { credentialsFromEnv, OpenStackProvider } from '../src/adapters/providers/index.js';
import { startServer } from '../src/controller/index.js';
import { startFakeOpenStack } from './fakes/openstack.js';
import { apiClient, until } from './helpers.js';

interface Ev { kind: string; instance: string | null; message: string }
interface Inst { id: string; role: string | null; state: string }

const YAML = `app: shop
provider:
  kind: openstack
  flavor: m1.small
  image: debian-12
  network: private
  securityGroups: [drover]
  metadata: { team: labs }
roles:
  web:
    count: 2
    start: exec sleep 600
`;

test('a controller makes, fails after its timeout, replaces and deletes Nova servers for a role on openstack; a quota refusal is an event', { timeout: 90_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-os-ctl-'));
  const fake = await startFakeOpenStack({ buildMs: 100, deleteMs: 50 });
  const provider = new OpenStackProvider({ credentials: credentialsFromEnv(fake.env), controllerId: 'ctl-e2e', provisionTimeoutMs: 4000 });
  // The first create is refused as over quota.
  fake.quotaExceeded(1);
  const server = await startServer({
    dataDir: join(dir, '.drover'), port: 0, token: 'openstack-controller-test-'.padEnd(40, 'x'), logger: pino({ level: 'silent' }), heartbeatMs: 500,
    cloudProviders: { openstack: provider }, planner: { failureBackoffMs: 200, failureBackoffMaxMs: 400 },
  });
  t.after(async () => {
    await server.close();
    await fake.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const api = apiClient(server);
  await api('PUT', '/v1/apps/shop', { yaml: YAML, appDir: dir });

  // Two servers made, tagged as the controller's instances of shop/web.
  await until('two servers', async () => (fake.count('server.create') >= 2 ? true : undefined), 20_000, 50);
  const { instances } = await api<{ instances: Inst[] }>('GET', '/v1/instances?app=shop');
  const ours = [...fake.servers.values()].filter((s) => !s.foreign);
  for (const s of ours.slice(0, 2)) {
    assert.deepEqual({ ...s.metadata, 'drover:instance': '' }, { team: 'labs', 'drover:app': 'shop', 'drover:role': 'web', 'drover:instance': '', 'drover:controller': 'ctl-e2e' });
    assert.ok(instances.some((i) => i.id === s.metadata['drover:instance']), `server ${s.name} is an instance the controller knows`);
    assert.equal(s.name, `drover-${s.metadata['drover:instance']}`);
    assert.deepEqual(s.securityGroups, ['drover']);
    // The controller's cloud-init for that instance (its join token is single-use); never the API token.
    assert.match(s.userData ?? '', new RegExp(`^#cloud-config\\n# Drover instance ${s.metadata['drover:instance']}:`));
    assert.ok(!(s.userData ?? '').includes(server.token), 'no API token in user data');
  }
  const quota = await until('the quota refusal told', async () => {
    const { events } = await api<{ events: Ev[] }>('GET', '/v1/events?app=shop&limit=1000');
    return events.find((e) => /over the project's quota/.test(e.message));
  }, 20_000, 100);
  assert.match(quota.message, /Quota exceeded for instances/);

  // No agent ever says hello: after the provider's 4 s the instances are failed, their servers deleted, and replaced.
  await until('servers deleted after the timeout and replaced', async () => (fake.count('server.delete') >= 2 && fake.count('server.create') >= 4 ? true : undefined), 40_000, 100);
  const { events } = await api<{ events: Ev[] }>('GET', '/v1/events?app=shop&limit=1000');
  assert.ok(events.some((e) => e.kind === 'instance.failed'), 'the failures are told');

  // The app deleted: every server of it goes.
  await api('DELETE', '/v1/apps/shop');
  await until('no server left', async () => ([...fake.servers.values()].some((s) => s.metadata['drover:app'] === 'shop') ? undefined : true), 30_000, 100);
});

test('a controller restarted finds its servers again (none made twice) and deletes a server of its own the store does not know', { timeout: 90_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-os-ctl-'));
  const fake = await startFakeOpenStack({ buildMs: 100, deleteMs: 50 });
  const start = () =>
    startServer({
      dataDir: join(dir, '.drover'), port: 0, token: 'openstack-controller-test-'.padEnd(40, 'x'), logger: pino({ level: 'silent' }), heartbeatMs: 500,
      cloudProviders: { openstack: new OpenStackProvider({ credentials: credentialsFromEnv(fake.env), controllerId: 'ctl-e2e', provisionTimeoutMs: 60_000 }) },
    });
  let server = await start();
  t.after(async () => {
    await server.close();
    await fake.close();
    rmSync(dir, { recursive: true, force: true });
  });
  await apiClient(server)('PUT', '/v1/apps/shop', { yaml: YAML, appDir: dir });
  await until('two servers', async () => (fake.count('server.create') === 2 ? true : undefined), 20_000, 50);
  await server.close();

  // While it was down: a server of this controller that its store never recorded (made just before a crash),
  // and one of another controller in the same project.
  fake.addForeign('drover-i-0ff5e701', { 'drover:app': 'shop', 'drover:role': 'web', 'drover:instance': 'i-0ff5e701', 'drover:controller': 'ctl-e2e' });
  fake.addForeign('drover-i-0ff5e702', { 'drover:app': 'shop', 'drover:role': 'web', 'drover:instance': 'i-0ff5e702', 'drover:controller': 'someone-else' });
  server = await start();
  const api = apiClient(server);
  await until('the unknown server deleted', async () => (fake.serversOf('i-0ff5e701').length === 0 ? true : undefined), 20_000, 100);
  const { events } = await api<{ events: Ev[] }>('GET', '/v1/events?limit=1000');
  assert.ok(events.some((e) => e.kind === 'instance.orphan' && e.instance === 'i-0ff5e701'), 'the reaping is told');
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(fake.count('server.create'), 2, 'the two instances still provisioning were found again, not made again');
  assert.equal(fake.serversOf('i-0ff5e702').length, 1, "another controller's server is left alone");
  await api('DELETE', '/v1/apps/shop');
  await until('its servers deleted', async () => ([...fake.servers.values()].some((s) => s.metadata['drover:controller'] === 'ctl-e2e') ? undefined : true), 30_000, 100);
});
