// The app role of the lamp example: a visit counter and a small note store in MariaDB, reached
// with Debian's `mariadb` client (one short-lived client per query, run without a shell). No
// npm dependency: what a Debian server has is enough.
//
//   GET  /             counts a visit: {"app": <instance>, "hits": <n>}
//   PUT  /notes/<key>  stores the body (at most 4 KiB) → 204
//   GET  /notes/<key>  the body stored, or 404
//   GET  /health       ok (the process only: a db being replaced must not fail every app member)
//
// The db's URL (mysql://user@host:port/database) is read from db.url in the working folder,
// which the role's start and update steps write from $DB_URL: a replaced db (new port) is
// picked up without a restart.
import { execFile } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';

const port = Number(process.env.PORT ?? 0);
const host = process.env.DROVER_IP ?? '127.0.0.1';
const instance = process.env.DROVER_INSTANCE ?? 'app';
const urlFile = join(process.env.DROVER_WORKDIR ?? process.cwd(), 'db.url');
const MAX_BODY = 4096;
const KEY = /^[A-Za-z0-9_-]{1,64}$/;
/** Queries in flight at once; more wait their turn (each is a process). */
const MAX_CLIENTS = 8;

let cached = { mtimeMs: -1, db: undefined };

/** The db to use, from db.url (re-read when it changes); throws naming what is wrong. */
function db() {
  const st = statSync(urlFile);
  if (st.mtimeMs !== cached.mtimeMs) {
    // Drover joins an import over the members with commas: the db role has one member.
    const text = readFileSync(urlFile, 'utf8').split(',')[0].trim();
    let u;
    try {
      u = new URL(text);
    } catch {
      throw new Error(`db.url holds no URL: ${JSON.stringify(text.slice(0, 100))}`);
    }
    const database = u.pathname.replace(/^\//, '');
    if (u.protocol !== 'mysql:' || !u.hostname || !/^\d+$/.test(u.port) || !KEY.test(u.username) || !KEY.test(database) || u.password) {
      throw new Error(`db.url must be mysql://user@host:port/database, not ${JSON.stringify(text.slice(0, 100))}`);
    }
    cached = { mtimeMs: st.mtimeMs, db: { host: u.hostname, port: u.port, user: u.username, database } };
  }
  return cached.db;
}

let running = 0;
const waiting = [];

/** Runs SQL with the `mariadb` client; resolves to its rows (tab-separated fields). */
async function query(sql) {
  // A finished query hands its place to the next in line rather than freeing it.
  if (running >= MAX_CLIENTS) await new Promise((r) => waiting.push(r));
  else running += 1;
  try {
    const d = db();
    const args = ['--no-defaults', '--protocol=TCP', '-h', d.host, '-P', d.port, '-u', d.user, '--batch', '--skip-column-names', '--connect-timeout=3', '-e', sql, d.database];
    const out = await new Promise((resolve, reject) => {
      execFile('mariadb', args, { timeout: 10_000, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
        if (err) reject(new Error(stderr.trim() || err.message));
        else resolve(stdout);
      });
    });
    return out.split('\n').filter(Boolean).map((line) => line.split('\t'));
  } finally {
    const next = waiting.shift();
    if (next) next();
    else running -= 1;
  }
}

function send(res, status, body, type = 'application/json') {
  res.writeHead(status, { 'content-type': type, 'x-app-instance': instance });
  res.end(type === 'application/json' ? JSON.stringify(body) : body);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(Object.assign(new Error(`body over ${MAX_BODY} bytes`), { status: 413 }));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

async function handle(req, res) {
  const { pathname } = new URL(req.url ?? '/', 'http://x');
  if (pathname === '/health') return send(res, 200, 'ok', 'text/plain');
  if (pathname === '/' && req.method === 'GET') {
    // LAST_INSERT_ID(expr) hands this connection the value it wrote: no other visit can slip in.
    const rows = await query('INSERT INTO hits (id, n) VALUES (1, LAST_INSERT_ID(1)) ON DUPLICATE KEY UPDATE n = LAST_INSERT_ID(n + 1); SELECT LAST_INSERT_ID();');
    return send(res, 200, { app: instance, hits: Number(rows[0]?.[0]) });
  }
  const m = /^\/notes\/([^/]+)$/.exec(pathname);
  if (m) {
    const key = m[1];
    // Only these characters reach SQL text, and the value goes in as hex: nothing is ever
    // spliced in that could be read as SQL.
    if (!KEY.test(key)) return send(res, 400, { error: 'key: 1 to 64 of A-Z a-z 0-9 _ -' });
    if (req.method === 'PUT') {
      const body = await readBody(req);
      await query(`INSERT INTO notes (k, v) VALUES ('${key}', X'${body.toString('hex')}') ON DUPLICATE KEY UPDATE v = VALUES(v);`);
      res.writeHead(204, { 'x-app-instance': instance });
      return res.end();
    }
    if (req.method === 'GET') {
      const rows = await query(`SELECT HEX(v) FROM notes WHERE k = '${key}';`);
      if (!rows.length) return send(res, 404, { error: `no note "${key}"` });
      return send(res, 200, Buffer.from(rows[0][0] ?? '', 'hex'), 'application/octet-stream');
    }
    return send(res, 405, { error: 'GET or PUT' });
  }
  send(res, 404, { error: 'not found' });
}

const server = createServer((req, res) => {
  handle(req, res).catch((err) => {
    if (res.headersSent) return res.destroy();
    send(res, err.status ?? 502, { error: err.status ? err.message : `db: ${err.message}`, app: instance });
  });
});

server.listen(port, host, () => console.log(`app ${instance} listening on http://${host}:${server.address().port}`));

function shutdown() {
  // In-flight requests finish; the front's proxy opens a new connection per request.
  server.close(() => process.exit(0));
  server.closeIdleConnections();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
