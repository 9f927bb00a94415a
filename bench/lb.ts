/**
 * `npm run bench:lb`: requests/s and latency through the builtin proxy, through HAProxy, and
 * straight to one member, in the same run on 127.0.0.1, each balancer also as a ratio to
 * direct; then how long a member change takes to apply. The load comes from wrk (a native load
 * generator: `apt-get install -y wrk`), so the balancers and not the generator are the
 * bottleneck; members run in a child process, the builtin proxy on this main thread.
 *
 * BENCH_SECONDS (default 5) per case, BENCH_CONNECTIONS (default 50) keep-alive connections,
 * BENCH_WRK_THREADS (default 1) wrk threads.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { createDriver, requireHaproxy, type LbDriverKind, type LbMember, type LoadBalancerDriver } from '../src/adapters/lb/index.js';

const HOST = '127.0.0.1';
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50);
/** wrk threads (BENCH_WRK_THREADS); one leaves the other core of a 2-core machine to the balancer and members. */
const THREADS = Number(process.env.BENCH_WRK_THREADS ?? 1);
const CHANGE_RUNS = 5;
const logger = pino({ level: process.env.BENCH_LOG ?? 'warn' });

// Three members in one child process; each answers its id (small, fixed body).
const MEMBERS_SCRIPT = `
const http = require('node:http');
const ports = [];
let n = 0;
for (const id of ['m1', 'm2', 'm3']) {
  const s = http.createServer((req, res) => { res.writeHead(200, { 'content-type': 'text/plain', 'content-length': id.length }); res.end(id); });
  s.keepAliveTimeout = 30000;
  s.listen(0, '${HOST}', () => { ports.push([id, s.address().port]); if (++n === 3) process.stdout.write(JSON.stringify(ports) + '\\n'); });
}`;

interface LoadResult {
  requests: number;
  errors: number;
  rps: number;
  p50: number;
  p99: number;
}

/** The load generator: wrk, a native one, on its own core(s), so the balancers and not the generator are measured. */
function requireWrk(): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn('wrk', ['--version'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (out += d.toString()));
    p.once('error', () => reject(new Error('wrk is not installed: `apt-get install -y wrk` (Debian/Ubuntu), `brew install wrk` (macOS)')));
    p.once('close', () => resolve(/wrk \S+/.exec(out)?.[0] ?? 'wrk'));
  });
}

function runWrk(port: number, seconds: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const args = ['-t', String(THREADS), '-c', String(CONNECTIONS), '-d', `${seconds}s`, '--latency', `http://${HOST}:${port}/`];
    const p = spawn('wrk', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (out += d.toString()));
    p.once('error', reject);
    p.once('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`wrk exited with ${code}: ${out}`))));
  });
}

/** wrk's latency ("1.23ms", "850.00us", "1.02s") in ms. */
function wrkMs(text: string | undefined): number {
  const m = /^([\d.]+)(us|ms|s)$/.exec(text ?? '');
  if (!m) return NaN;
  return Number(m[1]) * (m[2] === 'us' ? 0.001 : m[2] === 's' ? 1000 : 1);
}

async function load(port: number): Promise<LoadResult> {
  await runWrk(port, 1); // warm-up: connections, JIT, HAProxy's first health checks
  const out = await runWrk(port, SECONDS);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? NaN);
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const errors = non2xx + (sock ? sock.slice(1).reduce((n, x) => n + Number(x), 0) : 0);
  return { requests, errors, rps, p50: wrkMs(/^\s+50%\s+(\S+)/m.exec(out)?.[1]), p99: wrkMs(/^\s+99%\s+(\S+)/m.exec(out)?.[1]) };
}

async function startMembers(): Promise<{ child: ChildProcess; members: LbMember[] }> {
  const child = spawn(process.execPath, ['-e', MEMBERS_SCRIPT], { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve, reject) => {
    child.stdout.once('data', (d: Buffer) => resolve(d.toString()));
    child.once('exit', (code) => reject(new Error(`members exited (${code})`)));
  });
  const ports = (JSON.parse(line) as [string, number][]).sort(([a], [b]) => a.localeCompare(b));
  return { child, members: ports.map(([id, port]) => ({ id, address: `${HOST}:${port}`, state: 'ready' })) };
}

function get(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: HOST, port, path: '/', agent: false }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve(body));
      })
      .on('error', reject);
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

interface ChangeTimes {
  addApply: number;
  addFirstRequest: number;
  removeGone: number;
}

/** Adds a third member and removes it again, CHANGE_RUNS times, with no load running. */
async function changeTimes(lb: LoadBalancerDriver, port: number, members: LbMember[]): Promise<ChangeTimes> {
  const base = members.slice(0, 2);
  const adds: number[] = [];
  const firsts: number[] = [];
  const removes: number[] = [];
  for (let i = 0; i < CHANGE_RUNS; i++) {
    const t0 = performance.now();
    await lb.setMembers(members);
    adds.push(performance.now() - t0);
    while ((await get(port)) !== 'm3') {
      // round robin reaches the new member within three requests
    }
    firsts.push(performance.now() - t0);
    const t1 = performance.now();
    await lb.setMembers(base);
    while ((await lb.stats()).some((s) => s.id === 'm3')) await new Promise((r) => setTimeout(r, 5));
    removes.push(performance.now() - t1);
  }
  return { addApply: median(adds), addFirstRequest: median(firsts), removeGone: median(removes) };
}

interface Row {
  target: string;
  members: number;
  result?: LoadResult;
  change?: ChangeTimes;
  note?: string;
}

async function throughDriver(kind: LbDriverKind, members: LbMember[], label: string): Promise<Row> {
  const workdir = mkdtempSync(join(os.tmpdir(), 'drover-bench-lb-'));
  const lb = createDriver(kind, { listen: { host: HOST, port: 0 }, workdir, logger });
  try {
    const { port } = await lb.start();
    await lb.setMembers(members.slice(0, 2));
    const result = await load(port);
    const change = await changeTimes(lb, port, members);
    return { target: label, members: 2, result, change };
  } finally {
    await lb.stop();
    rmSync(workdir, { recursive: true, force: true });
  }
}

const wrkVersion = await requireWrk().catch((err: Error) => {
  console.error(`bench:lb: ${err.message}`);
  process.exit(1);
});
const { child, members } = await startMembers();
const rows: Row[] = [];
try {
  const direct = Number(members[0]!.address.split(':')[1]);
  rows.push({ target: 'direct to one member', members: 1, result: await load(direct) });
  rows.push(await throughDriver('builtin', members, 'builtin (Node proxy)'));
  const haproxy = await requireHaproxy().then(
    (v) => ({ ok: true as const, version: v.text }),
    (err: Error) => ({ ok: false as const, reason: err.message }),
  );
  if (haproxy.ok) rows.push(await throughDriver('haproxy', members, `haproxy ${haproxy.version}`));
  else rows.push({ target: 'haproxy', members: 2, note: haproxy.reason });
} finally {
  child.kill();
}

const f = (n: number | undefined, digits = 1) => (n === undefined || Number.isNaN(n) ? '–' : n.toFixed(digits));
const cpu = os.cpus()[0]?.model.trim() ?? 'unknown cpu';
console.log(`\n## Load balancer throughput (${SECONDS} s per case, ${CONNECTIONS} keep-alive connections, 127.0.0.1)\n`);
console.log(`node ${process.version}, ${os.cpus().length} × ${cpu}; members in one child process, the builtin proxy in the bench's process, load from ${wrkVersion} (${THREADS} thread(s)).\n`);
console.log('| target | members | req/s | vs direct | p50 ms | p99 ms | errors |');
console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
const directRps = rows[0]?.result?.rps;
for (const r of rows) {
  if (!r.result) console.log(`| ${r.target} | ${r.members} | – | – | – | – | ${r.note ?? ''} |`);
  else {
    const ratio = directRps ? `${(r.result.rps / directRps).toFixed(2)}×` : '–';
    console.log(`| ${r.target} | ${r.members} | ${Math.round(r.result.rps)} | ${ratio} | ${f(r.result.p50, 2)} | ${f(r.result.p99, 2)} | ${r.result.errors} |`);
  }
}
console.log(`\n## Time to apply a member change (median of ${CHANGE_RUNS}, no load)\n`);
console.log('| driver | add: setMembers resolved | add: first request served by it | remove idle member: gone from stats |');
console.log('| --- | ---: | ---: | ---: |');
for (const r of rows.filter((r) => r.change)) {
  console.log(`| ${r.target} | ${f(r.change!.addApply, 2)} ms | ${f(r.change!.addFirstRequest, 2)} ms | ${f(r.change!.removeGone, 2)} ms |`);
}
