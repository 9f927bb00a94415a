/**
 * The `drover` command.
 *
 * Exit codes: 0 ok, 1 failure (including an invalid app file or an unreachable controller),
 * 2 usage error.
 */
import { spawn } from 'node:child_process';
import { existsSync, openSync, closeSync, readFileSync, rmSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import type { AppSpec, SpecIssue } from '../core/index.js';
import { acquireLock, LockHeldError, preparePrivateDataDir, type DataDirLock, type RunningController } from '../controller/index.js';
import { dropStoreSeeds, startEmbeddedDb, type SqlClient } from '../adapters/store/index.js';
import { CliError, Client, findTarget, HttpError } from './client.js';
import { ago, table } from './format.js';
import { registerFleetCommands, renderByHost } from './fleet.js';

// Loaded by the commands that need them, not at start: `drover status` or `--version` never
// pays for the controller, the store, the app-file schema or the logger (bench:startup).
const core = () => import('../core/index.js');
const controller = () => import('../controller/index.js');

/**
 * For a controller of this process on the embedded store (no store URL): its data folder made
 * private and locked, and its store's database started (the template copied in if new, PGlite
 * in its thread) while this process loads the controller's code — both cores at work. Given to
 * `startServer`. A template copy not taken is removed when this process exits (half-made, by
 * the next start).
 */
async function startEarly(dataDir: string, storeUrl: string | undefined): Promise<{ lock: DataDirLock; db: Promise<SqlClient> } | undefined> {
  if (storeUrl?.trim()) return undefined;
  const dir = preparePrivateDataDir(dataDir);
  let lock: DataDirLock;
  try {
    lock = await acquireLock(dir);
  } catch (err) {
    if (err instanceof LockHeldError) throw new CliError(err.message);
    throw err;
  }
  const db = join(dir, 'db');
  process.once('exit', () => dropStoreSeeds(db));
  const started = startEmbeddedDb(db);
  started.catch(() => undefined); // said by the controller's start, which waits for it
  return { lock, db: started };
}

/** The controller's port when none is given: the controller's own DEFAULT_PORT (a test keeps them equal). */
export const DEFAULT_PORT = 7420;

/** The package version, from package.json (two levels up from src/cli or dist/cli). */
function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string }).version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

interface InstanceJson {
  id: string;
  /** The EC2 instance type, the OpenStack flavor, or node / ssh / process. */
  type?: string;
  createdAt?: string;
  role: string;
  state: string;
  address: string | null;
  exports: Record<string, string>;
  startedAt: string | null;
  stateSince: string;
  message: string | null;
  restarts: number;
  lastExit: { code: number | null; signal: string | null; tail: string[] } | null;
  agent?: { pid: number | null; host: string };
  /** Every port of the role's `ports:` by name. */
  ports?: Record<string, number>;
  /** The member slot it holds (`db-0`), for a role with volumes. */
  slot?: string;
  balancer: { driver: string; listen: string; members: { id: string; address: string; state: string; removing: boolean; activeConnections: number; ejected: boolean }[] } | null;
}
interface RoleJson {
  name: string;
  desired: number;
  pinned: boolean;
  min: number;
  max: number;
  live: number;
  serving: number;
  draining: number;
  spares: number;
  degraded: boolean;
  /** Why no host fits the role's placement, while that holds. */
  unplaceable?: string | null;
  policies: string[];
  /** The policies are Drover's default for a balanced role (no `scale:` in the file). */
  defaultPolicy?: boolean;
  lastDecision: { at: string; desired: number; reason: string } | null;
  missingImports: string[];
  staleImports?: string[];
  instances: InstanceJson[];
}
interface AppJson {
  name: string;
  generation: number;
  deleting: boolean;
  converged: boolean;
  spares: Record<string, number>;
  startOrder: string[][];
  roles: RoleJson[];
}
interface EventJson {
  id: number;
  at: string;
  app: string | null;
  role: string | null;
  instance: string | null;
  kind: string;
  message: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function out(s: string): void {
  process.stdout.write(s.endsWith('\n') ? s : s + '\n');
}

async function readSpec(file: string): Promise<{ spec: AppSpec; yaml: string; appDir: string }> {
  const path = resolve(file);
  if (!existsSync(path)) throw new CliError(`${file}: no such file`);
  const yaml = readFileSync(path, 'utf8');
  const { parseAppFile, SpecError } = await core();
  try {
    return { spec: parseAppFile(yaml), yaml, appDir: dirname(path) };
  } catch (err) {
    if (err instanceof SpecError) throw new CliError(`${file} is invalid:\n${err.issues.map((i) => `  ${i.path ? `${i.path}: ` : ''}${i.message}`).join('\n')}`);
    throw err;
  }
}

/** `HOST:PORT` or `[IPV6]:PORT` for --listen. */
export function parseListen(v: string): { host: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\s]+)):(\d{1,5})$/.exec(v.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new InvalidArgumentError('expected HOST:PORT, e.g. 0.0.0.0:7420, 10.0.0.5:7420 or [::]:7420');
  return { host: (m[1] ?? m[2])!, port };
}

function parseInteger(v: string): number {
  if (!/^\d+$/.test(v)) throw new InvalidArgumentError('expected a whole number');
  return Number(v);
}

async function listApps(client: Client): Promise<AppJson[]> {
  const { apps } = await client.request<{ apps: { name: string }[] }>('GET', '/v1/apps');
  return Promise.all(apps.map((a) => client.request<AppJson>('GET', `/v1/apps/${a.name}`)));
}

/** Every app and who leads, in one request (`GET /v1/status`); from a controller that predates it, one request per app. */
async function statusOf(client: Client): Promise<{ apps: AppJson[]; controller: LeadershipJson }> {
  try {
    return await client.request<{ apps: AppJson[]; controller: LeadershipJson }>('GET', '/v1/status');
  } catch (err) {
    if (!(err instanceof HttpError) || err.status !== 404) throw err;
  }
  const [apps, controller] = await Promise.all([listApps(client), client.request<LeadershipJson>('GET', '/v1/controller')]);
  return { apps, controller };
}

async function pickApp(client: Client, name: string | undefined): Promise<string> {
  if (name) return name;
  const { apps } = await client.request<{ apps: { name: string }[] }>('GET', '/v1/apps');
  if (apps.length === 1 && apps[0]) return apps[0].name;
  if (apps.length === 0) throw new CliError('no app is applied; run `drover apply FILE`');
  throw new CliError(`several apps (${apps.map((a) => a.name).join(', ')}); name one with --app`);
}

/** `GET /v1/controller`. */
interface LeadershipJson {
  readonly mode: 'embedded' | 'lease';
  readonly role: 'leader' | 'standby' | 'stepped-down';
  readonly leader: { readonly url: string; readonly host: string; readonly pid: number } | null;
  readonly epoch: number | null;
  readonly since: string | null;
}

/** One line: which controller leads, and since when. */
function renderLeadership(l: LeadershipJson, now = Date.now()): string {
  const since = l.since ? `, for ${ago(l.since, now)}` : '';
  const who = l.leader ? `${l.leader.url} (${l.leader.host}, pid ${l.leader.pid})` : 'none';
  if (l.role === 'leader') return `controller: this one leads (lease epoch ${l.epoch ?? '?'}${since})`;
  const mine = l.role === 'standby' ? 'standby' : 'stepping down';
  return l.leader ? `controller: ${mine}; the leader is ${who} (lease epoch ${l.epoch ?? '?'}${since})` : `controller: ${mine}; no controller leads right now`;
}

function renderStatus(apps: AppJson[]): string {
  if (apps.length === 0) return 'no apps';
  const now = Date.now();
  const parts: string[] = [];
  for (const a of apps) {
    const flag = a.deleting ? 'deleting' : a.converged ? 'converged' : 'converging';
    const appSpares = a.spares['*'] ? `, ${a.spares['*']} warm spare(s)` : '';
    parts.push(`app ${a.name} (generation ${a.generation}, ${flag}${appSpares})`);
    const rows: string[][] = [['ROLE', 'INSTANCE', 'STATE', 'ADDRESS', 'AGENT PID', 'UP', 'TYPE', 'AGE', 'EXPORTS / NOTE']];
    for (const r of a.roles) {
      const auto = r.defaultPolicy ? ' (auto: default policy)' : ' (auto)';
      const mode = r.policies.length ? (r.pinned ? ' (set by hand; policies paused)' : auto) : r.pinned ? ' (set by hand)' : '';
      const bits = [`${r.serving}/${r.desired} serving${mode}`];
      if (r.draining) bits.push(`${r.draining} draining`);
      if (r.spares) bits.push(`${r.spares} warm spare(s)`);
      if (r.degraded) bits.push(`DEGRADED: replacements keep failing (fix the cause, then \`drover retry ${r.name}\`)`);
      if (r.unplaceable) bits.push(`UNPLACEABLE: ${r.unplaceable}`);
      if (r.missingImports.length) bits.push(`waiting for ${r.missingImports.join(', ')}`);
      if (r.staleImports?.length) bits.push(`imports not yet applied by ${r.staleImports.join(', ')}`);
      if (r.lastDecision && !r.pinned) bits.push(`last decision: ${r.lastDecision.reason}`);
      rows.push([r.name, '', '', '', '', '', '', '', bits.join('; ')]);
      for (const i of r.instances) {
        const ex = Object.entries(i.exports).map(([k, v]) => `${k}=${v}`).join(' ');
        const note = i.state === 'serving' ? ex : (i.message ?? ex);
        rows.push(['', i.id, i.state, i.address ?? '-', agentPid(i.agent), i.startedAt ? ago(i.startedAt, now) : '-', i.type ?? '-', i.createdAt ? ago(i.createdAt, now) : '-', note]);
        const held = [...(i.slot ? [`slot ${i.slot}`] : []), ...(i.ports ? [`ports ${Object.entries(i.ports).map(([k, v]) => `${k}=${v}`).join(' ')}`] : [])];
        if (held.length) rows.push(['', '', '', '', '', '', '', '', held.join('; ')]);
        if (i.balancer) {
          rows.push(['', '', '', '', '', '', '', '', `balancer (${i.balancer.driver}) on ${i.balancer.listen}: ${i.balancer.members.length} member(s)`]);
          for (const m of i.balancer.members) {
            const st = m.ejected ? 'ejected' : m.removing ? 'leaving' : m.state;
            rows.push(['', '', '', '', '', '', '', '', `  ${m.id} ${m.address} ${st}, ${m.activeConnections} conn`]);
          }
        }
      }
    }
    parts.push(table(rows));
  }
  return parts.join('\n\n');
}

/** The agent's pid, with its host when that is not this machine. */
function agentPid(a: InstanceJson['agent']): string {
  if (!a?.pid) return '-';
  return a.host === hostname() ? String(a.pid) : `${a.pid}@${a.host}`;
}

function renderEvent(e: EventJson): string {
  const where = [e.app, e.role].filter(Boolean).join('/');
  return `${e.at}  ${where.padEnd(20)}  ${e.message}`;
}

/** `--since`: a duration back from `now` (30s, 10m, 2h, 1d) or an ISO 8601 time; epoch ms. */
export function parseSince(text: string, now: number): number {
  const m = /^(\d{1,9})(ms|s|m|h|d)$/.exec(text);
  if (m) return now - Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'ms' | 's' | 'm' | 'h' | 'd'];
  const t = /^\d{4}-\d\d-\d\d/.test(text) ? Date.parse(text) : NaN;
  if (Number.isNaN(t) || t < 0) throw new CliError(`--since: expected a duration (30s, 10m, 2h, 1d) or an ISO 8601 time, got "${text}"`, 2);
  return t;
}

/** Waits until the app converges, or says why it cannot. */
async function waitConverged(client: Client, name: string, timeoutMs: number, sinceEvent: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: AppJson | undefined;
  while (Date.now() < deadline) {
    last = await client.request<AppJson>('GET', `/v1/apps/${name}`);
    if (last.converged) return;
    // A role that keeps failing will not converge by waiting.
    const { events } = await client.request<{ events: EventJson[] }>('GET', `/v1/events?app=${name}&after=${sinceEvent}&limit=1000`);
    const failures = new Map<string, EventJson[]>();
    for (const e of events) if (e.kind === 'instance.failed' && e.role) failures.set(e.role, [...(failures.get(e.role) ?? []), e]);
    for (const [role, evs] of failures) {
      const last = evs[evs.length - 1];
      if (evs.length >= 2) {
        throw new CliError(
          `app ${name} cannot converge: role ${role} keeps failing:\n${last?.message ?? ''}` +
            `${last?.instance ? `\nits output: \`drover logs ${last.instance}\`` : ''}; once fixed, \`drover retry ${role}\``,
        );
      }
    }
    await sleep(300);
  }
  const why = (last?.roles ?? [])
    .filter((r) => r.serving !== r.desired || r.live !== r.desired || (r.staleImports?.length ?? 0) > 0)
    .map((r) => {
      const bits = [`${r.name}: ${r.serving}/${r.desired} serving`];
      if (r.unplaceable) bits.push(r.unplaceable);
      if (r.missingImports.length) bits.push(`waiting for ${r.missingImports.join(', ')}`);
      if (r.staleImports?.length) bits.push(`imports not yet applied by ${r.staleImports.join(', ')}`);
      const stuck = r.instances.filter((i) => i.state !== 'serving').map((i) => `${i.id} ${i.state}${i.message ? ` (${i.message})` : ''}`);
      if (stuck.length) bits.push(stuck.join(', '));
      return bits.join('; ');
    });
  throw new CliError(`app ${name} did not converge within ${Math.round(timeoutMs / 1000)}s:\n  ${why.join('\n  ') || 'no progress reported'}`);
}

async function lastEventId(client: Client): Promise<number> {
  const { events } = await client.request<{ events: EventJson[] }>('GET', '/v1/events?limit=1');
  return events[events.length - 1]?.id ?? 0;
}

/** Accepted but likely not meant (`${app}` beside a role named app, a misspelt built-in): said on stderr. */
function warn(file: string, warnings: readonly SpecIssue[]): void {
  for (const w of warnings) process.stderr.write(`warning: ${file}: ${w.path ? `${w.path}: ` : ''}${w.message}\n`);
}

async function applyFile(client: Client, file: string): Promise<string> {
  const { spec, yaml, appDir } = await readSpec(file);
  const res = await client.request<{ changed: boolean; warnings?: SpecIssue[]; bundle?: { sha256: string; size: number; files: number } | null }>('PUT', `/v1/apps/${spec.app}`, { yaml, appDir });
  warn(file, res.warnings ?? []);
  // The folder is packed for joined hosts (docs/fleet.md): its name says whether the hosts fetch anything new.
  const b = res.bundle ? ` (bundle ${res.bundle.sha256.slice(0, 12)}: ${res.bundle.files} files, ${res.bundle.size} bytes)` : '';
  out(`app ${spec.app} ${res.changed ? 'applied' : 'unchanged'}${b}`);
  return spec.app;
}

/** Deletes every app (reverse dependency order, done by the controller) and waits until gone. */
async function deleteAll(client: Client, timeoutMs: number): Promise<void> {
  const { apps } = await client.request<{ apps: { name: string }[] }>('GET', '/v1/apps');
  for (const a of apps) await client.request('DELETE', `/v1/apps/${a.name}`);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = (await client.request<{ apps: { name: string }[] }>('GET', '/v1/apps')).apps;
    if (left.length === 0) return;
    if (Date.now() > deadline) throw new CliError(`apps still stopping after ${Math.round(timeoutMs / 1000)}s: ${left.map((a) => a.name).join(', ')}`);
    await sleep(250);
  }
}

/** Whether `pid` runs. A zombie does not (where PID 1 does not reap, orphans linger as zombies). */
function pidAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') return false;
  } catch {
    if (process.platform === 'linux') return false;
  }
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A controller already serving this data folder, if any. */
async function runningController(dataDir: string): Promise<Client | undefined> {
  try {
    // The data folder's controller (not DROVER_URL's), with the token it was given: a
    // controller started with DROVER_TOKEN keeps no token file.
    const t = findTarget(dataDir, process.env.DROVER_TOKEN ? { DROVER_TOKEN: process.env.DROVER_TOKEN } : {});
    const info = JSON.parse(readFileSync(join(resolve(dataDir), 'controller.json'), 'utf8')) as { pid: number };
    if (!pidAlive(info.pid)) return undefined;
    const c = new Client(t);
    await c.request('GET', '/v1/health', undefined, 2000);
    return c;
  } catch {
    return undefined;
  }
}

export function buildProgram(): Command {
  const program = new Command('drover')
    .description('Elastic application orchestrator: starts roles in dependency order and keeps them at the right size.')
    .version(packageVersion())
    .showHelpAfterError()
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  const dataDirOpt = () => new Option('--data-dir <dir>', 'controller data folder (state, token, instance folders)').default('.drover').env('DROVER_DATA_DIR');
  const clientFor = (dataDir: string) => new Client(findTarget(dataDir));
  const sshHostsOpt = () => new Option('--ssh-hosts <file>', 'make instances on the hosts listed in FILE, over ssh (docs/fleet.md)').env('DROVER_SSH_HOSTS');
  const providerOpt = () =>
    new Option('--provider <kind>', 'also make instances on this cloud (ec2, openstack) for roles whose provider: asks for it; repeatable (env DROVER_PROVIDERS=ec2,openstack; docs/cloud.md)')
      .argParser((v: string, prev: string[] | undefined) => [...(prev ?? []), v]);
  const listenOpt = () => new Option('--listen <host:port>', 'address and port to listen on, e.g. 0.0.0.0:7420 or a host IP, so agents on other hosts reach it (default 127.0.0.1:<--port>)').argParser(parseListen);
  const storeOpt = () =>
    new Option(
      '--store <url>',
      'PostgreSQL for the state, postgres://user@host:5432/db (default: embedded PGlite in the data folder); give a password through DROVER_STORE_URL, PGPASSWORD or ~/.pgpass, not here (ps shows command lines)',
    ).env('DROVER_STORE_URL');
  const transportOpt = () =>
    new Option(
      '--transport <url>',
      'RabbitMQ between controller and agents, amqp://user:password@host:5672/vhost of an administrator user (default: agents connect to the controller); prefer DROVER_TRANSPORT_URL (ps shows command lines)',
    ).env('DROVER_TRANSPORT_URL');
  /** The transport URL given (flag or env), checked; undefined for the embedded transport. */
  const transportUrl = async (o: { transport?: string }, cmd: Command): Promise<string | undefined> => {
    const url = o.transport?.trim();
    if (!url) return undefined;
    const { AmqpTransportError, parseAmqpUrl } = await import('../adapters/transport/index.js');
    try {
      parseAmqpUrl(url);
    } catch (err) {
      if (err instanceof AmqpTransportError) throw new CliError(`${cmd.getOptionValueSource('transport') === 'env' ? 'DROVER_TRANSPORT_URL' : '--transport'}: ${err.message}`, 2);
      throw err;
    }
    return url;
  };
  /** The store URL given (flag or env), checked; undefined for the embedded store. */
  const storeUrl = async (o: { store?: string }, cmd: Command): Promise<string | undefined> => {
    const url = o.store?.trim();
    if (!url) return undefined;
    const { checkPostgresUrl, StoreUrlError } = await import('../adapters/store/index.js');
    try {
      checkPostgresUrl(url);
    } catch (err) {
      if (err instanceof StoreUrlError) throw new CliError(`${cmd.getOptionValueSource('store') === 'env' ? 'DROVER_STORE_URL' : '--store'}: ${err.message}`, 2);
      throw err;
    }
    return url;
  };

  program
    .command('up')
    .description('start a controller on this machine and apply FILE; in the foreground until Ctrl-C (which stops the app)')
    .argument('[file]', 'app file', 'drover.yaml')
    .addOption(dataDirOpt())
    .option('--port <n>', 'controller port on 127.0.0.1 (0 = any free port)', parseInteger, DEFAULT_PORT)
    .addOption(listenOpt())
    .option('--detach', 'run the controller in the background; return once the app has converged')
    .option('--timeout <seconds>', 'with --detach: how long to wait for convergence', parseInteger, 120)
    .addOption(storeOpt())
    .addOption(transportOpt())
    .addOption(sshHostsOpt())
    .addOption(providerOpt())
    .action(async (file: string, o: { dataDir: string; port: number; listen?: { host: string; port: number }; detach?: boolean; timeout: number; store?: string; transport?: string; sshHosts?: string; provider?: string[] }, cmd: Command) => {
      // A controller of this process: its data folder locked and its store started while the
      // controller's modules load and the file is read.
      const early = o.detach || (await runningController(o.dataDir)) ? undefined : await startEarly(o.dataDir, o.store);
      if (!o.detach) void controller().catch(() => undefined);
      // A bad file is refused before the controller starts (its new store, if made, is kept for the next start).
      await readSpec(file);
      const store = await storeUrl(o, cmd);
      const transport = await transportUrl(o, cmd);
      const existing = await runningController(o.dataDir);
      if (o.detach) {
        let client = existing;
        if (!client) {
          const dir = (await controller()).preparePrivateDataDir(o.dataDir);
          const logFile = join(dir, 'controller.log');
          const log = openSync(logFile, 'a', 0o600);
          const logStart = statSync(logFile).size;
          const script = process.argv[1] ?? '';
          const child = spawn(process.execPath, [...process.execArgv, script, 'controller', '--data-dir', dir, '--port', String(o.port), ...(o.listen ? ['--listen', `${o.listen.host.includes(':') ? `[${o.listen.host}]` : o.listen.host}:${o.listen.port}`] : []), ...(o.sshHosts ? ['--ssh-hosts', resolve(o.sshHosts)] : []), ...(o.provider ?? []).flatMap((k) => ['--provider', k])], {
            detached: true,
            stdio: ['ignore', log, log],
            // The store URL (it may hold a password) goes through the environment, not argv.
            env: { ...process.env, ...(store ? { DROVER_STORE_URL: store } : {}), ...(transport ? { DROVER_TRANSPORT_URL: transport } : {}) },
          });
          closeSync(log);
          child.unref();
          // Opening the store takes seconds, more on a loaded machine.
          const deadline = Date.now() + 60_000;
          while (!client) {
            const said = startFailure(logFile, logStart);
            // `drover: ...` is the controller giving up: say why now, whether or not it has exited yet.
            if (said?.final || child.exitCode !== null) {
              throw new CliError(`the controller could not start: ${said?.text ?? `it exited with code ${child.exitCode}`}\n(log: ${logFile})`);
            }
            if (Date.now() > deadline) {
              throw new CliError(`the controller did not start within 60s${said ? `: ${said.text}` : ''}\n(log: ${logFile})`);
            }
            await sleep(150);
            client = await runningController(dir);
          }
        }
        const since = await lastEventId(client);
        const name = await applyFile(client, file);
        await waitConverged(client, name, o.timeout * 1000, since);
        out(renderStatus(await listApps(client)));
        out(`\n${name} is up. Controller: ${client.target.url} (data in ${resolve(o.dataDir)}). Stop with \`drover down\`.`);
        out(`Dashboard: ${client.target.url}/ui/ (sign in with the token in ${process.env.DROVER_TOKEN ? '$DROVER_TOKEN' : join(resolve(o.dataDir), 'token')}).`);
        return;
      }
      if (existing) throw new CliError(`a controller already runs for ${resolve(o.dataDir)}; use \`drover apply ${file}\` or \`drover down\` first`);
      await runForeground(file, o.dataDir, o.listen ?? { host: '127.0.0.1', port: o.port }, store, transport, o.sshHosts, o.provider, early);
    });

  program
    .command('controller')
    .description('run only the controller, in the foreground (what `up --detach` starts in the background)')
    .addOption(dataDirOpt())
    .option('--port <n>', 'port on 127.0.0.1', parseInteger, DEFAULT_PORT)
    .addOption(listenOpt())
    .addOption(storeOpt())
    .addOption(transportOpt())
    .addOption(sshHostsOpt())
    .addOption(providerOpt())
    .action(async (o: { dataDir: string; port: number; listen?: { host: string; port: number }; store?: string; transport?: string; sshHosts?: string; provider?: string[] }, cmd: Command) => {
      const early = await startEarly(o.dataDir, o.store);
      const store = await storeUrl(o, cmd);
      const transport = await transportUrl(o, cmd);
      const { startServer } = await controller();
      const holder: { server?: RunningController } = {};
      const stop = () => void holder.server?.close().then(() => process.exit(0));
      holder.server = await startServer({ dataDir: o.dataDir, host: o.listen?.host ?? '127.0.0.1', port: o.listen?.port ?? o.port, ...(store ? { storeUrl: store } : {}), ...(transport ? { transportUrl: transport } : {}), ...(o.sshHosts ? { sshHosts: o.sshHosts } : {}), ...(o.provider ? { providers: o.provider } : {}), ...(early ? { early } : {}), ...(process.env.DROVER_TOKEN ? { token: process.env.DROVER_TOKEN } : {}), onShutdown: stop });
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
      await new Promise(() => {});
    });

  program
    .command('apply')
    .description('apply FILE to the running controller (create or change the app)')
    .argument('<file>', 'app file')
    .addOption(dataDirOpt())
    .option('--wait', 'wait until the app has converged')
    .option('--timeout <seconds>', 'with --wait: how long', parseInteger, 120)
    .action(async (file: string, o: { dataDir: string; wait?: boolean; timeout: number }) => {
      const client = clientFor(o.dataDir);
      const since = await lastEventId(client);
      const name = await applyFile(client, file);
      if (o.wait) await waitConverged(client, name, o.timeout * 1000, since);
    });

  program
    .command('validate')
    .description('check an app file without applying it')
    .argument('<file>', 'app file')
    .action(async (file: string) => {
      const { spec } = await readSpec(file);
      const warnings = (await core()).appFileWarnings(spec);
      warn(file, warnings);
      out(`${file}: ok (app ${spec.app}, roles ${Object.keys(spec.roles).join(', ')})${warnings.length ? `, ${warnings.length} warning(s)` : ''}`);
    });

  program
    .command('schema')
    .description('print the JSON Schema of the app file (for editors)')
    .action(async () => out(JSON.stringify((await core()).appFileJsonSchema(), null, 2)));

  registerFleetCommands(program, { dataDirOpt, clientFor, out });

  program
    .command('status')
    .description('show every app, role and instance')
    .addOption(dataDirOpt())
    .option('--json', 'machine-readable output')
    .addOption(new Option('--by <what>', 'group instances by the host they run on').choices(['host']))
    .action(async (o: { dataDir: string; json?: boolean; by?: 'host' }) => {
      const client = clientFor(o.dataDir);
      const { apps, controller: lead } = await statusOf(client);
      // Who leads matters only where controllers elect one (a shared store); said first.
      const leadLine = lead.mode === 'lease' ? `${renderLeadership(lead)}\n\n` : '';
      if (o.by === 'host' && !o.json) return out(leadLine + renderByHost(apps));
      if (o.json) {
        out(JSON.stringify({ controller: lead, apps: apps.map((a) => ({ name: a.name, generation: a.generation, converged: a.converged, deleting: a.deleting, roles: a.roles })) }, null, 2));
      } else out(leadLine + renderStatus(apps));
    });

  program
    .command('scale')
    .description("set a role's count by hand (`drover scale api=3`, which pauses its policies), or hand it back to them (`drover scale api --auto`)")
    .argument('<role=count|role>', 'role and count, e.g. api=3; or a role with --auto')
    .addOption(dataDirOpt())
    .option('--app <name>', 'app (needed only when several are applied)')
    .option('--auto', "hand the role's count back to its scaling policies")
    .action(async (arg: string, o: { dataDir: string; app?: string; auto?: boolean }) => {
      const m = /^([a-z][a-z0-9-]*)(?:=(\d+))?$/.exec(arg);
      if (!m || (m[2] === undefined) !== Boolean(o.auto)) {
        throw new CliError(`expected ROLE=COUNT (e.g. api=3) or ROLE --auto, got "${arg}"${o.auto ? ' --auto' : ''}`, 2);
      }
      const client = clientFor(o.dataDir);
      const app = await pickApp(client, o.app);
      const body = o.auto ? { auto: true } : { count: Number(m[2]) };
      const r = await client.request<RoleJson>('PUT', `/v1/apps/${app}/roles/${m[1]}/count`, body);
      out(`${app}/${r.name}: desired ${r.desired} (now ${r.serving} serving)${o.auto ? '; scaling policies in charge' : ''}`);
    });

  program
    .command('retry')
    .description("after fixing what made a role fail: forget its recent failures so it is tried again now (a degraded role, or one waiting out a backoff)")
    .argument('<role>', 'the role')
    .addOption(dataDirOpt())
    .option('--app <name>', 'app (needed only when several are applied)')
    .action(async (role: string, o: { dataDir: string; app?: string }) => {
      const client = clientFor(o.dataDir);
      const app = await pickApp(client, o.app);
      const r = await client.request<{ retry: { forgotten: number; wasDegraded: boolean; wasBackingOff: boolean }; role: RoleJson }>('POST', `/v1/apps/${app}/roles/${encodeURIComponent(role)}/retry`);
      const was = r.retry.wasDegraded ? 'was degraded' : r.retry.wasBackingOff ? 'was waiting out a backoff' : 'was neither degraded nor backing off';
      out(`${app}/${role}: ${was}; ${r.retry.forgotten} recent failure(s) forgotten; replacements start now (${r.role.serving}/${r.role.desired} serving). Follow with \`drover events --follow\`.`);
    });

  const tenants = program.command('tenants').description('SaaS tenants of a role with `tenants:`: sign up, list, show, remove');
  interface TenantOut {
    id: string; name: string; role: string; host: string | null; state: string; instance: string | null; address?: string | null;
    reason: string | null; attempts: number; lastOutput: string[]; createdAt: string;
    notifications?: { kind: string; event: string; target: string; attempt: number; status: string; response: string | null; at: string }[];
  }
  const tenantRole = async (client: Client, app: string, role: string | undefined): Promise<string> => {
    if (role) return role;
    const a = await client.request<{ roles: { name: string; tenants: unknown }[] }>('GET', `/v1/apps/${app}`);
    const hosting = a.roles.filter((r) => r.tenants);
    if (hosting.length === 1 && hosting[0]) return hosting[0].name;
    throw new CliError(hosting.length === 0 ? `no role of ${app} hosts tenants (tenants: in the app file)` : `several roles host tenants (${hosting.map((r) => r.name).join(', ')}); name one with --role`);
  };
  const findTenant = async (client: Client, app: string | undefined, ref: string): Promise<TenantOut> => {
    if (/^t-[0-9a-f-]{36}$/.test(ref)) return client.request<TenantOut>('GET', `/v1/tenants/${ref}`);
    const { tenants: list } = await client.request<{ tenants: TenantOut[] }>('GET', `/v1/tenants${app ? `?app=${app}` : ''}`);
    const t = list.find((x) => x.name === ref && x.state !== 'removed');
    if (!t) throw new CliError(`no tenant named ${ref}`);
    return client.request<TenantOut>('GET', `/v1/tenants/${t.id}`);
  };
  const showTenant = (t: TenantOut) => {
    const lines = [`tenant ${t.name} (${t.id}), role ${t.role}: ${t.state}`];
    if (t.host) lines.push(`  host: ${t.host}`);
    if (t.instance) lines.push(`  instance: ${t.instance}${t.address ? ` (${t.address})` : ''}`);
    if (t.reason) lines.push(`  ${t.state === 'failed' ? 'why' : 'note'}: ${t.reason}`);
    if (t.lastOutput.length) lines.push('  last output:', ...t.lastOutput.map((l) => `    | ${l}`));
    for (const n of t.notifications ?? []) lines.push(`  ${n.at} ${n.kind} ${n.event} → ${n.target}: attempt ${n.attempt} ${n.status}${n.response ? ` (${n.response})` : ''}`);
    return lines.join('\n');
  };
  tenants
    .command('add')
    .description('sign a tenant up; with --wait, show its progress until it is ready (or failed)')
    .argument('<name>', 'the tenant name (one DNS label: lowercase letters, digits, -)')
    .addOption(dataDirOpt())
    .option('--app <name>', 'app (needed only when several are applied)')
    .option('--role <role>', 'role (needed only when several host tenants)')
    .option('--host <host>', "the tenant's host name (when the role has no host template)")
    .option('--callback <url>', 'webhook URL told when the tenant is ready, fails or moves')
    .option('--email <address>', 'e-mail address told the same')
    .option('--key <idempotency-key>', 'the same key again returns the same tenant, never a second')
    .option('--wait', 'wait until the tenant is ready or failed')
    .option('--timeout <seconds>', 'with --wait: how long', parseInteger, 600)
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { dataDir: string; app?: string; role?: string; host?: string; callback?: string; email?: string; key?: string; wait?: boolean; timeout: number; json?: boolean }) => {
      const client = clientFor(o.dataDir);
      const app = await pickApp(client, o.app);
      const role = await tenantRole(client, app, o.role);
      const body = { name, ...(o.host ? { host: o.host } : {}), ...(o.callback ? { callbackUrl: o.callback } : {}), ...(o.email ? { email: o.email } : {}) };
      let t = await client.request<TenantOut>('POST', `/v1/apps/${app}/roles/${role}/tenants`, body, 60_000, o.key ? { 'idempotency-key': o.key } : undefined);
      let last = '';
      const deadline = Date.now() + o.timeout * 1000;
      while (o.wait && (t.state === 'pending' || t.state === 'placing') && Date.now() < deadline) {
        const line = `${t.state}${t.instance ? ` on ${t.instance}` : ''}${t.reason ? `: ${t.reason}` : ''}`;
        if (!o.json && line !== last) process.stderr.write(`${name}: ${line}\n`);
        last = line;
        await new Promise((r) => setTimeout(r, 500));
        t = await client.request<TenantOut>('GET', `/v1/tenants/${t.id}`);
      }
      if (o.json) out(JSON.stringify(t, null, 2));
      else out(showTenant(t));
      if (o.wait && t.state !== 'ready') throw new CliError(t.state === 'failed' ? `tenant ${name} failed: ${t.reason ?? ''}` : `tenant ${name} is still ${t.state} after ${o.timeout}s`);
    });
  tenants
    .command('ls')
    .description('list tenants, in arrival order')
    .addOption(dataDirOpt())
    .option('--app <name>', 'only this app')
    .option('--role <role>', 'only this role')
    .option('--state <state>', 'only tenants in this state')
    .option('--json', 'machine-readable output')
    .action(async (o: { dataDir: string; app?: string; role?: string; state?: string; json?: boolean }) => {
      const client = clientFor(o.dataDir);
      const q = new URLSearchParams({ ...(o.app ? { app: o.app } : {}), ...(o.role ? { role: o.role } : {}), ...(o.state ? { state: o.state } : {}) }).toString();
      const { tenants: list } = await client.request<{ tenants: TenantOut[] }>('GET', `/v1/tenants${q ? `?${q}` : ''}`);
      if (o.json) {
        out(JSON.stringify({ tenants: list }, null, 2));
        return;
      }
      out(table([['NAME', 'ROLE', 'STATE', 'INSTANCE', 'HOST', 'NOTE'], ...list.map((t) => [t.name, t.role, t.state, t.instance ?? '-', t.host ?? '-', t.reason ?? ''])]));
    });
  tenants
    .command('show')
    .description('one tenant: state, instance, reason, last output, notification attempts')
    .argument('<tenant>', 'tenant name or id')
    .addOption(dataDirOpt())
    .option('--app <name>', 'app of the name')
    .option('--json', 'machine-readable output')
    .action(async (ref: string, o: { dataDir: string; app?: string; json?: boolean }) => {
      const t = await findTenant(clientFor(o.dataDir), o.app, ref);
      out(o.json ? JSON.stringify(t, null, 2) : showTenant(t));
    });
  interface PlanOut { moves: { tenantId: string; from: string; to: string }[]; emptied: string[]; saves: number; summary: string; kept: { instanceId: string; reason: string }[] }
  const showPlan = (p: PlanOut) => [p.summary, ...p.moves.map((m) => `  move ${m.tenantId}: ${m.from} → ${m.to}`), ...p.kept.map((k) => `  keep ${k.instanceId}: ${k.reason}`)].join('\n');
  tenants
    .command('plan')
    .description('consolidation as a dry run: which instances moving tenants could empty, and what it saves')
    .addOption(dataDirOpt())
    .option('--app <name>', 'app (needed only when several are applied)')
    .option('--role <role>', 'role (needed only when several host tenants)')
    .option('--max-moves <n>', 'at most this many moves', parseInteger, 10_000)
    .option('--json', 'machine-readable output')
    .action(async (o: { dataDir: string; app?: string; role?: string; maxMoves: number; json?: boolean }) => {
      const client = clientFor(o.dataDir);
      const app = await pickApp(client, o.app);
      const role = await tenantRole(client, app, o.role);
      const p = await client.request<PlanOut>('GET', `/v1/apps/${app}/roles/${role}/tenants/plan?maxMoves=${o.maxMoves}`);
      out(o.json ? JSON.stringify(p, null, 2) : showPlan(p));
    });
  tenants
    .command('rebalance')
    .description('apply the consolidation plan, one tenant at a time (pinned tenants stay); follow it with drover events')
    .addOption(dataDirOpt())
    .option('--app <name>', 'app (needed only when several are applied)')
    .option('--role <role>', 'role (needed only when several host tenants)')
    .option('--max-moves <n>', 'at most this many moves', parseInteger, 10_000)
    .option('--json', 'machine-readable output')
    .action(async (o: { dataDir: string; app?: string; role?: string; maxMoves: number; json?: boolean }) => {
      const client = clientFor(o.dataDir);
      const app = await pickApp(client, o.app);
      const role = await tenantRole(client, app, o.role);
      const p = await client.request<PlanOut>('POST', `/v1/apps/${app}/roles/${role}/tenants/rebalance`, { maxMoves: o.maxMoves });
      out(o.json ? JSON.stringify(p, null, 2) : showPlan(p));
    });
  tenants
    .command('pin')
    .description('pin a tenant to its instance (rebalance never moves it); --off unpins it')
    .argument('<tenant>', 'tenant name or id')
    .addOption(dataDirOpt())
    .option('--app <name>', 'app of the name')
    .option('--off', 'unpin')
    .action(async (ref: string, o: { dataDir: string; app?: string; off?: boolean }) => {
      const client = clientFor(o.dataDir);
      const t = await findTenant(client, o.app, ref);
      const r = await client.request<TenantOut & { pinned: boolean }>('PUT', `/v1/tenants/${t.id}/pinned`, { pinned: !o.off });
      out(`tenant ${r.name}: ${r.pinned ? 'pinned' : 'not pinned'}`);
    });
  tenants
    .command('rm')
    .description('remove a tenant: unrouted, then remove runs on its instance, then its seat is free')
    .argument('<tenant>', 'tenant name or id')
    .addOption(dataDirOpt())
    .option('--app <name>', 'app of the name')
    .option('--json', 'machine-readable output')
    .action(async (ref: string, o: { dataDir: string; app?: string; json?: boolean }) => {
      const client = clientFor(o.dataDir);
      const t = await findTenant(client, o.app, ref);
      const r = await client.request<TenantOut>('DELETE', `/v1/tenants/${t.id}`);
      out(o.json ? JSON.stringify(r, null, 2) : `tenant ${r.name}: ${r.state}`);
    });

  const volumes = program.command('volumes').description("volumes on the controller's machine: folders kept per member slot (db-0) that outlive their instances");
  const listVolumes = async (o: { dataDir: string; app?: string; json?: boolean }) => {
    const client = clientFor(o.dataDir);
    if (o.app !== undefined && !/^[a-z][a-z0-9-]{0,62}$/.test(o.app)) throw new CliError(`--app: expected an app name, got "${o.app}"`, 2);
    type VolumeOut = { app: string; slot: string; name: string; path: string; bytes: number; approx: boolean; usedBy: string | null };
    const { volumes: list } = await client.request<{ volumes: VolumeOut[] }>('GET', `/v1/volumes${o.app ? `?app=${o.app}` : ''}`);
    if (o.json) return out(JSON.stringify({ volumes: list }, null, 2));
    if (list.length === 0) return out('no volumes');
    const size = (v: VolumeOut) => `${v.approx ? '>' : ''}${v.bytes >= 1 << 20 ? `${(v.bytes / (1 << 20)).toFixed(1)} MiB` : v.bytes >= 1024 ? `${(v.bytes / 1024).toFixed(1)} KiB` : `${v.bytes} B`}`;
    out(table([['APP', 'SLOT', 'VOLUME', 'SIZE', 'USED BY', 'PATH'], ...list.map((v) => [v.app, v.slot, v.name, size(v), v.usedBy ?? '-', v.path])]));
  };
  volumes
    .command('ls', { isDefault: true })
    .description('list volumes: app, member slot, name, size, the instance using it')
    .addOption(dataDirOpt())
    .option('--app <name>', 'only this app')
    .option('--json', 'machine-readable output')
    .action(listVolumes);
  volumes
    .command('rm')
    .description('remove a member slot\'s volumes (ROLE-N) or one of them (ROLE-N/NAME); refused while an instance uses it')
    .argument('<app>', 'the app')
    .argument('<slot>', 'ROLE-N (every volume of the slot) or ROLE-N/NAME')
    .addOption(dataDirOpt())
    .action(async (app: string, slot: string, o: { dataDir: string }) => {
      if (!/^[a-z][a-z0-9-]{0,62}$/.test(app)) throw new CliError(`expected an app name, got "${app}"`, 2);
      if (!/^[a-z][a-z0-9-]{0,62}-\d{1,6}(\/[a-z][a-z0-9_]{0,31})?$/.test(slot)) throw new CliError(`expected ROLE-N or ROLE-N/NAME (e.g. db-0 or db-0/data), got "${slot}"`, 2);
      const r = await clientFor(o.dataDir).request<{ removed: string }>('DELETE', `/v1/volumes/${app}/${slot}`);
      out(`removed ${r.removed}`);
    });

  program
    .command('events')
    .description('list recorded decisions and changes')
    .addOption(dataDirOpt())
    .option('--app <name>', 'only this app')
    .option('--follow', 'keep printing new events')
    .option('--json', 'one JSON object per line')
    .option('--limit <n>', 'how many recent events', parseInteger, 50)
    .action(async (o: { dataDir: string; app?: string; follow?: boolean; json?: boolean; limit: number }) => {
      const client = clientFor(o.dataDir);
      const q = o.app ? `&app=${o.app}` : '';
      const print = (e: EventJson) => out(o.json ? JSON.stringify(e) : renderEvent(e));
      const first = await client.request<{ events: EventJson[] }>('GET', `/v1/events?limit=${o.limit}${q}`);
      first.events.forEach(print);
      if (!o.follow) return;
      let after = first.events[first.events.length - 1]?.id ?? 0;
      for (;;) {
        const r = await client.request<{ events: EventJson[] }>('GET', `/v1/events?after=${after}&waitMs=25000${q}`, undefined, 35_000);
        r.events.forEach(print);
        after = r.events[r.events.length - 1]?.id ?? after;
      }
    });

  program
    .command('logs')
    .description("a role's or an instance's output (every step and the start command), read through the controller")
    .argument('<role|instance>', 'a role (its live instances, or its newest gone one) or an instance id (i-…)')
    .addOption(dataDirOpt())
    .option('--app <name>', 'app of the role (needed only when several are applied)')
    .option('-f, --follow', 'keep printing new lines (until Ctrl-C, or the instance is gone)')
    .option('--since <duration>', 'only lines of the last DURATION (30s, 10m, 2h, 1d) or since a time (ISO 8601)')
    .option('-n, --lines <n>', 'how many of the last lines per instance (at most 10000)', parseInteger, 100)
    .option('--agent', "the agent's own log instead of the role's output")
    .option('--timestamps', 'print when each line was written')
    .action(async (target: string, o: { dataDir: string; app?: string; follow?: boolean; since?: string; lines: number; agent?: boolean; timestamps?: boolean }) => {
      if (o.lines < 1 || o.lines > 10_000) throw new CliError('--lines: expected a whole number from 1 to 10000', 2);
      const sinceMs = o.since !== undefined ? parseSince(o.since, Date.now()) : undefined;
      const client = clientFor(o.dataDir);
      let ids: string[];
      let multi = false;
      let roleApp: string | undefined;
      if (/^i-[0-9a-f]{1,32}$/.test(target)) ids = [target];
      else {
        if (!/^[a-z][a-z0-9-]{0,62}$/.test(target)) throw new CliError(`expected a role name or an instance id (i-…), got "${target}"`, 2);
        const app = await pickApp(client, o.app);
        roleApp = app;
        const all = (await client.request<{ instances: { id: string; role: string | null; state: string; destroyedAt: string | null; createdAt: string }[] }>('GET', `/v1/instances?app=${app}&role=${target}&all=true`)).instances;
        const live = all.filter((i) => i.destroyedAt === null);
        if (live.length > 0) ids = live.map((i) => i.id);
        else {
          const newest = [...all].sort((a, b) => b.createdAt.localeCompare(a.createdAt))[0];
          if (!newest) {
            const roles = (await client.request<{ roles: { name: string }[] }>('GET', `/v1/apps/${app}/roles`)).roles;
            if (!roles.some((r) => r.name === target)) throw new CliError(`app ${app} has no role "${target}"`);
            throw new CliError(`role ${target} of ${app} has no instance yet`);
          }
          process.stderr.write(`no live instance of ${target}; the newest gone one is ${newest.id} (${newest.state})\n`);
          ids = [newest.id];
        }
        multi = ids.length > 1;
      }
      const source = o.agent ? 'agent' : 'role';
      const show = (id: string, l: { at: string | null; text: string }) =>
        out(`${multi ? `[${id}] ` : ''}${o.timestamps ? `${l.at ?? '-'} ` : ''}${l.text}`);
      const query = (follow: boolean) => `lines=${o.lines}&source=${source}${sinceMs !== undefined ? `&since=${sinceMs}` : ''}${follow ? '&follow=true' : ''}`;
      if (!o.follow) {
        const got = await Promise.all(ids.map(async (id) => ({ id, r: await client.request<{ from: string; truncated: boolean; lines: { at: string | null; text: string }[] }>('GET', `/v1/instances/${id}/logs?${query(false)}`) })));
        // Several instances: one story, in the order the lines were written.
        const merged = got.flatMap(({ id, r }) => r.lines.map((l, k) => ({ id, l, k })));
        if (multi) merged.sort((a, b) => (a.l.at ?? '').localeCompare(b.l.at ?? '') || a.k - b.k);
        for (const m of merged) show(m.id, m.l);
        for (const { id, r } of got) if (r.from === 'events') process.stderr.write(`(${id}: its folder is gone; these are the last lines it sent when it stopped)\n`);
        return;
      }
      const stop = new AbortController();
      process.once('SIGINT', () => stop.abort());
      const followed = new Set<string>();
      const streams: Promise<void>[] = [];
      const follow = (id: string, q: string) => {
        followed.add(id);
        streams.push(client.stream(`/v1/instances/${id}/logs?${q}`, (item) => {
          const x = item as { at?: string | null; text?: string; end?: string };
          if (typeof x.text === 'string') show(id, { at: x.at ?? null, text: x.text });
          else if (typeof x.end === 'string') process.stderr.write(`(${x.end})\n`);
        }, stop.signal));
      };
      for (const id of ids) follow(id, query(true));
      if (roleApp === undefined) {
        await Promise.all(streams);
        return;
      }
      // A role: its new instances (replacements, scale-out) are followed from their first line.
      multi = true;
      while (!stop.signal.aborted) {
        await new Promise((r) => setTimeout(r, 2000));
        if (stop.signal.aborted) break;
        const now = (await client.request<{ instances: { id: string }[] }>('GET', `/v1/instances?app=${roleApp}&role=${target}`)).instances;
        for (const i of now) if (!followed.has(i.id)) follow(i.id, `lines=10000&source=${source}&follow=true`);
      }
      await Promise.all(streams);
    });

  program
    .command('simulate')
    .description("replay a traffic trace through Drover's own policy and planning code on a virtual clock, next to the classic policies")
    .requiredOption('--app <file>', "app file; Drover's policy is its role with scale: policies")
    .requiredOption('--trace <csv>', 'a CSV (timestamp or offset, rate or count per interval), worldcup98, or synthetic:FAMILY[:SEED[:DAYS]]')
    .option('--role <name>', 'the role to simulate (default: the one with scale: policies)')
    .option('--capacity <rps>', 'requests/s one instance serves', '25')
    .option('--boot <duration>', "boot time: 60s, uniform:30s..90s, lognormal:60s,0.5 (default: the provider's, else 60s)")
    .option('--provider <kind>', "local, ec2 or openstack: that provider's measured boot times, and what warm spares buy there (default: the app file's provider: kind:)")
    .option('--spares <n>', "warm spares for Drover's role (default: the app file's)")
    .option('--slo <spec>', 'wait:500ms (mean wait per minute) or util:0.8', 'wait:500ms')
    .option('--crash-rate <n>', 'instance crashes per instance-hour', '0')
    .option('--capacity-factor <x>', 'what instances truly serve relative to --capacity (0.8: 20% slower than the policies are told)', '1')
    .option('--queue <model>', 'erlang (waits grow before saturation) or fluid (nobody waits below 100%)', 'erlang')
    .option('--no-noise', 'exact metrics (by default each carries the sampling noise of one scrape)')
    .option('--metric-lag <duration>', 'age of a sample when a policy can first read it', '5s')
    .option('--drain <duration>', "how long a draining instance is billed (default: the role's drainTimeout)")
    .option('--seed <n>', 'random seed (same seed, same report)', '1')
    .option('--tick <duration>', 'simulation step', '15s')
    .option('--baselines <list>', 'comma-separated subset of oracle,fixed,threshold,hpa,aws')
    .option('--forecast', 'add a drover+forecast row (predictive pre-scaling)')
    .option('--json', 'the report as JSON')
    .option('--svg <file>', 'write a plot of demand and capacity over time')
    .option('--threads <n>', 'worker threads')
    .action(async (o: Record<string, string | boolean | undefined>) => {
      const { simulateCommand } = await import('../sim/index.js');
      const code = await simulateCommand(o as unknown as Parameters<typeof simulateCommand>[0]);
      if (code !== 0) throw new CliError('', code);
    });

  program
    .command('down')
    .description('stop every app (roles in reverse dependency order), then the controller')
    .addOption(dataDirOpt())
    .option('--timeout <seconds>', 'how long to wait for roles to stop', parseInteger, 120)
    .option('--force', "without the controller or the store: stop the data folder's controller and every process of its instances (SIGTERM, then SIGKILL)")
    .option('--grace <seconds>', 'with --force: time between SIGTERM and SIGKILL', parseInteger, 5)
    .action(async (o: { dataDir: string; timeout: number; force?: boolean; grace: number }) => {
      if (o.force) return forceDown(o.dataDir, o.grace * 1000);
      const client = clientFor(o.dataDir);
      await deleteAll(client, o.timeout * 1000);
      out('all apps stopped');
      let pid: number | undefined;
      try {
        pid = (JSON.parse(readFileSync(join(resolve(o.dataDir), 'controller.json'), 'utf8')) as { pid: number }).pid;
      } catch {
        pid = undefined;
      }
      await client.request('POST', '/v1/shutdown');
      for (let i = 0; pid !== undefined && i < 100 && pidAlive(pid); i++) await sleep(100);
      out('controller stopped');
    });

  return program;
}

/**
 * What a background controller wrote to its log since `from`: `final` with the `drover: ...`
 * message it leaves on, else the last lines.
 */
function startFailure(logFile: string, from: number): { text: string; final: boolean } | undefined {
  let text: string;
  try {
    text = readFileSync(logFile).subarray(from).toString('utf8');
  } catch {
    return undefined;
  }
  const lines = text.split('\n');
  const at = lines.findIndex((l) => l.startsWith('drover: '));
  if (at >= 0) return { text: lines.slice(at).join('\n').replace(/^drover: /, '').trim(), final: true };
  const tail = lines.filter((l) => l.trim()).slice(-5).join('\n');
  return tail ? { text: tail, final: false } : undefined;
}

/**
 * Sends SIGTERM to what `find` returns, and to whatever it finds later (an agent may restart a
 * role before it stops itself), waits up to `graceMs`, then SIGKILLs what is left. Returns the
 * pids stopped and those that needed SIGKILL.
 */
async function terminate<T extends { pid: number }>(find: () => T[], graceMs: number): Promise<{ stopped: T[]; killed: T[]; left: T[] }> {
  const seen = new Map<number, T>();
  const killed: T[] = [];
  const signal = (p: T, sig: NodeJS.Signals) => {
    try {
      process.kill(p.pid, sig);
    } catch {
      // gone already
    }
  };
  const deadline = Date.now() + graceMs;
  for (;;) {
    const now = find();
    for (const p of now) {
      if (seen.has(p.pid)) continue;
      seen.set(p.pid, p);
      signal(p, 'SIGTERM');
    }
    if (now.length === 0 || Date.now() > deadline) break;
    await sleep(100);
  }
  let left: T[] = [];
  for (let k = 0; k < 30; k++) {
    left = find();
    if (left.length === 0) break;
    for (const p of left) {
      if (!seen.has(p.pid)) seen.set(p.pid, p);
      if (!killed.some((q) => q.pid === p.pid)) killed.push(p);
      signal(p, 'SIGKILL');
    }
    await sleep(100);
  }
  return { stopped: [...seen.values()], killed, left };
}

/** `drover down --force`: stops everything of a data folder with nothing but the operating system. */
async function forceDown(dataDir: string, graceMs: number): Promise<void> {
  const dir = resolve(dataDir);
  if (!existsSync(dir)) throw new CliError(`no data folder at ${dir}`);
  const holder = await (await controller()).lockHolder(dir);
  if (holder && !Number.isFinite(holder.pid)) throw new CliError(`something holds the lock of ${dir} but does not say who; stop it by hand`);
  let failed = false;
  if (holder) {
    const r = await terminate(() => (pidAlive(holder.pid) ? [{ pid: holder.pid }] : []), graceMs);
    const who = `controller (pid ${holder.pid}${holder.url ? `, ${holder.url}` : ''})`;
    if (r.left.length) {
      failed = true;
      out(`${who} still runs after SIGKILL`);
    } else out(`stopped the ${who}${r.killed.length ? ' with SIGKILL' : ''}`);
  } else out(`no controller holds ${dir}`);
  const { processesOfInstancesIn } = await import('../adapters/providers/index.js');
  const r = await terminate(() => processesOfInstancesIn(join(dir, 'instances')), graceMs);
  if (r.stopped.length === 0) out('no instance process was running');
  const byInstance = new Map<string, number[]>();
  for (const p of r.stopped) byInstance.set(p.instance, [...(byInstance.get(p.instance) ?? []), p.pid]);
  for (const [id, pids] of [...byInstance].sort(([a], [b]) => a.localeCompare(b))) {
    const k = r.killed.filter((p) => p.instance === id).length;
    out(`stopped instance ${id}: ${pids.length} process(es) (pid ${pids.sort((a, b) => a - b).join(', ')})${k ? `, ${k} with SIGKILL` : ''}`);
  }
  const info = join(dir, 'controller.json');
  try {
    const pid = (JSON.parse(readFileSync(info, 'utf8')) as { pid: number }).pid;
    if (!pidAlive(pid)) rmSync(info, { force: true });
  } catch {
    // none, or unreadable: nothing to tidy
  }
  if (r.left.length) {
    failed = true;
    out(`still running after SIGKILL: pid ${r.left.map((p) => p.pid).join(', ')}`);
  }
  if (failed) throw new CliError('some processes could not be stopped');
}

async function runForeground(file: string, dataDir: string, listen: { host: string; port: number }, storeUrl: string | undefined, transportUrl?: string, sshHosts?: string, providers?: string[], early?: { lock: DataDirLock; db: Promise<SqlClient> }): Promise<void> {
  const { startServer, consoleLogger } = await controller();
  const logger = consoleLogger(process.env.DROVER_LOG_LEVEL ?? 'info');
  // The app is sent as soon as the controller listens: read and checked here, received and
  // parsed there while the store opens; it is applied once the controller is ready.
  let applying: Promise<string> | undefined;
  const onListening = (url: string, token: string) => {
    applying = applyFile(new Client({ url, token }), file);
    applying.catch(() => undefined); // awaited below, once the start is known to have succeeded
  };
  const server = await startServer({ dataDir, host: listen.host, port: listen.port, logger, onListening, ...(storeUrl ? { storeUrl } : {}), ...(transportUrl ? { transportUrl } : {}), ...(sshHosts ? { sshHosts } : {}), ...(providers ? { providers } : {}), ...(early ? { early } : {}), ...(process.env.DROVER_TOKEN ? { token: process.env.DROVER_TOKEN } : {}) });
  const client = new Client({ url: server.url, token: server.token });
  try {
    await (applying ?? applyFile(client, file));
  } catch (err) {
    await server.close();
    throw err;
  }
  out(`controller at ${server.url}; Ctrl-C stops the app and the controller`);
  out(`dashboard at ${server.url}/ui/ (sign in with the token in ${process.env.DROVER_TOKEN ? '$DROVER_TOKEN' : join(resolve(dataDir), 'token')})`);
  await new Promise<void>((resolveDone) => {
    let stopping = false;
    const onSignal = () => {
      if (stopping) {
        out('second interrupt: leaving now; instances may still be running (`drover up` again, then `drover down`)');
        process.exit(130);
      }
      stopping = true;
      out('stopping the app (Ctrl-C again to leave at once)…');
      deleteAll(client, 120_000)
        .catch((err: unknown) => process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`))
        .finally(() => void server.close().then(resolveDone));
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    server.http.server.on('close', () => resolveDone());
  });
}

/** Runs the CLI; resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return 0;
      return 2;
    }
    if (err instanceof HttpError) {
      process.stderr.write(`drover: ${err.message}\n`);
      return 1;
    }
    if (err instanceof CliError) {
      if (err.message) process.stderr.write(`drover: ${err.message}\n`);
      return err.exitCode;
    }
    // The controller's start error (loaded with the controller, so not an instanceof here).
    if (err instanceof Error && err.name === 'ControllerStartError') {
      process.stderr.write(`drover: ${err.message}\n`);
      return 1;
    }
    process.stderr.write(`drover: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return 1;
  }
}
