/**
 * `npm run bench:fractals`: time to finish a burst of 50 fractals with the workers autoscaled
 * on the queue's backlog (1–8, one warm spare, as in examples/fractals/drover.yaml) against a
 * fixed single worker, in one run on this machine.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startServer } from '../src/controller/index.js';
import { apiClient, killAll, processesWithEnv, ROOT, sleep, until } from '../test/helpers.js';

const TASKS = Number(process.env.BENCH_TASKS ?? 50);
const SIZE = Number(process.env.BENCH_SIZE ?? 1024);
const APP_DIR = join(ROOT, 'examples/fractals');
const autoscaled = readFileSync(join(APP_DIR, 'drover.yaml'), 'utf8');
// The same app with the worker role pinned at one instance: no policy, no spare.
const fixed = autoscaled.replace(/ {2}worker:\n(?: {4}.*\n| {6}.*\n)*/, (block) =>
  block
    .replace(/ {4}min: 1\n {4}max: 8\n {4}spares: 1\n/, '    count: 1\n')
    .replace(/ {4}metrics:\n(?: {6}.*\n)+/, '')
    .replace(/ {4}scale:\n(?: {6}.*\n)+/, ''),
);

interface Row {
  name: string;
  seconds: number;
  peak: number;
  workers: number;
}

async function run(name: string, yaml: string): Promise<Row> {
  const dir = mkdtempSync(join(tmpdir(), 'drover-bench-fractals-'));
  const server = await startServer({ dataDir: join(dir, '.drover'), port: 0, logger: pino({ level: 'silent' }) });
  const api = apiClient(server);
  try {
    await api('PUT', '/v1/apps/fractals', { yaml, appDir: APP_DIR });
    await until('converged', async () => ((await api<{ converged: boolean }>('GET', '/v1/apps/fractals')).converged ? true : undefined), 120_000, 300);
    type Role = { name: string; instances: { id: string; state: string; exports: Record<string, string> }[] };
    const roles = async () => (await api<{ roles: Role[] }>('GET', '/v1/apps/fractals/roles')).roles;
    const lb = (await roles()).find((r) => r.name === 'lb')!.instances[0]!.exports.url!;
    const t0 = performance.now();
    const uuids: string[] = [];
    for (let k = 0; k < TASKS; k++) {
      const r = await fetch(`${lb}/v1/fractal`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ width: SIZE, height: SIZE, iterations: 512, xa: -1.6, xb: 1.6, ya: -1.2, yb: 1.2 }),
      });
      uuids.push(((await r.json()) as { uuid: string }).uuid);
    }
    let peak = 0;
    const by = new Set<string>();
    for (;;) {
      const serving = (await roles()).find((r) => r.name === 'worker')!.instances.filter((i) => i.state === 'serving').length;
      peak = Math.max(peak, serving);
      const states = await Promise.all(uuids.map((u) => fetch(`${lb}/v1/fractal/${u}`).then((r) => r.json() as Promise<{ status: string; generated_by?: string }>)));
      for (const s of states) if (s.generated_by) by.add(s.generated_by);
      if (states.every((s) => s.status === 'done')) break;
      if (performance.now() - t0 > 15 * 60_000) throw new Error(`${name}: burst not done in 15 min`);
      await sleep(250);
    }
    return { name, seconds: (performance.now() - t0) / 1000, peak, workers: by.size };
  } finally {
    await api('DELETE', '/v1/apps/fractals').catch(() => undefined);
    await until('deleted', async () => ((await api<{ apps: unknown[] }>('GET', '/v1/apps')).apps.length === 0 ? true : undefined), 120_000).catch(() => undefined);
    await server.close();
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
  }
}

// Workers are CPU-bound: past one per core they only share the same cores. The same policy
// capped at the machine's core count shows how much of the gap that is.
const cores = cpus().length;
const capped = autoscaled.replace('    max: 8\n', `    max: ${Math.max(2, cores)}\n`);
const a = await run('autoscaled workers (1–8, 1 warm spare)', autoscaled);
const c = await run(`autoscaled, max = ${Math.max(2, cores)} (this machine's cores)`, capped);
const f = await run('fixed single worker', fixed);
console.log(`drover fractals benchmark — burst of ${TASKS} fractals ${SIZE}×${SIZE}, 512 iterations; ${new Date().toISOString()}`);
console.log('| workers | time to finish the burst (s) | peak workers serving | workers that did work |');
console.log('| --- | ---: | ---: | ---: |');
for (const r of [a, c, f]) console.log(`| ${r.name} | ${r.seconds.toFixed(1)} | ${r.peak} | ${r.workers} |`);
console.log(`| speed-up over one worker: 1–8 / capped | ${(f.seconds / a.seconds).toFixed(2)}× / ${(f.seconds / c.seconds).toFixed(2)}× | | |`);
console.log(`(${cores} cores here: CPU-bound workers beyond ${cores} add no capacity on one machine.)`);
