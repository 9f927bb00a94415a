/**
 * Notifiers: tell a SaaS operator's systems and people what happened to a tenant, by webhook
 * (Standard Webhooks: signed JSON POST) and/or e-mail (SMTP), without ever holding up the caller.
 *
 * ```ts
 * const notifier = createNotifier({
 *   secretsFor: (app) => store.webhookSecrets(app),     // ['whsec_…'], two during a rotation
 *   smtp: smtpSettingsFromEnv(process.env),             // DROVER_SMTP_URL, DROVER_SMTP_FROM; undefined: no e-mail
 *   onAttempt: (a) => store.recordAttempt(a),           // every attempt, shown by `drover tenants show`
 * });
 * notifier.enqueue({
 *   id: 'ntf_t-42_ready', kind: 'tenant.ready', at: clock.now(), app: 'labs',
 *   tenant: { id: 't-42', name: 'lab-7', host: 'lab-7.labs.example.test', state: 'ready', instance: 'i-1', address: '10.0.0.7:8080' },
 *   target: { webhook: 'https://hooks.example.com/drover', email: 'ops@example.com' },
 * });                                                   // returns at once; never throws
 * await notifier.close();                               // on shutdown: no timer left
 *
 * // In a receiver (any HTTP framework; the raw body, before JSON parsing):
 * const v = verifyWebhook(secret, req.headers, rawBody); // { ok: true, id, timestamp } | { ok: false, reason }
 * ```
 *
 * The retry schedule, the headers and the SMTP settings are described in docs/notifications.md.
 */
import { DeliveryNotifier } from './notifier.js';
import type { Notifier, NotifierOptions } from './types.js';

export type * from './types.js';
export { NOTIFICATION_KINDS, NOTIFY_CHANNELS, NOTIFY_ERROR_CODES, NotifyError, NotifyInputError } from './types.js';
export {
  checkEmailAddress,
  checkNotification,
  checkNotifyTarget,
  checkWebhookUrl,
  compileNotifierOptions,
  DEFAULT_RETRY_SCHEDULE_MS,
  NOTIFY_DEFAULTS,
  NOTIFY_LIMITS,
} from './validate.js';
export {
  DEFAULT_WEBHOOK_TOLERANCE_S,
  generateWebhookSecret,
  MAX_RESPONSE_BYTES,
  signWebhook,
  verifyWebhook,
  WEBHOOK_SECRET_PREFIX,
  webhookBody,
  webhookSecretKey,
} from './webhook.js';
export { compileSmtpSettings, emailMessage, SMTP_ENV, smtpSettingsFromEnv, type CompiledSmtpSettings, type EmailMessage } from './email.js';

/**
 * A notifier that delivers by webhook and, with `smtp`, by e-mail. Throws a
 * {@link NotifyInputError} naming the option when the options are invalid (SMTP settings too).
 */
export function createNotifier(options: NotifierOptions): Notifier {
  return new DeliveryNotifier(options);
}
