// The store role of the labs example: every lab's data, one JSON file per lab under
// $DROVER_WORKDIR/labs/. The lab instances keep nothing of their own, so a lab can be placed
// again on another instance (when its instance is lost) and find its data where it was.
//
//   PUT    /labs/{name}               → 201 created | 200 already there (kept as it is)
//   GET    /labs/{name}               → 200 { name, createdAt, visits, notes } | 404
//   POST   /labs/{name}/visits        → 200 the record, visits + 1 | 404
//   POST   /labs/{name}/notes  {text} → 200 the record | 404
//   DELETE /labs/{name}               → 204 | 404
//   GET    /labs                      → ["lab1", …]
//   GET    /health                    → ok
import { createServer } from 'node:http';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const root = process.env.DROVER_WORKDIR || mkdtempSync(join(tmpdir(), 'labs-store-'));
const dir = join(root, 'labs');
mkdirSync(dir, { recursive: true });

const file = (name) => join(dir, `${name}.json`);
function read(name) {
  try {
    return JSON.parse(readFileSync(file(name), 'utf8'));
  } catch (err) {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  }
}
function write(record) {
  // Write then rename: a kill mid-write never leaves half a record.
  const tmp = `${file(record.name)}.tmp`;
  writeFileSync(tmp, JSON.stringify(record));
  renameSync(tmp, file(record.name));
}

function send(res, status, body) {
  if (body === undefined) {
    res.writeHead(status);
    return res.end();
  }
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': typeof body === 'string' ? 'text/plain' : 'application/json' });
  res.end(text);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

const server = createServer(async (req, res) => {
  try {
    const { pathname } = new URL(req.url ?? '/', 'http://x');
    if (pathname === '/health') return send(res, 200, 'ok');
    if (pathname === '/labs' && req.method === 'GET') {
      return send(res, 200, readdirSync(dir).filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -5)).sort());
    }
    const m = /^\/labs\/([^/]+)(\/visits|\/notes)?$/.exec(pathname);
    if (!m) return send(res, 404, 'not found');
    const name = decodeURIComponent(m[1]);
    if (!NAME.test(name)) return send(res, 400, 'bad lab name');
    const sub = m[2];
    if (!sub && req.method === 'PUT') {
      if (read(name)) return send(res, 200, read(name));
      const record = { name, createdAt: new Date().toISOString(), visits: 0, notes: [`Welcome to ${name}!`] };
      write(record);
      return send(res, 201, record);
    }
    const record = read(name);
    if (!record) return send(res, 404, 'no such lab');
    if (!sub && req.method === 'GET') return send(res, 200, record);
    if (!sub && req.method === 'DELETE') {
      rmSync(file(name), { force: true });
      return send(res, 204);
    }
    if (sub === '/visits' && req.method === 'POST') {
      record.visits += 1;
      write(record);
      return send(res, 200, record);
    }
    if (sub === '/notes' && req.method === 'POST') {
      const { text } = JSON.parse((await readBody(req)) || '{}');
      if (typeof text !== 'string' || text.length === 0 || text.length > 1000) return send(res, 400, 'text: 1 to 1000 characters');
      record.notes.push(text);
      write(record);
      return send(res, 200, record);
    }
    send(res, 405, 'method not allowed');
  } catch (err) {
    send(res, 500, String(err?.message ?? err));
  }
});

server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  console.log(`labs store listening on http://127.0.0.1:${server.address().port} (data in ${dir})`);
});
const shutdown = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
