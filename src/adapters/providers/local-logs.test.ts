import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pruneLogs } from './local.js';

test('the logs of destroyed instances: the newest N kept, older ones removed; 0 keeps every one', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-logs-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  ['i-1', 'i-2', 'i-3', 'i-4', 'i-5'].forEach((id, k) => {
    mkdirSync(join(dir, id));
    utimesSync(join(dir, id), 1000 + k, 1000 + k);
  });
  pruneLogs(dir, 0);
  assert.equal(readdirSync(dir).length, 5);
  pruneLogs(dir, 2);
  assert.deepEqual(readdirSync(dir).sort(), ['i-4', 'i-5']);
  pruneLogs(join(dir, 'none'), 2); // no folder: nothing to do
});
