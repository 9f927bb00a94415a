import { test } from 'node:test';
import assert from 'node:assert/strict';
import { joinToken, parseDuration, parseLabels, renderByHost } from './fleet.js';
import { parseListen } from './main.js';

test('--listen takes HOST:PORT and [IPV6]:PORT, and refuses the rest', () => {
  assert.deepEqual(parseListen('0.0.0.0:7420'), { host: '0.0.0.0', port: 7420 });
  assert.deepEqual(parseListen('[::]:80'), { host: '::', port: 80 });
  for (const bad of ['7420', '0.0.0.0', '1.2.3.4:99999', 'a b:1', ':80']) assert.throws(() => parseListen(bad), /HOST:PORT/, bad);
});

test('labels, durations and the join token are checked, naming where the token came from', () => {
  assert.deepEqual(parseLabels('role=api, zone=eu-1'), { role: 'api', zone: 'eu-1' });
  assert.throws(() => parseLabels('role'), /key=value/);
  assert.throws(() => parseLabels('a=$(id)'), /key=value/);
  assert.equal(parseDuration('1h'), 3600);
  assert.equal(parseDuration('90'), 90);
  assert.throws(() => parseDuration('1y'), /duration/);
  const tok = `drj.0123456789abcdef.${'A'.repeat(43)}`;
  assert.equal(joinToken({}, { DROVER_JOIN_TOKEN: tok }), tok);
  assert.equal(joinToken({ token: tok }, {}), tok);
  assert.throws(() => joinToken({}, {}), /--token-file FILE, env DROVER_JOIN_TOKEN, or --token/);
  assert.throws(() => joinToken({}, { DROVER_JOIN_TOKEN: 'nope' }), /DROVER_JOIN_TOKEN: not a join token/);
  assert.throws(() => joinToken({ tokenFile: '/nonexistent/token' }, {}), /--token-file \/nonexistent\/token: ENOENT/);
  assert.throws(() => joinToken({ tokenFile: '/dev/null' }, { DROVER_JOIN_TOKEN: tok }), /--token-file \/dev\/null: the file is empty/);
});

test('status --by host puts every instance under its host', () => {
  const text = renderByHost([
    {
      name: 'shop',
      roles: [
        { name: 'api', instances: [
          { id: 'i-1', state: 'serving', address: '10.0.0.2:4000', startedAt: null, agent: { pid: 10, host: 'h2' } },
          { id: 'i-2', state: 'serving', address: '10.0.0.3:4000', startedAt: null, agent: { pid: 11, host: 'h3' } },
        ] },
        { name: 'lb', instances: [{ id: 'i-3', state: 'serving', address: '127.0.0.1:80', startedAt: null, agent: { pid: 12, host: 'h2' } }] },
      ],
    },
  ]);
  const lines = text.split('\n');
  assert.match(lines[1]!, /^h2 .* 2 instance\(s\)$/);
  assert.match(lines[2]!, /shop\/api\s+i-1/);
  assert.match(lines[3]!, /shop\/lb\s+i-3/);
  assert.match(lines[4]!, /^h3 /);
  assert.equal(renderByHost([]), 'no instances');
});
