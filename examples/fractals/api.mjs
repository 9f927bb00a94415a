// The api role: the fractal service's HTTP API, stateless, so any number of members can stand
// behind the load balancer. Records and images live in the store; work goes to the queue.
//
//   GET    /v1/fractal?page=&results_per_page=   → { num_results, objects, page, total_pages }
//   POST   /v1/fractal        { uuid?, width, height, iterations, xa, xb, ya, yb } → 201 record
//   GET    /v1/fractal/{uuid}                    → record | 404
//   PUT    /v1/fractal/{uuid} { status?, duration?, size?, checksum?, generated_by? } → record
//   DELETE /v1/fractal/{uuid}                    → 204 | 404
//   GET    /fractal/{uuid}                       → the PNG (image/png) | 404
//   PUT    /fractal/{uuid}    body: the PNG      → { uuid, size, checksum } (the worker's upload)
//   GET    /v1/queue/stats                       → the queue's backlog and counts (the scaling metric)
//   GET    /                                     → the latest fractals, refreshing itself
//   GET    /health, /healthz                     → ok
//
// Env: STORE_URL and QUEUE_URL (drover's imports; with several members, the first is used;
// QUEUE_URL is the embedded queue's http:// URL or RabbitMQ's amqp:// one), QUEUE_NAME (RabbitMQ
// only, default fractals), PORT, DROVER_INSTANCE. Every answer carries X-Fractals-Api:
// <instance>, so the spread over the members is visible from outside.
import { randomUUID } from 'node:crypto';
import { pngInfo } from './fractal.mjs';
import { CallError, UUID, call, describeAnswer, exitOnSignals, logger, problem, requireUrls, retry } from './lib.mjs';
import { redact } from './queue-amqp.mjs';
import { createQueueClient } from './queue-client.mjs';
import { createApp, listen } from './server.mjs';

const log = logger('api');
const instance = process.env.DROVER_INSTANCE || `api-${process.pid}`;
const storeUrl = requireUrls('STORE_URL', "the store's base URL, e.g. http://127.0.0.1:7001 (drover sets it from `imports: [store.url]`)")[0];
const queueUrl = requireUrls('QUEUE_URL', "the queue's base URL, e.g. http://127.0.0.1:7002 (drover sets it from `imports: [queue.url]`)")[0];
const queue = createQueueClient(queueUrl, { log, name: `fractals api ${instance}` });
const queueName = queue.kind === 'amqp' ? 'RabbitMQ' : 'the queue';

const LIMITS = { side: 4096, iterations: 10_000, coordinate: 1e6 };
const MAX_IMAGE_BYTES = 256 * 1024 * 1024;
const CREATE_FIELDS = ['uuid', 'width', 'height', 'iterations', 'xa', 'xb', 'ya', 'yb'];
const STATUSES = ['pending', 'processing', 'done', 'failed'];
const RESULT_FIELDS = ['status', 'duration', 'size', 'checksum', 'generated_by', 'error'];

// ---------------------------------------------------------------------------------------------
// Validation: every problem of a body at once, each naming its field.

class Invalid extends Error {
  constructor(problems) {
    super(problems.map((p) => p.message).join('; '));
    this.problems = problems;
  }
}

/** Problems of unknown fields; throws at once if the body is not an object at all. */
function checkObject(body, allowed) {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new Invalid([{ code: 'invalid_body', field: null, message: 'expected a JSON object' }]);
  }
  return Object.keys(body)
    .filter((k) => !allowed.includes(k))
    .map((k) => ({ code: 'unknown_field', field: k, message: `${k}: unknown field (expected ${allowed.join(', ')})` }));
}

function validateCreate(body) {
  const problems = checkObject(body, CREATE_FIELDS);
  const bad = (field, message) => problems.push({ field, message: `${field}: ${message}` });
  const int = (field, min, max) => {
    const v = body[field];
    if (v === undefined) bad(field, 'required');
    else if (!Number.isInteger(v) || v < min || v > max) bad(field, `expected an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
  };
  const num = (field) => {
    const v = body[field];
    if (v === undefined) bad(field, 'required');
    else if (typeof v !== 'number' || !Number.isFinite(v) || Math.abs(v) > LIMITS.coordinate)
      bad(field, `expected a number from -${LIMITS.coordinate} to ${LIMITS.coordinate}, got ${JSON.stringify(v)}`);
  };
  if (body.uuid !== undefined && (typeof body.uuid !== 'string' || !UUID.test(body.uuid))) bad('uuid', `expected a UUID such as ${randomUUID()}`);
  int('width', 1, LIMITS.side);
  int('height', 1, LIMITS.side);
  int('iterations', 1, LIMITS.iterations);
  for (const f of ['xa', 'xb', 'ya', 'yb']) num(f);
  const ok = (f) => !problems.some((p) => p.field === f);
  if (ok('xa') && ok('xb') && body.xb <= body.xa) bad('xb', `must be greater than xa (${body.xa})`);
  if (ok('ya') && ok('yb') && body.yb <= body.ya) bad('yb', `must be greater than ya (${body.ya})`);
  if (problems.length) throw new Invalid(problems);
  return {
    uuid: (body.uuid ?? randomUUID()).toLowerCase(),
    width: body.width,
    height: body.height,
    iterations: body.iterations,
    xa: body.xa,
    xb: body.xb,
    ya: body.ya,
    yb: body.yb,
  };
}

function validateResult(body) {
  const immutable = CREATE_FIELDS.find((f) => body && typeof body === 'object' && f !== 'uuid' && f in body);
  if (immutable) throw new Invalid([{ field: immutable, message: `${immutable}: cannot be changed; create a new fractal instead` }]);
  const problems = checkObject(body, RESULT_FIELDS);
  const bad = (field, message) => problems.push({ field, message: `${field}: ${message}` });
  if (Object.keys(body).length === 0) bad(RESULT_FIELDS[0], `expected at least one of ${RESULT_FIELDS.join(', ')}`);
  if (body.status !== undefined && !STATUSES.includes(body.status)) bad('status', `expected one of ${STATUSES.join(', ')}`);
  if (body.duration !== undefined && (typeof body.duration !== 'number' || !Number.isFinite(body.duration) || body.duration < 0))
    bad('duration', 'expected a number of seconds >= 0');
  if (body.size !== undefined && (!Number.isInteger(body.size) || body.size < 0)) bad('size', 'expected an integer number of bytes >= 0');
  if (body.checksum !== undefined && (typeof body.checksum !== 'string' || !/^[0-9a-f]{64}$/.test(body.checksum)))
    bad('checksum', 'expected a sha256 as 64 lowercase hex digits');
  if (body.generated_by !== undefined && (typeof body.generated_by !== 'string' || body.generated_by.length < 1 || body.generated_by.length > 200))
    bad('generated_by', 'expected a string of 1 to 200 characters');
  if (body.error !== undefined && (typeof body.error !== 'string' || body.error.length > 2000)) bad('error', 'expected a string of at most 2000 characters');
  if (problems.length) throw new Invalid(problems);
  return body;
}

function queryInt(q, field, fallback, min, max) {
  const v = q[field];
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new Invalid([{ field, message: `${field}: expected an integer from ${min} to ${max}, got ${JSON.stringify(v)}` }]);
  return n;
}

// ---------------------------------------------------------------------------------------------
// The store

/**
 * Calls the store. Reads, PATCHes, PUTs and DELETEs are retried on a transient failure; a
 * create only when it never reached the store, since a lost answer may hide a success.
 */
async function store(method, path, opts = {}) {
  const idempotent = method !== 'POST';
  try {
    return await retry(
      async () => {
        const res = await call(`${storeUrl}${path}`, { method, timeoutMs: 10_000, ...opts });
        if (res.status >= 500) throw new CallError(`store: ${describeAnswer(res)}`, { status: res.status, transient: true });
        return res;
      },
      { attempts: 4, baseMs: 100, maxMs: 1000, retryable: (e) => e.transient && (idempotent || e.unsent) },
    );
  } catch (err) {
    throw new Unavailable('store_unavailable', `the store (${storeUrl}) cannot be reached: ${err.message}`);
  }
}

class Unavailable extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function notFound(reply, uuid) {
  return reply.code(404).send(problem('not_found', `no fractal ${uuid}`));
}

/** Passes a store answer on, or turns an unexpected one into a 502 naming the store. */
function storeAnswer(reply, res, okStatuses = [200]) {
  if (okStatuses.includes(res.status)) return reply.code(res.status).type('application/json').send(res.body);
  return reply.code(502).send(problem('store_error', `the store answered ${describeAnswer(res)}`));
}

// ---------------------------------------------------------------------------------------------
// Routes

const app = createApp({
  mapError(err) {
    if (err instanceof Invalid) {
      const first = err.problems[0];
      return { status: 400, body: problem(first.code ?? 'invalid_field', err.message, { field: first.field, details: err.problems }) };
    }
    if (err instanceof Unavailable) {
      log.warn(err.message);
      return { status: 503, body: problem(err.code, err.message) };
    }
    return undefined;
  },
});
app.addContentTypeParser('image/png', { parseAs: 'buffer', bodyLimit: MAX_IMAGE_BYTES }, (_req, body, done) => done(null, body));
app.addHook('onSend', async (_req, reply, payload) => {
  reply.header('x-fractals-api', instance);
  return payload;
});
const checkUuid = (uuid) => {
  if (!UUID.test(uuid)) throw new Invalid([{ field: 'uuid', message: `uuid: expected a UUID, got ${JSON.stringify(uuid)}` }]);
  return uuid.toLowerCase();
};

app.get('/v1/fractal', async (req) => {
  const page = queryInt(req.query, 'page', 1, 1, 1_000_000);
  const perPage = queryInt(req.query, 'results_per_page', 10, 1, 100);
  const res = await store('GET', `/records?offset=${(page - 1) * perPage}&limit=${perPage}`);
  if (res.status !== 200) throw new Unavailable('store_error', `the store answered ${describeAnswer(res)}`);
  const { total, objects } = res.json();
  return { num_results: total, objects, page, total_pages: Math.ceil(total / perPage) };
});

app.post('/v1/fractal', async (req, reply) => {
  const spec = validateCreate(req.body);
  const record = { ...spec, status: 'pending', duration: null, size: null, checksum: null, generated_by: null };
  const created = await store('POST', '/records', { json: record });
  if (created.status === 409) return reply.code(409).send(problem('already_exists', `fractal ${spec.uuid} already exists`));
  if (created.status !== 201) return storeAnswer(reply, created, [201]);
  try {
    await queue.enqueue(spec.uuid, spec);
  } catch (err) {
    // Without its task the record would stay pending for ever: take it back, so the client's
    // retry starts from nothing rather than hitting already_exists.
    await store('DELETE', `/records/${spec.uuid}`).catch(() => {});
    throw new Unavailable('queue_unavailable', `${queueName} (${redact(queueUrl)}) cannot take the task: ${err.message}`);
  }
  log.info(`fractal ${spec.uuid} ${spec.width}x${spec.height}, ${spec.iterations} iterations: queued`);
  return reply.code(201).header('location', `/v1/fractal/${spec.uuid}`).type('application/json').send(created.body);
});

app.get('/v1/fractal/:uuid', async (req, reply) => {
  const uuid = checkUuid(req.params.uuid);
  const res = await store('GET', `/records/${uuid}`);
  return res.status === 404 ? notFound(reply, uuid) : storeAnswer(reply, res);
});

app.put('/v1/fractal/:uuid', async (req, reply) => {
  const uuid = checkUuid(req.params.uuid);
  const result = validateResult(req.body);
  if (result.status === 'done') {
    // "done" promises an image: refuse it before the image is stored.
    const img = await store('HEAD', `/images/${uuid}`);
    if (img.status === 404) {
      const rec = await store('GET', `/records/${uuid}`);
      if (rec.status === 404) return notFound(reply, uuid);
      return reply.code(409).send(problem('image_missing', `fractal ${uuid} has no image yet: PUT it to /fractal/${uuid} before marking it done`));
    }
  }
  const res = await store('PATCH', `/records/${uuid}`, { json: result });
  if (res.status === 404) return notFound(reply, uuid);
  if (res.status === 200 && (result.status === 'done' || result.status === 'failed')) {
    const r = res.json();
    log.info(`fractal ${uuid}: ${r.status}${r.generated_by ? ` by ${r.generated_by}` : ''}${r.duration != null && r.status === 'done' ? ` in ${r.duration}s` : ''}`);
  }
  return storeAnswer(reply, res);
});

app.delete('/v1/fractal/:uuid', async (req, reply) => {
  const uuid = checkUuid(req.params.uuid);
  const res = await store('DELETE', `/records/${uuid}`);
  if (res.status === 404) return notFound(reply, uuid);
  if (res.status !== 204) return storeAnswer(reply, res, [204]);
  return reply.code(204).send();
});

app.get('/fractal/:uuid', async (req, reply) => {
  const uuid = checkUuid(req.params.uuid);
  const res = await store('GET', `/images/${uuid}`);
  // A uuid's image never changes (a re-render gives the same pixels), so browsers may keep it;
  // the page reloads every 2 s and would otherwise fetch every image again.
  if (res.status === 200) return reply.type('image/png').header('cache-control', 'public, max-age=86400').send(res.body);
  if (res.status !== 404) return storeAnswer(reply, res);
  const rec = await store('GET', `/records/${uuid}`);
  if (rec.status === 404) return notFound(reply, uuid);
  const status = rec.status === 200 ? rec.json().status : 'unknown';
  return reply.code(404).send(problem('not_ready', `fractal ${uuid} has no image yet (status ${status})`));
});

app.put('/fractal/:uuid', async (req, reply) => {
  const uuid = checkUuid(req.params.uuid);
  const body = req.body;
  if (!Buffer.isBuffer(body)) return reply.code(415).send(problem('unsupported_media_type', 'expected the PNG bytes with content-type image/png'));
  const info = pngInfo(body);
  if (!info) return reply.code(400).send(problem('invalid_image', 'expected a well-formed PNG (signature, IHDR, chunk CRCs, IEND)'));
  const rec = await store('GET', `/records/${uuid}`);
  if (rec.status === 404) return notFound(reply, uuid);
  if (rec.status !== 200) return storeAnswer(reply, rec);
  const { width, height } = rec.json();
  if (info.width !== width || info.height !== height) {
    return reply
      .code(400)
      .send(problem('invalid_image', `the image is ${info.width}x${info.height}, the fractal ${width}x${height}`));
  }
  const res = await store('PUT', `/images/${uuid}`, { body, contentType: 'image/png', timeoutMs: 60_000 });
  if (res.status === 404) return notFound(reply, uuid);
  if (res.status !== 200) return storeAnswer(reply, res);
  return { uuid, ...res.json() };
});

// The queue's backlog, whichever queue it is: what drover scales the workers on when the queue
// is RabbitMQ (the embedded queue also answers GET /stats itself).
app.get('/v1/queue/stats', async () => {
  try {
    return await queue.stats();
  } catch (err) {
    throw new Unavailable('queue_unavailable', `${queueName} (${redact(queueUrl)}) cannot be reached: ${err.message}`);
  }
});

// ---------------------------------------------------------------------------------------------
// The page

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

app.get('/', async (_req, reply) => {
  const [done, all, pending, stats] = await Promise.all([
    store('GET', '/records?order=desc&status=done&limit=24'),
    store('GET', '/records?limit=1'),
    store('GET', '/records?status=pending&limit=1'),
    queue.stats().catch(() => undefined),
  ]);
  const latest = done.status === 200 ? done.json() : { total: 0, objects: [] };
  const total = all.status === 200 ? all.json().total : '?';
  const waiting = pending.status === 200 ? pending.json().total : '?';
  const cards = latest.objects
    .map(
      (f) => `<figure><a href="/fractal/${esc(f.uuid)}"><img src="/fractal/${esc(f.uuid)}" alt="fractal ${esc(f.uuid)}" loading="lazy"></a>
<figcaption>${esc(f.width)}×${esc(f.height)} · ${esc(f.iterations)} it · ${esc(f.duration)}s<br>by ${esc(f.generated_by)}</figcaption></figure>`,
    )
    .join('\n');
  const queueLine = !stats
    ? 'queue: unreachable'
    : queue.kind === 'amqp'
      ? `queue (RabbitMQ): backlog ${stats.backlog} (ready ${stats.ready}, unacked ${stats.unacked}) · ${stats.consumers} consumer(s)`
      : `queue: backlog ${stats.backlog} (ready ${stats.ready}, leased ${stats.leased}) · acked ${stats.acked} · redelivered ${stats.redelivered}`;
  reply.type('text/html; charset=utf-8').send(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>Fractals as a Service</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;background:#0b1020;color:#dde}
h1{font-size:1.4em;margin:0 0 .3em} p{margin:.2em 0;color:#aab}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:12px;margin-top:1em}
figure{margin:0;background:#151b30;padding:6px;border-radius:6px}
img{width:100%;aspect-ratio:1;object-fit:cover;border-radius:4px;display:block}
figcaption{font-size:12px;color:#99a;margin-top:4px}
</style></head><body>
<h1>Fractals as a Service</h1>
<p>${esc(total)} fractal(s) · ${esc(latest.total)} done · ${esc(waiting)} pending · ${esc(queueLine)}</p>
<p>page served by api ${esc(instance)} · refreshes every 2 s</p>
<main>
${cards || '<p>No fractal yet. Create some: <code>node examples/fractals/fractals.mjs create --tasks 5</code></p>'}
</main></body></html>`);
});

await listen(app, log, `store ${storeUrl}, queue ${redact(queueUrl)}`);
// The queue's connection goes last, once requests in flight have been answered.
exitOnSignals({ close: () => app.close().finally(() => queue.close()) }, log);
