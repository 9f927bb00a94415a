/**
 * `npm run bench:transport`: orders per second and an order's round trip (controller sends, the
 * agent receives and acknowledges, the controller handles the ack) over the embedded transport
 * and over the amqp transport on a private RabbitMQ node, in one run, one process, 127.0.0.1.
 * Both sides are the real transports with their handshake and sealed frames; the agents are
 * transport ends that acknowledge what they receive (no role is run).
 *
 * BENCH_AGENTS (default 10) agents; BENCH_ORDERS (default 1000) orders per agent for the
 * throughput run, BENCH_WINDOW (default 32) of them unacknowledged at a time per agent; BENCH_ROUND_TRIPS (default 500) one-at-a-time orders for the latency run.
 * The amqp rows need Debian's rabbitmq-server (skipped, with the reason, without it).
 *
 * Then heartbeat ingestion: a real controller (embedded store and transport, in this process)
 * with BENCH_HEARTBEAT_AGENTS (default 1000) simulated agents in another process
 * (bench/sim-agents.ts: the real agent transport, acknowledging orders, reporting every 2 s with
 * vitals): the controller's CPU share and memory at rest before the app, and with every agent
 * serving and reporting.
 *
 * Then leader takeover: two `drover controller` processes on a private PostgreSQL and RabbitMQ
 * (test/ha.ts), an app of three instances; BENCH_TAKEOVERS (default 3) times kill -9 of the
 * leader and the time until the standby acts (`GET /v1/controller` says leader) and until it
 * hears every agent again, against the lease (DROVER_LEADER_LEASE_MS, BENCH_LEASE_MS default 6000).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import Fastify from 'fastify';
import { pino } from 'pino';
import { AmqpTransport, EmbeddedTransport, type ControllerTransport, type TransportHandlers } from '../src/adapters/transport/index.js';
import { AmqpAgentTransport, WsAgentTransport, type AgentTransport, type AgentTransportOptions } from '../src/agent/index.js';
import { rabbitmqServer, startRabbitMQ } from '../test/rabbitmq.js';
import { postgresBinDir } from '../test/postgres.js';
import { openPgliteStore } from '../src/adapters/store/index.js';
import type { Machine, Provider } from '../src/adapters/providers/index.js';
import { startServer } from '../src/controller/index.js';
import { controllerPair, type Name } from '../test/ha.js';
import { sleep, until } from '../test/helpers.js';

const AGENTS = Number(process.env.BENCH_AGENTS ?? 10);
const ORDERS = Number(process.env.BENCH_ORDERS ?? 1000);
const ROUND_TRIPS = Number(process.env.BENCH_ROUND_TRIPS ?? 500);
const HEARTBEAT_MS = 5000;
/** Orders in flight per agent during the throughput run. */
const WINDOW = Number(process.env.BENCH_WINDOW ?? 32);
const logger = pino({ level: process.env.BENCH_LOG ?? 'silent' });

interface Setup {
  readonly name: string;
  controller(handlers: TransportHandlers): Promise<ControllerTransport>;
  provision(t: ControllerTransport, id: string): Promise<void>;
  agent(opts: AgentTransportOptions): AgentTransport;
}

interface Row {
  readonly transport: string;
  readonly ordersPerSecond: number;
  readonly p50: number;
  readonly p99: number;
  readonly handshakeMs: number;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

async function run(setup: Setup): Promise<Row> {
  const keys = new Map<string, string>();
  const acked = new Map<string, () => void>();
  const handlers: TransportHandlers = {
    keyFor: async (id) => keys.get(id),
    onJoin: async () => ({ accept: true }),
    onStatus: async () => undefined,
    onConnect: async () => undefined,
    onAck: async (_id, orderId) => {
      acked.get(orderId)?.();
      acked.delete(orderId);
    },
    onLog: () => undefined,
    onDisconnect: () => undefined,
  };
  const transport = await setup.controller(handlers);
  const links: AgentTransport[] = [];
  try {
    const ids = Array.from({ length: AGENTS }, (_, i) => `bench-${i}`);
    const t0 = performance.now();
    await Promise.all(
      ids.map(async (id) => {
        keys.set(id, `key-${id}-${'x'.repeat(32)}`);
        await setup.provision(transport, id);
        const link = setup.agent({ instanceId: id, key: keys.get(id)!, epoch: 1, logger, reconnectMinMs: 50, reconnectMaxMs: 500 });
        links.push(link);
        await new Promise<void>((welcomed) => {
          link.start({
            join: () => ({ type: 'join', pid: process.pid, status: { state: 'spare', restarts: 0 }, applied: [] }),
            message: (m) => {
              if (m.type === 'welcome') welcomed();
              else if (m.type === 'order') void link.send({ type: 'ack', orderId: m.order.id });
            },
            down: () => undefined,
          });
        });
      }),
    );
    const handshakeMs = (performance.now() - t0) / AGENTS;
    // Presence: the joins were just heard; wait until every agent counts as present.
    while (transport.connected().length < AGENTS) await new Promise((r) => setTimeout(r, 10));

    const sendAndWait = (id: string, orderId: string): Promise<void> =>
      new Promise((resolve, reject) => {
        acked.set(orderId, resolve);
        if (!transport.send(id, { type: 'order', order: { id: orderId, kind: 'undrain', reason: 'bench' } })) reject(new Error(`${id} is not present`));
      });

    // Round trip, one order at a time.
    const rtts: number[] = [];
    for (let k = 0; k < ROUND_TRIPS; k++) {
      const s = performance.now();
      await sendAndWait(ids[k % AGENTS]!, `rtt-${k}`);
      rtts.push(performance.now() - s);
    }
    rtts.sort((a, b) => a - b);

    // Throughput: every agent's orders, WINDOW unacknowledged at a time per agent (the controller
    // closes a connection with more than 256 frames waiting to be handled: a flood).
    const s = performance.now();
    await Promise.all(
      ids.map(async (id) => {
        let next = 0;
        const lane = async (): Promise<void> => {
          while (next < ORDERS) await sendAndWait(id, `tp-${id}-${next++}`);
        };
        await Promise.all(Array.from({ length: WINDOW }, lane));
      }),
    );
    const seconds = (performance.now() - s) / 1000;
    return { transport: setup.name, ordersPerSecond: (AGENTS * ORDERS) / seconds, p50: percentile(rtts, 50), p99: percentile(rtts, 99), handshakeMs };
  } finally {
    for (const l of links) await l.close('bench over');
    await transport.close();
  }
}

/** BENCH_PARTS: which parts to run (default all): orders, heartbeats, takeover. */
const PARTS = new Set((process.env.BENCH_PARTS ?? 'orders,heartbeats,takeover').split(',').map((x) => x.trim()));

async function main(): Promise<void> {
  if (PARTS.has('orders')) await orders();
  if (PARTS.has('heartbeats')) await heartbeatIngestion();
  if (PARTS.has('takeover')) await takeovers();
}

async function orders(): Promise<void> {
  const rows: Row[] = [];
  const app = Fastify();
  let url = '';
  rows.push(
    await run({
      name: 'embedded (WebSocket)',
      async controller(handlers) {
        const t = new EmbeddedTransport(handlers, HEARTBEAT_MS);
        await t.register(app);
        await app.listen({ host: '127.0.0.1', port: 0 });
        const a = app.server.address();
        url = `http://127.0.0.1:${a && typeof a === 'object' ? a.port : 0}`;
        return t;
      },
      provision: async () => undefined,
      agent: (opts) => new WsAgentTransport({ ...opts, controllerUrl: url }),
    }),
  );
  await app.close();

  let skipped = '';
  if (rabbitmqServer()) {
    const cleanups: (() => unknown)[] = [];
    try {
      const broker = await startRabbitMQ({ after: (fn) => cleanups.unshift(fn) }, { management: true });
      const agentUrls = new Map<string, string>();
      rows.push(
        await run({
          name: 'amqp (RabbitMQ)',
          async controller(handlers) {
            const t = new AmqpTransport(handlers, HEARTBEAT_MS, { url: broker.url, managementUrl: broker.managementUrl, logger });
            await t.start();
            return t;
          },
          provision: async (t, id) => void agentUrls.set(id, (await t.provision!(id))!),
          agent: (opts) => new AmqpAgentTransport({ ...opts, url: agentUrls.get(opts.instanceId)! }),
        }),
      );
    } finally {
      for (const fn of cleanups) await fn();
    }
  } else skipped = 'amqp: skipped, rabbitmq-server is not installed (apt-get install rabbitmq-server)';

  const cpus = os.cpus().length;
  console.log(`Transports (${AGENTS} agents; throughput: ${AGENTS * ORDERS} orders, ${WINDOW} in flight per agent; round trip: ${ROUND_TRIPS} orders one at a time; Node ${process.version}, ${cpus} cores)\n`);
  console.log('| transport | orders/s | round trip p50 | round trip p99 | setup per agent |');
  console.log('| --- | ---: | ---: | ---: | ---: |');
  for (const r of rows) {
    console.log(`| ${r.transport} | ${Math.round(r.ordersPerSecond).toLocaleString('en')} | ${r.p50.toFixed(2)} ms | ${r.p99.toFixed(2)} ms | ${r.handshakeMs.toFixed(1)} ms |`);
  }
  if (skipped) console.log(`\n${skipped}`);
}

const HB_AGENTS = Number(process.env.BENCH_HEARTBEAT_AGENTS ?? 1000);
const HB_WINDOW_MS = 20_000;

/** The controller's CPU share (of one core) and memory over `ms`, with its event loop's delay. */
async function measure(ms: number): Promise<{ cpu: number; rssMiB: number; heapMiB: number; lagP99: number }> {
  const h = monitorEventLoopDelay({ resolution: 10 });
  h.enable();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await sleep(ms);
  const c = process.cpuUsage(c0);
  h.disable();
  const m = process.memoryUsage();
  return { cpu: (c.user + c.system) / 1000 / (performance.now() - t0), rssMiB: m.rss / 2 ** 20, heapMiB: m.heapUsed / 2 ** 20, lagP99: h.percentile(99) / 1e6 };
}

async function heartbeatIngestion(): Promise<void> {
  const dir = mkdtempSync(join(os.tmpdir(), 'drover-bench-hb-'));
  const sim = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'sim-agents.ts')], { stdio: ['pipe', 'inherit', 'inherit'] });
  const machines = new Map<string, Machine>();
  const tell = (m: unknown) => sim.stdin.write(JSON.stringify(m) + '\n');
  const provider: Provider = {
    name: 'simulated', provisionTimeoutMs: 300_000,
    async request(req) {
      const m: Machine = { id: req.instanceId, state: 'running', ip: '127.0.0.1', port: 1, workdir: dir, providerRef: { simulated: true } };
      if (!machines.has(req.instanceId)) tell({ id: req.instanceId, key: req.key, epoch: req.epoch, url: req.controllerUrl });
      machines.set(req.instanceId, m);
      return m;
    },
    async describe(hs) {
      return hs.map((h) => machines.get(h.id) ?? { id: h.id, state: 'gone' as const, providerRef: null });
    },
    async list() {
      return [...machines.values()];
    },
    async destroy(h) {
      if (machines.delete(h.id)) tell({ stop: h.id });
    },
    onExit: () => undefined,
    close: async () => undefined,
  };
  const server = await startServer({ dataDir: join(dir, 'data'), port: 0, provider, store: await openPgliteStore(), logger, heartbeatMs: 2000 });
  try {
    const rest = await measure(HB_WINDOW_MS / 2);
    const api = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
      const r = await fetch(server.url + path, { method, headers: { authorization: `Bearer ${server.token}`, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}) });
      return (await r.json()) as T;
    };
    const t0 = performance.now();
    const applied = await api<{ error?: { message: string } }>('PUT', '/v1/apps/hb', { yaml: `app: hb\nroles:\n  w:\n    count: ${HB_AGENTS}\n    start: exec sleep 1000\n`, appDir: dir });
    if (applied.error) throw new Error(`apply: ${applied.error.message}`);
    await until(`${HB_AGENTS} simulated agents serving`, async () => {
      const list = (await api<{ instances: { state: string; connected: boolean }[] }>('GET', '/v1/instances?app=hb')).instances;
      return list.length === HB_AGENTS && list.every((i) => i.state === 'serving' && i.connected) ? true : undefined;
    }, 600_000, 2000);
    const converged = (performance.now() - t0) / 1000;
    await sleep(4000); // the first heartbeats after the burst
    const busy = await measure(HB_WINDOW_MS);
    const stalls = (await server.controller.metrics.registry.getSingleMetricAsString('drover_controller_stalls_total')).match(/ (\d+)$/m)?.[1] ?? '?';
    console.log(`\nHeartbeat ingestion (a real controller: embedded store and transport; ${HB_AGENTS.toLocaleString('en')} simulated agents in another process, a status with vitals every 2 s each: ${(HB_AGENTS / 2).toLocaleString('en')} reports/s; ${HB_WINDOW_MS / 1000} s window)\n`);
    console.log('| | controller CPU (share of one core) | RSS | heap used | event-loop delay p99 |');
    console.log('| --- | ---: | ---: | ---: | ---: |');
    console.log(`| at rest, no app (the comparison) | ${(rest.cpu * 100).toFixed(1)} % | ${rest.rssMiB.toFixed(0)} MiB | ${rest.heapMiB.toFixed(0)} MiB | ${rest.lagP99.toFixed(1)} ms |`);
    console.log(`| ${HB_AGENTS.toLocaleString('en')} agents serving and reporting | ${(busy.cpu * 100).toFixed(1)} % | ${busy.rssMiB.toFixed(0)} MiB | ${busy.heapMiB.toFixed(0)} MiB | ${busy.lagP99.toFixed(1)} ms |`);
    console.log(`\nApply → all ${HB_AGENTS.toLocaleString('en')} serving: ${converged.toFixed(1)} s; controller stalls counted: ${stalls}.`);
  } finally {
    sim.stdin.end();
    await server.close();
    sim.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

const TAKEOVERS = Number(process.env.BENCH_TAKEOVERS ?? 3);
const LEASE_MS = Number(process.env.BENCH_LEASE_MS ?? 6000);

/** kill -9 of the leader, BENCH_TAKEOVERS times: until the standby acts, and until it hears every agent. */
async function takeovers(): Promise<void> {
  if (TAKEOVERS < 1) return;
  if (!rabbitmqServer() || !postgresBinDir()) {
    console.log('\nLeader takeover: skipped (needs rabbitmq-server and PostgreSQL 15 server binaries)');
    return;
  }
  const cleanups: (() => unknown)[] = [];
  const rows: { acting: number; heard: number }[] = [];
  try {
    const pair = await controllerPair({ after: (fn) => cleanups.unshift(fn), diagnostic: (m) => console.error(m) }, { leaseMs: LEASE_MS });
    const yaml = `app: tk
roles:
  web:
    count: 3
    start: exec node -e "require('http').createServer((q, s) => s.end('ok')).listen(+process.env.PORT, '127.0.0.1')"
    health: { http: /, interval: 500ms }
`;
    await pair.start('a');
    let lead: Name = (await pair.leader()).name;
    await pair.start(lead === 'a' ? 'b' : 'a');
    await pair.api(lead)('PUT', '/v1/apps/tk', { yaml, appDir: pair.appDir });
    type Inst = { state: string; connected: boolean };
    const allHeard = (name: Name) => async () => {
      const r = await pair.api(name)<{ instances: Inst[] }>('GET', '/v1/instances?app=tk');
      return r.status === 200 && r.body.instances.length === 3 && r.body.instances.every((i) => i.state === 'serving' && i.connected) ? true : undefined;
    };
    await until('the app serving', allHeard(lead), 120_000, 100);
    for (let k = 0; k < TAKEOVERS; k++) {
      const killed = lead;
      const standby: Name = killed === 'a' ? 'b' : 'a';
      const t0 = performance.now();
      await pair.kill(killed);
      await until('the standby acts', async () => ((await pair.api(standby)<{ role: string }>('GET', '/v1/controller').catch(() => undefined))?.body.role === 'leader' ? true : undefined), 60_000, 20);
      const acting = performance.now() - t0;
      await until('every agent heard by the new leader', allHeard(standby), 60_000, 20);
      rows.push({ acting, heard: performance.now() - t0 });
      lead = standby;
      await pair.start(killed);
      await sleep(1000);
    }
  } finally {
    for (const fn of cleanups) await fn();
  }
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
  console.log(`\nLeader takeover (two controllers, private PostgreSQL and RabbitMQ, lease ${LEASE_MS} ms, 3 instances; kill -9 of the leader, ${rows.length} times)\n`);
  console.log('| | median | each | compared with |');
  console.log('| --- | ---: | --- | --- |');
  console.log(`| kill -9 → the standby acts | ${(med(rows.map((r) => r.acting)) / 1000).toFixed(2)} s | ${rows.map((r) => (r.acting / 1000).toFixed(2)).join(', ')} s | the lease: ${(LEASE_MS / 1000).toFixed(1)} s (the most a dead leader can hold it) + up to 1 s between a standby's tries |`);
  console.log(`| kill -9 → every agent heard by the new leader | ${(med(rows.map((r) => r.heard)) / 1000).toFixed(2)} s | ${rows.map((r) => (r.heard / 1000).toFixed(2)).join(', ')} s | + one heartbeat (2 s) |`);
}

await main();
