/**
 * `npm run bench:reaction`: time from a load breach to new capacity serving traffic, with a warm
 * spare and without, on the local provider, in one run. The breach is a queue backlog jumping
 * from 0 to 15 (a role-scope metric scraped every 250 ms; the queue policy wants one instance per
 * 10); "serving traffic" is the new instance answering an HTTP request. The controller runs with
 * its default decision interval. Reference: the Kubernetes HPA's 15 s sync period alone.
 */
import { createServer } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startServer } from '../src/controller/index.js';
import { apiClient, killAll, processesWithEnv, ROOT, sleep, until } from '../test/helpers.js';

let backlog = 0;
const stats = createServer((_req, res) => res.end(JSON.stringify({ backlog })));
await new Promise<void>((r) => stats.listen(0, '127.0.0.1', r));
const statsPort = (stats.address() as { port: number }).port;

interface Inst {
  id: string;
  state: string;
  exports: Record<string, string>;
}

async function once(spares: number): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'drover-reaction-'));
  const server = await startServer({ dataDir: join(dir, '.drover'), port: 0, logger: pino({ level: 'silent' }) });
  const api = apiClient(server);
  try {
    backlog = 0;
    const yaml = `app: reaction
roles:
  worker:
    min: 1
    max: 4
    spares: ${spares}
    warmup: 0s
    start: exec node \${appDir}/burner.mjs
    exports: { url: "http://\${ip}:\${port}" }
    health: { http: /health, interval: 100ms }
    metrics:
      - { name: backlog, url: "http://127.0.0.1:${statsPort}/stats", format: json, select: backlog, interval: 250ms, timeout: 200ms }
    scale:
      - queue: { metric: backlog, perInstance: 10 }
`;
    await api('PUT', '/v1/apps/reaction', { yaml, appDir: join(ROOT, 'test/fixtures') });
    const instances = async () => (await api<{ instances: (Inst & { role: string | null })[] }>('GET', '/v1/instances')).instances;
    const before = await until('converged', async () => {
      const all = await instances();
      const ok = all.filter((i) => i.role === 'worker' && i.state === 'serving').length === 1 && all.filter((i) => i.role === null && i.state === 'spare').length === spares;
      return ok ? all : undefined;
    }, 60_000, 100);
    await sleep(1500); // let the policy see a steady zero backlog first
    const known = new Set(before.filter((i) => i.role === 'worker').map((i) => i.id));
    const t0 = performance.now();
    backlog = 15;
    const fresh = await until('new capacity serving', async () => {
      const n = (await instances()).find((i) => i.role === 'worker' && i.state === 'serving' && !known.has(i.id));
      if (!n?.exports.url) return undefined;
      const r = await fetch(`${n.exports.url}/work?ms=1`).catch(() => undefined);
      return r?.ok ? n : undefined;
    }, 60_000, 20);
    const seconds = (performance.now() - t0) / 1000;
    if (spares > 0 && before.find((i) => i.id === fresh.id)?.role !== null) throw new Error('the new capacity did not come from the spare');
    return seconds;
  } finally {
    await api('DELETE', '/v1/apps/reaction').catch(() => undefined);
    await until('deleted', async () => ((await api<{ apps: unknown[] }>('GET', '/v1/apps')).apps.length === 0 ? true : undefined), 60_000).catch(() => undefined);
    await server.close();
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
  }
}

const runs = Number(process.env.BENCH_RUNS ?? 3);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const withSpare: number[] = [];
const cold: number[] = [];
for (let k = 0; k < runs; k++) {
  withSpare.push(await once(1));
  cold.push(await once(0));
}
stats.close();
const f = (n: number) => n.toFixed(2);
console.log(`drover reaction benchmark — ${runs} run(s) each; ${new Date().toISOString()}`);
console.log('| scenario | median breach → new instance serving (s) | runs (s) |');
console.log('| --- | ---: | --- |');
console.log(`| warm spare (target ≤ 1 s) | ${f(median(withSpare))} | ${withSpare.map(f).join(', ')} |`);
console.log(`| no spare (cold instance) | ${f(median(cold))} | ${cold.map(f).join(', ')} |`);
console.log(`| reference: Kubernetes HPA sync period alone | 15.00 | - |`);
