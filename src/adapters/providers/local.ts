/**
 * The local provider: an instance is an agent process on this machine, in its own process group,
 * with its own working folder and a port on 127.0.0.1.
 *
 * Destroying an instance ends its whole process tree: the agent's process group, and every
 * process that carries the instance's marker in its environment (role processes run in process
 * groups of their own, and survive as orphans if the agent was killed with SIGKILL).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, openSync, closeSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CreateInstanceRequest, CreatedInstance, ExitInfo, InstanceHandle, Provider } from './types.js';

export interface LocalProviderOptions {
  /** Folder under which each instance gets `<id>/`. */
  readonly baseDir: string;
  /** @default '127.0.0.1' */
  readonly ip?: string;
  /** Time between SIGTERM and SIGKILL on destroy. @default 5000 */
  readonly killGraceMs?: number;
  /** Extra environment for agents (tests shorten timings with it). */
  readonly env?: Readonly<Record<string, string>>;
}

const MARKER = 'DROVER_INSTANCE_ID';

/**
 * The environment an agent inherits from the controller: the controller's own, less Drover's
 * settings (`DROVER_TOKEN` and every other `DROVER_*`), which are the controller's business —
 * except the agent tunables `DROVER_AGENT_*`, which are meant for it.
 */
function agentEnvBase(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(env)) if (!k.startsWith('DROVER_') || k.startsWith('DROVER_AGENT_')) out[k] = v;
  return out;
}

/** The agent's entry point, next to this module in both src/ (tsx) and dist/ (compiled). */
function agentCommand(): { file: string; execArgv: string[] } {
  const here = fileURLToPath(import.meta.url);
  const ext = here.endsWith('.ts') ? '.ts' : '.js';
  const file = fileURLToPath(new URL(`../../agent/main${ext}`, import.meta.url));
  return { file, execArgv: ext === '.ts' ? ['--import', import.meta.resolve('tsx')] : [] };
}

export async function freePort(ip = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, ip, () => {
      const addr = srv.address();
      srv.close(() => (addr && typeof addr === 'object' ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** Whether `pid` runs. A zombie does not: where PID 1 does not reap, orphans linger as zombies. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    if (process.platform === 'linux') return false;
  }
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Pids of every process of the instance: the agent carries `DROVER_INSTANCE_ID=<id>` in its
 * environment, the role's processes `DROVER_INSTANCE=<id>` (the agent keeps its own variables
 * from them).
 */
export function processesOfInstance(id: string): number[] {
  const needles = [`\0${MARKER}=${id}\0`, `\0DROVER_INSTANCE=${id}\0`];
  const out: number[] = [];
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return out;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    if (pid === process.pid) continue;
    try {
      const env = '\0' + readFileSync(`/proc/${e}/environ`, 'latin1');
      if (needles.some((n) => env.includes(n))) out.push(pid);
    } catch {
      // gone, or not ours to read
    }
  }
  return out;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class LocalProvider implements Provider {
  readonly name = 'local';
  private readonly children = new Map<string, ChildProcess>();
  private readonly reserved = new Set<number>();
  private readonly listeners: ((id: string, info: ExitInfo) => void)[] = [];
  private readonly ip: string;
  private readonly killGraceMs: number;

  constructor(private readonly opts: LocalProviderOptions) {
    this.ip = opts.ip ?? '127.0.0.1';
    this.killGraceMs = opts.killGraceMs ?? 5000;
  }

  onExit(listener: (instanceId: string, info: ExitInfo) => void): void {
    this.listeners.push(listener);
  }

  private async reservePort(): Promise<number> {
    for (;;) {
      const p = await freePort(this.ip);
      if (!this.reserved.has(p)) {
        this.reserved.add(p);
        return p;
      }
    }
  }

  async createInstance(req: CreateInstanceRequest): Promise<CreatedInstance> {
    const workdir = join(this.opts.baseDir, req.instanceId);
    mkdirSync(workdir, { recursive: true, mode: 0o700 });
    const port = await this.reservePort();
    const { file, execArgv } = agentCommand();
    const log = openSync(join(workdir, 'agent.log'), 'a', 0o600);
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, [...execArgv, file], {
        cwd: workdir,
        detached: true,
        // The key goes through a pipe: not in the environment (readable in /proc by the role's
        // processes), not in argv, not on disk.
        stdio: ['pipe', log, log],
        env: {
          ...agentEnvBase(process.env),
          ...this.opts.env,
          [MARKER]: req.instanceId,
          DROVER_CONTROLLER_URL: req.controllerUrl,
          DROVER_EPOCH: String(req.epoch),
          DROVER_WORKDIR: workdir,
          DROVER_IP: this.ip,
          DROVER_PORT: String(port),
        },
      });
    } finally {
      closeSync(log);
    }
    const pid = child.pid;
    if (pid === undefined) {
      this.reserved.delete(port);
      throw new Error(`could not start the agent for ${req.instanceId}`);
    }
    child.stdin?.on('error', () => undefined);
    // A transport's URL (the agent's own broker password) travels the same way, on the second line.
    child.stdin?.end(req.key + '\n' + (req.transportUrl ? req.transportUrl + '\n' : ''));
    this.children.set(req.instanceId, child);
    child.on('exit', (code, signal) => {
      this.children.delete(req.instanceId);
      for (const l of this.listeners) l(req.instanceId, { code, signal });
    });
    child.unref();
    return { ip: this.ip, port, workdir, providerRef: { pid, port } };
  }

  async destroyInstance(inst: InstanceHandle): Promise<void> {
    const pid = typeof inst.providerRef?.pid === 'number' ? inst.providerRef.pid : undefined;
    const port = typeof inst.providerRef?.port === 'number' ? inst.providerRef.port : undefined;
    const signalAll = (sig: NodeJS.Signals) => {
      if (pid !== undefined) {
        try {
          process.kill(-pid, sig);
        } catch {
          // group already gone
        }
      }
      for (const p of processesOfInstance(inst.id)) {
        try {
          process.kill(p, sig);
        } catch {
          // raced with its exit
        }
      }
    };
    signalAll('SIGTERM');
    const deadline = Date.now() + this.killGraceMs;
    while (Date.now() < deadline) {
      if ((pid === undefined || !alive(pid)) && processesOfInstance(inst.id).length === 0) break;
      await sleep(100);
    }
    signalAll('SIGKILL');
    for (let i = 0; i < 20 && processesOfInstance(inst.id).length > 0; i++) await sleep(50);
    // Our own child: wait until it is reaped, so its exit has been reported when this returns.
    const child = this.children.get(inst.id);
    if (child && child.exitCode === null && child.signalCode === null) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 2000);
        child.once('exit', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    if (port !== undefined) this.reserved.delete(port);
  }

  async isAlive(inst: InstanceHandle): Promise<boolean> {
    const pid = typeof inst.providerRef?.pid === 'number' ? inst.providerRef.pid : undefined;
    if (pid !== undefined && this.children.has(inst.id) && alive(pid)) return true;
    return processesOfInstance(inst.id).length > 0 || (pid !== undefined && alive(pid) && process.platform !== 'linux');
  }

  async close(): Promise<void> {
    this.children.clear();
    await Promise.resolve();
  }
}

/**
 * Every process of the instances kept under `baseDir` (`<dataDir>/instances`), found without a
 * controller or a store, for `drover down --force`: processes whose environment has
 * `DROVER_WORKDIR=<baseDir>/...` (agents and role processes), and the agents
 * (`DROVER_INSTANCE_ID=<id>`) and role processes (`DROVER_INSTANCE=<id>`) of every instance
 * with a folder there. Zombies and this process are left out.
 */
export function processesOfInstancesIn(baseDir: string): { pid: number; instance: string }[] {
  const dirs = [baseDir];
  try {
    const real = realpathSync(baseDir);
    if (real !== baseDir) dirs.push(real);
  } catch {
    // no instances folder: only the environment can tell
  }
  let ids: Set<string>;
  try {
    ids = new Set(readdirSync(baseDir));
  } catch {
    ids = new Set();
  }
  const out: { pid: number; instance: string }[] = [];
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return out;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    if (pid === process.pid || !alive(pid)) continue;
    let vars: string[];
    try {
      vars = readFileSync(`/proc/${e}/environ`, 'latin1').split('\0');
    } catch {
      continue; // gone, or not ours to read
    }
    let instance: string | undefined;
    for (const v of vars) {
      const eq = v.indexOf('=');
      const [k, val] = [v.slice(0, eq), v.slice(eq + 1)];
      if (k === 'DROVER_WORKDIR') {
        for (const d of dirs) if (val.startsWith(d + '/')) instance ??= val.slice(d.length + 1).split('/')[0];
      } else if ((k === MARKER || k === 'DROVER_INSTANCE') && ids.has(val)) instance ??= val;
    }
    if (instance) out.push({ pid, instance });
  }
  return out;
}
