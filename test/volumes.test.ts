/**
 * Volumes end to end: a role's volume survives a kill -9 of its agent (the replacement takes the
 * member slot, db-0, and finds the data), is listed with the instance using it, cannot be removed
 * while used, can be once the role is scaled to 0; instance folders are removed when their
 * instance is destroyed while their logs stay readable; after the app is deleted no instance
 * folder is left.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startServer } from '../src/controller/index.js';
import { apiClient, drover, killAll, processesWithEnv, until } from './helpers.js';

test('a volume outlives a kill -9 of its instance; volumes ls/rm; instance folders go, logs stay', { timeout: 120_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-volumes-'));
  t.after(() => {
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
  });
  const dataDir = join(dir, '.drover');
  const yaml = [
    'app: shop',
    'roles:',
    '  db:',
    '    volumes: [data]',
    '    start: |',
    '      echo "$DROVER_INSTANCE" >> "${volumes.data}/boots"',
    '      echo "started $DROVER_INSTANCE"',
    '      exec sleep 600',
    '',
  ].join('\n');
  const server = await startServer({ dataDir, port: 0, token: 'volumes-test-token-'.padEnd(40, 'x'), heartbeatMs: 500, logger: pino({ level: 'warn' }) });
  t.after(() => server.close());
  const api = apiClient(server);
  type Inst = { id: string; state: string; slot?: string; agent: { pid: number | null }; workdir: string; destroyedAt: string | null };
  const serving = async () => (await api<{ instances: Inst[] }>('GET', '/v1/instances?app=shop&role=db')).instances.find((i) => i.state === 'serving');

  await api('PUT', '/v1/apps/shop', { yaml, appDir: dir });
  const first = await until('db serving', serving, 60_000);
  assert.equal(first.slot, 'db-0');
  const volume = join(dataDir, 'volumes', 'shop', 'db-0', 'data');
  assert.equal(statSync(volume).mode & 0o777, 0o700, 'the volume is private');
  assert.deepEqual(readFileSync(join(volume, 'boots'), 'utf8').trim().split('\n'), [first.id]);

  // kill -9 of the agent: the replacement takes slot db-0 and finds what the first one wrote.
  process.kill(first.agent.pid!, 'SIGKILL');
  const second = await until('a replacement serving', async () => {
    const s = await serving();
    return s && s.id !== first.id ? s : undefined;
  }, 60_000);
  assert.equal(second.slot, 'db-0');
  assert.deepEqual(readFileSync(join(volume, 'boots'), 'utf8').trim().split('\n'), [first.id, second.id], 'the replacement saw the data');

  // The first instance is destroyed: its folder is gone, its logs are kept and readable.
  await until('the first instance is destroyed', async () => !existsSync(first.workdir), 30_000);
  const logs = await api<{ from: string; lines: { text: string }[] }>('GET', `/v1/instances/${first.id}/logs`);
  assert.equal(logs.from, 'file');
  assert.ok(logs.lines.some((l) => l.text === `started ${first.id}`), JSON.stringify(logs.lines));

  // Listed with the instance using it; not removable while used.
  type Vol = { app: string; slot: string; name: string; path: string; usedBy: string | null };
  const listed = (await api<{ volumes: Vol[] }>('GET', '/v1/volumes')).volumes;
  assert.deepEqual(listed.map((v) => [v.app, v.slot, v.name, v.path, v.usedBy]), [['shop', 'db-0', 'data', volume, second.id]]);
  const busy = await fetch(`${server.url}/v1/volumes/shop/db-0/data`, { method: 'DELETE', headers: { authorization: `Bearer ${server.token}` } });
  assert.equal(busy.status, 409);
  assert.match(((await busy.json()) as { error: { code: string; message: string } }).error.message, new RegExp(`in use by ${second.id}`));
  assert.ok(existsSync(volume));
  // The same through the CLI.
  const env = { DROVER_TOKEN: server.token };
  const ls = await drover(['volumes', '--data-dir', dataDir], { cwd: dir, env });
  assert.equal(ls.code, 0, ls.stderr);
  assert.match(ls.stdout, /^APP\s+SLOT\s+VOLUME\s+SIZE\s+USED BY\s+PATH$/m);
  assert.match(ls.stdout, new RegExp(`^shop\\s+db-0\\s+data\\s+\\d+ B\\s+${second.id}\\s+${volume}$`, 'm'));
  const st = await drover(['status', '--data-dir', dataDir], { cwd: dir, env });
  assert.match(st.stdout, new RegExp(`${second.id}[^\\n]*\\n\\s+slot db-0\\n`), st.stdout);
  const rmBusy = await drover(['volumes', 'rm', 'shop', 'db-0', '--data-dir', dataDir], { cwd: dir, env });
  assert.notEqual(rmBusy.code, 0);
  assert.match(rmBusy.stderr, new RegExp(`volume shop/db-0 is in use by ${second.id}`));
  const rmBad = await drover(['volumes', 'rm', 'shop', 'db', '--data-dir', dataDir], { cwd: dir, env });
  assert.equal(rmBad.code, 2);
  assert.match(rmBad.stderr, /expected ROLE-N or ROLE-N\/NAME/);

  // Scaled to 0: the volume stays (and is free); removed by hand.
  await api('PUT', '/v1/apps/shop/roles/db/count', { count: 0 });
  await until('db gone', async () => (await api<{ instances: Inst[] }>('GET', '/v1/instances?app=shop&role=db')).instances.length === 0, 30_000);
  assert.equal((await api<{ volumes: Vol[] }>('GET', '/v1/volumes?app=shop')).volumes[0]?.usedBy, null);
  const rm = await drover(['volumes', 'rm', 'shop', 'db-0/data', '--data-dir', dataDir], { cwd: dir, env });
  assert.equal(rm.code, 0, rm.stderr);
  assert.equal(rm.stdout, 'removed shop/db-0/data\n');
  assert.deepEqual((await api<{ volumes: Vol[] }>('GET', '/v1/volumes')).volumes, []);
  assert.equal(existsSync(join(dataDir, 'volumes', 'shop')), false);

  // Deleted: no instance folder is left; the logs of both are kept.
  await api('DELETE', '/v1/apps/shop');
  await until('shop is gone', async () => (await api<{ apps: unknown[] }>('GET', '/v1/apps')).apps.length === 0, 30_000);
  assert.deepEqual(readdirSync(join(dataDir, 'instances')).filter((n) => n.startsWith('i-')), []);
  for (const id of [first.id, second.id]) assert.ok(existsSync(join(dataDir, 'logs', id, 'role.log')), `${id}'s role.log is kept`);
});

const isRoot = process.getuid?.() === 0;

test('a role with user: owns its volume and can reach it', { timeout: 60_000, skip: !isRoot && process.env.CI !== 'true' ? 'needs root to run a role as nobody' : false }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-volumes-'));
  t.after(() => {
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
  });
  const dataDir = join(dir, '.drover');
  const yaml = ['app: shop', 'roles:', '  db:', '    user: nobody', '    volumes: [data]', '    start: touch "${volumes.data}/mine" && exec sleep 600', ''].join('\n');
  const server = await startServer({ dataDir, port: 0, token: 'volumes-test-token-'.padEnd(40, 'x'), heartbeatMs: 500, logger: pino({ level: 'warn' }) });
  t.after(() => server.close());
  const api = apiClient(server);
  await api('PUT', '/v1/apps/shop', { yaml, appDir: dir });
  await until('db serving', async () => (await api<{ instances: { state: string }[] }>('GET', '/v1/instances?app=shop')).instances.some((i) => i.state === 'serving'), 30_000);
  const volume = join(dataDir, 'volumes', 'shop', 'db-0', 'data');
  const nobody = statSync(join(volume, 'mine')).uid;
  assert.notEqual(nobody, 0, 'written by the role as nobody');
  assert.equal(statSync(volume).uid, nobody, 'the volume is the role user\'s');
  assert.equal(statSync(volume).mode & 0o777, 0o700);
  assert.equal(statSync(join(dataDir, 'volumes')).mode & 0o007, 0o001, 'the folders above it: traversable, not listable');
  await api('DELETE', '/v1/apps/shop');
  await until('shop is gone', async () => (await api<{ apps: unknown[] }>('GET', '/v1/apps')).apps.length === 0, 30_000);
});
