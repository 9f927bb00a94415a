/**
 * The labs example end to end, on real processes: the app as written in examples/labs, 45 labs
 * signed up at once on capacity 20 → exactly 3 lab instances, never more than 20 labs on one,
 * and every lab's page, asked through the real HAProxy on the lab's own host, shows that lab's
 * own data from the store. Needs HAProxy: skipped where it is not installed, except with
 * CI=true, where its absence fails the test.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { startServer, type RunningController } from '../../src/controller/index.js';
import { apiClient, killAll, processesWithEnv, until } from '../../test/helpers.js';

const APP_DIR = fileURLToPath(new URL('.', import.meta.url));
const LABS = 45;

type Tenant = { id: string; name: string; state: string; instance: string | null; host: string | null; reason: string | null };
type Instance = { id: string; role: string | null; state: string; exports: Record<string, string> };
type LabPage = { lab: string; instance: string; data: { name: string; visits: number; notes: string[] } };

function haproxyInstalled(): boolean {
  for (const bin of ['haproxy', '/usr/sbin/haproxy', '/usr/local/sbin/haproxy']) {
    try {
      execFileSync(bin, ['-v'], { stdio: 'ignore' });
      return true;
    } catch {
      // next
    }
  }
  return false;
}
const haproxy = haproxyInstalled();

function get(url: string, host: string, path = '/'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = request({ hostname: u.hostname, port: u.port, path, headers: { host } }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

void test(
  `labs: ${LABS} labs signed up at once → 3 instances of 20 seats, each lab's own page through HAProxy`,
  { timeout: 120_000, skip: !haproxy && process.env.CI !== 'true' ? 'haproxy is not installed (required with CI=true)' : false },
  async (t) => {
    assert.ok(haproxy, 'HAProxy must be installed for the labs example (CI=true)');
    const dir = mkdtempSync(join(tmpdir(), 'drover-labs-'));
    const holder: { server?: RunningController } = {};
    t.after(async () => {
      await holder.server?.close();
      killAll(processesWithEnv(dir));
      rmSync(dir, { recursive: true, force: true });
    });
    const server = await startServer({ dataDir: join(dir, '.drover'), port: 0, logger: pino({ level: 'silent' }), heartbeatMs: 500 });
    holder.server = server;
    const api = apiClient(server);
    await api('PUT', '/v1/apps/labs', { yaml: readFileSync(join(APP_DIR, 'drover.yaml'), 'utf8'), appDir: APP_DIR });
    await until('the app converged', async () => (await api<{ converged: boolean }>('GET', '/v1/apps/labs')).converged, 60_000);
    const instances = async () => (await api<{ instances: Instance[] }>('GET', '/v1/instances?app=labs')).instances;

    // 45 sign-ups at once: some fit on the first instance (201), the rest wait for capacity (202).
    const answers = await Promise.all(
      Array.from({ length: LABS }, async (_, k) => {
        const r = await fetch(`${server.url}/v1/apps/labs/roles/labs/tenants`, {
          method: 'POST',
          headers: { authorization: `Bearer ${server.token}`, 'content-type': 'application/json' },
          body: JSON.stringify({ name: `lab${k + 1}` }),
        });
        return { status: r.status, body: (await r.json()) as Tenant };
      }),
    );
    assert.ok(answers.every((a) => a.status === 201 || a.status === 202), JSON.stringify(answers.map((a) => [a.status, a.body])));
    let last: Tenant[] = [];
    await until(
      'every lab ready',
      async () => {
        last = (await api<{ tenants: Tenant[] }>('GET', '/v1/tenants?app=labs')).tenants;
        assert.ok(!last.some((x) => x.state === 'failed'), JSON.stringify(last.filter((x) => x.state === 'failed')));
        return last.length === LABS && last.every((x) => x.state === 'ready');
      },
      90_000,
      500,
    ).catch((err: Error) => {
      throw new Error(`${err.message}; states: ${JSON.stringify(last.map((x) => [x.name, x.state, x.reason]))}`);
    });

    const labs = (await instances()).filter((i) => i.role === 'labs');
    assert.equal(labs.length, 3, `${LABS} labs at capacity 20: exactly 3 instances (${JSON.stringify(labs.map((i) => [i.id, i.state]))})`);
    const perInstance = new Map<string, number>();
    for (const x of last) perInstance.set(x.instance!, (perInstance.get(x.instance!) ?? 0) + 1);
    assert.ok([...perInstance.values()].every((n) => n <= 20), JSON.stringify([...perInstance]));
    assert.deepEqual(new Set(perInstance.keys()), new Set(labs.map((i) => i.id)));

    // The store holds one data space per lab, made by `add`.
    const store = (await instances()).find((i) => i.role === 'store')!;
    const spaces = (await (await fetch(`${store.exports.url}/labs`)).json()) as string[];
    assert.equal(spaces.length, LABS);

    // Each lab on its own host, through HAProxy: its instance, its own data.
    const lb = (await instances()).find((i) => i.role === 'lb')!;
    for (const x of last) {
      const r = await get(lb.exports.url!, `${x.name}.labs.example.test`, '/api/lab');
      assert.equal(r.status, 200, `${x.name}: ${r.status} ${r.body}`);
      const page = JSON.parse(r.body) as LabPage;
      assert.equal(page.lab, x.name);
      assert.equal(page.instance, x.instance, `${x.name} is routed to its own instance`);
      assert.equal(page.data.name, x.name);
      assert.deepEqual(page.data.notes, [`Welcome to ${x.name}!`]);
    }
    const html = await get(lb.exports.url!, 'lab7.labs.example.test');
    assert.equal(html.status, 200);
    assert.match(html.body, /<h1>lab7<\/h1>/);
    assert.match(html.body, /2 visits/, 'the visit counter lives in the store');
  },
);
