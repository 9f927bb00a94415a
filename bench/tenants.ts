/**
 * `npm run bench:tenants`: tenant sign-ups on a running controller (local provider), in one run.
 *
 * (a) With room: sign-ups one at a time onto a role whose one instance has free seats. Each is
 *     a `201 Created`, answered once `add` has run on the instance; its latency is compared with
 *     the `add` command's own time, measured by running the very same command standalone with
 *     bash (`bash -c '<add>'`, the process start included, as the agent runs it).
 * (b) No room: a burst of concurrent sign-ups at capacity 20 onto a role whose instance is full.
 *     Reported: instances created vs the minimum ⌈burst / 20⌉, the most tenants on one instance,
 *     and the time from the first request until every tenant is ready.
 *
 * The role is as light as a role gets (one tiny `node -e` HTTP server per instance), there is no
 * balancer (so "ready" does not wait for a route), and the machine's cores are shared by the
 * controller, the agents and every instance. Sizes: BENCH_ROOM (default 50), BENCH_BURST
 * (default 1000, comma-separated for several runs, e.g. 200,1000).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startServer, type RunningController } from '../src/controller/index.js';
import { apiClient, killAll, processesWithEnv, until } from '../test/helpers.js';

type Tenant = { id: string; name: string; state: string; instance: string | null; reason: string | null };
type Instance = { id: string; role: string | null; state: string };

const ROOM = Number(process.env.BENCH_ROOM ?? 50);
const BURSTS = (process.env.BENCH_BURST ?? '1000').split(',').map(Number);
const CAPACITY = 20;
const ADD = 'echo "$TENANT_NAME" >> tenants.txt';
const SERVER = `require('http').createServer((q, s) => s.end('ok')).listen(+process.env.PORT, '127.0.0.1')`;

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] ?? NaN;
};
const ms = (x: number) => `${x.toFixed(1)} ms`;

function yaml(app: string, capacity: number, max: number): string {
  return `app: ${app}
roles:
  seats:
    min: 1
    max: ${max}
    start: exec node -e ${JSON.stringify(SERVER)}
    health: { tcp: true, interval: 200ms }
    tenants:
      capacity: ${capacity}
      add: ${ADD}
      remove: grep -vx "$TENANT_NAME" tenants.txt > t.tmp; mv t.tmp tenants.txt
`;
}

let retried = 0;
/** A sign-up with an Idempotency-Key, retried (as a client should) when the connection fails: a
 * thousand connections at once overflow the controller's listen backlog and some are reset. */
async function signUp(server: RunningController, app: string, name: string): Promise<{ status: number; body: Tenant }> {
  for (let attempt = 0; ; attempt++) {
    try {
      const r = await fetch(`${server.url}/v1/apps/${app}/roles/seats/tenants`, {
        method: 'POST',
        headers: { authorization: `Bearer ${server.token}`, 'content-type': 'application/json', 'idempotency-key': `${app}-${name}` },
        body: JSON.stringify({ name }),
      });
      return { status: r.status, body: (await r.json()) as Tenant };
    } catch (err) {
      if (attempt >= 5) throw err;
      retried++;
      await new Promise((r) => setTimeout(r, 200 * (attempt + 1)));
    }
  }
}

const dir = mkdtempSync(join(tmpdir(), 'drover-bench-tenants-'));
const server = await startServer({ dataDir: join(dir, '.drover'), port: 0, logger: pino({ level: 'silent' }), heartbeatMs: 1000 });
// Stopped from outside (Ctrl-C, a timeout): its instances go too, not left running.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
    process.exit(130);
  });
}
const api = apiClient(server);
const rows: string[][] = [];
try {
  // (a) With room.
  await api('PUT', '/v1/apps/room', { yaml: yaml('room', ROOM + 10, 1), appDir: dir });
  await until('room converged', async () => (await api<{ converged: boolean }>('GET', '/v1/apps/room')).converged, 60_000);
  for (let k = 0; k < 3; k++) await signUp(server, 'room', `warm${k}`); // JIT, connections
  const latencies: number[] = [];
  for (let k = 0; k < ROOM; k++) {
    const t0 = performance.now();
    const r = await signUp(server, 'room', `lab${k}`);
    latencies.push(performance.now() - t0);
    if (r.status !== 201) throw new Error(`sign-up with room: ${r.status} ${JSON.stringify(r.body)}`);
  }
  const scratch = mkdtempSync(join(tmpdir(), 'drover-bench-add-'));
  writeFileSync(join(scratch, 'tenants.txt'), '');
  const addTimes: number[] = [];
  for (let k = 0; k < ROOM; k++) {
    const t0 = performance.now();
    const r = spawnSync('bash', ['-c', ADD], { cwd: scratch, env: { ...process.env, TENANT_NAME: `lab${k}` } });
    addTimes.push(performance.now() - t0);
    if (r.status !== 0) throw new Error(`add standalone: ${r.stderr.toString()}`);
  }
  rmSync(scratch, { recursive: true, force: true });
  rows.push([`sign-up with room (${ROOM}, one at a time, 201)`, `p50 ${ms(pct(latencies, 50))}`, `p99 ${ms(pct(latencies, 99))}`]);
  rows.push([`  the add step alone (bash -c '${ADD}')`, `p50 ${ms(pct(addTimes, 50))}`, `p99 ${ms(pct(addTimes, 99))}`]);
  rows.push([`  → Drover's share of a sign-up`, `p50 ${ms(pct(latencies, 50) - pct(addTimes, 50))}`, '']);
  console.log(rows.map((r) => r.join('  ')).join('\n'));
  await api('DELETE', '/v1/apps/room');

  // (b) No room: the one instance is full before the burst.
  for (const burst of BURSTS) {
    const app = `burst${burst}`;
    const minimum = Math.ceil(burst / CAPACITY);
    await api('PUT', `/v1/apps/${app}`, { yaml: yaml(app, CAPACITY, minimum + 1), appDir: dir });
    await until(`${app} converged`, async () => (await api<{ converged: boolean }>('GET', `/v1/apps/${app}`)).converged, 60_000);
    const fill: number[] = [];
    for (let k = 0; k < CAPACITY; k++) fill.push((await signUp(server, app, `full${k}`)).status);
    await until('the first instance full', async () => {
      const t = (await api<{ tenants: Tenant[] }>('GET', `/v1/tenants?app=${app}`)).tenants;
      return t.length === CAPACITY && t.every((x) => x.state === 'ready');
    }, 120_000, 250);
    const before = new Set((await api<{ instances: Instance[] }>('GET', `/v1/instances?app=${app}`)).instances.map((i) => i.id));
    const filled = fill.map(String).join(',');
    if (before.size !== 1) rows.push([`  note: filling one instance with ${CAPACITY} one at a time left ${before.size} instances`, `(answers ${filled})`, '']);
    const t0 = performance.now();
    retried = 0;
    const answers = await Promise.all(Array.from({ length: burst }, (_, k) => signUp(server, app, `lab${k}`)));
    const answeredMs = performance.now() - t0;
    const statuses = new Map<number, number>();
    for (const a of answers) statuses.set(a.status, (statuses.get(a.status) ?? 0) + 1);
    let tenants: Tenant[] = [];
    await until(
      `${burst} tenants ready`,
      async () => {
        tenants = (await api<{ tenants: Tenant[] }>('GET', `/v1/tenants?app=${app}`)).tenants;
        const failed = tenants.filter((x) => x.state === 'failed');
        if (failed.length > 0) throw new Error(`failed: ${JSON.stringify(failed.slice(0, 3))}`);
        return tenants.length === burst + CAPACITY && tenants.every((x) => x.state === 'ready');
      },
      15 * 60_000,
      250,
    );
    const readyMs = performance.now() - t0;
    const created = (await api<{ instances: Instance[] }>('GET', `/v1/instances?app=${app}&all=true`)).instances.filter((i) => !before.has(i.id)).length;
    const perInstance = new Map<string, number>();
    for (const x of tenants) perInstance.set(x.instance ?? '?', (perInstance.get(x.instance ?? '?') ?? 0) + 1);
    const most = Math.max(...perInstance.values());
    rows.push([`${burst} concurrent sign-ups, no room, capacity ${CAPACITY}`, `answers ${[...statuses].map(([s, n]) => `${n}×${s}`).join(', ')} in ${(answeredMs / 1000).toFixed(1)} s`, `connections reset and retried: ${retried}`]);
    rows.push([`  instances created`, `${created} (minimum ${minimum})`, `most tenants on one: ${most}`]);
    rows.push([`  time until all ${burst} ready`, `${(readyMs / 1000).toFixed(1)} s`, '']);
    console.log(rows.slice(-3).map((r) => r.join('  ')).join('\n'));
    await api('DELETE', `/v1/apps/${app}`);
    await until(`${app} gone`, async () => {
      const r = await fetch(`${server.url}/v1/apps/${app}`, { headers: { authorization: `Bearer ${server.token}` } });
      return r.status === 404;
    }, 5 * 60_000, 500).catch(() => undefined);
  }
} finally {
  await server.close();
  killAll(processesWithEnv(dir));
  rmSync(dir, { recursive: true, force: true });
}

const w = [0, 1, 2].map((c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
console.log(`\nTenants on the local provider, ${cpus().length} cores, node ${process.version}\n`);
for (const r of rows) console.log(r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd());
