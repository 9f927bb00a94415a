// drover-test: alone (runs a PostgreSQL cluster and several controllers)
/**
 * A controller on PostgreSQL, run as users run it (`drover controller --store postgres://…`)
 * against a private server: it applies an app, is killed with SIGKILL, starts again on the same
 * database and knows its instances (the same ones, none duplicated); it outlives an outage of the
 * database and carries out a change once it is back. A bad or unreachable store
 * URL stops the start with a message naming the flag or the server — never the password.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { pino } from 'pino';
import { freePort } from '../src/adapters/providers/index.js';
import { apiClient, BIN, drover, killAll, processesWithEnv, ROOT, sleep, until } from './helpers.js';
import { openPostgresStore } from '../src/adapters/store/index.js';
import { startServer } from '../src/controller/index.js';
import { postgresSkip, startPostgres, type PrivatePostgres } from './postgres.js';

const skip = postgresSkip();
let pgServer: PrivatePostgres | undefined;
before(async () => {
  if (skip === false) pgServer = await startPostgres();
});
after(async () => {
  await pgServer?.stop();
});

const yaml = `
app: pgapp
roles:
  db:
    count: 1
    start: node \${appDir}/db.mjs
    exports: { url: "http://\${ip}:\${port}" }
    health: { http: /health, interval: 500ms }
  api:
    count: 2
    imports: [db.url]
    start: node \${appDir}/api.mjs
    exports: { endpoint: "http://\${ip}:\${port}" }
    health: { http: /health, interval: 500ms }
`;

type App = { converged: boolean; roles: { name: string; instances: { id: string; state: string }[] }[] };

test('a controller on PostgreSQL applies an app, is killed, restarts on the same database and still knows its instances', { skip, timeout: 240_000 }, async (t) => {
  const server = pgServer!;
  const url = await server.createDatabase();
  const dir = mkdtempSync(join(tmpdir(), 'drover-pgctl-'));
  const dataDir = join(dir, '.drover');
  const port = await freePort();
  const target = { url: `http://127.0.0.1:${port}`, token: 'pg-controller-test-token-'.padEnd(40, 'x') };
  const api = apiClient(target);
  let ctl: ChildProcess | undefined;
  let output = '';
  t.after(async () => {
    ctl?.kill('SIGKILL');
    killAll(processesWithEnv(dir));
    await sleep(200);
    rmSync(dir, { recursive: true, force: true });
  });
  const start = async () => {
    ctl = spawn(process.execPath, [BIN, 'controller', '--data-dir', dataDir, '--port', String(port), '--store', url], {
      env: { ...process.env, DROVER_TOKEN: target.token, DROVER_LOG_LEVEL: 'warn', DROVER_STORE_URL: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    ctl.stdout?.on('data', (d: Buffer) => (output += d.toString()));
    ctl.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    const c = ctl;
    await until('the controller answers', async () => {
      if (c.exitCode !== null) throw new Error(`the controller exited (${c.exitCode}): ${output}`);
      return (await fetch(`${target.url}/v1/health`)).ok;
    }, 60_000);
  };
  const converged = (what: string) =>
    until(what, async () => {
      const a = await api<App>('GET', '/v1/apps/pgapp');
      const conn = await api<{ instances: { connected: boolean }[] }>('GET', '/v1/instances');
      return a.converged && conn.instances.length > 0 && conn.instances.every((i) => i.connected) ? a : undefined;
    }, 90_000);

  await start();
  await api('PUT', '/v1/apps/pgapp', { yaml, appDir: join(ROOT, 'examples/three-tier') });
  const app = await converged('the app converged');
  const ids = app.roles.flatMap((r) => r.instances.map((i) => i.id)).sort();
  assert.equal(ids.length, 3);
  assert.ok(!existsSync(join(dataDir, 'db')), 'no embedded store was made in the data folder');
  assert.ok(existsSync(join(dataDir, 'token')) || existsSync(join(dataDir, 'lock-id')), 'the data folder is still used');
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  try {
    const rows = (await db.query<{ id: string }>('select id from instances where destroyed_at is null order by id')).rows.map((r) => r.id);
    assert.deepEqual(rows, ids, 'the instances are in PostgreSQL');
  } finally {
    await db.end();
  }

  const c = ctl!;
  const gone = new Promise((r) => c.once('exit', r));
  c.kill('SIGKILL');
  await gone;
  await start();
  const again = await converged('converged after the restart');
  assert.deepEqual(again.roles.flatMap((r) => r.instances.map((i) => i.id)).sort(), ids, 'the same instances, none duplicated');
  const { events } = await api<{ events: { kind: string }[] }>('GET', '/v1/events?app=pgapp&limit=1000');
  assert.ok(events.some((e) => e.kind === 'app.apply'), 'events from before the restart are still listed');

  // The database goes away for a while: the controller stays up (a broken pooled connection
  // must not crash it), and once the database is back it carries out a change.
  await server.pause();
  await sleep(2500);
  assert.equal(ctl!.exitCode, null, `the controller is still running: ${output}`);
  assert.ok((await fetch(`${target.url}/v1/health`)).ok);
  await server.resume();
  await until('the API reads the store again', async () => (await api<App>('GET', '/v1/apps/pgapp')).roles.length === 2, 30_000);
  await api('PUT', '/v1/apps/pgapp/roles/api/count', { count: 3 });
  const grown = await until('api grown to 3 after the outage', async () => {
    const a = await api<App>('GET', '/v1/apps/pgapp');
    const n = a.roles.find((r) => r.name === 'api')!.instances.filter((i) => i.state === 'serving').length;
    return a.converged && n === 3 ? a : undefined;
  }, 90_000);
  assert.equal(grown.roles.flatMap((r) => r.instances).length, 4);

  await api('DELETE', '/v1/apps/pgapp');
  await until('the app is deleted', async () => ((await api<{ apps: unknown[] }>('GET', '/v1/apps')).apps.length === 0 ? true : undefined), 60_000);
  await until('no instance process is left', async () => (processesWithEnv(dir).length === 0 ? true : undefined), 15_000);
});

test('a bad or unreachable store URL stops the controller, naming the flag or the server, never the password', { timeout: 60_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-pgbad-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const env = { DROVER_TOKEN: 'x'.repeat(40), DROVER_STORE_URL: '' };
  const bad = await drover(['controller', '--data-dir', join(dir, '.drover'), '--port', '0', '--store', 'mysql://u:hunter2secret@h/d'], { cwd: dir, env });
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /--store: mysql:\/\/u:\*\*\*@h\/d: expected a postgres:\/\/ or postgresql:\/\/ URL/);
  assert.ok(!(bad.stderr + bad.stdout).includes('hunter2secret'));

  const fromEnv = await drover(['controller', '--data-dir', join(dir, '.drover'), '--port', '0'], { cwd: dir, env: { ...env, DROVER_STORE_URL: 'postgres://u:hunter2secret@h/d?sslmode=sometimes' } });
  assert.equal(fromEnv.code, 2, fromEnv.stderr);
  assert.match(fromEnv.stderr, /DROVER_STORE_URL: postgres:\/\/u:\*\*\*@h\/d\?sslmode=sometimes: sslmode=sometimes is not one of/);
  assert.ok(!(fromEnv.stderr + fromEnv.stdout).includes('hunter2secret'));

  const closed = await freePort();
  const down = await drover(['controller', '--data-dir', join(dir, '.drover'), '--port', '0', '--store', `postgresql://drover:hunter2secret@127.0.0.1:${closed}/drover`], { cwd: dir, env });
  assert.equal(down.code, 1, down.stderr);
  assert.match(down.stderr, new RegExp(`the PostgreSQL store at postgresql://drover:\\*\\*\\*@127\\.0\\.0\\.1:${closed}/drover cannot be opened: .*ECONNREFUSED`));
  assert.ok(!(down.stderr + down.stdout).includes('hunter2secret'));
});

test('drover up --detach --store: the background controller keeps its state in PostgreSQL and gets the URL through its environment, not its command line', { skip, timeout: 120_000 }, async (t) => {
  const url = pgServer!.url(await pgServer!.createDatabase().then((u) => new URL(u).pathname.slice(1)));
  const dir = mkdtempSync(join(tmpdir(), 'drover-pgup-'));
  const dataDir = join(dir, '.drover');
  t.after(async () => {
    await drover(['down', '--force', '--data-dir', dataDir], { cwd: dir }).catch(() => undefined);
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
  });
  writeFileSync(join(dir, 'drover.yaml'), `app: pgup\nroles:\n  db:\n    count: 1\n    start: node ${join(ROOT, 'examples/three-tier/db.mjs')}\n    health: { http: /health, interval: 500ms }\n`);
  const env = { DROVER_STORE_URL: '' };
  const up = await drover(['up', 'drover.yaml', '--detach', '--data-dir', dataDir, '--port', '0', '--store', url], { cwd: dir, env });
  assert.equal(up.code, 0, `up: ${up.stderr}${up.stdout}`);
  const info = JSON.parse(readFileSync(join(dataDir, 'controller.json'), 'utf8')) as { pid: number };
  const cmdline = readFileSync(`/proc/${info.pid}/cmdline`, 'utf8');
  assert.ok(!cmdline.includes(pgServer!.password), 'the password is not on the controller\'s command line (ps shows it to every user)');
  assert.ok(!existsSync(join(dataDir, 'db')), 'no embedded store');
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  try {
    assert.deepEqual((await db.query<{ name: string }>('select name from apps')).rows, [{ name: 'pgup' }]);
  } finally {
    await db.end();
  }
  const down = await drover(['down', '--data-dir', dataDir], { cwd: dir, env });
  let log = '';
  try {
    log = readFileSync(join(dataDir, 'controller.log'), 'utf8');
  } catch {
    // none
  }
  let diag = '';
  if (down.code !== 0) {
    const info2 = JSON.parse(readFileSync(join(dataDir, 'controller.json'), 'utf8')) as { url: string; pid: number };
    const token = readFileSync(join(dataDir, 'token'), 'utf8').trim();
    const c2 = apiClient({ url: info2.url, token });
    diag = JSON.stringify({ info, info2, apps: await c2('GET', '/v1/apps').catch((e: unknown) => String(e)), events: await c2('GET', '/v1/events?limit=30').catch((e: unknown) => String(e)) }, null, 1);
  }
  assert.equal(down.code, 0, `down: ${down.stderr}${down.stdout}\n--- controller.log\n${log}\n${diag}`);
});

test('retention prunes events and acknowledged orders on PostgreSQL as on PGlite (startServer with storeUrl)', { skip, timeout: 60_000 }, async (t) => {
  const url = await pgServer!.createDatabase();
  const dir = mkdtempSync(join(tmpdir(), 'drover-pgret-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const seed = await openPostgresStore(url);
  const now = Date.now();
  try {
    for (let k = 0; k < 10; k++) await seed.appendEvent({ at: now - (10 - k) * 1000, app: null, role: null, instance: null, kind: 'app.apply', message: `e${k}`, data: null });
    await seed.putOrder({ id: 'o-old', instanceId: 'i-x', kind: 'stop', payload: {}, createdAt: now - 3 * 86_400_000 });
    await seed.ackOrder('o-old', 'i-x', now - 2 * 86_400_000);
    await seed.putOrder({ id: 'o-pending', instanceId: 'i-x', kind: 'stop', payload: {}, createdAt: now - 3 * 86_400_000 });
  } finally {
    await seed.close();
  }
  const server = await startServer({
    dataDir: join(dir, '.drover'), port: 0, storeUrl: url, logger: pino({ level: 'silent' }), retention: { eventsMaxCount: 4, intervalMs: 0 },
  });
  try {
    const res = await server.pruneNow();
    assert.equal(res.orders, 1, 'the order acknowledged two days ago');
    assert.ok(res.events >= 6, `events beyond the newest 4 (${res.events})`);
    const events = await server.controller.listEvents({ limit: 100 });
    assert.equal(events.length, 4);
    assert.deepEqual(events.map((e) => e.message).slice(-1), ['e9']);
    const db = new pg.Client({ connectionString: url });
    await db.connect();
    try {
      assert.deepEqual((await db.query<{ id: string }>('select id from orders')).rows, [{ id: 'o-pending' }]);
    } finally {
      await db.end();
    }
  } finally {
    await server.close();
  }
});
