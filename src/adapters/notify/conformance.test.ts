/**
 * One conformance suite for the notifier, run once per channel against a real receiver on a
 * free 127.0.0.1 port: an HTTP server that verifies Standard Webhooks signatures, and an SMTP
 * server (the smtp-server package). What a controller relies on: delivered once, retried on
 * failure, given up after the schedule with a final failed attempt, never blocked, never thrown
 * at, and nothing left running after close().
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { SMTPServer } from 'smtp-server';
import {
  createNotifier,
  generateWebhookSecret,
  verifyWebhook,
  type DeliveryAttempt,
  type Notification,
  type NotifierOptions,
  type NotifyChannel,
  type NotifyTarget,
  type NotifyTimers,
} from './index.js';

const HOST = '127.0.0.1';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, ok: () => boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** The global timers, counting those armed and not yet fired or cleared. */
function countingTimers(): { timers: NotifyTimers; live: Set<unknown> } {
  const live = new Set<unknown>();
  const timers: NotifyTimers = {
    now: () => Date.now(),
    setTimeout(fn, ms) {
      const h = setTimeout(() => {
        live.delete(h);
        fn();
      }, ms);
      live.add(h);
      return h;
    },
    clearTimeout(h) {
      live.delete(h);
      clearTimeout(h as ReturnType<typeof setTimeout>);
    },
  };
  return { timers, live };
}

/** A receiver of one channel: where to send, what arrived, how to make it fail. */
interface Rig {
  readonly channel: NotifyChannel;
  target(): NotifyTarget;
  /** A target the channel refuses before sending anything. */
  badTarget(): NotifyTarget;
  options(): Partial<NotifierOptions>;
  /** Notification ids received and accepted, in order (each delivery once). */
  readonly received: string[];
  /** Deliveries refused so far (transient failures). */
  refused: number;
  /** The next `n` deliveries fail transiently (HTTP 500, SMTP 451). */
  failNext(n: number): void;
  reset(): void;
  close(): Promise<void>;
}

async function webhookRig(): Promise<Rig> {
  const secret = generateWebhookSecret();
  let failures = 0;
  const rig = {
    channel: 'webhook' as const,
    received: [] as string[],
    refused: 0,
    url: '',
    target: () => ({ webhook: rig.url }),
    badTarget: () => ({ webhook: 'file:///etc/passwd' }),
    options: () => ({ secretsFor: () => [secret] }),
    failNext: (n: number) => {
      failures = n;
    },
    reset: () => {
      failures = 0;
      rig.received.length = 0;
      rig.refused = 0;
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const v = verifyWebhook(secret, req.headers, Buffer.concat(chunks));
      if (!v.ok) {
        res.writeHead(401).end(v.reason);
        return;
      }
      if (failures > 0) {
        failures--;
        rig.refused++;
        res.writeHead(500).end('busy');
        return;
      }
      rig.received.push(v.id);
      res.writeHead(204).end();
    });
  });
  server.keepAliveTimeout = 100;
  await new Promise<void>((r) => server.listen(0, HOST, r));
  rig.url = `http://${HOST}:${(server.address() as AddressInfo).port}/hooks`;
  return rig;
}

async function smtpRig(): Promise<Rig> {
  let failures = 0;
  let port = 0;
  const rig: Rig = {
    channel: 'email',
    received: [],
    refused: 0,
    target: () => ({ email: 'ops@example.test' }),
    badTarget: () => ({ email: 'ops@example.test\r\nBcc: all@example.test' }),
    options: () => ({ secretsFor: () => [], smtp: { url: `smtp://${HOST}:${port}`, from: 'Drover <drover@example.test>' } }),
    failNext: (n) => {
      failures = n;
    },
    reset: () => {
      failures = 0;
      rig.received.length = 0;
      rig.refused = 0;
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    disableReverseLookup: true,
    onData(stream, _session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        if (failures > 0) {
          failures--;
          rig.refused++;
          callback(Object.assign(new Error('try again later'), { responseCode: 451 }));
          return;
        }
        const raw = Buffer.concat(chunks).toString('utf8');
        const id = /^Message-ID: <(.+)\.drover@example\.test>/im.exec(raw)?.[1];
        rig.received.push(id ?? '?');
        callback();
      });
    },
  });
  await new Promise<void>((r) => server.listen(0, HOST, r));
  port = (server.server.address() as AddressInfo).port;
  return rig;
}

let seq = 0;
function notification(target: NotifyTarget, over: Partial<Notification> = {}): Notification {
  seq++;
  return {
    id: `ntf_${seq}`,
    kind: 'tenant.ready',
    at: Date.now(),
    app: 'labs',
    tenant: { id: `t-${seq}`, name: `lab-${seq}`, host: `lab-${seq}.labs.example.test`, state: 'ready', instance: 'i-1', address: '10.0.0.7:8080' },
    target,
    ...over,
  };
}

for (const makeRig of [webhookRig, smtpRig]) {
  describe(`notifier conformance: ${makeRig === webhookRig ? 'webhook' : 'email'}`, () => {
    let rig: Rig;
    before(async () => {
      rig = await makeRig();
    });
    after(() => rig.close());

    function notifier(over: Partial<NotifierOptions> = {}) {
      const attempts: DeliveryAttempt[] = [];
      const { timers, live } = countingTimers();
      const options: NotifierOptions = {
        secretsFor: () => [],
        ...rig.options(),
        onAttempt: (a) => {
          attempts.push(a);
        },
        scheduleMs: [0, 30, 30],
        timers,
        ...over,
      };
      return { n: createNotifier(options), attempts, live };
    }

    test('delivers once and reports one ok, final attempt', async () => {
      rig.reset();
      const { n, attempts, live } = notifier();
      const note = notification(rig.target());
      assert.deepEqual(n.enqueue(note), { queued: [rig.channel], problems: [] });
      await until('the delivery', () => attempts.length === 1);
      await sleep(100);
      assert.deepEqual(rig.received, [note.id]);
      assert.equal(attempts.length, 1);
      const [a] = attempts;
      assert.equal(a?.notificationId, note.id);
      assert.equal(a?.channel, rig.channel);
      assert.equal(a?.attempt, 1);
      assert.equal(a?.ok, true);
      assert.equal(a?.final, true);
      assert.equal(a?.nextAttemptAt, undefined);
      // HTTP 2xx, or the SMTP server's 250 OK.
      assert.ok(a?.status !== undefined && a.status >= 200 && a.status < 300, `status ${String(a?.status)}`);
      assert.deepEqual(n.stats(), { waiting: 0, running: 0 });
      assert.equal(live.size, 0, 'no timer is left once everything is delivered');
      await n.close();
    });

    test('a transient failure is retried on the schedule, then delivered', async () => {
      rig.reset();
      rig.failNext(1);
      const { n, attempts } = notifier();
      const note = notification(rig.target());
      n.enqueue(note);
      await until('the second attempt', () => attempts.length === 2);
      const [first, second] = attempts;
      assert.equal(first?.ok, false);
      assert.equal(first?.final, false);
      assert.ok(first?.error !== undefined && first.error.length > 0);
      assert.ok(first?.nextAttemptAt !== undefined && first.nextAttemptAt >= first.at + 30 - 1);
      assert.equal(second?.ok, true);
      assert.equal(second?.attempt, 2);
      assert.ok(second !== undefined && first !== undefined && second.at >= (first.nextAttemptAt ?? 0) - 5);
      assert.equal(rig.refused, 1);
      assert.deepEqual(rig.received, [note.id]);
      await n.close();
    });

    test('gives up after the schedule with a final failed attempt, never throwing', async () => {
      rig.reset();
      rig.failNext(100);
      const { n, attempts } = notifier({ scheduleMs: [0, 10, 10] });
      n.enqueue(notification(rig.target()));
      await until('three attempts', () => attempts.length === 3);
      await sleep(100);
      assert.equal(attempts.length, 3, 'no fourth attempt');
      assert.deepEqual(attempts.map((a) => [a.attempt, a.ok, a.final]), [[1, false, false], [2, false, false], [3, false, true]]);
      assert.match(attempts[2]?.error ?? '', /gave up after 3 attempts/);
      assert.equal(attempts[2]?.nextAttemptAt, undefined);
      assert.equal(rig.refused, 3);
      assert.deepEqual(n.stats(), { waiting: 0, running: 0 });
      await n.close();
    });

    test('enqueue never blocks: 1,000 notifications queue in a few ms, then all arrive once', async () => {
      rig.reset();
      const { n, attempts } = notifier({ maxConcurrent: 16 });
      const notes = Array.from({ length: 1000 }, () => notification(rig.target()));
      const t0 = performance.now();
      for (const note of notes) n.enqueue(note);
      const ms = performance.now() - t0;
      assert.ok(ms < 100, `1,000 enqueues took ${ms.toFixed(1)} ms`);
      assert.equal(attempts.length, 0, 'nothing is attempted inside enqueue');
      assert.equal(n.stats().waiting, 1000);
      await until('1,000 deliveries', () => attempts.length === 1000, 60_000);
      assert.ok(attempts.every((a) => a.ok && a.final));
      assert.deepEqual([...rig.received].sort(), notes.map((x) => x.id).sort());
      await n.close();
    });

    test('the same notification queued twice is delivered once', async () => {
      rig.reset();
      const { n, attempts } = notifier();
      const note = notification(rig.target());
      n.enqueue(note);
      const again = n.enqueue(note);
      assert.deepEqual(again.queued, []);
      assert.match(again.problems.join(), /already queued/);
      await until('the delivery', () => attempts.length === 1);
      await sleep(100);
      assert.deepEqual(rig.received, [note.id]);
      await n.close();
    });

    test('a bad target is refused before anything is sent, reported as a final failed attempt', async () => {
      rig.reset();
      const { n, attempts } = notifier();
      const note = notification(rig.badTarget());
      const r = n.enqueue(note);
      assert.deepEqual(r.queued, []);
      assert.equal(r.problems.length, 1);
      await until('the report', () => attempts.length === 1);
      assert.equal(attempts[0]?.ok, false);
      assert.equal(attempts[0]?.final, true);
      assert.match(attempts[0]?.error ?? '', /^not sent: target\./);
      await sleep(50);
      assert.deepEqual(rig.received, []);
      await n.close();
    });

    test('a sink that throws or rejects stops nothing', async () => {
      rig.reset();
      let calls = 0;
      const { n } = notifier({
        onAttempt: (a) => {
          calls++;
          if (a.notificationId.endsWith('0')) throw new Error('store down');
          return Promise.reject(new Error('store down'));
        },
      });
      const notes = Array.from({ length: 10 }, () => notification(rig.target()));
      for (const note of notes) n.enqueue(note);
      await until('10 attempts', () => calls === 10);
      assert.equal(rig.received.length, 10);
      await n.close();
    });

    test('close() stops: no timer left, waiting deliveries dropped, later enqueues refused', async () => {
      rig.reset();
      rig.failNext(100);
      const { n, attempts, live } = notifier({ scheduleMs: [0, 60_000, 60_000], maxConcurrent: 2 });
      for (let i = 0; i < 20; i++) n.enqueue(notification(rig.target()));
      await until('some attempts', () => attempts.length >= 2);
      assert.ok(live.size >= 1, 'a retry is scheduled');
      await n.close();
      assert.equal(live.size, 0, 'close() leaves no timer');
      assert.deepEqual(n.stats(), { waiting: 0, running: 0 });
      const before = attempts.length;
      assert.deepEqual(n.enqueue(notification(rig.target())).queued, []);
      await sleep(100);
      assert.equal(attempts.length, before, 'nothing is attempted or reported after close()');
      await n.close();
    });
  });
}
