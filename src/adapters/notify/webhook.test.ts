/**
 * Webhooks: the Standard Webhooks signature (and its verification, fuzzed), and deliveries to a
 * real receiver on 127.0.0.1: secret rotation, retry after a 500, none after a 2xx, 410 stops,
 * a hanging receiver times out and is retried, redirects are not followed, answers are bounded.
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import {
  checkWebhookUrl,
  createNotifier,
  DEFAULT_RETRY_SCHEDULE_MS,
  generateWebhookSecret,
  NotifyInputError,
  signWebhook,
  verifyWebhook,
  webhookBody,
  webhookSecretKey,
  type DeliveryAttempt,
  type Notification,
  type NotifierOptions,
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

const note = (webhook: string, id = `ntf_${Math.random().toString(36).slice(2)}`): Notification => ({
  id,
  kind: 'tenant.failed',
  at: Date.UTC(2026, 10, 21, 9, 53, 44, 839),
  app: 'labs',
  tenant: { id: 't-7', name: 'lab-7', host: 'lab-7.labs.example.test', state: 'failed', reason: 'add exited 3:\nno space left' },
  target: { webhook },
});

describe('signature', () => {
  const secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';

  test('v1,<base64 HMAC-SHA256 of id.timestamp.body> with the base64-decoded key', () => {
    const body = '{"type":"tenant.ready"}';
    const expected = createHmac('sha256', Buffer.from('MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'base64'))
      .update(`msg_1.1674087231.${body}`)
      .digest('base64');
    assert.equal(signWebhook([secret], 'msg_1', 1674087231, body), `v1,${expected}`);
  });

  test('one signature per secret, space-separated; each verifies alone', () => {
    const other = generateWebhookSecret();
    const body = '{}';
    const now = 1_700_000_000_000;
    const sig = signWebhook([secret, other], 'msg_2', now / 1000, body);
    assert.equal(sig.split(' ').length, 2);
    assert.ok(sig.split(' ').every((s) => /^v1,[A-Za-z0-9+/]{43}=$/.test(s)));
    const headers = { 'webhook-id': 'msg_2', 'webhook-timestamp': String(now / 1000), 'webhook-signature': sig };
    assert.deepEqual(verifyWebhook(secret, headers, body, 300, now), { ok: true, id: 'msg_2', timestamp: now / 1000 });
    assert.equal(verifyWebhook(other, headers, body, 300, now).ok, true);
    assert.equal(verifyWebhook([generateWebhookSecret(), other], headers, body, 300, now).ok, true);
    assert.equal(verifyWebhook(generateWebhookSecret(), headers, body, 300, now).ok, false);
  });

  test('verification: fetch Headers, any header case, timestamp tolerance, missing or malformed headers', () => {
    const now = 1_700_000_000_000;
    const ts = String(now / 1000);
    const sig = signWebhook([secret], 'msg_3', now / 1000, 'x');
    const ok = { 'webhook-id': 'msg_3', 'webhook-timestamp': ts, 'webhook-signature': sig };
    assert.equal(verifyWebhook(secret, new Headers(ok), 'x', 300, now).ok, true);
    assert.equal(verifyWebhook(secret, { 'Webhook-Id': 'msg_3', 'WEBHOOK-TIMESTAMP': ts, 'Webhook-Signature': sig }, 'x', 300, now).ok, true);
    assert.equal(verifyWebhook(secret, ok, Buffer.from('x'), 300, now).ok, true);
    assert.equal(verifyWebhook(secret, ok, 'x', 300, now + 301_000).ok, false);
    assert.equal(verifyWebhook(secret, ok, 'x', 300, now - 301_000).ok, false);
    assert.equal(verifyWebhook(secret, ok, 'x', 600, now + 301_000).ok, true);
    assert.match(JSON.stringify(verifyWebhook(secret, { ...ok, 'webhook-id': undefined }, 'x', 300, now)), /missing/);
    assert.equal(verifyWebhook(secret, { ...ok, 'webhook-timestamp': `${ts}.5` }, 'x', 300, now).ok, false);
    assert.equal(verifyWebhook(secret, { ...ok, 'webhook-signature': sig.replace('v1,', 'v2,') }, 'x', 300, now).ok, false);
    assert.equal(verifyWebhook(secret, { ...ok, 'webhook-signature': `v1,${'A'.repeat(10_000)}` }, 'x', 300, now).ok, false);
    assert.equal(verifyWebhook('not-a-secret', ok, 'x', 300, now).ok, false, 'a malformed secret never verifies, never throws');
  });

  test('secrets: whsec_<base64> with a key of at least 16 bytes, errors naming the field', () => {
    assert.equal(webhookSecretKey(secret).length, 24);
    assert.match(generateWebhookSecret(), /^whsec_[A-Za-z0-9+/]{43}=$/);
    for (const bad of ['MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'whsec_', 'whsec_!!!!', 'whsec_c2hvcnQ=']) {
      assert.throws(() => webhookSecretKey(bad, 'secrets[0]'), (e: unknown) => e instanceof NotifyInputError && e.field === 'secrets[0]' && e.code === 'notify_bad_secret');
    }
    assert.throws(() => signWebhook([], 'msg', 1, 'x'), /never sent unsigned/);
  });

  test('the signed request in docs/notifications.md verifies with both of its secrets', () => {
    const doc = readFileSync(new URL('../../../docs/notifications.md', import.meta.url), 'utf8');
    const request = /```http\n([\s\S]*?)\n```/.exec(doc)?.[1] ?? '';
    const [head = '', body = ''] = request.split('\n\n');
    const headers = Object.fromEntries(head.split('\n').slice(1).map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
    const secrets = [...doc.matchAll(/`(whsec_[A-Za-z0-9+/=]+)`/g)].map((m) => m[1] ?? '');
    assert.equal(secrets.length, 2);
    const at = Number(headers['webhook-timestamp']) * 1000;
    for (const secret of secrets) assert.equal(verifyWebhook(secret, headers, body, 300, at).ok, true);
    assert.equal(body, webhookBody({ ...note(''), id: 'ntf_t-42_ready', kind: 'tenant.ready', at: Date.UTC(2026, 10, 21, 9, 53, 44, 839), tenant: { id: 't-42', name: 'lab-7', host: 'lab-7.labs.example.test', state: 'ready', instance: 'i-1df4eb95', address: '10.0.0.7:8080' } }));
  });

  test('fuzz: a tampered body, id or timestamp never verifies', () => {
    const now = 1_700_000_000_000;
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 16, maxLength: 64 }),
        fc.stringMatching(/^[A-Za-z0-9_.:-]{1,64}$/),
        fc.integer({ min: -299, max: 299 }),
        fc.string({ maxLength: 300 }),
        fc.oneof(
          fc.record({ what: fc.constant('body' as const), s: fc.string({ maxLength: 20 }), at: fc.nat() }),
          fc.record({ what: fc.constant('id' as const), s: fc.string({ minLength: 1, maxLength: 8 }), at: fc.nat() }),
          fc.record({ what: fc.constant('timestamp' as const), s: fc.constant(''), at: fc.integer({ min: -299, max: 299 }) }),
        ),
        (key, id, skew, body, tamper) => {
          const secret = `whsec_${Buffer.from(key).toString('base64')}`;
          const ts = now / 1000 + skew;
          const headers = { 'webhook-id': id, 'webhook-timestamp': String(ts), 'webhook-signature': signWebhook([secret], id, ts, body) };
          assert.equal(verifyWebhook(secret, headers, body, 300, now).ok, true);
          let b = body;
          const h: Record<string, string> = { ...headers };
          if (tamper.what === 'body') {
            const i = tamper.at % (body.length + 1);
            b = body.slice(0, i) + tamper.s + body.slice(i) + (tamper.s === '' ? ' ' : '');
          } else if (tamper.what === 'id') {
            h['webhook-id'] = id + tamper.s;
          } else {
            const other = now / 1000 + (tamper.at === skew ? skew + 1 : tamper.at);
            h['webhook-timestamp'] = String(other);
          }
          assert.equal(verifyWebhook(secret, h, b, 300, now).ok, false);
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('payload and URLs', () => {
  test('body: { type, timestamp (ISO), data: { app, tenant } }, optional fields only when set', () => {
    const n = note('http://x.test/');
    assert.deepEqual(JSON.parse(webhookBody(n)), {
      type: 'tenant.failed',
      timestamp: '2026-11-21T09:53:44.839Z',
      data: { app: 'labs', tenant: { id: 't-7', name: 'lab-7', host: 'lab-7.labs.example.test', state: 'failed', reason: 'add exited 3:\nno space left' } },
    });
  });

  test('only http: and https: URLs without credentials', () => {
    assert.equal(checkWebhookUrl('https://hooks.example.com/drover?x=1').hostname, 'hooks.example.com');
    for (const bad of ['file:///etc/passwd', 'ftp://x.test/', 'javascript:alert(1)', 'gopher://x.test', 'http://u:p@x.test/', '/relative', `http://x.test/${'a'.repeat(3000)}`, 'http://x.test/\n']) {
      assert.throws(() => checkWebhookUrl(bad), (e: unknown) => e instanceof NotifyInputError && e.field === 'target.webhook', bad);
    }
  });
});

interface Hit {
  readonly path: string;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
}

describe('deliveries to a real receiver', () => {
  let server: http.Server;
  let base = '';
  const hits: Hit[] = [];
  /** Answers the next requests, one handler each; the last one stays. */
  let answers: ((req: http.IncomingMessage, res: http.ServerResponse) => void)[] = [];

  before(async () => {
    server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        hits.push({ path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
        const answer = answers.length > 1 ? answers.shift() : answers[0];
        if (answer) answer(req, res);
        else res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, HOST, r));
    base = `http://${HOST}:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });

  const reply = (status: number, body = '') => (_req: http.IncomingMessage, res: http.ServerResponse) => {
    res.writeHead(status).end(body);
  };

  function start(over: Partial<NotifierOptions> = {}) {
    hits.length = 0;
    answers = [];
    const attempts: DeliveryAttempt[] = [];
    const n = createNotifier({
      secretsFor: () => [],
      onAttempt: (a) => {
        attempts.push(a);
      },
      // The documented schedule, a thousand times shorter: 0, 5 ms, 300 ms, 1.8 s, …
      scheduleMs: DEFAULT_RETRY_SCHEDULE_MS,
      scheduleScale: over.scheduleMs === undefined ? 0.001 : 1,
      ...over,
    });
    return { n, attempts };
  }

  test('signed with both secrets during a rotation: a receiver holding either one verifies', async () => {
    const [oldS, newS] = [generateWebhookSecret(), generateWebhookSecret()];
    const { n, attempts } = start({ secretsFor: (app) => (app === 'labs' ? [oldS, newS] : []) });
    const sent = note(`${base}/rot`);
    n.enqueue(sent);
    await until('the delivery', () => attempts.length === 1);
    const hit = hits[0];
    assert.ok(hit);
    assert.equal(hit.headers['content-type'], 'application/json');
    assert.equal(hit.headers['webhook-id'], sent.id);
    assert.ok(Math.abs(Number(hit.headers['webhook-timestamp']) - Date.now() / 1000) < 5, 'webhook-timestamp is the time of sending, in unix seconds');
    assert.equal(String(hit.headers['webhook-signature']).split(' ').length, 2);
    assert.equal(verifyWebhook(oldS, hit.headers, hit.body).ok, true);
    assert.equal(verifyWebhook(newS, hit.headers, hit.body).ok, true);
    assert.equal(verifyWebhook(generateWebhookSecret(), hit.headers, hit.body).ok, false);
    assert.equal((JSON.parse(hit.body) as { type: string }).type, 'tenant.failed');
    await n.close();
  });

  test('a 500 is retried (5 s later on the schedule, scaled), a 2xx is not', async () => {
    const secret = generateWebhookSecret();
    const { n, attempts } = start({ secretsFor: () => [secret] });
    answers = [reply(500, 'oops'), reply(200, 'thanks')];
    const sent = note(`${base}/retry`);
    n.enqueue(sent);
    await until('two attempts', () => attempts.length === 2);
    await sleep(700); // past the third delay of the scaled schedule (300 ms)
    assert.equal(hits.length, 2, 'no retry after the 2xx');
    assert.deepEqual(attempts.map((a) => [a.attempt, a.ok, a.status, a.final]), [[1, false, 500, false], [2, true, 200, true]]);
    assert.equal(attempts[0]?.error, 'HTTP 500: oops');
    assert.equal((attempts[0]?.nextAttemptAt ?? 0) - (attempts[0]?.at ?? 0), 5);
    assert.equal(hits[0]?.headers['webhook-id'], hits[1]?.headers['webhook-id'], 'the same webhook-id on every attempt');
    assert.ok(hits.every((h) => verifyWebhook(secret, h.headers, h.body).ok));
    await n.close();
  });

  test('410 Gone stops the deliveries at once', async () => {
    const { n, attempts } = start({ secretsFor: () => [generateWebhookSecret()] });
    answers = [reply(410, 'unsubscribed')];
    n.enqueue(note(`${base}/gone`));
    await until('the attempt', () => attempts.length === 1);
    await sleep(400);
    assert.equal(hits.length, 1);
    assert.equal(attempts[0]?.final, true);
    assert.equal(attempts[0]?.status, 410);
    assert.match(attempts[0]?.error ?? '', /410 Gone/);
    await n.close();
  });

  test('a receiver that hangs is timed out and retried', async () => {
    const { n, attempts } = start({ secretsFor: () => [generateWebhookSecret()], attemptTimeoutMs: 200 });
    answers = [() => undefined, reply(204)];
    const t0 = Date.now();
    n.enqueue(note(`${base}/hang`));
    await until('two attempts', () => attempts.length === 2);
    assert.deepEqual(attempts.map((a) => a.ok), [false, true]);
    assert.equal(attempts[0]?.error, 'no answer within 200 ms');
    assert.equal(attempts[0]?.status, undefined);
    assert.ok(Date.now() - t0 >= 200);
    assert.equal(hits.length, 2);
    await n.close();
  });

  test('a redirect is not followed: the attempt fails and is retried', async () => {
    const { n, attempts } = start({ secretsFor: () => [generateWebhookSecret()], scheduleMs: [0, 10] });
    answers = [(_q, res) => res.writeHead(302, { location: `${base}/elsewhere` }).end()];
    n.enqueue(note(`${base}/moved`));
    await until('two attempts', () => attempts.length === 2);
    assert.deepEqual(hits.map((h) => h.path), ['/moved', '/moved']);
    assert.equal(attempts[0]?.status, 302);
    assert.match(attempts[0]?.error ?? '', /redirects are not followed/);
    assert.equal(attempts[1]?.final, true);
    await n.close();
  });

  test('a huge answer is cut after a few KiB; the error stays one short line', async () => {
    const { n, attempts } = start({ secretsFor: () => [generateWebhookSecret()], scheduleMs: [0] });
    answers = [
      (_q, res) => {
        res.writeHead(500, { 'content-type': 'text/plain' });
        const line = Buffer.alloc(64 * 1024, 'x\r\n');
        let sent = 0;
        const more = () => {
          while (sent < 50 * 1024 * 1024 && !res.destroyed) {
            sent += line.length;
            if (!res.write(line)) return void res.once('drain', more);
          }
          res.end();
        };
        more();
      },
    ];
    const t0 = Date.now();
    n.enqueue(note(`${base}/huge`));
    await until('the attempt', () => attempts.length === 1);
    assert.ok(Date.now() - t0 < 2000, 'does not read 50 MiB');
    assert.ok((attempts[0]?.error ?? '').length <= 300);
    assert.doesNotMatch(attempts[0]?.error ?? '', /[\r\n]/);
    await n.close();
  });

  test('no secret: nothing is sent unsigned; the attempt fails and is retried', async () => {
    let secrets: string[] = [];
    const { n, attempts } = start({ secretsFor: () => secrets, scheduleMs: [0, 50] });
    n.enqueue(note(`${base}/unsigned`));
    await until('the first attempt', () => attempts.length >= 1);
    assert.match(attempts[0]?.error ?? '', /not signed: secrets of app labs/);
    assert.equal(hits.length, 0);
    secrets = [generateWebhookSecret()];
    await until('the second attempt', () => attempts.length === 2);
    assert.equal(attempts[1]?.ok, true);
    await n.close();
  });

  test('a refused connection is retried, then given up with a final failed attempt', async () => {
    const probe = http.createServer();
    await new Promise<void>((r) => probe.listen(0, HOST, r));
    const port = probe.address() as AddressInfo;
    await new Promise<void>((r) => probe.close(() => r()));
    const { n, attempts } = start({ secretsFor: () => [generateWebhookSecret()], scheduleMs: [0, 10, 10] });
    n.enqueue(note(`http://${HOST}:${port.port}/closed`));
    await until('three attempts', () => attempts.length === 3);
    assert.ok(attempts.every((a) => !a.ok && /ECONNREFUSED/.test(a.error ?? '')));
    assert.equal(attempts[2]?.final, true);
    await n.close();
  });
});
