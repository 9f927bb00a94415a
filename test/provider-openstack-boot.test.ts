/**
 * A controller with the openstack provider against the fake OpenStack (test/fakes/openstack.ts)
 * whose servers boot from their user data (test/fakes/boot.ts: the agent bundle fetched from the
 * controller and checked against its sha256, the token file 0600, the node started as cloud-init
 * would, here on 127.0.0.1): a role on openstack serves on servers that joined by themselves,
 * each once with the token made for it; scale-in deletes the servers and ends what they ran.
 * What a fake cannot prove (that Nova and a real image do the same) is the live suite's.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { credentialsFromEnv, OpenStackProvider } from '../src/adapters/providers/index.js';
import { startServer } from '../src/controller/index.js';
import { BootHook } from './fakes/boot.js';
import { startFakeOpenStack } from './fakes/openstack.js';
import { apiClient, killAll, processesWithEnv, ROOT, until } from './helpers.js';

interface Inst { id: string; role: string | null; state: string; address: string | null; type: string }

const NODE_BUNDLE = join(ROOT, 'dist/ssh-bundle/agent/cloud/node.js');
const notBuilt = existsSync(NODE_BUNDLE) ? undefined : 'the agent bundle is not built (npm run build): the fake servers install it';

test('a role on openstack serves on servers that booted from their user data and joined once each; scale-in deletes them and ends what they ran', { timeout: 120_000, ...(notBuilt && process.env.CI !== 'true' ? { skip: notBuilt } : {}) }, async (t) => {
  assert.ok(!notBuilt, notBuilt);
  const dir = mkdtempSync(join(tmpdir(), 'drover-os-boot-'));
  const hook = new BootHook({ dir: join(dir, 'machines'), env: { DROVER_AGENT_RESTART_BACKOFF_MS: '200' } });
  const fake = await startFakeOpenStack({
    buildMs: 300, deleteMs: 100,
    boot: { boot: (s) => hook.boot({ id: s.id, userData: s.userData ?? '' }), halt: (s) => hook.terminate({ id: s.id }) },
  });
  const server = await startServer({
    dataDir: join(dir, '.drover'), port: 0, logger: pino({ level: 'silent' }), heartbeatMs: 500,
    cloudProviders: { openstack: new OpenStackProvider({ credentials: credentialsFromEnv(fake.env), controllerId: 'ctl-boot', provisionTimeoutMs: 60_000 }) },
  });
  t.after(async () => {
    await server.close();
    await fake.close();
    hook.close();
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
  });
  const api = apiClient(server);
  const yaml = `app: shop
provider: { kind: openstack, flavor: m1.small, image: debian-12, network: private }
roles:
  web:
    count: 2
    start: exec node \${appDir}/fleet-web.mjs
    exports: { url: "http://\${ip}:\${port}" }
    health: { http: /, interval: 200ms }
`;
  await api('PUT', '/v1/apps/shop', { yaml, appDir: join(ROOT, 'test/fixtures') });
  const serving = await until('two web instances serving on openstack', async () => {
    const { instances } = await api<{ instances: Inst[] }>('GET', '/v1/instances');
    return instances.length === 2 && instances.every((i) => i.state === 'serving') ? instances : undefined;
  }, 90_000, 250);
  assert.deepEqual([...hook.failures], [], 'every server booted');
  assert.equal(fake.count('server.create'), 2, 'one server per instance');
  for (const i of serving) {
    const [s] = fake.serversOf(i.id);
    assert.ok(s, `a server tagged ${i.id}`);
    assert.ok(hook.booted.has(s.id), 'booted from its user data');
    assert.equal(i.type, 'm1.small', 'its type is the flavor');
    assert.equal(await (await fetch(`http://${i.address}/`)).text(), `${i.id}\n`, 'the role answers on the server');
    assert.ok(!existsSync(join(hook.booted.get(s.id)!.dir, 'join-token')), 'the node removed the token file once read');
  }
  const { tokens } = await api<{ tokens: { instance: string | null; uses: number; state: string }[] }>('GET', '/v1/tokens');
  assert.deepEqual(tokens.map((x) => [x.instance, x.uses, x.state]).sort(), serving.map((i) => [i.id, 1, 'used-up']).sort(), 'each token made for one instance, used once');

  await api('PUT', '/v1/apps/shop/roles/web/count', { count: 0 });
  await until('both servers deleted', async () => (fake.count('server.delete') >= 2 && fake.serversOf(serving[0]!.id).length + fake.serversOf(serving[1]!.id).length === 0 ? true : undefined), 60_000, 200);
  await until('nothing of the servers runs', async () => ([...hook.booted.values()].every((b) => processesWithEnv(b.dir).length === 0) ? true : undefined), 15_000, 200);
});
