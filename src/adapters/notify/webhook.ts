/**
 * Webhooks after the Standard Webhooks convention (standardwebhooks.com): a JSON POST whose
 * `webhook-signature` header holds `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, one per
 * active secret, so a receiver can roll its secret without missing a delivery.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { errorText, type AttemptContext, type AttemptOutcome } from './channel.js';
import { oneLine } from './validate.js';
import { NotifyInputError, type Notification, type WebhookHeaders, type WebhookVerification } from './types.js';

export const WEBHOOK_SECRET_PREFIX = 'whsec_';
/** A receiver's default tolerance for `webhook-timestamp` against its own clock (replays older than this are refused). */
export const DEFAULT_WEBHOOK_TOLERANCE_S = 300;
/** At most this much of a receiver's answer is read (for the error of a failed attempt); the rest is cut. */
export const MAX_RESPONSE_BYTES = 4096;

const MIN_KEY_BYTES = 16;
const MAX_KEY_BYTES = 1024;
const MAX_ID_LENGTH = 256;
const MAX_SIGNATURE_HEADER = 8192;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * The HMAC key of a `whsec_<base64>` secret. Throws a {@link NotifyInputError} (code
 * `notify_bad_secret`) naming `field` when it is not in that form or its key is shorter than
 * 16 bytes.
 */
export function webhookSecretKey(secret: unknown, field = 'secret'): Buffer {
  if (typeof secret !== 'string' || !secret.startsWith(WEBHOOK_SECRET_PREFIX)) {
    throw new NotifyInputError(field, `must be a secret in the form ${WEBHOOK_SECRET_PREFIX}<base64>`, 'notify_bad_secret');
  }
  const b64 = secret.slice(WEBHOOK_SECRET_PREFIX.length);
  if (b64.length > Math.ceil(MAX_KEY_BYTES / 3) * 4 || !BASE64.test(b64)) {
    throw new NotifyInputError(field, `the part after ${WEBHOOK_SECRET_PREFIX} must be base64 (A-Z a-z 0-9 + /, = padding)`, 'notify_bad_secret');
  }
  const key = Buffer.from(b64, 'base64');
  if (key.length < MIN_KEY_BYTES) throw new NotifyInputError(field, `its key must be at least ${MIN_KEY_BYTES} bytes, got ${key.length}`, 'notify_bad_secret');
  return key;
}

/** A new secret, `whsec_` + 32 random bytes in base64: what an app's webhooks are signed with. */
export function generateWebhookSecret(): string {
  return WEBHOOK_SECRET_PREFIX + randomBytes(32).toString('base64');
}

function hmac(key: Buffer, id: string, timestamp: string, body: string | Uint8Array): Buffer {
  return createHmac('sha256', key).update(`${id}.${timestamp}.`).update(body).digest();
}

/**
 * The `webhook-signature` header value for `id.timestampS.body`: `v1,<base64>` per secret,
 * separated by spaces. Throws a {@link NotifyInputError} for a malformed secret or none.
 */
export function signWebhook(secrets: readonly string[], id: string, timestampS: number, body: string | Uint8Array): string {
  if (secrets.length === 0) throw new NotifyInputError('secrets', 'no signing secret: webhooks are never sent unsigned', 'notify_bad_secret');
  const ts = String(Math.floor(timestampS));
  return secrets.map((s, i) => `v1,${hmac(webhookSecretKey(s, `secrets[${i}]`), id, ts, body).toString('base64')}`).join(' ');
}

/** The JSON body of a notification's webhook: `{ type, timestamp, data: { app, tenant } }`. */
export function webhookBody(n: Notification): string {
  const t = n.tenant;
  const tenant = {
    id: t.id,
    name: t.name,
    host: t.host,
    state: t.state,
    ...(t.instance !== undefined && { instance: t.instance }),
    ...(t.address !== undefined && { address: t.address }),
    ...(t.reason !== undefined && { reason: t.reason }),
  };
  return JSON.stringify({ type: n.kind, timestamp: new Date(n.at).toISOString(), data: { app: n.app, tenant } });
}

/** The headers of one attempt, signed at `nowMs` with every secret. */
export function webhookHeaders(id: string, body: string, secrets: readonly string[], nowMs: number): Record<string, string> {
  const ts = Math.floor(nowMs / 1000);
  return {
    'content-type': 'application/json',
    'user-agent': 'Drover-Webhooks/1',
    'webhook-id': id,
    'webhook-timestamp': String(ts),
    'webhook-signature': signWebhook(secrets, id, ts, body),
  };
}

function header(headers: WebhookHeaders, name: string): string | undefined {
  if (typeof (headers as Headers).get === 'function' && typeof (headers as Headers).has === 'function') {
    return (headers as Headers).get(name) ?? undefined;
  }
  const rec = headers as Readonly<Record<string, string | readonly string[] | undefined>>;
  let v = rec[name];
  if (v === undefined) {
    const key = Object.keys(rec).find((k) => k.toLowerCase() === name);
    v = key === undefined ? undefined : rec[key];
  }
  if (typeof v === 'string') return v;
  return v !== undefined && v.length === 1 ? v[0] : undefined;
}

/**
 * Verifies a Standard Webhooks delivery, as a receiver does: the three headers are present,
 * `webhook-timestamp` is within `toleranceS` of `nowMs`, and one `v1` signature of
 * `webhook-signature` matches the HMAC of `id.timestamp.body` under one of `secret` (one secret
 * or several, during a rotation). `body` must be the raw bytes received, before any JSON
 * parsing. Signatures are compared in constant time. Never throws, also for a malformed secret.
 */
export function verifyWebhook(
  secret: string | readonly string[],
  headers: WebhookHeaders,
  body: string | Uint8Array,
  toleranceS: number = DEFAULT_WEBHOOK_TOLERANCE_S,
  nowMs: number = Date.now(),
): WebhookVerification {
  const id = header(headers, 'webhook-id');
  const ts = header(headers, 'webhook-timestamp');
  const sig = header(headers, 'webhook-signature');
  if (id === undefined || ts === undefined || sig === undefined) return { ok: false, reason: 'missing webhook-id, webhook-timestamp or webhook-signature' };
  if (id.length === 0 || id.length > MAX_ID_LENGTH) return { ok: false, reason: 'webhook-id is empty or too long' };
  if (!/^[0-9]{1,15}$/.test(ts)) return { ok: false, reason: 'webhook-timestamp is not unix seconds' };
  const timestamp = Number(ts);
  if (!(toleranceS >= 0) || Math.abs(nowMs / 1000 - timestamp) > toleranceS) {
    return { ok: false, reason: `webhook-timestamp is more than ${toleranceS} s away from now` };
  }
  if (sig.length > MAX_SIGNATURE_HEADER) return { ok: false, reason: 'webhook-signature is too long' };
  const given = sig
    .split(' ')
    .filter((s) => s.startsWith('v1,'))
    .map((s) => s.slice(3))
    .filter((b64) => BASE64.test(b64))
    .map((b64) => Buffer.from(b64, 'base64'));
  if (given.length === 0) return { ok: false, reason: 'webhook-signature holds no v1 signature' };
  const secrets = typeof secret === 'string' ? [secret] : secret;
  for (const s of secrets) {
    let key: Buffer;
    try {
      key = webhookSecretKey(s);
    } catch {
      continue;
    }
    const expected = hmac(key, id, ts, body);
    // Every candidate is compared, whatever matched before: the time taken tells nothing.
    let match = false;
    for (const g of given) if (g.length === expected.length && timingSafeEqual(g, expected)) match = true;
    if (match) return { ok: true, id, timestamp };
  }
  return { ok: false, reason: 'no signature matches' };
}

/** Agents owned by one notifier (closed with it): no keep-alive, so nothing lingers after an attempt. */
export interface WebhookAgents {
  readonly http: http.Agent;
  readonly https: https.Agent;
}

export function createWebhookAgents(maxSockets: number): WebhookAgents {
  return { http: new http.Agent({ keepAlive: false, maxSockets }), https: new https.Agent({ keepAlive: false, maxSockets }) };
}

/**
 * One POST of `body` to `url`. 2xx: delivered. 410: the receiver asks to stop (give up). Any other
 * status (redirects too: they are never followed), a timeout or a connection error: failed, to
 * be retried. At most {@link MAX_RESPONSE_BYTES} of the answer are read. Never rejects.
 */
export function postWebhook(url: URL, headers: Readonly<Record<string, string>>, body: string, agents: WebhookAgents, ctx: AttemptContext): Promise<AttemptOutcome> {
  return new Promise<AttemptOutcome>((resolve) => {
    const payload = Buffer.from(body);
    let settled = false;
    let status: number | undefined;
    const chunks: Buffer[] = [];
    let read = 0;
    const finish = (outcome: AttemptOutcome) => {
      if (settled) return;
      settled = true;
      ctx.timers.clearTimeout(timer);
      ctx.signal.removeEventListener('abort', onAbort);
      req.destroy();
      resolve(outcome);
    };
    const fromStatus = (): AttemptOutcome => {
      const s = status ?? 0;
      if (s >= 200 && s < 300) return { ok: true, status: s };
      const answer = oneLine(Buffer.concat(chunks).toString('utf8'), 200);
      const said = answer === '' ? '' : `: ${answer}`;
      if (s === 410) return { ok: false, status: s, giveUp: true, error: `HTTP 410 Gone: the receiver asks for no more deliveries${said}` };
      if (s >= 300 && s < 400) return { ok: false, status: s, error: `HTTP ${s}: redirects are not followed${said}` };
      return { ok: false, status: s, error: `HTTP ${s}${said}` };
    };
    const failed = (error: string): AttemptOutcome => (status === undefined ? { ok: false, error } : fromStatus());
    const onAbort = () => finish(failed('aborted: the notifier is closing'));
    const timer = ctx.timers.setTimeout(() => finish(failed(`no answer within ${ctx.timeoutMs} ms`)), ctx.timeoutMs);
    const req = (url.protocol === 'https:' ? https : http).request(url, {
      method: 'POST',
      agent: url.protocol === 'https:' ? agents.https : agents.http,
      headers: { ...headers, 'content-length': String(payload.length) },
    });
    ctx.signal.addEventListener('abort', onAbort);
    req.on('error', (e) => finish(failed(oneLine(errorText(e)))));
    req.on('response', (res) => {
      status = res.statusCode ?? 0;
      res.on('data', (chunk: Buffer) => {
        if (read < MAX_RESPONSE_BYTES) chunks.push(chunk.subarray(0, MAX_RESPONSE_BYTES - read));
        read += chunk.length;
        if (read >= MAX_RESPONSE_BYTES) finish(fromStatus());
      });
      res.on('end', () => finish(fromStatus()));
      res.on('error', () => finish(fromStatus()));
      res.on('aborted', () => finish(fromStatus()));
    });
    if (ctx.signal.aborted) onAbort();
    else req.end(payload);
  });
}
