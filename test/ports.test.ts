/**
 * Named ports end to end: `${ports.NAME}` rendered in commands and exports, `$DROVER_PORT_NAME`
 * in the environment, every port reachable, shown on the instance; bad ports refused whole with
 * the field named.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startServer } from '../src/controller/index.js';
import { apiClient, killAll, processesWithEnv, until } from './helpers.js';

const API = `
import http from 'node:http';
const [http_, admin] = process.argv.slice(2).map(Number);
for (const [name, port] of [['http', http_], ['admin', admin], ['jmx', Number(process.env.DROVER_PORT_JMX)]]) {
  http.createServer((req, res) => res.end(name + ' ' + process.env.DROVER_PORT_ADMIN)).listen(port, '127.0.0.1');
}
`;

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const p = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return p;
}

test('named ports: rendered, exported, reachable, shown on the instance; bad ones refused naming the field', { timeout: 120_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-ports-'));
  t.after(() => {
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
  });
  writeFileSync(join(dir, 'api.mjs'), API);
  const jmx = await freePort();
  const yaml = [
    'app: shop',
    'roles:',
    '  api:',
    `    ports: { http: auto, admin: auto, jmx: ${jmx} }`,
    `    start: exec "${process.execPath}" "\${appDir}/api.mjs" \${ports.http} \${ports.admin}`,
    '    health: { http: /, interval: 200ms }',
    '    exports: { http: "http://${ip}:${ports.http}", admin: "http://${ip}:${ports.admin}", jmx: "${ip}:${ports.jmx}", first: "${port}" }',
    '  web:',
    '    imports: [api.admin]',
    '    start: exec sleep 600',
    '    env: { ADMIN: "${api.admin}" }',
    '',
  ].join('\n');
  const server = await startServer({ dataDir: join(dir, '.drover'), port: 0, token: 'ports-test-token-'.padEnd(40, 'x'), heartbeatMs: 500, logger: pino({ level: 'warn' }) });
  t.after(() => server.close());
  const api = apiClient(server);

  // Refused whole, each naming its field; nothing applied.
  const refusal = async (text: string) => {
    const r = await fetch(`${server.url}/v1/apps/shop`, {
      method: 'PUT', headers: { authorization: `Bearer ${server.token}`, 'content-type': 'application/json' }, body: JSON.stringify({ yaml: text, appDir: dir }),
    });
    assert.equal(r.status, 422);
    return ((await r.json()) as { error: { details: { path: string; message: string }[] } }).error.details;
  };
  const role = (line: string) => ['app: shop', 'roles:', '  api:', '    start: run', `    ${line}`, ''].join('\n');
  assert.deepEqual(await refusal(role('ports: { x: 0 }')), [{ path: 'roles.api.ports.x', message: 'expected a port from 1 to 65535' }]);
  assert.deepEqual(await refusal(role('ports: { x: 70000 }')), [{ path: 'roles.api.ports.x', message: 'expected a port from 1 to 65535' }]);
  assert.deepEqual(await refusal(role('ports: { x: abc }')), [{ path: 'roles.api.ports.x', message: 'expected auto or a port from 1 to 65535' }]);
  assert.deepEqual(await refusal(role('env: { A: "${ports.nope}" }')), [{ path: 'roles.api.env.A', message: '${ports.nope}: role "api" has no port "nope" (declare it under ports:)' }]);
  const twice = ['app: shop', 'roles:', '  api:', '    start: run', '    ports: { ajp: 8009 }', '  front:', '    start: run', '    listen: 8009', ''].join('\n');
  assert.deepEqual(await refusal(twice), [{ path: 'roles.front.listen', message: 'port 8009 is already claimed by roles.api.ports.ajp: two roles cannot hold one fixed port on a host' }]);
  assert.equal((await api<{ apps: unknown[] }>('GET', '/v1/apps')).apps.length, 0, 'nothing applied');

  await api('PUT', '/v1/apps/shop', { yaml, appDir: dir });
  type Inst = { id: string; role: string; state: string; address: string; exports: Record<string, string>; ports?: Record<string, number> };
  const inst = await until('api and web serving', async () => {
    const list = (await api<{ instances: Inst[] }>('GET', '/v1/instances?app=shop')).instances;
    return list.filter((i) => i.state === 'serving').length === 2 ? list.find((i) => i.role === 'api') : undefined;
  }, 60_000).catch(async (err: unknown) => {
    const list = (await api<{ instances: (Inst & { message: string | null })[] }>('GET', '/v1/instances?app=shop&all=true')).instances;
    throw new Error(`${String(err)}: ${JSON.stringify(list.map((i) => [i.id, i.role, i.state, i.message]))}`);
  });
  const ports = inst.ports!;
  assert.deepEqual(Object.keys(ports).sort(), ['admin', 'http', 'jmx'], 'every port of the role');
  assert.equal(ports.jmx, jmx);
  assert.equal(`127.0.0.1:${ports.http}`, inst.address, 'the first auto port is the instance port');
  assert.notEqual(ports.admin, ports.http);
  assert.deepEqual(inst.exports, { http: `http://127.0.0.1:${ports.http}`, admin: `http://127.0.0.1:${ports.admin}`, jmx: `127.0.0.1:${jmx}`, first: String(ports.http) });
  for (const [name, url] of [['http', inst.exports.http], ['admin', inst.exports.admin], ['jmx', `http://${inst.exports.jmx}`]] as const) {
    assert.equal(await (await fetch(url)).text(), `${name} ${ports.admin}`, `${name} answers, and $DROVER_PORT_ADMIN is set`);
  }
  // The importer got the admin port as any export.
  const web = processesWithEnv(`ADMIN=http://127.0.0.1:${ports.admin}`);
  assert.ok(web.length >= 1, 'web runs with ${api.admin} in its environment');

  // One member per host for a role binding a fixed port: a second is refused, by the file and by scale.
  const scale = await fetch(`${server.url}/v1/apps/shop/roles/api/count`, {
    method: 'PUT', headers: { authorization: `Bearer ${server.token}`, 'content-type': 'application/json' }, body: JSON.stringify({ count: 2 }),
  });
  assert.equal(scale.status, 422);
  assert.match(((await scale.json()) as { error: { message: string } }).error.message, /count: 2 is outside api's bounds \[0, 1\]/);
  // Another app wanting the same fixed port on this host: its member fails at once, naming it.
  await api('PUT', '/v1/apps/other', { yaml: ['app: other', 'roles:', '  jvm:', `    ports: { jmx: ${jmx} }`, '    start: exec sleep 600', ''].join('\n'), appDir: dir });
  const clash = await until('the other app\'s member fails', async () => {
    const list = (await api<{ instances: (Inst & { message: string | null })[] }>('GET', '/v1/instances?app=other&all=true')).instances;
    return list.find((i) => i.state === 'failed');
  }, 30_000);
  assert.match(clash.message ?? '', new RegExp(`ports\\.jmx: port ${jmx} on 127\\.0\\.0\\.1 is in use \\(another member of role jvm on this host, or another program\\)`));
  await api('DELETE', '/v1/apps/other');

  await api('DELETE', '/v1/apps/shop');
  await until('every app is gone', async () => (await api<{ apps: unknown[] }>('GET', '/v1/apps')).apps.length === 0, 30_000);
});
