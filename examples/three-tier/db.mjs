// The db role of the three-tier example: a tiny key-value store over HTTP.
//   PUT  /kv/<key>       body = value  → 204
//   GET  /kv/<key>                     → 200 value | 404
//   POST /kv/<key>/incr                → 200 new integer value
//   GET  /health                       → 200 ok
// Data lives in memory and is mirrored to $DROVER_WORKDIR/db.json (when set) so a restarted
// process on the same instance keeps its counters.
import { createServer } from 'node:http';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const port = Number(process.env.PORT ?? 0);
const host = process.env.HOST || '127.0.0.1';
const instance = process.env.DROVER_INSTANCE ?? 'db';
const file = process.env.DROVER_WORKDIR ? join(process.env.DROVER_WORKDIR, 'db.json') : undefined;

const data = new Map();
if (file) {
  try {
    for (const [k, v] of Object.entries(JSON.parse(readFileSync(file, 'utf8')))) data.set(k, String(v));
  } catch (err) {
    if (err.code !== 'ENOENT') console.error(`db: ignoring unreadable ${file}: ${err.message}`);
  }
}

function persist() {
  if (!file) return;
  // Write-then-rename so a kill mid-write never leaves a truncated file behind.
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, JSON.stringify(Object.fromEntries(data)));
  renameSync(tmp, file);
}

function send(res, status, body = '', type = 'text/plain') {
  res.writeHead(status, body === '' ? {} : { 'content-type': type });
  res.end(body);
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

    const incr = /^\/kv\/([^/]+)\/incr$/.exec(pathname);
    if (incr && req.method === 'POST') {
      const key = decodeURIComponent(incr[1]);
      const current = Number.parseInt(data.get(key) ?? '0', 10);
      const next = (Number.isNaN(current) ? 0 : current) + 1;
      data.set(key, String(next));
      persist();
      return send(res, 200, String(next));
    }

    const kv = /^\/kv\/([^/]+)$/.exec(pathname);
    if (kv) {
      const key = decodeURIComponent(kv[1]);
      if (req.method === 'GET') {
        return data.has(key) ? send(res, 200, data.get(key)) : send(res, 404, 'not found');
      }
      if (req.method === 'PUT') {
        data.set(key, await readBody(req));
        persist();
        return send(res, 204);
      }
      return send(res, 405, 'method not allowed');
    }
    send(res, 404, 'not found');
  } catch (err) {
    send(res, 500, String(err?.message ?? err));
  }
});

// HOST: where to listen (default 127.0.0.1); on another host, its address (`HOST=${ip}` in the app file).
server.listen(port, host, () => {
  console.log(`db ${instance} listening on http://${host}:${server.address().port}${file ? ` (data in ${file})` : ''}`);
});

function shutdown() {
  server.close(() => process.exit(0));
  // Keep-alive sockets would otherwise hold close() open until they time out.
  server.closeAllConnections();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
