/**
 * The controller's side of the agent protocol, driven by hand: a scripted provider makes no
 * processes and hands the test each instance's key, and the test plays the agents — honest ones,
 * compromised ones (they hold the key but lie), and strangers without the key.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { pino } from 'pino';
import WebSocket from 'ws';
import { checkControllerProof, SealedChannel, type AgentMessage, type AgentStatus, type ControllerMessage } from '../src/core/index.js';
import type { CreateInstanceRequest, ExitInfo, InstanceHandle, Machine, Provider } from '../src/adapters/providers/index.js';
import { startServer, type RunningController } from '../src/controller/index.js';
import { apiClient, sleep, until } from './helpers.js';

class ScriptedProvider implements Provider {
  readonly name = 'scripted';
  readonly provisionTimeoutMs = 60_000;
  readonly made = new Map<string, CreateInstanceRequest>();
  readonly destroyed = new Set<string>();
  private readonly machines = new Map<string, Machine>();
  private port = 20000;
  async request(req: CreateInstanceRequest): Promise<Machine> {
    const known = this.machines.get(req.instanceId);
    if (known) return known;
    this.made.set(req.instanceId, req);
    const m: Machine = { id: req.instanceId, state: 'running', ip: '127.0.0.1', port: this.port++, workdir: `/nonexistent/${req.instanceId}`, providerRef: {} };
    this.machines.set(req.instanceId, m);
    return m;
  }
  async describe(hs: readonly InstanceHandle[]): Promise<Machine[]> {
    return hs.map((h) => this.machines.get(h.id) ?? { id: h.id, state: 'gone', providerRef: h.providerRef });
  }
  async list(): Promise<Machine[]> {
    return [...this.machines.values()];
  }
  async destroy(i: InstanceHandle): Promise<void> {
    this.destroyed.add(i.id);
    this.machines.delete(i.id);
  }
  onExit(_l: (id: string, info: ExitInfo) => void): void {}
  async close(): Promise<void> {}
}

/** A test agent: does the handshake with whatever key it is given, then says what the test tells it to. */
class TestAgent {
  readonly received: ControllerMessage[] = [];
  readonly ws: WebSocket;
  closeCode?: number;
  channel?: SealedChannel;
  readonly closed: Promise<number>;
  readonly ready: Promise<boolean>;

  constructor(url: string, readonly instanceId: string, key: string, epoch = 1, status: AgentStatus = { state: 'spare', restarts: 0 }) {
    this.ws = new WebSocket(`${url.replace(/^http/, 'ws')}/v1/agent`);
    const nonce = randomBytes(32).toString('base64url');
    this.closed = new Promise((resolve) => this.ws.on('close', (code) => resolve((this.closeCode = code))));
    this.ready = new Promise((resolve) => {
      this.ws.on('open', () => this.ws.send(JSON.stringify({ type: 'hello', protocol: 3, instanceId, epoch, nonce })));
      this.ws.on('close', () => resolve(false));
      this.ws.on('message', (data) => {
        const text = (data as Buffer).toString('utf8');
        if (!this.channel) {
          const m = JSON.parse(text) as { type: string; nonce: string; proof: string };
          if (m.type !== 'challenge') return;
          const params = { key, instanceId, epoch, agentNonce: nonce, controllerNonce: m.nonce };
          if (!checkControllerProof(params, m.proof)) {
            this.ws.close();
            return;
          }
          this.channel = new SealedChannel('agent', params);
          this.send({ type: 'join', pid: 4242, status, applied: [] });
          return;
        }
        const r = this.channel.open(text);
        if (!r.ok) return;
        const msg = r.message as ControllerMessage;
        this.received.push(msg);
        if (msg.type === 'welcome') resolve(true);
      });
    });
  }

  send(m: AgentMessage): void {
    if (this.channel) this.ws.send(this.channel.seal(m));
  }

  orders() {
    return this.received.flatMap((m) => (m.type === 'order' ? [m.order] : []));
  }

  close(): void {
    this.ws.terminate();
  }
}

const APP = `
app: sec
roles:
  db:
    start: sleep 1000
    exports: { url: "postgres://\${ip}:\${port}/db" }
  api:
    imports: [db.url]
    start: sleep 1000
    exports: { endpoint: "http://\${ip}:\${port}" }
`;

interface Harness {
  server: RunningController;
  provider: ScriptedProvider;
  api: <T>(method: string, path: string, body?: unknown) => Promise<T>;
  instance(role: string): Promise<CreateInstanceRequest>;
}

async function harness(t: { after: (fn: () => unknown) => void }, opts: { heartbeatMs?: number } = {}): Promise<Harness> {
  const dir = mkdtempSync(join(tmpdir(), 'drover-proto-'));
  const provider = new ScriptedProvider();
  const server = await startServer({ dataDir: join(dir, '.drover'), port: 0, logger: pino({ level: 'silent' }), provider, heartbeatMs: opts.heartbeatMs ?? 5000, token: 't'.repeat(32) });
  t.after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const api = apiClient(server);
  await api('PUT', '/v1/apps/sec', { yaml: APP, appDir: dir });
  const instance = async (role: string) => {
    const inst = await until(`an instance of ${role}`, async () => {
      const r = await api<{ instances: { id: string; role: string | null }[] }>('GET', '/v1/instances');
      return r.instances.find((i) => i.role === role);
    });
    return until('its key', async () => provider.made.get(inst.id));
  };
  return { server, provider, api, instance };
}

type Instance = { id: string; state: string; exports: Record<string, string>; message: string | null };
type Event = { kind: string; message: string; instance: string | null };

async function serve(agent: TestAgent, status: Omit<AgentStatus, 'restarts'>): Promise<void> {
  const assign = await until('an assign order', async () => agent.orders().find((o) => o.kind === 'assign'));
  agent.send({ type: 'ack', orderId: assign.id });
  agent.send({ type: 'status', status: { restarts: 0, ...status, importsVersion: assign.kind === 'assign' ? assign.assignment.importsVersion : undefined } });
}

test('agent protocol: secrets stay put, strangers get nothing, liars are fenced', { timeout: 120_000 }, async (t) => {
  const h = await harness(t);
  const db = await h.instance('db');

  await t.test('a peer without the key fails the handshake and does not displace the agent', async () => {
    const real = new TestAgent(h.server.url, db.instanceId, db.key);
    assert.equal(await real.ready, true);
    const stranger = new TestAgent(h.server.url, db.instanceId, 'x'.repeat(43));
    assert.equal(await stranger.ready, false, 'the stranger cannot verify the controller, and is not welcomed');
    await sleep(200);
    assert.equal(real.ws.readyState, WebSocket.OPEN, 'the real agent keeps its connection');
    // A stranger that skips the check and just sends a sealed join with a wrong key.
    const raw = new WebSocket(`${h.server.url.replace('http', 'ws')}/v1/agent`);
    const code = new Promise<number>((resolve) => raw.on('close', (c) => resolve(c)));
    raw.on('open', () => raw.send(JSON.stringify({ type: 'hello', protocol: 3, instanceId: db.instanceId, epoch: 1, nonce: 'A'.repeat(43) })));
    raw.on('message', () => raw.send(JSON.stringify({ s: 1, m: JSON.stringify({ type: 'join', pid: 1, status: { state: 'spare', restarts: 0 }, applied: [] }), h: 'AAAA' })));
    assert.equal(await code, 4006);
    assert.equal(real.ws.readyState, WebSocket.OPEN);
    const inst = await h.api<Instance>('GET', `/v1/instances/${db.instanceId}`);
    assert.notEqual(inst.state, 'failed');
    real.close();
  });

  await t.test('a forged export value is refused, the instance fenced and replaced, importers never see it', async () => {
    const liar = new TestAgent(h.server.url, db.instanceId, db.key);
    assert.equal(await liar.ready, true);
    await serve(liar, { state: 'serving', role: 'db', exports: { url: '$(id)' }, servingSince: Date.now() });
    assert.equal(await liar.closed, 4004, 'fenced');
    assert.ok(liar.received.some((m) => m.type === 'refused'), 'told so, sealed');
    const inst = await h.api<Instance>('GET', `/v1/instances/${db.instanceId}`);
    assert.equal(inst.state, 'failed');
    assert.deepEqual(inst.exports, {});
    const ev = await h.api<{ events: Event[] }>('GET', '/v1/events?limit=200');
    assert.ok(ev.events.some((e) => e.kind === 'security.report' && e.instance === db.instanceId && e.message.includes('$(id)')));
    // Its replacement comes, and an honest one serves with the value the controller renders.
    const next = await until('a replacement db', async () => [...h.provider.made.values()].find((r) => r.role === 'db' && r.instanceId !== db.instanceId));
    const honest = new TestAgent(h.server.url, next.instanceId, next.key);
    assert.equal(await honest.ready, true);
    const rec = await h.api<{ address: string }>('GET', `/v1/instances/${next.instanceId}`);
    const [ip, port] = rec.address.split(':');
    await serve(honest, { state: 'serving', role: 'db', exports: { url: `postgres://${ip}:${port}/db` }, servingSince: Date.now() });
    await until('the honest export stored', async () => {
      const i = await h.api<Instance>('GET', `/v1/instances/${next.instanceId}`);
      return i.exports.url === `postgres://${ip}:${port}/db`;
    });
    // The api instance's assign carries only the honest value.
    const apiInst = await h.instance('api');
    const apiAgent = new TestAgent(h.server.url, apiInst.instanceId, apiInst.key);
    assert.equal(await apiAgent.ready, true);
    const assign = await until('api assign', async () => apiAgent.orders().find((o) => o.kind === 'assign'));
    assert.ok(assign.kind === 'assign');
    assert.deepEqual(assign.assignment.imports.db?.map((m) => m.exports.url), [`postgres://${ip}:${port}/db`]);
    // Acknowledging another instance's order does nothing.
    honest.send({ type: 'ack', orderId: assign.id });
    await sleep(300);
    apiAgent.send({ type: 'status', status: { state: 'deploying', role: 'api', restarts: 0 } });
    await sleep(300);
    const again = await until('the assign re-sent (not acknowledged)', async () => apiAgent.orders().filter((o) => o.id === assign.id).length >= 2, 10_000).catch((e: Error) => { throw new Error(`${e.message}; api agent closed ${apiAgent.closeCode}, got ${JSON.stringify(apiAgent.received)}`); });
    assert.ok(again);
    honest.close();
    apiAgent.close();
  });

  await t.test('a spare that claims a role it was never given, or an undeclared export, is fenced', async () => {
    await h.api('PUT', '/v1/apps/sec', { yaml: `${APP}\nspares: 1\n`, appDir: '/tmp' });
    const spare = await until('a spare', async () => [...h.provider.made.values()].find((r) => r.role === null));
    const a = new TestAgent(h.server.url, spare.instanceId, spare.key, 1, { state: 'serving', role: 'api', restarts: 0, exports: { endpoint: 'http://evil' } });
    await a.ready;
    await a.closed;
    const inst = await h.api<Instance>('GET', `/v1/instances/${spare.instanceId}`);
    assert.equal(inst.state, 'failed');
    assert.match(inst.message ?? '', /never given/);
  });
});

test('agent protocol: malformed, oversized and out-of-order messages are dropped, never a crash', { timeout: 120_000 }, async (t) => {
  const h = await harness(t);
  const db = await h.instance('db');
  const url = `${h.server.url.replace('http', 'ws')}/v1/agent`;
  const exchange = (frames: (string | Buffer)[], afterChallenge: boolean) =>
    new Promise<void>((resolve) => {
      const ws = new WebSocket(url);
      const timer = setTimeout(() => ws.terminate(), 2000);
      ws.on('error', () => undefined);
      ws.on('close', () => {
        clearTimeout(timer);
        resolve();
      });
      ws.on('open', () => {
        if (afterChallenge) ws.send(JSON.stringify({ type: 'hello', protocol: 3, instanceId: db.instanceId, epoch: 1, nonce: 'B'.repeat(43) }));
        else for (const f of frames) ws.send(f);
      });
      ws.on('message', () => {
        if (afterChallenge) for (const f of frames) ws.send(f);
      });
    });
  const json = fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v));
  const helloish = fc.record({ type: fc.constantFrom('hello', 'join', 'status', 'ack'), protocol: fc.anything(), instanceId: fc.oneof(fc.string(), fc.constant(db.instanceId)), epoch: fc.anything(), nonce: fc.string() }).map((v) => JSON.stringify(v));
  const frameish = fc.record({ s: fc.oneof(fc.integer(), fc.anything()), m: fc.oneof(json, fc.string()), h: fc.string() }).map((v) => JSON.stringify(v));
  await fc.assert(
    fc.asyncProperty(fc.array(fc.oneof(json, helloish, frameish, fc.string()), { minLength: 1, maxLength: 4 }), fc.boolean(), async (frames, after) => {
      await exchange(frames, after);
    }),
    { numRuns: 60 },
  );
  // Oversized: over the 1 MiB message limit.
  await exchange([Buffer.alloc((1 << 20) + 10, 'a')], false);
  const health = await fetch(`${h.server.url}/v1/health`);
  assert.equal(health.status, 200);
  // The honest agent still joins, and a replayed frame from its own session is refused.
  const a = new TestAgent(h.server.url, db.instanceId, db.key);
  assert.equal(await a.ready, true);
  const frame = a.channel!.seal({ type: 'status', status: { state: 'spare', restarts: 0 } });
  a.ws.send(frame);
  a.ws.send(frame);
  assert.equal(await a.closed, 4006, 'a replayed frame closes the connection');
  const inst = await h.api<Instance>('GET', `/v1/instances/${db.instanceId}`);
  assert.notEqual(inst.state, 'failed');
});

test('agent endpoint: a browser page cannot open it (Origin refused)', async (t) => {
  const h = await harness(t);
  const ws = new WebSocket(`${h.server.url.replace('http', 'ws')}/v1/agent`, { headers: { origin: 'http://evil.example' } });
  const status = await new Promise<number>((resolve) => {
    ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
    ws.on('open', () => resolve(101));
    ws.on('error', () => undefined);
  });
  assert.equal(status, 403);
});

test('a stalled controller does not blame its agents', { timeout: 60_000 }, async (t) => {
  const h = await harness(t, { heartbeatMs: 200 });
  const db = await h.instance('db');
  const a = new TestAgent(h.server.url, db.instanceId, db.key);
  assert.equal(await a.ready, true);
  const beat = setInterval(() => a.send({ type: 'status', status: { state: 'spare', restarts: 0 } }), 200);
  t.after(() => clearInterval(beat));
  await sleep(1000);
  // Block the controller's event loop (it runs in this process) for 10 heartbeat timeouts.
  const until2 = Date.now() + 3000;
  while (Date.now() < until2) {
    /* busy */
  }
  await sleep(1500);
  const inst = await h.api<Instance>('GET', `/v1/instances/${db.instanceId}`);
  assert.notEqual(inst.state, 'unresponsive');
  const ev = await h.api<{ events: Event[] }>('GET', '/v1/events?limit=200');
  assert.ok(!ev.events.some((e) => e.kind === 'instance.unresponsive'), 'nobody declared silent');
  const metrics = await (await fetch(`${h.server.url}/metrics`, { headers: { authorization: `Bearer ${'t'.repeat(32)}` } })).text();
  assert.match(metrics, /drover_controller_stalls_total [1-9]/);
  assert.match(metrics, /drover_event_loop_lag_seconds\{stat="max"\}/);
  // A hostile app file of 1 MiB (deep nesting, aliases, many keys) while agents beat every
  // 200 ms: refused, and nobody is declared silent.
  const hostile = `app: sec\nroles:\n${Array.from({ length: 30_000 }, (_, k) => `  r${k}: { start: "x", env: { A: &a${k} [[[[[[[[1]]]]]]]] } }`).join('\n')}\n`.slice(0, 1 << 20);
  const res = await fetch(`${h.server.url}/v1/apps/sec`, {
    method: 'PUT', headers: { authorization: `Bearer ${'t'.repeat(32)}`, 'content-type': 'application/json' }, body: JSON.stringify({ yaml: hostile, appDir: '/tmp' }),
  });
  assert.ok(res.status >= 400 && res.status < 500, `refused (${res.status})`);
  const body = (await res.json()) as { error?: { code?: string } };
  assert.equal(typeof body.error?.code, 'string');
  await sleep(1500);
  assert.notEqual((await h.api<Instance>('GET', `/v1/instances/${db.instanceId}`)).state, 'unresponsive');
  // And a real silence still is one.
  clearInterval(beat);
  a.close();
  await until('silent agent found unresponsive', async () => (await h.api<Instance>('GET', `/v1/instances/${db.instanceId}`)).state === 'unresponsive', 10_000);
});
