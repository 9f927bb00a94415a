// drover-test: alone (kills processes and times the recovery)
/**
 * Kill the controller (SIGKILL) at random points of a scale-out, a drain and a rolling update,
 * start it again, and check it converges with no duplicate instance and no orphan process.
 * The kill points come from a seed, printed first: `FAULT_SEED=<n> npm test` replays a run.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { apiClient, killableController, processInstances, sleep, until } from './helpers.js';
import { rng } from './seeded.js';

const SERVER = `exec node -e "require('http').createServer((q,s)=>s.end('ok')).listen(+process.env.PORT,'127.0.0.1')"`;
const app = (version: string) => `
app: fi
roles:
  web:
    count: 2
    start: ${JSON.stringify(SERVER)}
    env: { VERSION: "${version}" }
    exports: { url: "http://\${ip}:\${port}" }
    health: { http: /, interval: 200ms }
    drainTimeout: 2s
  front:
    imports: [web.*]
    start: ${JSON.stringify(SERVER)}
    update: printf '%s' "$WEB_URL" > members.txt
    health: { http: /, interval: 200ms }
`;

type Instances = { instances: { id: string; role: string | null; state: string; connected: boolean; goal: string }[] };
type App = { converged: boolean; roles: { name: string; desired: number; serving: number }[] };

test('kill -9 of the controller mid scale-out, drain and rolling update: converges, no duplicate, no orphan', { timeout: 420_000 }, async (t) => {
  const seed = process.env.FAULT_SEED ? Number(process.env.FAULT_SEED) : Math.floor(Math.random() * 2 ** 31);
  t.diagnostic(`FAULT_SEED=${seed}`);
  const random = rng(seed);
  const { dir, dataDir, server, start, kill } = await killableController(t, 'drover-fault-', { DROVER_AGENT_RESTART_BACKOFF_MS: '100' });
  const api = apiClient(server);
  const converged = async (what: string, web: number) =>
    until(`${what} (seed ${seed})`, async () => {
      const a = await api<App>('GET', '/v1/apps/fi');
      const i = await api<Instances>('GET', '/v1/instances');
      const r = a.roles.find((x) => x.name === 'web')!;
      return a.converged && r.desired === web && i.instances.every((x) => x.connected) ? i : undefined;
    }, 90_000);
  const check = async (what: string, web: number) => {
    const live = await converged(what, web);
    const webs = live.instances.filter((i) => i.role === 'web');
    assert.equal(webs.length, web, `${what}: exactly ${web} web instances (seed ${seed})`);
    assert.ok(webs.every((i) => i.state === 'serving' && i.goal === 'run'), `${what}: all serving (seed ${seed})`);
    const ids = new Set(live.instances.map((i) => i.id));
    // Processes of destroyed instances are gone (give a destroy in flight a moment).
    await until(`${what}: no orphan process (seed ${seed})`, async () => [...processInstances([dataDir]).values()].every((id) => ids.has(id)), 15_000);
    const folders = readdirSync(join(dataDir, 'instances'));
    assert.ok(live.instances.every((i) => folders.includes(i.id)));
  };

  await start();
  await api('PUT', '/v1/apps/fi', { yaml: app('1'), appDir: dir });
  await check('first convergence', 2);

  const steps: { what: string; web: number; act: () => Promise<unknown> }[] = [
    { what: 'scale-out 2→4', web: 4, act: () => api('PUT', '/v1/apps/fi/roles/web/count', { count: 4 }) },
    { what: 'drain 4→1', web: 1, act: () => api('PUT', '/v1/apps/fi/roles/web/count', { count: 1 }) },
    { what: 'rolling update', web: 1, act: () => api('PUT', '/v1/apps/fi', { yaml: app('2'), appDir: dir }) },
    { what: 'scale-out 1→3', web: 3, act: () => api('PUT', '/v1/apps/fi/roles/web/count', { count: 3 }) },
  ];
  for (const s of steps) {
    const delay = Math.floor(random() * 2500);
    t.diagnostic(`${s.what}: kill -9 after ${delay} ms`);
    await s.act();
    await sleep(delay);
    await kill();
    await start();
    await check(s.what, s.web);
  }
  await api('DELETE', '/v1/apps/fi');
  await until('app deleted', async () => ((await api<{ apps: unknown[] }>('GET', '/v1/apps')).apps.length === 0 ? true : undefined), 60_000);
  await until('no process left', async () => processInstances([dataDir]).size === 0, 15_000);
});
