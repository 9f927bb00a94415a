/**
 * The trust model on real processes: what a role can see of Drover's secrets, what a process
 * that takes the controller's port while it is down can get out of the agents, and that values
 * never become shell text. Runs as root in CI (a role with `user: nobody`); elsewhere the
 * user-switching part is skipped, and fails under CI=true.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { WebSocketServer } from 'ws';
import { openPgliteStore } from '../src/adapters/store/index.js';
import { freePort } from '../src/adapters/providers/index.js';
import { startServer, type RunningController } from '../src/controller/index.js';
import { apiClient, drover, killAll, processesWithEnv, sleep, until } from './helpers.js';

const isRoot = process.getuid?.() === 0;
const SERVER = `exec node -e "require('http').createServer((q,s)=>s.end('ok')).listen(+process.env.PORT,'127.0.0.1')"`;

type App = { converged: boolean; roles: { name: string; instances: { id: string; state: string; exports: Record<string, string>; role: string | null }[] }[] };
type Instances = { instances: { id: string; role: string | null; state: string; connected: boolean }[] };

function workdirOf(dataDir: string, id: string): string {
  return join(dataDir, 'instances', id);
}

test('roles cannot reach the keys; imported values never run as shell', { timeout: 180_000, skip: !isRoot && process.env.CI !== 'true' ? 'needs root to run a role as nobody' : false }, async (t) => {
  assert.ok(isRoot, 'this suite must run as root under CI (it runs a role as nobody)');
  const dir = mkdtempSync(join(tmpdir(), 'drover-sec-'));
  const dataDir = join(dir, 'data folder');
  const admin = 'admin-token-' + 'z'.repeat(30);
  // As if the operator exported DROVER_TOKEN: it must not reach the roles.
  const saved = process.env.DROVER_TOKEN;
  process.env.DROVER_TOKEN = admin;
  let server: RunningController | undefined;
  t.after(async () => {
    if (saved === undefined) delete process.env.DROVER_TOKEN;
    else process.env.DROVER_TOKEN = saved;
    await server?.close();
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
  });
  server = await startServer({ dataDir, port: 0, logger: pino({ level: 'silent' }), heartbeatMs: 500, token: admin });
  const api = apiClient(server);
  const appDir = join(dir, 'app dir');
  mkdirSync(appDir);
  const yaml = `
app: sec
roles:
  db:
    start: ${JSON.stringify(SERVER)}
    # A value that is shell if anyone pastes it into shell text.
    exports: { url: "x$(touch \${workdir}/PWNED)\`touch \${workdir}/PWNED2\`'\\"; touch \${workdir}/PWNED3" }
    health: { http: / }
  spy:
    imports: [db.url]
    start: |
      { env; echo ---; tr '\\0' '\\n' < /proc/$PPID/environ; echo ---; tr '\\0' ' ' < /proc/$PPID/cmdline; } > spy.txt
      printf '%s' \${db.url} > got-bare.txt
      printf '%s' "\${db.url}" > got-double.txt
      printf '%s' '\${db.url}' > got-single.txt
      ${SERVER}
    update: printf '%s' \${db.url} > updated.txt
    health: { http: / }
  nobody:
    user: nobody
    env: { DATA: ${JSON.stringify(dataDir)} }
    start: |
      for f in "$DATA/token" "$DATA/controller.json" "$DATA/db" /proc/$PPID/environ "$DATA/instances" "$DATA/instances/$DROVER_INSTANCE/agent.log"; do
        if [ -d "$f" ]; then ls "$f" >/dev/null 2>&1 && echo "READ $f" || echo "DENIED $f"; else cat "$f" >/dev/null 2>&1 && echo "READ $f" || echo "DENIED $f"; fi
      done > spy.txt
      id -u >> spy.txt
      echo "groups $(id -G)" >> spy.txt
      ${SERVER}
    health: { http: / }
`;
  await api('PUT', '/v1/apps/sec', { yaml, appDir });
  const app = await until('converged', async () => {
    const a = await api<App>('GET', '/v1/apps/sec');
    return a.converged ? a : undefined;
  }, 90_000);
  const inst = (role: string) => app.roles.find((r) => r.name === role)!.instances[0]!;
  const spyDir = workdirOf(dataDir, inst('spy').id);
  const spy = readFileSync(join(spyDir, 'spy.txt'), 'utf8');

  await t.test("the admin token and instance keys are in no role's environment, nor its agent's /proc", async () => {
    await server!.close();
    server = undefined;
    const store = await openPgliteStore(join(dataDir, 'db'));
    const keys = (await store.listInstances({})).map((i) => i.joinToken);
    await store.close();
    assert.ok(keys.length >= 3);
    assert.ok(!spy.includes(admin), 'admin token leaked to a role');
    for (const k of keys) assert.ok(!spy.includes(k), 'an instance key leaked to a role');
    assert.ok(!/^DROVER_TOKEN=/m.test(spy));
    assert.match(spy, /^DROVER_INSTANCE=/m, 'the spy did read its environment');
    server = await startServer({ dataDir, port: 0, logger: pino({ level: 'silent' }), heartbeatMs: 500, token: admin });
  });

  await t.test('a role run as another user can read none of the data folder nor its agent', async () => {
    const out = readFileSync(join(workdirOf(dataDir, inst('nobody').id), 'home', 'spy.txt'), 'utf8');
    assert.doesNotMatch(out, /^READ /m, out);
    assert.match(out, /^65534$/m);
    assert.match(out, /^groups 65534$/m, 'no supplementary group of the agent kept');
  });

  await t.test('imported values reach commands as data: nothing in them runs', async () => {
    const value = inst('db').exports.url!;
    assert.match(value, /\$\(touch/);
    for (const f of ['got-bare.txt', 'got-double.txt', 'got-single.txt']) assert.equal(readFileSync(join(spyDir, f), 'utf8'), value, f);
    const dbDir = workdirOf(dataDir, inst('db').id);
    for (const p of ['PWNED', 'PWNED2', 'PWNED3']) assert.ok(!existsSync(join(dbDir, p)) && !existsSync(join(spyDir, p)), `${p} must not exist`);
  });
});

test('a process on the controller port while it is down gets no secret and no obedience', { timeout: 180_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-rogue-'));
  const dataDir = join(dir, '.drover');
  const port = await freePort();
  let server: RunningController | undefined;
  let rogue: WebSocketServer | undefined;
  t.after(async () => {
    await new Promise<void>((resolve) => (rogue ? rogue.close(() => resolve()) : resolve()));
    await server?.close();
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
  });
  const start = () => startServer({ dataDir, port, logger: pino({ level: 'silent' }), heartbeatMs: 500 });
  server = await start();
  const api = <T>(m: string, p: string, b?: unknown) => apiClient(server!)<T>(m, p, b);
  const yaml = `
app: rogue
spares: 1
roles:
  db:
    start: ${JSON.stringify(SERVER)}
    exports: { url: "http://\${ip}:\${port}" }
    health: { http: / }
  api:
    imports: [db.url]
    start: ${JSON.stringify(SERVER)}
    update: printf '%s' "$DB_URL" > members.txt
    health: { http: / }
`;
  await api('PUT', '/v1/apps/rogue', { yaml, appDir: dir });
  const before = await until('converged', async () => {
    const a = await api<App>('GET', '/v1/apps/rogue');
    const i = await api<Instances>('GET', '/v1/instances');
    return a.converged && i.instances.length === 3 && i.instances.every((x) => x.connected) ? i : undefined;
  }, 90_000);
  const spare = before.instances.find((i) => i.role === null)!;
  await server.close();
  server = undefined;

  // The rogue: records every byte, answers hellos with a challenge it cannot prove, and sends
  // unsealed orders (a spare told to run a command, a refusal) as if it were the controller.
  const seen: string[] = [];
  rogue = new WebSocketServer({ host: '127.0.0.1', port, path: '/v1/agent' });
  rogue.on('connection', (ws) => {
    ws.on('message', (d) => {
      const text = (d as Buffer).toString('utf8');
      seen.push(text);
      ws.send(JSON.stringify({ type: 'challenge', nonce: 'C'.repeat(43), proof: 'D'.repeat(43) }));
      ws.send(JSON.stringify({ type: 'welcome', heartbeatMs: 100 }));
      ws.send(JSON.stringify({ type: 'order', order: { id: 'evil', kind: 'assign', assignment: { app: 'rogue', appDir: dir, role: { name: 'api', start: `touch ${join(dir, 'PWNED')}; sleep 100`, env: {}, exports: {}, imports: [] }, imports: {}, importsVersion: 'x' } } }));
      ws.send(JSON.stringify({ type: 'refused', reason: 'stop everything' }));
    });
  });
  await until('every agent met the rogue', async () => new Set(seen.map((s) => (JSON.parse(s) as { instanceId?: string }).instanceId)).size >= 3, 30_000);
  await sleep(1000);
  await new Promise<void>((resolve) => rogue!.close(() => resolve()));
  rogue = undefined;

  const store = await openPgliteStore(join(dataDir, 'db'));
  const keys = (await store.listInstances({})).map((i) => i.joinToken);
  await store.close();
  const wire = seen.join('\n');
  for (const k of keys) assert.ok(!wire.includes(k), 'no key reached the rogue');
  for (const s of seen) assert.equal((JSON.parse(s) as { type: string }).type, 'hello', 'only hellos: nothing is said to an unproven peer');
  assert.ok(!existsSync(join(dir, 'PWNED')), 'the spare did not run the rogue command');
  assert.equal(processesWithEnv(dir).length >= 3, true, 'agents and roles kept running');

  // The real controller comes back: the spare is still a spare, nothing was poisoned.
  server = await start();
  const after = await until('converged again', async () => {
    const a = await api<App>('GET', '/v1/apps/rogue');
    const i = await api<Instances>('GET', '/v1/instances');
    return a.converged && i.instances.every((x) => x.connected) ? i : undefined;
  }, 60_000);
  assert.deepEqual(after.instances.map((i) => i.id).sort(), before.instances.map((i) => i.id).sort(), 'same instances: nothing fenced, nothing replaced');
  assert.equal(after.instances.find((i) => i.id === spare.id)?.state, 'spare');
  assert.ok(!readdirSync(dir).includes('PWNED'));
  await api('DELETE', '/v1/apps/rogue');
  await until('deleted', async () => ((await api<{ apps: unknown[] }>('GET', '/v1/apps')).apps.length === 0 ? true : undefined), 60_000);
});

test('the CLI sends its token only to a controller that proves it holds it', { timeout: 60_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-cli-rogue-'));
  const seen: { url: string; authorization: string | undefined }[] = [];
  const rogue = createServer((req, res) => {
    seen.push({ url: req.url ?? '', authorization: req.headers.authorization });
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ proof: 'A'.repeat(43), apps: [] }));
  });
  await new Promise<void>((resolve) => rogue.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    rogue.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const port = (rogue.address() as AddressInfo).port;
  const r = await drover(['status'], { cwd: dir, env: { DROVER_URL: `http://127.0.0.1:${port}`, DROVER_TOKEN: 'the-admin-token-'.padEnd(40, 'x') } });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /could not prove it is the controller/);
  assert.ok(seen.length > 0, 'the CLI did ask');
  assert.ok(seen.every((s) => s.authorization === undefined), 'no token sent');
  assert.ok(seen.every((s) => s.url.startsWith('/v1/identity?challenge=')));
});
