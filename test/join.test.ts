/**
 * Joining a host to an app's pool (docs/fleet.md): join tokens refused for every reason with the
 * same answer (the reason only in the controller's events), a fake controller without the token
 * gets nothing from a joining node, and a joined node serves a role and goes back to the pool.
 * The controller runs in this process; the node agent too, its instance agents as children.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { WebSocket, WebSocketServer } from 'ws';
import { startServer } from '../src/controller/index.js';
import { NodeAgent } from '../src/agent/index.js';
import { boxKey, boxOpen, newJoinToken } from '../src/core/index.js';
import { apiClient, killAll, processesWithEnv, ROOT, until } from './helpers.js';

const FIXTURES = join(ROOT, 'test/fixtures');
const silent = pino({ level: 'silent' });

interface TokenOut { id: string; token: string; state: string; uses: number }
type Listed = Omit<TokenOut, 'token'>;
interface NodeOut { id: string; state: string; labels: Record<string, string>; addresses: string[]; instance: { id: string; role: string | null } | null }
interface Ev { kind: string; message: string }

async function harness(t: import('node:test').TestContext) {
  const dir = mkdtempSync(join(tmpdir(), 'drover-join-'));
  const server = await startServer({ dataDir: join(dir, '.drover'), port: 0, logger: silent, heartbeatMs: 500 });
  const nodes: NodeAgent[] = [];
  t.after(async () => {
    for (const n of nodes) await n.close();
    await server.close();
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
  });
  const api = apiClient(server);
  const node = (token: string, labels: Record<string, string> = {}) => {
    const n = new NodeAgent({ url: server.url, token, labels, dataDir: join(dir, `node-${nodes.length}`), addresses: ['127.0.0.1'], hostname: `host${nodes.length}`, logger: silent, agentEnv: { DROVER_AGENT_RESTART_BACKOFF_MS: '200' } });
    nodes.push(n);
    return n;
  };
  return { dir, server, api, node };
}

test('a join with an unknown, wrong, expired, used-up or revoked token is refused alike; the reason is only in the events', { timeout: 60_000 }, async (t) => {
  const h = await harness(t);
  const mk = (body: object) => h.api<TokenOut>('POST', '/v1/tokens', { app: 'shop', ...body });
  const good = await mk({ uses: 1 });
  const expired = await mk({ ttlSeconds: 1 });
  const revoked = await mk({});
  const other = await mk({});
  await h.api('DELETE', `/v1/tokens/${revoked.id}`);
  const first = h.node(good.token);
  void first.run();
  await until('the first node joined', async () => ((await h.api<{ nodes: NodeOut[] }>('GET', '/v1/nodes')).nodes.length === 1 ? true : undefined), 10_000);
  await new Promise((r) => setTimeout(r, 1100)); // `expired` expires
  const wrong = other.token.slice(0, -4) + (other.token.endsWith('AAAA') ? 'BBBB' : 'AAAA');
  const unknown = newJoinToken().token;
  const answers: string[] = [];
  for (const tok of [good.token /* used up */, expired.token, revoked.token, wrong, unknown]) {
    const exit = await h.node(tok).run();
    answers.push(`${exit.reason}: ${exit.message}`);
  }
  assert.equal(new Set(answers).size, 1, `every refusal looks the same to the node: ${answers.join(' | ')}`);
  assert.match(answers[0]!, /^refused/);
  const ev = (await h.api<{ events: Ev[] }>('GET', '/v1/events?limit=1000&after=0')).events.filter((e) => e.kind === 'security.join').map((e) => e.message);
  const count = (re: RegExp) => ev.filter((m) => re.test(m)).length;
  assert.equal(ev.length, 5, ev.join('\n')); // the wrong token's three tries: one event a minute
  assert.equal(count(/used up \(1 of 1\)/), 1);
  assert.equal(count(/expired/), 1);
  assert.equal(count(/revoked/), 1);
  assert.equal(count(/wrong token .*proof/), 1);
  assert.equal(count(/unknown token/), 1);
  const tokens = (await h.api<{ tokens: Listed[] }>('GET', '/v1/tokens')).tokens;
  assert.deepEqual(tokens.map((x) => x.state), ['used-up', 'expired', 'revoked', 'valid']);
  assert.ok(tokens.every((x) => !('token' in x) && !JSON.stringify(x).includes(good.token.split('.')[2]!)), 'the secret is never listed');
  assert.equal(tokens.find((x) => x.id === other.id)?.uses, 0, 'a wrong proof takes no use');

  // A flood of bad joins is refused every time, and recorded once a minute.
  const before = ev.length;
  for (let k = 0; k < 10; k++) assert.equal((await h.node(newJoinToken().token).run()).reason, 'refused');
  const after = (await h.api<{ events: Ev[] }>('GET', '/v1/events?limit=1000&after=0')).events.filter((e) => e.kind === 'security.join');
  assert.equal(after.length, before, 'no new event within the minute');
});

test('a fake controller without the token learns nothing from a joining node', { timeout: 30_000 }, async (t) => {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  t.after(() => wss.close());
  await new Promise((r) => wss.once('listening', r));
  const seen: string[] = [];
  wss.on('connection', (ws: WebSocket) => {
    ws.on('message', (raw: Buffer) => {
      const text = raw.toString();
      seen.push(text);
      const m = JSON.parse(text) as { type: string };
      // It can only guess a proof; and it tries a welcome box made up without the token.
      if (m.type === 'nodeJoin') ws.send(JSON.stringify({ type: 'joinChallenge', nonce: 'x'.repeat(43), proof: 'A'.repeat(43) }));
    });
  });
  const port = (wss.address() as { port: number }).port;
  const { token } = newJoinToken();
  const dir = mkdtempSync(join(tmpdir(), 'drover-fake-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const node = new NodeAgent({ url: `http://127.0.0.1:${port}`, token, labels: {}, dataDir: dir, addresses: ['127.0.0.1'], logger: silent });
  void node.run();
  await until('a few attempts', async () => (seen.length >= 3 ? true : undefined), 15_000, 50);
  await node.close();
  const secret = token.split('.')[2]!;
  for (const s of seen) {
    const m = JSON.parse(s) as { type: string };
    assert.equal(m.type, 'nodeJoin', 'the node never proves itself to a peer that did not prove it holds the token');
    assert.ok(!s.includes(secret), 'no secret on the wire');
  }
  // And a recorded welcome box opens with nothing but the token's hash and both nonces.
  assert.equal(boxOpen(boxKey('not the hash', 'a'.repeat(43), 'c'.repeat(43), 'join'), 'AAAA'.repeat(20), 'join|x'), undefined);
});

test('a joined node serves a role, and goes back to the pool (role stopped, folder removed) when scaled in', { timeout: 90_000 }, async (t) => {
  const h = await harness(t);
  const tok = await h.api<TokenOut>('POST', '/v1/tokens', { app: 'fleet', uses: 1, labels: { zone: 'a' } });
  const n = h.node(tok.token, { role: 'web' });
  void n.run();
  await until('the node idle', async () => ((await h.api<{ nodes: NodeOut[] }>('GET', '/v1/nodes')).nodes[0]?.state === 'idle' ? true : undefined), 10_000);
  const yaml = `app: fleet
roles:
  web:
    count: 1
    start: exec node \${appDir}/fleet-web.mjs
    exports: { url: "http://\${ip}:\${port}" }
    health: { http: /, interval: 200ms }
`;
  await h.api('PUT', '/v1/apps/fleet', { yaml, appDir: FIXTURES });
  const node = await until('the node runs web', async () => {
    const x = (await h.api<{ nodes: NodeOut[] }>('GET', '/v1/nodes')).nodes[0];
    return x?.instance?.role === 'web' ? x : undefined;
  }, 30_000);
  assert.deepEqual(node.labels, { zone: 'a', role: 'web' }, "the token's labels and the node's own");
  // Someone who knows the node id but not its key changes nothing by saying hello as it.
  const impostor = new WebSocket(h.server.url.replace(/^http/, 'ws') + '/v1/node');
  await new Promise((r) => impostor.once('open', r));
  impostor.send(JSON.stringify({ type: 'nodeHello', protocol: 1, nodeId: node.id, nonce: 'n'.repeat(43), addresses: ['10.66.66.66'] }));
  await new Promise((r) => impostor.once('message', r)); // the challenge, which it cannot answer
  impostor.send('{"s":1,"m":"{}","h":"AAAA"}');
  await new Promise((r) => impostor.once('close', r));
  assert.deepEqual((await h.api<{ nodes: NodeOut[] }>('GET', '/v1/nodes')).nodes[0]!.addresses, ['127.0.0.1'], 'an unproven hello changes no address');
  const inst = await until('web serving on the node', async () => {
    const { instances } = await h.api<{ instances: { id: string; state: string; exports: Record<string, string>; agent: { host: string } }[] }>('GET', '/v1/instances?role=web');
    return instances.find((i) => i.id === node.instance!.id && i.state === 'serving');
  }, 30_000);
  assert.equal(inst.agent.host, 'host0', 'status names the host');
  assert.equal((await (await fetch(inst.exports.url!)).text()).trim(), inst.id);
  const workdir = join(h.dir, 'node-0', 'instances', inst.id);
  assert.ok(existsSync(workdir));
  await h.api('PUT', '/v1/apps/fleet/roles/web/count', { count: 0 });
  await until('the node idle again', async () => ((await h.api<{ nodes: NodeOut[] }>('GET', '/v1/nodes')).nodes[0]?.state === 'idle' ? true : undefined), 30_000);
  await until('its folder removed', async () => (!existsSync(workdir) ? true : undefined), 10_000);
  assert.equal(n.nodeId, node.id, 'the same node, not a new one');
});
