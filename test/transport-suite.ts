/**
 * The transport conformance suite: one set of tests every transport passes (embedded, amqp),
 * given a factory that makes its controller side and its agents' side. The controller side is
 * driven through {@link TransportHandlers} that keep orders the way the real controller does
 * (pending until acknowledged, re-sent when an agent joins); agents are the real agent
 * transports, and for idempotent apply the real agent runtime.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { pino, type Logger } from 'pino';
import type { AgentMessage, AgentStatus, ControllerMessage, Order, RoleSpec } from '../src/core/index.js';
import type { ControllerTransport, TransportHandlers } from '../src/adapters/transport/index.js';
import { Agent, type AgentTransport, type AgentTransportOptions } from '../src/agent/index.js';
import { freePort } from '../src/adapters/providers/index.js';
import { sleep, until } from './helpers.js';

export const HEARTBEAT_MS = 200;

/** One transport under test. */
export interface TransportFactory {
  readonly name: string;
  /** Why the suite cannot run here (a missing broker), or false. */
  readonly skip?: false | string;
  /** The controller side, started (connected to its broker if it has one). */
  controller(handlers: TransportHandlers, heartbeatMs: number): Promise<ControllerTransport>;
  /** Makes an instance known to the transport (its queue and broker user, if it has them). */
  addInstance?(t: ControllerTransport, instanceId: string): Promise<void>;
  /** The agent side of one instance. */
  agent(t: ControllerTransport, opts: AgentTransportOptions): AgentTransport;
  /** The carrier has a connection per agent whose close `settle` waits for (embedded). */
  readonly closeIsSeen?: boolean;
  /** Cuts every connection of the carrier (not the controller's state): agents must reconnect. */
  interrupt(t: ControllerTransport): Promise<void>;
}

interface Recorded {
  readonly statuses: { id: string; status: AgentStatus }[];
  readonly acks: { id: string; orderId: string }[];
  readonly suspicious: string[];
  readonly joins: { id: string; epoch: number; applied: readonly string[] }[];
  readonly logs: { id: string; lines: readonly string[] }[];
}

/** A controller in miniature: keys, current epochs, pending orders re-sent on join. */
class MiniController {
  readonly keys = new Map<string, string>();
  readonly epochs = new Map<string, number>();
  readonly pending = new Map<string, Order[]>();
  readonly rec: Recorded = { statuses: [], acks: [], suspicious: [], joins: [], logs: [] };
  transport?: ControllerTransport;
  /** How long handling a status takes (a busy store). */
  statusDelayMs = 0;

  readonly handlers: TransportHandlers = {
    keyFor: async (id) => this.keys.get(id),
    onJoin: async (id, epoch, msg) => {
      this.rec.joins.push({ id, epoch, applied: msg.applied });
      const current = this.epochs.get(id);
      if (current !== epoch) return { accept: false, reason: `stale epoch ${epoch} (current ${current})` };
      return { accept: true };
    },
    onStatus: async (id, status) => {
      if (this.statusDelayMs > 0) await sleep(this.statusDelayMs);
      this.rec.statuses.push({ id, status });
    },
    onConnect: async (id) => {
      for (const o of this.pending.get(id) ?? []) this.transport?.send(id, { type: 'order', order: o });
    },
    onAck: async (id, orderId) => {
      this.rec.acks.push({ id, orderId });
      this.pending.set(id, (this.pending.get(id) ?? []).filter((o) => o.id !== orderId));
    },
    onLog: (id, lines) => {
      this.rec.logs.push({ id, lines });
    },
    onDisconnect: () => undefined,
    onSuspicious: ({ reason }) => {
      this.rec.suspicious.push(reason);
    },
  };

  order(id: string, order: Order): boolean {
    this.pending.set(id, [...(this.pending.get(id) ?? []), order]);
    return this.transport?.send(id, { type: 'order', order }) ?? false;
  }
}

/** An agent transport driven by hand: records what the controller says, joins as a spare. */
class TestLink {
  readonly received: ControllerMessage[] = [];
  downs = 0;
  applied: string[] = [];
  constructor(readonly link: AgentTransport) {}
  start(): void {
    this.link.start({
      join: () => ({ type: 'join', pid: process.pid, status: { state: 'spare', restarts: 0 }, applied: [...this.applied] }),
      message: (m) => this.received.push(m),
      down: () => (this.downs += 1),
    });
  }
  orders(): Order[] {
    return this.received.flatMap((m) => (m.type === 'order' ? [m.order] : []));
  }
  welcomes(): number {
    return this.received.filter((m) => m.type === 'welcome').length;
  }
  send(m: AgentMessage): Promise<boolean> {
    return this.link.send(m);
  }
}

const quiet = (): Logger => pino({ level: process.env.TRANSPORT_TEST_LOG ?? 'silent' });

let seq = 0;
function newId(): string {
  return `i-${process.pid}-${++seq}`;
}
const KEY = (id: string) => `k-${id}-${'x'.repeat(24)}`.replace(/[^A-Za-z0-9_-]/g, '_');

function role(name: string, r: Partial<RoleSpec> = {}): RoleSpec {
  return {
    name, min: 0, max: 1, count: 1, env: {}, exports: {}, imports: [], stopTimeoutMs: 2000,
    spares: 0, warmupMs: 0, drainTimeoutMs: 30_000, scale: [], metrics: [], ...r,
  };
}

export function transportConformance(factory: TransportFactory): void {
  const setup = async (t: TestContext) => {
    const mini = new MiniController();
    const transport = await factory.controller(mini.handlers, HEARTBEAT_MS);
    mini.transport = transport;
    t.after(() => transport.close());
    const links: AgentTransport[] = [];
    t.after(async () => {
      for (const l of links) await l.close('test over');
    });
    const instance = async (epoch = 1, id = newId()) => {
      if (!mini.keys.has(id)) {
        mini.keys.set(id, KEY(id));
        mini.epochs.set(id, epoch);
        await factory.addInstance?.(transport, id);
      }
      const opts: AgentTransportOptions = { instanceId: id, key: KEY(id), epoch, logger: quiet(), reconnectMinMs: 50, reconnectMaxMs: 400, handshakeTimeoutMs: 3000 };
      const raw = factory.agent(transport, opts);
      links.push(raw);
      return { id, link: new TestLink(raw), opts };
    };
    return { mini, transport, instance };
  };

  test(`${factory.name}: an order reaches its agent, is acknowledged, and presence follows heartbeats`, { skip: factory.skip ?? false, timeout: 60_000 }, async (t) => {
    const { mini, transport, instance } = await setup(t);
    const a = await instance();
    a.link.start();
    await until('the agent to be welcomed', async () => a.link.welcomes() > 0, 15_000, 20);
    await until('presence', async () => transport.isConnected(a.id), 5000, 20);
    assert.ok(transport.connected().includes(a.id));
    assert.ok(mini.order(a.id, { id: 'o-1', kind: 'undrain', reason: 'test' }));
    await until('the order to arrive', async () => a.link.orders().some((o) => o.id === 'o-1'), 5000, 20);
    await a.link.send({ type: 'ack', orderId: 'o-1' });
    await until('the ack', async () => mini.rec.acks.some((x) => x.orderId === 'o-1' && x.id === a.id), 5000, 20);
    // Heartbeats keep it present; once they stop, it is absent even though its connection is open.
    for (let i = 0; i < 6; i++) {
      await a.link.send({ type: 'status', status: { state: 'spare', restarts: 0 } });
      await sleep(HEARTBEAT_MS);
    }
    assert.ok(transport.isConnected(a.id), 'present while heartbeats come');
    await until('absence once heartbeats stop', async () => !transport.isConnected(a.id), 3 * HEARTBEAT_MS + 3000, 50);
    assert.ok(!transport.connected().includes(a.id));
    assert.equal(transport.send(a.id, { type: 'order', order: { id: 'o-2', kind: 'undrain', reason: 'x' } }), false, 'nothing is sent to an absent agent');
  });

  test(`${factory.name}: what an agent sent before it closed is all handled, in order, even when handling is slow`, { skip: factory.skip ?? false, timeout: 60_000 }, async (t) => {
    const { mini, instance } = await setup(t);
    const a = await instance();
    a.link.start();
    await until('welcome', async () => a.link.welcomes() > 0, 15_000, 20);
    // A stopping agent's last words: statuses, its role's last lines, its final status; then it
    // goes, while the controller is still busy with the first of them.
    mini.statusDelayMs = 150;
    const before = mini.rec.statuses.length;
    assert.ok(await a.link.send({ type: 'status', status: { state: 'draining', restarts: 0 } }));
    assert.ok(await a.link.send({ type: 'status', status: { state: 'stopping', restarts: 0 } }));
    assert.ok(await a.link.send({ type: 'log', lines: ['[agent] stopped', 'last line'] }));
    assert.ok(await a.link.send({ type: 'status', status: { state: 'terminated', restarts: 0 } }));
    await a.link.link.close('stopped');
    if (factory.closeIsSeen) {
      // settle: once it resolves, the connection's every frame is handled (the controller
      // judges an agent's exit only then).
      await mini.transport!.settle!(a.id, 10_000);
      assert.equal(mini.rec.statuses.length, before + 3, 'settled only once the last frame is handled');
    }
    await until('the final status', async () => mini.rec.statuses.length >= before + 3, 10_000, 20);
    assert.deepEqual(mini.rec.statuses.slice(before).map((s) => s.status.state), ['draining', 'stopping', 'terminated']);
    assert.deepEqual(mini.rec.logs, [{ id: a.id, lines: ['[agent] stopped', 'last line'] }]);
  });

  test(`${factory.name}: orders to one instance arrive in the order sent`, { skip: factory.skip ?? false, timeout: 60_000 }, async (t) => {
    const { mini, instance } = await setup(t);
    const a = await instance();
    a.link.start();
    await until('welcome', async () => a.link.welcomes() > 0, 15_000, 20);
    const ids = Array.from({ length: 200 }, (_, i) => `seq-${i}`);
    for (const id of ids) mini.order(a.id, { id, kind: 'undrain', reason: 'order test' });
    await until('all orders', async () => a.link.orders().length >= ids.length, 10_000, 20);
    assert.deepEqual(a.link.orders().map((o) => o.id), ids);
  });

  test(`${factory.name}: at least once, applied once — an order re-sent after a reconnect is applied once`, { skip: factory.skip ?? false, timeout: 60_000 }, async (t) => {
    const { mini, transport } = await setup(t);
    const id = newId();
    mini.keys.set(id, KEY(id));
    mini.epochs.set(id, 1);
    await factory.addInstance?.(transport, id);
    const workdir = mkdtempSync(join(tmpdir(), 'drover-transport-'));
    t.after(() => rmSync(workdir, { recursive: true, force: true }));
    const agent = new Agent({
      controllerUrl: 'http://127.0.0.1:9', instanceId: id, key: KEY(id), epoch: 1, workdir, port: await freePort(),
      logger: quiet(), reconnectMinMs: 50, reconnectMaxMs: 400, killTimeoutMs: 300, healthGraceMs: 100,
      transport: (common) => factory.agent(transport, common),
    });
    void agent.run();
    t.after(() => agent.shutdown('test over'));
    await until('the agent to join', async () => transport.isConnected(id) || undefined, 15_000, 20);
    const assign: Order = {
      id: 'assign-1', kind: 'assign',
      assignment: { app: 'a', appDir: workdir, role: role('web', { deploy: 'echo deployed >> "${workdir}/deploys.txt"', start: 'exec sleep 30' }), imports: {}, importsVersion: 'v0' },
    };
    mini.order(id, assign);
    // The same order again at once (a re-send racing the ack), and again after a reconnect.
    transport.send(id, { type: 'order', order: assign });
    await until('serving', async () => mini.rec.statuses.some((s) => s.id === id && s.status.state === 'serving'), 15_000, 50);
    const joinsBefore = mini.rec.joins.length;
    mini.pending.set(id, [assign]); // as if the ack had been lost
    await factory.interrupt(transport);
    await until('the agent to join again', async () => mini.rec.joins.length > joinsBefore || undefined, 15_000, 50);
    const rejoin = mini.rec.joins.at(-1)!;
    assert.ok(rejoin.applied.includes('assign-1'), 'the rejoin lists the order as applied');
    await until('the re-sent order to be acknowledged', async () => (mini.pending.get(id) ?? []).length === 0 || undefined, 10_000, 50);
    assert.equal(readFileSync(join(workdir, 'deploys.txt'), 'utf8'), 'deployed\n', 'deployed exactly once');
    assert.ok(mini.rec.acks.filter((x) => x.orderId === 'assign-1').length >= 2, 'acknowledged every time it arrived');
  });

  test(`${factory.name}: an agent reconnects after its connection is cut, and orders sent meanwhile reach it`, { skip: factory.skip ?? false, timeout: 60_000 }, async (t) => {
    const { mini, transport, instance } = await setup(t);
    const a = await instance();
    a.link.start();
    await until('welcome', async () => a.link.welcomes() > 0, 15_000, 20);
    await factory.interrupt(transport);
    mini.order(a.id, { id: 'during-outage', kind: 'undrain', reason: 'sent while away' });
    await until('a second welcome', async () => a.link.welcomes() > 1, 15_000, 20);
    await until('the order sent while away', async () => a.link.orders().some((o) => o.id === 'during-outage'), 10_000, 20);
    assert.ok(a.link.downs >= 1, 'the agent noticed the cut');
  });

  test(`${factory.name}: an agent of an old epoch is refused (sealed), and a fenced one is told so`, { skip: factory.skip ?? false, timeout: 60_000 }, async (t) => {
    const { mini, transport, instance } = await setup(t);
    const a = await instance(1);
    mini.epochs.set(a.id, 2); // the instance was replaced: epoch 2 is current
    a.link.start();
    await until('a sealed refusal', async () => a.link.received.some((m) => m.type === 'refused'), 15_000, 20);
    assert.equal(a.link.welcomes(), 0);
    assert.match((a.link.received.find((m) => m.type === 'refused') as { reason: string }).reason, /stale epoch 1/);
    await a.link.link.close('refused');
    assert.ok(!transport.isConnected(a.id));

    const b = await instance(1);
    b.link.start();
    await until('welcome', async () => b.link.welcomes() > 0, 15_000, 20);
    transport.fence(b.id, 'instance destroyed');
    await until('fenced', async () => b.link.received.some((m) => m.type === 'refused' && m.reason === 'instance destroyed'), 10_000, 20);
    assert.ok(!transport.isConnected(b.id));
    assert.equal(mini.order(b.id, { id: 'after-fence', kind: 'undrain', reason: 'x' }), false);
  });

  test(`${factory.name}: a malformed message is dropped and logged on both sides, never a crash`, { skip: factory.skip ?? false, timeout: 60_000 }, async (t) => {
    const { mini, transport, instance } = await setup(t);
    const a = await instance();
    a.link.start();
    await until('welcome', async () => a.link.welcomes() > 0, 15_000, 20);
    // The controller sends something that is not an order: the agent drops it and keeps the session.
    transport.send(a.id, { type: 'order', order: { id: 'bad', kind: 'explode' } } as unknown as ControllerMessage);
    mini.order(a.id, { id: 'good', kind: 'undrain', reason: 'after a bad one' });
    await until('the good order', async () => a.link.orders().some((o) => o.id === 'good'), 10_000, 20);
    assert.ok(!a.link.orders().some((o) => o.id === 'bad'), 'the malformed order was dropped');
    assert.equal(a.link.welcomes(), 1, 'the session survived it');
    // The agent (holding the key) says something outside the schema: dropped, logged, session ended; it joins again.
    await a.link.send({ type: 'status', status: { state: 'no-such-state', restarts: -1 } } as unknown as AgentMessage);
    await until('the controller to log it', async () => mini.rec.suspicious.some((r) => /malformed/.test(r)), 10_000, 20);
    assert.ok(!mini.rec.statuses.some((s) => (s.status.state as string) === 'no-such-state'), 'never applied');
    await until('the agent to join again', async () => a.link.welcomes() > 1, 15_000, 20);
  });
}
