import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { SpecError } from '../core/index.js';
import { AppFileParser, WARM_UP_FILE } from './app-file-parser.js';

const parser = new AppFileParser();
after(() => parser.close());

const SMALL = 'app: x\nroles:\n  a: { start: node a.mjs }\n';
/** Near the size limit and valid YAML, so the worker lexes all of it: tens of milliseconds at least. */
const BIG = `app: x\nroles:\n  a:\n    start: x\n${Array.from({ length: 14_000 }, (_, i) => `# comment ${i} ${'.'.repeat(4)}\n    env: { A${i % 10}: b }\n`).join('').slice(0, 250_000)}`;

test('a file is parsed in the worker into the same spec as in-process', async () => {
  const spec = await parser.parseYaml(SMALL);
  assert.equal(spec.roles.a?.start, 'node a.mjs');
  assert.equal(typeof parser.threadId, 'number');
  const fromJson = await parser.compile({ app: 'x', roles: { a: { start: 'node a.mjs' } } });
  assert.deepEqual(fromJson, spec);
});

test('the warm-up file is a valid app file, so warming runs the whole parse and compile, errors aside', async () => {
  const spec = await parser.parseYaml(WARM_UP_FILE);
  assert.deepEqual(Object.keys(spec.roles).sort(), ['api', 'db', 'front']);
});

test('a bad file is a SpecError with every issue, as from parseAppFile', async () => {
  await assert.rejects(parser.parseYaml('app: x\nroles:\n  a: { strat: x, count: -1 }\n'), (e: unknown) => {
    assert.ok(e instanceof SpecError);
    assert.deepEqual(e.issues, [
      { path: 'roles.a.count', message: 'expected an integer >= 0' },
      { path: 'roles.a', message: 'unknown key "strat"' },
    ]);
    return true;
  });
});

test('too large a file, or too deep a JSON value, is refused before it reaches the worker', async () => {
  await assert.rejects(parser.parseYaml('#'.repeat(300_000)), /the app file is 300000 bytes; at most 262144/);
  const deep: unknown[] = [];
  let at = deep;
  for (let i = 0; i < 200_000; i++) at = (at[0] = []);
  await assert.rejects(parser.compile({ app: 'x', roles: deep }), /nested more than 32 levels deep/);
});

test('past the time limit the worker is terminated, the file refused, and the next file gets a new worker', async () => {
  await parser.parseYaml(SMALL);
  const before = parser.threadId;
  await assert.rejects(parser.parseYaml(BIG, { timeLimitMs: 1 }), (e: unknown) => {
    assert.ok(e instanceof SpecError);
    assert.deepEqual(e.issues, [{ path: '', message: 'the app file took longer than 1 ms to check; it is too large or too complex' }]);
    return true;
  });
  assert.equal(parser.threadId, undefined, 'the worker is gone');
  assert.equal((await parser.parseYaml(SMALL)).app, 'x');
  assert.notEqual(parser.threadId, before);
});

test('jobs run one at a time and each gets its answer', async () => {
  const texts = Array.from({ length: 8 }, (_, i) => `app: a${i}\nroles:\n  r: { start: x }\n`);
  const specs = await Promise.all(texts.map((t) => parser.parseYaml(t)));
  assert.deepEqual(specs.map((s) => s.app), texts.map((_, i) => `a${i}`));
});

test('the event loop stays free while a large file is parsed', async () => {
  await parser.parseYaml(SMALL); // warm
  const h = monitorEventLoopDelay({ resolution: 10 });
  h.enable();
  for (let i = 0; i < 3; i++) await parser.parseYaml(BIG).catch(() => undefined);
  h.disable();
  assert.ok(h.max / 1e6 < 200, `event loop blocked for ${Math.round(h.max / 1e6)} ms`);
});

void test('a parser closed while its worker starts leaves no timer behind to hold the process', async () => {
  const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const before = timers();
  const p = new AppFileParser({ startLimitMs: 20_000 });
  p.warm();
  await p.close();
  for (let i = 0; i < 100 && timers() > before; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(timers(), before, 'the start limit timer is cleared');
});
