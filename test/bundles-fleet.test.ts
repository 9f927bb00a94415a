/**
 * App bundles and placement across hosts: network-namespace hosts (test/netns.ts) join the pool
 * of `shop` with `drover agent --join` — the first with `disk=hdd`, the second `disk=ssd`, a third
 * with `gpu=yes` later.
 *
 * - `db` asks for `disk: ssd`: it lands on the second host although the first is idle too;
 * - its `start` runs `${appDir}/server.mjs`, which serves a file of the app folder: `${appDir}` is
 *   the unpacked bundle in the instance's folder on that host, and a change of the folder on the
 *   controller after the apply does not reach the running instance; `.droverignore` kept a file out;
 * - an agent of another app, with its own valid key, is refused the bundle (403, recorded);
 * - `gpu` asks for a label no host has: no instance is made, `role.unplaceable` names the labels
 *   and every host seen (also in the role's status); a third host with that label joins, and gpu
 *   is retried at once and lands there; `web` (3, strict spread) gets one member on the idle node and one on
 *   this machine; its third finds no host without a member and is explained the same way;
 * - an unchanged apply changes nothing; scaling db in and out again puts the new instance on the
 *   same host, which takes the bundle from its cache (the controller served it once per host).
 *
 * Needs root (CI runs as root; under CI=true a machine without namespaces fails the suite, elsewhere
 * it is skipped with the reason).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { pino } from 'pino';
import { startServer } from '../src/controller/index.js';
import { bundleRequestHeaders } from '../src/core/index.js';
import { apiClient, killAll, processesWithEnv, ROOT, until } from './helpers.js';
import { makeNetwork, netnsUnavailable } from './netns.js';

interface Inst { id: string; app: string; role: string | null; state: string; address: string | null; destroyedAt: string | null; agent: { host: string } }
interface Ev { kind: string; role: string | null; instance: string | null; message: string }
interface Bundle { sha256: string; size: number; downloads: number; files: number }

const SERVER = `import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
const dir = process.env.DROVER_APP_DIR;
const server = createServer((req, res) => res.end(JSON.stringify({ appDir: dir, text: readFileSync(join(dir, 'message.txt'), 'utf8').trim(), ignored: (() => { try { readFileSync(join(dir, 'secret.txt')); return false; } catch { return true; } })() })));
server.listen(Number(process.env.PORT), '0.0.0.0');
process.on('SIGTERM', () => server.close(() => process.exit(0)));
`;

const DB = `app: shop
roles:
  db:
    count: 1
    start: exec node \${appDir}/server.mjs
    placement: { labels: { disk: ssd } }
    exports: { url: "http://\${ip}:\${port}" }
    health: { http: /, interval: 200ms }
    drainTimeout: 1s
    stopTimeout: 2s
`;

const SHOP = `${DB}  gpu:
    count: 1
    start: exec node \${appDir}/server.mjs
    placement: { labels: { gpu: "yes" } }
  web:
    count: 3
    start: exec node \${appDir}/server.mjs
    placement: { spread: host, strict: true }
    health: { http: /, interval: 200ms }
`;

test('bundles and placement on namespaced hosts: labels choose the host, the bundle is ${appDir} there, another app is refused it, a host caches it', { timeout: 120_000 }, async (t) => {
  const why = netnsUnavailable();
  if (why) {
    if (process.env.CI === 'true') assert.fail(`the fleet suite needs network namespaces: ${why}`);
    t.skip(why);
    return;
  }
  // Registered before the network's own clean-up, so it runs first: agents killed and the
  // controller closed while the namespaces (and the connections into them) still exist.
  const cleanUp: { run?: () => Promise<void> } = {};
  t.after(async () => cleanUp.run?.());
  const net = makeNetwork(t, 3);
  const dir = mkdtempSync(join(tmpdir(), 'drover-bundles-'));
  const appDir = join(dir, 'shop');
  mkdirSync(appDir);
  writeFileSync(join(appDir, 'server.mjs'), SERVER);
  writeFileSync(join(appDir, 'message.txt'), 'hello v1\n');
  writeFileSync(join(appDir, 'secret.txt'), 'not for hosts\n');
  writeFileSync(join(appDir, '.droverignore'), 'secret.txt\n');
  const children: ChildProcess[] = [];
  const logs: string[] = [];
  const server = await startServer({
    dataDir: join(dir, '.drover'), host: net.bridgeIp, port: 0, logger: pino({ level: 'silent' }), heartbeatMs: 500,
    planner: { heartbeatTimeoutMs: 2500, unresponsiveGraceMs: 4000 },
  });
  cleanUp.run = async () => {
    for (const c of children) {
      try {
        process.kill(-c.pid!, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await server.close();
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
  };
  const api = apiClient(server);
  const events = async () => (await api<{ events: Ev[] }>('GET', '/v1/events?limit=1000&after=0')).events;
  const instances = async () => (await api<{ instances: Inst[] }>('GET', '/v1/instances')).instances;
  const explain = async (err: unknown) => assert.fail(`${String(err)}\n${JSON.stringify(await instances(), null, 1)}\n${(await events()).map((e) => `${e.kind}: ${e.message}`).join('\n')}\n${logs.join('')}`);

  const { token } = await api<{ token: string }>('POST', '/v1/tokens', { app: 'shop', uses: 3, ttlSeconds: 600 });
  const launcher = `import(${JSON.stringify(join(ROOT, 'src/cli/main.ts'))}).then((m) => m.main(process.argv.slice(0, 1).concat(['drover', ...process.argv.slice(1)]))).then((c) => process.exit(c))`;
  const labels = ['disk=hdd', 'disk=ssd', 'gpu=yes'];
  const join_ = (i: number) => {
    const h = net.hosts[i]!;
    const c = h.spawn([process.execPath, '--import', 'tsx', '-e', launcher, 'agent', '--join', server.url, '--address', h.ip, '--name', `host${i}`, '--labels', labels[i]!, '--data-dir', join(dir, `host${i}`)], {
      cwd: ROOT,
      env: { ...process.env, DROVER_JOIN_TOKEN: token, DROVER_LOG_LEVEL: 'warn' },
    });
    c.stdout?.on('data', (d: Buffer) => logs.push(`[host${i}] ${d.toString()}`));
    c.stderr?.on('data', (d: Buffer) => logs.push(`[host${i}] ${d.toString()}`));
    children.push(c);
  };
  for (const i of [0, 1]) {
    join_(i);
    // One after the other: the hdd host is the first candidate, so db landing on ssd is the label's doing.
    await until(`host${i} joined`, async () => ((await api<{ nodes: { state: string }[] }>('GET', '/v1/nodes')).nodes.filter((n) => n.state === 'idle').length === i + 1 ? true : undefined), 30_000)
      .catch((err: unknown) => assert.fail(`${String(err)}\n${logs.join('')}`));
  }

  // Another app on this machine: its agent holds a valid key, of the wrong app.
  await api('PUT', '/v1/apps/other', { yaml: 'app: other\nroles:\n  idle:\n    count: 1\n    start: sleep 600\n    placement: { labels: { local: "true" } }\n', appDir: join(dir, '.drover') });

  const applied = await api<{ bundle: Bundle | null; changed: boolean }>('PUT', '/v1/apps/shop', { yaml: DB, appDir });
  assert.ok(applied.bundle, 'the pool has hosts: the folder was packed at apply');
  assert.equal(applied.bundle.files, 3, 'server.mjs, message.txt, .droverignore; secret.txt left out');

  const db = await until('db serving', async () => (await instances()).find((i) => i.app === 'shop' && i.role === 'db' && i.state === 'serving'), 40_000).catch(explain);
  assert.ok(db.address!.startsWith(`${net.hosts[1]!.ip}:`), `db runs on the ssd host (${db.address})`);
  assert.equal(db.agent.host, 'host1');
  const answer = async (address: string) => (await (await fetch(`http://${address}/`)).json()) as { appDir: string; text: string; ignored: boolean };
  const first = await answer(db.address!);
  assert.equal(first.text, 'hello v1');
  assert.ok(first.appDir.startsWith(join(dir, 'host1')) && first.appDir.endsWith(`${db.id}/app`), `\${appDir} is the unpacked bundle on the host: ${first.appDir}`);
  assert.equal(first.ignored, true, '.droverignore kept secret.txt out');
  // The folder changes after the apply: the running instance has its own copy.
  writeFileSync(join(appDir, 'message.txt'), 'hello v2\n');
  assert.equal((await answer(db.address!)).text, 'hello v1');
  writeFileSync(join(appDir, 'message.txt'), 'hello v1\n');

  // gpu: no host has the label. web (3, strict spread): one member on the idle node, one on this
  // machine, the third finds no host without a member and is explained.
  const all = await api<{ bundle: Bundle; changed: boolean }>('PUT', '/v1/apps/shop', { yaml: SHOP, appDir });
  assert.equal(all.changed, true);
  assert.equal(all.bundle.sha256, applied.bundle.sha256, 'the same files: the same bundle');
  await until('gpu explained', async () => (await events()).find((e) => e.kind === 'role.unplaceable' && e.role === 'gpu'), 20_000).then((e) => {
    assert.match(e.message, /no host fits gpu \(wants labels gpu=yes\)/);
    assert.match(e.message, /node n-[^ ]+ \(host0\): (lacks gpu=yes|busy)/);
    assert.match(e.message, /this machine \([^)]+\): lacks gpu=yes/);
  }).catch(explain);
  assert.ok(!(await instances()).some((i) => i.role === 'gpu' && i.state === 'serving'));
  // Status says why gpu has no instance. Polled: a host that comes back (a node's heartbeat late
  // on a busy machine) clears the reason until the role's retry finds no host again.
  const roles = await until('status says why gpu has no instance', async () => {
    const r = (await api<{ roles: { name: string; unplaceable: string | null }[] }>('GET', '/v1/apps/shop/roles')).roles;
    return /no host fits gpu/.test(r.find((x) => x.name === 'gpu')?.unplaceable ?? '') && r;
  }, 20_000).catch(explain);
  assert.equal(roles.find((r) => r.name === 'db')?.unplaceable, null);
  const webs = await until('two web members serving', async () => {
    const w = (await instances()).filter((i) => i.role === 'web' && i.state === 'serving');
    return w.length >= 2 ? w : undefined;
  }, 30_000).catch(explain);
  const webEvent = await until('web explained', async () => (await events()).find((e) => e.kind === 'role.unplaceable' && e.role === 'web'), 20_000).catch(explain);
  assert.match(webEvent.message, /runs 1 member\(s\) of web already \(strict spread\)/);
  assert.equal(webs.length, 2, 'strict spread stacks no third member');
  assert.deepEqual(new Set(webs.map((w) => w.agent.host)).size, 2, `one member per host: ${webs.map((w) => w.agent.host).join(', ')}`);
  assert.ok(webs.some((w) => w.agent.host === 'host0'), 'one on the idle node');
  // web no longer wants a third: host1 stays db's when db leaves it below.
  await api('PUT', '/v1/apps/shop/roles/web/count', { count: 2 });
  // A host with gpu=yes joins (web wants no third member now): gpu is tried again at once (not after its backoff) and lands there.
  join_(2);
  const gpu = await until('gpu on the new host', async () => (await instances()).find((i) => i.role === 'gpu' && i.state === 'serving'), 40_000).catch(explain);
  assert.equal(gpu.agent.host, 'host2');
  assert.ok((await events()).some((e) => e.kind === 'role.retry' && e.role === 'gpu' && /a host that joined or came back/.test(e.message)));

  // Another app's agent asks for shop's bundle with its own (valid) key: 403, recorded.
  const otherInst = (await server.controller.listInstances({ app: 'other' })).find((i) => i.destroyedAt === null)!;
  const headers = bundleRequestHeaders({ key: otherInst.joinToken, instanceId: otherInst.id, app: 'shop', sha256: applied.bundle.sha256, at: Date.now(), nonce: 'x'.repeat(32) });
  const refused = await fetch(`${server.url}/v1/bundles/shop/${applied.bundle.sha256}`, { headers });
  assert.equal(refused.status, 403);
  assert.ok((await events()).some((e) => e.kind === 'security.agent' && e.message.includes(`${otherInst.id} (app other) asked for a bundle of app shop`)));
  // Without any proof: 401, not the admin token's business.
  assert.equal((await fetch(`${server.url}/v1/bundles/shop/${applied.bundle.sha256}`)).status, 401);

  // The same file and folder again: nothing changes.
  const again = await api<{ bundle: Bundle; changed: boolean }>('PUT', '/v1/apps/shop', { yaml: SHOP, appDir });
  assert.equal(again.changed, false);
  assert.equal(again.bundle.sha256, applied.bundle.sha256, 'same files, same bundle');
  const fetched = (await api<{ bundle: Bundle }>('GET', '/v1/apps/shop/bundle')).bundle.downloads;
  assert.equal(fetched, 3, 'fetched once by each host (db on host1, web on host0, gpu on host2)');

  // db out and in again: the new instance lands on the same host and takes the bundle from its cache.
  await api('PUT', '/v1/apps/shop/roles/db/count', { count: 0 });
  await until('db gone', async () => ((await instances()).some((i) => i.role === 'db' && i.destroyedAt === null) ? undefined : true), 30_000).catch(explain);
  await api('PUT', '/v1/apps/shop/roles/db/count', { count: 1 });
  const db2 = await until('db serving again', async () => (await instances()).find((i) => i.role === 'db' && i.state === 'serving' && i.id !== db.id), 40_000).catch(explain);
  assert.ok(db2.address!.startsWith(`${net.hosts[1]!.ip}:`));
  assert.equal((await answer(db2.address!)).text, 'hello v1');
  assert.equal((await api<{ bundle: Bundle }>('GET', '/v1/apps/shop/bundle')).bundle.downloads, fetched, 'the host had it cached: not fetched again');
  const cache = join(dir, 'host1', 'instances', '.bundles');
  assert.ok(existsSync(cache) && readdirSync(cache).includes(`${applied.bundle.sha256}.tgz`), 'the host keeps it in its cache');
});
