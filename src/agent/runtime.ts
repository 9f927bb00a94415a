/**
 * The agent runtime: one per instance. It keeps a session with the controller through its
 * transport (transport.ts: a WebSocket, or queues on a broker), applies the
 * controller's orders for one role (deploy, wait for imports, start, health-check, update,
 * stop) and reports its whole status on every change and every heartbeat.
 *
 * The role outlives the controller: if the connection drops, the role keeps running with its
 * last imports while the agent reconnects, forever.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino, type Logger } from 'pino';
import {
  extraAutoPorts,
  fitLines,
  importEnv,
  listenTarget,
  resolvePorts,
  slotName,
  renderCommand,
  renderExports,
  renderTemplate,
  roleBuiltins,
  truncate,
  WIRE_LIMITS,
  type AgentMessage,
  type AgentStatus,
  type Assignment,
  type BuiltinValues,
  type SealedControllerMessage,
  type InstanceState,
  type LastExit,
  type Order,
  type ResolvedImports,
} from '../core/index.js';
import { canSwitchTo, makeRoleHome, resolveUser, type RunAs } from './user.js';
import { TenantRunner } from './tenants.js';
import { RoleBalancer } from './balancer.js';
import { describeExit, formatDuration, RoleLog } from './output.js';
import { ProcessSupervisor, type ProcessEvent } from './process.js';
import { groupMembers, killGroup, readEnviron, readEstablished } from './procfs.js';
import { HealthWatcher, type HealthEvent } from './probes.js';
import { instanceMetricSources, MetricScraper } from './scrape.js';
import { runScript, type ScriptResult } from './script.js';
import { VitalsSampler, type VitalsOptions } from './vitals.js';
import type { AgentTransport, AgentTransportOptions } from './transport.js';
import { WsAgentTransport } from './ws-transport.js';
import { PortLink } from './port-link.js';
import { BundleFetcher } from './bundle.js';

export interface AgentOptions {
  /**
   * Where the controller listens, e.g. `http://127.0.0.1:7420`; the agent dials `ws://…/v1/agent`
   * (the embedded transport) unless {@link transport} is given.
   */
  readonly controllerUrl: string;
  /**
   * How the agent reaches its controller, made from the agent's own settings (its id, key,
   * epoch, logger). @default a WebSocket to {@link controllerUrl}
   */
  readonly transport?: (common: AgentTransportOptions) => AgentTransport;
  readonly instanceId: string;
  /**
   * The instance's key, shared with the controller and never sent: the agent proves it holds it,
   * and obeys only a peer that proves the same (core/auth.ts).
   */
  readonly key: string;
  /** The instance's incarnation; lets the controller fence an older agent of the same id. */
  readonly epoch: number;
  /** The role's working directory: commands run here, `role.log` is written here. */
  readonly workdir: string;
  /** `${ip}` in templates. @default '127.0.0.1' */
  readonly ip?: string;
  /** The port allocated to this instance's role: `${port}`, `$PORT`, and what probes check. */
  readonly port: number;
  /**
   * Folder of the host's port keepers (`listen:`). @default `<workdir>/../../ports`: with the
   * local provider, `<data-dir>/ports`.
   */
  readonly portsDir?: string;
  /** Where app bundles are kept, shared by the agents of a host. @default `<workdir>/../.bundles` */
  readonly bundleCacheDir?: string;
  /** Folder of the host's volumes. @default `<workdir>/../../volumes`: `<data-dir>/volumes`. */
  readonly volumesDir?: string;
  /** Port keepers this agent spawns free their port after this long with no member. @default 5000 */
  readonly keeperIdleMs?: number;
  /** @default pino() to stdout */
  readonly logger?: Logger;

  /** First reconnect delay; doubles on every failed attempt. @default 250 */
  readonly reconnectMinMs?: number;
  /** @default 5000 */
  readonly reconnectMaxMs?: number;
  /** A connection attempt that takes longer is abandoned. @default 5000 */
  readonly handshakeTimeoutMs?: number;

  /** First restart delay of a crashed start command; doubles per consecutive failure. @default 1000 */
  readonly restartBackoffMs?: number;
  /** @default 30000 */
  readonly restartBackoffMaxMs?: number;
  /** A run that stayed up this long resets the failure count. @default 60000 */
  readonly stableAfterMs?: number;
  /** Consecutive restarts before the role is `failed`. @default 5 */
  readonly maxRestarts?: number;
  /** Without a health check, a start command counts as healthy after staying up this long. @default 300 */
  readonly healthGraceMs?: number;
  /** Probe interval until the first success. @default min(health.intervalMs, 500) */
  readonly startupProbeIntervalMs?: number;
  /** Time limit of `deploy`, `update` and `undeploy`. (`stop` has the role's stopTimeoutMs.) @default 600000 */
  readonly scriptTimeoutMs?: number;
  /** When fenced or shut down: time between SIGTERM and SIGKILL of the role. @default 1000 */
  readonly killTimeoutMs?: number;
  /** After a `stop` order, how long to keep trying to deliver the final status. @default 10000 */
  readonly finalStatusTimeoutMs?: number;
  /** While draining, how often the connections to the role's port are counted. @default 100 */
  readonly drainPollMs?: number;
  readonly vitals?: VitalsOptions;
}

type CompiledAgentOptions = Required<Omit<AgentOptions, 'logger' | 'vitals' | 'startupProbeIntervalMs' | 'transport' | 'portsDir' | 'volumesDir'>> &
  Pick<AgentOptions, 'vitals' | 'startupProbeIntervalMs'> & { portsDir: string; volumesDir: string };

function compile(o: AgentOptions): CompiledAgentOptions {
  return {
    ip: '127.0.0.1',
    reconnectMinMs: 250,
    reconnectMaxMs: 5000,
    handshakeTimeoutMs: 5000,
    restartBackoffMs: 1000,
    restartBackoffMaxMs: 30_000,
    stableAfterMs: 60_000,
    maxRestarts: 5,
    healthGraceMs: 300,
    scriptTimeoutMs: 600_000,
    killTimeoutMs: 1000,
    finalStatusTimeoutMs: 10_000,
    drainPollMs: 100,
    keeperIdleMs: 5000,
    portsDir: join(dirname(dirname(o.workdir)), 'ports'),
    volumesDir: join(dirname(dirname(o.workdir)), 'volumes'),
    ...withoutUndefined(o),
  } as CompiledAgentOptions;
}

/** Why {@link Agent.run} resolved. */
export interface AgentExit {
  /** `terminated`: a stop order was carried out. `refused`: the controller fenced this agent. `shutdown`: {@link Agent.shutdown}. */
  readonly reason: 'terminated' | 'refused' | 'shutdown';
  readonly message: string;
}

/**
 * What a role's commands inherit from the agent's environment: everything but Drover's own
 * variables (`DROVER_*`: the agent's settings, and anything of the controller's such as
 * `DROVER_TOKEN` that leaked into it). The role gets its own `DROVER_*` built-ins instead.
 */
function inheritedEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(env)) if (!k.startsWith('DROVER_')) out[k] = v;
  return out;
}
/** Order ids remembered for de-duplication; far more than one instance's lifetime needs. */
const MAX_APPLIED = 1000;

/** A drain in its waiting phase: out of rotation, the role still running, not yet told to stop. */
interface Drain {
  readonly reason: string;
  readonly timeoutMs: number;
  readonly deadline: number;
  /** Ends the wait early: the role's process exited, or the drain was cancelled. */
  readonly wake: AbortController;
  /** The process exited by itself: nothing is left to wait for, and nothing to serve again. */
  exited: boolean;
  /** A liveness failure during the wait; not acted on while draining, but it is if undrained. */
  unhealthy?: string;
}

export class Agent {
  readonly #o: CompiledAgentOptions;
  readonly #log: Logger;
  readonly #vitals: VitalsSampler;

  // What is reported.
  #state: InstanceState = 'spare';
  #message?: string;
  #exports?: Record<string, string>;
  #servingSince?: number;
  #lastExit?: LastExit;
  #appliedImportsVersion?: string;

  // The role.
  #phase: 'running' | 'stopping' | 'done' = 'running';
  #assignment?: Assignment;
  /** Aborts whatever the role is doing (deploy, waiting, update, stop scripts). */
  #roleAbort = new AbortController();
  #lifecycleRun?: Promise<void>;
  #importsWaiters = new Set<() => void>();
  /** The start step was reached: updates apply from here on, `stop` makes sense. */
  #started = false;
  #supervisor?: ProcessSupervisor;
  /** A load-balancer role's driver, in place of a start command. */
  #balancer?: RoleBalancer;
  #health?: HealthWatcher;
  #graceTimer?: NodeJS.Timeout;
  /** Why the current run is being restarted by the agent (a failed liveness check). */
  #livenessReason?: string;
  #updateRun?: Promise<void>;
  #updatePending = false;
  /** Failed `update` runs in a row; the next try waits 1 s, doubling up to a minute. */
  #updateFailures = 0;
  #updateRetry?: NodeJS.Timeout;
  readonly #stateWaiters = new Set<() => void>();
  #roleLog?: RoleLog;
  #drain?: Drain;
  /** Fetches and unpacks the app bundle of an assignment (bundle.ts). */
  readonly #bundles: BundleFetcher;
  /** The unpacked bundle, `${appDir}` once there is one. */
  #appDir?: string;
  /** The role's `user:`, resolved when it was assigned. */
  #runAs?: RunAs;
  /** The tenants of a role that hosts them. */
  readonly #tenants: TenantRunner;
  #scraper?: MetricScraper;
  #halting?: Promise<void>;
  /** Stop-phase scripts to end if the agent halts meanwhile. */
  readonly #haltAborts = new Set<AbortController>();
  /** Every port of the role's `ports:` by number, once chosen (the extra auto ports by this agent). */
  #ports?: Record<string, number>;
  /** The path of each of the role's volumes. */
  #volumes?: Record<string, string>;
  /** This member's links to the port keepers of the role's `listen:` ports. */
  readonly #links: PortLink[] = [];

  // The connection.
  readonly #applied = new Set<string>();
  readonly #transport: AgentTransport;
  #welcomed = false;
  /** The newest leader epoch heard: messages of an older (deposed) controller are ignored. */
  #leaderSeen = 0;
  #welcomeWaiters = new Set<() => void>();
  #heartbeat?: NodeJS.Timeout;

  #running = false;
  #resolveRun!: (exit: AgentExit) => void;
  readonly #done: Promise<AgentExit>;

  constructor(options: AgentOptions) {
    this.#o = compile(options);
    this.#log = (options.logger ?? pino()).child({ instance: options.instanceId });
    const common = {
      instanceId: options.instanceId,
      key: options.key,
      epoch: options.epoch,
      logger: this.#log,
      reconnectMinMs: this.#o.reconnectMinMs,
      reconnectMaxMs: this.#o.reconnectMaxMs,
      handshakeTimeoutMs: this.#o.handshakeTimeoutMs,
    };
    this.#transport = options.transport ? options.transport(common) : new WsAgentTransport({ ...common, controllerUrl: options.controllerUrl });
    this.#vitals = new VitalsSampler(options.vitals);
    this.#bundles = new BundleFetcher({
      controllerUrl: options.controllerUrl, instanceId: options.instanceId, key: options.key, log: this.#log,
      cacheDir: options.bundleCacheDir ?? join(dirname(options.workdir), '.bundles'),
    });
    this.#done = new Promise((resolve) => (this.#resolveRun = resolve));
    this.#tenants = new TenantRunner({
      spec: () => this.#assignment?.role.tenants,
      whenServing: (signal) => this.#whenServing(signal),
      run: async (step, command, extra, timeoutMs, signal) => {
        const c = this.#command(command);
        return runScript({
          command: c.command,
          env: { ...c.env, ...extra },
          cwd: this.#roleDir(),
          ...(this.#runAs ? { runAs: this.#runAs } : {}),
          timeoutMs,
          signal,
          log: this.#roleLog,
          logPrefix: `[${step}] `,
          tailLines: 20,
        });
      },
      changed: () => void this.#sendStatus(),
      sleep: (ms, signal) => sleep(ms, undefined, { signal }).catch(() => undefined),
    });
  }

  /** Resolves true once the role serves; false if it will not (failed, stopping). */
  async #whenServing(signal: AbortSignal): Promise<boolean> {
    for (;;) {
      if (signal.aborted || this.#phase !== 'running' || this.#state === 'failed') return false;
      if (this.#state === 'serving') return true;
      await this.#stateChanged(signal);
    }
  }

  /** Connects and serves orders until stopped, fenced or shut down. Call once. */
  run(): Promise<AgentExit> {
    if (!this.#running) {
      this.#running = true;
      mkdirSync(this.#o.workdir, { recursive: true });
      this.#killStrays();
      this.#log.info({ url: this.#transport.describe, epoch: this.#o.epoch }, 'agent starting');
      this.#vitals.sample();
      this.#transport.start({
        join: () => ({ type: 'join', pid: process.pid, status: this.status(), applied: [...this.#applied] }),
        message: (msg) => this.#onMessage(msg),
        down: () => {
          this.#welcomed = false;
          clearInterval(this.#heartbeat);
        },
      });
    }
    return this.#done;
  }

  /**
   * Ends the role's processes at once (no `stop`/`undeploy` scripts: the instance itself is
   * going away), tells the controller if it can, and resolves {@link run}.
   */
  shutdown(reason = 'agent shut down'): Promise<void> {
    return this.#halt({ reason: 'shutdown', message: reason });
  }

  /** The whole status, as the controller sees it. */
  status(): AgentStatus {
    return {
      state: this.#state,
      role: this.#assignment?.role.name,
      exports: this.#state === 'serving' ? this.#exports : undefined,
      importsVersion: this.#appliedImportsVersion,
      restarts: this.#supervisor?.restarts ?? 0,
      // Trimmed to what the controller accepts: a role printing megabytes must not cut us off.
      lastExit: this.#lastExit && { ...this.#lastExit, tail: fitLines(this.#lastExit.tail) },
      message: this.#message === undefined ? undefined : truncate(this.#message, WIRE_LIMITS.messageChars),
      servingSince: this.#state === 'serving' ? this.#servingSince : undefined,
      balancer: this.#balancer?.status(),
      tenants: this.#tenants.report(),
      ...(this.#ports && this.#assignment ? { ports: this.#ports } : {}),
    };
  }

  /** Pid (and process group) of the role's running start command. */
  get rolePid(): number | undefined {
    return this.#supervisor?.pid;
  }

  // ---- connection ------------------------------------------------------------------------

  #onMessage(msg: SealedControllerMessage): void {
    if (msg.leader < this.#leaderSeen) {
      this.#log.warn({ type: msg.type, leader: msg.leader, newest: this.#leaderSeen }, 'ignored a message from a deposed controller (an older leader epoch than the newest heard)');
      return;
    }
    if (msg.leader > this.#leaderSeen) {
      if (this.#leaderSeen > 0) this.#log.info({ from: this.#leaderSeen, to: msg.leader }, 'a new leader controller speaks');
      this.#leaderSeen = msg.leader;
    }
    switch (msg.type) {
      case 'welcome':
        this.#onWelcome(msg.heartbeatMs);
        return;
      case 'refused':
        this.#log.error({ reason: msg.reason }, 'controller refused this agent; stopping the role and exiting');
        void this.#halt({ reason: 'refused', message: `refused by the controller: ${msg.reason}` });
        return;
      case 'order':
        this.#onOrder(msg.order);
        return;
    }
  }

  #onWelcome(heartbeatMs: number): void {
    this.#welcomed = true;
    clearInterval(this.#heartbeat);
    this.#heartbeat = setInterval(() => this.#beat(), heartbeatMs);
    this.#log.info({ heartbeatMs }, 'welcomed by the controller');
    void this.#sendStatus();
    for (const w of this.#welcomeWaiters) w();
    this.#welcomeWaiters.clear();
  }

  #beat(): void {
    if (!this.#welcomed) return;
    if (this.#balancer) void this.#balancer.refresh().then(() => this.#sendStatus());
    else void this.#sendStatus();
  }

  /** Sends sealed; nothing is said to a peer that has not proved itself. */
  #send(msg: AgentMessage): Promise<boolean> {
    return this.#transport.send(msg);
  }

  #sendStatus(): Promise<boolean> {
    if (!this.#welcomed) return Promise.resolve(false);
    const port = this.#assignment ? this.#rolePort() : undefined;
    const vitals = this.#vitals.sample(this.#supervisor?.pid, port);
    const metrics = this.#scraper?.values();
    return this.#send({ type: 'status', status: this.status(), vitals: metrics ? { ...vitals, metrics } : vitals });
  }

  #sendLog(lines: readonly string[]): void {
    if (this.#welcomed && lines.length) void this.#send({ type: 'log', lines: fitLines(lines) });
  }

  /** Resolves once welcomed, or false after `ms`. */
  #waitWelcome(ms: number): Promise<boolean> {
    if (this.#welcomed) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#welcomeWaiters.delete(done);
        resolve(false);
      }, ms);
      const done = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      this.#welcomeWaiters.add(done);
    });
  }

  // ---- orders ----------------------------------------------------------------------------

  #onOrder(order: Order): void {
    if (this.#applied.has(order.id)) {
      this.#log.debug({ orderId: order.id }, 'order already applied; acknowledging again');
    } else {
      this.#applied.add(order.id);
      if (this.#applied.size > MAX_APPLIED) this.#applied.delete(this.#applied.values().next().value!);
      this.#log.info({ orderId: order.id, kind: order.kind }, 'order');
      try {
        this.#apply(order);
      } catch (err) {
        this.#log.error({ err, orderId: order.id }, 'failed to apply order');
      }
    }
    void this.#send({ type: 'ack', orderId: order.id });
  }

  #apply(order: Order): void {
    switch (order.kind) {
      case 'assign':
        this.#assign(order.assignment);
        return;
      case 'imports':
        this.#setImports(order.imports, order.importsVersion);
        return;
      case 'stop':
        void this.#stopRole(order.reason).catch((err: unknown) => this.#log.error({ err }, 'stop failed'));
        return;
      case 'drain':
        this.#beginDrain(order.reason, order.timeoutMs);
        return;
      case 'undrain':
        this.#undrain(order.reason);
        return;
      case 'tenantAdd':
        this.#tenants.add(order.tenant, order.fromInstance);
        return;
      case 'tenantRemove':
        this.#tenants.remove(order.tenant);
        return;
    }
  }

  #assign(a: Assignment): void {
    if (this.#phase !== 'running') {
      this.#log.warn({ role: a.role.name }, 'ignored assign: the agent is stopping');
      return;
    }
    const cur = this.#assignment;
    if (cur) {
      if (cur.role.name === a.role.name && cur.app === a.app) {
        // The same role again (a re-sent or re-issued order): only newer imports are news.
        if (a.importsVersion !== cur.importsVersion) this.#setImports(a.imports, a.importsVersion);
        return;
      }
      this.#log.error({ role: a.role.name, current: cur.role.name }, 'ignored assign to another role');
      this.#message = `ignored an order to assume role ${a.role.name}: already assigned role ${cur.role.name}`;
      void this.#sendStatus();
      return;
    }
    this.#assignment = a;
    this.#roleLog = new RoleLog(join(this.#o.workdir, 'role.log'));
    this.#setState('assigned', `assigned role ${a.role.name} of app ${a.app}`);
    this.#lifecycleRun = this.#lifecycle(this.#roleAbort.signal).catch((err: unknown) => {
      this.#log.error({ err }, 'role lifecycle failed');
      if (this.#phase === 'running') this.#setState('failed', `agent error: ${errorText(err)}`);
    });
  }

  #setImports(imports: ResolvedImports, importsVersion: string): void {
    const a = this.#assignment;
    if (!a || this.#phase !== 'running') {
      this.#log.warn({ importsVersion }, 'ignored imports: no role assigned');
      return;
    }
    this.#assignment = { ...a, imports, importsVersion };
    if (this.#state === 'waiting') {
      for (const w of this.#importsWaiters) w();
      this.#importsWaiters.clear();
    } else if (this.#started && this.#state !== 'failed' && importsVersion !== this.#appliedImportsVersion) {
      this.#scheduleUpdate();
    }
    // Before the start step nothing needs doing: start uses the latest imports.
  }

  // ---- role lifecycle --------------------------------------------------------------------

  /**
   * The app bundle of the assignment (docs/fleet.md), fetched or taken from the host's cache and
   * unpacked into `<workdir>/app`, which becomes `${appDir}`. False: the role failed (said why).
   */
  async #unpackBundle(signal: AbortSignal): Promise<boolean> {
    const a = this.#assignment!;
    if (a.bundleError !== undefined) {
      this.#setState('failed', `the app folder could not be bundled for this host: ${a.bundleError}`);
      return false;
    }
    if (!a.bundle) return true;
    this.#setState('deploying', `fetching app bundle ${a.bundle.sha256.slice(0, 12)} (${a.bundle.size} bytes)`);
    try {
      const got = await this.#bundles.prepare(a.app, a.bundle, join(this.#o.workdir, 'app'), signal);
      this.#appDir = got.dir;
      this.#sendLog([`[agent] app bundle ${a.bundle.sha256.slice(0, 12)} ${got.cached ? "taken from this host's cache" : 'downloaded'}, unpacked into ${got.dir}`]);
      return !signal.aborted;
    } catch (err) {
      if (signal.aborted) return false;
      this.#setState('failed', errorText(err));
      return false;
    }
  }

  async #lifecycle(signal: AbortSignal): Promise<void> {
    const role = this.#assignment!.role;
    if (role.user !== undefined) {
      try {
        const as = resolveUser(role.user);
        if (!canSwitchTo(as)) throw new Error(`user: ${role.user} needs the agent to run as root (it runs as uid ${process.getuid?.()})`);
        this.#runAs = as;
        makeRoleHome(this.#roleDir(), as);
      } catch (err) {
        this.#setState('failed', `cannot run role ${role.name} as user ${role.user}: ${errorText(err)}`);
        return;
      }
    }
    try {
      await this.#prepareRole();
    } catch (err) {
      if (signal.aborted) return;
      this.#setState('failed', `cannot take role ${role.name}: ${errorText(err)}`);
      return;
    }
    if (signal.aborted) return;
    if (!(await this.#unpackBundle(signal))) return;
    this.#setState('deploying', role.deploy ? 'running deploy' : 'nothing to deploy');
    if (role.deploy) {
      const r = await this.#step('deploy', role.deploy, this.#o.scriptTimeoutMs, signal);
      if (signal.aborted) return;
      if (r.code !== 0) {
        this.#stepFailed('deploy', r);
        return;
      }
    }
    for (;;) {
      const missing = this.#missingImports();
      if (missing.length === 0) break;
      this.#setState('waiting', `waiting for ${missing.join(', ')}`);
      await this.#importsChanged(signal);
      if (signal.aborted) return;
    }
    this.#started = true;
    this.#appliedImportsVersion = this.#assignment!.importsVersion;
    if (role.start) this.#startProcess(role.start);
    else if (role.loadBalancer) await this.#startBalancer(signal);
    else this.#serve();
  }

  /**
   * Chooses the role's extra auto ports, makes its volumes' folders and joins the port keepers of
   * its `listen:` ports, before anything of the role runs. Throws why it cannot.
   */
  async #prepareRole(): Promise<void> {
    const a = this.#assignment!;
    const role = a.role;
    if (role.ports) {
      const taken = new Set<number>([this.#o.port, ...Object.values(role.ports).filter((v): v is number => typeof v === 'number')]);
      const extra: Record<string, number> = {};
      for (const name of extraAutoPorts(role)) {
        let p: number;
        do p = await freePort(this.#o.ip);
        while (taken.has(p));
        taken.add(p);
        extra[name] = p;
      }
      const ports = resolvePorts(role, this.#o.port, extra);
      if (!ports) throw new Error('could not choose its ports');
      // A fixed port bound elsewhere on the host (another member of the role, another program):
      // said now, by name, rather than as the role's own bind error later.
      for (const [name, v] of Object.entries(role.ports)) {
        if (typeof v === 'number' && !(await canBind(this.#o.ip, v))) {
          throw new Error(`ports.${name}: port ${v} on ${this.#o.ip} is in use (another member of role ${role.name} on this host, or another program)`);
        }
      }
      this.#ports = ports;
    }
    if (role.volumes?.length) {
      if (a.slot === undefined) throw new Error(`it has volumes (${role.volumes.join(', ')}) but the order gave no member slot`);
      const volumes: Record<string, string> = {};
      for (const name of role.volumes) {
        const dir = join(this.#o.volumesDir, a.app, slotName(role.name, a.slot), name);
        // Another user's: theirs, and the folders above it traversable (never listable), as for its home.
        if (this.#runAs) makeRoleHome(dir, this.#runAs);
        else mkdirSync(dir, { recursive: true, mode: 0o700 });
        volumes[name] = dir;
      }
      this.#volumes = volumes;
      this.#log.info({ slot: slotName(role.name, a.slot), volumes }, 'volumes attached');
    }
    const builtins = this.#builtins();
    for (const l of role.listen ?? []) {
      const link = new PortLink({
        dir: this.#o.portsDir, ip: this.#o.ip, port: l.port, app: a.app, role: role.name, instance: this.#o.instanceId,
        backend: `${this.#o.ip}:${listenTarget(l, builtins)}`, idleExitMs: this.#o.keeperIdleMs,
        log: (msg) => this.#log.info(msg),
      });
      this.#links.push(link);
      try {
        await link.open();
      } catch (err) {
        throw new Error(`listen ${l.port}: ${errorText(err)}`, { cause: err });
      }
    }
  }

  /** `${port}`: what probes check, vitals and drains count connections on. */
  #rolePort(): number {
    return this.#ports ? Number(this.#builtins().port) : this.#o.port;
  }

  async #startBalancer(signal: AbortSignal): Promise<void> {
    const a = this.#assignment!;
    const spec = a.role.loadBalancer!;
    this.#setState('starting', `starting the ${spec.driver} load balancer`);
    const lb = new RoleBalancer(spec, { ip: this.#o.ip, port: this.#o.port, workdir: this.#o.workdir, logger: this.#log });
    try {
      await lb.start(a.imports);
      // Members that came or went while it started: the update loop skipped them (no balancer yet).
      const latest = this.#assignment!;
      if (latest.imports !== a.imports) await lb.update(latest.imports);
      this.#balancer = lb;
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      await lb.stop().catch(() => undefined);
      if (signal.aborted) return;
      this.#lastExit = { code: null, signal: null, tail: [why] };
      this.#sendLog([`[loadBalancer] ${why}`]);
      this.#setState('failed', `the ${spec.driver} load balancer could not start: ${why}`);
      return;
    }
    if (signal.aborted) return;
    this.#serve();
  }

  /** Required imports with no member yet, as written in the app file. */
  #missingImports(): string[] {
    const a = this.#assignment!;
    const missing = a.role.imports.filter((i) => !i.optional && (a.imports[i.role]?.length ?? 0) === 0);
    return [...new Set(missing.map((i) => i.raw))];
  }

  #importsChanged(signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal.aborted) return resolve();
      const done = (): void => {
        this.#importsWaiters.delete(done);
        signal.removeEventListener('abort', done);
        resolve();
      };
      this.#importsWaiters.add(done);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  #startProcess(command: string): void {
    const role = this.#assignment!.role;
    const c = this.#command(command);
    this.#setState('starting', 'start command launched; waiting for it to become healthy');
    const sup = new ProcessSupervisor({
      command: c.command,
      env: c.env,
      cwd: this.#roleDir(),
      ...(this.#runAs ? { runAs: this.#runAs } : {}),
      log: this.#roleLog,
      restartBackoffMs: this.#o.restartBackoffMs,
      restartBackoffMaxMs: this.#o.restartBackoffMaxMs,
      stableAfterMs: this.#o.stableAfterMs,
      maxRestarts: this.#o.maxRestarts,
      stopTimeoutMs: role.stopTimeoutMs,
      onEvent: (e) => this.#onProcessEvent(e),
    });
    this.#supervisor = sup;
    sup.start();
  }

  #onProcessEvent(e: ProcessEvent): void {
    if (this.#phase !== 'running') return;
    switch (e.type) {
      case 'spawned': {
        this.#log.info({ pid: e.pid }, 'start command running');
        this.#writePgidFile(e.pid);
        this.#livenessReason = undefined;
        this.#watchHealth();
        const restarts = this.#supervisor?.restarts ?? 0;
        if (restarts > 0) this.#setState('starting', `start command restarted (restart ${restarts})`);
        return;
      }
      case 'exited': {
        const why = this.#roleExited(e.exit);
        if (why === undefined) return;
        const message = `${why}, restarting in ${formatDuration(e.restartInMs)}`;
        this.#log.warn({ exit: e.exit.code, signal: e.exit.signal, failures: e.failures }, message);
        this.#sendLog([`[start] ${message}`, ...e.exit.tail]);
        this.#setState('starting', message);
        return;
      }
      case 'failed': {
        const why = this.#roleExited(e.exit);
        if (why === undefined) return;
        const message = `${why}; gave up after ${this.#supervisor?.restarts ?? 0} restarts`;
        this.#log.error({ exit: e.exit.code, signal: e.exit.signal }, message);
        this.#sendLog([`[start] ${message}`, ...e.exit.tail]);
        this.#setState('failed', message);
        return;
      }
      case 'stopped':
        return;
    }
  }

  #watchHealth(): void {
    this.#unwatchHealth();
    const spec = this.#assignment!.role.health;
    if (!spec) {
      this.#graceTimer = setTimeout(() => this.#serve(), this.#o.healthGraceMs);
      return;
    }
    // An exec probe is a command like the others: its values come as quoted variables.
    const exec = spec.exec !== undefined ? this.#command(spec.exec) : undefined;
    this.#health = new HealthWatcher({
      spec: exec ? { ...spec, exec: exec.command } : spec,
      target: { host: this.#o.ip, port: this.#rolePort(), env: exec?.env ?? this.#env(), cwd: this.#roleDir(), ...(this.#runAs ? { runAs: this.#runAs } : {}) },
      startupIntervalMs: this.#o.startupProbeIntervalMs,
      onEvent: (ev) => this.#onHealth(ev),
    });
    this.#health.start();
  }

  #unwatchHealth(): void {
    clearTimeout(this.#graceTimer);
    this.#health?.stop();
    this.#health = undefined;
  }

  #onHealth(ev: HealthEvent): void {
    if (this.#phase !== 'running') return;
    switch (ev.type) {
      case 'passed':
        this.#serve();
        return;
      case 'pending':
        // Quietly: the next heartbeat carries it; a status per probe would be noise.
        if (!this.#drain) this.#message = `waiting for the health check to pass: ${ev.reason}`;
        return;
      case 'failed': {
        const why = `health check failed ${ev.failures} times: ${ev.reason}`;
        this.#withdraw();
        if (this.#drain) {
          // A restart would cut off the very work the drain waits for.
          this.#log.warn(`${why}; not restarting while draining`);
          this.#drain.unhealthy = why;
          return;
        }
        this.#log.warn(why);
        this.#livenessReason = why;
        this.#setState('starting', `${why}; restarting the start command`);
        this.#supervisor?.restart(why);
        return;
      }
    }
  }

  /**
   * The start command ended (to be restarted, or for good). Returns why, in words, or undefined
   * while draining, where an exit is the drain finishing rather than a failure.
   */
  #roleExited(exit: LastExit): string | undefined {
    if (this.#drain) {
      this.#exitedWhileDraining(this.#drain, exit);
      return undefined;
    }
    this.#unwatchHealth();
    this.#withdraw();
    this.#lastExit = exit;
    return this.#livenessReason ?? `start command ${describeExit(exit.code, exit.signal)}`;
  }

  #serve(): void {
    if (this.#phase !== 'running') return;
    this.#exports = this.#renderExports();
    this.#servingSince = Date.now();
    this.#startScraper();
    if (this.#drain) {
      // Healthy (again), but out of rotation until an undrain says otherwise.
      this.#drain.unhealthy = undefined;
      return;
    }
    this.#setState('serving', 'serving');
  }

  /** Out of rotation: the exports are no longer published. */
  #withdraw(): void {
    this.#exports = undefined;
    this.#servingSince = undefined;
    this.#scraper?.stop();
    this.#scraper = undefined;
  }

  #startScraper(): void {
    if (this.#scraper) return;
    const sources = instanceMetricSources(this.#assignment!.role);
    if (sources.length === 0) return;
    this.#scraper = new MetricScraper({ sources, host: this.#o.ip, port: this.#rolePort(), logger: this.#log });
    this.#scraper.start();
  }

  #renderExports(): Record<string, string> {
    const a = this.#assignment!;
    return renderExports(a.role, this.#builtins(), a.imports);
  }

  // ---- updates ---------------------------------------------------------------------------

  /** One update at a time; imports that arrive meanwhile are coalesced so the latest win. */
  #scheduleUpdate(): void {
    this.#updatePending = true;
    this.#updateRun ??= this.#updates().finally(() => (this.#updateRun = undefined));
  }

  async #updates(): Promise<void> {
    const signal = this.#roleAbort.signal;
    while (this.#updatePending && this.#phase === 'running' && this.#state !== 'failed') {
      // `update` never runs beside a start that has not finished: the start command is
      // launched with the imports of its time, and the update follows once it serves.
      while (this.#state === 'starting' && this.#assignment?.role.update && !signal.aborted) await this.#stateChanged(signal);
      if (signal.aborted || this.#phase !== 'running' || (this.#state as InstanceState) === 'failed') return;
      this.#updatePending = false;
      clearTimeout(this.#updateRetry);
      const a = this.#assignment!;
      const version = a.importsVersion;
      if (version === this.#appliedImportsVersion) continue;
      // A restart after this point starts with the new imports, whatever `update` does.
      if (a.role.start) {
        const c = this.#command(a.role.start);
        this.#supervisor?.reconfigure(c.command, c.env);
      }
      if (this.#balancer) {
        try {
          await this.#balancer.update(a.imports);
        } catch (err) {
          // Not applied: the controller keeps seeing the old version, and we try again shortly.
          this.#log.warn({ err }, 'the balancer refused the new members; retrying in 1s');
          setTimeout(() => this.#scheduleUpdate(), 1000).unref();
          continue;
        }
      }
      if (this.#state === 'serving') this.#exports = this.#renderExports();
      if (!a.role.update) {
        this.#appliedImportsVersion = version;
        void this.#sendStatus();
        continue;
      }
      const r = await this.#step('update', a.role.update, this.#o.scriptTimeoutMs, signal);
      if (signal.aborted || this.#phase !== 'running') return;
      if (r.code === 0) {
        this.#appliedImportsVersion = version;
        this.#updateFailures = 0;
        if (this.#message?.startsWith('update ')) this.#message = `imports ${version} applied`;
      } else {
        // Still serving with what it had; the controller sees the old importsVersion and why,
        // and the same imports are tried again with backoff until they apply (or newer come).
        this.#updateFailures += 1;
        const delay = Math.min(1000 * 2 ** (this.#updateFailures - 1), 60_000);
        const message = `update ${stepOutcome(r, this.#o.scriptTimeoutMs)} (attempt ${this.#updateFailures}); still running with the previous imports, retrying in ${formatDuration(delay)}`;
        this.#log.warn({ importsVersion: version, tail: r.tail }, message);
        this.#sendLog([`[update] ${message}`, ...r.tail]);
        this.#message = message;
        this.#updateRetry = setTimeout(() => this.#scheduleUpdate(), delay);
        this.#updateRetry.unref();
      }
      void this.#sendStatus();
    }
  }

  // ---- draining --------------------------------------------------------------------------

  #beginDrain(reason: string, timeoutMs: number): void {
    if (this.#phase !== 'running') {
      this.#log.info('ignored drain: the role is already being stopped');
      return;
    }
    if (this.#drain) {
      this.#log.info('ignored drain: already draining');
      return;
    }
    if (!this.#roleRunning()) {
      const how = this.#assignment ? 'nothing to drain: the role is not running' : 'nothing to drain: no role';
      void this.#stopRole(reason, how).catch((err: unknown) => this.#log.error({ err }, 'stop failed'));
      return;
    }
    const d: Drain = { reason, timeoutMs, deadline: Date.now() + timeoutMs, wake: new AbortController(), exited: false };
    this.#drain = d;
    const open = this.#connections();
    this.#setState('draining', drainMessage(open, timeoutMs));
    void this.#drainThenStop(d, open).catch((err: unknown) => this.#log.error({ err }, 'drain failed'));
  }

  /** Whether the role has work that could be in flight: started, and its process (if any) up. */
  #roleRunning(): boolean {
    if (!this.#started || this.#state === 'failed') return false;
    const sup = this.#supervisor;
    return !sup || sup.state === 'running';
  }

  #connections(): number | undefined {
    return readEstablished(this.#rolePort(), this.#o.vitals?.procRoot);
  }

  async #drainThenStop(d: Drain, open: number | undefined): Promise<void> {
    this.#log.info({ connections: open, timeoutMs: d.timeoutMs }, 'draining');
    // Unknown (no /proc/net/tcp) is waited out like open connections: in-flight work may be there.
    while (this.#drain === d && !d.wake.signal.aborted && open !== 0) {
      const left = d.deadline - Date.now();
      if (left <= 0) break;
      await sleep(Math.min(this.#o.drainPollMs, left), undefined, { signal: d.wake.signal }).catch(() => undefined);
      const now = this.#connections();
      // Quietly: the next heartbeat carries it.
      if (this.#drain === d && now !== open) this.#message = drainMessage(now, d.timeoutMs);
      open = now;
    }
    if (this.#drain !== d) return; // undrained, stopped or halted meanwhile
    let how: string;
    if (d.exited) how = 'the role exited while draining';
    else if (open === 0) how = 'drained';
    else {
      const left = open === undefined ? 'connections could not be counted' : `${connectionsText(open)} still open`;
      how = `drain timed out after ${formatDuration(d.timeoutMs)}, ${left}`;
      this.#log.warn(how);
    }
    await this.#stopRole(d.reason, how);
  }

  /** No restart while draining: a worker that ends once its task is done did what was asked. */
  #exitedWhileDraining(d: Drain, exit: LastExit): void {
    this.#unwatchHealth();
    this.#withdraw();
    this.#lastExit = exit;
    this.#log.info({ exit: exit.code, signal: exit.signal }, 'start command ended while draining; not restarting');
    void this.#supervisor?.stop(0);
    d.exited = true;
    d.wake.abort();
  }

  #undrain(reason: string): void {
    const d = this.#drain;
    if (!d) {
      const why = this.#phase === 'running' ? 'not draining' : 'the role is already being stopped';
      this.#log.info(`ignored undrain: ${why}`);
      this.#message = `${this.#message ?? this.#state}; undrain ignored: ${why}`;
      void this.#sendStatus();
      return;
    }
    this.#drain = undefined;
    d.wake.abort();
    const because = reason ? `: ${reason}` : '';
    if (this.#servingSince !== undefined) {
      // Imports may have changed during the drain; servingSince stays, the role never stopped serving.
      this.#exports = this.#renderExports();
      this.#setState('serving', `drain cancelled${because}; serving`);
    } else if (d.unhealthy) {
      this.#livenessReason = d.unhealthy;
      this.#setState('starting', `drain cancelled${because}; ${d.unhealthy}; restarting the start command`);
      this.#supervisor?.restart(d.unhealthy);
    } else {
      this.#setState('starting', `drain cancelled${because}; waiting for the health check to pass`);
    }
  }

  // ---- stopping --------------------------------------------------------------------------

  /** `how`: what led to the stop besides the reason, e.g. how a drain ended. */
  async #stopRole(reason: string, how?: string): Promise<void> {
    if (this.#phase !== 'running') return;
    this.#phase = 'stopping';
    this.#tenants.stop();
    const drain = this.#drain;
    this.#drain = undefined;
    drain?.wake.abort();
    const message = `${reason ? `stopping: ${reason}` : 'stopping'}${how ? ` (${how})` : ''}`;
    this.#roleAbort.abort();
    this.#unwatchHealth();
    this.#withdraw();
    this.#setState('stopping', message);
    // The aborted deploy or update must be gone before stop/undeploy run.
    await this.#lifecycleRun;
    await this.#updateRun;

    const a = this.#assignment;
    const stopAbort = new AbortController();
    const halted = (): boolean => this.#halting !== undefined;
    if (a) {
      const role = a.role;
      const stopScript = role.stop && this.#started ? role.stop : undefined;
      const runStop = (): Promise<unknown> =>
        stopScript
          ? this.#step('stop', stopScript, role.stopTimeoutMs, this.#haltSignal(stopAbort)).then((r) => {
              if (r.code !== 0) this.#log.warn({ tail: r.tail }, `stop ${stepOutcome(r, role.stopTimeoutMs)}`);
            })
          : Promise.resolve();
      const sup = this.#supervisor;
      if (sup && sup.state !== 'stopping' && sup.state !== 'stopped') await sup.stop(role.stopTimeoutMs, runStop);
      else {
        // Already stopped (it exited while draining): its stop script still gets to clean up.
        await sup?.stop();
        await runStop();
      }
      await this.#balancer?.stop().catch((err: unknown) => this.#log.warn({ err }, 'balancer stop failed'));
      this.#balancer = undefined;
      if (halted()) return;
      if (role.undeploy) {
        const r = await this.#step('undeploy', role.undeploy, this.#o.scriptTimeoutMs, this.#haltSignal(stopAbort));
        if (halted()) return;
        if (r.code !== 0) this.#log.warn({ tail: r.tail }, `undeploy ${stepOutcome(r, this.#o.scriptTimeoutMs)}`);
      }
    }
    const stopped = reason ? `stopped: ${reason}` : 'stopped';
    const lines = this.#lastLines(stopped);
    const deadline = Date.now() + this.#o.finalStatusTimeoutMs;
    // The controller should hear "terminated" from the agent itself rather than guess it, and
    // get the role's last lines first: once the instance is gone they are all that is left.
    // The state stays `stopping` until the lines are out, so no status (or hello) says
    // `terminated` before them.
    let logged = lines.length === 0;
    while (!halted() && Date.now() < deadline) {
      if (!(await this.#waitWelcome(deadline - Date.now()))) continue;
      if (!logged) logged = await this.#send({ type: 'log', lines });
      if (logged) {
        if (this.#state !== 'terminated') this.#setState('terminated', stopped, false);
        if (await this.#sendStatus()) break;
      }
      // The socket is closing; its close handler will clear `welcomed`.
      await sleep(50);
    }
    if (halted()) return;
    if (this.#state !== 'terminated') this.#setState('terminated', stopped, false);
    await this.#finish({ reason: 'terminated', message: `role stopped: ${reason || 'stop order'}` });
  }

  /** Aborts `ac` as soon as the agent halts, so a `stop` or `undeploy` script does not hold it. */
  #haltSignal(ac: AbortController): AbortSignal {
    this.#haltAborts.add(ac);
    return ac.signal;
  }
  /** Fenced or shut down: end the role's processes now, skip the scripts, and finish. */
  #halt(exit: AgentExit): Promise<void> {
    this.#halting ??= (async () => {
      const wasActive = this.#phase === 'running' || this.#phase === 'stopping';
      this.#phase = 'stopping';
      this.#tenants.stop();
      this.#drain?.wake.abort();
      this.#drain = undefined;
      this.#roleAbort.abort();
      for (const ac of this.#haltAborts) ac.abort();
      this.#unwatchHealth();
      this.#withdraw();
      await this.#supervisor?.kill(this.#o.killTimeoutMs);
      await this.#lifecycleRun;
      // After the lifecycle: a balancer still starting is only known once its start returns.
      await this.#balancer?.stop().catch(() => undefined);
      this.#balancer = undefined;
      await this.#updateRun;
      // Not when fenced: the controller has disowned this instance and wants nothing more from it.
      if (exit.reason === 'shutdown' && wasActive) {
        const lines = this.#lastLines(exit.message);
        this.#setState('terminated', exit.message, false);
        const report = async (): Promise<void> => {
          if (lines.length > 0 && !(await this.#send({ type: 'log', lines }))) return;
          await this.#sendStatus();
        };
        await Promise.race([report(), new Promise((r) => setTimeout(r, 1000).unref())]);
      }
      await this.#finish(exit);
    })();
    return this.#halting;
  }

  async #finish(exit: AgentExit): Promise<void> {
    if (this.#phase === 'done') return;
    this.#phase = 'done';
    for (const l of this.#links) l.close();
    clearInterval(this.#heartbeat);
    this.#welcomed = false;
    await this.#transport.close(exit.reason);
    await this.#roleLog?.close();
    rmSync(this.#pgidFile, { force: true });
    this.#log.info({ reason: exit.reason }, exit.message);
    this.#resolveRun(exit);
  }

  // ---- strays ----------------------------------------------------------------------------

  /**
   * Records the role's process group in the workdir. The role runs in its own group, so it
   * survives an agent that is SIGKILLed or crashes; the file lets the next agent (or the
   * provider) find and end it instead of leaving it holding the port.
   */
  get #pgidFile(): string {
    return join(this.#o.workdir, 'role.pgid');
  }

  #writePgidFile(pgid: number): void {
    try {
      writeFileSync(this.#pgidFile, `${pgid}\n`);
    } catch (err) {
      this.#log.warn({ err }, 'could not record the role process group');
    }
  }

  /** Ends a role process group left behind by an earlier agent in this workdir. */
  #killStrays(): void {
    let pgid: number;
    try {
      pgid = Number(readFileSync(this.#pgidFile, 'utf8').trim());
    } catch {
      return;
    }
    rmSync(this.#pgidFile, { force: true });
    if (!Number.isSafeInteger(pgid) || pgid <= 1) return;
    // The pgid may have been reused since (a reboot): only a group that carries this
    // instance's own environment is ours to kill.
    const mine = (groupMembers(pgid) ?? []).some((p) => {
      const env = readEnviron(p.pid);
      return env?.includes(`DROVER_INSTANCE=${this.#o.instanceId}`) && env.includes(`DROVER_WORKDIR=${this.#o.workdir}`);
    });
    if (mine) {
      this.#log.warn({ pgid }, 'ending role processes left by an earlier agent');
      killGroup(pgid, 'SIGKILL');
    }
  }

  // ---- helpers ---------------------------------------------------------------------------

  /** `send: false` when the caller sends the status itself, after something that must go first. */
  #setState(state: InstanceState, message?: string, send = true): void {
    if (state !== this.#state) this.#log.info({ from: this.#state, to: state, message }, `state ${state}`);
    this.#state = state;
    this.#message = message;
    // The port keepers hand this member connections exactly while it serves (not while draining).
    for (const l of this.#links) l.setServing(state === 'serving');
    if (send) void this.#sendStatus();
    for (const w of this.#stateWaiters) w();
  }

  /** Resolves at the next state change, or on abort. */
  #stateChanged(signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        this.#stateWaiters.delete(done);
        signal.removeEventListener('abort', done);
        resolve();
      };
      this.#stateWaiters.add(done);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  /** The role's last output lines, for the controller to keep once the role is stopped. */
  #lastLines(stopped: string): string[] {
    const tail = this.#roleLog?.tail() ?? [];
    if (!this.#assignment || tail.length === 0) return [];
    return [`[agent] ${stopped}; last output of role ${this.#assignment.role.name}:`, ...tail];
  }

  #stepFailed(name: string, r: ScriptResult): void {
    this.#lastExit = { code: r.code, signal: r.signal, tail: r.tail };
    const last = r.tail.at(-1);
    const message = `${name} ${stepOutcome(r, this.#o.scriptTimeoutMs)}${last ? `: ${last}` : ''}`;
    this.#log.error({ tail: r.tail }, message);
    this.#sendLog([`[${name}] ${message}`, ...r.tail]);
    this.#setState('failed', message);
  }

  async #step(name: string, command: string, timeoutMs: number, signal: AbortSignal): Promise<ScriptResult> {
    this.#log.info({ step: name }, `running ${name}`);
    const c = this.#command(command);
    const r = await runScript({
      command: c.command,
      env: c.env,
      cwd: this.#roleDir(),
      ...(this.#runAs ? { runAs: this.#runAs } : {}),
      timeoutMs,
      signal,
      log: this.#roleLog,
      logPrefix: `[${name}] `,
    });
    this.#log.info({ step: name, code: r.code, signal: r.signal, timedOut: r.timedOut, aborted: r.aborted }, `${name} done`);
    return r;
  }

  #builtins(): BuiltinValues {
    const a = this.#assignment!;
    return roleBuiltins(a.role, {
      app: a.app, appDir: this.#appDir ?? a.appDir, instance: this.#o.instanceId, ip: this.#o.ip, port: this.#o.port, workdir: this.#o.workdir,
      ...(this.#ports ? { ports: this.#ports } : {}),
      ...(this.#volumes ? { volumes: this.#volumes } : {}),
    });
  }

  /** Where the role's commands run: `${workdir}`. */
  #roleDir(): string {
    return this.#builtins().workdir;
  }

  /** A command with its values as quoted variable references, and its environment with them. */
  #command(template: string): { command: string; env: NodeJS.ProcessEnv } {
    const r = renderCommand(template, this.#builtins(), this.#assignment!.imports);
    return { command: r.command, env: { ...this.#env(), ...r.env } };
  }

  /** process.env (less Drover's own) + built-ins and imports + the role's own env, in that order of precedence. */
  #env(): NodeJS.ProcessEnv {
    const a = this.#assignment!;
    const builtins = this.#builtins();
    const env: NodeJS.ProcessEnv = inheritedEnv(process.env);
    if (this.#runAs) Object.assign(env, { HOME: builtins.workdir, USER: this.#runAs.user, LOGNAME: this.#runAs.user });
    Object.assign(env, importEnv(builtins, a.imports));
    for (const [k, v] of Object.entries(a.role.env)) env[k] = renderTemplate(v, builtins, a.imports);
    return env;
  }
}

function connectionsText(n: number): string {
  return `${n} in-flight connection${n === 1 ? '' : 's'}`;
}

function drainMessage(open: number | undefined, timeoutMs: number): string {
  if (open === 0) return 'draining: no in-flight connections left';
  const what = open === undefined ? 'in-flight work (connections cannot be counted here)' : connectionsText(open);
  return `draining: waiting for ${what} (up to ${formatDuration(timeoutMs)})`;
}

function stepOutcome(r: ScriptResult, timeoutMs: number): string {
  if (r.timedOut) return `timed out after ${formatDuration(timeoutMs)}`;
  return describeExit(r.code, r.signal);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function withoutUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** A port free on `ip` now (the kernel's choice); the role binds it moments later. */
function freePort(ip: string): Promise<number> {
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

/** Whether `port` can be bound on `ip` now. */
function canBind(ip: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen({ host: ip, port, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}
