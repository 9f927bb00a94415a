// The labs role: one web app serving many labs (tenants). The lab is the first label of the
// Host header (lab7.labs.example.test → lab7); its data comes from the store role, never from
// this instance, so any instance can serve any lab Drover places on it.
//   GET /            → an HTML page with the lab's data (a visit is counted)
//   GET /api/lab     → { lab, instance, data } as JSON (a visit is counted)
//   GET /health      → ok
// Unknown labs (no data space in the store) get 404.
import { createServer } from 'node:http';

const store = (process.env.STORE_URL ?? '').split(',')[0];
if (!store) {
  console.error('labs: STORE_URL is not set (the labs role imports store.url)');
  process.exit(1);
}
const instance = process.env.DROVER_INSTANCE ?? 'labs';
const NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function send(res, status, body, type = 'text/plain; charset=utf-8') {
  res.writeHead(status, { 'content-type': type, 'x-served-by': instance });
  res.end(body);
}

const server = createServer(async (req, res) => {
  try {
    const { pathname } = new URL(req.url ?? '/', 'http://x');
    if (pathname === '/health') return send(res, 200, 'ok');
    const lab = String(req.headers.host ?? '').split(':')[0].split('.')[0].toLowerCase();
    if (!NAME.test(lab)) return send(res, 400, 'no lab in the Host header\n');
    if (pathname !== '/' && pathname !== '/api/lab') return send(res, 404, 'not found\n');
    const r = await fetch(`${store}/labs/${lab}/visits`, { method: 'POST', signal: AbortSignal.timeout(5000) });
    if (r.status === 404) return send(res, 404, `no lab ${lab} here\n`);
    if (!r.ok) return send(res, 502, `the store answered ${r.status}\n`);
    const data = await r.json();
    if (pathname === '/api/lab') return send(res, 200, JSON.stringify({ lab, instance, data }), 'application/json');
    send(
      res,
      200,
      `<!doctype html><title>${escape(lab)}</title><h1>${escape(lab)}</h1>` +
        `<p>Created ${escape(data.createdAt)} · ${data.visits} visits · served by ${escape(instance)}</p>` +
        `<ul>${data.notes.map((n) => `<li>${escape(n)}</li>`).join('')}</ul>\n`,
      'text/html; charset=utf-8',
    );
  } catch (err) {
    send(res, 500, `${String(err?.message ?? err)}\n`);
  }
});

server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  console.log(`labs ${instance} listening on http://127.0.0.1:${server.address().port}, store ${store}`);
});
const shutdown = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
