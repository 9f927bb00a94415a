import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAppFile, roleHash, type AgentStatus } from '../core/index.js';
import type { InstanceRecord } from '../adapters/store/index.js';
import { checkReport } from './reports.js';

const spec = parseAppFile(`
app: shop
roles:
  api:
    ports: { http: auto, admin: auto, jmx: 9010 }
    start: run
    exports: { admin: "http://\${ip}:\${ports.admin}", first: "\${port}" }
`);
const app = { name: 'shop', appDir: '/srv/shop', spec };
const inst = (over: Partial<InstanceRecord> = {}): InstanceRecord => ({
  id: 'i-1', app: 'shop', role: 'api', pool: null, state: 'starting', goal: 'run', epoch: 1, joinToken: 't', ip: '10.0.0.7', port: 41000, workdir: '/w',
  providerRef: null, roleHash: roleHash(spec.roles.api!), exports: null, importsSent: null, importsApplied: null, assignOrderId: 'o-1', stopOrderId: null,
  drainOrderId: null, restarts: 0, message: null, lastExit: null, createdAt: 1, startedAt: null, stateSince: 1, stopRequestedAt: null, drainRequestedAt: null,
  destroyedAt: null, version: 0, ...over,
});
const status = (over: Partial<AgentStatus>): AgentStatus => ({ state: 'starting', role: 'api', restarts: 0, ...over });
const check = (i: InstanceRecord, s: AgentStatus) => checkReport(i, s, () => Promise.resolve(app), () => Promise.resolve({}));

test('an agent\'s ports are checked against its role, stored once, and used to check its exports', async () => {
  const ports = { http: 41000, admin: 41001, jmx: 9010 };
  assert.deepEqual(await check(inst(), status({ ports })), { kind: 'ok', exports: null, ports });
  // Serving: exports rendered with the stored ports, in whatever order the store gives them back.
  const stored = inst({ ports: { jmx: 9010, admin: 41001, http: 41000 } });
  const exports = { admin: 'http://10.0.0.7:41001', first: '41000' };
  assert.deepEqual(await check(stored, status({ state: 'serving', ports, exports, importsVersion: 'v' })), { kind: 'ok', exports });
  assert.equal((await check(stored, status({ state: 'serving', ports, exports: { ...exports, admin: 'http://10.0.0.7:1' } }))).kind, 'impossible');
});

test('ports a role cannot give are impossible: a moved fixed port, a first auto port not the instance\'s, a change, a stranger', async () => {
  const impossible = async (i: InstanceRecord, ports: Record<string, number>, why: RegExp) => {
    const v = await check(i, status({ ports }));
    assert.equal(v.kind, 'impossible');
    assert.match(v.kind === 'impossible' ? v.reason : '', why);
  };
  await impossible(inst(), { http: 41000, admin: 41001, jmx: 9011 }, /cannot give/);
  await impossible(inst(), { http: 40000, admin: 41001, jmx: 9010 }, /cannot give/);
  await impossible(inst(), { http: 41000, jmx: 9010 }, /cannot give/);
  await impossible(inst(), { http: 41000, admin: 41001, jmx: 9010, ssh: 22 }, /cannot give/);
  await impossible(inst({ ports: { http: 41000, admin: 41001, jmx: 9010 } }), { http: 41000, admin: 41002, jmx: 9010 }, /but earlier/);
  await impossible(inst({ role: null }), { http: 41000 }, /without a role/);
});

test('an export with ${appDir} may be the folder as applied or the bundle unpacked in the instance folder, nothing else', async () => {
  const withDir = parseAppFile('app: shop\nroles:\n  api:\n    start: run\n    exports: { docs: "file://${appDir}/docs" }\n');
  const a = { name: 'shop', appDir: '/srv/shop', spec: withDir };
  const i = inst({ roleHash: roleHash(withDir.roles.api!), state: 'serving' });
  const run = (docs: string) => checkReport(i, status({ state: 'serving', exports: { docs } }), () => Promise.resolve(a), () => Promise.resolve({}));
  assert.deepEqual(await run('file:///srv/shop/docs'), { kind: 'ok', exports: { docs: 'file:///srv/shop/docs' } });
  assert.deepEqual(await run('file:///w/app/docs'), { kind: 'ok', exports: { docs: 'file:///w/app/docs' } });
  const forged = await run('file:///etc/docs');
  assert.equal(forged.kind, 'impossible');
  assert.match(forged.kind === 'impossible' ? forged.reason : '', /reported export docs = "file:\/\/\/etc\/docs", but its role renders "file:\/\/\/srv\/shop\/docs"/);
});
