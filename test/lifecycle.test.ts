// drover-test: alone (times drains and replacements)
/**
 * The controller process's life on a data folder: one controller per folder (a lock the kernel
 * frees when its holder dies), a controller that cannot start exits and says why, a damaged
 * store is recoverable with `drover down --force`, and retention runs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, realpathSync, rmSync, writeFileSync, mkdtempSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { ControllerStartError, startServer } from '../src/controller/index.js';
import { apiClient, drover, killAll, processesWithEnv, sleep, until } from './helpers.js';

interface Status {
  apps: { name: string; converged: boolean; roles: { name: string; desired: number; instances: { id: string; state: string }[] }[] }[];
}

const APP = 'app: idle\nroles:\n  web:\n    count: 2\n    start: exec sleep 600\n';

function setup(t: { after(fn: () => void): void }): { cwd: string; dataDir: string } {
  const cwd = mkdtempSync(join(tmpdir(), 'drover-life-'));
  t.after(() => {
    // The controller's environment does not name the folder; its controller.json does.
    try {
      killAll([info(join(cwd, '.drover')).pid]);
    } catch {
      // none left
    }
    killAll(processesWithEnv(cwd));
    rmSync(cwd, { recursive: true, force: true });
  });
  writeFileSync(join(cwd, 'drover.yaml'), APP);
  return { cwd, dataDir: join(cwd, '.drover') };
}

const info = (dataDir: string) => JSON.parse(readFileSync(join(dataDir, 'controller.json'), 'utf8')) as { url: string; pid: number; startedAt: string };
/** Agent processes of the instances of `cwd`. */
const agents = (cwd: string) => processesWithEnv(`DROVER_WORKDIR=${join(cwd, '.drover', 'instances')}`).filter((p) => readFileSync(`/proc/${p}/environ`, 'latin1').includes('DROVER_INSTANCE_ID='));

/** Whether `pid` is gone (a zombie is: nobody may reap it here). */
function gone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
  } catch {
    return true;
  }
}

async function status(cwd: string): Promise<Status> {
  const r = await drover(['status', '--json'], { cwd });
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Status;
}

function listenOn(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(port, '127.0.0.1', () => resolve(s));
  });
}

test('one controller per data folder: a second is refused before it touches anything; kill -9 frees the folder; down --force stops it all', { timeout: 240_000 }, async (t) => {
  const { cwd, dataDir } = setup(t);
  const up = await drover(['up', '--detach', '--port', '0', '--timeout', '60'], { cwd });
  assert.equal(up.code, 0, up.stderr + up.stdout);
  const first = info(dataDir);
  const ids = (await status(cwd)).apps[0]!.roles[0]!.instances.map((i) => i.id).sort();
  assert.equal(ids.length, 2);

  const second = await drover(['controller', '--port', '0'], { cwd, timeoutMs: 30_000 });
  assert.equal(second.code, 1, second.stdout + second.stderr);
  assert.equal(second.stderr.trim(), `drover: another controller (pid ${first.pid}, ${first.url}) holds ${realpathSync(dataDir)}`);
  assert.deepEqual(info(dataDir), first, "the refused controller left the holder's controller.json alone");
  // Nothing changed behind the first controller's back: same two instances, still serving.
  await sleep(2000);
  let s = await status(cwd);
  assert.deepEqual(s.apps[0]!.roles[0]!.instances.map((i) => `${i.id} ${i.state}`).sort(), ids.map((id) => `${id} serving`));
  assert.equal(agents(cwd).length, 2, 'no agent was started by the second controller');

  // kill -9: the kernel frees the lock, though the agents the controller started live on.
  process.kill(first.pid, 'SIGKILL');
  await until('the controller to die', async () => gone(first.pid), 10_000, 100);
  const restart = await drover(['up', '--detach', '--port', '0', '--timeout', '60'], { cwd });
  assert.equal(restart.code, 0, restart.stderr + restart.stdout);
  const again = info(dataDir);
  assert.notEqual(again.pid, first.pid);
  s = await until('converged with the same instances', async () => {
    const st = await status(cwd);
    return st.apps[0]?.converged ? st : undefined;
  }, 60_000, 500);
  assert.deepEqual(s.apps[0]!.roles[0]!.instances.map((i) => i.id).sort(), ids, 'the same instances, none added');

  const force = await drover(['down', '--force', '--grace', '3'], { cwd });
  assert.equal(force.code, 0, force.stderr + force.stdout);
  assert.match(force.stdout, new RegExp(`stopped the controller \\(pid ${again.pid}, ${again.url}\\)`));
  for (const id of ids) assert.match(force.stdout, new RegExp(`stopped instance ${id}: \\d+ process\\(es\\)`));
  assert.deepEqual(processesWithEnv(cwd), [], 'no process of the data folder is left');
  assert.deepEqual(readdirSync(dataDir).includes('controller.json'), false, 'the dead controller is no longer advertised');
});

test('a controller that cannot listen exits non-zero with the reason and releases the data folder', { timeout: 180_000 }, async (t) => {
  const { cwd, dataDir } = setup(t);
  const busy = await listenOn(0);
  t.after(() => void busy.close());
  const port = (busy.address() as { port: number }).port;

  const ctl = await drover(['controller', '--port', String(port)], { cwd, timeoutMs: 60_000 });
  assert.equal(ctl.code, 1, ctl.stdout + ctl.stderr);
  assert.equal(ctl.stderr.trim(), `drover: port ${port} on 127.0.0.1 is in use`);

  const up = await drover(['up', '--detach', '--port', String(port)], { cwd, timeoutMs: 60_000 });
  assert.equal(up.code, 1);
  assert.match(up.stderr, new RegExp(`^drover: the controller could not start: port ${port} on 127.0.0.1 is in use\\n\\(log: `));

  const logger = pino({ level: 'silent' });
  const started = startServer({ dataDir, port, logger }).then(async (s) => {
    await s.close();
    throw new Error('a controller started on a port in use');
  });
  await assert.rejects(started, (err: unknown) => {
    assert.ok(err instanceof ControllerStartError);
    assert.equal(err.code, 'port-in-use');
    return true;
  });
  // Everything it opened is closed: the same process starts a controller on the folder at once.
  const server = await startServer({ dataDir, port: 0, logger });
  await server.close();
});

test('up --detach with DROVER_TOKEN set finds its own controller', { timeout: 120_000 }, async (t) => {
  const { cwd } = setup(t);
  const env = { DROVER_TOKEN: 'a-token-from-the-environment' };
  const up = await drover(['up', '--detach', '--port', '0', '--timeout', '60'], { cwd, env });
  assert.equal(up.code, 0, up.stderr + up.stdout);
  assert.match(up.stdout, /idle is up/);
  const again = await drover(['up', '--detach', '--port', '0', '--timeout', '60'], { cwd, env });
  assert.equal(again.code, 0, again.stderr + again.stdout);
  assert.match(again.stdout, /app idle unchanged/, 'the second up applies to the running controller');
  const down = await drover(['down'], { cwd, env });
  assert.equal(down.code, 0, down.stderr);
});

test('a damaged store: a clear error naming the way out, then down --force stops the instances left running', { timeout: 180_000 }, async (t) => {
  const { cwd, dataDir } = setup(t);
  const up = await drover(['up', '--detach', '--port', '0', '--timeout', '60'], { cwd });
  assert.equal(up.code, 0, up.stderr + up.stdout);
  process.kill(info(dataDir).pid, 'SIGKILL');
  assert.equal(agents(cwd).length, 2);
  const roles = processesWithEnv(`DROVER_WORKDIR=${join(dataDir, 'instances')}`).length;
  assert.ok(roles >= 4, 'agents and their role processes run');

  const db = join(dataDir, 'db');
  const garbage = Buffer.alloc(8192, 0x5a);
  writeFileSync(join(db, 'global', 'pg_control'), garbage);
  for (const f of readdirSync(join(db, 'pg_wal'))) if (/^[0-9A-F]{24}$/.test(f)) writeFileSync(join(db, 'pg_wal', f), garbage);

  const ctl = await drover(['controller', '--port', '0'], { cwd, timeoutMs: 60_000 });
  assert.equal(ctl.code, 1, ctl.stdout + ctl.stderr);
  assert.match(ctl.stderr, new RegExp(`^drover: the store in ${db} cannot be opened`));
  assert.match(ctl.stderr, new RegExp(`drover down --force --data-dir ${dataDir}`));
  assert.match(ctl.stderr, new RegExp(`mv ${db} ${db}.broken`));
  assert.doesNotMatch(ctl.stderr, /\n\s+at /, 'no stack trace');
  const upBroken = await drover(['up', '--detach', '--port', '0'], { cwd, timeoutMs: 60_000 });
  assert.equal(upBroken.code, 1);
  assert.match(upBroken.stderr, /the controller could not start: the store in .* cannot be opened/);
  assert.equal(agents(cwd).length, 2, 'the instances still run');

  const force = await drover(['down', '--force', '--grace', '3'], { cwd });
  assert.equal(force.code, 0, force.stderr + force.stdout);
  assert.match(force.stdout, /no controller holds/);
  assert.equal(force.stdout.match(/stopped instance i-/g)?.length, 2, force.stdout);
  assert.deepEqual(processesWithEnv(cwd), [], 'no process of the data folder is left');
});

test('retention: the controller prunes events beyond the configured count; a bad setting is refused', { timeout: 60_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-life-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const logger = pino({ level: 'silent' });
  const saved = process.env.DROVER_EVENTS_MAX_AGE;
  process.env.DROVER_EVENTS_MAX_AGE = 'a week';
  try {
    const started = startServer({ dataDir: join(dir, '.drover'), port: 0, logger }).then(async (s) => {
      await s.close();
      throw new Error('a controller started with a bad setting');
    });
    await assert.rejects(started, /DROVER_EVENTS_MAX_AGE=a week: expected a duration such as 7d/);
  } finally {
    if (saved === undefined) delete process.env.DROVER_EVENTS_MAX_AGE;
    else process.env.DROVER_EVENTS_MAX_AGE = saved;
  }
  const server = await startServer({ dataDir: join(dir, '.drover'), port: 0, logger, retention: { eventsMaxCount: 2, intervalMs: 0 } });
  try {
    const api = apiClient(server);
    for (let k = 0; k < 4; k++) await api('PUT', '/v1/apps/quiet', { yaml: `app: quiet\nroles:\n  web:\n    count: 0\n    start: sleep ${600 + k}\n`, appDir: dir });
    const before = (await api<{ events: unknown[] }>('GET', '/v1/events?limit=100')).events.length;
    assert.ok(before > 2, `events recorded (${before})`);
    const pruned = await server.pruneNow();
    assert.equal(pruned.events, before - 2);
    assert.equal((await api<{ events: unknown[] }>('GET', '/v1/events?limit=100')).events.length, 2);
  } finally {
    await server.close();
  }
});
