/**
 * A private RabbitMQ node for a test file: Debian's rabbitmq-server in a temp folder, AMQP on a
 * free loopback port, its own Erlang distribution port and epmd (never the shared 4369), its own
 * cookie ($HOME in the folder). t.after stops it and ends every process it left, found by a
 * marker in their environment, so nothing else is touched. Start one per test file: a node takes
 * several seconds to boot.
 *
 * Without rabbitmq-server the suite is skipped (with the reason), except with CI=true, where
 * its absence fails it.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { accessSync, constants, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import amqp from 'amqplib';
import { freePort } from '../src/adapters/providers/index.js';
import { killAll, processesWithEnv, sleep, until } from './helpers.js';

type After = { after: (fn: () => unknown) => void };

/** The broker's start script (Debian's, not /usr/sbin's wrapper that switches to the rabbitmq user); undefined if none. */
export function rabbitmqServer(): string | undefined {
  const candidates = ['/usr/lib/rabbitmq/bin/rabbitmq-server', ...(process.env.PATH ?? '').split(delimiter).map((d) => join(d, 'rabbitmq-server'))];
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch {
      // not there
    }
  }
  return undefined;
}

/** `skip` for a suite that needs RabbitMQ: false to run it, or the reason to skip (never under CI). */
export function rabbitmqSkip(): false | string {
  return rabbitmqServer() || process.env.CI === 'true' ? false : 'rabbitmq-server is not installed (apt-get install rabbitmq-server); skipping the RabbitMQ suite';
}

export async function canConnect(url: string): Promise<boolean> {
  try {
    const conn = await amqp.connect(url, { timeout: 2000 });
    await conn.close();
    return true;
  } catch {
    return false;
  }
}

/** A broker process started by a script, watched until it accepts AMQP connections. */
export interface SupervisedBroker {
  /** Seconds from start to the first AMQP connection. */
  readonly startSeconds: number;
  output(): string;
  /** SIGTERM, and wait for the node to stop (its epmd stays until t.after). */
  stop(): Promise<void>;
  /** Starts the node again on the same folder and port; resolves with the seconds it took. */
  restart(): Promise<number>;
}

/**
 * Starts `argv` (a node's start command) with `env` and waits until `url` accepts an AMQP
 * connection. t.after stops it, ends what carries `marker` in its environment, and removes `workdir`.
 */
export async function superviseBroker(t: After, o: { argv: readonly string[]; env: NodeJS.ProcessEnv; cwd: string; url: string; marker: string; workdir: string }): Promise<SupervisedBroker> {
  let child: ChildProcess | undefined;
  let output = '';
  const stop = async (): Promise<void> => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = once(c, 'exit');
    c.kill('SIGTERM');
    const timer = setTimeout(() => {
      try {
        process.kill(-(c.pid ?? 0), 'SIGKILL');
      } catch {
        // gone
      }
    }, 20_000);
    await exited;
    clearTimeout(timer);
  };
  t.after(async () => {
    await stop();
    // The node's epmd (and anything else it started) outlives it: end what carries our marker.
    killAll(processesWithEnv(o.marker));
    await until("the broker's processes to be gone", async () => processesWithEnv(o.marker).length === 0 || undefined, 5000, 50);
    await rm(o.workdir, { recursive: true, force: true });
  });
  const launch = async (): Promise<number> => {
    const t0 = performance.now();
    const [cmd, ...args] = o.argv;
    const c = spawn(cmd!, args, { env: o.env, cwd: o.cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    child = c;
    c.stdout.on('data', (b: Buffer) => (output += b.toString()));
    c.stderr.on('data', (b: Buffer) => (output += b.toString()));
    const deadline = Date.now() + 60_000;
    while (!(await canConnect(o.url))) {
      if (c.exitCode !== null || c.signalCode !== null) throw new Error(`rabbitmq-server exited (${c.exitCode ?? c.signalCode}):\n${output}`);
      if (Date.now() > deadline) throw new Error(`RabbitMQ accepted no AMQP connection within 60s:\n${output}`);
      await sleep(200);
    }
    return (performance.now() - t0) / 1000;
  };
  const startSeconds = await launch();
  return { startSeconds, output: () => output, stop, restart: launch };
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    c.stdout.on('data', (b: Buffer) => (output += b.toString()));
    c.stderr.on('data', (b: Buffer) => (output += b.toString()));
    c.on('error', reject);
    c.on('close', (code) => resolve({ code, output }));
  });
}

export interface RabbitMQ extends SupervisedBroker {
  /** amqp://drover-admin:…@127.0.0.1:port — an administrator with full permissions on `/`. */
  readonly url: string;
  readonly port: number;
  /** http://127.0.0.1:port of the management plugin (when asked for). */
  readonly managementUrl: string;
  readonly admin: { readonly user: string; readonly password: string };
  /** Calls the management API as the administrator; returns the parsed answer (or undefined). */
  api(method: string, path: string, body?: unknown): Promise<unknown>;
  /** Closes every client connection the broker has (a network cut, as clients see it). */
  dropConnections(): Promise<number>;
  /** Runs rabbitmqctl against this node. */
  ctl(args: string[]): Promise<{ code: number | null; output: string }>;
}

/** A private node with an administrator user (not guest) and, if asked, the management plugin on loopback. */
export async function startRabbitMQ(t: After, opts: { management?: boolean } = {}): Promise<RabbitMQ> {
  const server = rabbitmqServer();
  assert.ok(server, 'rabbitmq-server is installed');
  const workdir = await mkdtemp(join(tmpdir(), 'drover-rabbitmq-'));
  const [port, mgmt, dist, epmd] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const node = `t-${randomUUID().slice(0, 8)}`;
  const marker = `DROVER_RABBITMQ_TEST=${node}`;
  const admin = { user: 'drover-admin', password: randomBytes(18).toString('base64url') };
  const conf = [
    `listeners.tcp.default = 127.0.0.1:${port}`,
    'loopback_users.guest = true',
    `default_user = ${admin.user}`,
    `default_pass = ${admin.password}`,
    'default_user_tags.administrator = true',
    'default_permissions.configure = .*',
    'default_permissions.read = .*',
    'default_permissions.write = .*',
    'log.console = true',
    'log.console.level = warning',
    'log.file.level = info',
    // Connections show in the management API within half a second (default 5 s).
    ...(opts.management ? [`management.tcp.port = ${mgmt}`, 'management.tcp.ip = 127.0.0.1', 'collect_statistics_interval = 500'] : []),
  ];
  writeFileSync(join(workdir, 'rabbitmq.conf'), conf.join('\n') + '\n', { mode: 0o600 });
  writeFileSync(join(workdir, 'enabled_plugins'), opts.management ? '[rabbitmq_management].\n' : '[].\n');
  writeFileSync(join(workdir, 'rabbitmq-env.conf'), `DIST_PORT=${dist}\nERL_EPMD_PORT=${epmd}\nSERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"\n`);
  // Not a symlink: the script finds its own folder.
  writeFileSync(join(workdir, 'rabbitmq-server'), `#!/bin/sh\nexec ${server} "$@"\n`, { mode: 0o700 });
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DROVER_RABBITMQ_TEST: node,
    HOME: workdir, // the Erlang cookie, private to this node
    RABBITMQ_NODENAME: `rabbit-${node}@localhost`,
    RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_MNESIA_BASE: join(workdir, 'mnesia'),
    RABBITMQ_LOG_BASE: join(workdir, 'log'),
    RABBITMQ_CONFIG_FILE: join(workdir, 'rabbitmq.conf'),
    RABBITMQ_ENABLED_PLUGINS_FILE: join(workdir, 'enabled_plugins'),
    RABBITMQ_CONF_ENV_FILE: join(workdir, 'rabbitmq-env.conf'),
    ERL_EPMD_ADDRESS: '127.0.0.1',
    ERL_EPMD_PORT: String(epmd),
  };
  const url = `amqp://${admin.user}:${admin.password}@127.0.0.1:${port}`;
  const managementUrl = `http://127.0.0.1:${mgmt}`;
  const broker = await superviseBroker(t, { argv: [join(workdir, 'rabbitmq-server')], env, cwd: workdir, url, marker, workdir });
  const api = async (method: string, path: string, body?: unknown): Promise<unknown> => {
    const res = await fetch(`${managementUrl}${path}`, {
      method,
      headers: { authorization: `Basic ${Buffer.from(`${admin.user}:${admin.password}`).toString('base64')}`, 'content-type': 'application/json' },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return text ? (JSON.parse(text) as unknown) : undefined;
  };
  if (opts.management) {
    await until('the management API', async () => (await api('GET', '/api/overview').catch(() => undefined)) !== undefined || undefined, 30_000, 200);
  }
  // rabbitmqctl, not the management API: the API lists connections from statistics that lag.
  const ctl = join(server.replace(/rabbitmq-server$/, ''), 'rabbitmqctl');
  const dropConnections = async (): Promise<number> => {
    const r = await run(ctl, ['-n', env.RABBITMQ_NODENAME!, 'close_all_connections', 'test: network cut'], env);
    assert.equal(r.code, 0, `rabbitmqctl close_all_connections failed:\n${r.output}`);
    return 1;
  };
  return { ...broker, url, port, managementUrl, admin, api, dropConnections, ctl: (args) => run(ctl, ['-n', env.RABBITMQ_NODENAME!, ...args], env) };
}
