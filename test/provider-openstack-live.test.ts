/**
 * The openstack provider against a real OpenStack cloud: one small server made, found again by
 * a repeated request and by its id alone, listed, destroyed. It costs a few minutes of a server.
 *
 * Runs only when DROVER_TEST_OPENSTACK=1 and the OS_* variables of an openrc file are set, with
 * DROVER_TEST_OPENSTACK_FLAVOR, _IMAGE and _NETWORK (and optionally _KEYPAIR, _SECURITY_GROUPS
 * comma-separated, _REGION); skipped otherwise, with the reason — under CI=true too: it needs a
 * cloud account, which CI does not have. No agent is expected to join (the user data is a comment).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { openStackProviderFromEnv, type CreateInstanceRequest, type InstanceHandle, type Machine } from '../src/adapters/providers/index.js';
import type { OpenStackProviderSettings } from '../src/core/index.js';
import { until } from './helpers.js';

const env = process.env;
const missing = ['OS_AUTH_URL', 'DROVER_TEST_OPENSTACK_FLAVOR', 'DROVER_TEST_OPENSTACK_IMAGE', 'DROVER_TEST_OPENSTACK_NETWORK'].filter((k) => !env[k]);
const skip =
  env.DROVER_TEST_OPENSTACK !== '1' ? 'the live OpenStack suite runs only with DROVER_TEST_OPENSTACK=1 and credentials (OS_* from an openrc file)'
  : missing.length > 0 ? `the live OpenStack suite needs ${missing.join(', ')}`
  : undefined;

test('openstack (live): a server is made, found again by a repeated request and by its id alone, listed, and deleted', { skip, timeout: 20 * 60_000 }, async (t) => {
  const provider = openStackProviderFromEnv(env, { controllerId: `drover-live-${randomBytes(4).toString('hex')}` });
  const settings: OpenStackProviderSettings = {
    kind: 'openstack',
    flavor: env.DROVER_TEST_OPENSTACK_FLAVOR!,
    image: env.DROVER_TEST_OPENSTACK_IMAGE!,
    network: env.DROVER_TEST_OPENSTACK_NETWORK!,
    ...(env.DROVER_TEST_OPENSTACK_KEYPAIR ? { keyPair: env.DROVER_TEST_OPENSTACK_KEYPAIR } : {}),
    ...(env.DROVER_TEST_OPENSTACK_SECURITY_GROUPS ? { securityGroups: env.DROVER_TEST_OPENSTACK_SECURITY_GROUPS.split(',') } : {}),
    ...(env.DROVER_TEST_OPENSTACK_REGION ? { region: env.DROVER_TEST_OPENSTACK_REGION } : {}),
    metadata: { purpose: 'drover live test' },
  };
  const id = `i-live${randomBytes(4).toString('hex')}`;
  const req: CreateInstanceRequest = { instanceId: id, epoch: 1, key: 'x'.repeat(32), controllerUrl: 'http://127.0.0.1:9', app: 'live', role: 'probe', settings, userData: '#cloud-config\n# drover live test: no agent\n' };
  t.after(async () => {
    await provider.destroy({ id, providerRef: null }).catch(() => undefined);
    await provider.close();
  });
  const t0 = Date.now();
  const first = await provider.request(req);
  assert.notEqual(first.state, 'gone', first.message);
  const h: InstanceHandle = { id, providerRef: first.providerRef };
  const up = await until<Machine>('running', async () => {
    const [m] = await provider.describe([h]);
    assert.notEqual(m?.state, 'gone', m?.message);
    return m?.state === 'running' ? m : undefined;
  }, 15 * 60_000, 5000);
  t.diagnostic(`ACTIVE with ${up.ip} after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  assert.deepEqual((await provider.request(req)).providerRef, first.providerRef, 'asked again: the same server');
  assert.deepEqual((await provider.describe([{ id, providerRef: null }]))[0]?.providerRef, first.providerRef, 'found by its id alone');
  assert.deepEqual((await provider.list()).map((m) => m.id), [id]);
  await provider.destroy(h);
  await until('gone', async () => ((await provider.describe([h]))[0]?.state === 'gone' ? true : undefined), 5 * 60_000, 2000);
  await until('not listed', async () => ((await provider.list()).length === 0 ? true : undefined), 5 * 60_000, 2000);
});
