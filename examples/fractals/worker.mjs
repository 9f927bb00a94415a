// The worker role: leases a task from the queue, renders its Julia set, uploads the PNG and
// the result through the api, and only then acks the task. A worker killed at any point before
// the ack loses nothing: the lease expires (on RabbitMQ: its connection closes and the broker
// requeues the task) and the task is delivered to another worker.
//
// Env: QUEUE_URL (the embedded queue's base URL, or RabbitMQ's amqp:// URL; QUEUE_NAME names
// the RabbitMQ queue, default fractals), API_URL (one or more api base URLs, comma-joined: a
// member that cannot be reached is skipped), DROVER_INSTANCE (reported as generated_by),
// SAMPLES (anti-aliasing samples per axis, default 2: work grows with its square),
// LEASE_WAIT (long-poll, default 20s), PORT (optional: serves /health and /status).
// SIGTERM: finish the current task, then exit 0.
import { hostname } from 'node:os';
import { DEFAULT_SAMPLES, formatConstant, renderFractalAsync } from './fractal.mjs';
import { CallError, backoff, call, describeAnswer, durationEnv, exitOnSignals, intEnv, logger, requireUrls, retry, sleep } from './lib.mjs';
import { redact } from './queue-amqp.mjs';
import { LeaseLost, createQueueClient } from './queue-client.mjs';
import { createApp, listen } from './server.mjs';

const log = logger('worker');
const instance = process.env.DROVER_INSTANCE || `worker-${hostname()}-${process.pid}`;
const queueUrl = requireUrls('QUEUE_URL', "the queue's base URL, e.g. http://127.0.0.1:7002 (drover sets it from `imports: [queue.url]`)")[0];
const apiUrls = requireUrls('API_URL', 'the api base URL(s), e.g. http://127.0.0.1:8080 (drover sets it from `imports: [api.endpoint]`)');
const samples = intEnv('SAMPLES', DEFAULT_SAMPLES, { min: 1, max: 8 });
const leaseWaitMs = Math.min(durationEnv('LEASE_WAIT', 20_000), 30_000);
const queue = createQueueClient(queueUrl, { log, name: `fractals worker ${instance}` });

const status = { instance, state: 'idle', current: null, completed: 0, skipped: 0, failed: 0, released: 0 };
const stop = new AbortController();

/** A task the worker cannot do however often it tries: reported as failed, then acked. */
class Permanent extends Error {}

// ---------------------------------------------------------------------------------------------
// The api, through whichever member answers

let apiCursor = 0;

/**
 * Calls the api, moving to the next member and backing off while none answers (~15 s). Once
 * the worker is told to stop, a failed call is not retried: the task goes back to the queue
 * rather than hold the exit up.
 */
function api(method, path, opts = {}) {
  return retry(
    async () => {
      const base = apiUrls[apiCursor % apiUrls.length];
      try {
        const res = await call(`${base}${path}`, { method, timeoutMs: 10_000, ...opts });
        if (res.status >= 500) throw new CallError(`${method} ${base}${path}: ${describeAnswer(res)}`, { status: res.status, transient: true });
        return res;
      } catch (err) {
        if (err.transient) apiCursor++;
        throw err;
      }
    },
    { attempts: 8, baseMs: 250, maxMs: 4000, signal: stop.signal },
  );
}

function expect(res, ok, what) {
  if (res.status === 404) return false;
  if (res.status !== ok) throw new Permanent(`${what}: ${describeAnswer(res)}`);
  return true;
}

// ---------------------------------------------------------------------------------------------
// One task

function checkTask(t) {
  const int = (v) => Number.isInteger(v) && v > 0;
  const num = (v) => typeof v === 'number' && Number.isFinite(v);
  if (!t || typeof t.uuid !== 'string') throw new Permanent('the task has no uuid');
  if (!int(t.width) || !int(t.height) || !int(t.iterations)) throw new Permanent('width, height and iterations must be positive integers');
  if (![t.xa, t.xb, t.ya, t.yb].every(num) || t.xb <= t.xa || t.yb <= t.ya) throw new Permanent('xa < xb and ya < yb must be numbers');
  return t;
}

/** Handles one delivery to its end: never throws. */
async function handle(delivery) {
  const uuid = typeof delivery.payload?.uuid === 'string' ? delivery.payload.uuid : delivery.id;
  status.state = 'working';
  status.current = uuid;
  let lost = false;
  // Long renders must not be taken for a dead worker's.
  const heartbeat = setInterval(
    () => {
      delivery.extend().catch((err) => {
        if (err instanceof LeaseLost) lost = true;
        log.warn(`could not extend the lease of ${uuid}: ${err.message}`);
      });
    },
    Math.max(250, delivery.visibilityTimeoutMs / 3),
  );
  try {
    const task = checkTask(delivery.payload);
    const again = delivery.deliveries > 1 ? ` (delivery ${delivery.deliveries})` : '';

    const rec = await api('GET', `/v1/fractal/${uuid}`);
    if (!expect(rec, 200, 'reading the record')) {
      log.info(`${uuid}: deleted; dropping its task`);
      status.skipped++;
      return await delivery.ack();
    }
    if (rec.json().status === 'done') {
      // A worker stored it and died before its ack: the result is there, only the ack is owed.
      log.info(`${uuid}: already done${again}; acking the duplicate delivery`);
      status.skipped++;
      return await delivery.ack();
    }
    await api('PUT', `/v1/fractal/${uuid}`, { json: { status: 'processing', generated_by: instance } }).catch(() => {});

    const t0 = performance.now();
    const r = await renderFractalAsync(task, { samples });
    const duration = Math.round(performance.now() - t0) / 1000;

    const up = await api('PUT', `/fractal/${uuid}`, { body: r.png, contentType: 'image/png', timeoutMs: 60_000 });
    if (!expect(up, 200, 'uploading the image')) {
      log.info(`${uuid}: deleted while rendering; dropping its task`);
      status.skipped++;
      return await delivery.ack();
    }
    const result = { status: 'done', duration, size: r.png.length, checksum: r.checksum, generated_by: instance };
    const put = await api('PUT', `/v1/fractal/${uuid}`, { json: result });
    if (!expect(put, 200, 'storing the result')) {
      status.skipped++;
      return await delivery.ack();
    }
    await delivery.ack();
    status.completed++;
    log.info(
      `${uuid}: ${task.width}x${task.height}, ${task.iterations} it, c=${formatConstant(r.c)}: ${duration}s, ${r.png.length} bytes${again}`,
    );
  } catch (err) {
    if (err instanceof LeaseLost || lost) {
      log.warn(`${uuid}: lease lost (${err.message}); the queue delivers the task again`);
    } else if (err instanceof Permanent) {
      log.warn(`${uuid}: failed: ${err.message}`);
      status.failed++;
      await api('PUT', `/v1/fractal/${uuid}`, { json: { status: 'failed', error: err.message, generated_by: instance } }).catch(() => {});
      await delivery.ack().catch(() => {});
    } else {
      // The api or the queue is away: give the task back for a worker (maybe this one, later)
      // that can reach them.
      log.warn(`${uuid}: ${err.message}; giving the task back`);
      status.released++;
      await delivery.nack().catch(() => {});
      await sleep(1000 + Math.random() * 1000, stop.signal);
    }
  } finally {
    clearInterval(heartbeat);
    status.state = stop.signal.aborted ? 'stopping' : 'idle';
    status.current = null;
  }
}

// ---------------------------------------------------------------------------------------------
// The loop

async function run() {
  const wait = backoff({ baseMs: 250, maxMs: 5000 });
  while (!stop.signal.aborted) {
    let delivery;
    try {
      delivery = await queue.lease({ waitMs: leaseWaitMs, consumer: instance, signal: stop.signal });
      wait.reset();
    } catch (err) {
      if (stop.signal.aborted) break;
      const ms = Math.round(wait.next());
      log.warn(`cannot lease from ${redact(queueUrl)}: ${err.message}; trying again in ${ms}ms`);
      await sleep(ms, stop.signal);
      continue;
    }
    if (!delivery) continue;
    if (stop.signal.aborted) {
      // Arrived as the stop did: hand it straight back rather than start a render.
      await delivery.nack().catch(() => {});
      break;
    }
    await handle(delivery);
  }
}

let server;
if (process.env.PORT !== undefined && process.env.PORT !== '') {
  server = createApp();
  server.get('/status', async () => status);
  await listen(server, log, `queue ${redact(queueUrl)}, api ${apiUrls.join(',')}, ${samples}x${samples} samples per pixel`);
} else {
  log.info(`started: queue ${redact(queueUrl)}, api ${apiUrls.join(',')}, ${samples}x${samples} samples per pixel`);
}

const loop = run();
exitOnSignals(server, log, {
  async beforeClose() {
    if (status.current) log.info(`finishing ${status.current} before exiting`);
    status.state = 'stopping';
    stop.abort();
    await loop;
    await queue.close();
    log.info(`done: ${status.completed} rendered, ${status.skipped} skipped, ${status.failed} failed`);
  },
});
