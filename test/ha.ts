/**
 * Two controllers (`drover controller` processes, `a` and `b`) on one private PostgreSQL and one
 * private RabbitMQ node, with the same admin token, for the active/standby tests. Everything
 * they and their instances start is killed and their folder removed afterwards.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../src/adapters/providers/index.js';
import { BIN, killAll, processesWithEnv, sleep, until } from './helpers.js';
import { startPostgres } from './postgres.js';
import { startRabbitMQ } from './rabbitmq.js';

export type Name = 'a' | 'b';
export type Leadership = { mode: string; role: string; epoch: number | null; leader: { url: string; pid: number } | null; self: { url: string } | null };
export type Call = <T>(method: string, path: string, body?: unknown) => Promise<{ status: number; body: T }>;

export const HA_TOKEN = 'ha-test-token-'.padEnd(40, 'x');

interface After {
  after(fn: () => unknown): void;
  diagnostic(message: string): void;
}

export interface ControllerPair {
  /** Holds the app folder and both data folders (`ctl-a`, `ctl-b`). */
  readonly root: string;
  readonly appDir: string;
  readonly url: (name: Name) => string;
  readonly dataDir: (name: Name) => string;
  readonly api: (name: Name) => Call;
  start(name: Name): Promise<void>;
  /** kill -9. */
  kill(name: Name): Promise<void>;
  /** The controller's pids (to tell them from the app's processes). */
  pids(): Set<number>;
  /** Which one leads now, once one does. */
  leader(timeoutMs?: number): Promise<{ name: Name; view: Leadership }>;
}

export function client(url: string): Call {
  return async <T>(method: string, path: string, body?: unknown) => {
    const r = await fetch(url + path, {
      method, headers: { authorization: `Bearer ${HA_TOKEN}`, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await r.text();
    return { status: r.status, body: (r.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text) as T };
  };
}

export async function controllerPair(t: After, opts: { leaseMs: number; env?: Record<string, string> }): Promise<ControllerPair> {
  const pg = await startPostgres(t);
  const broker = await startRabbitMQ(t, { management: true });
  const storeUrl = await pg.createDatabase('drover_ha');
  const root = mkdtempSync(join(tmpdir(), 'drover-ha-'));
  const appDir = join(root, 'app');
  mkdirSync(appDir);
  const procs = new Map<Name, ChildProcess>();
  const stderr = new Map<Name, string>();
  t.after(async () => {
    for (const p of procs.values()) p.kill('SIGKILL');
    killAll(processesWithEnv(root));
    await sleep(300);
    killAll(processesWithEnv(root));
    for (const [name, err] of stderr) if (err.trim()) t.diagnostic(`controller ${name} stderr (last lines):\n${err.trim().split('\n').slice(-8).join('\n')}`);
    rmSync(root, { recursive: true, force: true });
  });
  const ports: Record<Name, number> = { a: await freePort(), b: await freePort() };
  const url = (name: Name) => `http://127.0.0.1:${ports[name]}`;
  const dataDir = (name: Name) => join(root, `ctl-${name}`);
  const api = (name: Name) => client(url(name));
  return {
    root, appDir, url, dataDir, api,
    async start(name) {
      const p = spawn(process.execPath, [BIN, 'controller', '--data-dir', dataDir(name), '--port', String(ports[name])], {
        env: {
          ...process.env, DROVER_TOKEN: HA_TOKEN, DROVER_STORE_URL: storeUrl, DROVER_TRANSPORT_URL: broker.url, DROVER_TRANSPORT_MANAGEMENT_URL: broker.managementUrl,
          DROVER_LEADER_LEASE_MS: String(opts.leaseMs), DROVER_LOG_LEVEL: 'warn', ...opts.env,
        },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      p.stderr?.on('data', (d: Buffer) => stderr.set(name, ((stderr.get(name) ?? '') + d.toString()).slice(-4000)));
      procs.set(name, p);
      await until(`controller ${name} answers`, async () => (await fetch(`${url(name)}/v1/health`).catch(() => undefined))?.ok, 60_000);
    },
    async kill(name) {
      const p = procs.get(name);
      if (!p || p.exitCode !== null || p.signalCode !== null) return;
      const gone = new Promise((resolve) => p.once('exit', resolve));
      p.kill('SIGKILL');
      await gone;
    },
    pids: () => new Set([...procs.values()].map((p) => p.pid).filter((p): p is number => p !== undefined)),
    async leader(timeoutMs = 30_000) {
      return until('a controller leads', async () => {
        for (const name of ['a', 'b'] as const) {
          const r = await api(name)<Leadership>('GET', '/v1/controller').catch(() => undefined);
          if (r?.status === 200 && r.body.role === 'leader') return { name, view: r.body };
        }
        return undefined;
      }, timeoutMs, 50);
    },
  };
}
