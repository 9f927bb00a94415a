/**
 * Templates as the docs promise them, end to end: health.exec gets ${...} like every command
 * (as quoted variables: a folder with a space works), and `drover validate` / `apply` say what
 * looks wrong, naming the field.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startServer } from '../src/controller/index.js';
import { apiClient, drover, killAll, processesWithEnv, sleep, until } from './helpers.js';

test('health.exec is templated: the role serves once the file it names exists', { timeout: 120_000 }, async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'drover-tpl-'));
  const dir = join(base, "app folder's");
  mkdirSync(dir);
  t.after(() => {
    killAll(processesWithEnv(base));
    rmSync(base, { recursive: true, force: true });
  });
  const yaml = ['app: shop', 'roles:', '  web:', '    start: exec sleep 600', '    health: { exec: "test -f ${appDir}/healthy-${role}-${app}", interval: 200ms }', ''].join('\n');
  const server = await startServer({ dataDir: join(base, '.drover'), port: 0, token: 'tpl-test-token-'.padEnd(40, 'x'), heartbeatMs: 500, logger: pino({ level: 'warn' }) });
  t.after(() => server.close());
  const api = apiClient(server);
  await api('PUT', '/v1/apps/shop', { yaml, appDir: dir });
  type Inst = { state: string };
  await until('web starting', async () => (await api<{ instances: Inst[] }>('GET', '/v1/instances?app=shop')).instances.some((i) => i.state === 'starting'), 60_000);
  await sleep(1500);
  assert.ok((await api<{ instances: Inst[] }>('GET', '/v1/instances?app=shop')).instances.every((i) => i.state === 'starting'), 'not healthy before the file exists');
  writeFileSync(join(dir, 'healthy-web-shop'), '');
  await until('web serving', async () => (await api<{ instances: Inst[] }>('GET', '/v1/instances?app=shop')).instances.some((i) => i.state === 'serving'), 30_000);
  await api('DELETE', '/v1/apps/shop');
  await until('shop is gone', async () => (await api<{ apps: unknown[] }>('GET', '/v1/apps')).apps.length === 0, 30_000);
});

test('drover validate warns about ${app} beside a role named app and refuses an unknown name in an export', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-tpl-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const ok = join(dir, 'ok.yaml');
  writeFileSync(ok, ['app: shop', 'roles:', '  app:', '    start: run', '    exports: { endpoint: "http://${ip}:${port}" }', '  front:', '    imports: [app.endpoint]', '    start: exec front ${app}', ''].join('\n'));
  const r = await drover(['validate', ok], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, `warning: ${ok}: roles.front.start: \${app} is the built-in (the app's name), not an export of role "app"; for its export write \${app.KEY}\n`);
  assert.match(r.stdout, /ok \(app shop, roles app, front\), 1 warning\(s\)/);
  const bad = join(dir, 'bad.yaml');
  writeFileSync(bad, ['app: shop', 'roles:', '  api:', '    start: run', '    exports: { url: "http://${hostname}:${port}" }', ''].join('\n'));
  const r2 = await drover(['validate', bad], { cwd: dir });
  assert.equal(r2.code, 1);
  assert.match(r2.stderr, /roles\.api\.exports\.url: \$\{hostname\} is not a Drover name/);
});
