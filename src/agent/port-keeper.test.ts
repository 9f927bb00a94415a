import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, connect, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { PortKeeper } from './port-keeper.js';
import { PortLink, PortLinkError } from './port-link.js';

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const p = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return p;
}

/** A member: answers every connection with its name. */
async function member(name: string): Promise<{ server: Server; port: number }> {
  const server = createServer((c) => c.end(name));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as { port: number }).port };
}

function ask(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = connect(port, '127.0.0.1');
    let out = '';
    c.setEncoding('utf8');
    c.on('data', (d: string) => (out += d));
    c.on('end', () => resolve(out));
    c.on('error', reject);
  });
}

test('a keeper hands connections to serving members only, holds them while none serves, and frees the port when idle', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-keeper-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const port = await freePort();
  const keeper = new PortKeeper({ ip: '127.0.0.1', port, socketPath: join(dir, `${port}.sock`), idleExitMs: 300, holdMs: 3000 });
  await keeper.start();
  t.after(() => keeper.close());
  const a = await member('a');
  const b = await member('b');
  t.after(() => {
    a.server.close();
    b.server.close();
  });
  const link = (instance: string, m: { port: number }, role = 'front') =>
    new PortLink({ dir, ip: '127.0.0.1', port, app: 'shop', role, instance, backend: `127.0.0.1:${m.port}`, log: () => undefined });
  const la = link('i-a', a);
  await la.open();
  // Joined but not serving: the connection is held, then handed over once a member serves.
  const pending = ask(port);
  await sleep(100);
  la.setServing(true);
  assert.equal(await pending, 'a');
  const lb = link('i-b', b);
  await lb.open();
  lb.setServing(true);
  const seen = new Set(await Promise.all(Array.from({ length: 6 }, () => ask(port))));
  assert.deepEqual([...seen].sort(), ['a', 'b']);
  // a drains: only b gets new connections.
  la.setServing(false);
  await sleep(50);
  for (let i = 0; i < 4; i++) assert.equal(await ask(port), 'b');
  // Another role may not join this port.
  await assert.rejects(link('i-x', a, 'api').open(), (e: unknown) => e instanceof PortLinkError && /held for role front of app shop/.test(e.message));
  // b's agent dies: its control connection closes, it leaves rotation; a serves again.
  lb.close();
  la.setServing(true);
  await sleep(50);
  assert.equal(await ask(port), 'a');
  assert.equal(keeper.members().length, 1);
  la.close();
  await keeper.closed();
  // Released: the port can be bound again.
  const again = createServer();
  await new Promise<void>((r, j) => again.once('error', j).listen(port, '127.0.0.1', r));
  again.close();
  assert.ok(keeper.stats.held >= 1);
});

test('a link spawns the keeper process when none runs, and a port held by another program is named', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-keeper-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const a = await member('a');
  t.after(() => a.server.close());
  const port = await freePort();
  const l = new PortLink({ dir, ip: '127.0.0.1', port, app: 'shop', role: 'front', instance: 'i-a', backend: `127.0.0.1:${a.port}`, log: () => undefined, idleExitMs: 200 });
  await l.open();
  l.setServing(true);
  assert.equal(await ask(port), 'a');
  l.close();
  // The keeper exits once idle; the port is free again.
  let free = false;
  for (let i = 0; i < 60 && !free; i++) {
    await sleep(100);
    free = await new Promise<boolean>((r) => {
      const s = createServer().once('error', () => r(false)).listen(port, '127.0.0.1', () => s.close(() => r(true)));
    });
  }
  assert.ok(free, 'the keeper released the port');

  const other = createServer();
  await new Promise<void>((r) => other.listen(port, '127.0.0.1', r));
  t.after(() => other.close());
  const busy = new PortLink({ dir, ip: '127.0.0.1', port, app: 'shop', role: 'front', instance: 'i-b', backend: `127.0.0.1:${a.port}`, log: () => undefined });
  await assert.rejects(busy.open(), (e: unknown) => e instanceof PortLinkError && /in use by another program/.test(e.message));
});

test('a keeper killed with SIGKILL is started again by the links of its members, which rejoin in rotation', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-keeper-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const a = await member('a');
  t.after(() => a.server.close());
  const port = await freePort();
  const l = new PortLink({ dir, ip: '127.0.0.1', port, app: 'shop', role: 'front', instance: 'i-a', backend: `127.0.0.1:${a.port}`, log: () => undefined, idleExitMs: 200 });
  t.after(() => l.close());
  await l.open();
  l.setServing(true);
  assert.equal(await ask(port), 'a');
  const keeperPid = () => {
    for (const e of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
      try {
        if (readFileSync(`/proc/${e}/cmdline`, 'latin1').split('\0').includes(join(dir, `${port}.sock`))) return Number(e);
      } catch {
        // gone
      }
    }
    return undefined;
  };
  const pid = keeperPid();
  assert.ok(pid, 'the keeper runs as its own process');
  process.kill(pid, 'SIGKILL');
  let answer: string | undefined;
  for (let i = 0; i < 50 && answer === undefined; i++) {
    await sleep(100);
    answer = await ask(port).catch(() => undefined);
  }
  assert.equal(answer, 'a', 'a new keeper holds the port and the member is back in rotation');
  assert.notEqual(keeperPid(), pid);
});
