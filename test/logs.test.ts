/**
 * `drover logs`: a role's and an instance's output through the controller's API — the last
 * lines, --since, --agent, -f (new lines as they are written), a gone instance's output; the
 * stop event carries a pointer, not the lines; bounds and a symbolic link are refused.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startServer } from '../src/controller/index.js';
import { apiClient, BIN, drover, killAll, processesWithEnv, until } from './helpers.js';

interface Inst { id: string; workdir: string; destroyedAt: string | null; state: string }
interface Ev { id: number; kind: string; instance: string | null; message: string; data: { lines?: string[] } | null }
interface Logs { from: string; truncated: boolean; lines: { at: string | null; text: string }[] }

test('drover logs: tail, --since, --agent, -f, a gone instance, the stop event points to it', { timeout: 180_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-logs-'));
  const dataDir = join(dir, '.drover');
  t.after(() => {
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
  });
  const yaml = [
    'app: shop',
    'roles:',
    '  web:',
    '    count: 1',
    '    deploy: echo "deploying web"',
    '    start: |',
    '      n=0',
    '      while true; do n=$((n+1)); echo "tick $n"; sleep 0.2; done',
    '',
  ].join('\n');
  const server = await startServer({ dataDir, port: 0, token: 'logs-test-token-'.padEnd(40, 'x'), heartbeatMs: 500, logger: pino({ level: 'warn' }) });
  t.after(() => server.close());
  const api = apiClient(server);
  const env = { DROVER_URL: server.url, DROVER_TOKEN: server.token };
  await api('PUT', '/v1/apps/shop', { yaml, appDir: dir });
  const [web] = await until('web serves', async () => {
    const { instances } = await api<{ instances: (Inst & { state: string })[] }>('GET', '/v1/instances?app=shop&role=web');
    return instances.length === 1 && instances[0]!.state === 'serving' && instances;
  }, 60_000);
  const id = web!.id;
  await until('a few ticks', async () => (await api<Logs>('GET', `/v1/instances/${id}/logs`)).lines.some((l) => l.text === 'tick 5'), 20_000);

  // The role's output, by role name: the deploy step's line and the start command's.
  const all = await drover(['logs', 'web', '-n', '10000'], { cwd: dir, env });
  assert.equal(all.code, 0, all.stderr);
  assert.match(all.stdout, /^\[deploy\] deploying web$/m);
  assert.match(all.stdout, /^tick 1$/m);
  // The last N, by instance id, with when each was written.
  const two = await drover(['logs', id, '-n', '2', '--timestamps'], { cwd: dir, env });
  assert.equal(two.code, 0, two.stderr);
  const lines = two.stdout.trim().split('\n');
  assert.equal(lines.length, 2);
  for (const l of lines) assert.match(l, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z tick \d+$/);
  // --since: nothing written in the future; everything written in the last hour.
  const future = await drover(['logs', id, '--since', new Date(Date.now() + 3_600_000).toISOString()], { cwd: dir, env });
  assert.equal(future.stdout, '');
  const hour = await drover(['logs', id, '--since', '1h', '-n', '10000'], { cwd: dir, env });
  assert.match(hour.stdout, /^\[deploy\] deploying web$/m);
  const badSince = await drover(['logs', id, '--since', 'yesterday'], { cwd: dir, env });
  assert.equal(badSince.code, 2);
  assert.match(badSince.stderr, /--since: expected a duration/);
  // --agent: the agent's own log, readable.
  const agent = await drover(['logs', id, '--agent', '-n', '10000'], { cwd: dir, env });
  assert.equal(agent.code, 0, agent.stderr);
  assert.match(agent.stdout, /^INFO /m);

  // -f: lines written after it started arrive.
  const f = spawn(process.execPath, [BIN, 'logs', id, '-f', '-n', '1'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => f.kill('SIGKILL'));
  let followed = '';
  f.stdout.on('data', (d: Buffer) => (followed += d.toString()));
  const firstTick = await until('the first followed line', async () => /tick (\d+)/.exec(followed)?.[1], 15_000);
  await until('newer lines while following', async () => {
    const ticks = [...followed.matchAll(/tick (\d+)/g)].map((m) => Number(m[1]));
    return ticks.length >= 4 && ticks.every((n, k) => n === Number(firstTick) + k);
  }, 15_000);
  f.kill('SIGINT');

  // Bounds: named, 400.
  for (const q of ['lines=0', 'lines=10001', 'source=other', 'since=soon']) {
    const r = await fetch(`${server.url}/v1/instances/${id}/logs?${q}`, { headers: { authorization: `Bearer ${server.token}` } });
    assert.equal(r.status, 400, q);
    assert.match(((await r.json()) as { error: { message: string } }).error.message, /^querystring\.(lines|source|since)/, q);
  }
  const none = await drover(['logs', 'i-00000000'], { cwd: dir, env });
  assert.equal(none.code, 1);
  assert.match(none.stderr, /no instance "i-00000000"/);

  // Stopped: the event gives the reason and the pointer; the lines are in its data only.
  await api('PUT', '/v1/apps/shop/roles/web/count', { count: 0 });
  const ev = await until('the stop event', async () => {
    const { events } = await api<{ events: Ev[] }>('GET', '/v1/events?app=shop&limit=1000');
    return events.find((e) => e.kind === 'instance.log' && e.instance === id);
  }, 30_000);
  assert.equal(ev.message.split('\n').length, 1, 'one line, not the output');
  assert.match(ev.message, new RegExp(`^${id} \\(web\\): stopped: .*; its output: \`drover logs ${id}\`$`));
  assert.ok(ev.data?.lines?.some((l) => /^tick \d+$/.test(l)), 'the lines are kept in data');
  await until('web is gone', async () => (await api<{ instances: Inst[] }>('GET', '/v1/instances?app=shop&role=web')).instances.length === 0, 30_000);
  // Gone, by role name: the newest gone instance's output, from its folder.
  const gone = await drover(['logs', 'web'], { cwd: dir, env });
  assert.equal(gone.code, 0, gone.stderr);
  assert.match(gone.stderr, new RegExp(`no live instance of web; the newest gone one is ${id}`));
  assert.match(gone.stdout, /^tick \d+$/m);

  // A role.log replaced by a symbolic link (to a secret of the controller's user, say) is not
  // followed: the controller answers with what the agent sent when the role stopped.
  const secret = join(dir, 'secret');
  writeFileSync(secret, 'SECRET-CONTENT\n', { mode: 0o600 });
  // The instance's folder is gone with it; its logs were kept under <data-dir>/logs/<id>/.
  assert.equal(existsSync(web!.workdir), false, 'the instance folder is removed once it is destroyed');
  const roleLog = join(web!.workdir, '..', '..', 'logs', id, 'role.log');
  unlinkSync(roleLog);
  symlinkSync(secret, roleLog);
  const r = await api<Logs>('GET', `/v1/instances/${id}/logs?lines=10000`);
  assert.equal(r.from, 'events');
  assert.ok(!r.lines.some((l) => l.text.includes('SECRET')), 'the linked file is not shown');
  assert.ok(r.lines.some((l) => /^tick \d+$/.test(l.text)));
});
