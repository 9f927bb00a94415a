/**
 * E-mail: settings from the environment (checked, errors naming the variable), the message, and
 * deliveries to a real SMTP server (smtp-server) on 127.0.0.1, with and without authentication.
 */
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import {
  checkEmailAddress,
  compileSmtpSettings,
  createNotifier,
  emailMessage,
  NotifyInputError,
  smtpSettingsFromEnv,
  type DeliveryAttempt,
  type Notification,
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

const ready: Notification = {
  id: 'ntf_t-42_ready',
  kind: 'tenant.ready',
  at: Date.UTC(2026, 10, 21, 9, 53, 44),
  app: 'labs',
  tenant: { id: 't-42', name: 'lab-7', host: 'lab-7.labs.example.test', state: 'ready', instance: 'i-1df4eb95', address: '10.0.0.7:8080' },
  target: { email: 'ops@example.test' },
};
const failed: Notification = {
  ...ready,
  id: 'ntf_t-43_failed',
  kind: 'tenant.failed',
  tenant: { id: 't-43', name: 'lab-8', host: 'lab-8.labs.example.test', state: 'failed', reason: 'add exited with code 3 after 3 attempts:\n<disk> full & "quota" reached' },
};

const isInput = (field: string) => (e: unknown) => e instanceof NotifyInputError && e.field === field;

describe('SMTP settings', () => {
  test('from DROVER_SMTP_URL and DROVER_SMTP_FROM; neither set: e-mail is off', () => {
    assert.equal(smtpSettingsFromEnv({}), undefined);
    const env = { DROVER_SMTP_URL: 'smtp://user:p%40ss@mail.example.com:587', DROVER_SMTP_FROM: 'Drover <drover@example.com>' };
    assert.deepEqual(smtpSettingsFromEnv(env), { url: env.DROVER_SMTP_URL, from: env.DROVER_SMTP_FROM });
    const c = compileSmtpSettings({ url: env.DROVER_SMTP_URL, from: env.DROVER_SMTP_FROM });
    assert.deepEqual(c, {
      host: 'mail.example.com',
      port: 587,
      secure: false,
      requireTLS: true, // credentials to another machine: never in clear
      auth: { user: 'user', pass: 'p@ss' },
      from: { name: 'Drover', address: 'drover@example.com' },
    });
    assert.equal(compileSmtpSettings({ url: 'smtps://u:p@mail.example.com', from: 'd@example.com' }).port, 465);
    assert.equal(compileSmtpSettings({ url: 'smtps://u:p@mail.example.com', from: 'd@example.com' }).secure, true);
    assert.equal(compileSmtpSettings({ url: 'smtp://u:p@127.0.0.1:2525', from: 'd@example.com' }).requireTLS, false);
    assert.equal(compileSmtpSettings({ url: 'smtp://mail.example.com', from: 'd@example.com' }).requireTLS, false);
  });

  test('refused with an error naming the variable, never showing the password', () => {
    const cases: [Record<string, string>, string][] = [
      [{ DROVER_SMTP_URL: 'smtp://mail.example.com' }, 'DROVER_SMTP_FROM'],
      [{ DROVER_SMTP_FROM: 'd@example.com' }, 'DROVER_SMTP_URL'],
      [{ DROVER_SMTP_URL: 'http://u:secret-pw@mail.example.com', DROVER_SMTP_FROM: 'd@example.com' }, 'DROVER_SMTP_URL'],
      [{ DROVER_SMTP_URL: 'not a url secret-pw', DROVER_SMTP_FROM: 'd@example.com' }, 'DROVER_SMTP_URL'],
      [{ DROVER_SMTP_URL: 'smtp://u:secret-pw@mail.example.com/path?x', DROVER_SMTP_FROM: 'd@example.com' }, 'DROVER_SMTP_URL'],
      [{ DROVER_SMTP_URL: 'smtp://:secret-pw@mail.example.com', DROVER_SMTP_FROM: 'd@example.com' }, 'DROVER_SMTP_URL'],
      [{ DROVER_SMTP_URL: 'smtp://mail.example.com', DROVER_SMTP_FROM: 'd@example.com\r\nBcc: x@example.com' }, 'DROVER_SMTP_FROM'],
      [{ DROVER_SMTP_URL: 'smtp://mail.example.com', DROVER_SMTP_FROM: 'a@example.com, b@example.com' }, 'DROVER_SMTP_FROM'],
      [{ DROVER_SMTP_URL: 'smtp://mail.example.com', DROVER_SMTP_FROM: 'nobody' }, 'DROVER_SMTP_FROM'],
    ];
    for (const [env, field] of cases) {
      assert.throws(
        () => smtpSettingsFromEnv(env),
        (e: unknown) => isInput(field)(e) && (e as NotifyInputError).code === 'notify_bad_smtp_settings' && !(e as Error).message.includes('secret-pw'),
        JSON.stringify(env),
      );
    }
  });

  test('a recipient is one plain address: no CR/LF, no list, no display name', () => {
    assert.equal(checkEmailAddress('ops+labs@example.co.uk'), 'ops+labs@example.co.uk');
    for (const bad of ['ops@example.test\r\nBcc: all@example.test', 'ops@example.test\n', 'a@example.test, b@example.test', 'a@example.test;b@example.test', 'Ops <ops@example.test>', 'ops', 'ops@localhost', '@example.test', `${'a'.repeat(65)}@example.test`, 'o ps@example.test', '']) {
      assert.throws(() => checkEmailAddress(bad), isInput('target.email'), JSON.stringify(bad));
    }
    assert.throws(() => checkEmailAddress('x@example.test\r\nBcc: y@example.test'), /CR or LF/);
  });
});

describe('message', () => {
  test('ready: says where the tenant is ready; text and HTML', () => {
    const m = emailMessage(ready);
    assert.equal(m.subject, '[labs] lab-7 is ready at lab-7.labs.example.test');
    assert.match(m.text, /^Tenant lab-7 of app labs is ready at lab-7\.labs\.example\.test on instance i-1df4eb95 \(10\.0\.0\.7:8080\)\.\n/);
    assert.match(m.text, /When: 2026-11-21T09:53:44\.000Z/);
    assert.match(m.html, /<p>Tenant lab-7 of app labs is ready at lab-7\.labs\.example\.test/);
  });

  test('failed: says why, the reason escaped in HTML; the subject stays one line', () => {
    const m = emailMessage(failed);
    assert.equal(m.subject, '[labs] lab-8 could not be set up');
    assert.match(m.text, /Reason:\nadd exited with code 3 after 3 attempts:\n<disk> full & "quota" reached\n/);
    assert.match(m.html, /&#60;disk&#62; full &#38; &#34;quota&#34; reached/);
    assert.doesNotMatch(m.html, /<disk>/);
    for (const kind of ['tenant.moved', 'tenant.removed'] as const) assert.doesNotMatch(emailMessage({ ...failed, kind }).subject, /[\r\n]/);
  });
});

interface Received {
  readonly from: string;
  readonly to: string[];
  readonly user: string | undefined;
  readonly raw: string;
}

/** Quoted-printable soft breaks and escapes undone, enough to read a message's text. */
const unQp = (s: string) => s.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16)));

async function smtpServer(opts: Partial<SMTPServerOptions>): Promise<{ port: number; mails: Received[]; close(): Promise<void> }> {
  const mails: Received[] = [];
  const server = new SMTPServer({
    disabledCommands: ['STARTTLS'],
    logger: false,
    disableReverseLookup: true,
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const user = (session.user as string | undefined) ?? undefined;
        mails.push({
          from: session.envelope.mailFrom === false ? '' : session.envelope.mailFrom.address,
          to: session.envelope.rcptTo.map((r) => r.address),
          user,
          raw: Buffer.concat(chunks).toString('utf8'),
        });
        callback();
      });
    },
    ...opts,
  });
  await new Promise<void>((r) => server.listen(0, HOST, r));
  return { port: (server.server.address() as AddressInfo).port, mails, close: () => new Promise<void>((r) => server.close(() => r())) };
}

describe('deliveries to a real SMTP server', () => {
  let open: { port: number; mails: Received[]; close(): Promise<void> };
  let authed: { port: number; mails: Received[]; close(): Promise<void> };
  before(async () => {
    open = await smtpServer({ authOptional: true, disabledCommands: ['STARTTLS', 'AUTH'] });
    authed = await smtpServer({
      authOptional: false,
      allowInsecureAuth: true, // loopback only, as in the test
      onAuth(auth, _session, callback) {
        if (auth.username === 'drover' && auth.password === 'pa:ss w@rd') callback(null, { user: 'drover' });
        else callback(Object.assign(new Error('Invalid username or password'), { responseCode: 535 }));
      },
    });
  });
  after(async () => {
    await open.close();
    await authed.close();
  });

  function start(url: string) {
    const attempts: DeliveryAttempt[] = [];
    const n = createNotifier({
      secretsFor: () => [],
      smtp: { url, from: 'Drover Labs <drover@example.test>' },
      onAttempt: (a) => {
        attempts.push(a);
      },
      scheduleMs: [0, 20, 20],
    });
    return { n, attempts };
  }

  test('without authentication: the mail arrives with its subject, body, sender and one recipient', async () => {
    const { n, attempts } = start(`smtp://${HOST}:${open.port}`);
    n.enqueue(ready);
    await until('the mail', () => attempts.length === 1);
    assert.equal(attempts[0]?.ok, true);
    assert.equal(attempts[0]?.status, 250);
    const mail = open.mails.at(-1);
    assert.ok(mail);
    assert.equal(mail.from, 'drover@example.test');
    assert.deepEqual(mail.to, ['ops@example.test']);
    const raw = unQp(mail.raw);
    assert.match(raw, /^Subject: \[labs\] lab-7 is ready at lab-7\.labs\.example\.test\r?$/m);
    assert.match(raw, /^From: Drover Labs <drover@example\.test>\r?$/m);
    assert.match(raw, /^To: ops@example\.test\r?$/m);
    assert.match(raw, /^Message-ID: <ntf_t-42_ready\.drover@example\.test>\r?$/m);
    assert.match(raw, /^Auto-Submitted: auto-generated\r?$/m);
    assert.match(raw, /Tenant lab-7 of app labs is ready at lab-7\.labs\.example\.test on instance i-1df4eb95/);
    assert.match(raw, /Content-Type: text\/html/);
    await n.close();
  });

  test('with authentication (user and password from the URL, percent-encoded): the failure mail says why', async () => {
    const { n, attempts } = start(`smtp://drover:${encodeURIComponent('pa:ss w@rd')}@${HOST}:${authed.port}`);
    n.enqueue(failed);
    await until('the mail', () => attempts.length === 1);
    assert.equal(attempts[0]?.ok, true, attempts[0]?.error);
    const mail = authed.mails.at(-1);
    assert.equal(mail?.user, 'drover');
    const raw = unQp(mail?.raw ?? '');
    assert.match(raw, /^Subject: \[labs\] lab-8 could not be set up\r?$/m);
    assert.match(raw, /add exited with code 3 after 3 attempts:\r?\n<disk> full & "quota" reached/);
    await n.close();
  });

  test('a wrong password is a permanent 535: given up after one attempt, nothing delivered', async () => {
    const before = authed.mails.length;
    const { n, attempts } = start(`smtp://drover:wrong@${HOST}:${authed.port}`);
    n.enqueue({ ...ready, id: 'ntf_wrong_pw' });
    await until('the attempt', () => attempts.length === 1);
    await sleep(100);
    assert.equal(attempts.length, 1);
    assert.equal(attempts[0]?.ok, false);
    assert.equal(attempts[0]?.final, true);
    assert.equal(attempts[0]?.status, 535);
    assert.doesNotMatch(attempts[0]?.error ?? '', /wrong/, 'the password is not in the error');
    assert.equal(authed.mails.length, before);
    await n.close();
  });

  test('a recipient refused with 550 is given up at once; a 451 is retried', async () => {
    let tempFailures = 1;
    const picky = await smtpServer({
      authOptional: true,
      disabledCommands: ['STARTTLS', 'AUTH'],
      onRcptTo(address, _session, callback) {
        if (address.address.startsWith('nobody@')) callback(Object.assign(new Error('no such user'), { responseCode: 550 }));
        else if (tempFailures-- > 0) callback(Object.assign(new Error('greylisted, try again'), { responseCode: 451 }));
        else callback();
      },
    });
    try {
      const { n, attempts } = start(`smtp://${HOST}:${picky.port}`);
      n.enqueue({ ...ready, id: 'ntf_nobody', target: { email: 'nobody@example.test' } });
      n.enqueue({ ...ready, id: 'ntf_grey', target: { email: 'ops@example.test' } });
      await until('three attempts', () => attempts.length === 3);
      await sleep(100);
      const nobody = attempts.filter((a) => a.notificationId === 'ntf_nobody');
      const grey = attempts.filter((a) => a.notificationId === 'ntf_grey');
      assert.deepEqual(nobody.map((a) => [a.ok, a.status, a.final]), [[false, 550, true]]);
      assert.deepEqual(grey.map((a) => [a.ok, a.final]), [[false, false], [true, true]]);
      assert.equal(grey[0]?.status, 451);
      assert.deepEqual(picky.mails.map((m) => m.to), [['ops@example.test']]);
      await n.close();
    } finally {
      await picky.close();
    }
  });

  test('no SMTP settings: an e-mail target is reported as not sent, naming the variables', async () => {
    const attempts: DeliveryAttempt[] = [];
    const n = createNotifier({ secretsFor: () => [], onAttempt: (a) => void attempts.push(a) });
    const r = n.enqueue({ ...ready, id: 'ntf_nosmtp' });
    assert.deepEqual(r.queued, []);
    await until('the report', () => attempts.length === 1);
    assert.match(attempts[0]?.error ?? '', /DROVER_SMTP_URL/);
    assert.equal(attempts[0]?.final, true);
    await n.close();
  });

  test('bad settings given to createNotifier are refused at once', () => {
    assert.throws(() => createNotifier({ secretsFor: () => [], smtp: { url: 'smtp://mail.example.com', from: 'x' } }), isInput('smtp.from'));
  });
});
