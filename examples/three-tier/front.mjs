// The front role of the three-tier example: a round-robin HTTP forwarder to the api members.
//
// Drover's deploy/update steps write the api endpoints to members.txt in this instance's
// working folder; the forwarder follows that file instead of its environment so a scale-out
// or a replaced member takes effect without restarting the front (and without dropping the
// connections it is serving).
//   GET /health   → 200 ok
//   GET /members  → JSON array of current members
//   anything else → forwarded to the next member, with X-Served-By on the response
import { createServer, request } from 'node:http';
import { readFileSync, statSync, watch } from 'node:fs';
import { join } from 'node:path';

const port = Number(process.env.PORT ?? 0);
const host = process.env.HOST || '127.0.0.1';
const instance = process.env.DROVER_INSTANCE ?? 'front';
const dir = process.env.DROVER_WORKDIR || process.cwd();
const membersFile = join(dir, 'members.txt');
const UPSTREAM_TIMEOUT_MS = 10_000;

let members = [];
let cursor = 0;

function parseMembers(text) {
  const seen = new Set();
  for (const raw of text.split(/[\s,]+/)) {
    const url = raw.trim().replace(/\/+$/, '');
    if (url) seen.add(url);
  }
  return [...seen];
}

function reload() {
  let text = '';
  try {
    text = readFileSync(membersFile, 'utf8');
  } catch (err) {
    if (err.code !== 'ENOENT') {
      // Keep serving the last good list rather than dropping every member on a transient error.
      console.error(`front: cannot read ${membersFile}: ${err.message}`);
      return;
    }
  }
  const next = parseMembers(text);
  if (next.join(',') === members.join(',')) return;
  members = next;
  console.log(`front ${instance}: members = [${members.join(', ')}]`);
}

// `printf > members.txt` truncates before it writes, so one change arrives as several events;
// a short debounce avoids briefly serving an empty list between them.
let debounce;
function scheduleReload() {
  clearTimeout(debounce);
  debounce = setTimeout(reload, 50);
}

// The folder is watched rather than the file: the file may not exist yet, and editors or
// scripts that replace it by rename would detach a watcher bound to the old inode.
try {
  const watcher = watch(dir, (_event, name) => {
    if (!name || name === 'members.txt') scheduleReload();
  });
  watcher.on('error', () => {});
  watcher.unref();
} catch (err) {
  console.error(`front: fs.watch unavailable (${err.message}); relying on polling`);
}

// fs.watch is unreliable on some filesystems (network mounts, some containers), so the
// mtime poll is what guarantees a change is seen within about half a second.
let lastStamp = '';
function stamp() {
  const st = statSync(membersFile, { throwIfNoEntry: false });
  return st ? `${st.mtimeMs}:${st.size}:${st.ino}` : 'missing';
}
setInterval(() => {
  const s = stamp();
  if (s !== lastStamp) {
    lastStamp = s;
    reload();
  }
}, 500).unref();
lastStamp = stamp();
reload();

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

function endToEnd(headers) {
  const out = {};
  for (const [k, v] of Object.entries(headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
  return out;
}

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** Sends the request to one member; resolves with its response, rejects if it cannot be reached. */
function attempt(member, req, body, clientRes) {
  return new Promise((resolve, reject) => {
    const target = new URL(member + (req.url ?? '/'));
    const headers = endToEnd(req.headers);
    headers.host = target.host;
    headers['x-forwarded-for'] = req.socket.remoteAddress ?? '';
    headers['x-forwarded-host'] = req.headers.host ?? '';
    if (body.length || req.headers['content-length'] !== undefined) headers['content-length'] = String(body.length);
    const up = request(target, { method: req.method, headers, timeout: UPSTREAM_TIMEOUT_MS });
    up.on('timeout', () => up.destroy(new Error(`no answer within ${UPSTREAM_TIMEOUT_MS}ms`)));
    up.on('error', reject);
    up.on('response', resolve);
    clientRes.on('close', () => {
      if (!clientRes.writableFinished) up.destroy(new Error('client went away'));
    });
    up.end(body);
  });
}

async function forward(req, res) {
  const list = members;
  if (list.length === 0) return json(res, 503, { error: 'no api members' });
  const body = await readBody(req);
  const first = cursor++ % list.length;
  // Only GET is retried: it is safe to repeat, whereas a POST may have reached the member
  // before the connection broke.
  const tries = req.method === 'GET' && list.length > 1 ? 2 : 1;
  let lastErr;
  for (let i = 0; i < tries; i++) {
    const member = list[(first + i) % list.length];
    try {
      const upRes = await attempt(member, req, body, res);
      res.writeHead(upRes.statusCode ?? 502, { ...endToEnd(upRes.headers), 'x-served-by': member });
      upRes.pipe(res);
      upRes.on('error', () => res.destroy());
      return;
    } catch (err) {
      lastErr = { member, message: err?.message ?? String(err) };
      if (res.destroyed) return;
    }
  }
  json(res, 502, { error: 'api member unreachable', member: lastErr.member, detail: lastErr.message });
}

const server = createServer((req, res) => {
  const { pathname } = new URL(req.url ?? '/', 'http://x');
  if (pathname === '/health') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    return res.end('ok');
  }
  if (pathname === '/members') return json(res, 200, members);
  forward(req, res).catch((err) => {
    if (!res.headersSent) json(res, 502, { error: String(err?.message ?? err) });
    else res.destroy();
  });
});

// HOST: where to listen (default 127.0.0.1); on another host, its address (`HOST=${ip}` in the app file).
server.listen(port, host, () => {
  console.log(`front ${instance} listening on http://${host}:${server.address().port} (members from ${membersFile})`);
});

function shutdown() {
  server.close(() => process.exit(0));
  // Keep-alive sockets would otherwise hold close() open until they time out.
  server.closeAllConnections();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
