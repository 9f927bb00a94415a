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
 */
import os from 'node:os';
import Fastify from 'fastify';
import { pino } from 'pino';
import { AmqpTransport, EmbeddedTransport, type ControllerTransport, type TransportHandlers } from '../src/adapters/transport/index.js';
import { AmqpAgentTransport, WsAgentTransport, type AgentTransport, type AgentTransportOptions } from '../src/agent/index.js';
import { rabbitmqServer, startRabbitMQ } from '../test/rabbitmq.js';

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

async function main(): Promise<void> {
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

await main();
