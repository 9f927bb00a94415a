/**
 * Checks of what the notifier is given: notifications, targets, options. Each problem is one
 * {@link NotifyInputError} naming the field. The API calls {@link checkNotifyTarget} at sign-up
 * so that a bad `callbackUrl` or `email` is refused there with a 4xx, not found hours later.
 */
import { NOTIFICATION_KINDS, NotifyInputError, type CompiledNotifierOptions, type Notification, type NotifierOptions, type NotifyTarget } from './types.js';

/**
 * The retry schedule, Standard Webhooks/Svix style: the delay before each attempt, counted from
 * the end of the one before (the first from `enqueue`): at once, 5 s, 5 min, 30 min, 2 h, 5 h,
 * 10 h, 10 h — 8 attempts over about 27.6 hours.
 */
export const DEFAULT_RETRY_SCHEDULE_MS: readonly number[] = Object.freeze([
  0,
  5_000,
  5 * 60_000,
  30 * 60_000,
  2 * 3_600_000,
  5 * 3_600_000,
  10 * 3_600_000,
  10 * 3_600_000,
]);

export const NOTIFY_DEFAULTS = {
  attemptTimeoutMs: 10_000,
  maxConcurrent: 8,
  maxQueued: 100_000,
} as const;

export const NOTIFY_LIMITS = {
  idLength: 128,
  urlLength: 2048,
  emailLength: 254,
  emailLocalLength: 64,
  textLength: 256,
  reasonLength: 4096,
  scheduleLength: 50,
  maxDelayMs: 7 * 24 * 3_600_000,
} as const;

const ID = /^[A-Za-z0-9_.:-]+$/;
// Control characters: C0, DEL and C1. Tabs and newlines are allowed only where said.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
// eslint-disable-next-line no-control-regex
const CONTROL_BUT_LINES = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;
const DOMAIN_LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?';
const EMAIL = new RegExp(`^[A-Za-z0-9.!#$%&'*+/=?^_\`{|}~-]+@${DOMAIN_LABEL}(?:\\.${DOMAIN_LABEL})+$`);

function text(field: string, value: unknown, max: number, opts: { lines?: boolean; optional?: boolean; empty?: boolean } = {}): void {
  if (value === undefined && opts.optional) return;
  if (typeof value !== 'string') throw new NotifyInputError(field, `must be a string, got ${value === null ? 'null' : typeof value}`);
  if (value.length === 0 && !opts.empty) throw new NotifyInputError(field, 'must not be empty');
  if (value.length > max) throw new NotifyInputError(field, `must be at most ${max} characters, got ${value.length}`);
  if ((opts.lines ? CONTROL_BUT_LINES : CONTROL).test(value)) {
    throw new NotifyInputError(field, opts.lines ? 'must hold no control characters other than tab and newline' : 'must hold no control characters');
  }
}

/** Throws a {@link NotifyInputError} unless `url` is an `http:`/`https:` URL without credentials. Returns it parsed. */
export function checkWebhookUrl(url: unknown, field = 'target.webhook'): URL {
  text(field, url, NOTIFY_LIMITS.urlLength);
  let parsed: URL;
  try {
    parsed = new URL(url as string);
  } catch {
    throw new NotifyInputError(field, 'must be an absolute http: or https: URL');
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new NotifyInputError(field, `must be an http: or https: URL, got ${JSON.stringify(parsed.protocol)}`);
  }
  if (parsed.username !== '' || parsed.password !== '') {
    throw new NotifyInputError(field, 'must not carry credentials (user:password@): receivers check the signature instead');
  }
  if (parsed.hostname === '') throw new NotifyInputError(field, 'must name a host');
  return parsed;
}

/** Throws a {@link NotifyInputError} unless `address` is one plain e-mail address (`ops@example.com`). */
export function checkEmailAddress(address: unknown, field = 'target.email'): string {
  if (typeof address === 'string' && /[\r\n]/.test(address)) {
    throw new NotifyInputError(field, 'must not contain CR or LF (they would inject mail headers)');
  }
  text(field, address, NOTIFY_LIMITS.emailLength);
  const a = address as string;
  if (!EMAIL.test(a)) {
    throw new NotifyInputError(field, 'must be one e-mail address such as ops@example.com (no display name, no list, no spaces)');
  }
  if (a.indexOf('@') > NOTIFY_LIMITS.emailLocalLength) {
    throw new NotifyInputError(field, `the part before @ must be at most ${NOTIFY_LIMITS.emailLocalLength} characters`);
  }
  return a;
}

/** Throws a {@link NotifyInputError} unless the target's webhook and e-mail (those present) are usable. */
export function checkNotifyTarget(target: unknown, field = 'target'): NotifyTarget {
  if (typeof target !== 'object' || target === null || Array.isArray(target)) throw new NotifyInputError(field, 'must be an object');
  const t = target as Record<string, unknown>;
  for (const key of Object.keys(t)) {
    if (key !== 'webhook' && key !== 'email') throw new NotifyInputError(`${field}.${key}`, 'is not a target (webhook or email)');
  }
  if (t.webhook !== undefined) checkWebhookUrl(t.webhook, `${field}.webhook`);
  if (t.email !== undefined) checkEmailAddress(t.email, `${field}.email`);
  return t;
}

/** Throws a {@link NotifyInputError} naming the first bad field of `n`, target excluded. */
export function checkNotification(n: unknown): Notification {
  if (typeof n !== 'object' || n === null) throw new NotifyInputError('notification', 'must be an object');
  const v = n as Record<string, unknown>;
  text('id', v.id, NOTIFY_LIMITS.idLength);
  if (!ID.test(v.id as string)) throw new NotifyInputError('id', 'must hold only letters, digits and _ . : -');
  if (!(NOTIFICATION_KINDS as readonly unknown[]).includes(v.kind)) {
    throw new NotifyInputError('kind', `must be one of ${NOTIFICATION_KINDS.join(', ')}, got ${JSON.stringify(v.kind)}`);
  }
  if (typeof v.at !== 'number' || !Number.isSafeInteger(v.at) || v.at < 0) throw new NotifyInputError('at', 'must be ms since the epoch (an integer ≥ 0)');
  text('app', v.app, NOTIFY_LIMITS.textLength);
  const t = v.tenant;
  if (typeof t !== 'object' || t === null) throw new NotifyInputError('tenant', 'must be an object');
  const tt = t as Record<string, unknown>;
  text('tenant.id', tt.id, NOTIFY_LIMITS.textLength);
  text('tenant.name', tt.name, NOTIFY_LIMITS.textLength);
  // A tenant of a role without host names has none: an empty host is allowed, and said so.
  if (tt.host !== '') text('tenant.host', tt.host, NOTIFY_LIMITS.textLength);
  text('tenant.state', tt.state, NOTIFY_LIMITS.textLength);
  text('tenant.instance', tt.instance, NOTIFY_LIMITS.textLength, { optional: true });
  text('tenant.address', tt.address, NOTIFY_LIMITS.textLength, { optional: true });
  text('tenant.reason', tt.reason, NOTIFY_LIMITS.reasonLength, { optional: true, lines: true, empty: true });
  return n as Notification;
}

function positiveInt(value: number | undefined, fallback: number, field: string, min = 1): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < min) throw new NotifyInputError(field, `must be an integer ≥ ${min}, got ${String(value)}`);
  return value;
}

/** Checks the options and fills in the defaults; throws a {@link NotifyInputError} naming the option. */
export function compileNotifierOptions(opts: NotifierOptions): CompiledNotifierOptions {
  if (typeof opts.secretsFor !== 'function') throw new NotifyInputError('secretsFor', 'must be a function (app) => secrets');
  const scale = opts.scheduleScale ?? 1;
  if (typeof scale !== 'number' || !Number.isFinite(scale) || scale < 0 || scale > 1000) {
    throw new NotifyInputError('scheduleScale', `must be a number from 0 to 1000, got ${String(scale)}`);
  }
  const schedule = opts.scheduleMs ?? DEFAULT_RETRY_SCHEDULE_MS;
  if (!Array.isArray(schedule) || schedule.length === 0 || schedule.length > NOTIFY_LIMITS.scheduleLength) {
    throw new NotifyInputError('scheduleMs', `must list 1 to ${NOTIFY_LIMITS.scheduleLength} delays`);
  }
  const scheduleMs = schedule.map((d: unknown, i) => {
    if (typeof d !== 'number' || !Number.isFinite(d) || d < 0 || d > NOTIFY_LIMITS.maxDelayMs) {
      throw new NotifyInputError(`scheduleMs[${i}]`, `must be a delay in ms from 0 to ${NOTIFY_LIMITS.maxDelayMs}, got ${String(d)}`);
    }
    return Math.round(d * scale);
  });
  return {
    scheduleMs: Object.freeze(scheduleMs),
    attemptTimeoutMs: positiveInt(opts.attemptTimeoutMs, NOTIFY_DEFAULTS.attemptTimeoutMs, 'attemptTimeoutMs', 10),
    maxConcurrent: positiveInt(opts.maxConcurrent, NOTIFY_DEFAULTS.maxConcurrent, 'maxConcurrent'),
    maxQueued: positiveInt(opts.maxQueued, NOTIFY_DEFAULTS.maxQueued, 'maxQueued'),
  };
}

/** A sentence safe to store and print: control characters become spaces, at most `max` characters. */
export function oneLine(s: string, max = 300): string {
  // eslint-disable-next-line no-control-regex
  const flat = s.replace(/[\u0000-\u001f\u007f-\u009f]+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}
