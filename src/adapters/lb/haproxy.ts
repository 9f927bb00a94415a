/**
 * The haproxy driver: Drover writes HAProxy's base configuration, runs HAProxy in the
 * foreground (`-db`) as a child it supervises, and changes members and the host map through the
 * runtime API on a unix socket in the driver's folder. Nothing is ever reloaded:
 *
 * - a new member is a dynamic server: `add server`, `set server … health up`, `enable health`,
 *   then `set server … state ready|drain` (a dynamic server is born in maintenance);
 * - a state change is `set server … state ready|drain|maint` (maint adds `shutdown sessions
 *   server`, as `maint` cuts what the member still carries);
 * - a removal drains the server, waits in a reaper for `scur` 0, then `state maint` and
 *   `del server` (HAProxy refuses to delete a server with connections or not in maintenance);
 * - the host map is replaced atomically: `prepare map`, `add map @ver … <<payload`, `commit map`.
 *
 * If HAProxy ends unexpectedly it is started again with backoff, and the members and host map
 * are applied again: HAProxy forgets dynamic servers when it restarts.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { pino, type Logger } from 'pino';
import {
  BACKEND,
  HAPROXY_MIN_VERSION,
  isSupportedVersion,
  parseHaproxyVersion,
  parseShowStat,
  renderConfig,
  serverAddress,
  serverArgs,
  serverNameFor,
  type HaproxyVersion,
} from './haproxy-config.js';
import {
  compileLbOptions,
  HaproxyVersionError,
  LbError,
  LbInputError,
  parseAddress,
  validateHostMap,
  validateMembers,
  type CompiledLbOptions,
  type HostMap,
  type LbAddress,
  type LbMember,
  type LbMemberStats,
  type LbOptions,
  type LoadBalancerDriver,
  type MemberState,
} from './types.js';

const execFileP = promisify(execFile);
const REAP_EVERY_MS = 200;
const READY_TIMEOUT_MS = 10_000;
/** sun_path is 108 bytes on Linux, including the terminating NUL. */
const MAX_SOCKET_PATH = 107;

/** Debian installs haproxy in /usr/sbin, which is not on a normal user's PATH. */
const SBIN_FALLBACKS = ['/usr/sbin/haproxy', '/usr/local/sbin/haproxy'];

/**
 * Finds HAProxy and checks its version; throws a clear {@link LbError} when it is missing or too
 * old. `bin` is the executable that was found (the default `haproxy` also looks in the sbin folders).
 */
export async function requireHaproxy(bin = 'haproxy'): Promise<HaproxyVersion & { readonly bin: string }> {
  const candidates = bin === 'haproxy' ? [bin, ...SBIN_FALLBACKS] : [bin];
  for (const candidate of candidates) {
    let out: string;
    try {
      const r = await execFileP(candidate, ['-v'], { timeout: 5_000 });
      out = r.stdout + r.stderr;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw new LbError('lb_haproxy_failed', `"${candidate} -v" failed: ${(err as Error).message}`, { bin: candidate }, { cause: err });
    }
    const v = parseHaproxyVersion(out);
    if (!v) throw new LbError('lb_haproxy_failed', `cannot read a version in the output of "${candidate} -v": ${out.slice(0, 200)}`, { bin: candidate });
    if (!isSupportedVersion(v)) throw new HaproxyVersionError(v.text, `${HAPROXY_MIN_VERSION.major}.${HAPROXY_MIN_VERSION.minor}`, candidate);
    return { ...v, bin: candidate };
  }
  throw new LbError(
    'lb_haproxy_missing',
    `haproxy not found (looked for ${candidates.join(', ')}); install it (Debian: apt-get install -y haproxy) or set haproxyBin`,
    { bin },
  );
}

/** Sends one command on the runtime API and returns HAProxy's answer (the socket closes after it). */
export function runtimeCommand(socket: string, command: string, timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect(socket);
    let out = '';
    c.setEncoding('utf8');
    c.setTimeout(timeoutMs, () => c.destroy(new Error(`no answer to "${command.split('\n')[0]}" within ${timeoutMs} ms`)));
    c.on('data', (d: string) => (out += d));
    c.once('error', reject);
    c.once('close', (hadError) => {
      if (!hadError) resolve(out);
    });
    c.write(command + '\n');
  });
}

/** One HAProxy server as it exists in the running process. */
interface ServerRec {
  readonly name: string;
  readonly memberId: string;
  readonly address: string;
  /** The admin state HAProxy has for it. */
  state: MemberState;
  removing: boolean;
  removeSince: number;
  cut: boolean;
}

type Phase = 'new' | 'starting' | 'running' | 'restarting' | 'stopped';

export class HaproxyDriver implements LoadBalancerDriver {
  readonly name = 'haproxy' as const;
  readonly #opts: CompiledLbOptions;
  readonly #log: Logger;
  readonly #paths: { dir: string; cfg: string; socket: string; mapFile: string; pidFile: string };
  #bin = 'haproxy';
  #desired: readonly LbMember[] = [];
  #hostMap: ReadonlyMap<string, string> = new Map();
  /** By server name: what the running HAProxy has. */
  readonly #servers = new Map<string, ServerRec>();
  /** By member id: the member's live (not removing) server. */
  readonly #current = new Map<string, ServerRec>();
  #appliedMap: string | undefined;
  #phase: Phase = 'new';
  #child: ChildProcess | undefined;
  #address: LbAddress | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  #reaper: NodeJS.Timeout | undefined;
  #restartTimer: NodeJS.Timeout | undefined;
  #restarts = 0;
  #startedAt = 0;
  readonly #tail: string[] = [];
  readonly #killOnExit = () => this.#child?.kill('SIGKILL');

  constructor(options: LbOptions) {
    this.#opts = compileLbOptions(options);
    this.#log = (options.logger ?? pino()).child({ lb: 'haproxy' });
    if (!this.#opts.workdir) throw new LbInputError('workdir', 'the haproxy driver needs a folder of its own for its configuration and runtime socket');
    const dir = path.resolve(this.#opts.workdir);
    this.#paths = {
      dir,
      cfg: path.join(dir, 'haproxy.cfg'),
      socket: path.join(dir, 'admin.sock'),
      mapFile: path.join(dir, 'hosts.map'),
      pidFile: path.join(dir, 'haproxy.pid'),
    };
    if (Buffer.byteLength(this.#paths.socket) > MAX_SOCKET_PATH) {
      throw new LbInputError('workdir', `too long for a unix socket path (${this.#paths.socket} is over ${MAX_SOCKET_PATH} bytes)`);
    }
    if (/\s/.test(dir)) throw new LbInputError('workdir', 'must not contain spaces (it is written into HAProxy configuration lines)');
  }

  get address(): LbAddress | undefined {
    return this.#address;
  }

  async start(): Promise<LbAddress> {
    if (this.#address) return this.#address;
    if (this.#phase !== 'new') throw new LbError('lb_not_started', `the haproxy driver is ${this.#phase}; make a new driver`);
    this.#phase = 'starting';
    try {
      const version = await requireHaproxy(this.#opts.haproxyBin);
      this.#bin = version.bin;
      await mkdir(this.#paths.dir, { recursive: true });
      await this.#killStale();
      const port = this.#opts.listen.port || (await freePort(this.#opts.listen.host));
      await writeFile(this.#paths.cfg, renderConfig(this.#opts, port, { socket: this.#paths.socket, mapFile: this.#paths.mapFile }));
      process.on('exit', this.#killOnExit);
      await this.#spawn();
      this.#address = { host: this.#opts.listen.host, port };
      this.#phase = 'running';
      await this.#serial(() => this.#reconcile());
      this.#log.info({ address: this.#address, version: version.text, bin: this.#bin, workdir: this.#paths.dir }, 'haproxy load balancer listening');
      return this.#address;
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  async setMembers(members: readonly LbMember[]): Promise<void> {
    this.#desired = validateMembers(members);
    if (this.#phase === 'running') await this.#serial(() => this.#reconcile());
  }

  async setHostMap(map: HostMap): Promise<void> {
    this.#hostMap = validateHostMap(map);
    if (this.#phase === 'running') await this.#serial(() => this.#applyHostMap());
  }

  async stats(): Promise<LbMemberStats[]> {
    if (this.#phase !== 'running') throw new LbError('lb_not_started', `haproxy is ${this.#phase}`);
    const rows = new Map(parseShowStat(await this.#send('show stat'), BACKEND).map((r) => [r.name, r]));
    const order = [...this.#current.values(), ...[...this.#servers.values()].filter((s) => s.removing)];
    return order.map((s) => {
      const r = rows.get(s.name);
      return {
        id: s.memberId,
        address: s.address,
        state: s.state,
        removing: s.removing,
        activeConnections: r ? r.scur + r.qcur : 0,
        totalRequests: r?.stot ?? 0,
        failures: r?.failures ?? 0,
        ejected: r ? r.status.startsWith('DOWN') : false,
      };
    });
  }

  async stop(): Promise<void> {
    if (this.#phase === 'stopped') return;
    this.#phase = 'stopped';
    clearInterval(this.#reaper);
    clearTimeout(this.#restartTimer);
    this.#reaper = undefined;
    const child = this.#child;
    this.#child = undefined;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3_000);
      await exited;
      clearTimeout(timer);
    }
    process.off('exit', this.#killOnExit);
    this.#address = undefined;
    await rm(this.#paths.pidFile, { force: true });
    await rm(this.#paths.socket, { force: true });
  }

  /** Runs runtime-API work one piece at a time, so two changes never interleave their commands. */
  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(fn, fn);
    this.#queue = next.catch(() => undefined);
    return next;
  }

  async #cmd(command: string, expect?: RegExp): Promise<string> {
    const out = await this.#send(command);
    const text = out.trim();
    if (expect ? !expect.test(text) : text !== '') {
      throw new LbError('lb_runtime_api', `haproxy refused "${command.split('\n')[0]}": ${text || '(no answer)'}`, { command, answer: text });
    }
    return out;
  }

  /** A command whose answer the caller reads itself. */
  async #send(command: string): Promise<string> {
    try {
      return await runtimeCommand(this.#paths.socket, command);
    } catch (err) {
      throw new LbError('lb_runtime_api', `haproxy runtime API unreachable (${this.#paths.socket}): ${(err as Error).message}`, { command }, { cause: err });
    }
  }

  async #killStale(): Promise<void> {
    // A driver whose process was killed leaves its HAProxy behind, holding the port.
    const pid = Number(await readFile(this.#paths.pidFile, 'utf8').catch(() => ''));
    if (!Number.isInteger(pid) || pid <= 0) return;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (!cmdline.includes(this.#paths.cfg)) return;
    this.#log.warn({ pid }, 'stopping a haproxy left behind by an earlier driver in this folder');
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      return;
    }
    for (let i = 0; i < 40 && (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')); i++) await sleep(50);
  }

  async #spawn(): Promise<void> {
    // Entries are pushed through the runtime API once their servers exist.
    await writeFile(this.#paths.mapFile, '');
    await rm(this.#paths.socket, { force: true });
    this.#servers.clear();
    this.#current.clear();
    this.#appliedMap = undefined;
    this.#tail.length = 0;
    const child = spawn(this.#bin, ['-db', '-f', this.#paths.cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.#child = child;
    this.#startedAt = Date.now();
    for (const stream of [child.stdout, child.stderr]) createInterface({ input: stream }).on('line', (line) => this.#onLine(line));
    child.once('error', (err) => this.#log.error({ err }, 'haproxy could not be run'));
    child.once('exit', (code, signal) => this.#onExit(child, code, signal));
    if (child.pid) await writeFile(this.#paths.pidFile, `${child.pid}\n`);
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        const output = this.#tail.join(' | ') || 'no output';
        const listen = `${this.#opts.listen.host}:${this.#opts.listen.port}`;
        if (/cannot bind socket/.test(output)) throw new LbError('lb_listen_failed', `haproxy cannot listen on ${listen}: ${output}`, { output: [...this.#tail] });
        throw new LbError('lb_haproxy_failed', `haproxy ended while starting (${child.exitCode ?? child.signalCode}): ${output}`, { output: [...this.#tail] });
      }
      const ok = await runtimeCommand(this.#paths.socket, 'show info', 1_000).then(
        (out) => out.includes('Name: HAProxy'),
        () => false,
      );
      if (ok) return;
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new LbError('lb_haproxy_failed', `haproxy did not answer on ${this.#paths.socket} within ${READY_TIMEOUT_MS} ms: ${this.#tail.join(' | ')}`);
      }
      await sleep(50);
    }
  }

  #onLine(line: string): void {
    this.#tail.push(line);
    if (this.#tail.length > 20) this.#tail.shift();
    if (line.includes('[ALERT]')) this.#log.error({ haproxy: line }, 'haproxy alert');
    else if (/\[WARNING\].* is DOWN/.test(line)) this.#log.warn({ haproxy: line }, 'haproxy took a member out of rotation');
    else if (/\[WARNING\].* is UP, reason/.test(line)) this.#log.info({ haproxy: line }, 'haproxy put a member back in rotation');
    // The rest echoes the driver's own changes, which it logs itself.
    else this.#log.debug({ haproxy: line }, 'haproxy');
  }

  #onExit(child: ChildProcess, code: number | null, signal: string | null): void {
    if (child !== this.#child || this.#phase === 'stopped' || this.#phase === 'starting') return;
    this.#child = undefined;
    this.#phase = 'restarting';
    clearInterval(this.#reaper);
    this.#reaper = undefined;
    if (Date.now() - this.#startedAt > 30_000) this.#restarts = 0;
    const delay = Math.min(30_000, 500 * 2 ** this.#restarts++);
    this.#log.error({ code, signal, output: [...this.#tail], restartInMs: delay }, 'haproxy ended unexpectedly; starting it again');
    this.#restartTimer = setTimeout(() => {
      void this.#serial(async () => {
        if (this.#phase !== 'restarting') return;
        try {
          await this.#spawn();
          this.#phase = 'running';
          await this.#reconcile();
          this.#log.info('haproxy running again; members and host map applied');
        } catch (err) {
          this.#log.error({ err }, 'haproxy restart failed');
          const c = this.#child;
          if (c && c.exitCode === null) c.kill('SIGKILL');
          else if (c) this.#onExit(c, c.exitCode, c.signalCode);
        }
      });
    }, delay);
  }

  async #reconcile(): Promise<void> {
    const wanted = new Set<string>();
    for (const d of this.#desired) {
      wanted.add(d.id);
      let s = this.#current.get(d.id);
      if (s && s.address !== d.address) {
        await this.#beginRemoval(s);
        s = undefined;
      }
      let added = false;
      if (!s) {
        // A member put back while it was still draining out keeps its server and connections.
        s = [...this.#servers.values()].find((r) => r.removing && r.memberId === d.id && r.address === d.address);
        if (s) {
          s.removing = false;
          s.cut = false;
        } else {
          s = await this.#addServer(d);
          added = true;
        }
        this.#current.set(d.id, s);
      }
      await this.#setState(s, d.state, { quiet: added });
    }
    for (const [id, s] of this.#current) if (!wanted.has(id)) await this.#beginRemoval(s);
    await this.#applyHostMap();
    await this.#reap();
  }

  async #addServer(d: LbMember): Promise<ServerRec> {
    const name = serverNameFor(d.id, (n) => this.#servers.has(n));
    const where = `${BACKEND}/${name}`;
    await this.#cmd(`add server ${where} ${serverAddress(parseAddress(d.address)!)} ${serverArgs(this.#opts)}`, /New server registered/);
    const rec: ServerRec = { name, memberId: d.id, address: d.address, state: 'maint', removing: false, removeSince: 0, cut: false };
    this.#servers.set(name, rec);
    // Born with zero health, one failed probe would eject it; start it healthy instead.
    await this.#cmd(`set server ${where} health up`);
    await this.#cmd(`enable health ${where}`);
    this.#log.info({ member: d.id, server: name, address: d.address }, 'member added');
    return rec;
  }

  async #setState(s: ServerRec, state: MemberState, how: { cut?: boolean; quiet?: boolean } = {}): Promise<void> {
    if (s.state === state) return;
    const where = `${BACKEND}/${s.name}`;
    await this.#cmd(`set server ${where} state ${state}`);
    if (how.cut ?? state === 'maint') await this.#cmd(`shutdown sessions server ${where}`);
    if (!how.quiet) this.#log.info({ member: s.memberId, from: s.state, to: state }, 'member state changed');
    s.state = state;
  }

  async #beginRemoval(s: ServerRec): Promise<void> {
    if (this.#current.get(s.memberId) === s) this.#current.delete(s.memberId);
    if (s.removing) return;
    s.removing = true;
    s.removeSince = Date.now();
    if (s.state === 'ready') await this.#setState(s, 'drain', { quiet: true });
    this.#log.info({ member: s.memberId }, 'member removed from rotation; deleted once idle');
    if (!this.#reaper) {
      this.#reaper = setInterval(() => void this.#serial(() => this.#reap()).catch((err: unknown) => this.#log.warn({ err }, 'removing members failed; will retry')), REAP_EVERY_MS);
      this.#reaper.unref();
    }
  }

  /** Deletes removed servers once idle, and cuts those still busy at their deadline. */
  async #reap(): Promise<void> {
    const removing = [...this.#servers.values()].filter((s) => s.removing);
    if (removing.length === 0 || this.#phase !== 'running') {
      clearInterval(this.#reaper);
      this.#reaper = undefined;
      return;
    }
    const rows = new Map(parseShowStat(await this.#send('show stat'), BACKEND).map((r) => [r.name, r]));
    for (const s of removing) {
      const r = rows.get(s.name);
      if (!r) {
        this.#servers.delete(s.name);
        continue;
      }
      if (r.scur > 0 || r.qcur > 0) {
        if (!s.cut && Date.now() - s.removeSince >= this.#opts.removeTimeoutMs) {
          this.#log.warn({ member: s.memberId, active: r.scur }, 'member still busy at its removal deadline; cutting its connections');
          await this.#cmd(`set server ${BACKEND}/${s.name} state maint`);
          await this.#cmd(`shutdown sessions server ${BACKEND}/${s.name}`);
          s.state = 'maint';
          s.cut = true;
        }
        continue;
      }
      await this.#setState(s, 'maint', { cut: false, quiet: true });
      const out = await this.#send(`del server ${BACKEND}/${s.name}`);
      if (/Server deleted/.test(out)) {
        this.#servers.delete(s.name);
        this.#log.info({ member: s.memberId, server: s.name }, 'member removed');
      } else {
        this.#log.debug({ member: s.memberId, answer: out.trim() }, 'server not deletable yet');
      }
    }
  }

  async #applyHostMap(): Promise<void> {
    const entries: string[] = [];
    for (const [host, id] of [...this.#hostMap].sort(([a], [b]) => (a < b ? -1 : 1))) {
      const s = this.#current.get(id);
      if (s && s.state === 'ready' && !s.removing) entries.push(`${host} ${s.name}`);
    }
    const body = entries.join('\n');
    if (body === this.#appliedMap) return;
    const file = this.#paths.mapFile;
    const prepared = await this.#cmd(`prepare map ${file}`, /New version created: \d+/);
    const version = /New version created: (\d+)/.exec(prepared)![1]!;
    if (entries.length) await this.#cmd(`add map @${version} ${file} <<\n${body}\n`);
    await this.#cmd(`commit map @${version} ${file}`);
    // The file follows the runtime map, so what is on disk is what HAProxy routes (a reload reads
    // it); after a restart by this driver, the entries are pushed again once their servers exist.
    await writeFile(`${file}.tmp`, entries.length ? `${body}\n` : '');
    await rename(`${file}.tmp`, file);
    this.#appliedMap = body;
    this.#log.debug({ entries: entries.length }, 'host map applied');
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A port free right now. HAProxy cannot report the port it bound for :0, so it gets a fixed one. */
function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}
