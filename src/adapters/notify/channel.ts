/** What one delivery attempt on one channel came to; the notifier turns it into a {@link DeliveryAttempt}. */
import type { NotifyTimers } from './types.js';

export interface AttemptOutcome {
  readonly ok: boolean;
  /** HTTP status or SMTP reply code, when there was an answer. */
  readonly status?: number;
  readonly error?: string;
  /** The receiver said not to try again (HTTP 410, a permanent SMTP 5xx reply). */
  readonly giveUp?: boolean;
}

/** What an attempt gets besides the notification: when to stop, and the timers to stop with. */
export interface AttemptContext {
  readonly signal: AbortSignal;
  readonly timeoutMs: number;
  readonly timers: NotifyTimers;
}

export function errorText(e: unknown): string {
  if (e instanceof Error) {
    // A system error's code (ECONNREFUSED) says more than some of their messages; drover's own errors name their field already.
    const code = (e as NodeJS.ErrnoException).code;
    return typeof code === 'string' && /^E[A-Z]+$/.test(code) && !e.message.includes(code) ? `${code}: ${e.message}` : e.message;
  }
  return String(e);
}
