// drover-test: alone (loads the balancers under a roll)
/**
 * Load balancing end to end: a balancer role in front of api, steady bounded load from a client
 * on 127.0.0.1, while api goes 2 → 5 → 1. The load runs until the scale-in has completed (every
 * removed member terminated), so the whole of every drain is under traffic. No request may fail,
 * and every member that served must have received traffic. Run with the builtin driver and, where HAProxy is installed (always
 * in CI), with the haproxy driver.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { Agent, request } from 'node:http';
import { pino } from 'pino';
import { startServer } from '../src/controller/index.js';
import { apiClient, killAll, processesWithEnv, ROOT, sleep, until } from './helpers.js';

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

const drivers: ('builtin' | 'haproxy')[] = ['builtin'];
if (haproxyInstalled() || process.env.CI === 'true') drivers.push('haproxy');

for (const driver of drivers) {
  test(`${driver}: api 2 → 5 → 1 under steady load, zero failed requests`, { timeout: 180_000 }, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'drover-lb-e2e-'));
    const server = await startServer({ dataDir: join(dir, '.drover'), port: 0, logger: pino({ level: 'silent' }), heartbeatMs: 500 });
    t.after(async () => {
      await server.close();
      killAll(processesWithEnv(dir));
      rmSync(dir, { recursive: true, force: true });
    });
    const api = apiClient(server);
    const yaml = readFileSync(join(ROOT, 'examples/balanced/drover.yaml'), 'utf8').replace('driver: builtin', `driver: ${driver}`);
    await api('PUT', '/v1/apps/balanced', { yaml, appDir: join(ROOT, 'examples/balanced') });
    type Inst = {
      id: string;
      role: string;
      state: string;
      exports: Record<string, string>;
      balancer: { members: { id: string; state: string }[] } | null;
      destroyedAt: string | null;
    };
    const instances = async (all = false) => (await api<{ instances: Inst[] }>('GET', `/v1/instances?app=balanced${all ? '&all=true' : ''}`)).instances;
    let seen = '';
    const lbUrl = await until('lb serving with 2 members', async () => {
      const all = await instances();
      const lb = all.find((i) => i.role === 'lb' && i.state === 'serving');
      seen = JSON.stringify(all.map((i) => [i.role, i.state, (i as { message?: string }).message, i.balancer?.members]));
      return lb?.balancer?.members.filter((m) => m.state === 'ready').length === 2 ? lb.exports.url : undefined;
    }, 90_000).catch((err: unknown) => {
      throw new Error(`${err instanceof Error ? err.message : String(err)}; last seen: ${seen}`);
    });
    assert.ok(lbUrl);

    // Steady, bounded load: 150 requests/s over keep-alive connections, from before the scale-out
    // until the scale-in has completed, and never longer than MAX_TRAFFIC_MS.
    const agent = new Agent({ keepAlive: true, maxSockets: 32 });
    const served = new Map<string, number>();
    const failures: string[] = [];
    let sent = 0;
    const one = () =>
      new Promise<void>((resolve) => {
        const req = request(`${lbUrl}/hello`, { agent, timeout: 10_000 }, (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => {
            if (res.statusCode === 200) {
              const who = (JSON.parse(body) as { api: string }).api;
              served.set(who, (served.get(who) ?? 0) + 1);
            } else failures.push(`${res.statusCode} ${body.slice(0, 100)}`);
            resolve();
          });
        });
        req.on('timeout', () => req.destroy(new Error('timeout')));
        req.on('error', (e) => {
          failures.push(e.message);
          resolve();
        });
        req.end();
      });
    const inflight: Promise<void>[] = [];
    const MAX_TRAFFIC_MS = 120_000;
    let trafficOn = true;
    const start = Date.now();
    const loop = (async () => {
      for (let k = 0; trafficOn && Date.now() - start < MAX_TRAFFIC_MS; k++) {
        inflight.push(one());
        sent++;
        const next = start + (k + 1) * (1000 / 150);
        await sleep(Math.max(0, next - Date.now()));
      }
    })();
    let removed: Inst[] = [];
    try {
      await sleep(3000);
      await api('PUT', '/v1/apps/balanced/roles/api/count', { count: 5 });
      await until('5 api serving behind the lb', async () => {
        const lb = (await instances()).find((i) => i.role === 'lb');
        return lb?.balancer?.members.filter((m) => m.state === 'ready').length === 5 ? true : undefined;
      }, 40_000, 250);
      await sleep(3000);
      const five = (await instances()).filter((i) => i.role === 'api').map((i) => i.id);
      await api('PUT', '/v1/apps/balanced/roles/api/count', { count: 1 });
      removed = await until('the scale-in to 1 completed: every removed api member terminated', async () => {
        const all = (await instances(true)).filter((i) => i.role === 'api');
        const left = all.filter((i) => i.destroyedAt === null);
        if (left.length !== 1) return undefined;
        const gone = all.filter((i) => five.includes(i.id) && i.id !== left[0]!.id);
        return gone.length === five.length - 1 && gone.every((i) => i.destroyedAt !== null && i.state === 'terminated') ? gone : undefined;
      }, 60_000, 250);
      assert.ok(Date.now() - start < MAX_TRAFFIC_MS, 'the load ran until the scale-in completed');
    } finally {
      trafficOn = false;
      await loop;
      await Promise.all(inflight);
      agent.destroy();
    }
    assert.equal(removed.length, 4);

    const events = (await api<{ events: { kind: string; role: string | null; instance: string | null; message: string }[] }>('GET', '/v1/events?app=balanced&limit=1000&after=0')).events;
    const servedApis = new Set(events.filter((e) => e.role === 'api' && e.kind === 'instance.state' && e.message.includes('→ serving')).map((e) => e.instance!));
    assert.deepEqual(failures, [], `${failures.length} of ${sent} requests failed`);
    assert.ok(servedApis.size >= 5, `${servedApis.size} api members served`);
    for (const id of servedApis) assert.ok((served.get(id) ?? 0) > 0, `api member ${id} served but got no traffic`);
  });
}
