/** Shared helpers of the integration suites: run the real CLI, find leftover processes. */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../src/adapters/providers/index.js';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const BIN = fileURLToPath(new URL('../bin/drover.js', import.meta.url));

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `drover ARGS` (the built CLI, as a user would) in `cwd`. */
export function drover(args: string[], opts: { cwd: string; env?: Record<string, string>; timeoutMs?: number }): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: opts.cwd,
      env: { ...process.env, DROVER_LOG_LEVEL: 'warn', ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`drover ${args.join(' ')} timed out\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, opts.timeoutMs ?? 120_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Pids of live (non-zombie) processes whose environment contains `needle` (e.g. a temp folder). */
export function processesWithEnv(needle: string): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'latin1');
      if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') continue;
      if (readFileSync(`/proc/${e}/environ`, 'latin1').includes(needle)) out.push(Number(e));
    } catch {
      // gone
    }
  }
  return out;
}

export function killAll(pids: number[]): void {
  for (const p of pids) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 30_000, everyMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
    await sleep(everyMs);
  }
}

/** A JSON client of a controller's REST API with its token; throws on a non-2xx answer. */
export function apiClient(server: { url: string; token: string }) {
  return async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const r = await fetch(server.url + path, {
      method,
      headers: { authorization: `Bearer ${server.token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    const data = (await r.json()) as T;
    if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(data)}`);
    return data;
  };
}

/**
 * A controller run as its own process (`drover controller`) in a fresh temp folder, so a test
 * can kill -9 it and start it again on the same data folder and port. Everything is removed
 * after the test, processes included.
 */
export async function killableController(
  t: { after: (fn: () => unknown) => void },
  prefix: string,
  env: Record<string, string> = {},
): Promise<{
  dir: string;
  dataDir: string;
  server: { url: string; token: string };
  start: () => Promise<void>;
  kill: () => Promise<void>;
}> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const dataDir = join(dir, '.drover');
  const port = await freePort();
  const server = { url: `http://127.0.0.1:${port}`, token: `${prefix}token-`.padEnd(40, 'x') };
  let ctl: ReturnType<typeof spawn> | undefined;
  t.after(async () => {
    ctl?.kill('SIGKILL');
    killAll(processesWithEnv(dir));
    await sleep(200);
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    dir, dataDir, server,
    start: async () => {
      ctl = spawn(process.execPath, [BIN, 'controller', '--data-dir', dataDir, '--port', String(port)], {
        env: { ...process.env, DROVER_TOKEN: server.token, DROVER_LOG_LEVEL: 'warn', ...env },
        stdio: 'ignore',
      });
      await until('the controller answers', async () => (await fetch(`${server.url}/v1/health`)).ok, 30_000);
    },
    kill: async () => {
      const c = ctl;
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      const gone = new Promise((resolve) => c.once('exit', resolve));
      c.kill('SIGKILL');
      await gone;
    },
  };
}

/**
 * Requests to `urls` in turn, every 20 ms, until stopped (by the test, or by `t.after`): how many
 * were made and what failed (a status other than 200, a reset, a 5 s timeout).
 */
export function steadyTraffic(urls: readonly string[], t: { after: (fn: () => unknown) => void }): { stop(): Promise<{ requests: number; failures: string[] }> } {
  let requests = 0;
  const failures: string[] = [];
  let running = true;
  const load = (async () => {
    while (running) {
      for (const u of urls) {
        try {
          const res = await fetch(u, { signal: AbortSignal.timeout(5000) });
          if (res.status !== 200) failures.push(`status ${res.status}`);
          await res.text();
        } catch (err) {
          failures.push(err instanceof Error ? err.message : String(err));
        }
        requests += 1;
      }
      await sleep(20);
    }
  })();
  const stop = async () => {
    running = false;
    await load;
    return { requests, failures };
  };
  t.after(stop);
  return { stop };
}

/** Instance ids of the live processes (agents and roles) made under these data folders, from their environment. */
export function processInstances(dataDirs: readonly string[]): Map<number, string> {
  const out = new Map<number, string>();
  for (const d of dataDirs) {
    for (const pid of processesWithEnv(`DROVER_WORKDIR=${join(d, 'instances')}`)) {
      try {
        const env = readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0');
        const id = env.find((e) => e.startsWith('DROVER_INSTANCE_ID='))?.split('=')[1] ?? env.find((e) => e.startsWith('DROVER_INSTANCE='))?.split('=')[1];
        if (id) out.set(pid, id);
      } catch {
        // gone
      }
    }
  }
  return out;
}
