/**
 * The dashboard at `/ui`: its login, its sessions and its static files (built into `dist/ui` by
 * scripts/build-ui.mjs from `web/`).
 *
 * The page asks for the admin token once (`POST /ui/login`, a plain form) and gets a session
 * cookie in return: a random id (the token itself never goes into a cookie), `HttpOnly`,
 * `SameSite=Strict`, `Path=/`, expiring after {@link UiOptions.sessionMs}. Sessions live in the
 * controller's memory: a restart signs everyone out. A request authenticated by the cookie that
 * changes anything (any method but GET/HEAD) must also carry the session's CSRF token in
 * `X-CSRF-Token` (the page reads it from its own HTML) and, if it has an `Origin`, come from the
 * controller's own origin. Requests with the bearer token (the CLI) are unchanged and need no
 * CSRF token. Without a session only the login page is served.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ApiError } from './errors.js';

export interface UiOptions {
  /** The admin token the login form must be given. */
  readonly token: string;
  /** Where the built dashboard is; by default `dist/ui` of this package. */
  readonly dir?: string;
  /** How long a session lasts. @default 43200000 (12 h) */
  readonly sessionMs?: number;
  /** At most this many sessions; the oldest goes first. @default 256 */
  readonly maxSessions?: number;
  readonly now?: () => number;
}

export const SESSION_COOKIE = 'drover_session';
export const CSRF_HEADER = 'x-csrf-token';

interface Session {
  readonly csrf: string;
  readonly expiresAt: number;
}

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.html': 'text/html; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.map': 'application/json; charset=utf-8',
};

/** Same-origin everything, no framing, no inline script. */
const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
} as const;

const digest = (s: string) => createHash('sha256').update(s).digest();
const sameSecret = (a: string, b: string) => timingSafeEqual(digest(a), digest(b));

/** The built dashboard: `dist/ui` next to `dist/controller` (installed), or of the repo (run from src). */
function defaultDir(): string {
  const here = fileURLToPath(new URL('.', import.meta.url));
  const candidates = [join(here, '../ui'), join(here, '../../dist/ui')];
  return candidates.find((d) => existsSync(join(d, 'index.html'))) ?? candidates[candidates.length - 1]!;
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

export function loginPage(failed: boolean): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><title>Drover — sign in</title><link rel="stylesheet" href="/ui/login.css"></head>
<body><main class="login">
<h1>Drover</h1>
<form method="post" action="/ui/login">
<label for="token">Controller token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus aria-describedby="hint${failed ? ' error' : ''}">
<p id="hint" class="hint">In <code>.drover/token</code> where <code>drover up</code> ran, or <code>$DROVER_TOKEN</code>.</p>
${failed ? '<p id="error" class="error" role="alert">✗ That token is not this controller’s.</p>' : ''}
<button type="submit">Sign in</button>
</form></main></body></html>`;
}

const LOGIN_CSS = `body{font:16px/1.5 system-ui,sans-serif;background:#f4f5f7;color:#1b1f24;margin:0}
.login{max-width:22rem;margin:12vh auto;background:#fff;padding:2rem;border:1px solid #c9ced6;border-radius:8px}
h1{margin:0 0 1rem;font-size:1.5rem}label{display:block;font-weight:600;margin-bottom:.25rem}
input{width:100%;box-sizing:border-box;padding:.5rem;font:inherit;border:1px solid #6b7480;border-radius:4px}
input:focus,button:focus{outline:3px solid #1f5fbf;outline-offset:2px}
.hint{color:#4a525c;font-size:.875rem}.error{color:#a3140b;font-weight:600}
button{margin-top:.5rem;padding:.5rem 1rem;font:inherit;background:#1f5fbf;color:#fff;border:0;border-radius:4px;cursor:pointer}
code{font-size:.85em}`;

export class UiSessions {
  private readonly sessions = new Map<string, Session>();
  private readonly sessionMs: number;
  private readonly maxSessions: number;
  private readonly now: () => number;
  private files: Map<string, Buffer> | undefined;
  readonly dir: string;

  constructor(private readonly o: UiOptions) {
    this.sessionMs = o.sessionMs ?? 12 * 3600_000;
    this.maxSessions = o.maxSessions ?? 256;
    this.now = o.now ?? Date.now;
    this.dir = o.dir ?? defaultDir();
  }

  /** Paths anyone may ask for: the login page (and its style) and the login form's target. */
  isPublic(method: string, path: string): boolean {
    if (method === 'GET' || method === 'HEAD') return path === '/ui' || path === '/ui/' || path === '/ui/login.css';
    return method === 'POST' && path === '/ui/login';
  }

  /** Starts a session; returns its id (for the cookie) and CSRF token. */
  create(): { id: string; csrf: string } {
    const id = randomBytes(32).toString('base64url');
    const csrf = randomBytes(32).toString('base64url');
    this.prune();
    while (this.sessions.size >= this.maxSessions) this.sessions.delete(this.sessions.keys().next().value!);
    // Kept by hash: a dump of the controller's memory holds no usable cookie.
    this.sessions.set(digest(id).toString('base64url'), { csrf, expiresAt: this.now() + this.sessionMs });
    return { id, csrf };
  }

  /** The session a request's cookie names, if it is current. */
  session(req: FastifyRequest): Session | undefined {
    const id = cookieValue(req.headers.cookie, SESSION_COOKIE);
    if (!id || id.length > 100) return undefined;
    const key = digest(id).toString('base64url');
    const s = this.sessions.get(key);
    if (s && s.expiresAt <= this.now()) {
      this.sessions.delete(key);
      return undefined;
    }
    return s;
  }

  end(req: FastifyRequest): void {
    const id = cookieValue(req.headers.cookie, SESSION_COOKIE);
    if (id) this.sessions.delete(digest(id).toString('base64url'));
  }

  /**
   * Whether a request without the bearer token may go on, on its session cookie. A session
   * without its CSRF token (or from another origin) on a change is refused outright.
   */
  allows(req: FastifyRequest): boolean {
    const s = this.session(req);
    if (!s) return false;
    if (req.method === 'GET' || req.method === 'HEAD') return true;
    const origin = req.headers.origin;
    if (origin !== undefined && origin !== `http://${req.headers.host ?? ''}` && origin !== `https://${req.headers.host ?? ''}`) {
      throw new ApiError('forbidden', 'origin: a dashboard session may change things only from the dashboard itself');
    }
    const given = req.headers[CSRF_HEADER];
    if (typeof given !== 'string' || !sameSecret(given, s.csrf)) throw new ApiError('forbidden', `${CSRF_HEADER}: missing or wrong for this session`);
    return true;
  }

  private prune(): void {
    const now = this.now();
    for (const [k, s] of this.sessions) if (s.expiresAt <= now) this.sessions.delete(k);
  }

  cookie(id: string): string {
    return `${SESSION_COOKIE}=${id}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${Math.floor(this.sessionMs / 1000)}`;
  }

  /** The built files, read once. */
  private built(): Map<string, Buffer> {
    if (this.files) return this.files;
    const files = new Map<string, Buffer>();
    const walk = (dir: string, prefix: string) => {
      if (!existsSync(dir)) return;
      for (const name of readdirSync(dir)) {
        const p = join(dir, name);
        if (statSync(p).isDirectory()) walk(p, `${prefix}${name}/`);
        else files.set(`${prefix}${name}`, readFileSync(p));
      }
    };
    walk(this.dir, '');
    this.files = files;
    return files;
  }

  /** The dashboard's page, with this session's CSRF token in it. */
  page(csrf: string): string | undefined {
    const html = this.built().get('index.html');
    return html?.toString('utf8').replace('__CSRF_TOKEN__', escapeHtml(csrf));
  }

  asset(path: string): { body: Buffer; type: string } | undefined {
    const body = this.built().get(path);
    return body ? { body, type: TYPES[extname(path)] ?? 'application/octet-stream' } : undefined;
  }

  checkToken(given: string): boolean {
    return sameSecret(given, this.o.token);
  }
}

/** Registers `/ui`, `/ui/login`, `/ui/logout` and `/ui/assets/*`. Auth is the API's onRequest hook's, with {@link UiSessions.allows}. */
export async function registerUi(app: FastifyInstance, ui: UiSessions): Promise<void> {
  const html = (reply: FastifyReply, status: number, body: string) => reply.status(status).headers({ ...SECURITY_HEADERS, 'content-type': TYPES['.html']! }).send(body);
  const hide = { schema: { hide: true } };

  app.get('/ui', hide, async (_req, reply) => reply.redirect('/ui/', 302));
  app.get<{ Querystring: { failed?: string } }>('/ui/', hide, async (req, reply) => {
    const s = ui.session(req);
    if (!s) return html(reply, 200, loginPage(req.query.failed !== undefined));
    const page = ui.page(s.csrf);
    if (!page) return html(reply, 503, '<!doctype html><title>Drover</title><p>The dashboard is not built: run <code>npm run build</code>.</p>');
    return html(reply, 200, page);
  });
  app.get('/ui/login.css', hide, async (_req, reply) => reply.headers({ ...SECURITY_HEADERS, 'content-type': TYPES['.css']! }).send(LOGIN_CSS));
  app.get<{ Params: { '*': string } }>('/ui/assets/*', hide, async (req, reply) => {
    const a = ui.asset(`assets/${req.params['*']}`);
    if (!a) throw new ApiError('not_found', `no dashboard file ${JSON.stringify(req.params['*'].slice(0, 100))}`);
    return reply.headers({ ...SECURITY_HEADERS, 'content-type': a.type }).send(a.body);
  });

  // The login form is a plain HTML form: its body is urlencoded, a type the API takes nowhere else.
  await app.register(async (scope) => {
    scope.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 4096 }, (_req, body, done) => {
      done(null, Object.fromEntries(new URLSearchParams(String(body))));
    });
    scope.post<{ Body: { token?: unknown } }>('/ui/login', hide, async (req, reply) => {
      const origin = req.headers.origin;
      if (origin !== undefined && origin !== 'null' && origin !== `http://${req.headers.host ?? ''}` && origin !== `https://${req.headers.host ?? ''}`) {
        throw new ApiError('forbidden', 'origin: sign in from the dashboard itself');
      }
      const token = req.body && typeof req.body === 'object' ? req.body.token : undefined;
      if (typeof token !== 'string' || token.length > 1000 || !ui.checkToken(token.trim())) {
        return reply.status(303).headers({ ...SECURITY_HEADERS, location: '/ui/?failed' }).send();
      }
      const s = ui.create();
      return reply.status(303).headers({ ...SECURITY_HEADERS, location: '/ui/', 'set-cookie': ui.cookie(s.id) }).send();
    });
  });

  app.post('/ui/logout', hide, async (req, reply) => {
    ui.end(req);
    return reply
      .headers({ ...SECURITY_HEADERS, 'set-cookie': `${SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0` })
      .send({ signedOut: true });
  });
}
