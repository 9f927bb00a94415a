// drover-test: alone (loads Apache and MariaDB while rolling)
/**
 * examples/lamp end to end, on Debian's own MariaDB and Apache httpd: the app tier scales 1→3→1
 * and the Apache role rolls to a new release under load, with no failed or refused request (the
 * figures are printed); a row written through the stack survives a kill -9 of the db's agent
 * (the replacement takes member slot db-0 and its volume). Needs root (the roles run as mysql,
 * nobody and www-data) and the packages mariadb-server and apache2; with CI=true their absence
 * fails the suite.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { freePort } from '../src/adapters/providers/index.js';
import { startServer } from '../src/controller/index.js';
import { ROOT, apiClient, killAll, processesWithEnv, sleep, until } from './helpers.js';

const BINARIES = ['/usr/sbin/mariadbd', '/usr/bin/mariadb-install-db', '/usr/bin/mariadb', '/usr/bin/mariadb-admin', '/usr/sbin/apache2'];
const missing = BINARIES.filter((b) => !existsSync(b));
const why =
  process.getuid?.() !== 0
    ? 'needs root: the roles run as mysql, nobody and www-data'
    : missing.length
      ? `needs Debian's mariadb-server and apache2 (apt-get install mariadb-server apache2): missing ${missing.join(', ')}`
      : '';

type Outcome = { kind: 'ok'; status: number; body: string; release: string; ms: number } | { kind: 'refused' | 'failed'; error: string; ms: number };

/** One request on a new connection (no keep-alive), as a refused connection would show. */
function call(port: number, method: string, path: string, body?: string, headers: Record<string, string> = {}): Promise<Outcome> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers, agent: false, timeout: 20_000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => {
        const ms = performance.now() - t0;
        const status = res.statusCode ?? 0;
        resolve(status < 300 ? { kind: 'ok', status, body: text, release: String(res.headers['x-release'] ?? ''), ms } : { kind: 'failed', error: `status ${status}: ${text.slice(0, 200)}`, ms });
      });
      res.on('error', (e) => resolve({ kind: 'failed', error: e.message, ms: performance.now() - t0 }));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ kind: e.code === 'ECONNREFUSED' ? 'refused' : 'failed', error: `${e.code ?? ''} ${e.message}`, ms: performance.now() - t0 }));
    req.end(body);
  });
}

/** The members Apache balances over, from its balancer-manager (on the front's admin port). */
async function apacheMembers(adminPort: number): Promise<string[]> {
  // The page's own Referer, else balancer-manager logs a "cross-site access" error.
  const r = await call(adminPort, 'GET', '/balancer-manager', undefined, { referer: `http://127.0.0.1:${adminPort}/balancer-manager` });
  if (r.kind !== 'ok') throw new Error(r.error);
  return [...new Set([...r.body.matchAll(/>(http:\/\/[^<\s]+)<\/a>/g)].map((m) => m[1]!))].sort();
}

test('lamp: MariaDB, app, Apache: app 1→3→1 and an Apache roll under load, no failed request; a replaced db keeps its rows', { timeout: 240_000, skip: why && process.env.CI !== 'true' ? why : false }, async (t) => {
  assert.equal(why, '', why);
  const dir = mkdtempSync(join(tmpdir(), 'drover-lamp-'));
  t.after(() => {
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
  });
  // The roles' users read the app's files: a copy they can reach, wherever the checkout is.
  chmodSync(dir, 0o711);
  const appDir = join(dir, 'lamp');
  cpSync(join(ROOT, 'examples', 'lamp'), appDir, { recursive: true });
  chmodSync(appDir, 0o755);
  for (const sub of ['app', 'db', 'front']) chmodSync(join(appDir, sub), 0o755);

  const listen = await freePort();
  const file = readFileSync(join(appDir, 'drover.yaml'), 'utf8');
  assert.match(file, /listen: \{ http: 8080 \}/);
  assert.match(file, /RELEASE: "1"/);
  const yaml = (release: string) => file.replaceAll('8080', String(listen)).replace('RELEASE: "1"', `RELEASE: "${release}"`);

  const server = await startServer({ dataDir: join(dir, '.drover'), port: 0, token: 'lamp-test-token-'.padEnd(40, 'x'), heartbeatMs: 500, logger: pino({ level: 'warn' }) });
  t.after(() => server.close());
  const api = apiClient(server);
  type Inst = { id: string; role: string; state: string; slot?: string; address: string; ports?: Record<string, number>; agent: { pid: number | null } };
  const instances = async (role: string) => (await api<{ instances: Inst[] }>('GET', `/v1/instances?app=lamp&role=${role}`)).instances;
  const serving = async (role: string) => (await instances(role)).filter((i) => i.state === 'serving');
  const logsOf = async (role: string) => {
    const out: string[] = [];
    for (const i of await instances(role)) {
      const l = await api<{ lines: { text: string }[] }>('GET', `/v1/instances/${i.id}/logs`).catch(() => ({ lines: [] }));
      out.push(`${i.id} (${i.state}): ${l.lines.slice(-15).map((x) => x.text).join('\n  ')}`);
    }
    return out.join('\n');
  };

  const t0 = Date.now();
  await api('PUT', '/v1/apps/lamp', { yaml: yaml('1'), appDir });
  const front = await until('the stack serving', async () => (await serving('front'))[0], 90_000).catch(async (err: Error) => {
    throw new Error(`${err.message}\ndb: ${await logsOf('db')}\napp: ${await logsOf('app')}\nfront: ${await logsOf('front')}`);
  });
  console.log(`lamp: db, app and front serving ${((Date.now() - t0) / 1000).toFixed(1)} s after apply`);
  // Each role's processes run as its own user, on its own files: never the packages' services.
  const uid = (user: string) => Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim());
  const procs = processesWithEnv(dir).flatMap((pid) => {
    try {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      return [{ comm: readFileSync(`/proc/${pid}/comm`, 'utf8').trim(), argv: readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0'), uid: Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]) }];
    } catch {
      return [];
    }
  });
  const mariadbd = procs.filter((p) => p.comm === 'mariadbd');
  assert.equal(mariadbd.length, 1, JSON.stringify(procs));
  assert.equal(mariadbd[0]!.uid, uid('mysql'));
  assert.equal(mariadbd[0]!.argv[1], '--no-defaults', 'the package\'s /etc/mysql is not read');
  assert.ok(mariadbd[0]!.argv.includes(`--datadir=${join(dir, '.drover', 'volumes', 'lamp', 'db-0', 'data')}`), mariadbd[0]!.argv.join(' '));
  const apache = procs.filter((p) => p.comm === 'apache2');
  assert.ok(apache.length >= 2, 'Apache\'s parent and a child');
  assert.deepEqual([...new Set(apache.map((p) => p.uid))], [uid('www-data')]);
  assert.deepEqual([...new Set(procs.filter((p) => p.argv.some((a) => a.endsWith('/app/server.mjs'))).map((p) => p.uid))], [uid('nobody')]);
  const admin = front.ports?.admin;
  assert.ok(admin, `the front's admin port is reported: ${JSON.stringify(front.ports)}`);
  const first = await call(listen, 'GET', '/');
  assert.equal(first.kind, 'ok', first.kind === 'ok' ? '' : first.error);
  const visit = JSON.parse(first.kind === 'ok' ? first.body : '{}') as { app: string; hits: number };
  assert.equal(visit.app, (await serving('app'))[0]!.id);
  assert.ok(visit.hits >= 1);
  assert.equal(first.kind === 'ok' ? first.release : '', '1');

  // Bounded load: 4 clients, a new connection per request, through the port keeper and Apache.
  const results: Outcome[] = [];
  let stop = false;
  const clients = Array.from({ length: 4 }, async () => {
    while (!stop) results.push(await call(listen, 'GET', '/'));
  });
  const appsSeen = () => new Set(results.flatMap((r) => (r.kind === 'ok' ? [(JSON.parse(r.body) as { app: string }).app] : [])));
  try {
    await sleep(500);

    // app 1→3: Apache's update writes three BalancerMembers and reloads gracefully.
    await api('PUT', '/v1/apps/lamp/roles/app/count', { count: 3 });
    const three = await until('3 app members serving', async () => {
      const s = await serving('app');
      return s.length === 3 ? s : undefined;
    }, 60_000);
    const endpoints = three.map((i) => `http://${i.address}`).sort();
    await until('Apache balancing over the 3', async () => JSON.stringify(await apacheMembers(admin)) === JSON.stringify(endpoints), 30_000);
    await until('requests reaching all 3', async () => three.every((i) => appsSeen().has(i.id)), 15_000);

    // 3→1: the two leaving members are out of Apache before they drain.
    await api('PUT', '/v1/apps/lamp/roles/app/count', { count: 1 });
    const one = await until('1 app member left', async () => {
      const s = await instances('app');
      return s.length === 1 && s[0]!.state === 'serving' ? s : undefined;
    }, 60_000);
    assert.deepEqual(await apacheMembers(admin), [`http://${one[0]!.address}`]);

    // Roll the Apache role to release 2 under the same load.
    const r0 = Date.now();
    await api('PUT', '/v1/apps/lamp', { yaml: yaml('2'), appDir });
    const next = await until('the front rolled', async () => {
      const list = await instances('front');
      return list.length === 1 && list[0]!.id !== front.id && list[0]!.state === 'serving' ? list[0] : undefined;
    }, 90_000);
    const rollMs = Date.now() - r0;
    await sleep(500);
    stop = true;
    await Promise.all(clients);

    const ok = results.filter((r) => r.kind === 'ok');
    const refused = results.filter((r) => r.kind === 'refused');
    const failed = results.filter((r) => r.kind === 'failed');
    const ms = results.map((r) => r.ms).sort((a, b) => a - b);
    const pct = (p: number) => ms[Math.min(ms.length - 1, Math.floor((p / 100) * ms.length))]!.toFixed(1);
    console.log(
      `lamp under load: ${results.length} requests (app 1→3→1, then an Apache roll of ${(rollMs / 1000).toFixed(1)} s, ${front.id} → ${next.id}): ` +
        `${ok.length} ok, ${refused.length} refused, ${failed.length} failed; ${appsSeen().size} app members answered; latency p50 ${pct(50)} ms, p99 ${pct(99)} ms, max ${pct(100)} ms`,
    );
    const errors = (list: Outcome[]) => list.slice(0, 3).map((r) => (r.kind !== 'ok' ? r.error : '')).join('; ');
    assert.equal(refused.length, 0, `refused: ${errors(refused)}`);
    assert.equal(failed.length, 0, `failed: ${errors(failed)}`);
    assert.deepEqual([...new Set(ok.map((r) => (r.kind === 'ok' ? r.release : '')))].sort(), ['1', '2'], 'both Apache releases answered');
    assert.ok(appsSeen().size >= 3);
  } finally {
    stop = true;
    await Promise.all(clients);
  }

  // A row written through the stack survives a kill -9 of the db's agent: the replacement takes
  // slot db-0 and its volume, and the app follows the new db address (its update step).
  const note = `kept across a db replacement ${Date.now()}`;
  const put = await call(listen, 'PUT', '/notes/proof', note);
  assert.equal(put.kind === 'ok' ? put.status : put.error, 204);
  const hitsBefore = await call(listen, 'GET', '/');
  const db = (await serving('db'))[0]!;
  assert.equal(db.slot, 'db-0');
  const k0 = Date.now();
  process.kill(db.agent.pid!, 'SIGKILL');
  const replacement = await until('a replacement db serving', async () => (await serving('db')).find((i) => i.id !== db.id), 90_000);
  assert.equal(replacement.slot, 'db-0');
  const read = await until('the note read back through the stack', async () => {
    const r = await call(listen, 'GET', '/notes/proof');
    return r.kind === 'ok' ? r : undefined;
  }, 30_000);
  console.log(`lamp: db ${db.id} killed -9; ${replacement.id} served ${((Date.now() - k0) / 1000).toFixed(1)} s later with slot db-0's data`);
  assert.equal(read.body, note);
  const hitsAfter = await call(listen, 'GET', '/');
  const n = (r: Outcome) => (r.kind === 'ok' ? (JSON.parse(r.body) as { hits: number }).hits : NaN);
  assert.equal(n(hitsAfter), n(hitsBefore) + 1, 'the visit counter went on from where it was');
  const missingNote = await call(listen, 'GET', '/notes/nope');
  assert.equal(missingNote.kind === 'failed' ? missingNote.error.slice(0, 10) : missingNote.kind, 'status 404');

  await api('DELETE', '/v1/apps/lamp');
  await until('lamp is gone', async () => (await api<{ apps: unknown[] }>('GET', '/v1/apps')).apps.length === 0, 60_000);
  // Nothing of the stack is left: the port keeper lets the port go once no member is left.
  await until('the listen port is free again', async () => (await call(listen, 'GET', '/')).kind === 'refused', 15_000);
  assert.deepEqual(processesWithEnv(dir), [], 'no process of the stack is left');
});
