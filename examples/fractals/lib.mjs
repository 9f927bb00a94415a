// What the fractal programs share: reading their environment, HTTP calls that always time out
// and say whether they may be retried, backoff, atomic file writes, and a clean exit.
import { randomBytes } from 'node:crypto';
import { rename, rm, writeFile } from 'node:fs/promises';

/** A prefix for log lines, so interleaved output of many processes stays readable. */
export function logger(role) {
  const who = `${role} ${process.env.DROVER_INSTANCE || process.pid}`;
  return {
    info: (msg) => console.log(`${who}: ${msg}`),
    warn: (msg) => console.error(`${who}: ${msg}`),
  };
}

/**
 * The URLs of an import: drover joins a role's members with commas.
 * @param {string | undefined} value
 * @returns {string[]}
 */
export function urlList(value) {
  return (value ?? '')
    .split(',')
    .map((s) => s.trim().replace(/\/+$/, ''))
    .filter(Boolean);
}

/** Exits with a message naming the variable, rather than failing later on an undefined URL. */
export function requireUrls(name, hint) {
  const urls = urlList(process.env[name]);
  if (urls.length === 0) {
    console.error(`${name} is not set: ${hint}`);
    process.exit(1);
  }
  for (const u of urls) {
    if (!/^(https?|amqps?):\/\/[^\s/]+/.test(u)) {
      console.error(`${name}: ${JSON.stringify(u)} is not a URL such as http://127.0.0.1:8080`);
      process.exit(1);
    }
  }
  return urls;
}

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m)?$/;
const UNIT_MS = { ms: 1, s: 1000, m: 60_000 };

/**
 * A duration from the environment: `2s`, `500ms`, `1m`, or a bare number of seconds.
 * @param {string} name
 * @param {number} fallbackMs
 */
export function durationEnv(name, fallbackMs) {
  const text = process.env[name];
  if (text === undefined || text.trim() === '') return fallbackMs;
  const m = DURATION.exec(text.trim());
  const ms = m ? Math.round(Number(m[1]) * UNIT_MS[m[2] ?? 's']) : NaN;
  if (!(ms > 0)) {
    console.error(`${name}: expected a duration such as 30s or 500ms, got ${JSON.stringify(text)}`);
    process.exit(1);
  }
  return ms;
}

/** A positive integer from the environment. */
export function intEnv(name, fallback, { min = 1, max = Number.MAX_SAFE_INTEGER } = {}) {
  const text = process.env[name];
  if (text === undefined || text.trim() === '') return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < min || n > max) {
    console.error(`${name}: expected an integer from ${min} to ${max}, got ${JSON.stringify(text)}`);
    process.exit(1);
  }
  return n;
}

export const sleep = (ms, signal) =>
  new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });

/**
 * A failed call. `transient` says a later attempt may succeed (the peer is down, slow or
 * answered 5xx); `unsent` says the request never reached the peer, so even a non-idempotent
 * call may be repeated.
 */
export class CallError extends Error {
  constructor(message, { status, transient = false, unsent = false, cause, body } = {}) {
    super(message, cause ? { cause } : undefined);
    this.name = 'CallError';
    this.status = status;
    this.transient = transient;
    this.unsent = unsent;
    this.body = body;
  }
}

const UNSENT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);

/**
 * One HTTP call with a deadline. Resolves with any HTTP answer (the caller decides what a 404
 * means); rejects with a CallError when there is no answer.
 * @param {string} url
 * @param {{ method?: string, json?: unknown, body?: Buffer, contentType?: string,
 *           timeoutMs?: number, signal?: AbortSignal, headers?: Record<string, string> }} [opts]
 * @returns {Promise<{ status: number, headers: Headers, body: Buffer, json: () => any }>}
 */
export async function call(url, opts = {}) {
  const { method = 'GET', json, body, contentType, timeoutMs = 5000, signal, headers = {} } = opts;
  const timeout = AbortSignal.timeout(timeoutMs);
  const init = {
    method,
    headers: { ...headers },
    signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
  };
  if (json !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.headers['content-type'] = contentType ?? 'application/octet-stream';
    init.body = body;
  }
  let res;
  let buf;
  try {
    res = await fetch(url, init);
    buf = Buffer.from(await res.arrayBuffer());
  } catch (err) {
    if (signal?.aborted) throw new CallError(`${method} ${url}: aborted`, { cause: err });
    if (timeout.aborted) throw new CallError(`${method} ${url}: no answer within ${timeoutMs}ms`, { transient: true, cause: err });
    const code = err?.cause?.code;
    throw new CallError(`${method} ${url}: ${code ?? err?.cause?.message ?? err?.message ?? err}`, {
      transient: true,
      unsent: res === undefined && UNSENT_CODES.has(code),
      cause: err,
    });
  }
  return {
    status: res.status,
    headers: res.headers,
    body: buf,
    json: () => JSON.parse(buf.toString('utf8')),
  };
}

/** The `{ error: { message } }` of an answer, or its first bytes, for an error message. */
export function describeAnswer(res) {
  try {
    const j = res.json();
    if (j?.error?.message) return `${res.status} ${j.error.code ?? ''}: ${j.error.message}`.replace(/ :/, ':');
  } catch {
    // not JSON
  }
  return `${res.status} ${res.body.toString('utf8', 0, 200)}`.trim();
}

/** Rejects a 5xx as transient, so retry() tries again; passes anything else through. */
export function failOn5xx(res, what) {
  if (res.status >= 500) throw new CallError(`${what}: ${describeAnswer(res)}`, { status: res.status, transient: true, body: res.body });
  return res;
}

/**
 * Calls fn until it succeeds, a non-transient error is thrown, attempts run out or the signal
 * aborts. Backoff doubles from baseMs to maxMs, with jitter so many clients retrying after
 * one outage do not arrive in step.
 * @template T
 * @param {() => Promise<T>} fn
 * @param {{ attempts?: number, baseMs?: number, maxMs?: number, signal?: AbortSignal,
 *           retryable?: (err: any) => boolean, onRetry?: (err: any, delayMs: number) => void }} [opts]
 * @returns {Promise<T>}
 */
export async function retry(fn, opts = {}) {
  const { attempts = 5, baseMs = 100, maxMs = 2000, signal, retryable = (e) => e?.transient === true, onRetry } = opts;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (attempt >= attempts || !retryable(err) || signal?.aborted) throw err;
      const delay = Math.min(maxMs, baseMs * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2);
      onRetry?.(err, delay);
      await sleep(delay, signal);
      if (signal?.aborted) throw err;
    }
  }
}

/** A backoff for loops that must never give up (the worker's lease loop). */
export function backoff({ baseMs = 200, maxMs = 5000 } = {}) {
  let failures = 0;
  return {
    next() {
      const d = Math.min(maxMs, baseMs * 2 ** failures) * (0.5 + Math.random() / 2);
      failures = Math.min(failures + 1, 30);
      return d;
    },
    reset() {
      failures = 0;
    },
  };
}

/** Writes through a temporary file and rename, so a reader or a crash never sees half a file. */
export async function writeFileAtomic(path, data) {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(tmp, data);
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** The error body every fractal program answers with. */
export function problem(code, message, extra = {}) {
  return { error: { code, message, ...extra } };
}

/**
 * Closes the server on SIGTERM/SIGINT and exits 0; `beforeClose` runs first (the worker
 * finishes its task there).
 * @param {{ close: () => Promise<unknown> }} app
 * @param {{ beforeClose?: () => Promise<void> }} [opts]
 */
export function exitOnSignals(app, log, opts = {}) {
  let stopping = false;
  const stop = async (sig) => {
    if (stopping) return;
    stopping = true;
    log.info(`${sig}: stopping`);
    try {
      await opts.beforeClose?.();
      await app?.close();
    } catch (err) {
      log.warn(`error while stopping: ${err?.message ?? err}`);
    }
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

/** The port to listen on: $PORT (drover's), else an ephemeral one. */
export function listenPort() {
  const n = Number(process.env.PORT ?? 0);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    console.error(`PORT: expected a port number, got ${JSON.stringify(process.env.PORT)}`);
    process.exit(1);
  }
  return n;
}

/** Loopback unless HOST says otherwise: drover's local provider reaches roles on 127.0.0.1. */
export const HOST = process.env.HOST || '127.0.0.1';

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
