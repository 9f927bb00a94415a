/**
 * The local provider: an instance is an agent process on this machine, in its own process group,
 * with its own working folder and a port on 127.0.0.1.
 *
 * Destroying an instance ends its whole process tree: the agent's process group, and every
 * process that carries the instance's marker in its environment (role processes run in process
 * groups of their own, and survive as orphans if the agent was killed with SIGKILL).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CreateInstanceRequest, CreatedInstance, ExitInfo, InstanceHandle, Machine, Provider } from './types.js';

export interface LocalProviderOptions {
  /** Folder under which each instance gets `<id>/`. */
  readonly baseDir: string;
  /** @default '127.0.0.1' */
  readonly ip?: string;
  /** Time between SIGTERM and SIGKILL on destroy. @default 5000 */
  readonly killGraceMs?: number;
  /** Extra environment for agents (tests shorten timings with it). */
  readonly env?: Readonly<Record<string, string>>;
  /** How long an agent may take to say hello after it was started (it is a process: seconds). @default 60000 */
  readonly provisionTimeoutMs?: number;
  /**
   * Where the logs of destroyed instances are kept (`<id>/role.log`, `<id>/agent.log`): an
   * instance's folder is removed once it is gone, its logs moved here. @default `<baseDir>/../logs`
   */
  readonly logsDir?: string;
  /** How many destroyed instances' logs are kept, the newest; older ones are removed; 0 keeps every one. @default 200 */
  readonly keepLogs?: number;
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

/** What one scan of /proc saw of an instance: its agent (with the address it was started with) and every pid. */
interface SeenInstance {
  agent?: { pid: number; ip: string; port: number; workdir: string };
  pids: number[];
  /** A process of it runs with its working folder under this path (the provider's `baseDir`, when asked). */
  underBase: boolean;
}

/**
 * Every running instance process on this machine, by instance id, in one pass over /proc: an
 * agent carries `DROVER_INSTANCE_ID` and the address it was given, a role process
 * `DROVER_INSTANCE`. Zombies and this process are left out.
 */
function scanInstances(baseDirs: readonly string[]): Map<string, SeenInstance> {
  const out = new Map<string, SeenInstance>();
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
    let environ: string;
    try {
      environ = readFileSync(`/proc/${e}/environ`, 'latin1');
    } catch {
      continue; // gone, or not ours to read
    }
    if (!environ.includes('DROVER_INSTANCE')) continue;
    const env = new Map<string, string>();
    for (const v of environ.split('\0')) {
      const eq = v.indexOf('=');
      if (eq > 0 && v.startsWith('DROVER_')) env.set(v.slice(0, eq), v.slice(eq + 1));
    }
    const agentOf = env.get(MARKER);
    const id = agentOf ?? env.get('DROVER_INSTANCE');
    if (!id || !alive(pid)) continue;
    let seen = out.get(id);
    if (!seen) out.set(id, (seen = { pids: [], underBase: false }));
    seen.pids.push(pid);
    const workdir = env.get('DROVER_WORKDIR') ?? '';
    if (baseDirs.some((d) => workdir.startsWith(d + '/'))) seen.underBase = true;
    const port = Number(env.get('DROVER_PORT'));
    if (agentOf && Number.isInteger(port)) seen.agent = { pid, ip: env.get('DROVER_IP') ?? '', port, workdir };
  }
  return out;
}

export class LocalProvider implements Provider {
  readonly name = 'local';
  readonly provisionTimeoutMs: number;
  private readonly children = new Map<string, ChildProcess>();
  /** What this provider made and still runs, by instance id. */
  private readonly made = new Map<string, CreatedInstance>();
  /** Requests in flight, by instance id: a repeated request joins the first. */
  private readonly requests = new Map<string, Promise<Machine & CreatedInstance>>();
  private readonly reserved = new Set<number>();
  private readonly listeners: ((id: string, info: ExitInfo) => void)[] = [];
  private readonly ip: string;
  private readonly killGraceMs: number;
  private readonly baseDirs: string[];

  constructor(private readonly opts: LocalProviderOptions) {
    this.ip = opts.ip ?? '127.0.0.1';
    this.killGraceMs = opts.killGraceMs ?? 5000;
    this.provisionTimeoutMs = opts.provisionTimeoutMs ?? 60_000;
    this.baseDirs = [opts.baseDir];
    try {
      const real = realpathSync(opts.baseDir);
      if (real !== opts.baseDir) this.baseDirs.push(real);
    } catch {
      // not made yet: it is made under this very name
    }
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

  /**
   * Starts the instance's agent and answers once it is spawned (a process is up at once: the
   * machine is `running`; its agent says hello within a second or two). Idempotent: an agent
   * already running for this instance id — started by this provider or, before a restart, by
   * another — is answered with, not started twice.
   */
  request(req: CreateInstanceRequest): Promise<Machine & CreatedInstance> {
    let p = this.requests.get(req.instanceId);
    if (!p) {
      p = this.start(req).finally(() => this.requests.delete(req.instanceId));
      this.requests.set(req.instanceId, p);
    }
    return p;
  }

  private async start(req: CreateInstanceRequest): Promise<Machine & CreatedInstance> {
    const id = req.instanceId;
    const mine = this.made.get(id);
    if (mine && this.children.has(id)) return { id, state: 'running', ...mine };
    const seen = scanInstances(this.baseDirs).get(id);
    if (seen?.agent) return this.running(id, seen.agent);
    // What is left of an earlier agent of this id (role processes of a killed one) goes first.
    if (seen) await this.destroy({ id, providerRef: null });
    const workdir = join(this.opts.baseDir, id);
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
          [MARKER]: id,
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
      throw new Error(`could not start the agent for ${id}`);
    }
    child.stdin?.on('error', () => undefined);
    // A transport's URL (the agent's own broker password) travels the same way, on the second line.
    child.stdin?.end(req.key + '\n' + (req.transportUrl ? req.transportUrl + '\n' : ''));
    const made: CreatedInstance = { ip: this.ip, port, workdir, providerRef: { pid, port } };
    this.children.set(id, child);
    this.made.set(id, made);
    child.on('exit', (code, signal) => {
      this.children.delete(id);
      this.made.delete(id);
      for (const l of this.listeners) l(id, { code, signal });
    });
    child.unref();
    return { id, state: 'running', ...made };
  }

  private running(id: string, agent: NonNullable<SeenInstance['agent']>): Machine & CreatedInstance {
    return { id, state: 'running', ip: agent.ip, port: agent.port, workdir: agent.workdir, providerRef: { pid: agent.pid, port: agent.port } };
  }

  async describe(handles: readonly InstanceHandle[]): Promise<Machine[]> {
    const seen = scanInstances(this.baseDirs);
    return handles.map((h) => {
      // Our own child until its exit is seen (its environment is the agent's only once it exec'd).
      const mine = this.made.get(h.id);
      if (mine && this.children.has(h.id)) return { id: h.id, state: 'running', ...mine };
      const s = seen.get(h.id);
      if (s?.agent) return this.running(h.id, s.agent);
      // An agent gone but its role's processes left: not gone until they are.
      if (s) return { id: h.id, state: 'running', providerRef: h.providerRef };
      return { id: h.id, state: 'gone', providerRef: h.providerRef };
    });
  }

  /** The instances with a process running out of this provider's `baseDir`. */
  async list(): Promise<Machine[]> {
    const out = new Map<string, Machine>();
    for (const [id, s] of scanInstances(this.baseDirs)) {
      if (s.underBase) out.set(id, s.agent ? this.running(id, s.agent) : { id, state: 'running', providerRef: null });
    }
    for (const [id, m] of this.made) if (this.children.has(id)) out.set(id, { id, state: 'running', ...m });
    return [...out.values()];
  }

  /** Ends the instance's whole process tree and answers once it is gone (at most `killGraceMs` and a little). */
  async destroy(inst: InstanceHandle): Promise<void> {
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
    if (processesOfInstance(inst.id).length === 0) this.retire(inst.id);
  }

  /**
   * The instance is gone: its logs move to the logs folder (so `drover logs` still reads them)
   * and its folder is removed; only the newest `keepLogs` instances' logs are kept.
   */
  private retire(id: string): void {
    if (!/^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$/.test(id)) return;
    const workdir = join(this.opts.baseDir, id);
    if (!existsSync(workdir)) return;
    const logsDir = this.opts.logsDir ?? join(dirname(this.opts.baseDir), 'logs');
    try {
      const kept = join(logsDir, id);
      mkdirSync(kept, { recursive: true, mode: 0o700 });
      for (const f of ['role.log', 'agent.log']) {
        try {
          renameSync(join(workdir, f), join(kept, f));
        } catch {
          // not written (a spare has no role.log)
        }
      }
      rmSync(workdir, { recursive: true, force: true });
      pruneLogs(logsDir, this.opts.keepLogs ?? 200);
    } catch {
      // Left for the next destroy of this id, or `drover down`: a folder is not worth failing a destroy.
    }
  }

  async close(): Promise<void> {
    this.children.clear();
    this.made.clear();
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

/** Removes all but the newest `keep` folders of `logsDir` (by modification time). */
export function pruneLogs(logsDir: string, keep: number): void {
  let entries: { name: string; at: number }[];
  try {
    entries = readdirSync(logsDir).map((name) => ({ name, at: statSync(join(logsDir, name)).mtimeMs }));
  } catch {
    return;
  }
  if (keep <= 0 || entries.length <= keep) return;
  entries.sort((a, b) => b.at - a.at || (a.name < b.name ? 1 : -1));
  for (const e of entries.slice(keep)) rmSync(join(logsDir, e.name), { recursive: true, force: true });
}
