// The api role of the three-tier example. GET /hello counts a hit in the db and says which
// api instance answered, so round-robin through the front is visible from the outside.
import { createServer } from 'node:http';

const port = Number(process.env.PORT ?? 0);
const host = process.env.HOST || '127.0.0.1';
const instance = process.env.DROVER_INSTANCE ?? 'api';
// Drover joins an import over all members with commas; the db role has one member, but take
// the first so a scaled-out db still yields a usable URL.
const dbUrl = (process.env.DB_URL ?? '')
  .split(',')
  .map((s) => s.trim())
  .find(Boolean)
  ?.replace(/\/+$/, '');

if (!dbUrl) {
  console.error('api: DB_URL is not set; it must hold the db base URL (drover sets it from `imports: [db.url]`)');
  process.exit(1);
}

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

async function incrementHits() {
  const res = await fetch(`${dbUrl}/kv/hits/incr`, { method: 'POST', signal: AbortSignal.timeout(3000) });
  if (res.status !== 200) throw new Error(`db answered ${res.status}`);
  const n = Number.parseInt(await res.text(), 10);
  if (Number.isNaN(n)) throw new Error('db answered a non-integer');
  return n;
}

const server = createServer(async (req, res) => {
  const { pathname } = new URL(req.url ?? '/', 'http://x');
  if (pathname === '/health') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    return res.end('ok');
  }
  if (pathname === '/hello' && req.method === 'GET') {
    try {
      const hits = await incrementHits();
      return json(res, 200, { api: instance, hits, db: dbUrl });
    } catch (err) {
      return json(res, 502, { error: `db unreachable: ${err?.message ?? err}`, api: instance, db: dbUrl });
    }
  }
  json(res, 404, { error: 'not found' });
});

// HOST: where to listen (default 127.0.0.1); on another host, its address (`HOST=${ip}` in the app file).
server.listen(port, host, () => {
  console.log(`api ${instance} listening on http://${host}:${server.address().port} (db ${dbUrl})`);
});

function shutdown() {
  server.close(() => process.exit(0));
  // Keep-alive sockets (the front reuses them) would otherwise hold close() open.
  server.closeAllConnections();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
