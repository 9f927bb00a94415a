// The store role: fractal records and their PNG images, shared by every api member so any
// member serves any fractal.
//
//   GET    /records?offset=&limit=&order=asc|desc&status=   → { total, objects }
//   POST   /records            { uuid, … }   → 201 record | 409 already_exists
//   GET    /records/{uuid}                    → 200 record | 404
//   PATCH  /records/{uuid}     { field: value } merged    → 200 record | 404
//   DELETE /records/{uuid}     (and its image)            → 204 | 404
//   PUT    /images/{uuid}      body: PNG      → 200 { size, checksum } | 404 if no record
//   GET    /images/{uuid}                     → image/png | 404
//   GET    /health                            → ok
//
// One file per fractal in $DROVER_WORKDIR (records/<uuid>.json, images/<uuid>.png), each
// written to a temporary file and renamed into place, so a kill never leaves half a record.
// The records are also held in memory, in creation order, for listing.
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exitOnSignals, logger, problem, writeFileAtomic } from './lib.mjs';
import { createApp, listen } from './server.mjs';

const log = logger('store');
const KEY = /^[A-Za-z0-9-]{1,64}$/;
const MAX_IMAGE_BYTES = 256 * 1024 * 1024;

let dir = process.env.STORE_DIR || process.env.DROVER_WORKDIR || '';
if (!dir) {
  dir = mkdtempSync(join(tmpdir(), 'fractals-store-'));
  log.warn(`neither STORE_DIR nor DROVER_WORKDIR is set: keeping data in ${dir}`);
}
const recordsDir = join(dir, 'records');
const imagesDir = join(dir, 'images');
mkdirSync(recordsDir, { recursive: true });
mkdirSync(imagesDir, { recursive: true });

/** @type {Map<string, Record<string, unknown>>} creation order */
const records = new Map();

function load() {
  const loaded = [];
  for (const name of readdirSync(recordsDir)) {
    const path = join(recordsDir, name);
    if (name.endsWith('.tmp')) {
      // Left by a kill mid-write; the rename never happened, so the old file is intact.
      rmSync(path, { force: true });
      continue;
    }
    if (!name.endsWith('.json')) continue;
    try {
      loaded.push(JSON.parse(readFileSync(path, 'utf8')));
    } catch (err) {
      log.warn(`ignoring unreadable ${path}: ${err.message}`);
    }
  }
  for (const name of readdirSync(imagesDir)) if (name.endsWith('.tmp')) rmSync(join(imagesDir, name), { force: true });
  loaded.sort((a, b) => String(a.created_at).localeCompare(String(b.created_at)) || String(a.uuid).localeCompare(String(b.uuid)));
  for (const r of loaded) records.set(r.uuid, r);
}

// Writes of one key run one after another and each writes the key's state at its turn, so the
// file always ends with the last state even when two requests overlap.
const chains = new Map();
function serialized(key, fn) {
  const prev = chains.get(key) ?? Promise.resolve();
  const next = prev.then(fn, fn);
  chains.set(key, next);
  const clear = () => {
    if (chains.get(key) === next) chains.delete(key);
  };
  next.then(clear, clear);
  return next;
}

const recordPath = (uuid) => join(recordsDir, `${uuid}.json`);
const imagePath = (uuid) => join(imagesDir, `${uuid}.png`);

function persist(uuid) {
  return serialized(uuid, async () => {
    const r = records.get(uuid);
    if (r) await writeFileAtomic(recordPath(uuid), JSON.stringify(r));
    else await rm(recordPath(uuid), { force: true });
  });
}

function badKey(reply, uuid) {
  return reply.code(400).send(problem('invalid_field', `uuid: expected 1 to 64 letters, digits or "-", got ${JSON.stringify(uuid)}`, { field: 'uuid' }));
}

function noRecord(reply, uuid) {
  return reply.code(404).send(problem('not_found', `no fractal ${uuid}`));
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

load();
const app = createApp();
app.addContentTypeParser(['image/png', 'application/octet-stream'], { parseAs: 'buffer', bodyLimit: MAX_IMAGE_BYTES }, (_req, body, done) =>
  done(null, body),
);

app.get('/records', async (req, reply) => {
  const q = req.query;
  const offset = q.offset === undefined ? 0 : Number(q.offset);
  const limit = q.limit === undefined ? 100 : Number(q.limit);
  if (!Number.isInteger(offset) || offset < 0) return reply.code(400).send(problem('invalid_field', 'offset: expected an integer >= 0', { field: 'offset' }));
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000) return reply.code(400).send(problem('invalid_field', 'limit: expected an integer from 1 to 1000', { field: 'limit' }));
  if (q.order !== undefined && q.order !== 'asc' && q.order !== 'desc') return reply.code(400).send(problem('invalid_field', 'order: expected asc or desc', { field: 'order' }));
  let all = [...records.values()];
  if (q.status !== undefined) all = all.filter((r) => r.status === q.status);
  if (q.order === 'desc') all.reverse();
  return { total: all.length, objects: all.slice(offset, offset + limit) };
});

app.post('/records', async (req, reply) => {
  const body = req.body;
  if (!isObject(body)) return reply.code(400).send(problem('invalid_body', 'expected a JSON object'));
  if (typeof body.uuid !== 'string' || !KEY.test(body.uuid)) return badKey(reply, body.uuid);
  if (records.has(body.uuid)) return reply.code(409).send(problem('already_exists', `fractal ${body.uuid} already exists`));
  const now = new Date().toISOString();
  const record = { ...body, created_at: now, updated_at: now };
  records.set(body.uuid, record);
  await persist(body.uuid);
  return reply.code(201).send(record);
});

app.get('/records/:uuid', async (req, reply) => {
  const r = records.get(req.params.uuid);
  return r ?? noRecord(reply, req.params.uuid);
});

app.patch('/records/:uuid', async (req, reply) => {
  const { uuid } = req.params;
  const r = records.get(uuid);
  if (!r) return noRecord(reply, uuid);
  const body = req.body;
  if (!isObject(body)) return reply.code(400).send(problem('invalid_body', 'expected a JSON object of fields to set'));
  if ('uuid' in body && body.uuid !== uuid) return reply.code(400).send(problem('invalid_field', 'uuid: cannot be changed', { field: 'uuid' }));
  // Merged in memory at once, so two overlapping patches both land.
  const next = { ...r, ...body, uuid, created_at: r.created_at, updated_at: new Date().toISOString() };
  records.set(uuid, next);
  await persist(uuid);
  return next;
});

app.delete('/records/:uuid', async (req, reply) => {
  const { uuid } = req.params;
  if (!records.delete(uuid)) return noRecord(reply, uuid);
  await Promise.all([persist(uuid), serialized(`img:${uuid}`, () => rm(imagePath(uuid), { force: true }))]);
  return reply.code(204).send();
});

app.put('/images/:uuid', async (req, reply) => {
  const { uuid } = req.params;
  if (!KEY.test(uuid)) return badKey(reply, uuid);
  // An image for a deleted (or never created) fractal would be an orphan nobody can list.
  if (!records.has(uuid)) return noRecord(reply, uuid);
  const body = req.body;
  if (!Buffer.isBuffer(body) || body.length === 0) return reply.code(400).send(problem('invalid_body', 'expected the image bytes (content-type image/png)'));
  await serialized(`img:${uuid}`, () => writeFileAtomic(imagePath(uuid), body));
  if (!records.has(uuid)) {
    // Deleted while the image was being written.
    await serialized(`img:${uuid}`, () => rm(imagePath(uuid), { force: true }));
    return noRecord(reply, uuid);
  }
  return { size: body.length, checksum: createHash('sha256').update(body).digest('hex') };
});

app.get('/images/:uuid', async (req, reply) => {
  const { uuid } = req.params;
  if (!KEY.test(uuid)) return badKey(reply, uuid);
  let buf;
  try {
    buf = await readFile(imagePath(uuid));
  } catch (err) {
    if (err.code === 'ENOENT') return reply.code(404).send(problem('not_found', `no image for fractal ${uuid}`));
    throw err;
  }
  return reply.type('image/png').send(buf);
});

await listen(app, log, `data in ${dir}, ${records.size} record(s)`);
exitOnSignals(app, log);
