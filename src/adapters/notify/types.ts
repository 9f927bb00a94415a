/**
 * The notifier interface, in drover's words: the controller hands over a notification about a
 * tenant ("lab-7 is ready at lab-7.labs.example.test") and goes on with its work; the notifier
 * delivers it by webhook and/or e-mail in the background, with retries on a schedule, and
 * reports every attempt so the controller can record it and show it in `drover tenants show`.
 */
import type { Logger } from 'pino';

/** What happened to a tenant. Becomes the webhook's `type` and the e-mail's subject. */
export const NOTIFICATION_KINDS = ['tenant.ready', 'tenant.failed', 'tenant.moved', 'tenant.removed'] as const;
/**
 * - `tenant.ready`: placed, `add` succeeded and its host is routed.
 * - `tenant.failed`: could not be placed or `add` failed after every attempt; `tenant.reason` says why.
 * - `tenant.moved`: now served by another instance (its instance was lost, or a rebalance moved it).
 * - `tenant.removed`: `remove` ran, the seat is free and the host unrouted.
 */
export type NotificationKind = (typeof NOTIFICATION_KINDS)[number];

export const NOTIFY_CHANNELS = ['webhook', 'email'] as const;
export type NotifyChannel = (typeof NOTIFY_CHANNELS)[number];

/** The tenant as the notification shows it (a snapshot taken when the event happened). */
export interface NotifiedTenant {
  readonly id: string;
  readonly name: string;
  readonly host: string;
  /** The tenant's state (`ready`, `failed`, …). */
  readonly state: string;
  /** The instance that serves the tenant. */
  readonly instance?: string;
  /** The instance's address (`10.0.0.7:8080`). */
  readonly address?: string;
  /** Why the tenant failed (or moved). */
  readonly reason?: string;
}

/** Where to tell. Neither: nothing is sent. Both: each channel is delivered and retried on its own. */
export interface NotifyTarget {
  /** An `http:` or `https:` URL without credentials; receives a signed POST (Standard Webhooks). */
  readonly webhook?: string;
  /** One e-mail address (`ops@example.com`), no display name, no list. */
  readonly email?: string;
}

export interface Notification {
  /**
   * Stable for one event, whatever the number of attempts or controller restarts: the webhook's
   * `webhook-id` (receivers de-duplicate on it) and the e-mail's Message-ID. Letters, digits and
   * `_ . : -`, at most 128 characters.
   */
  readonly id: string;
  readonly kind: NotificationKind;
  /** When the event happened, in ms since the epoch. */
  readonly at: number;
  readonly app: string;
  readonly tenant: NotifiedTenant;
  readonly target: NotifyTarget;
}

/** One delivery attempt on one channel, reported through {@link NotifierOptions.onAttempt}. */
export interface DeliveryAttempt {
  readonly notificationId: string;
  readonly channel: NotifyChannel;
  /** 1 for the first attempt. */
  readonly attempt: number;
  /** Delivered: the receiver answered 2xx, or the SMTP server accepted the message. */
  readonly ok: boolean;
  /** The HTTP status or SMTP reply code, when the receiver answered. */
  readonly status?: number;
  /** Why the attempt failed, in a sentence (at most 300 characters, no control characters). */
  readonly error?: string;
  /** When the attempt ended, ms since the epoch. */
  readonly at: number;
  /** When the next attempt is due; absent when this attempt was the last (delivered, or given up). */
  readonly nextAttemptAt?: number;
  /** No further attempt will be made on this channel: delivered, or given up. */
  readonly final: boolean;
}

/** Timers, injected so tests can drive time; the default is the global `setTimeout`. */
export interface NotifyTimers {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** SMTP settings, usually from the controller's environment ({@link smtpSettingsFromEnv}). */
export interface SmtpSettings {
  /** `smtp://[user:pass@]host[:port]` (STARTTLS) or `smtps://…` (TLS from the start, port 465). */
  readonly url: string;
  /** The sender, `drover@example.com` or `Drover <drover@example.com>`. */
  readonly from: string;
}

export interface NotifierOptions {
  /**
   * Signing secrets of an app's webhooks, `whsec_<base64 key>`, asked at every attempt (so a
   * rotation takes effect on the next one). Several: one signature each, for rotation. None:
   * the webhook is not sent unsigned; the attempt fails and is retried.
   */
  readonly secretsFor: (app: string) => readonly string[];
  /**
   * Told of every attempt, ok or not. Its errors (thrown or rejected) are logged and ignored:
   * they never stop deliveries.
   */
  readonly onAttempt?: (attempt: DeliveryAttempt) => void | Promise<void>;
  /** Without it, e-mail targets are refused (a final failed attempt says so). */
  readonly smtp?: SmtpSettings;
  /**
   * Delays before each attempt, from the previous attempt's end (the first from `enqueue`).
   * Its length is the number of attempts. @default {@link DEFAULT_RETRY_SCHEDULE_MS}
   */
  readonly scheduleMs?: readonly number[];
  /** Multiplies every delay of the schedule; tests use e.g. 0.0001. @default 1 */
  readonly scheduleScale?: number;
  /** One attempt, connection to the last byte read. @default 10000 */
  readonly attemptTimeoutMs?: number;
  /** Attempts running at once, all channels together. @default 8 */
  readonly maxConcurrent?: number;
  /** Deliveries (one per notification and channel) waiting or running; beyond, refused with a final failed attempt. @default 100000 */
  readonly maxQueued?: number;
  /** @default the global timers */
  readonly timers?: NotifyTimers;
  /** @default silent */
  readonly logger?: Logger;
}

/** {@link NotifierOptions} checked, with every default filled in. */
export interface CompiledNotifierOptions {
  readonly scheduleMs: readonly number[];
  readonly attemptTimeoutMs: number;
  readonly maxConcurrent: number;
  readonly maxQueued: number;
}

export interface EnqueueOptions {
  /**
   * Attempts already made per channel (for a controller that re-enqueues, after a restart, what
   * its store holds as undelivered): the schedule resumes after them. A channel whose count has
   * reached the schedule's length is not tried again.
   */
  readonly previousAttempts?: Partial<Record<NotifyChannel, number>>;
  /** No attempt before this time (ms since the epoch), e.g. a recorded `nextAttemptAt`. */
  readonly notBefore?: number;
}

export interface EnqueueResult {
  /** The channels queued for delivery. */
  readonly queued: readonly NotifyChannel[];
  /** Why a channel (or the whole notification) was not queued: invalid, a duplicate, closed. */
  readonly problems: readonly string[];
}

export interface NotifierStats {
  /** Deliveries waiting for a free slot or for their next attempt. */
  readonly waiting: number;
  /** Attempts running now. */
  readonly running: number;
}

export interface Notifier {
  /**
   * Queues the notification's deliveries and returns at once; it never waits on the network and
   * never throws. An invalid notification or target is reported through `onAttempt` as a final
   * failed attempt (and in the result). The same `id` already queued on a channel is not queued
   * twice.
   */
  enqueue(notification: Notification, options?: EnqueueOptions): EnqueueResult;
  stats(): NotifierStats;
  /**
   * Stops: no new attempt starts, every timer is cleared, running attempts are aborted (and not
   * reported); resolves once they have ended and connections are closed. Undelivered
   * notifications are dropped: the controller's store knows them and re-enqueues them on start.
   * Idempotent.
   */
  close(): Promise<void>;
}

/** The result of {@link verifyWebhook}. */
export type WebhookVerification =
  | { readonly ok: true; readonly id: string; readonly timestamp: number }
  | { readonly ok: false; readonly reason: string };

/** Request headers as Node's `IncomingHttpHeaders` or a fetch `Headers` give them. */
export type WebhookHeaders = Headers | Readonly<Record<string, string | readonly string[] | undefined>>;

export const NOTIFY_ERROR_CODES = {
  notify_bad_input: 'A notification, a target or the notifier options are invalid.',
  notify_bad_smtp_settings: 'DROVER_SMTP_URL or DROVER_SMTP_FROM is invalid.',
  notify_bad_secret: 'A webhook secret is not in the whsec_<base64> form.',
} as const;
export type NotifyErrorCode = keyof typeof NOTIFY_ERROR_CODES;

export class NotifyError extends Error {
  constructor(
    readonly code: NotifyErrorCode,
    message: string,
    readonly context: Readonly<Record<string, unknown>> = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'NotifyError';
  }
}

/** Bad input, refused whole. `field` names it: `target.webhook`, `DROVER_SMTP_URL`, `scheduleMs[2]`. */
export class NotifyInputError extends NotifyError {
  constructor(
    readonly field: string,
    readonly reason: string,
    code: NotifyErrorCode = 'notify_bad_input',
  ) {
    super(code, `${field}: ${reason}`, { field, reason });
    this.name = 'NotifyInputError';
  }
}
