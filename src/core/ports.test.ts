import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { parseAppFile, SpecError } from './spec.js';
import { extraAutoPorts, resolvePorts } from './ports.js';
import { renderCommand, roleBuiltins } from './render.js';
import { importEnv, renderTemplate } from './template.js';

const yaml = (lines: string[]) => `${lines.join('\n')}\n`;

function refusal(text: string): string[] {
  try {
    parseAppFile(text);
  } catch (e) {
    assert.ok(e instanceof SpecError, `expected a SpecError, got ${String(e)}`);
    return e.message.split('\n');
  }
  assert.fail('expected the file to be refused');
}

const role = (...body: string[]) => yaml(['app: shop', 'roles:', '  api:', '    start: node api.mjs', ...body.map((l) => `    ${l}`)]);

test('ports, listen and volumes compile; absent, they are left out of the role (no roll on upgrade)', () => {
  const spec = parseAppFile(role('ports: { http: auto, admin: auto, ajp: 8009 }', 'listen: { http: 8080 }', 'volumes: [data, logs]'));
  const api = spec.roles.api!;
  assert.deepEqual(api.ports, { http: 'auto', admin: 'auto', ajp: 8009 });
  assert.deepEqual(api.listen, [{ port: 8080, to: 'http' }]);
  assert.deepEqual(api.volumes, ['data', 'logs']);
  assert.deepEqual(parseAppFile(role('listen: 8080', 'volumes: { data: {} }')).roles.api!.listen, [{ port: 8080 }]);
  assert.deepEqual(parseAppFile(role('volumes: { data: {} }')).roles.api!.volumes, ['data']);
  const plain = parseAppFile(role()).roles.api!;
  for (const k of ['ports', 'listen', 'volumes']) assert.equal(Object.hasOwn(plain, k), false, k);
});

test('bad ports are refused with the field named', () => {
  assert.deepEqual(refusal(role('ports: { x: 0 }')), ['roles.api.ports.x: expected a port from 1 to 65535']);
  assert.deepEqual(refusal(role('ports: { x: 70000 }')), ['roles.api.ports.x: expected a port from 1 to 65535']);
  assert.deepEqual(refusal(role('ports: { x: abc }')), ['roles.api.ports.x: expected auto or a port from 1 to 65535']);
  assert.deepEqual(refusal(role('ports: { x: 1.5 }')), ['roles.api.ports.x: expected auto or a port from 1 to 65535']);
  assert.match(refusal(role('ports: { Http: auto }')).join('\n'), /^roles\.api\.ports.*invalid port name "Http"/m);
  assert.deepEqual(refusal(role('ports: { a: 9000, b: 9000 }')), ['roles.api.ports.b: port 9000 is already ports.a']);
  assert.deepEqual(refusal(role('ports: {}')), ['roles.api.ports: expected at least one port (leave ports out for the single ${port})']);
  assert.deepEqual(refusal(role('listen: 0')), ['roles.api.listen: expected a port from 1 to 65535']);
  assert.deepEqual(refusal(role('ports: { http: auto }', 'listen: { web: 8080 }')), ['roles.api.listen.web: no port "web" in ports (names: http)']);
  assert.match(refusal(role('ports: { http: 9000 }', 'listen: 8080')).join('\n'), /roles\.api\.listen: leads to a fixed port \(9000\)/);
  assert.match(refusal(role('volumes: [data, data]')).join('\n'), /roles\.api\.volumes\[1\]: duplicate volume "data"/);
});

test('a fixed port claimed by two roles is refused, naming both', () => {
  const text = yaml([
    'app: shop',
    'roles:',
    '  api:',
    '    start: node api.mjs',
    '    ports: { http: auto, ajp: 8009 }',
    '  front:',
    '    start: node front.mjs',
    '    listen: 8009',
  ]);
  assert.deepEqual(refusal(text), ['roles.front.listen: port 8009 is already claimed by roles.api.ports.ajp: two roles cannot hold one fixed port on a host']);
});

test('${ports.NAME} and ${volumes.NAME} are checked at validate time', () => {
  assert.deepEqual(refusal(role('ports: { http: auto }', 'env: { A: "${ports.nope}" }')), ['roles.api.env.A: ${ports.nope}: role "api" has no port "nope" (ports: http)']);
  assert.deepEqual(refusal(role('exports: { x: "${volumes.data}" }')), ['roles.api.exports.x: ${volumes.data}: role "api" has no volume "data" (declare it under volumes:)']);
  assert.match(refusal(role('volumes: [data]', 'exports: { x: "${volumes.data}" }')).join('\n'), /local to its host/);
  assert.match(refusal(yaml(['app: shop', 'roles:', '  ports:', '    start: x'])).join('\n'), /role name "ports" is reserved/);
  // Accepted: declared names, in commands, env and exports.
  parseAppFile(role('ports: { http: auto, admin: auto }', 'volumes: [data]', 'env: { D: "${volumes.data}" }', 'exports: { admin: "http://${ip}:${ports.admin}" }', 'deploy: ls ${volumes.data} ${ports.http}'));
});

test('${port} is the first port; the first auto port is the instance port, the others the agent chooses', () => {
  const api = parseAppFile(role('ports: { http: auto, admin: auto, ajp: 8009 }')).roles.api!;
  assert.deepEqual(extraAutoPorts(api), ['admin']);
  assert.equal(resolvePorts(api, 41000, {}), undefined, 'admin missing');
  assert.equal(resolvePorts(api, 41000, { admin: 41001, ajp: 1 }), undefined, 'ajp is fixed: not the agent to choose');
  const ports = resolvePorts(api, 41000, { admin: 41001 })!;
  assert.deepEqual(ports, { http: 41000, admin: 41001, ajp: 8009 });
  const at = { app: 'shop', appDir: '/a', instance: 'i-1', ip: '10.0.0.7', port: 41000, workdir: '/w', ports, volumes: { data: '/v/api-0/data' } };
  const b = roleBuiltins(api, at);
  assert.equal(b.port, '41000');
  assert.equal(renderTemplate('http://${ip}:${ports.admin}/ ${ports.ajp} ${port} ${volumes.data}', b, {}), 'http://10.0.0.7:41001/ 8009 41000 /v/api-0/data');
  const env = importEnv(b, {});
  assert.equal(env.DROVER_PORT_ADMIN, '41001');
  assert.equal(env.DROVER_PORT_AJP, '8009');
  assert.equal(env.DROVER_VOLUME_DATA, '/v/api-0/data');
  // In commands, as quoted variables: run by bash, the values arrive as data.
  const r = renderCommand("printf '%s %s' ${ports.admin} \"${volumes.data}\"", b, {});
  assert.ok(!r.command.includes('41001'), r.command);
  const out = spawnSync('bash', ['-c', r.command], { env: { PATH: process.env.PATH, ...r.env }, encoding: 'utf8' });
  assert.equal(out.stdout, '41001 /v/api-0/data');
  // A fixed first port is ${port}.
  const jmx = parseAppFile(role('ports: { jmx: 9010, http: auto }')).roles.api!;
  assert.equal(roleBuiltins(jmx, { ...at, ports: resolvePorts(jmx, 41000, {})! }).port, '9010');
});

test('a role binding a fixed port has one member per host: more is refused unless spread one per host', () => {
  assert.deepEqual(refusal(role('ports: { http: auto, jmx: 9010 }', 'count: 2')), [
    'roles.api.count: a role binding a fixed port (ports.jmx: 9010) runs one member per host: count must be at most 1, or give placement: { spread: host, strict: true } (joined hosts), or use listen: for a stable port',
  ]);
  assert.match(refusal(role('ports: { jmx: 9010 }', 'min: 1', 'max: 3')).join('\n'), /^roles\.api\.max: .*max must be 1/);
  // count alone: scaling stops at 1.
  assert.equal(parseAppFile(role('ports: { jmx: 9010 }')).roles.api!.max, 1);
  assert.equal(parseAppFile(role('ports: { http: auto }')).roles.api!.max, 1000);
  const spread = parseAppFile(role('ports: { jmx: 9010 }', 'count: 3', 'placement: { spread: host, strict: true }')).roles.api!;
  assert.equal(spread.count, 3);
  assert.equal(spread.max, 1000);
});
