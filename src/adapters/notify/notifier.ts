/**
 * The delivery loop: one queue of deliveries (a notification on one channel), ordered by when
 * each is due, run at most `maxConcurrent` at a time, each attempt reported, each failure
 * rescheduled after the schedule's next delay until the schedule is spent. One timer at most is
 * armed (for the earliest due delivery), plus one per running attempt (its timeout).
 */
import { pino, type Logger } from 'pino';
import { errorText, type AttemptContext, type AttemptOutcome } from './channel.js';
import { createMailer, type Mailer } from './email.js';
import { checkEmailAddress, checkNotification, checkWebhookUrl, compileNotifierOptions, oneLine } from './validate.js';
import { createWebhookAgents, postWebhook, webhookBody, webhookHeaders, type WebhookAgents } from './webhook.js';
import {
  NotifyError,
  type CompiledNotifierOptions,
  type DeliveryAttempt,
  type EnqueueOptions,
  type EnqueueResult,
  type Notification,
  type Notifier,
  type NotifierOptions,
  type NotifierStats,
  type NotifyChannel,
  type NotifyTimers,
} from './types.js';

const globalTimers: NotifyTimers = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

interface Delivery {
  readonly key: string;
  readonly n: Notification;
  readonly channel: NotifyChannel;
  /** Attempts made so far. */
  attempts: number;
  dueAt: number;
  /** Order of arrival, so that deliveries due at the same time run first come, first served. */
  seq: number;
}

/** A binary min-heap of deliveries by (dueAt, seq). */
class DueQueue {
  private readonly items: Delivery[] = [];
  get size(): number {
    return this.items.length;
  }
  peek(): Delivery | undefined {
    return this.items[0];
  }
  clear(): void {
    this.items.length = 0;
  }
  private less(a: Delivery, b: Delivery): boolean {
    return a.dueAt < b.dueAt || (a.dueAt === b.dueAt && a.seq < b.seq);
  }
  push(d: Delivery): void {
    const a = this.items;
    a.push(d);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(a[i]!, a[p]!)) break;
      [a[i], a[p]] = [a[p]!, a[i]!];
      i = p;
    }
  }
  pop(): Delivery | undefined {
    const a = this.items;
    const top = a[0];
    const last = a.pop();
    if (a.length > 0 && last !== undefined) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.less(a[l]!, a[m]!)) m = l;
        if (r < a.length && this.less(a[r]!, a[m]!)) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m]!, a[i]!];
        i = m;
      }
    }
    return top;
  }
}

export class DeliveryNotifier implements Notifier {
  private readonly opts: CompiledNotifierOptions;
  private readonly timers: NotifyTimers;
  private readonly log: Logger;
  private readonly queue = new DueQueue();
  /** `id channel` of every delivery waiting or running: the same notification is not queued twice. */
  private readonly keys = new Set<string>();
  private readonly running = new Map<Delivery, { abort: AbortController; done: Promise<void> }>();
  private readonly agents: WebhookAgents;
  private readonly mailer: Mailer | undefined;
  private wake: { handle: unknown; at: number } | undefined;
  private seq = 0;
  private closed = false;
  private closing: Promise<void> | undefined;

  constructor(private readonly options: NotifierOptions) {
    this.opts = compileNotifierOptions(options);
    this.timers = options.timers ?? globalTimers;
    this.log = options.logger ?? pino({ level: 'silent' });
    this.agents = createWebhookAgents(this.opts.maxConcurrent);
    const onSmtpError = (e: unknown) => this.log.warn({ err: e }, 'SMTP connection failed between messages');
    this.mailer = options.smtp === undefined ? undefined : createMailer(options.smtp, this.opts.attemptTimeoutMs, this.opts.maxConcurrent, onSmtpError);
  }

  enqueue(notification: Notification, options: EnqueueOptions = {}): EnqueueResult {
    const problems: string[] = [];
    const queued: NotifyChannel[] = [];
    if (this.closed) return { queued, problems: ['the notifier is closed'] };
    const now = this.timers.now();
    let n: Notification;
    try {
      n = checkNotification(notification);
    } catch (e) {
      // Reported on every channel the target names, so the store sees why nothing was sent.
      const why = `not sent: ${errorText(e)}`;
      const id = typeof notification?.id === 'string' ? notification.id.slice(0, 128) : '';
      for (const channel of this.channelsOf(notification)) this.reportLater({ notificationId: id, channel, attempt: 1, ok: false, error: oneLine(why), at: now, final: true });
      return { queued, problems: [why] };
    }
    for (const channel of this.channelsOf(n)) {
      const previous = Math.max(0, Math.floor(options.previousAttempts?.[channel] ?? 0));
      const fail = (why: string) => {
        problems.push(`${channel}: ${why}`);
        this.reportLater({ notificationId: n.id, channel, attempt: previous + 1, ok: false, error: oneLine(`not sent: ${why}`), at: now, final: true });
      };
      const key = `${n.id} ${channel}`;
      if (this.keys.has(key)) {
        problems.push(`${channel}: already queued`);
        continue;
      }
      if (previous >= this.opts.scheduleMs.length) {
        problems.push(`${channel}: ${previous} attempts already made, the schedule has ${this.opts.scheduleMs.length}`);
        continue;
      }
      try {
        if (channel === 'webhook') checkWebhookUrl(n.target.webhook);
        else {
          checkEmailAddress(n.target.email);
          if (this.mailer === undefined) throw new NotifyError('notify_bad_smtp_settings', 'e-mail is not configured (set DROVER_SMTP_URL and DROVER_SMTP_FROM)');
        }
      } catch (e) {
        fail(errorText(e));
        continue;
      }
      if (this.keys.size >= this.opts.maxQueued) {
        fail(`the notifier already holds ${this.opts.maxQueued} deliveries (maxQueued)`);
        continue;
      }
      this.keys.add(key);
      const dueAt = Math.max(now + (this.opts.scheduleMs[previous] ?? 0), options.notBefore ?? 0);
      this.queue.push({ key, n, channel, attempts: previous, dueAt, seq: this.seq++ });
      queued.push(channel);
    }
    if (queued.length > 0) this.arm();
    return { queued, problems };
  }

  stats(): NotifierStats {
    return { waiting: this.queue.size, running: this.running.size };
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    this.closed = true;
    if (this.wake !== undefined) this.timers.clearTimeout(this.wake.handle);
    this.wake = undefined;
    this.queue.clear();
    this.keys.clear();
    const runs = [...this.running.values()];
    for (const r of runs) r.abort.abort();
    await Promise.all(runs.map((r) => r.done));
    this.agents.http.destroy();
    this.agents.https.destroy();
    this.mailer?.close();
  }

  private channelsOf(n: Notification | undefined): NotifyChannel[] {
    const t: unknown = (n as { target?: unknown } | undefined)?.target;
    if (typeof t !== 'object' || t === null) return [];
    const out: NotifyChannel[] = [];
    if ((t as { webhook?: unknown }).webhook !== undefined) out.push('webhook');
    if ((t as { email?: unknown }).email !== undefined) out.push('email');
    return out;
  }

  /** Arms the one wake-up timer for the earliest due delivery, unless a slot is lacking or one is armed early enough. */
  private arm(): void {
    if (this.closed) return;
    const next = this.queue.peek();
    if (next === undefined || this.running.size >= this.opts.maxConcurrent) return;
    if (this.wake !== undefined) {
      if (this.wake.at <= next.dueAt) return;
      this.timers.clearTimeout(this.wake.handle);
    }
    const delay = Math.max(0, next.dueAt - this.timers.now());
    const wake = {
      at: next.dueAt,
      handle: this.timers.setTimeout(() => {
        if (this.wake === wake) this.wake = undefined;
        this.pump();
      }, delay),
    };
    this.wake = wake;
  }

  private pump(): void {
    if (this.closed) return;
    const now = this.timers.now();
    while (this.running.size < this.opts.maxConcurrent) {
      const next = this.queue.peek();
      if (next === undefined || next.dueAt > now) break;
      this.queue.pop();
      this.start(next);
    }
    this.arm();
  }

  private start(d: Delivery): void {
    const abort = new AbortController();
    const entry = { abort, done: Promise.resolve() };
    this.running.set(d, entry);
    entry.done = this.attempt(d, abort.signal).then(
      (outcome) => this.settle(d, outcome, abort.signal),
      (e: unknown) => this.settle(d, { ok: false, error: `internal error: ${errorText(e)}` }, abort.signal),
    );
  }

  private async attempt(d: Delivery, signal: AbortSignal): Promise<AttemptOutcome> {
    const ctx: AttemptContext = { signal, timeoutMs: this.opts.attemptTimeoutMs, timers: this.timers };
    if (d.channel === 'email') {
      if (this.mailer === undefined) return { ok: false, giveUp: true, error: 'e-mail is not configured' };
      return this.mailer.send(d.n, d.n.target.email ?? '', ctx);
    }
    let headers: Record<string, string>;
    const body = webhookBody(d.n);
    try {
      headers = webhookHeaders(d.n.id, body, this.options.secretsFor(d.n.app), this.timers.now());
    } catch (e) {
      return { ok: false, error: `not signed: secrets of app ${d.n.app}: ${errorText(e)}` };
    }
    return postWebhook(checkWebhookUrl(d.n.target.webhook), headers, body, this.agents, ctx);
  }

  private settle(d: Delivery, outcome: AttemptOutcome, signal: AbortSignal): void {
    this.running.delete(d);
    if (this.closed || signal.aborted) return;
    d.attempts += 1;
    const at = this.timers.now();
    const spent = d.attempts >= this.opts.scheduleMs.length;
    const final = outcome.ok || outcome.giveUp === true || spent;
    let error = outcome.error;
    if (!outcome.ok && spent && outcome.giveUp !== true) error = `${error ?? 'failed'} (gave up after ${d.attempts} attempts)`;
    const report: DeliveryAttempt = {
      notificationId: d.n.id,
      channel: d.channel,
      attempt: d.attempts,
      ok: outcome.ok,
      ...(outcome.status !== undefined && { status: outcome.status }),
      ...(error !== undefined && !outcome.ok && { error: oneLine(error) }),
      at,
      final,
    };
    if (final) {
      this.keys.delete(d.key);
      this.report(report);
    } else {
      d.dueAt = at + (this.opts.scheduleMs[d.attempts] ?? 0);
      d.seq = this.seq++;
      this.report({ ...report, nextAttemptAt: d.dueAt });
      this.queue.push(d);
    }
    this.log.debug({ attempt: report }, 'notification attempt');
    this.pump();
  }

  private report(a: DeliveryAttempt): void {
    const sink = this.options.onAttempt;
    if (sink === undefined) return;
    try {
      const r = sink(a);
      if (r instanceof Promise) r.catch((e: unknown) => this.log.warn({ err: e }, 'onAttempt failed'));
    } catch (e) {
      this.log.warn({ err: e }, 'onAttempt failed');
    }
  }

  /** Reports from `enqueue` go out after it returns: the caller's sink never runs inside its own call. */
  private reportLater(a: DeliveryAttempt): void {
    queueMicrotask(() => this.report(a));
  }
}
