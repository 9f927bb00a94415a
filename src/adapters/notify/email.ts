/**
 * E-mail over SMTP with nodemailer: settings from the controller's environment
 * (`DROVER_SMTP_URL`, `DROVER_SMTP_FROM`), one plain-text and HTML message per notification.
 */
import { isIP } from 'node:net';
import type { SMTPPoolOptions } from 'nodemailer';
import { errorText, type AttemptContext, type AttemptOutcome } from './channel.js';
import { checkEmailAddress, NOTIFY_LIMITS, oneLine } from './validate.js';
import { NotifyInputError, type Notification, type SmtpSettings } from './types.js';

export const SMTP_ENV = { url: 'DROVER_SMTP_URL', from: 'DROVER_SMTP_FROM' } as const;

/** {@link SmtpSettings} checked and taken apart. */
export interface CompiledSmtpSettings {
  readonly host: string;
  readonly port: number;
  /** TLS from the first byte (`smtps:`); else STARTTLS when the server offers it. */
  readonly secure: boolean;
  /** STARTTLS is required: credentials are never sent in clear to a host other than this machine. */
  readonly requireTLS: boolean;
  readonly auth: { readonly user: string; readonly pass: string } | undefined;
  readonly from: { readonly name: string; readonly address: string };
}

// eslint-disable-next-line no-control-regex -- a display name holds no control character
const FROM_WITH_NAME = /^([^<>"\\\u0000-\u001f\u007f]{1,100}?)\s*<([^<>]+)>$/;

function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  return h === '::1';
}

/**
 * Checks SMTP settings; each problem a {@link NotifyInputError} (code `notify_bad_smtp_settings`)
 * naming `fields.url` or `fields.from`. The URL's password never appears in an error.
 */
export function compileSmtpSettings(settings: SmtpSettings, fields: { url: string; from: string } = { url: 'smtp.url', from: 'smtp.from' }): CompiledSmtpSettings {
  const bad = (field: string, reason: string) => new NotifyInputError(field, reason, 'notify_bad_smtp_settings');
  const raw = settings.url;
  if (typeof raw !== 'string' || raw.length === 0) throw bad(fields.url, 'must be set, e.g. smtp://user:pass@mail.example.com:587');
  if (raw.length > NOTIFY_LIMITS.urlLength) throw bad(fields.url, `must be at most ${NOTIFY_LIMITS.urlLength} characters`);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw bad(fields.url, 'is not a URL; expected smtp://[user:pass@]host[:port] or smtps://…');
  }
  if (url.protocol !== 'smtp:' && url.protocol !== 'smtps:') throw bad(fields.url, `must start with smtp:// or smtps://, got ${JSON.stringify(url.protocol)}`);
  if (url.hostname === '') throw bad(fields.url, 'must name a host');
  if ((url.pathname !== '' && url.pathname !== '/') || url.search !== '' || url.hash !== '') {
    throw bad(fields.url, 'must hold no path, query or fragment: smtp://[user:pass@]host[:port]');
  }
  const secure = url.protocol === 'smtps:';
  const port = url.port === '' ? (secure ? 465 : 587) : Number(url.port);
  let auth: CompiledSmtpSettings['auth'];
  if (url.username !== '' || url.password !== '') {
    try {
      auth = { user: decodeURIComponent(url.username), pass: decodeURIComponent(url.password) };
    } catch {
      throw bad(fields.url, 'user or password is not valid percent-encoding');
    }
    if (auth.user === '') throw bad(fields.url, 'has a password but no user');
  }
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const from = settings.from;
  if (typeof from !== 'string' || from.length === 0) throw bad(fields.from, 'must be set, e.g. "Drover <drover@example.com>"');
  if (/[\r\n]/.test(from)) throw bad(fields.from, 'must not contain CR or LF (they would inject mail headers)');
  if (from.length > 400) throw bad(fields.from, 'must be at most 400 characters');
  const named = FROM_WITH_NAME.exec(from);
  const name = named?.[1]?.trim() ?? '';
  const address = named?.[2] ?? from;
  try {
    checkEmailAddress(address, fields.from);
  } catch (e) {
    if (e instanceof NotifyInputError) throw bad(fields.from, 'must be an address (drover@example.com) or a name and an address (Drover <drover@example.com>)');
    throw e;
  }
  return { host, port, secure, requireTLS: !secure && auth !== undefined && !isLoopback(host), auth, from: { name, address } };
}

/**
 * SMTP settings from the controller's environment: `DROVER_SMTP_URL` and `DROVER_SMTP_FROM`.
 * Undefined when neither is set (e-mail is off); throws a {@link NotifyInputError} naming the
 * variable when one is missing or invalid.
 */
export function smtpSettingsFromEnv(env: Readonly<Record<string, string | undefined>> = process.env): SmtpSettings | undefined {
  const url = env[SMTP_ENV.url];
  const from = env[SMTP_ENV.from];
  if ((url === undefined || url === '') && (from === undefined || from === '')) return undefined;
  const settings: SmtpSettings = { url: url ?? '', from: from ?? '' };
  compileSmtpSettings(settings, SMTP_ENV);
  return settings;
}

export interface EmailMessage {
  readonly subject: string;
  readonly text: string;
  readonly html: string;
}

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** The message of a notification: subject, plain text and a simple HTML version of the same. */
export function emailMessage(n: Notification): EmailMessage {
  const t = n.tenant;
  const where = t.instance === undefined ? '' : ` on instance ${t.instance}${t.address === undefined ? '' : ` (${t.address})`}`;
  let headline: string;
  let subject: string;
  switch (n.kind) {
    case 'tenant.ready':
      subject = t.host ? `${t.name} is ready at ${t.host}` : `${t.name} is ready`;
      headline = `Tenant ${t.name} of app ${n.app} is ready${t.host ? ` at ${t.host}` : ''}${where}.`;
      break;
    case 'tenant.failed':
      subject = `${t.name} could not be set up`;
      headline = `Tenant ${t.name} of app ${n.app}${t.host ? ` (host ${t.host})` : ''} failed.`;
      break;
    case 'tenant.moved':
      subject = `${t.name} moved${t.instance === undefined ? '' : ` to ${t.instance}`}`;
      headline = `Tenant ${t.name} of app ${n.app}${t.host ? ` (host ${t.host})` : ''} is now served${where === '' ? ' by another instance' : where}.`;
      break;
    case 'tenant.removed':
      subject = `${t.name} was removed`;
      headline = `Tenant ${t.name} of app ${n.app} was removed${t.host ? `; ${t.host} is no longer routed` : ''}.`;
      break;
  }
  const reason = t.reason !== undefined && t.reason !== '' ? t.reason : undefined;
  const facts: [string, string][] = [
    ['App', n.app],
    ['Tenant', `${t.name} (${t.id})`],
    ['Host', t.host || '(none)'],
    ['State', t.state],
    ...(t.instance === undefined ? [] : ([['Instance', t.instance + (t.address === undefined ? '' : ` (${t.address})`)]] as [string, string][])),
    ['When', new Date(n.at).toISOString()],
    ['Notification', n.id],
  ];
  const text =
    `${headline}\n` +
    (reason === undefined ? '' : `\nReason:\n${reason}\n`) +
    `\n${facts.map(([k, v]) => `${k}: ${v}`).join('\n')}\n\n-- \nSent by Drover. Event ${n.kind}.\n`;
  const html =
    `<!doctype html><html><body>\n<p>${escapeHtml(headline)}</p>\n` +
    (reason === undefined ? '' : `<p>Reason:</p>\n<pre>${escapeHtml(reason)}</pre>\n`) +
    `<table>\n${facts.map(([k, v]) => `<tr><th align="left">${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`).join('\n')}\n</table>\n` +
    `<p><small>Sent by Drover. Event ${escapeHtml(n.kind)}.</small></p>\n</body></html>\n`;
  return { subject: oneLine(`[${n.app}] ${subject}`, 200), text, html };
}

/** One SMTP transport per notifier. */
export interface Mailer {
  send(n: Notification, to: string, ctx: AttemptContext): Promise<AttemptOutcome>;
  close(): void;
}

/**
 * A pooled transport: a burst (a thousand tenants ready at once) reuses up to `connections`
 * connections instead of opening one per message; an idle connection closes after `timeoutMs`.
 */
export function createMailer(settings: SmtpSettings, timeoutMs: number, connections: number, onError: (e: unknown) => void): Mailer {
  const s = compileSmtpSettings(settings);
  const options: SMTPPoolOptions = {
    pool: true,
    maxConnections: connections,
    idleTimeout: timeoutMs,
    host: s.host,
    port: s.port,
    secure: s.secure,
    requireTLS: s.requireTLS,
    ...(s.auth !== undefined && { auth: { user: s.auth.user, pass: s.auth.pass } }),
    connectionTimeout: timeoutMs,
    greetingTimeout: timeoutMs,
    socketTimeout: timeoutMs,
    // The message is built here from the notification alone: never read a file or fetch a URL.
    disableFileAccess: true,
    disableUrlAccess: true,
    logger: false,
  };
  // nodemailer loads with the first mailer: a controller that sends no e-mail never loads it.
  const transport = import('nodemailer').then(({ default: nodemailer }) => {
    const t = nodemailer.createTransport(options);
    // A pooled connection that fails with no message in flight is reported here, not to a send:
    // without a listener it would be an uncaught 'error' event.
    t.on('error', onError);
    return t;
  });
  transport.catch(onError);
  const domain = s.from.address.slice(s.from.address.indexOf('@') + 1);
  return {
    send(n, to, ctx) {
      const address = checkEmailAddress(to);
      const m = emailMessage(n);
      return new Promise<AttemptOutcome>((resolve) => {
        let settled = false;
        const finish = (o: AttemptOutcome) => {
          if (settled) return;
          settled = true;
          ctx.timers.clearTimeout(timer);
          ctx.signal.removeEventListener('abort', onAbort);
          resolve(o);
        };
        const onAbort = () => finish({ ok: false, error: 'aborted: the notifier is closing' });
        const timer = ctx.timers.setTimeout(() => finish({ ok: false, error: `no answer within ${ctx.timeoutMs} ms` }), ctx.timeoutMs);
        ctx.signal.addEventListener('abort', onAbort);
        transport
          .then((t) =>
            t.sendMail({
              from: s.from.name === '' ? s.from.address : { name: s.from.name, address: s.from.address },
              to: address,
              subject: m.subject,
              text: m.text,
              html: m.html,
              // The same notification gives the same Message-ID on every attempt: mail clients de-duplicate on it.
              messageId: `<${n.id.replace(/[^A-Za-z0-9_.-]/g, '-')}.drover@${domain}>`,
              headers: { 'Auto-Submitted': 'auto-generated', 'X-Drover-Event': n.kind },
            }),
          )
          .then(
            (info) => finish({ ok: true, status: Number(/^\d{3}/.exec(info.response)?.[0] ?? 250) }),
            (e: unknown) => {
              const code = (e as { responseCode?: unknown }).responseCode;
              const status = typeof code === 'number' ? code : undefined;
              // A 5xx reply is permanent (RFC 5321 §4.2.1): the same message would be refused again.
              const giveUp = status !== undefined && status >= 500 && status < 600;
              finish({ ok: false, ...(status !== undefined && { status }), giveUp, error: oneLine(errorText(e)) });
            },
          );
        if (ctx.signal.aborted) onAbort();
      });
    },
    close() {
      transport.then((t) => t.close()).catch(() => undefined);
    },
  };
}
