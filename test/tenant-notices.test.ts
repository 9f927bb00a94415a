/**
 * Tenant notifications survive a controller restart: a webhook whose first attempt failed is
 * delivered by the restarted controller, resuming the schedule, with the same webhook-id.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { SMTPServer } from 'smtp-server';
import { freePort } from '../src/adapters/providers/index.js';
import { startServer, type RunningController } from '../src/controller/index.js';
import { apiClient, killAll, processesWithEnv, until } from './helpers.js';

type Shown = { id: string; state: string; notifications: { status: string; attempt: number; messageId: string }[] };

test('an undelivered tenant webhook is delivered after a controller restart, same id, schedule resumed', { timeout: 120_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-notices-'));
  const holder: { server?: RunningController } = {};
  const seen: { id: string; status: number }[] = [];
  const receiver = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const status = seen.length === 0 ? 500 : 200;
      seen.push({ id: String(req.headers['webhook-id']), status });
      res.statusCode = status;
      res.end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  t.after(async () => {
    receiver.close();
    await holder.server?.close();
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
  });
  const port = await freePort();
  const start = async () => (holder.server = await startServer({ dataDir: join(dir, '.drover'), port, logger: pino({ level: 'silent' }), heartbeatMs: 500 }));
  let server = await start();
  const api = <T>(m: string, p: string, b?: unknown) => apiClient(holder.server!)<T>(m, p, b);
  const yaml = `
app: hooks
roles:
  labs:
    min: 1
    max: 2
    start: exec node -e "require('http').createServer((q,s)=>s.end('ok')).listen(+process.env.PORT,'127.0.0.1')"
    health: { http: /, interval: 200ms }
    tenants: { capacity: 5, add: "true", remove: "true" }
`;
  await api('PUT', '/v1/apps/hooks', { yaml, appDir: dir });
  await until('converged', async () => (await api<{ converged: boolean }>('GET', '/v1/apps/hooks')).converged, 60_000);
  const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
  const created = await api<{ id: string }>('POST', '/v1/apps/hooks/roles/labs/tenants', { name: 'lab-1', callbackUrl: url });
  await until('the first attempt failed and is recorded', async () => (await api<Shown>('GET', `/v1/tenants/${created.id}`)).notifications.some((n) => n.status === 'failed'), 20_000);
  // The next attempt is due 5 s later: restart before it.
  await server.close();
  server = await start();
  await until('delivered by the new controller', async () => (await api<Shown>('GET', `/v1/tenants/${created.id}`)).notifications.some((n) => n.status === 'delivered'), 30_000);
  const shown = await api<Shown>('GET', `/v1/tenants/${created.id}`);
  const delivered = shown.notifications.find((n) => n.status === 'delivered')!;
  assert.equal(delivered.attempt, 2, 'the schedule resumed after the first attempt');
  assert.equal(seen.length, 2);
  assert.equal(seen[0]!.id, seen[1]!.id, 'the same webhook-id: receivers de-duplicate on it');
  assert.equal(server.url, `http://127.0.0.1:${port}`);
});

test('an e-mail address given at sign-up gets the ready mail through the controller (a real SMTP server on loopback)', { timeout: 120_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-mail-'));
  const holder: { server?: RunningController } = {};
  const mails: { from: string; to: string[]; raw: string }[] = [];
  const smtp = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    disableReverseLookup: true,
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        mails.push({
          from: session.envelope.mailFrom === false ? '' : session.envelope.mailFrom.address,
          to: session.envelope.rcptTo.map((r) => r.address),
          raw: Buffer.concat(chunks).toString('utf8'),
        });
        callback();
      });
    },
  });
  await new Promise<void>((r) => smtp.listen(0, '127.0.0.1', r));
  const saved = { url: process.env.DROVER_SMTP_URL, from: process.env.DROVER_SMTP_FROM };
  t.after(async () => {
    await holder.server?.close();
    await new Promise<void>((r) => smtp.close(() => r()));
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
    for (const [k, v] of [['DROVER_SMTP_URL', saved.url], ['DROVER_SMTP_FROM', saved.from]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
  // The controller reads its SMTP settings from its environment, as `drover controller` does.
  process.env.DROVER_SMTP_URL = `smtp://127.0.0.1:${(smtp.server.address() as AddressInfo).port}`;
  process.env.DROVER_SMTP_FROM = 'Drover <drover@example.test>';
  holder.server = await startServer({ dataDir: join(dir, '.drover'), port: 0, logger: pino({ level: 'silent' }), heartbeatMs: 500 });
  const api = apiClient(holder.server);
  await api('PUT', '/v1/apps/mail', {
    appDir: dir,
    yaml: `
app: mail
roles:
  labs:
    min: 1
    max: 1
    start: exec sleep 100000
    tenants: { capacity: 5, add: "true", remove: "true", host: "\${tenant}.labs.example.test" }
`,
  });
  await until('converged', async () => (await api<{ converged: boolean }>('GET', '/v1/apps/mail')).converged, 60_000);
  const created = await api<{ id: string }>('POST', '/v1/apps/mail/roles/labs/tenants', { name: 'lab-9', email: 'owner@example.test' });
  await until('the mail arrived', async () => mails.length > 0, 30_000);
  const mail = mails[0]!;
  assert.equal(mail.from, 'drover@example.test');
  assert.deepEqual(mail.to, ['owner@example.test']);
  assert.match(mail.raw, /^Subject: \[mail\] lab-9 is ready at lab-9\.labs\.example\.test/m);
  await until('the delivery is recorded', async () => (await api<Shown>('GET', `/v1/tenants/${created.id}`)).notifications.some((n) => n.status === 'delivered'), 10_000);
  const shown = await api<{ notifications: { kind: string; status: string }[] }>('GET', `/v1/tenants/${created.id}`);
  assert.ok(shown.notifications.some((n) => n.kind === 'email' && n.status === 'delivered'), JSON.stringify(shown.notifications));
});
