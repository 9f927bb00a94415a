import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { LineTail, MAX_LINE_CHARS } from './output.js';

test('a line of megabytes, even one that never ends, is cut with a marker and memory stays bounded', async () => {
  const seen: string[] = [];
  const tail = new LineTail(5, { write: (l) => seen.push(l) });
  const s = new PassThrough();
  tail.follow(s);
  s.write('before\n');
  for (let k = 0; k < 300; k++) s.write('x'.repeat(10_000)); // 3 MB without a newline
  s.write('still the same line\nafter\n');
  s.end();
  await new Promise((r) => setImmediate(r));
  const lines = tail.lines();
  assert.deepEqual(lines.map((l) => l.slice(0, 6)), ['before', 'xxxxxx', 'after']);
  assert.ok(lines[1]!.length < MAX_LINE_CHARS + 100);
  assert.match(lines[1]!, /line cut at/);
  assert.ok(seen.every((l) => l.length < MAX_LINE_CHARS + 100), 'the role log gets cut lines too');
});
