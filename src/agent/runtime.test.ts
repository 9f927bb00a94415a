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
import type { AgentMessage, AgentStatus, ControllerMessage, Order } from '../core/protocol.js';
import type { ResolvedImports, RoleSpec } from '../core/types.js';
import { killGroup, readStat, waitGroupGone } from './procfs.js';
import { Agent, type AgentExit, type AgentOptions } from './runtime.js';

type TestContext = { after: (fn: () => unknown) => void };

class FakeController {
  readonly messages: AgentMessage[] = [];
  #wss?: WebSocketServer;
  #socket?: WebSocket;
  port = 0;
  connections = 0;
  /** What to answer a hello with. */
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
      ws.on('message', (data) => {
        const msg = JSON.parse((data as Buffer).toString('utf8')) as AgentMessage;
        this.messages.push(msg);
        if (msg.type === 'hello') this.send(this.onHello());
      });
    });
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  send(msg: ControllerMessage): void {
    this.#socket?.send(JSON.stringify(msg));
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
  return m.type === 'status' || m.type === 'hello' ? m.status : undefined;
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
  return { name: 'api', min: 1, max: 1, count: 1, env: {}, exports: {}, imports: [], stopTimeoutMs: 2000, ...r };
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
    joinToken: 'secret-token',
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

  await t.test('hello carries the instance, token, epoch and a spare status', async () => {
    const hello = await c.waitFor('hello', (m) => m.type === 'hello');
    assert.equal(hello.protocol, 1);
    assert.equal(hello.instanceId, 'i-1');
    assert.equal(hello.joinToken, 'secret-token');
    assert.equal(hello.epoch, 7);
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
    const hello = await c.waitFor('hello again', (m) => m.type === 'hello', since);
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
    assert.match(h.file('role.log'), /^\[deploy\] deploying to \//m);
  });
});

void test('refused: the agent kills its role without scripts and exits', async (t) => {
  const h = await harness(t);
  const { controller: c } = h;
  await c.waitFor('hello', (m) => m.type === 'hello');
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
    await c.waitFor('hello', (m) => m.type === 'hello');
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
    await c.waitFor('hello', (m) => m.type === 'hello');
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
  await c.waitFor('hello', (m) => m.type === 'hello');
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
      joinToken: 't',
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
