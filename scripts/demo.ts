/**
 * `npm run demo`: Fractals as a Service, deployed and scaled by Drover on this machine.
 *
 * Starts a controller (embedded store, local instances, data in a temporary folder), applies
 * examples/fractals/drover.yaml, submits a burst of fractals through the load balancer, and
 * shows live what Drover does: backlog, workers added, tasks done per worker, workers removed
 * after the burst. Prints a summary and stops everything. Ctrl-C stops cleanly at any time.
 *
 *   npm run demo                         # 40 tasks
 *   npm run demo -- --tasks 60           # a bigger burst
 *   npm run demo -- --kill-worker        # kill a worker mid-burst: no task is lost
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import { pino } from 'pino';
import { startServer, type RunningController } from '../src/controller/index.js';
import { processesOfInstance } from '../src/adapters/providers/index.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const APP_DIR = join(ROOT, 'examples/fractals');

const int = (v: string) => {
  if (!/^\d+$/.test(v) || Number(v) < 1) throw new InvalidArgumentError('expected a positive whole number');
  return Number(v);
};
const opts = new Command('demo')
  .description('Fractals as a Service, scaled by Drover')
  .option('--tasks <n>', 'fractals in the burst', int, 40)
  .option('--size <px>', 'width and height of each fractal', int, 768)
  .option('--iterations <n>', 'iterations per pixel', int, 512)
  .option('--kill-worker', 'kill a worker mid-burst to show that no task is lost')
  .option('--keep', 'leave the app running at the end (stop it with Ctrl-C)')
  .parse(process.argv)
  .opts<{ tasks: number; size: number; iterations: number; killWorker?: boolean; keep?: boolean }>();

interface Inst {
  id: string;
  role: string | null;
  state: string;
  address: string | null;
  exports: Record<string, string>;
}
interface Role {
  name: string;
  desired: number;
  serving: number;
  spares: number;
  lastDecision: { reason: string } | null;
  instances: Inst[];
}
interface Fractal {
  uuid: string;
  status?: string;
  generated_by?: string;
}

const tty = process.stdout.isTTY;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const dir = mkdtempSync(join(tmpdir(), 'drover-demo-'));
let server: RunningController | undefined;
let stopping = false;

async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const s = server!;
  const r = await fetch(s.url + path, {
    method,
    headers: { authorization: `Bearer ${s.token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  const data = (await r.json()) as T;
  if (!r.ok) throw new Error(`${method} ${path}: ${JSON.stringify(data)}`);
  return data;
}

async function shutdown(code: number): Promise<never> {
  if (stopping) process.exit(code);
  stopping = true;
  process.stdout.write('\nstopping the app (roles in reverse dependency order)…\n');
  try {
    await api('DELETE', '/v1/apps/fractals');
    for (let k = 0; k < 240; k++) {
      if ((await api<{ apps: unknown[] }>('GET', '/v1/apps')).apps.length === 0) break;
      await sleep(250);
    }
  } catch {
    // the controller may already be gone
  }
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
  process.stdout.write('stopped; nothing left running\n');
  process.exit(code);
}
process.on('SIGINT', () => void shutdown(130));
process.on('SIGTERM', () => void shutdown(143));

/** Every fractal, page by page (the API serves at most 100 per page). */
async function listAll(base: string): Promise<Fractal[]> {
  const out: Fractal[] = [];
  for (let page = 1; ; page++) {
    const r = await fetch(`${base}/v1/fractal?results_per_page=100&page=${page}`);
    if (!r.ok) throw new Error(`list failed: ${r.status} ${await r.text()}`);
    const body = (await r.json()) as { objects: Fractal[]; total_pages: number };
    out.push(...body.objects);
    if (page >= body.total_pages) return out;
  }
}

function bar(done: number, total: number, width = 30): string {
  const n = Math.round((done / Math.max(1, total)) * width);
  return `[${'#'.repeat(n)}${'.'.repeat(width - n)}] ${done}/${total}`;
}

async function main(): Promise<void> {
  process.stdout.write(`starting a controller (data in ${dir})…\n`);
  server = await startServer({ dataDir: join(dir, '.drover'), port: 0, logger: pino({ level: 'warn' }, pino.destination(join(dir, 'controller.log'))) });
  await api('PUT', '/v1/apps/fractals', { yaml: readFileSync(join(APP_DIR, 'drover.yaml'), 'utf8'), appDir: APP_DIR });
  process.stdout.write('applied examples/fractals/drover.yaml; waiting for store, queue → api → lb → worker…\n');
  for (;;) {
    const app = await api<{ converged: boolean; roles: Role[] }>('GET', '/v1/apps/fractals');
    if (app.converged) break;
    await sleep(300);
  }
  const roles = async () => (await api<{ roles: Role[] }>('GET', '/v1/apps/fractals/roles')).roles;
  const lbUrl = (await roles()).find((r) => r.name === 'lb')!.instances[0]!.exports.url!;
  const queueUrl = (await roles()).find((r) => r.name === 'queue')!.instances[0]!.exports.url!;
  process.stdout.write(`up: fractals at ${lbUrl} (open it in a browser)\n`);

  // The burst.
  const t0 = Date.now();
  const uuids: string[] = [];
  for (let k = 0; k < opts.tasks; k++) {
    const body = { width: opts.size, height: opts.size, iterations: opts.iterations, xa: -1.6, xb: 1.6, ya: -1.2, yb: 1.2 };
    const r = await fetch(`${lbUrl}/v1/fractal`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    if (r.status !== 201) throw new Error(`create failed: ${r.status} ${await r.text()}`);
    uuids.push(((await r.json()) as Fractal).uuid);
  }

  const workersSeen = new Set<string>();
  let peak = 0;
  let killed: string | undefined;
  let burstDoneAt: number | undefined;
  let scaledBackAt: number | undefined;
  let redelivered = 0;
  const perWorker = new Map<string, number>();
  for (;;) {
    const [rs, stats, list] = await Promise.all([
      roles(),
      fetch(`${queueUrl}/stats`).then((r) => r.json() as Promise<{ backlog: number; redelivered: number }>),
      listAll(lbUrl),
    ]);
    const mine = list.filter((f) => uuids.includes(f.uuid));
    redelivered = stats.redelivered;
    const done = mine.filter((f) => f.status === 'done');
    perWorker.clear();
    for (const f of done) if (f.generated_by) perWorker.set(f.generated_by, (perWorker.get(f.generated_by) ?? 0) + 1);
    const worker = rs.find((r) => r.name === 'worker')!;
    const serving = worker.instances.filter((i) => i.state === 'serving');
    for (const i of serving) workersSeen.add(i.id);
    peak = Math.max(peak, serving.length);
    if (opts.killWorker && !killed && done.length >= opts.tasks / 4 && serving.length > 1) {
      // A worker holding a task dies without a word: its lease expires and the task is delivered again.
      const victim = serving[serving.length - 1]!;
      for (const pid of processesOfInstance(victim.id)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone already
        }
      }
      killed = victim.id;
    }
    if (done.length === opts.tasks && burstDoneAt === undefined) burstDoneAt = Date.now();
    if (burstDoneAt !== undefined && serving.length <= 1 && worker.desired <= 1) scaledBackAt ??= Date.now();

    const lines: string[] = [];
    lines.push(`Fractals as a Service — ${lbUrl}`);
    lines.push(`burst   ${bar(done.length, opts.tasks)}   backlog ${stats.backlog}, redelivered ${stats.redelivered}   ${((Date.now() - t0) / 1000).toFixed(1)}s`);
    lines.push(`workers ${serving.length} serving, desired ${worker.desired}, ${worker.spares} warm spare(s), peak ${peak}${killed ? `   (killed ${killed})` : ''}`);
    if (worker.lastDecision) lines.push(`drover: ${worker.lastDecision.reason}`);
    lines.push('');
    lines.push('ROLE     INSTANCE     STATE         DONE');
    for (const r of rs) {
      for (const i of r.instances) lines.push(`${r.name.padEnd(8)} ${i.id.padEnd(12)} ${i.state.padEnd(13)} ${r.name === 'worker' ? String(perWorker.get(i.id) ?? 0) : ''}`);
    }
    const spares = (await api<{ instances: Inst[] }>('GET', '/v1/instances?app=fractals')).instances.filter((i) => i.role === null);
    for (const s of spares) lines.push(`${'(spare)'.padEnd(8)} ${s.id.padEnd(12)} ${s.state}`);
    if (tty) process.stdout.write('\x1b[H\x1b[2J' + lines.join('\n') + '\n');
    else process.stdout.write(lines.slice(0, 3).join('\n') + '\n');
    if (scaledBackAt !== undefined && !opts.keep) break;
    if (Date.now() - t0 > 10 * 60_000) throw new Error('the burst did not finish within 10 minutes');
    await sleep(tty ? 500 : 2000);
  }

  const lost = uuids.length - (await Promise.all(uuids.map((u) => fetch(`${lbUrl}/v1/fractal/${u}`).then((r) => r.json() as Promise<Fractal>)))).filter((f) => f.status === 'done').length;
  const rows = [
    ['tasks', String(opts.tasks)],
    ['tasks lost', String(lost)],
    ['workers used', String(perWorker.size)],
    ['peak workers serving', String(peak)],
    ['time to finish the burst', `${(((burstDoneAt ?? Date.now()) - t0) / 1000).toFixed(1)} s`],
    ['back to one worker after', `${(((scaledBackAt ?? Date.now()) - (burstDoneAt ?? t0)) / 1000).toFixed(1)} s`],
    ['tasks per worker', [...perWorker.values()].sort((a, b) => b - a).join(', ')],
    ['tasks delivered again', String(redelivered)],
    ...(killed ? [['worker killed mid-burst', killed]] : []),
  ];
  process.stdout.write('\nsummary\n' + rows.map(([k, v]) => `  ${k!.padEnd(26)} ${v}`).join('\n') + '\n');
  await shutdown(lost === 0 ? 0 : 1);
}

main().catch(async (err: unknown) => {
  process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
  await shutdown(1);
});
