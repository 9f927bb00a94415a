// The queue role: an embedded work queue over HTTP with at-least-once delivery.
//
//   POST /tasks          { id?, payload }           → 201 { id, created: true } | 200 { id, created: false }
//   POST /lease          { wait?, visibility?, consumer? } (seconds)
//                        → 200 { lease, id, payload, deliveries, visibility_timeout_ms, expires_at } | 204
//   POST /ack/{lease}    → 204 | 410 lease_expired   the task is done: forget it
//   POST /nack/{lease}   → 204 | 410                 give it back, to be delivered again now
//   POST /extend/{lease} { visibility? }             → 200 { expires_at } | 410   still working on it
//   GET  /stats          → { backlog, ready, leased, acked, redelivered, … }
//   GET  /leases         → who holds what, for people and tests
//   GET  /health         → ok
//
// A lease that is neither acked, nacked nor extended within the visibility timeout expires and
// its task is delivered again: a worker killed mid-task loses nothing. Tasks are journaled in
// $DROVER_WORKDIR/queue.jsonl before the enqueue is answered, so a restarted queue still has
// every task that was not acked (leases are not journaled: after a restart, every unacked task
// is delivered again).
import { randomUUID } from 'node:crypto';
import { appendFileSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { durationEnv, exitOnSignals, logger, problem } from './lib.mjs';
import { createApp, listen } from './server.mjs';

const log = logger('queue');
const visibilityMs = durationEnv('VISIBILITY_TIMEOUT', 30_000);
const MAX_WAIT_MS = 30_000;
const MAX_VISIBILITY_MS = 3_600_000;
const TASK_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const dir = process.env.QUEUE_DIR || process.env.DROVER_WORKDIR || '';
const journal = dir ? join(dir, 'queue.jsonl') : undefined;

/** @typedef {{ id: string, payload: unknown, enqueuedAt: number, deliveries: number }} Task */
/** @typedef {{ lease: string, taskId: string, consumer: string, leasedAt: number, expiresAt: number, visibilityMs: number }} Lease */

/** Tasks not acked yet, ready or leased. @type {Map<string, Task>} */
const tasks = new Map();
/** Ids of ready tasks, oldest first; redelivered tasks go to the front. @type {string[]} */
let ready = [];
/** @type {Map<string, Lease>} */
const leases = new Map();
/** Consumers long-polling for a task, oldest first. */
let waiters = [];
const counters = { enqueued: 0, acked: 0, redelivered: 0, nacked: 0, expired: 0 };
/** Journal lines that no longer describe a live task; compaction drops them. */
let deadLines = 0;

// ---------------------------------------------------------------------------------------------
// Journal

function load() {
  if (!journal) {
    log.warn('neither QUEUE_DIR nor DROVER_WORKDIR is set: tasks are kept in memory only');
    return;
  }
  mkdirSync(dir, { recursive: true });
  let text = '';
  try {
    text = readFileSync(journal, 'utf8');
  } catch (err) {
    if (err.code !== 'ENOENT') throw err;
  }
  const order = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    let rec;
    try {
      rec = JSON.parse(line);
    } catch {
      // Only the last line can be torn (a kill during an append); its enqueue was never
      // answered, so its client retries.
      continue;
    }
    if (rec.op === 'enq' && !tasks.has(rec.id)) {
      tasks.set(rec.id, { id: rec.id, payload: rec.payload, enqueuedAt: rec.at ?? Date.now(), deliveries: 0 });
      order.push(rec.id);
      // Lines carried over by a compaction are already in its counters.
      if (!rec.carried) counters.enqueued++;
    } else if (rec.op === 'ack' && tasks.delete(rec.id)) {
      counters.acked++;
    } else if (rec.op === 'counters') {
      Object.assign(counters, rec.counters);
    }
  }
  ready = order.filter((id) => tasks.has(id));
  compact();
  log.info(`journal ${journal}: ${tasks.size} task(s) not acked, delivered again from now`);
}

function append(rec) {
  if (!journal) return;
  // Synchronous, so the line is in the file (the OS's page cache: it survives a kill of this
  // process) before the request is answered, and lines keep the order of the operations.
  appendFileSync(journal, JSON.stringify(rec) + '\n');
}

function compact() {
  if (!journal) return;
  const lines = [JSON.stringify({ op: 'counters', counters })];
  for (const t of tasks.values()) lines.push(JSON.stringify({ op: 'enq', id: t.id, payload: t.payload, at: t.enqueuedAt, carried: true }));
  const tmp = `${journal}.tmp`;
  writeFileSync(tmp, lines.join('\n') + '\n');
  renameSync(tmp, journal);
  deadLines = 0;
}

function maybeCompact() {
  if (deadLines > 1000 && deadLines > 2 * tasks.size) compact();
}

// ---------------------------------------------------------------------------------------------
// Delivery

function lease(consumer, visMs) {
  const id = ready.shift();
  if (id === undefined) return undefined;
  const task = tasks.get(id);
  if (task.deliveries > 0) counters.redelivered++;
  task.deliveries++;
  const now = Date.now();
  const l = { lease: randomUUID(), taskId: id, consumer, leasedAt: now, expiresAt: now + visMs, visibilityMs: visMs };
  leases.set(l.lease, l);
  return {
    lease: l.lease,
    id,
    payload: task.payload,
    deliveries: task.deliveries,
    visibility_timeout_ms: visMs,
    expires_at: new Date(l.expiresAt).toISOString(),
  };
}

/** Hands ready tasks to waiting consumers, oldest waiter first. */
function dispatch() {
  while (ready.length > 0 && waiters.length > 0) {
    const w = waiters.shift();
    if (w.gone) continue;
    w.gone = true;
    clearTimeout(w.timer);
    w.resolve(lease(w.consumer, w.visibilityMs));
  }
}

function requeueFront(id) {
  ready.unshift(id);
  dispatch();
}

// Leases are few (one per busy worker), so a scan every 100 ms is cheap and keeps redelivery
// within 0.1 s of the timeout.
setInterval(() => {
  const now = Date.now();
  for (const l of leases.values()) {
    if (l.expiresAt > now) continue;
    leases.delete(l.lease);
    counters.expired++;
    log.info(`lease of task ${l.taskId} by ${l.consumer} expired after ${((now - l.leasedAt) / 1000).toFixed(1)}s; delivering it again`);
    requeueFront(l.taskId);
  }
}, 100);

function stats() {
  return {
    backlog: ready.length + leases.size,
    ready: ready.length,
    leased: leases.size,
    acked: counters.acked,
    redelivered: counters.redelivered,
    enqueued: counters.enqueued,
    nacked: counters.nacked,
    expired: counters.expired,
    waiting_consumers: waiters.length,
    visibility_timeout_ms: visibilityMs,
  };
}

// ---------------------------------------------------------------------------------------------
// HTTP

/** Seconds from a request body, as milliseconds, or a problem naming the field. */
function seconds(body, field, { fallbackMs, maxMs, allowZero }) {
  const v = body?.[field];
  if (v === undefined) return { ms: fallbackMs };
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || (!allowZero && v === 0) || v * 1000 > maxMs) {
    return { error: problem('invalid_field', `${field}: expected a number of seconds from ${allowZero ? 0 : 'above 0'} to ${maxMs / 1000}`, { field }) };
  }
  return { ms: Math.round(v * 1000) };
}

function notHeld(reply, leaseId) {
  return reply
    .code(410)
    .send(problem('lease_expired', `lease ${leaseId} is not held: it expired (its task was delivered again) or was already acked or nacked`));
}

load();
const app = createApp({ bodyLimit: 4 * 1024 * 1024 });

app.post('/tasks', async (req, reply) => {
  const body = req.body;
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    return reply.code(400).send(problem('invalid_body', 'expected a JSON object such as {"id": "…", "payload": {…}}'));
  }
  for (const k of Object.keys(body)) {
    if (k !== 'id' && k !== 'payload') return reply.code(400).send(problem('unknown_field', `${k}: unknown field (expected id, payload)`, { field: k }));
  }
  if (body.id !== undefined && (typeof body.id !== 'string' || !TASK_ID.test(body.id))) {
    return reply.code(400).send(problem('invalid_field', 'id: expected 1 to 128 letters, digits or ._:-', { field: 'id' }));
  }
  if (body.payload === undefined) return reply.code(400).send(problem('invalid_field', 'payload: required', { field: 'payload' }));
  const id = body.id ?? randomUUID();
  // An enqueue retried after a lost answer must not make a second task.
  if (tasks.has(id)) return reply.code(200).send({ id, created: false });
  append({ op: 'enq', id, payload: body.payload, at: Date.now() });
  tasks.set(id, { id, payload: body.payload, enqueuedAt: Date.now(), deliveries: 0 });
  counters.enqueued++;
  ready.push(id);
  dispatch();
  return reply.code(201).send({ id, created: true });
});

app.post('/lease', async (req, reply) => {
  const body = req.body ?? {};
  if (typeof body !== 'object' || Array.isArray(body)) return reply.code(400).send(problem('invalid_body', 'expected a JSON object'));
  const wait = seconds(body, 'wait', { fallbackMs: 0, maxMs: MAX_WAIT_MS, allowZero: true });
  if (wait.error) return reply.code(400).send(wait.error);
  const vis = seconds(body, 'visibility', { fallbackMs: visibilityMs, maxMs: MAX_VISIBILITY_MS, allowZero: false });
  if (vis.error) return reply.code(400).send(vis.error);
  const consumer = typeof body.consumer === 'string' && body.consumer ? body.consumer.slice(0, 200) : req.ip;

  const now = lease(consumer, vis.ms);
  if (now) return now;
  if (wait.ms === 0) return reply.code(204).send();
  const got = await new Promise((resolve) => {
    const w = { consumer, visibilityMs: vis.ms, resolve, gone: false, timer: undefined };
    w.timer = setTimeout(() => {
      w.gone = true;
      waiters = waiters.filter((x) => x !== w);
      resolve(undefined);
    }, wait.ms);
    // A consumer that hangs up (a worker told to stop) must not be handed a task it will never
    // see; the task would sit leased until its timeout.
    reply.raw.on('close', () => {
      if (w.gone) return;
      w.gone = true;
      clearTimeout(w.timer);
      waiters = waiters.filter((x) => x !== w);
      resolve(undefined);
    });
    waiters.push(w);
  });
  if (got) return got;
  return reply.code(204).send();
});

app.post('/ack/:lease', async (req, reply) => {
  const l = leases.get(req.params.lease);
  if (!l) return notHeld(reply, req.params.lease);
  leases.delete(l.lease);
  tasks.delete(l.taskId);
  append({ op: 'ack', id: l.taskId });
  deadLines += 2;
  counters.acked++;
  maybeCompact();
  return reply.code(204).send();
});

app.post('/nack/:lease', async (req, reply) => {
  const l = leases.get(req.params.lease);
  if (!l) return notHeld(reply, req.params.lease);
  leases.delete(l.lease);
  counters.nacked++;
  requeueFront(l.taskId);
  return reply.code(204).send();
});

app.post('/extend/:lease', async (req, reply) => {
  const l = leases.get(req.params.lease);
  if (!l) return notHeld(reply, req.params.lease);
  const vis = seconds(req.body ?? {}, 'visibility', { fallbackMs: l.visibilityMs, maxMs: MAX_VISIBILITY_MS, allowZero: false });
  if (vis.error) return reply.code(400).send(vis.error);
  l.expiresAt = Date.now() + vis.ms;
  return { expires_at: new Date(l.expiresAt).toISOString() };
});

app.get('/stats', async () => stats());

app.get('/leases', async () => {
  const now = Date.now();
  return [...leases.values()].map((l) => ({
    lease: l.lease,
    id: l.taskId,
    consumer: l.consumer,
    deliveries: tasks.get(l.taskId)?.deliveries ?? 0,
    held_ms: now - l.leasedAt,
    expires_in_ms: Math.max(0, l.expiresAt - now),
  }));
});

await listen(app, log, `visibility timeout ${visibilityMs / 1000}s${journal ? `, journal ${journal}` : ', in memory'}`);
exitOnSignals(app, log);
