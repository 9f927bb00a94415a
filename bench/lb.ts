/**
 * `npm run bench:lb`: requests/s and latency through the builtin proxy, through HAProxy, and
 * straight to one member, in the same run on 127.0.0.1; then how long a member change takes to
 * apply. Members run in a child process and the load generator in a worker thread, so neither
 * shares an event loop with the builtin proxy (which runs on this main thread).
 *
 * BENCH_SECONDS (default 5) per case, BENCH_CONNECTIONS (default 50) keep-alive connections.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { pino } from 'pino';
import { createDriver, requireHaproxy, type LbDriverKind, type LbMember, type LoadBalancerDriver } from '../src/adapters/lb/index.js';

const HOST = '127.0.0.1';
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50);
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

// The load generator: CONNECTIONS loops, each one request at a time on its own keep-alive socket.
const LOAD_SCRIPT = `
const http = require('node:http');
const { workerData, parentPort } = require('node:worker_threads');
const { port, host, seconds, connections, warmupMs } = workerData;
const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
const lat = [];
let errors = 0;
const one = () => new Promise((resolve) => {
  const t0 = process.hrtime.bigint();
  const req = http.get({ host, port, path: '/', agent }, (res) => {
    res.resume();
    res.on('end', () => { if (res.statusCode !== 200) errors++; resolve(Number(process.hrtime.bigint() - t0) / 1e6); });
  });
  req.on('error', () => { errors++; resolve(undefined); });
});
(async () => {
  const warmEnd = Date.now() + warmupMs;
  await Promise.all(Array.from({ length: connections }, async () => { while (Date.now() < warmEnd) await one(); }));
  errors = 0;
  const start = Date.now();
  const end = start + seconds * 1000;
  await Promise.all(Array.from({ length: connections }, async () => { while (Date.now() < end) { const ms = await one(); if (ms !== undefined) lat.push(ms); } }));
  const elapsed = (Date.now() - start) / 1000;
  lat.sort((a, b) => a - b);
  const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] ?? NaN;
  agent.destroy();
  parentPort.postMessage({ requests: lat.length, errors, rps: lat.length / elapsed, p50: q(0.5), p99: q(0.99) });
})();`;

interface LoadResult {
  requests: number;
  errors: number;
  rps: number;
  p50: number;
  p99: number;
}

function load(port: number): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const w = new Worker(LOAD_SCRIPT, { eval: true, workerData: { port, host: HOST, seconds: SECONDS, connections: CONNECTIONS, warmupMs: 500 } });
    w.once('message', (m: LoadResult) => resolve(m));
    w.once('error', reject);
  });
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
console.log(`node ${process.version}, ${os.cpus().length} × ${cpu}; members in one child process, load generator in a worker thread.\n`);
console.log('| target | members | req/s | p50 ms | p99 ms | errors |');
console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
for (const r of rows) {
  if (!r.result) console.log(`| ${r.target} | ${r.members} | – | – | – | ${r.note ?? ''} |`);
  else console.log(`| ${r.target} | ${r.members} | ${Math.round(r.result.rps)} | ${f(r.result.p50, 2)} | ${f(r.result.p99, 2)} | ${r.result.errors} |`);
}
console.log(`\n## Time to apply a member change (median of ${CHANGE_RUNS}, no load)\n`);
console.log('| driver | add: setMembers resolved | add: first request served by it | remove idle member: gone from stats |');
console.log('| --- | ---: | ---: | ---: |');
for (const r of rows.filter((r) => r.change)) {
  console.log(`| ${r.target} | ${f(r.change!.addApply, 2)} ms | ${f(r.change!.addFirstRequest, 2)} ms | ${f(r.change!.removeGone, 2)} ms |`);
}
