/**
 * `npm run bench:dashboard`: is the dashboard responsive with 1,000 instances and 100 events/s?
 *
 * The real stream hub (src/controller/stream.ts: coalescing, deltas) and the real built page
 * (dist/ui, served as the controller serves it) run against a fake controller: 1,000 instances
 * whose CPU changes every 2 s (as heartbeats do), 1% of them changing state every second, a
 * balancer with 1,000 members, and 100 events/s. (A real controller with 1,000 instances is 1,000
 * agent processes: not on a 2-core machine.) Debian's chromium, driven by playwright-core,
 * opens each view and measures, against a small app without load in the same run:
 * - time to first render: navigation start to the view showing all its rows;
 * - main-thread busy time per second over BENCH_SECONDS (default 10), from Chrome's own
 *   TaskDuration metric (everything the main thread ran: parsing frames, rendering, layout, paint).
 */
import { EventEmitter } from 'node:events';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';
import type { EventRecord } from '../src/adapters/store/index.js';
import type { Controller } from '../src/controller/index.js';
import { StreamHub, type StreamRole } from '../src/controller/stream.js';
import { UiSessions } from '../src/controller/ui.js';
import { EVENT_KINDS, type EventKind } from '../src/core/index.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const ROOT = new URL('..', import.meta.url).pathname;

interface Load {
  readonly name: string;
  readonly instances: number;
  readonly eventsPerSecond: number;
}

/** A controller as the stream hub sees it, with a synthetic app `big`: db, web (the many), lb. */
function fakeController(load: Load) {
  const events = new EventEmitter();
  events.setMaxListeners(0);
  const startedAt = Date.now();
  const log: EventRecord[] = [];
  let nextId = 1;
  const record = (kind: EventKind, role: string | null, instance: string | null, message: string, data: Record<string, unknown> | null = null) => {
    const e: EventRecord = { id: nextId++, at: Date.now(), app: 'big', role, instance, kind, message, data };
    log.push(e);
    if (log.length > 20_000) log.splice(0, log.length - 10_000);
    events.emit('event', e);
  };
  const ids = Array.from({ length: load.instances }, (_, k) => `i-${(0x10000000 + k).toString(16)}`);
  const states = new Map(ids.map((id) => [id, 'serving']));
  const base = { app: 'big', pool: null, goal: 'run', restarts: 0, message: null, connected: true, ip: '10.0.0.1' };
  const instances = () => {
    const now = Date.now();
    const web = ids.map((id, k) => ({
      ...base, id, role: 'web', state: states.get(id), port: 20000 + k, createdAt: startedAt - k * 1000, startedAt: startedAt - k * 900, stateSince: startedAt,
      // Vitals arrive every 2 s per agent, agents out of phase: a quarter change per 500 ms.
      vitals: { role: { cpu: ((Math.floor((now + k * 37) / 2000) * 7 + k) % 100) / 100, connections: (k + Math.floor((now + k * 37) / 2000)) % 9 } },
      balancer: null,
    }));
    const lb = {
      ...base, id: 'i-00000001', role: 'lb', state: 'serving', port: 8080, createdAt: startedAt, startedAt, stateSince: startedAt, vitals: null,
      balancer: {
        driver: 'builtin', listen: '10.0.0.1:8080',
        members: web.map((w) => ({ id: w.id, address: `10.0.0.1:${w.port}`, state: w.state === 'serving' ? 'ready' : 'drain', removing: false, activeConnections: w.vitals.role.connections, totalRequests: 0 })),
      },
    };
    const db = { ...base, id: 'i-00000002', role: 'db', state: 'serving', port: 5432, createdAt: startedAt, startedAt, stateSince: startedAt, vitals: null, balancer: null };
    return [db, ...web, lb];
  };
  const serving = () => [...states.values()].filter((s) => s === 'serving').length;
  const roles = (): StreamRole[] => [
    { name: 'db', desired: 1, live: 1, serving: 1, pinned: false, min: 1, max: 1, spares: 0, draining: 0, policies: [], imports: [], metric: null, lastDecision: null },
    {
      name: 'web', desired: load.instances, live: load.instances, serving: serving(), pinned: false, min: 1, max: 2000, spares: 0, draining: 0,
      policies: ['target on cpu'], imports: ['db.url'], metric: 'cpu', lastDecision: { at: new Date().toISOString(), desired: load.instances, reason: `web ${load.instances - 1}→${load.instances}: mean cpu 0.82 > 0.75 for 30s` },
    },
    { name: 'lb', desired: 1, live: 1, serving: 1, pinned: false, min: 1, max: 1, spares: 0, draining: 0, policies: [], imports: ['web.*'], metric: null, lastDecision: null },
  ];
  const timers: NodeJS.Timeout[] = [];
  const start = () => {
    if (load.eventsPerSecond > 0) {
      let k = 0;
      timers.push(setInterval(() => {
        for (let j = 0; j < load.eventsPerSecond / 20; j++) {
          k++;
          const id = ids[k % ids.length]!;
          const kind = k % 50 === 0 ? 'scale.policy' : EVENT_KINDS[k % EVENT_KINDS.length]!;
          record(kind, 'web', id, `${id} (web): event ${k} — mean cpu ${(k % 100) / 100} over the last 30s, nothing else to say`, kind === 'scale.policy' ? { from: load.instances, to: load.instances } : null);
        }
      }, 50));
      timers.push(setInterval(() => {
        for (let j = 0; j < Math.ceil(load.instances / 100); j++) {
          const id = ids[Math.floor(Math.random() * ids.length)]!;
          states.set(id, states.get(id) === 'serving' ? 'starting' : 'serving');
        }
      }, 1000));
    }
  };
  const stop = () => timers.forEach(clearInterval);
  const controller = {
    events, startedAt,
    listEvents: async (q: { after?: number; limit?: number }) => {
      const after = q.after ?? 0;
      let lo = 0;
      let hi = log.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (log[mid]!.id <= after) lo = mid + 1;
        else hi = mid;
      }
      return log.slice(lo, lo + (q.limit ?? 100));
    },
    listInstances: async () => instances(),
    metricStore: { window: () => [] },
  } as unknown as Controller;
  for (let k = 0; k < 300; k++) record('instance.state', 'web', ids[k % ids.length] ?? null, `warm-up event ${k}`);
  return { controller, roles, start, stop };
}

async function serve(load: Load) {
  const fake = fakeController(load);
  const hub = new StreamHub({
    controller: fake.controller, version: 'bench',
    apps: async () => [{ name: 'big', generation: 1, deleting: false, converged: true }],
    roles: async () => fake.roles(),
    onError: (err) => console.error(err),
  });
  await hub.start();
  const ui = new UiSessions({ token: 'bench' });
  let streamBytes = 0;
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    if (path === '/ui/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(ui.page('bench-csrf'));
    } else if (path.startsWith('/ui/assets/')) {
      const a = ui.asset(path.slice('/ui/'.length));
      res.writeHead(a ? 200 : 404, { 'content-type': a?.type ?? 'text/plain' });
      res.end(a?.body);
    } else if (path === '/v1/stream') {
      const write = res.write.bind(res) as (chunk: string) => boolean;
      res.write = ((chunk: string) => {
        streamBytes += Buffer.byteLength(chunk);
        return write(chunk);
      }) as typeof res.write;
      void hub.attach(res, undefined);
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  fake.start();
  return {
    url: `http://127.0.0.1:${port}`,
    bytes: () => streamBytes,
    close: async () => {
      fake.stop();
      hub.close();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

interface View {
  readonly name: string;
  readonly hash: string;
  /** The view is rendered when this many rows match. */
  readonly rows: string;
  readonly want: (load: Load) => number;
}

const VIEWS: View[] = [
  { name: 'overview', hash: '#/', rows: 'table.roles tbody tr', want: () => 3 },
  { name: 'role (instances + chart)', hash: '#/role/big/web', rows: 'table.instances tbody tr', want: (l) => l.instances },
  { name: 'events', hash: '#/events', rows: 'table.events tbody tr', want: () => 300 },
  { name: 'balancer', hash: '#/balancer', rows: '.lb tbody tr', want: (l) => l.instances },
];

async function measure(ctx: BrowserContext, url: string, view: View, load: Load, bytes: () => number) {
  const page = await ctx.newPage();
  const cdp = await ctx.newCDPSession(page);
  await cdp.send('Performance.enable');
  await page.goto(`${url}/ui/${view.hash}`);
  const want = view.want(load);
  // Page-side code as text: this file is typed for Node, not the DOM.
  const sel = JSON.stringify(view.rows);
  await page.waitForFunction(
    `(() => { if (document.querySelectorAll(${sel}).length >= ${want}) window.__ready ??= performance.now(); return window.__ready !== undefined; })()`,
    undefined,
    { polling: 'raf', timeout: 60_000 },
  );
  const ttfr = Number(await page.evaluate('window.__ready'));
  const task = async () => {
    const m = (await cdp.send('Performance.getMetrics')).metrics;
    return { task: m.find((x) => x.name === 'TaskDuration')?.value ?? 0, heap: m.find((x) => x.name === 'JSHeapUsedSize')?.value ?? 0 };
  };
  // Settle, then measure a steady window.
  await page.waitForTimeout(2000);
  const a = await task();
  const b0 = bytes();
  const t0 = Date.now();
  await page.waitForTimeout(SECONDS * 1000);
  const b = await task();
  const secs = (Date.now() - t0) / 1000;
  const rows = await page.locator(view.rows).count();
  await page.close();
  return { ttfr, busyMsPerS: ((b.task - a.task) * 1000) / secs, heapMb: b.heap / 2 ** 20, rows, streamKbPerS: (bytes() - b0) / 1024 / secs };
}

async function main() {
  execFileSync(process.execPath, [join(ROOT, 'scripts/build-ui.mjs')], { stdio: 'ignore' });
  const loads: Load[] = [
    { name: '10 instances, no events (reference)', instances: 10, eventsPerSecond: 0 },
    { name: '1,000 instances, 100 events/s', instances: 1000, eventsPerSecond: 100 },
  ];
  const profile = mkdtempSync(join(tmpdir(), 'drover-bench-ui-'));
  const ctx = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: ARGS, viewport: { width: 1280, height: 900 } });
  const out: string[] = [];
  out.push(`| load | view | rows shown | time to first render (ms) | main thread busy (ms per s) | JS heap (MB) | stream (KiB/s) |`);
  out.push(`| --- | --- | ---: | ---: | ---: | ---: | ---: |`);
  try {
    for (const load of loads) {
      const s = await serve(load);
      try {
        for (const v of VIEWS) {
          const r = await measure(ctx, s.url, v, load, s.bytes);
          out.push(`| ${load.name} | ${v.name} | ${r.rows} | ${r.ttfr.toFixed(0)} | ${r.busyMsPerS.toFixed(0)} | ${r.heapMb.toFixed(1)} | ${r.streamKbPerS.toFixed(1)} |`);
          console.error(out[out.length - 1]);
        }
      } finally {
        await s.close();
      }
    }
  } finally {
    await ctx.close();
    rmSync(profile, { recursive: true, force: true });
  }
  console.log(`\nDashboard: ${SECONDS} s per view, chromium ${ctx.browser()?.version() ?? ''} headless, ${new Date().toISOString().slice(0, 10)}\n`);
  console.log(out.join('\n'));
}

await main();
