// Choosing the transport: --transport / DROVER_TRANSPORT_URL checked before anything starts
// (errors name the flag or variable, never the password), and the agent's side: the broker URL
// arrives on stdin after the instance key, checked as strictly as the key.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { pino } from 'pino';
import { ControllerStartError, startServer } from '../src/controller/index.js';
import { AgentEnvError, readSecrets } from '../src/agent/index.js';
import { drover } from './helpers.js';

function stdin(text: string): PassThrough {
  const s = new PassThrough();
  s.end(text);
  return s;
}

test('agent stdin: the key alone (embedded), or the key and the broker URL (amqp); anything else is refused', async () => {
  const key = 'k'.repeat(43);
  assert.deepEqual(await readSecrets(stdin(`${key}\n`)), { key });
  assert.deepEqual(await readSecrets(stdin(`${key}\namqp://drover-agent-i-1:pw@127.0.0.1:5672/v\n`)), { key, transportUrl: 'amqp://drover-agent-i-1:pw@127.0.0.1:5672/v' });
  await assert.rejects(readSecrets(stdin(`${key}\nhttp://x\n`)), (e: unknown) => e instanceof AgentEnvError && /amqp:\/\/ or amqps:\/\//.test(e.message));
  await assert.rejects(readSecrets(stdin(`${key}\nnot a url\n`)), (e: unknown) => e instanceof AgentEnvError && /not a transport URL/.test(e.message));
  await assert.rejects(readSecrets(stdin(`${key}\namqp://a:b@h\nthird\n`)), (e: unknown) => e instanceof AgentEnvError && /more than/.test(e.message));
  await assert.rejects(readSecrets(stdin('short\n')), AgentEnvError);
});

test('startServer: a bad transport URL stops the start with bad-setting, naming the problem and not the password', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-transport-config-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  for (const [url, why] of [['http://u:hunter2@h', /amqp:\/\/ or amqps:\/\//], ['amqp://h:5672', /needs the controller's user and password/], ['::', /not a URL/]] as const) {
    await assert.rejects(
      startServer({ dataDir: join(dir, '.drover'), port: 0, logger: pino({ level: 'silent' }), transportUrl: url }),
      (e: unknown) => e instanceof ControllerStartError && e.code === 'bad-setting' && /^transport: /.test(e.message) && why.test(e.message) && !e.message.includes('hunter2'),
    );
  }
});

test('drover controller: DROVER_TRANSPORT_URL and --transport are checked, naming which one, never echoing the password', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-transport-cli-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const env = await drover(['controller', '--data-dir', join(dir, '.drover'), '--port', '0'], { cwd: dir, env: { DROVER_TRANSPORT_URL: 'ftp://u:hunter2@h' }, timeoutMs: 30_000 });
  assert.equal(env.code, 2, env.stderr);
  assert.match(env.stderr, /DROVER_TRANSPORT_URL: the transport URL must be amqp:\/\/ or amqps:\/\//);
  assert.ok(!env.stderr.includes('hunter2'));
  const flag = await drover(['controller', '--data-dir', join(dir, '.drover'), '--port', '0', '--transport', 'amqp://nopassword@h'], { cwd: dir, timeoutMs: 30_000 });
  assert.equal(flag.code, 2, flag.stderr);
  assert.match(flag.stderr, /--transport: the transport URL .* needs the controller's user and password/);
});
