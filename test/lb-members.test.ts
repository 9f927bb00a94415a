/** What a balancer role imports becomes its members; bad input is named by field. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compileLbOptions, hostOnly, LbInputError, membersFromImports, parseAddress } from '../src/adapters/lb/index.js';

test('membersFromImports reads URLs and host:port, and names what it skips', () => {
  const { members, skipped } = membersFromImports(
    [
      { instance: 'i-1', exports: { endpoint: 'http://10.0.0.7:8080' } },
      { instance: 'i-2', exports: { endpoint: '10.0.0.8:9000' } },
      { instance: 'i-3', exports: { endpoint: 'http://[::1]:81/api' } },
      { instance: 'i-4', exports: { endpoint: 'http://10.0.0.9' } },
      { instance: 'i-5', exports: { endpoint: 'http://api.internal:8080' } },
      { instance: 'i-6', exports: { url: 'http://10.0.0.10:1' } },
    ],
    'endpoint',
  );
  assert.deepEqual(members, [
    { id: 'i-1', address: '10.0.0.7:8080', state: 'ready' },
    { id: 'i-2', address: '10.0.0.8:9000', state: 'ready' },
    { id: 'i-3', address: '[::1]:81', state: 'ready' },
    { id: 'i-4', address: '10.0.0.9:80', state: 'ready' },
  ]);
  assert.deepEqual(
    skipped.map((s) => s.instance),
    ['i-5', 'i-6'],
  );
  assert.match(skipped[0]!.reason, /not an IP address and port/);
  assert.match(skipped[1]!.reason, /exports no "endpoint"/);
});

test('addresses are IP:port only', () => {
  assert.deepEqual(parseAddress('127.0.0.1:80'), { host: '127.0.0.1', port: 80, family: 4 });
  assert.deepEqual(parseAddress('[::1]:443'), { host: '::1', port: 443, family: 6 });
  for (const bad of ['localhost:80', '127.0.0.1', '127.0.0.1:0', '127.0.0.1:65536', '::1:80', '[127.0.0.1]:80', '300.1.1.1:80']) {
    assert.equal(parseAddress(bad), undefined, bad);
  }
});

test('the Host header is matched without port and case', () => {
  assert.equal(hostOnly('Shop.Example:8080'), 'shop.example');
  assert.equal(hostOnly('[::1]:8080'), '[::1]');
  assert.equal(hostOnly(undefined), undefined);
});

test('options get their defaults, and bad ones are named', () => {
  const c = compileLbOptions({ listen: { host: '127.0.0.1', port: 0 } });
  assert.equal(c.balance, 'roundrobin');
  assert.equal(c.ejectAfterFailures, 3);
  assert.equal(c.ejectForMs, 10_000);
  assert.equal(c.healthCheck, undefined);
  assert.deepEqual(compileLbOptions({ listen: { host: '127.0.0.1', port: 0 }, healthCheck: {} }).healthCheck, {
    path: undefined,
    intervalMs: 2000,
    timeoutMs: 1000,
    failureThreshold: 3,
  });
  const field = (fn: () => unknown) => {
    try {
      fn();
    } catch (e) {
      if (e instanceof LbInputError) return e.field;
      throw e;
    }
    return 'accepted';
  };
  assert.equal(field(() => compileLbOptions({ listen: { host: 'localhost', port: 80 } })), 'listen.host');
  assert.equal(field(() => compileLbOptions({ listen: { host: '127.0.0.1', port: 70000 } })), 'listen.port');
  assert.equal(field(() => compileLbOptions({ listen: { host: '127.0.0.1', port: 0 }, ejectAfterFailures: 0 })), 'ejectAfterFailures');
  assert.equal(field(() => compileLbOptions({ listen: { host: '127.0.0.1', port: 0 }, healthCheck: { path: 'health' } })), 'healthCheck.path');
});
