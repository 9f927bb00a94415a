/**
 * A private PostgreSQL cluster for a test file: `initdb` in a temp folder, `postgres` on a free
 * loopback port with its socket in that folder, password login (scram-sha-256) for one user.
 * Stopped and removed afterwards, also when the test fails.
 *
 * Needs PostgreSQL's server binaries (Debian: `apt-get install postgresql-15`). Without them the
 * suite is skipped with the reason, except with CI=true, where it fails. PostgreSQL refuses to
 * run as root: as root, the cluster runs as Debian's `postgres` user (or `nobody`), its folder
 * handed over to that user.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from '../src/adapters/providers/index.js';

/** Where initdb and postgres are: DROVER_PG_BIN, else Debian's folders (15 first), else PATH. */
export function postgresBinDir(): string | undefined {
  const fromEnv = process.env.DROVER_PG_BIN;
  if (fromEnv) return existsSync(join(fromEnv, 'postgres')) ? fromEnv : undefined;
  const base = '/usr/lib/postgresql';
  const versions = existsSync(base) ? readdirSync(base).filter((v) => /^\d+$/.test(v)).sort((a, b) => (a === '15' ? -1 : b === '15' ? 1 : Number(b) - Number(a))) : [];
  for (const v of versions) if (existsSync(join(base, v, 'bin', 'postgres'))) return join(base, v, 'bin');
  for (const d of (process.env.PATH ?? '').split(':')) if (d && existsSync(join(d, 'postgres')) && existsSync(join(d, 'initdb'))) return d;
  return undefined;
}

/**
 * `false` when the suite can run, else why it is skipped (node:test's `skip`). With CI=true it
 * never skips: {@link startPostgres} then fails, saying what is missing.
 */
export function postgresSkip(): string | false {
  if (postgresBinDir() || process.env.CI === 'true') return false;
  return 'PostgreSQL server binaries not found (apt-get install postgresql-15, or DROVER_PG_BIN=<bin folder>); skipping the PostgreSQL suite';
}

export interface PrivatePostgres {
  readonly port: number;
  readonly user: string;
  readonly password: string;
  /** The server's major version, e.g. 15. */
  readonly version: number;
  /** A URL of a database made for the caller (fresh, empty). */
  createDatabase(name?: string): Promise<string>;
  /** A URL for `database` (which must exist); `password` overrides the right one. */
  url(database: string, password?: string): string;
  /** What the server logged (its last lines), for a failing test's diagnostics. */
  log(): string;
  /** Stops the server (an outage), keeping its files. */
  pause(): Promise<void>;
  /** Starts it again, on the same port with the same data. */
  resume(): Promise<void>;
  stop(): Promise<void>;
}

/** The unprivileged account that runs the cluster when we are root. */
function serverAccount(): { uid: number; gid: number; name: string } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const passwd = readFileSync('/etc/passwd', 'utf8').split('\n').map((l) => l.split(':'));
  for (const name of ['postgres', 'nobody']) {
    const e = passwd.find((f) => f[0] === name);
    if (e && e[2] && e[3]) return { name, uid: Number(e[2]), gid: Number(e[3]) };
  }
  throw new Error('running as root and neither a postgres nor a nobody user exists to run PostgreSQL as');
}

/**
 * Starts a private cluster; `t.after` (or the caller) stops it. Throws, saying why, when the
 * binaries are missing or the server does not come up.
 */
export async function startPostgres(t?: { after: (fn: () => unknown) => void }): Promise<PrivatePostgres> {
  const bin = postgresBinDir();
  if (!bin) throw new Error('CI=true and PostgreSQL server binaries are not installed: .ci/run installs them (apt-get install postgresql-15)');
  const account = serverAccount();
  const dir = mkdtempSync(join(tmpdir(), 'drover-pg-'));
  const data = join(dir, 'data');
  const user = 'drover';
  const password = `pw-${randomBytes(12).toString('hex')}`;
  const lines: string[] = [];
  let proc: ChildProcess | undefined;
  let stopped: Promise<void> | undefined;
  const admin: pg.Pool[] = [];
  const killNow = () => proc?.kill('SIGKILL');
  process.once('exit', killNow);
  const halt = async () => {
    const p = proc;
    if (p && p.exitCode === null && p.signalCode === null) {
      const gone = new Promise((r) => p.once('exit', r));
      p.kill('SIGINT'); // fast shutdown: ends sessions, then stops
      const timer = setTimeout(() => p.kill('SIGKILL'), 10_000);
      await gone;
      clearTimeout(timer);
    }
  };
  const stop = () =>
    (stopped ??= (async () => {
      process.off('exit', killNow);
      await Promise.all(admin.map((p) => p.end().catch(() => undefined)));
      await halt();
      rmSync(dir, { recursive: true, force: true });
    })());
  t?.after(stop);
  try {
    const pwfile = join(dir, 'pwfile');
    writeFileSync(pwfile, password + '\n', { mode: 0o600 });
    const ids = account ? { uid: account.uid, gid: account.gid } : {};
    if (account) {
      chownSync(dir, account.uid, account.gid);
      chownSync(pwfile, account.uid, account.gid);
    }
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C', LC_ALL: 'C', ...(account ? { HOME: dir } : { HOME: process.env.HOME ?? dir }) };
    const init = spawnSync(join(bin, 'initdb'), ['-D', data, '-U', user, '--pwfile', pwfile, '--auth=scram-sha-256', '-E', 'UTF8', '--locale=C', '--no-sync'], {
      cwd: dir, env, encoding: 'utf8', timeout: 120_000, ...ids,
    });
    if (init.status !== 0) throw new Error(`initdb failed (${init.status ?? init.signal ?? init.error?.message}):\n${init.stdout}\n${init.stderr}`);
    rmSync(pwfile, { force: true });
    const launch = async (port: number): Promise<string | Error> => {
      proc = spawn(
        join(bin, 'postgres'),
        // A test database: durability off for speed; enough connections for racing suites.
        ['-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'max_connections=200'],
        { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'], ...ids },
      );
      const keep = (d: Buffer) => {
        for (const l of d.toString().split('\n')) if (l) lines.push(l);
        if (lines.length > 200) lines.splice(0, lines.length - 200);
      };
      proc.stdout?.on('data', keep);
      proc.stderr?.on('data', keep);
      return waitUp(proc, port, user, password, 30_000).catch((err: unknown) => err as Error);
    };
    for (let attempt = 0; ; attempt++) {
      const port = await freePort();
      lines.length = 0;
      const up = await launch(port);
      const p = proc!;
      if (!(up instanceof Error)) {
        const version = Number(/^(\d+)/.exec(up)?.[1] ?? 0);
        const url = (database: string, pw = password) => `postgres://${user}:${encodeURIComponent(pw)}@127.0.0.1:${port}/${encodeURIComponent(database)}`;
        const pool = new pg.Pool({ connectionString: url('postgres'), max: 2 });
        pool.on('error', () => undefined); // an idle connection cut by pause()
        admin.push(pool);
        return {
          port, user, password, version, url,
          createDatabase: async (name = `t_${randomBytes(6).toString('hex')}`) => {
            await pool.query(`create database ${pg.escapeIdentifier(name)}`);
            return url(name);
          },
          log: () => lines.join('\n'),
          pause: halt,
          resume: async () => {
            const again = await launch(port);
            if (again instanceof Error) throw new Error(`PostgreSQL did not start again: ${again.message}\n${lines.join('\n')}`);
          },
          stop,
        };
      }
      // Another process took the port between freePort and bind: try another, twice.
      const exited = p.exitCode !== null || p.signalCode !== null;
      if (!exited) {
        p.kill('SIGKILL');
        await new Promise((r) => p.once('exit', r));
      }
      if (attempt >= 2 || !lines.some((l) => /could not bind|could not create listen socket/i.test(l))) {
        throw new Error(`PostgreSQL did not start: ${up.message}\n${lines.join('\n')}`);
      }
    }
  } catch (err) {
    await stop();
    throw err;
  }
}

async function waitUp(p: ChildProcess, port: number, user: string, password: string, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    if (p.exitCode !== null || p.signalCode !== null) throw new Error(`postgres exited (${p.exitCode ?? p.signalCode})`);
    const c = new pg.Client({ host: '127.0.0.1', port, user, password, database: 'postgres', connectionTimeoutMillis: 2000 });
    try {
      await c.connect();
    } catch (err) {
      last = err;
      await new Promise((r) => setTimeout(r, 100));
      continue;
    }
    try {
      const r = await c.query<{ server_version: string }>('show server_version');
      return r.rows[0]?.server_version ?? '';
    } finally {
      await c.end().catch(() => undefined);
    }
  }
  throw new Error(`postgres did not accept connections within ${timeoutMs / 1000}s${last instanceof Error ? `: ${last.message}` : ''}`);
}
