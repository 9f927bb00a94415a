/**
 * `npm run bench:fleet` (as root: it makes network namespaces, test/netns.ts, and removes them
 * on every way out, Ctrl-C included). In one run:
 *
 * 1. Breach → a new member serving on a *remote* (namespaced) host. The breach is real, through
 *    a policy: a queue backlog jumps from 0 to 15 (a role metric scraped every 250 ms from this
 *    process over the bridge; the queue policy wants one instance per 10, so 1 → 2), as in
 *    bench:reaction. "Serving" is the new member answering an HTTP request from here on its
 *    host's address. (a) a joined node idle on another host (`drover agent --join`, the built
 *    CLI); (b) a cold ssh host: a private sshd in a namespace (as test/provider-ssh.test.ts), a
 *    fresh folder each run, so the agent is installed over sftp, started, and fetches the app
 *    bundle. The first member runs on another host of the same kind. BENCH_RUNS (default 5);
 *    BENCH_EVENTS=1 prints each run's events.
 *    Each run's time is split with the controller's events: decision (breach → `scale.policy`),
 *    machine (→ the agent's first report: the node starting it, or ssh connect, install and
 *    boot), assign (→ `assigned`: the controller giving it its role, once it knows the machine's
 *    address), deploy (→ `starting`: bundle fetched and unpacked, deploy step), start (→
 *    `serving`: the process and its first health probe), seen (→ the answer here).
 * 2. 50 instances over 5 namespaced hosts: ten joined nodes per host (a node runs one instance),
 *    apply → all 50 serving (from the `app.apply` event to the last `→ serving`), with the
 *    split per host; the reference in the same run is the same app of 50 on the local provider
 *    (this machine, no nodes). BENCH_FIFTY=0 leaves it out, BENCH_BREACH=0 part 1.
 *
 * Needs root, iproute2, openssh-server (/usr/sbin/sshd) and `npm run build` (the script runs
 * it): the controllers are the built one (dist/), nodes run bin/drover.js, ssh hosts get
 * dist/ssh-bundle — every agent is the built one.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { connect } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { TestContext } from 'node:test';
import { pino } from 'pino';
import type { RunningController } from '../src/controller/index.js';
import { apiClient, BIN, killAll, processesWithEnv, ROOT, sleep, until } from '../test/helpers.js';
import { makeNetwork, netnsUnavailable, type Host } from '../test/netns.js';

const SSHD = '/usr/sbin/sshd';
const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const FIXTURES = join(ROOT, 'test/fixtures');
const NODES_PER_HOST = 10;

const unavailable = netnsUnavailable() ?? (existsSync(SSHD) ? undefined : `openssh-server is not installed (${SSHD})`)
  ?? (existsSync(join(ROOT, 'dist/ssh-bundle/agent/main.js')) ? undefined : 'dist/ is not built (npm run build)');
if (unavailable) {
  console.error(`bench:fleet: ${unavailable}`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// Everything made is removed on every way out: processes (found by this folder in their
// environment), controllers, namespaces (the processes inside killed first), the folder.

const work = mkdtempSync(join(tmpdir(), 'drover-bench-fleet-'));
const cleanups: (() => unknown)[] = [];
let cleaning: Promise<void> | undefined;
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    killAll(processesWithEnv(work));
    for (const fn of cleanups.reverse()) {
      try {
        await fn();
      } catch (err) {
        console.error(`clean-up: ${String(err)}`);
      }
    }
    killAll(processesWithEnv(work));
    rmSync(work, { recursive: true, force: true });
  })();
  return cleaning;
}
for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
  process.once(signal, () => {
    console.error(`\nbench:fleet: ${signal}, removing what it made`);
    void cleanup().finally(() => process.exit(code));
  });
}

const logger = pino({ level: process.env.BENCH_LOG ?? 'silent' });
// The built controller, as `drover controller` runs it: its local provider starts the built agent
// (dist/agent/main.js), as joined nodes and ssh hosts do, not the sources through tsx.
const { startServer } = (await import(pathToFileURL(join(ROOT, 'dist/controller/index.js')).href)) as typeof import('../src/controller/index.js');
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const f = (ms: number) => (ms / 1000).toFixed(2);
const range = (xs: number[]) => `${f(Math.min(...xs))}–${f(Math.max(...xs))}`;

interface Inst { id: string; role: string | null; state: string; address: string | null; exports: Record<string, string> }
interface Ev { at: string; kind: string; instance: string | null; message: string; data?: { to?: string } }

/** The environment of everything this bench starts: found again by {@link processesWithEnv}. */
const benchEnv = { ...process.env, DROVER_BENCH_FLEET: work, DROVER_LOG_LEVEL: 'warn' };

// ---------------------------------------------------------------------------------------------

/** The backlog the scraped metric reports; the breach sets it. */
let backlog = 0;

async function controller(name: string, extra: { sshHosts?: string } = {}): Promise<{ server: RunningController; api: ReturnType<typeof apiClient>; stop: () => Promise<void> }> {
  const dir = join(work, name);
  const server = await startServer({ dataDir: join(dir, '.drover'), host: bridgeIp, port: 0, logger, ...extra });
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    // Agents first: a controller closing with agents connected waits for them.
    killAll(processesWithEnv(dir));
    await server.close();
  };
  cleanups.push(stop);
  return { server, api: apiClient(server), stop };
}

/** Starts `count` joined nodes (`drover agent --join`, the built CLI) in host `h`. */
function joinNodes(h: Host, url: string, token: string, count: number, dir: string, labels: string): ChildProcess[] {
  const out: ChildProcess[] = [];
  for (let k = 0; k < count; k++) {
    const name = `${h.name.split('-').pop()}-${k}`;
    const c = h.spawn([process.execPath, BIN, 'agent', '--join', url, '--address', h.ip, '--name', name, '--labels', labels, '--data-dir', join(dir, name)], {
      cwd: dir, env: { ...benchEnv, DROVER_JOIN_TOKEN: token },
    });
    c.stdout?.resume();
    c.stderr?.on('data', (d: Buffer) => {
      if (process.env.BENCH_LOG) process.stderr.write(`[${name}] ${d.toString()}`);
    });
    out.push(c);
  }
  cleanups.push(() => {
    for (const c of out) {
      try {
        process.kill(-c.pid!, 'SIGKILL');
      } catch {
        // gone
      }
    }
  });
  return out;
}

const workerApp = (statsUrl: string, placement: string) => `app: burst
roles:
  worker:
    min: 1
    max: 2
    warmup: 0s
${placement}    start: exec node \${appDir}/fleet-web.mjs
    exports: { url: "http://\${ip}:\${port}" }
    health: { http: /, interval: 200ms }
    metrics:
      - { name: backlog, url: "${statsUrl}", format: json, select: backlog, interval: 250ms, timeout: 200ms }
    scale:
      - queue: { metric: backlog, perInstance: 10, scaleDownStabilization: 0s }
`;

interface Breach { total: number; decision: number; machine: number; assign: number; deploy: number; start: number; seen: number; host: string }

/**
 * With one worker serving and the backlog at 0: the backlog jumps to 15; answers the time until
 * the new member answers an HTTP request on its host's address, split by the controller's events.
 */
async function breach(api: ReturnType<typeof apiClient>, hosts: readonly Host[]): Promise<Breach> {
  const instances = async () => (await api<{ instances: Inst[] }>('GET', '/v1/instances')).instances;
  const before = await instances();
  const known = new Set(before.map((i) => i.id));
  const after = (await api<{ events: { id: number }[] }>('GET', '/v1/events?limit=1')).events[0]?.id ?? 0;
  await sleep(1500); // the policy sees a steady zero first
  const t0 = Date.now();
  backlog = 15;
  const fresh = await until('the new member answering on its host', async () => {
    const n = (await instances()).find((i) => i.role === 'worker' && i.state === 'serving' && !known.has(i.id));
    if (!n?.exports.url) return undefined;
    const r = await fetch(n.exports.url, { signal: AbortSignal.timeout(1000) }).catch(() => undefined);
    return r?.ok && (await r.text()).trim() === n.id ? n : undefined;
  }, 120_000, 25);
  const seenAt = Date.now();
  const host = hosts.find((h) => fresh.address?.startsWith(`${h.ip}:`));
  if (!host) throw new Error(`the new member ${fresh.id} is not on a namespaced host (${fresh.address})`);
  const ev = (await api<{ events: Ev[] }>('GET', `/v1/events?limit=1000&after=${after}`)).events;
  const at = (p: (e: Ev) => boolean) => {
    const e = ev.find(p);
    if (!e) throw new Error(`no event for ${fresh.id}: ${ev.map((x) => `${x.kind} ${x.message}`).join(' | ')}`);
    return Date.parse(e.at);
  };
  if (process.env.BENCH_EVENTS) for (const e of ev) console.log(`  +${Date.parse(e.at) - t0} ms ${e.kind}: ${e.message}`);
  const decided = at((e) => e.kind === 'scale.policy');
  const firstReport = at((e) => e.kind === 'instance.state' && e.instance === fresh.id);
  const assigned = at((e) => e.kind === 'instance.state' && e.instance === fresh.id && e.data?.to === 'assigned');
  const starting = at((e) => e.kind === 'instance.state' && e.instance === fresh.id && e.data?.to === 'starting');
  const serving = at((e) => e.kind === 'instance.state' && e.instance === fresh.id && e.data?.to === 'serving');
  return {
    total: seenAt - t0, decision: decided - t0, machine: firstReport - decided, assign: assigned - firstReport, deploy: starting - assigned,
    start: serving - starting, seen: seenAt - serving, host: host.name,
  };
}

/** Backlog back to 0: one worker again, the other's machine released. */
async function settle(api: ReturnType<typeof apiClient>, done: () => Promise<boolean>): Promise<void> {
  backlog = 0;
  await until('back to one worker', async () => {
    const { instances } = await api<{ instances: Inst[] }>('GET', '/v1/instances');
    return instances.filter((i) => i.role === 'worker' && i.state !== 'terminated' && i.state !== 'failed').length === 1 && (await done()) ? true : undefined;
  }, 60_000, 100);
}

async function oneServing(api: ReturnType<typeof apiClient>): Promise<void> {
  await until('one worker serving', async () => {
    const { instances } = await api<{ instances: Inst[] }>('GET', '/v1/instances');
    return instances.some((i) => i.role === 'worker' && i.state === 'serving') ? true : undefined;
  }, 120_000, 100);
}

/** 1a: a joined node idle on another host. */
async function breachJoined(hosts: readonly Host[], statsUrl: string): Promise<Breach[]> {
  const { server, api, stop } = await controller('joined');
  const { token } = await api<{ token: string }>('POST', '/v1/tokens', { app: 'burst', uses: 2, ttlSeconds: 3600 });
  joinNodes(hosts[0]!, server.url, token, 1, join(work, 'joined'), 'tier=worker');
  joinNodes(hosts[1]!, server.url, token, 1, join(work, 'joined'), 'tier=worker');
  type NodeOut = { state: string };
  const idle = async () => (await api<{ nodes: NodeOut[] }>('GET', '/v1/nodes')).nodes.filter((n) => n.state === 'idle').length;
  await until('two nodes joined', async () => ((await idle()) === 2 ? true : undefined), 60_000);
  await api('PUT', '/v1/apps/burst', { yaml: workerApp(statsUrl, '    placement: { labels: { tier: worker } }\n'), appDir: FIXTURES });
  await oneServing(api);
  const out: Breach[] = [];
  for (let k = 0; k < RUNS; k++) {
    out.push(await breach(api, hosts));
    await settle(api, async () => (await idle()) === 1);
  }
  await stop();
  return out;
}

// ---------------------------------------------------------------------------------------------
// ssh hosts: a private sshd in each namespace (generated host key, its own config), as
// test/provider-ssh.test.ts does.

function keygen(file: string): string {
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'drover-bench', '-f', file]);
  return execFileSync('ssh-keygen', ['-l', '-f', `${file}.pub`], { encoding: 'utf8' }).split(' ')[1]!;
}

async function startSshd(hosts: readonly Host[]): Promise<{ host: Host; fingerprint: string }[]> {
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 }); // sshd's privilege separation folder
  const dir = join(work, 'sshd');
  mkdirSync(dir, { mode: 0o700 });
  keygen(join(dir, 'client_key'));
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'client_key.pub')), { mode: 0o600 });
  const out = hosts.map((host, k) => {
    const hostKey = join(dir, `host${k}_key`);
    const fingerprint = keygen(hostKey);
    const config = join(dir, `sshd${k}.conf`);
    writeFileSync(config, [
      'Port 2222', `ListenAddress ${host.ip}`, `HostKey ${hostKey}`, `PidFile ${join(dir, `sshd${k}.pid`)}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`, 'PermitRootLogin prohibit-password', 'PasswordAuthentication no',
      'KbdInteractiveAuthentication no', 'UsePAM no', 'StrictModes no', 'Subsystem sftp internal-sftp', 'LogLevel ERROR', 'MaxStartups 100', '',
    ].join('\n'), { mode: 0o600 });
    const d = host.spawn([SSHD, '-D', '-e', '-f', config], { env: benchEnv });
    cleanups.push(() => d.pid && killAll([d.pid]));
    return { host, fingerprint };
  });
  for (const { host } of out) {
    await until(`sshd on ${host.ip}`, () => new Promise<true | undefined>((resolve) => {
      const s = connect(2222, host.ip, () => (s.destroy(), resolve(true)));
      s.on('error', () => resolve(undefined));
    }), 10_000, 100);
  }
  return out;
}

/** 1b: a cold ssh host (a folder it never had: the agent installed, started, the bundle fetched); a fresh controller each run. */
async function breachSsh(hosts: readonly Host[], statsUrl: string): Promise<Breach[]> {
  const sshd = await startSshd(hosts);
  const key = join(work, 'sshd/client_key');
  const out: Breach[] = [];
  for (let k = 0; k < RUNS; k++) {
    const file = join(work, `ssh-hosts-${k}.yaml`);
    // The first member's host keeps its folder (warm); the breach goes to the other, cold every run.
    const dirs = [join(work, 'ssh-warm'), join(work, `ssh-cold-${k}`)];
    writeFileSync(file, `hosts:\n${sshd.map(({ host, fingerprint }, i) => [
      `  - name: ${host.name.split('-').pop()}`, `    address: ${host.ip}`, '    port: 2222', '    user: root', `    keyFile: ${key}`, `    hostKey: "${fingerprint}"`,
      `    node: ${process.execPath}`, '    slots: 1', `    dir: ${dirs[i]}`, '',
    ].join('\n')).join('')}`, { mode: 0o600 });
    const { api, stop } = await controller(`ssh-${k}`, { sshHosts: file });
    await api('PUT', '/v1/apps/burst', { yaml: workerApp(statsUrl, ''), appDir: FIXTURES });
    await oneServing(api);
    const b = await breach(api, hosts);
    if (b.host !== hosts[1]!.name) throw new Error(`the breach went to ${b.host}, not the cold host`);
    out.push(b);
    backlog = 0;
    killAll([...processesWithEnv(dirs[0]!), ...processesWithEnv(dirs[1]!)]);
    await stop();
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// 2: fifty instances.

const fiftyApp = (placement: string) => `app: fifty
roles:
  web:
    count: 50
${placement}    start: exec node \${appDir}/fleet-web.mjs
    exports: { url: "http://\${ip}:\${port}" }
    health: { http: /, interval: 500ms }
`;

/** Apply → all serving (events: `app.apply` → the last `→ serving`), and where they run. */
/** Ms from the apply: first, 25th and 50th serving; per instance (median): create → agent's first report, → `starting`, → `serving`. */
interface Fifty { first: number; half: number; ms: number; up: number; deploy: number; start: number; byHost: Map<string, number> }

async function applyFifty(api: ReturnType<typeof apiClient>, yaml: string): Promise<Fifty> {
  await api('PUT', '/v1/apps/fifty', { yaml, appDir: FIXTURES });
  const serving = await until('50 serving', async () => {
    const { instances } = await api<{ instances: Inst[] }>('GET', '/v1/instances');
    const s = instances.filter((i) => i.role === 'web' && i.state === 'serving');
    return s.length === 50 ? s : undefined;
  }, 240_000, 250);
  const { events } = await api<{ events: Ev[] }>('GET', '/v1/events?limit=1000&after=0');
  const applied = Date.parse(events.find((e) => e.kind === 'app.apply')!.at);
  const times = events.filter((e) => e.kind === 'instance.state' && e.data?.to === 'serving').map((e) => Date.parse(e.at) - applied).sort((a, b) => a - b);
  const byHost = new Map<string, number>();
  for (const i of serving) {
    const ip = i.address?.split(':')[0] ?? '?';
    byHost.set(ip, (byHost.get(ip) ?? 0) + 1);
  }
  const of = (id: string, p: (e: Ev) => boolean) => Date.parse(events.find((e) => e.instance === id && p(e))?.at ?? 'x');
  const per = serving.map((i) => {
    const created = of(i.id, (e) => e.kind === 'instance.create');
    const up = of(i.id, (e) => e.kind === 'instance.state');
    const starting = of(i.id, (e) => e.kind === 'instance.state' && e.data?.to === 'starting');
    const served = of(i.id, (e) => e.kind === 'instance.state' && e.data?.to === 'serving');
    return { up: up - created, deploy: starting - up, start: served - starting };
  });
  const med = (k: 'up' | 'deploy' | 'start') => median(per.map((x) => x[k]).filter((x) => Number.isFinite(x)));
  return { first: times[0]!, half: times[24]!, ms: times.at(-1)!, up: med('up'), deploy: med('deploy'), start: med('start'), byHost };
}

async function fiftyJoined(hosts: readonly Host[]): Promise<Fifty & { joinMs: number }> {
  const { server, api, stop } = await controller('fifty');
  const { token } = await api<{ token: string }>('POST', '/v1/tokens', { app: 'fifty', uses: hosts.length * NODES_PER_HOST, ttlSeconds: 3600 });
  const t0 = Date.now();
  for (const h of hosts) joinNodes(h, server.url, token, NODES_PER_HOST, join(work, 'fifty'), 'tier=web');
  await until('50 nodes joined', async () => ((await api<{ nodes: { state: string }[] }>('GET', '/v1/nodes')).nodes.filter((n) => n.state === 'idle').length === 50 ? true : undefined), 180_000, 500);
  const joinMs = Date.now() - t0;
  const r = await applyFifty(api, fiftyApp('    placement: { labels: { tier: web } }\n'));
  await stop();
  return { ...r, joinMs };
}

async function fiftyLocal(): Promise<Fifty> {
  const { api, stop } = await controller('local');
  const r = await applyFifty(api, fiftyApp(''));
  await stop();
  return r;
}

// ---------------------------------------------------------------------------------------------

let bridgeIp = '';

/** Wall time of the parts of a run, for the record. */
function timed(): { lap: (what: string) => void; text: () => string } {
  let last = Date.now();
  const laps: string[] = [];
  return {
    lap: (what) => {
      laps.push(`${what} ${f(Date.now() - last)} s`);
      last = Date.now();
    },
    text: () => laps.join(', '),
  };
}

async function main(): Promise<void> {
  const started = Date.now();
  // Hosts 0–4: joined nodes; 5–6: ssh hosts.
  const net = makeNetwork({ after: (fn: () => void) => cleanups.push(fn) } as unknown as TestContext, 7);
  bridgeIp = net.bridgeIp;
  const nodeHosts = net.hosts.slice(0, 5);
  const sshHosts = net.hosts.slice(5);
  const stats = createServer((_req, res) => res.end(JSON.stringify({ backlog })));
  await new Promise<void>((r) => stats.listen(0, bridgeIp, r));
  cleanups.push(() => stats.close());
  const statsUrl = `http://${bridgeIp}:${(stats.address() as { port: number }).port}/stats`;

  console.log(`drover fleet benchmark — ${new Date().toISOString()}; node ${process.version}, ${cpus().length} cores, load average ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
  if (process.env.BENCH_BREACH !== '0') await breaches(nodeHosts, sshHosts, statsUrl);
  if (process.env.BENCH_FIFTY !== '0') await fifty(net.hosts, nodeHosts);
  console.log(`\n(bench:fleet took ${f(Date.now() - started)} s)`);
}

async function breaches(nodeHosts: readonly Host[], sshHosts: readonly Host[], statsUrl: string): Promise<void> {
  const parts = timed();
  const joined = await breachJoined(nodeHosts, statsUrl);
  parts.lap('joined');
  const ssh = await breachSsh(sshHosts, statsUrl);
  parts.lap('ssh');
  const row = (name: string, bs: Breach[]) => {
    const m = (k: keyof Omit<Breach, 'host'>) => f(median(bs.map((b) => b[k])));
    return `| ${name} | ${m('total')} | ${range(bs.map((b) => b.total))} | ${m('decision')} | ${m('machine')} | ${m('assign')} | ${m('deploy')} | ${m('start')} | ${m('seen')} |`;
  };
  console.log(`\nBreach (backlog 0 → 15, the queue policy wants 1 → 2) → the new member answering on a namespaced host; ${RUNS} runs each, median (s)\n`);
  console.log('| new member on | breach → serving | range | decision | machine | assign | deploy | start | seen |');
  console.log('| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |');
  console.log(row('a joined node, idle on another host', joined));
  console.log(row('a cold ssh host (agent installed, started, bundle fetched)', ssh));
  console.log(`\n(wall time: ${parts.text()})`);
}

async function fifty(all: readonly Host[], nodeHosts: readonly Host[]): Promise<void> {
  const parts = timed();
  const fleet = await fiftyJoined(nodeHosts);
  parts.lap('fleet');
  const local = await fiftyLocal();
  parts.lap('local');
  const split = (m: Map<string, number>) => [...m].sort().map(([ip, n]) => `${all.find((h) => h.ip === ip)?.name.split('-').pop() ?? (ip === '127.0.0.1' ? 'this machine' : ip)}: ${n}`).join(', ');
  console.log(`\n50 instances, apply → serving (s from the \`app.apply\` event; per instance, the median from its creation)\n`);
  console.log('| where | first serving | 25 serving | all 50 serving | per instance: agent up | deploy | start | per host |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |');
  const line = (name: string, r: Fifty) => `| ${name} | ${f(r.first)} | ${f(r.half)} | ${f(r.ms)} | ${f(r.up)} | ${f(r.deploy)} | ${f(r.start)} | ${split(r.byHost)} |`;
  console.log(line(`5 namespaced hosts, ${NODES_PER_HOST} joined nodes each (joined in ${f(fleet.joinMs)} s, before the apply)`, fleet));
  console.log(line('reference: the local provider, this machine', local));
  console.log(`\n(wall time: ${parts.text()})`);
}

try {
  await main();
} finally {
  await cleanup();
}
