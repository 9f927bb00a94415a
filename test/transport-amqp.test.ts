// The transport conformance suite against the amqp transport, on a private RabbitMQ node (with
// its management plugin on loopback: the controller makes each agent's broker user through it).
// Then what only a broker has: each agent's own user may read only its own queue and publish
// only under its own routing key, and a frame another agent publishes fails the seal anyway.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import amqp from 'amqplib';
import { pino } from 'pino';
import { AMQP_NAMES, SealedChannel } from '../src/core/index.js';
import { freePort } from '../src/adapters/providers/index.js';
import { AmqpTransport, type ControllerTransport } from '../src/adapters/transport/index.js';
import { AmqpAgentTransport } from '../src/agent/index.js';
import { sleep, until } from './helpers.js';
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



// ---- least privilege ------------------------------------------------------------------------

/** Runs `op` on a fresh channel of `conn`; resolves with the broker's refusal (an error naming 403), or null if allowed. */
async function refusal(conn: amqp.ChannelModel, op: (ch: amqp.ConfirmChannel) => Promise<unknown> | void): Promise<string | null> {
  const ch = await conn.createConfirmChannel();
  const closed = new Promise<string>((resolve) => ch.on('error', (err: Error) => resolve(err.message)));
  ch.on('close', () => undefined);
  const result = await Promise.race([
    Promise.resolve().then(() => op(ch)).then(() => sleep(300)).then(() => null, (err: unknown) => (err instanceof Error ? err.message : String(err))),
    closed,
  ]);
  await ch.close().catch(() => undefined);
  return result;
}

test('amqp: an agent\'s broker user reads only its own queue and publishes only as itself; its user and queue go with the instance', { skip, timeout: 60_000 }, async (t) => {
  const suspicious: string[] = [];
  const keys = new Map([['lp-a', 'a'.repeat(40)], ['lp-b', 'b'.repeat(40)]]);
  const transport = new AmqpTransport({
    keyFor: async (id) => keys.get(id), onJoin: async () => ({ accept: true }), onStatus: async () => undefined, onConnect: async () => undefined,
    onAck: async () => undefined, onLog: () => undefined, onDisconnect: () => undefined, onSuspicious: ({ reason }) => void suspicious.push(reason),
  }, 200, { url: broker.url, managementUrl: broker.managementUrl, reconnectMinMs: 50, reconnectMaxMs: 500 });
  await transport.start();
  t.after(() => transport.close());
  const urlA = await transport.provision('lp-a');
  const urlB = await transport.provision('lp-b');
  assert.notEqual(new URL(urlA).password, new URL(urlB).password);
  assert.equal(decodeURIComponent(new URL(urlA).username), 'drover-agent-lp-a');
  const a = await amqp.connect(urlA);
  t.after(() => a.close().catch(() => undefined));
  const queueB = AMQP_NAMES.agentQueue('lp-b');

  assert.equal(await refusal(a, (ch) => ch.consume(AMQP_NAMES.agentQueue('lp-a'), () => undefined)), null, 'A reads its own queue');
  assert.equal(await refusal(a, (ch) => new Promise<void>((resolve, reject) => ch.publish(AMQP_NAMES.agentsExchange, 'lp-a.frame', Buffer.from('{}'), { headers: { session: 'x' } }, (err: unknown) => (err ? reject(err instanceof Error ? err : new Error('not confirmed')) : resolve())))), null, 'A publishes as itself');
  assert.match((await refusal(a, (ch) => ch.consume(queueB, () => undefined))) ?? 'allowed', /403|ACCESS_REFUSED/, "A cannot consume B's queue");
  assert.match((await refusal(a, (ch) => ch.get(queueB))) ?? 'allowed', /403|ACCESS_REFUSED/, "A cannot get from B's queue");
  assert.match((await refusal(a, (ch) => ch.purgeQueue(queueB))) ?? 'allowed', /403|ACCESS_REFUSED/, "A cannot purge B's queue");
  assert.match((await refusal(a, (ch) => ch.bindQueue(queueB, AMQP_NAMES.agentsExchange, '#'))) ?? 'allowed', /403|ACCESS_REFUSED/, "A cannot bind B's queue");
  assert.match((await refusal(a, (ch) => ch.deleteQueue(queueB))) ?? 'allowed', /403|ACCESS_REFUSED/, "A cannot delete B's queue");
  assert.match((await refusal(a, (ch) => ch.assertQueue('a-queue-of-its-own'))) ?? 'allowed', /403|ACCESS_REFUSED/, 'A cannot declare queues');
  assert.match((await refusal(a, (ch) => void ch.publish(AMQP_NAMES.agentsExchange, 'lp-b.frame', Buffer.from('{}')))) ?? 'allowed', /403|ACCESS_REFUSED/, 'A cannot publish as B');
  assert.match((await refusal(a, (ch) => void ch.publish('', queueB, Buffer.from('{}')))) ?? 'allowed', /403|ACCESS_REFUSED/, "A cannot write into B's queue");
  assert.match((await refusal(a, (ch) => void ch.publish(AMQP_NAMES.agentsExchange, 'lp-a.hello.extra', Buffer.from('{}')))) ?? 'allowed', /403|ACCESS_REFUSED/, 'only its two routing keys');

  // Someone who can publish as B on the broker (its administrator, or a leaked password) but
  // does not hold B's key: the controller answers the hello, and the forged join fails its seal.
  const admin = await amqp.connect(broker.url);
  t.after(() => admin.close().catch(() => undefined));
  const ch = await admin.createConfirmChannel();
  const nonce = Buffer.alloc(32, 7).toString('base64url');
  const sid = nonce.slice(0, 16);
  ch.publish(AMQP_NAMES.agentsExchange, 'lp-b.hello', Buffer.from(JSON.stringify({ type: 'hello', protocol: 3, instanceId: 'lp-b', epoch: 1, nonce })), { headers: { session: sid } });
  await sleep(300);
  const forged = new SealedChannel('agent', { key: keys.get('lp-a')!, instanceId: 'lp-b', epoch: 1, agentNonce: nonce, controllerNonce: 'c'.repeat(43) });
  ch.publish(AMQP_NAMES.agentsExchange, 'lp-b.frame', Buffer.from(forged.seal({ type: 'join', pid: 1, status: { state: 'spare', restarts: 0 }, applied: [] })), { headers: { session: sid } });
  await until('the forged join to be refused', async () => suspicious.some((r) => /failed to prove the instance key/.test(r)) || undefined, 10_000, 50);
  assert.ok(!transport.isConnected('lp-b'));

  // A, under its own routing key, says hello as B: refused before any challenge.
  const chA = await a.createConfirmChannel();
  chA.publish(AMQP_NAMES.agentsExchange, 'lp-a.hello', Buffer.from(JSON.stringify({ type: 'hello', protocol: 3, instanceId: 'lp-b', epoch: 1, nonce })), { headers: { session: 'as-b' } });
  await until('the hello as another instance to be refused', async () => suspicious.some((r) => r === 'a hello for instance lp-b sent as lp-a') || undefined, 10_000, 50);

  // Destroyed: B's user and queue are gone, and its credentials open nothing.
  await transport.deprovision('lp-b');
  const users = (await broker.api('GET', '/api/users')) as { name: string }[];
  assert.ok(!users.some((u) => u.name === 'drover-agent-lp-b'), 'the user is deleted');
  assert.ok(users.some((u) => u.name === 'drover-agent-lp-a'), "the other instance's user stays");
  const queues = (await broker.api('GET', '/api/queues')) as { name: string }[];
  assert.ok(!queues.some((q) => q.name === queueB), 'the queue is deleted');
  await assert.rejects(amqp.connect(urlB), /ACCESS_REFUSED|403|authenticat/i);
  await transport.deprovision('lp-b'); // idempotent
});

test('amqp: a controller whose broker is not up yet keeps trying and connects once it is', { skip, timeout: 60_000 }, async (t) => {
  const port = await freePort();
  const transport = new AmqpTransport({
    keyFor: async () => undefined, onJoin: async () => ({ accept: true }), onStatus: async () => undefined, onConnect: async () => undefined,
    onAck: async () => undefined, onLog: () => undefined, onDisconnect: () => undefined,
  }, 200, { url: `amqp://u:p@127.0.0.1:${port}`, managementUrl: broker.managementUrl, reconnectMinMs: 50, reconnectMaxMs: 300 });
  t.after(() => transport.close());
  await transport.start(500);
  assert.equal(transport.brokerConnected, false);
  assert.ok(transport.hearingSince() >= Date.now() - 50, 'while blind, no agent is blamed for silence');
  // An instance made meanwhile gets its URL now; its user and queue are made once the broker is back.
  const url = await transport.provision('x-1');
  assert.match(url, /drover-agent-x-1/);
  // The broker comes up on that port (a TCP proxy to the node; the controller's user made on it).
  await broker.api('PUT', '/api/users/u', { password: 'p', tags: 'administrator' });
  await broker.api('PUT', '/api/permissions/%2F/u', { configure: '.*', write: '.*', read: '.*' });
  const sockets = new Set<net.Socket>();
  const proxy = net.createServer((c) => {
    const up = net.connect(broker.port, '127.0.0.1');
    sockets.add(c).add(up);
    c.pipe(up).pipe(c);
    c.on('error', () => up.destroy());
    up.on('error', () => c.destroy());
  });
  const listen = () => new Promise<void>((resolve) => proxy.listen(port, '127.0.0.1', resolve));
  await listen();
  t.after(() => new Promise<void>((resolve) => proxy.close(() => resolve())));
  await until('the controller to connect', async () => transport.brokerConnected || undefined, 10_000, 50);
  await until("the agent's user to be made", async () => ((await broker.api('GET', '/api/users')) as { name: string }[]).some((u) => u.name === 'drover-agent-x-1') || undefined, 10_000, 100);
  const agent = await amqp.connect(url.replace(`:${port}`, `:${broker.port}`));
  await agent.close();

  // The broker goes away again: destroying the instance does not fail, and its queue goes once the broker is back.
  await new Promise<void>((resolve) => {
    proxy.close(() => resolve());
    for (const s of sockets) s.destroy();
  });
  await until('the controller to notice', async () => !transport.brokerConnected || undefined, 10_000, 50);
  await transport.deprovision('x-1');
  const queues = async () => ((await broker.api('GET', '/api/queues')) as { name: string }[]).map((q) => q.name);
  assert.ok((await queues()).includes('drover.agent.x-1'), 'the queue waits for the broker');
  await listen();
  await until('the queue to be deleted once the broker is back', async () => !(await queues()).includes('drover.agent.x-1') || undefined, 15_000, 100);
  assert.ok(!((await broker.api('GET', '/api/users')) as { name: string }[]).some((u) => u.name === 'drover-agent-x-1'));
});

test('amqp: after a controller restart its agents are told their session is unknown and join the new controller', { skip, timeout: 60_000 }, async (t) => {
  const key = 'r'.repeat(40);
  let joins = 0;
  const handlers = {
    keyFor: async (id: string) => (id === 'rs-1' ? key : undefined), onJoin: async () => ((joins += 1), { accept: true as const }), onStatus: async () => undefined,
    onConnect: async () => undefined, onAck: async () => undefined, onLog: () => undefined, onDisconnect: () => undefined,
  };
  const opts = { url: broker.url, managementUrl: broker.managementUrl, reconnectMinMs: 50, reconnectMaxMs: 500 };
  const first = new AmqpTransport(handlers, 200, opts);
  await first.start();
  const url = await first.provision('rs-1');
  const welcomes: number[] = [];
  const link = new AmqpAgentTransport({ url, instanceId: 'rs-1', key, epoch: 1, logger: pino({ level: 'silent' }), reconnectMinMs: 50, reconnectMaxMs: 400, handshakeTimeoutMs: 3000 });
  link.start({
    join: () => ({ type: 'join', pid: process.pid, status: { state: 'spare', restarts: 0 }, applied: [] }),
    message: (m) => void (m.type === 'welcome' && welcomes.push(Date.now())),
    down: () => undefined,
  });
  t.after(() => link.close('test over'));
  const beat = setInterval(() => void link.send({ type: 'status', status: { state: 'spare', restarts: 0 } }), 200);
  t.after(() => clearInterval(beat));
  await until('welcomed by the first controller', async () => welcomes.length === 1 || undefined, 15_000, 20);
  await first.close();
  const second = new AmqpTransport(handlers, 200, opts);
  await second.start();
  t.after(() => second.close());
  await until('welcomed by the restarted controller', async () => welcomes.length >= 2 || undefined, 15_000, 20);
  await until('present again', async () => second.isConnected('rs-1') || undefined, 5000, 20);
  assert.equal(joins, 2);
  await second.deprovision('rs-1');
});
