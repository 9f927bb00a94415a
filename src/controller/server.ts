/**
 * Starting a controller for real: data folder (private, locked), token, embedded store, local
 * provider, HTTP server, retention, and the file (`controller.json`) through which the CLI
 * finds it, written only by the lock's holder.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { pino, type Logger } from 'pino';
import { systemClock, type Clock, type PlannerOptions } from '../core/index.js';
import { DEFAULT_POOL_SIZE, deferredStore, FencedStore, MAX_POOL_SIZE, openPgliteStore, openPostgresStore, redactStoreUrl, StoreOpenError, StoreUnavailableError, StoreUrlError, type SqlClient, type Store } from '../adapters/store/index.js';
import {
  CloudSettingError, ec2Factory, loadSshHosts, LocalProvider, openStackFactory, providerFactories, ProviderRouter, SshConfigError, SshProvider, StaticProvider, type CloudKind, type Provider,
} from '../adapters/providers/index.js';
import { AmqpTransport, AmqpTransportError, EmbeddedTransport, redactUrl, withTransportProvisioning, type ControllerTransport } from '../adapters/transport/index.js';
import { buildApi, type StartGate } from './api.js';
import { registerFleetRoutes } from './join-routes.js';
import { agentBundleLoader, Bootstrap, registerAgentBundleRoute } from './bootstrap.js';
import { registerVolumeRoutes } from './volumes.js';
import { NodeRegistry } from './nodes.js';
import { BundleStore, DEFAULT_BUNDLE_LIMIT, parseSize, registerBundleRoutes } from './bundle.js';
import { WebhookSecrets, wireNotices } from './notices.js';
import { Controller } from './controller.js';
import { ControllerStartError, preparePrivateDataDir } from './datadir.js';
import { acquireLock, LockHeldError, type DataDirLock } from './lock.js';
import { compileRetention, retentionFromEnv, startRetention, type PruneResult, type RetentionOptions } from './retention.js';
import { VERSION } from './version.js';
import { holderName, LEADER_LEASE, Leadership, leadershipTimes } from './leader.js';

export interface ServerOptions {
  /** @default './.drover' */
  readonly dataDir?: string;
  /** @default '127.0.0.1' */
  readonly host?: string;
  /** 0 picks a free port. @default 7420 */
  readonly port?: number;
  /** Overrides the token kept in the data folder (env DROVER_TOKEN). */
  readonly token?: string;
  readonly logger?: Logger;
  readonly clock?: Clock;
  /** An in-memory store for tests; the default is PGlite in `<dataDir>/db`. */
  readonly store?: Store;
  /**
   * A PostgreSQL server for the state instead of PGlite: `postgres://user:password@host:5432/db`
   * (or `postgresql://`; TLS and the rest as URL parameters, docs/postgres.md). The CLI's
   * `--store`, env DROVER_STORE_URL. The data folder still holds the token, lock and instances.
   */
  readonly storeUrl?: string;
  /**
   * The data folder's lock, already taken by the caller (the CLI, before loading the
   * controller's code), and the embedded store's database it started under it
   * (`startEmbeddedDb` of the store door). The lock is released by `close()`.
   */
  readonly early?: { readonly lock: DataDirLock; readonly db?: Promise<SqlClient> };
  /**
   * Called once the API listens, which it does before the start is over (the embedded store may
   * still be opening): a request sent now waits until the controller is ready. The CLI's `up`
   * sends its app from here. Not called if the start fails before it listens.
   */
  readonly onListening?: (url: string, token: string) => void;
  /** Connections to PostgreSQL at most (env DROVER_STORE_POOL_SIZE). @default 10 */
  readonly storePoolSize?: number;
  readonly provider?: Provider;
  /**
   * The cloud providers this controller runs besides the default chain (joined hosts, then this
   * machine or its ssh hosts): `['ec2']`. The CLI's repeatable `--provider`, env DROVER_PROVIDERS
   * (`ec2,openstack`). A role asking for a kind not here is refused at apply. docs/cloud.md.
   */
  readonly providers?: readonly string[];
  /** Cloud providers made by the test instead of from {@link providers} (a provider pointed at a fake cloud). */
  readonly cloudProviders?: Partial<Record<CloudKind, Provider>>;
  /**
   * Who this controller is on the cloud machines it makes (tag `drover:controller`): the same for
   * a leader and its standbys. Env DROVER_CONTROLLER_ID. @default derived from the store (the
   * PostgreSQL server and database, or the data folder's absolute path)
   */
  readonly controllerId?: string;
  /**
   * Where cloud machines reach this controller (their user data names it): `http://10.0.0.5:7420`.
   * Env DROVER_CLOUD_URL. @default the controller's own URL (which must then not be 0.0.0.0)
   */
  readonly cloudUrl?: string;
  /** The agent bundle cloud machines install (tests). @default dist/ssh-bundle */
  readonly agentBundleDir?: string;
  /**
   * Instances on the hosts listed in this file, over ssh (docs/fleet.md, "ssh hosts"), instead of
   * this machine. The CLI's `--ssh-hosts`, env DROVER_SSH_HOSTS.
   */
  readonly sshHosts?: string;
  /**
   * How agents reach the controller: absent, the embedded WebSocket transport on the controller's
   * own port; `amqp://user:password@host:5672/vhost`, RabbitMQ (docs/rabbitmq.md), as that user
   * (an administrator: it makes each agent's user). The CLI's `--transport`, env DROVER_TRANSPORT_URL.
   */
  readonly transportUrl?: string;
  /** The broker's management API (env DROVER_TRANSPORT_MANAGEMENT_URL). @default http://<broker host>:15672 */
  readonly transportManagementUrl?: string;
  readonly heartbeatMs?: number;
  /** How often scaling policies run. @default 500 */
  readonly evaluateMs?: number;
  readonly planner?: Partial<PlannerOptions>;
  /**
   * Largest app folder packed into a bundle for joined hosts, in bytes of its files (env
   * DROVER_BUNDLE_LIMIT: `64MiB`, `500K`, bytes). @default 64 MiB
   */
  readonly bundleLimitBytes?: number;
  /** This machine's instances get the bundle too, not the folder itself (env DROVER_BUNDLE_LOCAL=1). @default false */
  readonly bundleLocal?: boolean;
  /** Environment for agents made by the local provider. */
  readonly agentEnv?: Readonly<Record<string, string>>;
  /** Tenant notifications: tests shorten the retry schedule. */
  readonly notify?: { readonly scheduleScale?: number };
  readonly onShutdown?: () => void;
  /**
   * How long events and acknowledged orders are kept; over the environment
   * (DROVER_EVENTS_MAX_AGE, DROVER_EVENTS_MAX_COUNT, DROVER_ORDERS_MAX_AGE) and the defaults
   * (events 7 days and 100,000, acknowledged orders 1 day, pruned every 10 minutes).
   */
  readonly retention?: RetentionOptions;
  /**
   * Elect a leader among controllers sharing the store (a lease; docs/postgres.md "Two
   * controllers"). @default true with `storeUrl`, false otherwise (the embedded store has one
   * controller, which always leads).
   */
  readonly leaderElection?: boolean;
  /** How long the leader lease lasts unless renewed (env DROVER_LEADER_LEASE_MS). @default 6000 */
  readonly leaseTtlMs?: number;
  /**
   * Called when this controller lost the leader lease and stopped acting (`hard`: it could not
   * stop in time). @default log and exit the process (75; 70 when hard) so a supervisor starts a
   * fresh standby — as Kubernetes' controller-manager does.
   */
  readonly onLeadershipLost?: (reason: string, hard: boolean) => void;
}

export interface RunningController {
  readonly url: string;
  readonly token: string;
  readonly dataDir: string;
  readonly controller: Controller;
  readonly http: FastifyInstance;
  /** Signing secrets of an app's tenant webhooks (`whsec_…`; made on first use). */
  webhookSecrets(app: string): readonly string[];
  /** Runs a retention pass now (it also runs on a timer). */
  pruneNow(): Promise<PruneResult>;
  /** Stops the controller and releases the data folder. Instances keep running (the app outlives its controller). */
  close(): Promise<void>;
}

export interface ControllerInfo {
  readonly url: string;
  readonly pid: number;
  readonly startedAt: string;
}

export const DEFAULT_PORT = 7420;

// `--provider openstack`: servers on an OpenStack cloud, credentials from OS_* (docs/cloud.md).
providerFactories.openstack = openStackFactory;
// `--provider ec2`: EC2 instances, credentials from the AWS SDK's chain (docs/cloud.md).
providerFactories.ec2 = ec2Factory;

/** The token in the data folder, made on first start (0600). */
export function loadOrCreateToken(dataDir: string): string {
  const file = join(dataDir, 'token');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const t = randomBytes(24).toString('base64url');
  writeFileSync(file, t + '\n', { mode: 0o600 });
  return t;
}

/** What a person must do when the store cannot be opened: nothing else of Drover can stop the app then. */
function storeHelp(dataDir: string, err: StoreOpenError): string {
  const db = join(dataDir, 'db');
  return (
    `${err.message}\n` +
    `Its instances may still be running. To recover:\n` +
    `  drover down --force --data-dir ${dataDir}   (stops every process of this data folder)\n` +
    `  mv ${db} ${db}.broken                       (keep it for inspection; the next start makes an empty store)`
  );
}

/** DROVER_LEADER_LEASE_MS, checked: 1 s to 5 min. */
function leaseTtlFromEnv(env: NodeJS.ProcessEnv): number {
  const text = env.DROVER_LEADER_LEASE_MS?.trim();
  if (!text) return 6000;
  const n = Number(text);
  if (!/^[0-9]+$/.test(text) || !Number.isSafeInteger(n) || n < 1000 || n > 300_000) {
    throw new ControllerStartError('bad-setting', `DROVER_LEADER_LEASE_MS=${text}: expected a whole number of ms from 1000 to 300000`);
  }
  return n;
}

/** DROVER_INSTANCE_LOGS_KEPT, checked: how many destroyed instances' logs the local provider keeps (0: all). */
function logsKeptFromEnv(env: NodeJS.ProcessEnv): number | undefined {
  const text = env.DROVER_INSTANCE_LOGS_KEPT?.trim();
  if (!text) return undefined;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n > 1_000_000) {
    throw new ControllerStartError('bad-setting', `DROVER_INSTANCE_LOGS_KEPT=${text}: expected a whole number up to 1000000, or 0 to keep every one`);
  }
  return n;
}

/** DROVER_STORE_POOL_SIZE, checked. */
function poolSizeFromEnv(env: NodeJS.ProcessEnv): number {
  const text = env.DROVER_STORE_POOL_SIZE?.trim();
  if (!text) return DEFAULT_POOL_SIZE;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < 1 || n > MAX_POOL_SIZE) {
    throw new ControllerStartError('bad-setting', `DROVER_STORE_POOL_SIZE=${text}: expected a whole number from 1 to ${MAX_POOL_SIZE}`);
  }
  return n;
}

/** The PostgreSQL store, or a start error that names the server (never its password). */
async function openPostgres(url: string, poolSize: number, logger: Logger): Promise<Store> {
  try {
    return await openPostgresStore({ url, poolSize, onIdleError: (err) => logger.warn({ err: err.message }, 'a pooled PostgreSQL connection failed; it is replaced when needed') });
  } catch (err) {
    if (err instanceof StoreUrlError) throw new ControllerStartError('bad-setting', `store URL (--store, DROVER_STORE_URL): ${err.message}`, { cause: err });
    if (err instanceof StoreUnavailableError) throw new ControllerStartError('store-unreadable', err.message, { cause: err });
    throw err;
  }
}

function listenError(err: unknown, host: string, port: number): Error {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'EADDRINUSE') return new ControllerStartError('port-in-use', `port ${port} on ${host} is in use`, { cause: err });
  const why = err instanceof Error ? err.message : String(err);
  return new ControllerStartError('listen-failed', `cannot listen on port ${port} of ${host}: ${why}`, { cause: err });
}

/**
 * Starts a controller on a data folder. Refused (a {@link ControllerStartError}, nothing left
 * open) if the folder is not private, if another controller holds it, if its store cannot be
 * opened or if the port is taken.
 */
export async function startServer(opts: ServerOptions = {}): Promise<RunningController> {
  const retention = compileRetention(retentionFromEnv(process.env), opts.retention);
  // Checks and takes the folder before anything reads or writes in it: a second controller
  // must not open the store, let alone touch an instance.
  const dataDir = preparePrivateDataDir(opts.dataDir ?? '.drover');
  let lock: DataDirLock;
  try {
    lock = opts.early?.lock ?? (await acquireLock(dataDir));
  } catch (err) {
    if (err instanceof LockHeldError) throw new ControllerStartError('data-dir-locked', err.message, { cause: err });
    throw err;
  }
  const undo: (() => Promise<void>)[] = [() => lock.release()];
  try {
    const logger = opts.logger ?? pino({ level: process.env.DROVER_LOG_LEVEL ?? 'info' });
    const token = opts.token ?? loadOrCreateToken(dataDir);
    let rawStore: Store;
    // The embedded store starts while the API is built; waited for before listening.
    let storeOpened: Promise<unknown> = Promise.resolve();
    if (opts.store) rawStore = opts.store;
    else if (opts.storeUrl) {
      rawStore = await openPostgres(opts.storeUrl, opts.storePoolSize ?? poolSizeFromEnv(process.env), logger);
      undo.push(() => rawStore.close());
    } else {
      const opening = openPgliteStore(join(dataDir, 'db'), opts.early?.db ? { started: opts.early.db } : {}).catch((err: unknown) => {
        if (err instanceof StoreOpenError) throw new ControllerStartError('store-unreadable', storeHelp(dataDir, err), { cause: err });
        throw err;
      });
      opening.catch(() => undefined); // said when awaited (below, or by a call that waits for it)
      storeOpened = opening;
      rawStore = deferredStore(opening);
      undo.push(async () => (await opening.catch(() => undefined))?.close());
    }
    // On a shared store controllers elect a leader; only its writes land (store/fenced.ts).
    const elect = opts.leaderElection ?? opts.storeUrl !== undefined;
    const leaseTtlMs = opts.leaseTtlMs ?? leaseTtlFromEnv(process.env);
    const fenced = elect ? new FencedStore(rawStore, LEADER_LEASE) : undefined;
    const store: Store = fenced ?? rawStore;
    const keepLogs = logsKeptFromEnv(process.env);
    const localProvider =
      opts.provider ?? new LocalProvider({ baseDir: join(dataDir, 'instances'), ...(opts.agentEnv ? { env: opts.agentEnv } : {}), ...(keepLogs !== undefined ? { keepLogs } : {}) });
    // Joined hosts first (docs/fleet.md), this machine when an app has no idle one.
    const fleet: { controller?: Controller; bootstrap?: Bootstrap; url?: string } = {};
    const nodes = new NodeRegistry({
      store, clock: opts.clock ?? systemClock, log: logger, heartbeatMs: opts.heartbeatMs ?? 2000,
      record: async (ev) => fleet.controller?.record(ev),
      enqueue: (app) => fleet.controller?.enqueue(app),
      retry: async (app, role) => fleet.controller?.retryRole(app, role, 'a host that joined or came back'),
      bound: (node, instance) => fleet.bootstrap?.bound(node, instance),
    });
    undo.push(async () => nodes.close());
    // Joined hosts first; then the ssh hosts if there is a list of them, else this machine.
    const sshHosts = opts.sshHosts ?? process.env.DROVER_SSH_HOSTS?.trim();
    let fallback: Provider = localProvider;
    if (sshHosts) {
      try {
        fallback = new SshProvider({ hosts: loadSshHosts(sshHosts) });
      } catch (err) {
        if (err instanceof SshConfigError) throw new ControllerStartError('bad-setting', `--ssh-hosts (DROVER_SSH_HOSTS): ${err.message}`, { cause: err });
        throw err;
      }
    }
    const baseProvider = new StaticProvider(nodes, fallback);
    let transport: ControllerTransport | undefined;
    // Each instance's transport needs (its broker user and queue) are made and removed with it.
    const clouds = makeClouds(opts, dataDir);
    // Cloud machines boot with user data made here and join as their instance (bootstrap.ts).
    const agentBundle = agentBundleLoader(opts.agentBundleDir);
    const cloudUrl = opts.cloudUrl ?? process.env.DROVER_CLOUD_URL?.trim();
    const bootstrap = new Bootstrap({
      store, clock: opts.clock ?? systemClock, log: logger, nodes, agentBundle,
      controllerUrl: () => cloudUrl || (fleet.url ?? ''),
      transportUrlFor: async (id) => transport?.provision?.(id),
      record: async (ev) => fleet.controller?.record(ev),
    });
    fleet.bootstrap = bootstrap;
    const provider = new ProviderRouter({
      fallback: withTransportProvisioning(baseProvider, () => transport),
      clouds: Object.fromEntries(Object.entries(clouds).map(([k, c]) => [k, withTransportProvisioning(bootstrap.wrap(c), () => transport)])),
    });
    const bundleLimit = opts.bundleLimitBytes ?? (process.env.DROVER_BUNDLE_LIMIT ? parseSize(process.env.DROVER_BUNDLE_LIMIT) : DEFAULT_BUNDLE_LIMIT);
    if (bundleLimit === undefined) throw new ControllerStartError('bad-setting', `DROVER_BUNDLE_LIMIT=${process.env.DROVER_BUNDLE_LIMIT}: expected a size such as 64MiB, 500K or a number of bytes (at most 4 GiB)`);
    // The data folder is never packed, even when it sits inside an app folder (the default ./.drover).
    const bundles = new BundleStore({ dir: join(dataDir, 'bundles'), maxBytes: bundleLimit, exclude: [resolve(dataDir)] });
    const controller = new Controller({
      store, provider, clock: opts.clock ?? systemClock, logger,
      bundles: { store: bundles, local: opts.bundleLocal ?? process.env.DROVER_BUNDLE_LOCAL === '1' },
      placementNote: (app, role) => nodes.unplaceable(app, role),
      providerKinds: provider.kinds(),
      ...(opts.heartbeatMs !== undefined ? { heartbeatMs: opts.heartbeatMs } : {}),
      ...(opts.evaluateMs !== undefined ? { evaluateMs: opts.evaluateMs } : {}),
      ...(opts.planner ? { planner: opts.planner } : {}),
    });
    fleet.controller = controller;
    undo.push(() => controller.stop()); // also closes the provider
    const transportUrl = opts.transportUrl ?? process.env.DROVER_TRANSPORT_URL?.trim();
    const managementUrl = opts.transportManagementUrl ?? process.env.DROVER_TRANSPORT_MANAGEMENT_URL?.trim();
    let transportUndone = false;
    let startTransport = async (): Promise<void> => undefined;
    if (transportUrl) {
      let amqpTransport: AmqpTransport;
      try {
        amqpTransport = new AmqpTransport(controller.handlers, controller.heartbeatMs, { url: transportUrl, logger, ...(managementUrl ? { managementUrl } : {}) });
      } catch (err) {
        if (err instanceof AmqpTransportError) throw new ControllerStartError('bad-setting', `transport: ${err.message}`, { cause: err });
        throw err;
      }
      transport = amqpTransport;
      undo.push(() => amqpTransport.close());
      transportUndone = true;
      // Started by the leader only (a standby must not consume the controller's queue). Not
      // waiting long for the broker: the controller serves its API without it, and orders wait
      // in the store until the broker is back.
      startTransport = async () => {
        await amqpTransport.start(10_000);
        if (!amqpTransport.brokerConnected) logger.warn({ broker: redactUrl(transportUrl) }, 'the broker is not reachable yet; retrying in the background');
      };
    } else {
      transport = new EmbeddedTransport(controller.handlers, controller.heartbeatMs);
    }
    const started = transport;
    if (!transportUndone) undo.push(() => started.close());
    let closing: Promise<void> | undefined;
    // The port opens before the store is open; requests wait for the start to be over (api.ts).
    const gate = startGate();
    const http = await buildApi({
      controller, token, logger, defaultAppDir: process.cwd(), version: VERSION, transport: started, starting: gate,
      onShutdown: () => opts.onShutdown?.(),
      routes: async (app, errors) => {
        await nodes.register(app);
        registerFleetRoutes(app, { store, clock: opts.clock ?? systemClock, nodes, errors });
        registerAgentBundleRoute(app, agentBundle, errors);
        registerBundleRoutes(app, { bundles, store, log: logger, record: (ev) => controller.record(ev), errors });
        registerVolumeRoutes(app, controller, { dir: join(dataDir, 'volumes'), errors });
      },
    });
    undo.push(() => http.close());
    // Undone first: requests waiting for the start are answered (503) before the server closes.
    undo.push(async () => gate.fail());
    const host = opts.host ?? '127.0.0.1';
    const wanted = opts.port ?? DEFAULT_PORT;
    await http.ready();
    try {
      // A burst of sign-ups or clients must queue, not be reset: the kernel caps it at somaxconn.
      await http.listen({ host, port: wanted, backlog: 4096 });
    } catch (err) {
      throw listenError(err, host, wanted);
    }
    const addr = http.server.address();
    const port = addr && typeof addr === 'object' ? addr.port : wanted;
    const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
    lock.setUrl(url);
    fleet.url = url;
    const infoFile = join(dataDir, 'controller.json');
    const info: ControllerInfo = { url, pid: process.pid, startedAt: new Date().toISOString() };
    writePrivateAtomically(infoFile, JSON.stringify(info, null, 2) + '\n');
    opts.onListening?.(url, token);
    // A client's first requests (its identity check, an app sent) arrive while the store opens.
    await storeOpened;
    const envSecrets = process.env.DROVER_WEBHOOK_SECRETS?.split(',').map((x) => x.trim()).filter(Boolean);
    const secrets = new WebhookSecrets(dataDir, envSecrets);
    const clock = opts.clock ?? systemClock;

    // What only the leader does: the control loops, the transport's consumer, retention, notices.
    let acting: { stop(): Promise<void> } | undefined;
    let pruner: ReturnType<typeof startRetention> | undefined;
    const act = async (epoch: number, since: number): Promise<void> => {
      controller.setLeading({ epoch, since });
      await startTransport();
      await controller.start(started, url);
      const p = startRetention(store, clock, logger, retention);
      pruner = p;
      const notices = wireNotices(controller, store, secrets, logger, opts.notify?.scheduleScale !== undefined ? { scheduleScale: opts.notify.scheduleScale } : {});
      let stopping: Promise<void> | undefined;
      acting = {
        stop: () =>
          (stopping ??= (async () => {
            // Refuse writes first: whatever is still in flight can no longer land.
            fenced?.setFence(undefined);
            controller.setLeading(undefined);
            await p.stop();
            await notices.close();
            nodes.close();
            await controller.stop();
            await started.close();
          })()),
      };
    };
    const { name: holder, info: self } = holderName(url);
    let closingAll = false;
    let leadership: Leadership | undefined;
    if (elect) {
      controller.setLeadershipMode('lease', self);
      const times = leadershipTimes(leaseTtlMs);
      const lost = opts.onLeadershipLost ?? ((reason: string, hard: boolean) => {
        logger.fatal({ reason, hard }, 'exiting: this controller lost the leader lease (a supervisor should start it again, as a standby)');
        process.exit(hard ? 70 : 75);
      });
      leadership = new Leadership({
        store: rawStore, holder, times, log: logger,
        onElected: async (lease) => {
          fenced?.setFence({ name: lease.name, holder: lease.holder, epoch: lease.epoch });
          await act(lease.epoch, lease.acquiredAt);
        },
        onDeposed: async (reason) => {
          // Stop acting before the lease can expire (the margin); past that, a hard exit.
          const stopped = acting?.stop() ?? Promise.resolve();
          const inTime = await Promise.race([stopped.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), times.marginMs).unref())]);
          if (!closingAll) lost(reason, !inTime);
        },
      });
      await leadership.start();
      if (leadership.state !== 'leader') logger.info({ url }, 'standing by: another controller holds the leader lease; serving reads, taking over if it goes');
    } else {
      // One controller per embedded store (the data folder's lock): it always leads. The lease
      // still gives it an epoch, under a holder name that is the same at every start.
      controller.setLeadershipMode('embedded', self);
      const lease = await rawStore.acquireLease(LEADER_LEASE, 'embedded', 86_400_000);
      if (!lease) throw new ControllerStartError('store-unreadable', 'the embedded store\'s leader lease is held by another holder');
      await act(lease.epoch, lease.acquiredAt);
    }
    gate.open();
    logger.info({ url, dataDir, transport: transportUrl ? redactUrl(transportUrl) : 'embedded', store: opts.store ? 'given' : opts.storeUrl ? redactStoreUrl(opts.storeUrl) : join(dataDir, 'db') }, 'controller listening');
    return {
      url, token, dataDir, controller, http,
      webhookSecrets: (app) => secrets.for(app),
      pruneNow: () => (pruner ? pruner.runOnce() : Promise.resolve({ events: 0, orders: 0, tokens: 0, nodes: 0 })),
      close: () =>
        (closing ??= (async () => {
          closingAll = true;
          if (leadership) await leadership.stop();
          if (acting) await acting.stop();
          else {
            nodes.close();
            await controller.stop();
            await started.close();
          }
          await http.close();
          await rawStore.close();
          try {
            const cur = JSON.parse(readFileSync(infoFile, 'utf8')) as ControllerInfo;
            if (cur.pid === process.pid) rmSync(infoFile, { force: true });
          } catch {
            // already gone
          }
          await lock.release();
        })()),
    };
  } catch (err) {
    for (const fn of undo.reverse()) await fn().catch(() => undefined);
    throw err;
  }
}

/** The controller's start as the API waits for it: opened once it is over, failed if it is undone. */
function startGate(): StartGate & { open(): void; fail(): void } {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const ready = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  ready.catch(() => undefined); // said to each waiting request
  const gate: StartGate & { open(): void; fail(): void; state: StartGate['state'] } = {
    state: 'starting',
    ready,
    open: () => {
      gate.state = 'ready';
      resolve();
    },
    fail: () => {
      if (gate.state !== 'starting') return;
      gate.state = 'failed';
      reject(new Error('the controller could not start'));
    },
  };
  return gate;
}

/** The cloud kinds asked for (`--provider`, DROVER_PROVIDERS), checked. */
export function cloudKindsFrom(asked: readonly string[] | undefined, env: NodeJS.ProcessEnv): CloudKind[] {
  const list = asked ?? (env.DROVER_PROVIDERS ?? '').split(',').map((x) => x.trim()).filter(Boolean);
  const out: CloudKind[] = [];
  for (const k of list) {
    if (k === 'local') continue; // always there
    if (!Object.hasOwn(providerFactories, k)) {
      const known = ['local', ...Object.keys(providerFactories)].join(', ');
      throw new ControllerStartError('bad-setting', `--provider ${k} (DROVER_PROVIDERS): no such provider; known: ${known}`);
    }
    if (!out.includes(k as CloudKind)) out.push(k as CloudKind);
  }
  return out;
}

/** The cloud providers of this controller: given by a test, else made by their factories. */
function makeClouds(opts: ServerOptions, dataDir: string): Partial<Record<CloudKind, Provider>> {
  if (opts.cloudProviders) return opts.cloudProviders;
  const kinds = cloudKindsFrom(opts.providers, process.env);
  const controllerId = opts.controllerId ?? process.env.DROVER_CONTROLLER_ID?.trim() ?? defaultControllerId(opts.storeUrl, dataDir);
  if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(controllerId)) {
    throw new ControllerStartError('bad-setting', `DROVER_CONTROLLER_ID=${controllerId}: expected 1 to 64 letters, digits, "_", ".", ":" or "-"`);
  }
  const out: Partial<Record<CloudKind, Provider>> = {};
  for (const k of kinds) {
    try {
      out[k] = providerFactories[k]!({ env: process.env, controllerId });
    } catch (err) {
      if (err instanceof CloudSettingError) throw new ControllerStartError('bad-setting', `--provider ${k}: ${err.message}`, { cause: err });
      throw err;
    }
  }
  return out;
}

/**
 * The same for every controller of one store (a leader and its standbys share the PostgreSQL
 * database; an embedded store has one folder): never a password in it, only a hash.
 */
function defaultControllerId(storeUrl: string | undefined, dataDir: string): string {
  let what = `dir:${resolve(dataDir)}`;
  if (storeUrl) {
    try {
      const u = new URL(storeUrl);
      what = `pg:${u.hostname}:${u.port}${u.pathname}`;
    } catch {
      what = `pg:${storeUrl.replace(/\/\/[^@]*@/, '//')}`;
    }
  }
  return `drover-${createHash('sha256').update(what).digest('hex').slice(0, 16)}`;
}

/** Writes `file` whole or not at all (a reader never sees half of it), 0600. */
function writePrivateAtomically(file: string, text: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode: 0o600 });
  renameSync(tmp, file);
}
