/**
 * Tenants end to end, on real processes: sign-ups with and without room, one new instance per
 * `capacity` waiting sign-ups, never more tenants on an instance than its capacity (checked on
 * the instances themselves), routing by host through a builtin balancer, removal, and the
 * tenants of a lost instance placed again.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { verifyWebhook } from '../src/adapters/notify/index.js';
import { startServer, type RunningController } from '../src/controller/index.js';
import { apiClient, drover, killAll, processesWithEnv, until } from './helpers.js';

type Tenant = { id: string; name: string; state: string; instance: string | null; host: string | null; address?: string | null; reason: string | null };
type Instances = { instances: { id: string; role: string | null; state: string; exports: Record<string, string> }[] };

const SERVER = `
const http = require('http'); const fs = require('fs');
http.createServer((q, s) => {
  let mine = []; try { mine = fs.readFileSync('tenants.txt', 'utf8').split('\\n').filter(Boolean); } catch {}
  s.end(JSON.stringify({ instance: process.env.DROVER_INSTANCE, host: q.headers.host, tenants: mine }));
}).listen(+process.env.PORT, '127.0.0.1');
`;

function get(url: string, host: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = request({ hostname: u.hostname, port: u.port, path: '/', headers: { host } }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('tenants: placed at once or asynchronously, never over capacity, routed by host, removed, re-placed when an instance is lost', { timeout: 240_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-tenants-'));
  const holder: { server?: RunningController } = {};
  t.after(async () => {
    await holder.server?.close();
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
  });
  writeFileSync(join(dir, 'server.js'), SERVER);
  const server = await startServer({ dataDir: join(dir, '.drover'), port: 0, logger: pino({ level: 'silent' }), heartbeatMs: 500 });
  holder.server = server;
  const api = apiClient(server);
  const yaml = `
app: labs
roles:
  labs:
    min: 1
    max: 6
    start: exec node \${appDir}/server.js
    exports: { endpoint: "http://\${ip}:\${port}" }
    health: { http: /, interval: 200ms }
    tenants:
      capacity: 2
      host: "\${tenant}.labs.example.test"
      add: echo "$TENANT_NAME" >> tenants.txt
      remove: grep -vx "$TENANT_NAME" tenants.txt > t.tmp; mv t.tmp tenants.txt
  lb:
    imports: [labs.*]
    loadBalancer: { driver: builtin, members: labs.endpoint }
    exports: { url: "http://\${ip}:\${port}" }
    health: { tcp: true, interval: 200ms }
`;
  await api('PUT', '/v1/apps/labs', { yaml, appDir: dir });
  await until('converged', async () => (await api<{ converged: boolean }>('GET', '/v1/apps/labs')).converged, 60_000);

  const post = async (name: string, key?: string) => {
    const r = await fetch(`${server.url}/v1/apps/labs/roles/labs/tenants`, {
      method: 'POST',
      headers: { authorization: `Bearer ${server.token}`, 'content-type': 'application/json', ...(key ? { 'idempotency-key': key } : {}) },
      body: JSON.stringify({ name }),
    });
    return { status: r.status, location: r.headers.get('location'), body: (await r.json()) as Tenant };
  };

  await t.test('a seat is free: 201 once add has run and the host is routed', async () => {
    const r = await post('lab-1', 'k-1');
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal(r.body.state, 'ready');
    assert.equal(r.body.host, 'lab-1.labs.example.test');
    assert.ok(r.body.address);
    const again = await post('lab-1', 'k-1');
    assert.equal(again.body.id, r.body.id, 'the same Idempotency-Key returns the same tenant');
    const dup = await post('lab-1');
    assert.equal(dup.status, 409, 'a second tenant with the name is refused');
    const last = await post('lab-2');
    assert.equal(last.status, 201, 'the last free seat is still a seat: 201, not 202');
  });

  await t.test('a burst with no room: 202 each, exactly the instances they need, none over capacity', async () => {
    const burst = await Promise.all(Array.from({ length: 6 }, (_, k) => post(`lab-${k + 3}`)));
    assert.ok(burst.every((r) => r.status === 202 || r.status === 201), JSON.stringify(burst.map((r) => r.status)));
    assert.ok(burst.filter((r) => r.status === 202).every((r) => r.location === `/v1/tenants/${r.body.id}`));
    await until('every tenant ready', async () => {
      const all = await api<{ tenants: Tenant[] }>('GET', '/v1/tenants?app=labs');
      return all.tenants.length === 8 && all.tenants.every((x) => x.state === 'ready');
    }, 120_000, 500);
    const inst = (await api<Instances>('GET', '/v1/instances?app=labs')).instances.filter((i) => i.role === 'labs');
    assert.equal(inst.length, 4, '8 tenants at capacity 2: exactly 4 instances, never one per sign-up');
    // On the instances themselves: what each one's add wrote.
    for (const i of inst) {
      const names = readFileSync(join(dir, '.drover', 'instances', i.id, 'tenants.txt'), 'utf8').split('\n').filter(Boolean);
      assert.ok(names.length <= 2, `${i.id} holds ${names.length} tenants`);
    }
  });

  await t.test('a request on a tenant host through the balancer reaches its instance', async () => {
    const lb = (await api<Instances>('GET', '/v1/instances?app=labs')).instances.find((i) => i.role === 'lb')!;
    const tenants = (await api<{ tenants: Tenant[] }>('GET', '/v1/tenants?app=labs')).tenants;
    for (const x of tenants) {
      const r = await get(lb.exports.url!, x.host!);
      assert.equal(r.status, 200);
      const body = JSON.parse(r.body) as { instance: string; tenants: string[] };
      assert.equal(body.instance, x.instance, `${x.host} routed to its instance`);
      assert.ok(body.tenants.includes(x.name));
    }
  });

  await t.test('removal unroutes, runs remove, frees the seat', async () => {
    const one = (await api<{ tenants: Tenant[] }>('GET', '/v1/tenants?app=labs')).tenants.find((x) => x.name === 'lab-3')!;
    await api('DELETE', `/v1/tenants/${one.id}`);
    await until('removed', async () => (await api<Tenant>('GET', `/v1/tenants/${one.id}`)).state === 'removed', 30_000);
    const names = readFileSync(join(dir, '.drover', 'instances', one.instance!, 'tenants.txt'), 'utf8').split('\n').filter(Boolean);
    assert.ok(!names.includes('lab-3'));
  });

  await t.test('the CLI: tenants add --wait, ls, show, rm', async () => {
    const env = { DROVER_URL: server.url, DROVER_TOKEN: server.token };
    const add = await drover(['tenants', 'add', 'lab-cli', '--wait', '--json'], { cwd: dir, env });
    assert.equal(add.code, 0, add.stderr);
    assert.equal((JSON.parse(add.stdout) as Tenant).state, 'ready');
    const ls = await drover(['tenants', 'ls', '--state', 'ready'], { cwd: dir, env });
    assert.match(ls.stdout, /lab-cli\s+labs\s+ready/);
    const show = await drover(['tenants', 'show', 'lab-cli'], { cwd: dir, env });
    assert.match(show.stdout, /host: lab-cli\.labs\.example\.test/);
    const rm = await drover(['tenants', 'rm', 'lab-cli'], { cwd: dir, env });
    assert.equal(rm.code, 0, rm.stderr);
    const bad = await drover(['tenants', 'add', 'Bad_Name'], { cwd: dir, env });
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /name/);
  });

  await t.test("a lost instance's tenants are placed again elsewhere", async () => {
    const tenants = (await api<{ tenants: Tenant[] }>('GET', '/v1/tenants?app=labs&state=ready')).tenants;
    const victim = tenants[0]!.instance!;
    const moved = tenants.filter((x) => x.instance === victim).map((x) => x.id);
    killAll(processesWithEnv(`DROVER_INSTANCE_ID=${victim}`));
    await until('re-placed and ready', async () => {
      const now = await Promise.all(moved.map((id) => api<Tenant>('GET', `/v1/tenants/${id}`)));
      return now.every((x) => x.state === 'ready' && x.instance !== victim);
    }, 90_000, 500);
    const events = await api<{ events: { kind: string }[] }>('GET', '/v1/events?app=labs&limit=500');
    assert.ok(events.events.some((e) => e.kind === 'tenant.lost'));
  });

  await t.test('consolidation: plan shows what moving tenants saves; rebalance moves them one at a time, routes follow, pinned tenants stay', async () => {
    // Make slack: two instances with one tenant each.
    const ready = (await api<{ tenants: Tenant[] }>('GET', '/v1/tenants?app=labs&state=ready')).tenants;
    const byInst = new Map<string, Tenant[]>();
    for (const x of ready) byInst.set(x.instance!, [...(byInst.get(x.instance!) ?? []), x]);
    const full = [...byInst.values()].filter((l) => l.length === 2).slice(0, 2);
    assert.equal(full.length, 2, JSON.stringify([...byInst.entries()].map(([k, v]) => [k, v.length])));
    for (const l of full) await api('DELETE', `/v1/tenants/${l[0]!.id}`);
    await until('removed', async () => (await Promise.all(full.map((l) => api<Tenant>('GET', `/v1/tenants/${l[0]!.id}`)))).every((x) => x.state === 'removed'), 30_000);
    const plan = await api<{ moves: { tenantId: string; from: string; to: string }[]; saves: number; summary: string }>('GET', '/v1/apps/labs/roles/labs/tenants/plan');
    assert.ok(plan.saves >= 1, plan.summary);
    const mover = plan.moves[0]!;
    assert.ok(mover, JSON.stringify(plan));
    // A pinned tenant is never moved.
    await api('PUT', `/v1/tenants/${mover.tenantId}/pinned`, { pinned: true });
    const pinnedPlan = await api<{ moves: { tenantId: string }[] }>('GET', '/v1/apps/labs/roles/labs/tenants/plan');
    assert.ok(!pinnedPlan.moves.some((m) => m.tenantId === mover.tenantId));
    await api('PUT', `/v1/tenants/${mover.tenantId}/pinned`, { pinned: false });
    await api('POST', '/v1/apps/labs/roles/labs/tenants/rebalance', {});
    await until('moved and ready on its new instance', async () => {
      const x = await api<Tenant>('GET', `/v1/tenants/${mover.tenantId}`);
      return x.state === 'ready' && x.instance === mover.to;
    }, 60_000, 300);
    const moved = await api<Tenant>('GET', `/v1/tenants/${mover.tenantId}`);
    const names = readFileSync(join(dir, '.drover', 'instances', mover.from, 'tenants.txt'), 'utf8').split('\n').filter(Boolean);
    assert.ok(!names.includes(moved.name), 'removed from its old instance');
    const lb = (await api<Instances>('GET', '/v1/instances?app=labs')).instances.find((i) => i.role === 'lb')!;
    await until('the route follows', async () => {
      const r = await get(lb.exports.url!, moved.host!);
      return r.status === 200 && (JSON.parse(r.body) as { instance: string }).instance === mover.to;
    }, 15_000);
  });

  await t.test('a webhook (Standard Webhooks, signed with the app secret) says the tenant is ready; the attempt is recorded', async () => {
    const got: { type: string; data: { name: string; state: string }; ok: boolean }[] = [];
    const receiver = createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        const v = verifyWebhook(server.webhookSecrets('labs'), req.headers, body);
        const parsed = JSON.parse(body) as { type: string; data: { tenant?: { name: string; state: string }; name?: string; state?: string } };
        const tenant = parsed.data.tenant ?? { name: parsed.data.name ?? '', state: parsed.data.state ?? '' };
        got.push({ type: parsed.type, data: tenant, ok: v.ok });
        res.end('ok');
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    t.after(() => receiver.close());
    const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`;
    const r = await fetch(`${server.url}/v1/apps/labs/roles/labs/tenants`, {
      method: 'POST', headers: { authorization: `Bearer ${server.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'lab-hook', callbackUrl: url }),
    });
    const created = (await r.json()) as Tenant;
    await until('the webhook arrives', async () => got.some((g) => g.type === 'tenant.ready'), 60_000);
    const hook = got.find((g) => g.type === 'tenant.ready')!;
    assert.ok(hook.ok, 'its signature verifies with the app secret');
    assert.equal(hook.data.name, 'lab-hook');
    const shown = await api<{ notifications: { status: string; kind: string }[] }>('GET', `/v1/tenants/${created.id}`);
    await until('the attempt is recorded', async () => (await api<{ notifications: { status: string }[] }>('GET', `/v1/tenants/${created.id}`)).notifications.some((n) => n.status === 'delivered'), 10_000);
    assert.ok(Array.isArray(shown.notifications));
  });
});
