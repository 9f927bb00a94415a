/**
 * The data folder is private. Checked as an unprivileged user (`nobody`, through setpriv), as
 * an attacker on the same machine would be: CI runs as root, who may read anything.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { ControllerStartError, startServer, type RunningController } from '../src/controller/index.js';
import { openPgliteStore } from '../src/adapters/store/index.js';
import { apiClient, drover, killAll, processesWithEnv } from './helpers.js';

const NOBODY = 65534;
const isRoot = process.getuid?.() === 0;
const canDropPrivileges = isRoot && spawnSync('setpriv', ['--version']).status === 0;

/** Runs argv as `nobody` (no shell: the paths are arguments, never shell text). */
function asNobody(argv: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', '--', ...argv], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Every path under `dir` (itself included). */
function tree(dir: string): string[] {
  const out = [dir];
  if (lstatSync(dir).isDirectory()) for (const e of readdirSync(dir)) out.push(...tree(join(dir, e)));
  return out;
}

/** A temporary folder that `nobody` may enter, so that only the data folder's own modes stop it. */
function traversableTemp(prefix: string): string {
  const parent = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(parent, 0o755);
  return parent;
}

function assertPrivate(dataDir: string): void {
  const paths = tree(dataDir);
  // The attacker's view: nothing listed, nothing read.
  const ls = asNobody(['ls', '-a', '--', dataDir]);
  assert.notEqual(ls.status, 0, `nobody listed ${dataDir}: ${ls.stdout}`);
  assert.match(ls.stderr, /Permission denied/);
  const files = paths.filter((p) => lstatSync(p).isFile());
  assert.ok(files.length > 10, 'the store wrote its files');
  const cat = asNobody(['cat', '--', ...files]);
  assert.notEqual(cat.status, 0);
  assert.equal(cat.stdout, '', 'nobody read nothing');
  const dirs = paths.filter((p) => lstatSync(p).isDirectory());
  const lsAll = asNobody(['ls', '--', ...dirs]);
  assert.equal(lsAll.stdout, '', 'nobody listed no folder');
  const open = paths.filter((p) => (lstatSync(p).mode & 0o077) !== 0).map((p) => `${p} ${(lstatSync(p).mode & 0o777).toString(8)}`);
  assert.deepEqual(open, [], 'every folder 0700 and every file 0600');
}

test('startServer makes a private data folder: nobody can list it or read the token or the store (WAL included)', { skip: !canDropPrivileges && 'needs root and setpriv', timeout: 60_000 }, async (t) => {
  const parent = traversableTemp('drover-private-');
  const running: { server?: RunningController } = {};
  t.after(async () => {
    await running.server?.close();
    rmSync(parent, { recursive: true, force: true });
  });
  assert.equal(asNobody(['ls', '--', parent]).status, 0, 'nobody may enter the temporary parent');
  const dataDir = join(parent, '.drover');
  const server = (running.server = await startServer({ dataDir, port: 0, logger: pino({ level: 'silent' }) }));
  const api = apiClient(server);
  // Writes, so the store's WAL holds data.
  for (let k = 0; k < 3; k++) {
    await api('PUT', '/v1/apps/quiet', { yaml: `app: quiet\nroles:\n  web:\n    count: 0\n    start: sleep ${600 + k}\n`, appDir: parent });
  }
  assert.ok(readdirSync(join(dataDir, 'db', 'pg_wal')).length > 0);
  assertPrivate(dataDir);
});

test('drover up --detach makes a private data folder, instance folders included', { skip: !canDropPrivileges && 'needs root and setpriv', timeout: 120_000 }, async (t) => {
  const cwd = traversableTemp('drover-private-');
  t.after(() => {
    killAll(processesWithEnv(cwd));
    rmSync(cwd, { recursive: true, force: true });
  });
  writeFileSync(join(cwd, 'drover.yaml'), 'app: quiet\nroles:\n  web:\n    count: 1\n    start: echo started > started.txt; exec sleep 600\n');
  const up = await drover(['up', '--detach', '--port', '0', '--timeout', '60'], { cwd });
  assert.equal(up.code, 0, up.stderr + up.stdout);
  const dataDir = join(cwd, '.drover');
  assert.ok(readdirSync(join(dataDir, 'instances')).length > 0, 'an instance folder exists');
  assertPrivate(dataDir);
  const down = await drover(['down'], { cwd });
  assert.equal(down.code, 0, down.stderr);
});

test('a data folder writable by group or others, or owned by another user, is refused, naming the path and its mode', { timeout: 60_000 }, async (t) => {
  const parent = mkdtempSync(join(tmpdir(), 'drover-private-'));
  t.after(() => rmSync(parent, { recursive: true, force: true }));
  const logger = pino({ level: 'silent' });
  // A controller that starts where it must not is closed again, so the failure is reported.
  const refused = (dataDir: string) =>
    startServer({ dataDir, port: 0, logger }).then(async (s) => {
      await s.close();
      throw new Error(`a controller started on ${dataDir}`);
    });

  const groupWritable = join(parent, 'g');
  mkdirSync(groupWritable);
  chmodSync(groupWritable, 0o775);
  await assert.rejects(refused(groupWritable), (err: unknown) => {
    assert.ok(err instanceof ControllerStartError);
    assert.equal(err.message, `data folder ${groupWritable} is mode 0775 (writable by group); run chmod 700 ${groupWritable}`);
    return true;
  });
  assert.deepEqual(readdirSync(groupWritable), [], 'nothing was created in it');

  const openDb = join(parent, 'd');
  mkdirSync(join(openDb, 'db'), { recursive: true, mode: 0o700 });
  chmodSync(join(openDb, 'db'), 0o777);
  await assert.rejects(refused(openDb), /\/d\/db \(in data folder .*\/d\) is mode 0777 \(writable by group and others\); run chmod 700 .*\/d\/db/);

  const openToken = join(parent, 't');
  mkdirSync(openToken, { mode: 0o700 });
  writeFileSync(join(openToken, 'token'), 'x\n');
  chmodSync(join(openToken, 'token'), 0o646);
  await assert.rejects(refused(openToken), /\/t\/token \(in data folder .*\) is mode 0646 \(writable by others\); run chmod 600/);

  const cli = await drover(['controller', '--port', '0', '--data-dir', groupWritable], { cwd: parent, timeoutMs: 30_000 });
  assert.equal(cli.code, 1);
  assert.match(cli.stderr, /^drover: data folder .* is mode 0775 \(writable by group\); run chmod 700 /);

  if (isRoot) {
    const foreign = join(parent, 'f');
    mkdirSync(foreign, { mode: 0o700 });
    chownSync(foreign, NOBODY, NOBODY);
    await assert.rejects(refused(foreign), /data folder .*\/f is owned by uid 65534, not by this user \(uid 0\)/);
  }

  // Readable by others only (as older drovers made it): nobody could have changed it, so it
  // is made private and used.
  const legacy = join(parent, 'legacy');
  mkdirSync(legacy);
  chmodSync(legacy, 0o755);
  const server = await startServer({ dataDir: legacy, port: 0, logger, store: await openPgliteStore() });
  try {
    assert.equal(statSync(legacy).mode & 0o777, 0o700);
  } finally {
    await server.close();
  }
});
