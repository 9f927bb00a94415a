// drover-test: alone (loads the balancers)
/**
 * One conformance suite for every load-balancer driver: real member HTTP servers on 127.0.0.1,
 * a real balancer (the builtin Node proxy, or HAProxy started by the driver in a temp folder),
 * real requests. In CI (`CI=true`) a missing haproxy fails the suite; elsewhere it is skipped.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test, type TestContext } from 'node:test';
import { pino } from 'pino';
import { WebSocket, WebSocketServer } from 'ws';
import {
  createDriver,
  HaproxyVersionError,
  isSupportedVersion,
  LbError,
  LbInputError,
  parseHaproxyVersion,
  requireHaproxy,
  type LbDriverKind,
  type LbMember,
  type LbOptions,
  type LoadBalancerDriver,
} from '../src/adapters/lb/index.js';
import { sleep, until } from './helpers.js';

const HOST = '127.0.0.1';
const logger = pino({ level: process.env.LB_TEST_LOG ?? 'silent' });

interface Member {
  readonly id: string;
  readonly address: string;
  /** A sick member answers 503 on /health (and normally elsewhere). */
  sick: boolean;
  close(): Promise<void>;
}

/**
 * A member answers with its id; `/slow?ms=N` answers after N ms, `/headers` echoes the request
 * headers, `/health` answers 200 or 503, WebSockets echo `id:message`.
 */
async function startMember(t: TestContext, id: string, port = 0): Promise<Member> {
  const member: Member = { id, address: '', sick: false, close: async () => undefined };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const reply = () => {
      if (res.destroyed) return;
      if (url.pathname === '/health') {
        res.writeHead(member.sick ? 503 : 200);
        res.end();
      } else if (url.pathname === '/headers') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(req.headers));
      } else {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end(id);
      }
    };
    req.resume();
    if (url.pathname === '/slow') setTimeout(reply, Number(url.searchParams.get('ms') ?? 1000));
    else reply();
  });
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws) => ws.on('message', (data: Buffer) => ws.send(`${id}:${data.toString()}`)));
  await new Promise<void>((resolve) => server.listen(port, HOST, resolve));
  const close = async () => {
    for (const c of wss.clients) c.terminate();
    wss.close();
    server.closeAllConnections();
    if (server.listening) await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  t.after(close);
  return Object.assign(member, { address: `${HOST}:${(server.address() as net.AddressInfo).port}`, close });
}

/** An address that refuses connections: a port that was free a moment ago. */
async function refusedAddress(): Promise<string> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, HOST, resolve));
  const { port } = s.address() as net.AddressInfo;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return `${HOST}:${port}`;
}

interface Reply {
  readonly status: number;
  readonly body: string;
}

function request(port: number, path = '/', opts: { host?: string; agent?: http.Agent; headers?: Record<string, string> } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: HOST, port, path, agent: opts.agent ?? false, headers: { ...(opts.host ? { host: opts.host } : {}), ...opts.headers }, timeout: 10_000 },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end();
  });
}

async function hits(port: number, n: number, opts: { host?: string } = {}): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const r = await request(port, '/', opts);
    assert.equal(r.status, 200, `request ${i} answered ${r.status}: ${r.body}`);
    out.set(r.body, (out.get(r.body) ?? 0) + 1);
  }
  return out;
}

const ready = (m: Member, state: LbMember['state'] = 'ready'): LbMember => ({ id: m.id, address: m.address, state });

async function startLb(t: TestContext, kind: LbDriverKind, opts: Partial<LbOptions> = {}): Promise<{ lb: LoadBalancerDriver; port: number }> {
  const workdir = mkdtempSync(join(tmpdir(), 'drover-lb-'));
  const lb = createDriver(kind, { listen: { host: HOST, port: 0 }, workdir, logger, ...opts });
  t.after(async () => {
    await lb.stop();
    rmSync(workdir, { recursive: true, force: true });
  });
  const { port } = await lb.start();
  return { lb, port };
}

async function statsOf(lb: LoadBalancerDriver, id: string) {
  return (await lb.stats()).find((s) => s.id === id);
}

const haproxy = await requireHaproxy().then(
  (v) => ({ ok: true as const, version: v.text }),
  (err: Error) => ({ ok: false as const, reason: err.message }),
);
const inCi = process.env.CI === 'true';

function conformance(kind: LbDriverKind, skip: string | false): void {
  describe(`lb driver conformance: ${kind}`, { skip }, () => {
    test('round robin spreads requests over every ready member', async (t) => {
      const ms = await Promise.all(['a', 'b', 'c'].map((id) => startMember(t, id)));
      const { lb, port } = await startLb(t, kind);
      await lb.setMembers(ms.map((m) => ready(m)));
      const got = await hits(port, 30);
      assert.deepEqual([...got.keys()].sort(), ['a', 'b', 'c']);
      for (const [id, n] of got) assert.ok(n >= 8, `member ${id} got ${n} of 30`);
      const stats = await lb.stats();
      assert.deepEqual(stats.map((s) => [s.id, s.state, s.removing, s.ejected]), ms.map((m) => [m.id, 'ready', false, false]));
      assert.equal(stats.reduce((n, s) => n + s.totalRequests, 0), 30);
    });

    test('leastconn prefers the idle member', async (t) => {
      const ms = await Promise.all(['a', 'b'].map((id) => startMember(t, id)));
      const { lb, port } = await startLb(t, kind, { balance: 'leastconn' });
      await lb.setMembers(ms.map((m) => ready(m)));
      const slow = request(port, '/slow?ms=2500');
      const busy = await until('a member with one connection', async () => (await lb.stats()).find((s) => s.activeConnections === 1), 3_000, 20);
      const got = await hits(port, 6);
      assert.deepEqual([...got.keys()], [busy.id === 'a' ? 'b' : 'a']);
      assert.deepEqual(await slow, { status: 200, body: busy.id });
    });

    test('a draining member gets no new requests while its in-flight request completes', async (t) => {
      const [a, b] = await Promise.all(['a', 'b'].map((id) => startMember(t, id)));
      const { lb, port } = await startLb(t, kind);
      await lb.setMembers([ready(a!)]);
      const slow = request(port, '/slow?ms=2500');
      await until('the slow request on a', async () => (await statsOf(lb, 'a'))?.activeConnections === 1, 3_000, 20);
      await lb.setMembers([ready(a!, 'drain'), ready(b!)]);
      assert.deepEqual([...(await hits(port, 10))], [['b', 10]]);
      const during = await statsOf(lb, 'a');
      assert.equal(during?.state, 'drain');
      assert.equal(during?.activeConnections, 1);
      assert.deepEqual(await slow, { status: 200, body: 'a' });
      await until('a idle', async () => (await statsOf(lb, 'a'))?.activeConnections === 0, 3_000, 20);
    });

    test('a removed member finishes its in-flight request, then is gone', async (t) => {
      const [a, b] = await Promise.all(['a', 'b'].map((id) => startMember(t, id)));
      const { lb, port } = await startLb(t, kind);
      await lb.setMembers([ready(a!)]);
      const slow = request(port, '/slow?ms=2500');
      await until('the slow request on a', async () => (await statsOf(lb, 'a'))?.activeConnections === 1, 3_000, 20);
      await lb.setMembers([ready(b!)]);
      const leaving = await statsOf(lb, 'a');
      assert.equal(leaving?.removing, true);
      assert.equal(leaving?.activeConnections, 1);
      assert.deepEqual([...(await hits(port, 10))], [['b', 10]]);
      assert.deepEqual(await slow, { status: 200, body: 'a' });
      await until('a gone', async () => (await lb.stats()).every((s) => s.id !== 'a'), 3_000, 20);
      assert.deepEqual((await lb.stats()).map((s) => s.id), ['b']);
    });

    test('a member put back while it drains out keeps its connections', async (t) => {
      const [a, b] = await Promise.all(['a', 'b'].map((id) => startMember(t, id)));
      const { lb, port } = await startLb(t, kind);
      await lb.setMembers([ready(a!)]);
      const slow = request(port, '/slow?ms=1500');
      await until('the slow request on a', async () => (await statsOf(lb, 'a'))?.activeConnections === 1, 3_000, 20);
      await lb.setMembers([ready(b!)]);
      await lb.setMembers([ready(a!), ready(b!)]);
      const back = await statsOf(lb, 'a');
      assert.deepEqual([back?.removing, back?.state, back?.activeConnections], [false, 'ready', 1]);
      assert.deepEqual(await slow, { status: 200, body: 'a' });
      assert.deepEqual([...(await hits(port, 4))].sort(), [['a', 2], ['b', 2]]);
    });

    test('a member whose address changes is replaced without a gap', async (t) => {
      const [before, after] = await Promise.all(['a-before', 'a-after'].map((id) => startMember(t, id)));
      const { lb, port } = await startLb(t, kind);
      await lb.setMembers([{ id: 'a', address: before!.address, state: 'ready' }]);
      assert.deepEqual([...(await hits(port, 2))], [['a-before', 2]]);
      await lb.setMembers([{ id: 'a', address: after!.address, state: 'ready' }]);
      assert.deepEqual([...(await hits(port, 4))], [['a-after', 4]]);
      await until('one server left', async () => (await lb.stats()).length === 1, 3_000, 20);
      assert.deepEqual((await lb.stats()).map((s) => [s.id, s.address, s.removing]), [['a', after!.address, false]]);
    });

    test('maint cuts what a member still carries (the deadline tool)', async (t) => {
      const [a, b] = await Promise.all(['a', 'b'].map((id) => startMember(t, id)));
      const { lb, port } = await startLb(t, kind);
      await lb.setMembers([ready(a!)]);
      const started = Date.now();
      const slow = request(port, '/slow?ms=8000').then(
        (r) => r.status,
        () => 'cut',
      );
      await until('the slow request on a', async () => (await statsOf(lb, 'a'))?.activeConnections === 1, 3_000, 20);
      await lb.setMembers([ready(a!, 'maint'), ready(b!)]);
      assert.notEqual(await slow, 200);
      assert.ok(Date.now() - started < 5_000, 'the request was cut, not finished');
      assert.deepEqual([...(await hits(port, 4))], [['b', 4]]);
    });

    test('the host map routes by Host, falls back when its member is not ready', async (t) => {
      const [a, b, c] = await Promise.all(['a', 'b', 'c'].map((id) => startMember(t, id)));
      const { lb, port } = await startLb(t, kind);
      await lb.setMembers([ready(a!), ready(b!), ready(c!)]);
      await lb.setHostMap({ 'tenant-a.example': 'a', 'TENANT-C.example': 'c' });
      assert.deepEqual([...(await hits(port, 6, { host: 'tenant-a.example:8080' }))], [['a', 6]]);
      assert.deepEqual([...(await hits(port, 6, { host: 'Tenant-C.Example' }))], [['c', 6]]);
      assert.ok((await hits(port, 6, { host: 'other.example' })).size >= 2, 'unmapped hosts are balanced');
      await assert.rejects(lb.setHostMap({ 'bad host': 'a' }), (e: unknown) => e instanceof LbInputError && e.field === 'hostMap["bad host"]');
      assert.deepEqual([...(await hits(port, 3, { host: 'tenant-a.example' }))], [['a', 3]], 'a refused map leaves the old one in place');
      await lb.setMembers([ready(a!), ready(b!), ready(c!, 'drain')]);
      const fallback = await hits(port, 6, { host: 'tenant-c.example' });
      assert.ok(!fallback.has('c'), `a draining member gets no mapped requests: ${JSON.stringify([...fallback])}`);
      await lb.setMembers([ready(a!), ready(b!), ready(c!)]);
      assert.deepEqual([...(await hits(port, 3, { host: 'tenant-c.example' }))], [['c', 3]]);
      await lb.setHostMap({ 'tenant-c.example': 'b' });
      assert.deepEqual([...(await hits(port, 3, { host: 'tenant-c.example' }))], [['b', 3]]);
      assert.ok((await hits(port, 6, { host: 'tenant-a.example' })).size >= 2, 'a host taken out of the map is balanced');
    });

    test('a member whose port refuses connections is ejected; requests still succeed', async (t) => {
      const [a, b] = await Promise.all(['a', 'b'].map((id) => startMember(t, id)));
      const dead: LbMember = { id: 'dead', address: await refusedAddress(), state: 'ready' };
      const { lb, port } = await startLb(t, kind, { ejectAfterFailures: 2, ejectForMs: 20_000 });
      await lb.setMembers([ready(a!), ready(b!), dead]);
      const got = await hits(port, 30);
      assert.deepEqual([...got.keys()].sort(), ['a', 'b']);
      const ejected = await until('dead ejected', async () => ((await statsOf(lb, 'dead'))?.ejected ? statsOf(lb, 'dead') : false), 5_000, 50);
      assert.ok(ejected.failures >= 2, `failures counted: ${ejected.failures}`);
      await hits(port, 20);
      assert.equal((await statsOf(lb, 'dead'))?.failures, ejected.failures, 'an ejected member is not tried');
    });

    test('an ejected member is tried again after ejectForMs and returns once it answers', async (t) => {
      const [a] = await Promise.all(['a'].map((id) => startMember(t, id)));
      const address = await refusedAddress();
      const { lb, port } = await startLb(t, kind, { ejectAfterFailures: 1, ejectForMs: 1_000 });
      await lb.setMembers([ready(a!), { id: 'late', address, state: 'ready' }]);
      assert.deepEqual([...(await hits(port, 6))], [['a', 6]]);
      assert.equal((await statsOf(lb, 'late'))?.ejected, true);
      await startMember(t, 'late', Number(address.split(':')[1]));
      await until('late back in rotation', async () => (await hits(port, 4)).has('late'), 8_000, 250);
      assert.equal((await statsOf(lb, 'late'))?.ejected, false);
    });

    test('active health checks take a failing member out and bring it back', async (t) => {
      const [a, b] = await Promise.all(['a', 'b'].map((id) => startMember(t, id)));
      // ejectForMs also paces HAProxy's first probe of a new server and its probes while down.
      const { lb, port } = await startLb(t, kind, { healthCheck: { path: '/health', intervalMs: 200, failureThreshold: 2 }, ejectForMs: 500 });
      await lb.setMembers([ready(a!), ready(b!)]);
      b!.sick = true;
      await until('b out of rotation', async () => (await statsOf(lb, 'b'))?.ejected, 5_000, 50);
      assert.deepEqual([...(await hits(port, 6))], [['a', 6]]);
      b!.sick = false;
      await until('b back', async () => (await statsOf(lb, 'b'))?.ejected === false, 5_000, 50);
      assert.equal((await hits(port, 6)).get('b'), 3);
    });

    test('members change under steady load (2 → 4 → 1) without a failed request', async (t) => {
      const ms = await Promise.all(['a', 'b', 'c', 'd'].map((id) => startMember(t, id)));
      const { lb, port } = await startLb(t, kind);
      await lb.setMembers(ms.slice(0, 2).map((m) => ready(m)));
      const agent = new http.Agent({ keepAlive: true, maxSockets: 20 });
      t.after(() => agent.destroy());
      const failures: string[] = [];
      const seen = new Map<string, number>();
      const pending: Promise<void>[] = [];
      const fire = () =>
        pending.push(
          request(port, '/', { agent }).then(
            (r) => {
              if (r.status !== 200) failures.push(`${r.status} ${r.body}`);
              else seen.set(r.body, (seen.get(r.body) ?? 0) + 1);
            },
            (err: Error) => void failures.push(err.message),
          ),
        );
      const timer = setInterval(fire, 10);
      await sleep(1_500);
      await lb.setMembers(ms.map((m) => ready(m)));
      await sleep(2_000);
      await lb.setMembers([ready(ms[3]!)]);
      await sleep(1_500);
      clearInterval(timer);
      await Promise.all(pending);
      assert.deepEqual(failures, []);
      assert.ok(pending.length >= 300, `sent ${pending.length} requests`);
      assert.deepEqual([...seen.keys()].sort(), ['a', 'b', 'c', 'd']);
      await until('removed members gone', async () => (await lb.stats()).map((s) => s.id).join() === 'd', 3_000, 50);
    });

    test('WebSockets pass through; X-Forwarded-For/Proto/Host are set', async (t) => {
      const [a] = await Promise.all(['a'].map((id) => startMember(t, id)));
      const { lb, port } = await startLb(t, kind);
      await lb.setMembers([ready(a!)]);
      const ws = new WebSocket(`ws://${HOST}:${port}/socket`);
      t.after(() => ws.terminate());
      await new Promise<void>((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      });
      const echo = new Promise<string>((resolve) => ws.once('message', (d: Buffer) => resolve(d.toString())));
      ws.send('ping');
      assert.equal(await echo, 'a:ping');
      await until('the tunnel counted', async () => (await statsOf(lb, 'a'))?.activeConnections === 1, 3_000, 20);
      const r = await request(port, '/headers', { host: 'shop.example:8443', headers: { 'x-forwarded-for': '203.0.113.9', 'x-forwarded-host': 'forged.example' } });
      const h = JSON.parse(r.body) as Record<string, string>;
      assert.equal(h['x-forwarded-for']?.replace(/\s/g, ''), '203.0.113.9,127.0.0.1');
      assert.equal(h['x-forwarded-proto'], 'http');
      assert.equal(h['x-forwarded-host'], 'shop.example:8443');
      assert.equal(h.host, 'shop.example:8443');
      ws.close();
      await until('the tunnel closed', async () => (await statsOf(lb, 'a'))?.activeConnections === 0, 3_000, 20);
    });

    test('a listen port already taken is refused with lb_listen_failed', async (t) => {
      const taken = net.createServer();
      await new Promise<void>((resolve) => taken.listen(0, HOST, resolve));
      t.after(() => taken.close());
      const workdir = mkdtempSync(join(tmpdir(), 'drover-lb-'));
      t.after(() => rmSync(workdir, { recursive: true, force: true }));
      const lb = createDriver(kind, { listen: { host: HOST, port: (taken.address() as net.AddressInfo).port }, workdir, logger });
      t.after(() => lb.stop());
      await assert.rejects(lb.start(), (e: unknown) => e instanceof LbError && e.code === 'lb_listen_failed');
    });

    test('bad members are refused whole, naming the field', async (t) => {
      const [a] = await Promise.all(['a'].map((id) => startMember(t, id)));
      const { lb, port } = await startLb(t, kind);
      await lb.setMembers([ready(a!)]);
      const bad: [LbMember[], string][] = [
        [[ready(a!), { id: 'a', address: '127.0.0.1:1', state: 'ready' }], 'members[1].id'],
        [[{ id: 'x', address: 'localhost:80', state: 'ready' }], 'members[0].address'],
        [[{ id: 'x', address: '127.0.0.1:80', state: 'up' as LbMember['state'] }], 'members[0].state'],
      ];
      for (const [members, field] of bad) {
        await assert.rejects(lb.setMembers(members), (e: unknown) => e instanceof LbInputError && e.field === field && e.code === 'lb_bad_input');
      }
      assert.deepEqual((await lb.stats()).map((s) => s.id), ['a']);
      assert.deepEqual([...(await hits(port, 2))], [['a', 2]]);
    });
  });
}

conformance('builtin', false);
conformance('haproxy', haproxy.ok || inCi ? false : `haproxy not available (${haproxy.reason}); install it with apt-get install -y haproxy`);

describe('haproxy driver supervision', { skip: haproxy.ok || inCi ? false : 'haproxy not available' }, () => {
  test('a killed haproxy is started again with its members and host map', async (t) => {
    const [a, b] = await Promise.all(['a', 'b'].map((id) => startMember(t, id)));
    const workdir = mkdtempSync(join(tmpdir(), 'drover-lb-'));
    const lb = createDriver('haproxy', { listen: { host: HOST, port: 0 }, workdir, logger });
    t.after(async () => {
      await lb.stop();
      rmSync(workdir, { recursive: true, force: true });
    });
    const { port } = await lb.start();
    await lb.setMembers([ready(a!), ready(b!)]);
    await lb.setHostMap({ 'b.example': 'b' });
    const pid = Number(readFileSync(join(workdir, 'haproxy.pid'), 'utf8'));
    process.kill(pid, 'SIGKILL');
    await until('haproxy serving again', async () => (await request(port, '/', { host: 'b.example' })).body === 'b', 10_000, 100);
    const again = Number(readFileSync(join(workdir, 'haproxy.pid'), 'utf8'));
    assert.notEqual(again, pid);
    assert.equal((await hits(port, 4, { host: 'b.example' })).get('b'), 4);
    assert.deepEqual([...(await hits(port, 4))].sort(), [['a', 2], ['b', 2]]);
    await lb.stop();
    assert.equal(processAlive(again), false, 'stop() ends haproxy');
  });
});

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('haproxy version check', () => {
  test('haproxy is installed (required in CI)', { skip: inCi ? false : 'only required when CI=true' }, () => {
    assert.ok(haproxy.ok, `CI needs haproxy ≥ 2.6: ${haproxy.ok ? '' : haproxy.reason}`);
  });

  test('parses `haproxy -v` output, old and new', () => {
    assert.deepEqual(parseHaproxyVersion('HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/\nStatus: long-term supported branch'), {
      major: 2,
      minor: 6,
      patch: 12,
      text: '2.6.12-1+deb12u4',
    });
    assert.equal(parseHaproxyVersion('HA-Proxy version 1.8.19-1+deb10u3 2020/08/01\nCopyright 2000-2019')?.text, '1.8.19-1+deb10u3');
    assert.equal(parseHaproxyVersion('HAProxy version 3.0-dev4 2024/02/24')?.text, '3.0-dev4');
    assert.equal(parseHaproxyVersion('nginx version: nginx/1.22.1'), undefined);
    const supported = (s: string) => isSupportedVersion(parseHaproxyVersion(s)!);
    assert.deepEqual(['HAProxy version 2.4.22', 'HAProxy version 2.5.14', 'HAProxy version 2.6.0', 'HAProxy version 2.8.5', 'HAProxy version 3.0.1'].map(supported), [false, false, true, true, true]);
  });

  test('a too-old haproxy is refused with the version found and the one needed', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'drover-lb-old-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const bin = join(dir, 'haproxy');
    writeFileSync(bin, '#!/bin/sh\necho "HA-Proxy version 2.4.22-0+deb11u1 2023/02/14 - https://haproxy.org/"\n');
    chmodSync(bin, 0o755);
    await assert.rejects(requireHaproxy(bin), (e: unknown) => {
      assert.ok(e instanceof HaproxyVersionError);
      assert.equal(e.code, 'lb_haproxy_too_old');
      assert.match(e.message, /HAProxy 2\.4\.22-0\+deb11u1 found .* needs 2\.6 or later/);
      return true;
    });
    const lb = createDriver('haproxy', { listen: { host: HOST, port: 0 }, workdir: join(dir, 'lb'), haproxyBin: bin, logger });
    await assert.rejects(lb.start(), HaproxyVersionError);
  });

  test('a missing haproxy is named', async () => {
    await assert.rejects(requireHaproxy('/nonexistent/haproxy'), (e: unknown) => e instanceof LbError && e.code === 'lb_haproxy_missing' && /looked for \/nonexistent\/haproxy\); install it .*apt-get install -y haproxy/.test(e.message));
  });
});

after(() => {
  if (!haproxy.ok && !inCi) console.log(`# haproxy driver suite skipped: ${haproxy.reason}`);
});
