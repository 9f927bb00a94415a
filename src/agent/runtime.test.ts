/**
 * The agent against a minimal fake controller: a WebSocket server on loopback that speaks
 * protocol.ts, records what the agent says and sends the orders a test gives it.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { WebSocketServer, type WebSocket } from 'ws';
import { randomBytes } from 'node:crypto';
import {
  controllerProof,
  PROTOCOL_VERSION,
  SealedChannel,
  type AgentMessage,
  type AgentStatus,
  type ControllerMessage,
  type HelloMessage,
  type Order,
  type ResolvedImports,
  type RoleSpec,
} from '../core/index.js';
import { killGroup, readEstablished, readStat, waitGroupGone } from './procfs.js';
import { Agent, type AgentExit, type AgentOptions } from './runtime.js';

type TestContext = { after: (fn: () => unknown) => void };

const KEY = 'k'.repeat(43);

class FakeController {
  readonly messages: AgentMessage[] = [];
  readonly hellos: HelloMessage[] = [];
  #wss?: WebSocketServer;
  #socket?: WebSocket;
  #channel?: SealedChannel;
  port = 0;
  connections = 0;
  /** The key this controller proves and checks; a wrong one makes it an impostor. */
  key = KEY;
  /** What to answer a join with. */
  onHello: () => ControllerMessage = () => ({ type: 'welcome', heartbeatMs: 150 });

  async start(port = 0): Promise<void> {
    const wss = new WebSocketServer({ host: '127.0.0.1', port, path: '/v1/agent' });
    await new Promise<void>((resolve, reject) => {
      wss.once('listening', resolve);
      wss.once('error', reject);
    });
    this.#wss = wss;
    this.port = (wss.address() as net.AddressInfo).port;
    wss.on('connection', (ws) => {
      this.connections += 1;
      this.#socket = ws;
      let channel: SealedChannel | undefined;
      ws.on('message', (data) => {
        const text = (data as Buffer).toString('utf8');
        if (!channel) {
          const hello = JSON.parse(text) as HelloMessage;
          this.hellos.push(hello);
          const nonce = randomBytes(32).toString('base64url');
          const params = { key: this.key, instanceId: hello.instanceId, epoch: hello.epoch, agentNonce: hello.nonce, controllerNonce: nonce };
          channel = new SealedChannel('controller', params);
          this.#channel = channel;
          ws.send(JSON.stringify({ type: 'challenge', nonce, proof: controllerProof(params) }));
          return;
        }
        const opened = channel.open(text);
        if (!opened.ok) throw new Error(`fake controller: bad frame from the agent (${opened.error})`);
        const msg = opened.message as AgentMessage;
        this.messages.push(msg);
        if (msg.type === 'join') this.send(this.onHello());
      });
    });
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The leader epoch stamped on what this controller sends. */
  leader = 1;

  send(msg: ControllerMessage, leader = this.leader): void {
    if (this.#channel) this.#socket?.send(this.#channel.seal({ ...msg, leader }));
  }

  /** Sends a frame as it is, unsealed: what an impostor without the key can do. */
  sendRaw(text: string): void {
    this.#socket?.send(text);
  }

  order(order: Order): void {
    this.send({ type: 'order', order });
  }

  /** Closes the server and every connection to it, like a controller that went away. */
  async stop(): Promise<void> {
    const wss = this.#wss;
    if (!wss) return;
    this.#wss = undefined;
    for (const c of wss.clients) c.terminate();
    await new Promise<void>((resolve) => wss.close(() => resolve()));
  }

  mark(): number {
    return this.messages.length;
  }

  async waitFor<T extends AgentMessage>(
    what: string,
    pred: (m: AgentMessage) => m is T,
    since = 0,
    timeoutMs = 8000,
  ): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.messages.slice(since).find(pred);
      if (found) return found;
      if (Date.now() > deadline) {
        const last = this.lastStatus();
        throw new Error(`timed out waiting for ${what}; last status: ${JSON.stringify(last)}`);
      }
      await sleep(10);
    }
  }

  waitStatus(what: string, pred: (s: AgentStatus) => boolean, since = 0): Promise<AgentMessage> {
    return this.waitFor(what, (m): m is AgentMessage => statusOf(m) !== undefined && pred(statusOf(m)!), since);
  }

  waitAck(orderId: string, since = 0): Promise<AgentMessage> {
    return this.waitFor(`ack ${orderId}`, (m): m is AgentMessage => m.type === 'ack' && m.orderId === orderId, since);
  }

  lastStatus(): AgentStatus | undefined {
    for (let i = this.messages.length - 1; i >= 0; i--) {
      const s = statusOf(this.messages[i]!);
      if (s) return s;
    }
    return undefined;
  }
}

function statusOf(m: AgentMessage): AgentStatus | undefined {
  return m.type === 'status' || m.type === 'join' ? m.status : undefined;
}

function alive(pid: number): boolean {
  const st = readStat(pid);
  return st !== undefined && st.state !== 'Z' && st.state !== 'X';
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const { port } = s.address() as net.AddressInfo;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

function get(port: number, path = '/'): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve(body));
      })
      .on('error', reject);
  });
}

function role(r: Partial<RoleSpec>): RoleSpec {
  return {
    name: 'api',
    min: 1,
    max: 1,
    count: 1,
    env: {},
    exports: {},
    imports: [],
    stopTimeoutMs: 2000,
    spares: 0,
    warmupMs: 0,
    drainTimeoutMs: 30_000,
    scale: [],
    metrics: [],
    ...r,
  };
}

function dbImports(url: string): ResolvedImports {
  return { db: [{ instance: 'i-db', exports: { url } }] };
}

const SERVER = `node -e "require('http').createServer((q,s)=>s.end('ok')).listen(process.env.PORT,'127.0.0.1')"`;

interface Harness {
  controller: FakeController;
  agent: Agent;
  exit: Promise<AgentExit>;
  workdir: string;
  port: number;
  file(name: string): string;
}

async function harness(t: TestContext, options: Partial<AgentOptions> = {}): Promise<Harness> {
  const controller = new FakeController();
  await controller.start();
  const workdir = mkdtempSync(join(tmpdir(), 'drover-agent-'));
  const port = await freePort();
  const agent = new Agent({
    controllerUrl: controller.url,
    instanceId: 'i-1',
    key: KEY,
    epoch: 7,
    workdir,
    port,
    logger: pino({ level: process.env.AGENT_TEST_LOG ?? 'silent' }),
    reconnectMinMs: 50,
    reconnectMaxMs: 200,
    killTimeoutMs: 500,
    finalStatusTimeoutMs: 2000,
    restartBackoffMs: 100,
    ...options,
  });
  const exit = agent.run();
  t.after(async () => {
    await agent.shutdown('test over');
    await controller.stop();
    rmSync(workdir, { recursive: true, force: true });
  });
  const file = (name: string): string => {
    const p = join(workdir, name);
    return existsSync(p) ? readFileSync(p, 'utf8') : '';
  };
  return { controller, agent, exit, workdir, port, file };
}

void test('the agent carries a role from assign through imports, updates and reconnects to stop', async (t) => {
  const h = await harness(t);
  const { controller: c } = h;
  const api = role({
    deploy: 'echo "deploying to $PWD"; echo "deployed $DROVER_ROLE" > deployed.txt',
    start: SERVER,
    update: 'echo "$DB_URL $GREETING" > update.txt',
    stop: 'echo stop-script >> stop.txt',
    undeploy: 'echo undeployed > undeployed.txt',
    env: { GREETING: 'hi-${role}' },
    exports: { endpoint: 'http://${ip}:${port}', db: '${db.url}' },
    imports: [
      { raw: 'db.url', role: 'db', key: 'url', optional: false },
      { raw: 'cache.url?', role: 'cache', key: 'url', optional: true },
    ],
    health: { http: '/health', intervalMs: 100, timeoutMs: 500, failureThreshold: 3 },
  });
  let pid = 0;

  await t.test('hello carries the instance, epoch and a nonce, and no secret; join the pid and a spare status', async () => {
    const hello = await c.waitFor('join', (m) => m.type === 'join');
    const plain = c.hellos[0]!;
    assert.equal(plain.protocol, PROTOCOL_VERSION);
    assert.equal(plain.instanceId, 'i-1');
    assert.equal(plain.epoch, 7);
    assert.match(plain.nonce, /^[A-Za-z0-9_-]{43}$/);
    assert.ok(!JSON.stringify(c.hellos).includes(KEY), 'the key never crosses the wire');
    assert.equal(hello.pid, process.pid);
    assert.equal(hello.status.state, 'spare');
    assert.deepEqual(hello.applied, []);
    const first = await c.waitFor('status after welcome', (m) => m.type === 'status');
    assert.equal(first.status.state, 'spare');
    assert.ok(first.vitals && first.vitals.loadavg.length === 3);
  });

  await t.test('assign with a required import unresolved: deploys, then waits', async () => {
    const since = c.mark();
    c.order({
      id: 'o1',
      kind: 'assign',
      assignment: { app: 'shop', appDir: '/srv/shop', role: api, imports: {}, importsVersion: 'v0' },
    });
    await c.waitAck('o1', since);
    const waiting = await c.waitStatus('waiting', (s) => s.state === 'waiting', since);
    assert.equal(statusOf(waiting)?.role, 'api');
    assert.match(statusOf(waiting)?.message ?? '', /waiting for db\.url/);
    assert.doesNotMatch(statusOf(waiting)?.message ?? '', /cache/, 'optional imports are not waited for');
    assert.equal(h.file('deployed.txt'), 'deployed api\n');
    const states = c.messages.slice(since).flatMap((m) => statusOf(m)?.state ?? []);
    assert.deepEqual([...new Set(states)], ['assigned', 'deploying', 'waiting']);
  });

  await t.test('an imports order resolves the wait: starting, then serving with rendered exports', async () => {
    const since = c.mark();
    c.order({ id: 'o2', kind: 'imports', imports: dbImports('postgres://db1'), importsVersion: 'v1' });
    await c.waitAck('o2', since);
    await c.waitStatus('starting', (s) => s.state === 'starting', since);
    const serving = statusOf(await c.waitStatus('serving', (s) => s.state === 'serving', since))!;
    assert.deepEqual(serving.exports, { endpoint: `http://127.0.0.1:${h.port}`, db: 'postgres://db1' });
    assert.equal(serving.importsVersion, 'v1');
    assert.ok(serving.servingSince! > 0);
    assert.equal(await get(h.port), 'ok');
    pid = h.agent.rolePid!;
    assert.ok(pid > 0 && alive(pid));
    assert.equal(h.file('update.txt'), '', 'no update before the first start');
  });

  await t.test('heartbeats carry the whole status and vitals of the role', async () => {
    const since = c.mark();
    const beat = await c.waitFor(
      'heartbeat with role vitals',
      (m): m is Extract<AgentMessage, { type: 'status' }> => m.type === 'status' && m.vitals?.role !== undefined,
      since,
    );
    assert.equal(beat.status.state, 'serving');
    assert.ok(beat.vitals!.memTotalBytes > 0);
    assert.ok(beat.vitals!.role!.pids >= 1);
    assert.ok(beat.vitals!.role!.rssBytes > 0);
  });

  await t.test('an order re-sent with the same id is acked again but not re-applied', async () => {
    const since = c.mark();
    c.order({ id: 'o2', kind: 'imports', imports: dbImports('postgres://other'), importsVersion: 'v9' });
    c.order({
      id: 'o1',
      kind: 'assign',
      assignment: { app: 'shop', appDir: '/srv/shop', role: api, imports: {}, importsVersion: 'v0' },
    });
    await c.waitAck('o2', since);
    await c.waitAck('o1', since);
    await sleep(300);
    assert.equal(h.file('update.txt'), '');
    assert.equal(c.lastStatus()?.importsVersion, 'v1');
    assert.equal(c.lastStatus()?.state, 'serving');
    assert.equal(h.agent.rolePid, pid);
  });

  await t.test('a new imports order runs update with the new environment', async () => {
    const since = c.mark();
    c.order({ id: 'o3', kind: 'imports', imports: dbImports('postgres://db2'), importsVersion: 'v2' });
    await c.waitAck('o3', since);
    const s = statusOf(await c.waitStatus('v2 applied', (s) => s.importsVersion === 'v2', since))!;
    assert.equal(h.file('update.txt'), 'postgres://db2 hi-api\n');
    assert.equal(s.state, 'serving');
    assert.equal(s.exports?.db, 'postgres://db2');
    assert.equal(h.agent.rolePid, pid, 'update does not restart the process');
  });

  await t.test('the controller goes away and comes back: the role keeps running, the agent reconnects', async () => {
    const port = c.port;
    await c.stop();
    await sleep(400); // a few failed reconnect attempts
    assert.equal(await get(h.port), 'ok', 'still serving without a controller');
    const since = c.mark();
    await c.start(port);
    const hello = await c.waitFor('hello again', (m) => m.type === 'join', since);
    assert.deepEqual([...hello.applied].sort(), ['o1', 'o2', 'o3']);
    assert.equal(hello.status.state, 'serving');
    await c.waitStatus('status after reconnect', (s) => s.state === 'serving', since + 1);
    assert.equal(h.agent.rolePid, pid, 'same process');
    assert.ok(alive(pid));
  });

  await t.test('stop: stopping, stop script, process ended, undeploy, terminated, run() resolves', async () => {
    const since = c.mark();
    c.order({ id: 'o4', kind: 'stop', reason: 'scale in' });
    await c.waitAck('o4', since);
    await c.waitStatus('stopping', (s) => s.state === 'stopping', since);
    const done = statusOf(await c.waitStatus('terminated', (s) => s.state === 'terminated', since))!;
    assert.match(done.message ?? '', /scale in/);
    assert.equal(done.exports, undefined);
    const exit = await h.exit;
    assert.equal(exit.reason, 'terminated');
    assert.ok(!alive(pid), 'role process is gone');
    assert.equal(h.file('stop.txt'), 'stop-script\n');
    assert.equal(h.file('undeployed.txt'), 'undeployed\n');
    assert.match(h.file('role.log'), /^\S+Z \[deploy\] deploying to \//m);
    const after = c.messages.slice(since);
    const logAt = after.findIndex((m) => m.type === 'log');
    assert.ok(logAt >= 0 && logAt < after.findIndex((m) => statusOf(m)?.state === 'terminated'), 'last lines before the final status');
    assert.ok((after[logAt] as Extract<AgentMessage, { type: 'log' }>).lines.some((l) => l.startsWith('[deploy] deploying to /')));
  });
});

void test('refused: the agent kills its role without scripts and exits', async (t) => {
  const h = await harness(t);
  const { controller: c } = h;
  await c.waitFor('hello', (m) => m.type === 'join');
  c.order({
    id: 'a1',
    kind: 'assign',
    assignment: {
      app: 'shop',
      appDir: '/srv/shop',
      role: role({ start: 'sleep 300 & wait', stop: 'echo ran > stop.txt', undeploy: 'echo ran > undeploy.txt' }),
      imports: {},
      importsVersion: 'v0',
    },
  });
  await c.waitStatus('serving', (s) => s.state === 'serving');
  const pid = h.agent.rolePid!;
  assert.ok(alive(pid));
  // A deposed controller (an older leader epoch than the newest heard) is not obeyed.
  c.send({ type: 'refused', reason: 'from a deposed leader' }, 0);
  c.send({ type: 'order', order: { id: 'o-old', kind: 'stop', reason: 'from a deposed leader' } }, 0);
  await sleep(300);
  assert.ok(alive(pid), 'the role keeps running');
  assert.ok(!c.messages.some((m) => m.type === 'ack' && m.orderId === 'o-old'), 'the old leader\'s order is not carried out');
  c.leader = 2;
  c.send({ type: 'refused', reason: 'instance i-1 was replaced' });
  const exit = await h.exit;
  assert.equal(exit.reason, 'refused');
  assert.match(exit.message, /replaced/);
  assert.ok(!alive(pid));
  assert.equal(h.file('stop.txt'), '', 'no stop script when fenced');
  assert.equal(h.file('undeploy.txt'), '');
});

void test('a failing deploy is failed with its output; a failing update keeps serving', async (t) => {
  await t.test('deploy', async (t) => {
    const h = await harness(t);
    const { controller: c } = h;
    await c.waitFor('hello', (m) => m.type === 'join');
    c.order({
      id: 'd1',
      kind: 'assign',
      assignment: {
        app: 'shop',
        appDir: '/srv/shop',
        role: role({ deploy: 'echo "fetching"; echo "no space left" >&2; exit 9', start: 'sleep 300' }),
        imports: {},
        importsVersion: 'v0',
      },
    });
    const failed = statusOf(await c.waitStatus('failed', (s) => s.state === 'failed'))!;
    assert.equal(failed.lastExit?.code, 9);
    assert.ok(failed.lastExit?.tail.includes('no space left'));
    assert.match(failed.message ?? '', /deploy exited with code 9: no space left/);
    assert.equal(h.agent.rolePid, undefined, 'never started');
  });

  await t.test('update, on a role without a start command', async (t) => {
    const h = await harness(t);
    const { controller: c } = h;
    await c.waitFor('hello', (m) => m.type === 'join');
    c.order({
      id: 'u1',
      kind: 'assign',
      assignment: {
        app: 'shop',
        appDir: '/srv/shop',
        role: role({
          name: 'lb',
          update: 'test "$DB_URL" != postgres://bad || { echo "bad config" >&2; exit 1; }',
          exports: { url: 'http://${ip}:${port}' },
          imports: [{ raw: 'db.url', role: 'db', key: 'url', optional: false }],
        }),
        imports: dbImports('postgres://good'),
        importsVersion: 'v1',
      },
    });
    await c.waitStatus('serving', (s) => s.state === 'serving' && s.importsVersion === 'v1');
    const since = c.mark();
    c.order({ id: 'u2', kind: 'imports', imports: dbImports('postgres://bad'), importsVersion: 'v2' });
    const s = statusOf(await c.waitStatus('update failure', (s) => /update/.test(s.message ?? ''), since))!;
    assert.equal(s.state, 'serving');
    assert.equal(s.importsVersion, 'v1', 'the failed imports are not reported as applied');
    assert.match(s.message ?? '', /update exited with code 1/);
    assert.deepEqual(s.exports, { url: `http://127.0.0.1:${h.port}` });
    const log = await c.waitFor('log line', (m) => m.type === 'log', since);
    assert.ok(log.lines.includes('bad config'));
  });
});

void test('a crashing start command is restarted with a message, and a liveness failure restarts it', async (t) => {
  const h = await harness(t, { maxRestarts: 10 });
  const { controller: c } = h;
  await c.waitFor('hello', (m) => m.type === 'join');
  // Serves /health until the flag file appears, then answers 500: alive but unhealthy.
  const start = `node -e "
    const fs=require('fs');
    require('http').createServer((q,s)=>{s.statusCode=fs.existsSync('sick')?500:200;s.end()}).listen(process.env.PORT,'127.0.0.1')"`;
  c.order({
    id: 'c1',
    kind: 'assign',
    assignment: {
      app: 'shop',
      appDir: '/srv/shop',
      role: role({
        start: `test -e crashed || { touch crashed; echo "first run dies" >&2; exit 1; }; ${start}`,
        health: { http: '/health', intervalMs: 50, timeoutMs: 300, failureThreshold: 2 },
      }),
      imports: {},
      importsVersion: 'v0',
    },
  });
  const restarting = statusOf(await c.waitStatus('restart message', (s) => /restarting in/.test(s.message ?? '')))!;
  assert.match(restarting.message ?? '', /start command exited with code 1, restarting in 100ms/);
  assert.equal(restarting.lastExit?.code, 1);
  assert.ok(restarting.lastExit?.tail.includes('first run dies'));
  const serving = statusOf(await c.waitStatus('serving', (s) => s.state === 'serving'))!;
  assert.equal(serving.restarts, 1);
  const pid = h.agent.rolePid!;

  const since = c.mark();
  rmSync(join(h.workdir, 'crashed'));
  // Make it sick; the restarted process would crash once more (no `crashed` file), then serve.
  const sick = join(h.workdir, 'sick');
  writeFileSync(sick, '');
  const withdrawnMsg = await c.waitStatus('withdrawn', (s) => s.state === 'starting', since);
  const withdrawn = statusOf(withdrawnMsg)!;
  assert.match(withdrawn.message ?? '', /health check failed 2 times: GET \/health answered HTTP 500/);
  assert.equal(withdrawn.exports, undefined);
  rmSync(sick);
  await c.waitStatus('serving again', (s) => s.state === 'serving', c.messages.indexOf(withdrawnMsg));
  assert.notEqual(h.agent.rolePid, pid);
  assert.ok(!alive(pid));
  assert.ok(h.agent.status().restarts >= 2);
});

void test('a role process group left by an earlier agent in the workdir is ended at start, a stranger is not', async (t) => {
  const workdir = mkdtempSync(join(tmpdir(), 'drover-agent-'));
  const spawnGroup = (env: NodeJS.ProcessEnv): number => {
    const child = spawn('bash', ['-c', 'sleep 300 & wait'], { detached: true, stdio: 'ignore', env });
    child.unref();
    return child.pid!;
  };
  const ours = spawnGroup({ ...process.env, DROVER_INSTANCE: 'i-1', DROVER_WORKDIR: workdir });
  const stranger = spawnGroup({ ...process.env, DROVER_INSTANCE: 'i-2', DROVER_WORKDIR: workdir });
  t.after(() => {
    for (const pgid of [ours, stranger]) killGroup(pgid, 'SIGKILL');
    rmSync(workdir, { recursive: true, force: true });
  });
  await sleep(100);

  const start = async (pgid: number): Promise<void> => {
    writeFileSync(join(workdir, 'role.pgid'), `${pgid}\n`);
    const agent = new Agent({
      controllerUrl: `http://127.0.0.1:${await freePort()}`,
      instanceId: 'i-1',
      key: KEY,
      epoch: 1,
      workdir,
      port: 1,
      logger: pino({ level: 'silent' }),
    });
    void agent.run();
    await agent.shutdown();
  };
  await start(stranger);
  assert.ok(alive(stranger), "another instance's processes are left alone");
  await start(ours);
  await waitGroupGone(ours, 2000);
  assert.ok(!alive(ours), 'our stray group is gone');
});

// ---- drain, undrain, metrics -----------------------------------------------------------

/** A role server: /slow answers after 1.5s; /metrics and /stats expose numbers; SIGTERM says bye. */
const ROLE_SERVER = `
const http = require('http');
const server = http.createServer((req, res) => {
  if (req.url === '/slow') return void setTimeout(() => res.end('slow done'), 1500);
  if (req.url === '/metrics') return void res.end('# TYPE queue_depth gauge\\nqueue_depth 7\\nother 1\\n');
  if (req.url === '/stats') return void res.end(JSON.stringify({ stats: { backlog: '3' } }));
  res.end('ok');
});
server.listen(process.env.PORT, '127.0.0.1', () => console.log('listening on ' + process.env.PORT));
process.on('SIGTERM', () => { console.log('bye'); process.exit(0); });
`;

function request(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

async function waitConnections(port: number, atLeast: number): Promise<void> {
  const deadline = Date.now() + 5000;
  while ((readEstablished(port) ?? 0) < atLeast) {
    if (Date.now() > deadline) throw new Error(`fewer than ${atLeast} connections to port ${port}`);
    await sleep(10);
  }
}

/** Holds a connection to the role open, as a client that never finishes would. */
async function holdConnection(t: TestContext, port: number): Promise<net.Socket> {
  const sock = net.connect({ host: '127.0.0.1', port });
  sock.on('error', () => undefined);
  await new Promise<void>((resolve) => sock.once('connect', () => resolve()));
  t.after(() => sock.destroy());
  return sock;
}

/** Assigns a role running ROLE_SERVER and waits until it serves. */
async function serveRole(h: Harness, r: Partial<RoleSpec> = {}): Promise<AgentStatus> {
  writeFileSync(join(h.workdir, 'server.cjs'), ROLE_SERVER);
  const since = h.controller.mark();
  h.controller.order({
    id: 'assign-1',
    kind: 'assign',
    assignment: {
      app: 'shop',
      appDir: '/srv/shop',
      role: role({
        start: 'exec node server.cjs',
        exports: { endpoint: 'http://${ip}:${port}' },
        health: { http: '/health', intervalMs: 100, timeoutMs: 500, failureThreshold: 3 },
        ...r,
      }),
      imports: {},
      importsVersion: 'v0',
    },
  });
  return statusOf(await h.controller.waitStatus('serving', (s) => s.state === 'serving', since))!;
}

void test('drain lets an in-flight request finish, then stops and sends the last output lines', async (t) => {
  const h = await harness(t);
  const { controller: c } = h;
  await c.waitFor('hello', (m) => m.type === 'join');
  await serveRole(h);
  const pid = h.agent.rolePid!;

  const inFlight = request(h.port, '/slow');
  await waitConnections(h.port, 1);
  const since = c.mark();
  const drainedAt = Date.now();
  c.order({ id: 'd1', kind: 'drain', reason: 'scale in', timeoutMs: 10_000 });
  await c.waitAck('d1', since);
  const draining = statusOf(await c.waitStatus('draining', (s) => s.state === 'draining', since))!;
  assert.match(draining.message ?? '', /^draining: waiting for 1 in-flight connection \(up to 10s\)$/);
  assert.equal(draining.exports, undefined, 'out of rotation');

  const res = await inFlight;
  const answeredAt = Date.now();
  assert.deepEqual(res, { status: 200, body: 'slow done' });
  await c.waitStatus('terminated', (s) => s.state === 'terminated', since);
  const exit = await h.exit;
  assert.equal(exit.reason, 'terminated');
  assert.ok(!alive(pid), 'role process is gone');
  assert.ok(Date.now() - drainedAt < 5000, 'the drain ended with the request, not at the timeout');

  // From the order on: a heartbeat may have said `serving` just before it arrived.
  const after = c.messages.slice(c.messages.findIndex((m, i) => i >= since && statusOf(m)?.state === 'draining'));
  const states = after.flatMap((m) => statusOf(m)?.state ?? []);
  assert.deepEqual([...new Set(states)], ['draining', 'stopping', 'terminated']);
  const stopping = after.map(statusOf).find((s) => s?.state === 'stopping')!;
  assert.match(stopping.message ?? '', /^stopping: scale in \(drained\)$/);
  const logAt = after.findIndex((m) => m.type === 'log');
  const terminatedAt = after.findIndex((m) => statusOf(m)?.state === 'terminated');
  assert.ok(logAt >= 0 && logAt < terminatedAt, 'the last lines arrive before the final status');
  const log = after[logAt] as Extract<AgentMessage, { type: 'log' }>;
  assert.match(log.lines[0] ?? '', /stopped: scale in; last output of role api/);
  assert.ok(log.lines.includes(`listening on ${h.port}`));
  assert.equal(log.lines.at(-1), 'bye', 'output written while stopping is included');
  assert.ok(answeredAt - drainedAt >= 1000, 'the slow request really was in flight');
});

void test('drain gives up waiting after timeoutMs and stops anyway', async (t) => {
  const h = await harness(t);
  const { controller: c } = h;
  await c.waitFor('hello', (m) => m.type === 'join');
  await serveRole(h);
  const pid = h.agent.rolePid!;
  await holdConnection(t, h.port);
  await waitConnections(h.port, 1);

  const since = c.mark();
  const drainedAt = Date.now();
  c.order({ id: 'd1', kind: 'drain', reason: 'scale in', timeoutMs: 600 });
  const stopping = statusOf(await c.waitStatus('stopping', (s) => s.state === 'stopping', since))!;
  const waited = Date.now() - drainedAt;
  assert.ok(waited >= 600 && waited < 3000, `waited ${waited}ms`);
  assert.match(stopping.message ?? '', /drain timed out after 600ms, 1 in-flight connection still open/);
  await c.waitStatus('terminated', (s) => s.state === 'terminated', since);
  assert.equal((await h.exit).reason, 'terminated');
  assert.ok(!alive(pid));
});

void test('undrain during the wait serves again with the same process; too late, it is ignored', async (t) => {
  const h = await harness(t);
  const { controller: c } = h;
  await c.waitFor('hello', (m) => m.type === 'join');
  const serving = await serveRole(h, { stop: 'sleep 0.5' });
  const pid = h.agent.rolePid!;
  const held = await holdConnection(t, h.port);
  await waitConnections(h.port, 1);

  let since = c.mark();
  c.order({ id: 'd1', kind: 'drain', reason: 'scale in', timeoutMs: 30_000 });
  await c.waitStatus('draining', (s) => s.state === 'draining', since);
  await sleep(300);
  since = c.mark();
  c.order({ id: 'u1', kind: 'undrain', reason: 'load came back' });
  await c.waitAck('u1', since);
  const back = statusOf(await c.waitStatus('serving again', (s) => s.state === 'serving', since))!;
  assert.deepEqual(back.exports, { endpoint: `http://127.0.0.1:${h.port}` });
  assert.equal(back.servingSince, serving.servingSince, 'it never stopped serving');
  assert.match(back.message ?? '', /drain cancelled: load came back/);
  assert.equal(h.agent.rolePid, pid, 'same process');
  assert.equal(back.restarts, 0);

  // The cancelled drain is over: closing the held connection does not stop the role.
  held.destroy();
  await sleep(400);
  assert.equal(c.lastStatus()?.state, 'serving');

  // Drain again; an undrain once the role has been told to stop is acknowledged and ignored.
  since = c.mark();
  c.order({ id: 'd2', kind: 'drain', reason: 'scale in again', timeoutMs: 30_000 });
  await c.waitStatus('stopping', (s) => s.state === 'stopping', since);
  c.order({ id: 'u2', kind: 'undrain', reason: 'too late' });
  await c.waitAck('u2', since);
  const ignored = statusOf(await c.waitStatus('undrain ignored', (s) => /undrain ignored/.test(s.message ?? ''), since))!;
  assert.equal(ignored.state, 'stopping');
  assert.match(ignored.message ?? '', /undrain ignored: the role is already being stopped/);
  await c.waitStatus('terminated', (s) => s.state === 'terminated', since);
  assert.ok(!alive(pid));
});

void test('a role process that exits while draining is not restarted', async (t) => {
  const h = await harness(t);
  const { controller: c } = h;
  await c.waitFor('hello', (m) => m.type === 'join');
  await serveRole(h, { stop: 'echo stop-script >> stop.txt' });
  const pid = h.agent.rolePid!;
  await holdConnection(t, h.port);
  await waitConnections(h.port, 1);
  const since = c.mark();
  c.order({ id: 'd1', kind: 'drain', reason: 'scale in', timeoutMs: 30_000 });
  await c.waitStatus('draining', (s) => s.state === 'draining', since);
  // As a worker does once its last task is done.
  process.kill(pid, 'SIGTERM');
  const done = statusOf(await c.waitStatus('terminated', (s) => s.state === 'terminated', since))!;
  assert.equal(done.restarts, 0);
  assert.equal(h.file('stop.txt'), 'stop-script\n', 'the stop script still cleans up');
  const states = c.messages.slice(since).flatMap((m) => statusOf(m)?.state ?? []);
  assert.ok(!states.includes('starting'));
});

void test('heartbeats carry the role\'s connections and its instance-scope metrics', async (t) => {
  const h = await harness(t, { vitals: { minIntervalMs: 0 } });
  const { controller: c } = h;
  await c.waitFor('hello', (m) => m.type === 'join');
  const scrape = { intervalMs: 200, timeoutMs: 500, scope: 'instance' } as const;
  await serveRole(h, {
    metrics: [
      { name: 'depth', http: '/metrics', format: 'prometheus', select: 'queue_depth', ...scrape },
      { name: 'backlog', http: '/stats', format: 'json', select: 'stats.backlog', ...scrape },
      { name: 'absent', http: '/metrics', format: 'prometheus', select: 'no_such_metric', ...scrape },
      { name: 'broken', http: '/nowhere', format: 'json', select: 'x', ...scrape },
      { name: 'queue', url: 'http://127.0.0.1:1/stats', format: 'json', select: 'x', ...scrape, scope: 'role' },
    ],
  });
  await holdConnection(t, h.port);
  await waitConnections(h.port, 1);
  const since = c.mark();
  const beat = await c.waitFor(
    'heartbeat with metrics and a connection',
    (m): m is Extract<AgentMessage, { type: 'status' }> =>
      m.type === 'status' &&
      m.vitals?.metrics?.depth !== undefined &&
      m.vitals.metrics.backlog !== undefined &&
      (m.vitals.role?.connections ?? 0) >= 1,
    since,
  );
  assert.deepEqual(beat.vitals!.metrics, { depth: 7, backlog: 3 }, 'failed scrapes and role-scope metrics are left out');
  assert.equal(beat.vitals!.role!.connections, 1);
});

void test('an impostor on the controller address is never obeyed, and the role keeps running', async (t) => {
  const h = await harness(t);
  const c = h.controller;
  // The genuine controller assigns a role; then an impostor without the key takes its place.
  await c.waitFor('join', (m) => m.type === 'join');
  c.order({ id: 'o1', kind: 'assign', assignment: { app: 'a', appDir: h.workdir, role: role({ start: SERVER }), imports: {}, importsVersion: 'v1' } });
  await c.waitStatus('serving', (s) => s.state === 'serving');
  const port = c.port;
  await c.stop();
  const impostor = new FakeController();
  impostor.key = 'x'.repeat(43);
  await impostor.start(port);
  t.after(() => impostor.stop());
  await until('the agent says hello to the impostor twice', async () => impostor.hellos.length >= 2, 8000);
  // Unsealed orders and refusals are what an impostor can send; none may be obeyed.
  impostor.sendRaw(JSON.stringify({ type: 'refused', reason: 'go away' }));
  impostor.sendRaw(JSON.stringify({ type: 'order', order: { id: 'evil', kind: 'stop', reason: 'x' } }));
  await sleep(500);
  assert.equal(impostor.messages.length, 0, 'nothing sealed was said to a peer that failed its proof');
  assert.equal(h.agent.status().state, 'serving');
  assert.ok(h.agent.rolePid !== undefined && alive(h.agent.rolePid));
  const raced = await Promise.race([h.exit.then(() => 'exited'), sleep(200).then(() => 'running')]);
  assert.equal(raced, 'running');
});

void test('a forged frame on an authenticated connection is dropped with the connection', async (t) => {
  const h = await harness(t);
  const c = h.controller;
  await c.waitFor('join', (m) => m.type === 'join');
  const before = c.connections;
  c.sendRaw(JSON.stringify({ s: 2, m: JSON.stringify({ type: 'order', order: { id: 'evil', kind: 'stop', reason: 'x' } }), h: 'AAAA' }));
  await until('the agent reconnects', async () => c.connections > before, 8000);
  assert.equal(h.agent.status().state, 'spare');
  assert.ok(!c.messages.some((m) => m.type === 'ack' && m.orderId === 'evil'));
});

async function until(what: string, fn: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

void test('tenants: add runs once the role serves, with TENANT_* as data; a failing add is retried, then failed with its output; remove frees it', async (t) => {
  const h = await harness(t);
  const c = h.controller;
  await c.waitFor('join', (m) => m.type === 'join');
  const tenants = {
    capacity: 20,
    // Fails on its first run for lab-2 (a marker file), succeeds after; always fails for bad-1.
    add: 'echo "add $TENANT_ID $TENANT_NAME $TENANT_HOST" >> tenants.log; if [ "$TENANT_NAME" = bad-1 ]; then echo "no room in the shared store"; exit 3; fi; if [ "$TENANT_NAME" = lab-2 ] && [ ! -e lab-2.tried ]; then touch lab-2.tried; exit 1; fi',
    remove: 'echo "remove $TENANT_ID" >> tenants.log',
    addTimeoutMs: 5000,
    removeTimeoutMs: 5000,
    maxAttempts: 2,
  };
  c.order({ id: 'o1', kind: 'assign', assignment: { app: 'a', appDir: h.workdir, role: role({ start: SERVER, tenants }), imports: {}, importsVersion: 'v1' } });
  // Ordered before the role serves: waits for it.
  c.order({ id: 'o2', kind: 'tenantAdd', tenant: { id: 't-1', name: 'lab-1', host: '$(id).labs.test' } });
  c.order({ id: 'o3', kind: 'tenantAdd', tenant: { id: 't-2', name: 'lab-2', host: null } });
  c.order({ id: 'o4', kind: 'tenantAdd', tenant: { id: 't-3', name: 'bad-1', host: null } });
  c.order({ id: 'o2b', kind: 'tenantAdd', tenant: { id: 't-1', name: 'lab-1', host: '$(id).labs.test' } });
  await c.waitStatus('t-1 ready, t-2 ready after a retry, t-3 failed', (s) =>
    s.tenants?.['t-1']?.phase === 'ready' && s.tenants['t-2']?.phase === 'ready' && s.tenants['t-3']?.phase === 'failed', 0);
  const s = h.agent.status();
  assert.equal(s.tenants?.['t-2']?.attempts, 2);
  assert.equal(s.tenants?.['t-3']?.attempts, 2);
  assert.match(s.tenants?.['t-3']?.reason ?? '', /exited with code 3 \(attempt 2 of 2\)/);
  assert.ok(s.tenants?.['t-3']?.tail?.some((l) => l.includes('no room in the shared store')));
  const log = h.file('tenants.log').trim().split('\n');
  assert.equal(log.filter((l) => l.startsWith('add t-1 ')).length, 1, 'a repeated order adds once');
  assert.ok(log.includes('add t-1 lab-1 $(id).labs.test'), 'the host reached the command as data');
  c.order({ id: 'o5', kind: 'tenantRemove', tenant: { id: 't-1', name: 'lab-1', host: null } });
  await c.waitStatus('t-1 removed', (s2) => s2.tenants?.['t-1']?.phase === 'removed', 0);
  assert.ok(h.file('tenants.log').includes('remove t-1'));
});
