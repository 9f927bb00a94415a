// The fastify setup the store, queue and api share: errors as `{ error: { code, message } }`,
// /health and /healthz, no request logging (the demo's output is for people to read).
import Fastify from 'fastify';
import { HOST, listenPort, problem } from './lib.mjs';

/**
 * @param {{ bodyLimit?: number, mapError?: (err: any) => { status: number, body: unknown } | undefined }} [opts]
 *   mapError answers the program's own errors; the rest get a generic answer
 * @returns {import('fastify').FastifyInstance}
 */
export function createApp(opts = {}) {
  const app = Fastify({ logger: false, bodyLimit: opts.bodyLimit ?? 1024 * 1024, forceCloseConnections: true });

  app.setErrorHandler((err, _req, reply) => {
    const mapped = opts.mapError?.(err);
    if (mapped) return reply.code(mapped.status).send(mapped.body);
    const status = typeof err.statusCode === 'number' && err.statusCode >= 400 ? err.statusCode : 500;
    if (status >= 500) console.error(err);
    const code =
      err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE'
        ? 'unsupported_media_type'
        : err.code === 'FST_ERR_CTP_BODY_TOO_LARGE'
          ? 'body_too_large'
          : status === 400
            ? err.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || err instanceof SyntaxError
              ? 'invalid_json'
              : 'invalid_body'
            : status >= 500
              ? 'internal'
              : 'bad_request';
    reply.code(status).send(problem(code, err.message));
  });
  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send(problem('not_found', `no route ${req.method} ${req.url.split('?')[0]}`));
  });

  const ok = async (_req, reply) => reply.type('text/plain').send('ok');
  app.get('/health', ok);
  app.get('/healthz', ok);
  return app;
}

/** Listens on HOST:$PORT and says where, so a person (or a test) can find the program. */
export async function listen(app, log, what) {
  try {
    await app.listen({ port: listenPort(), host: HOST });
  } catch (err) {
    console.error(`cannot listen on ${HOST}:${process.env.PORT ?? 0}: ${err?.message ?? err}`);
    process.exit(1);
  }
  const addr = app.server.address();
  log.info(`listening on http://${HOST}:${typeof addr === 'object' && addr ? addr.port : '?'}${what ? ` (${what})` : ''}`);
}
