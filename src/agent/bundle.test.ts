import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { BundleFetchError, entryProblem, unpackBundle } from './bundle.js';

/** A raw ustar entry, for bundles our packer would never make. */
function entry(name: string, type: string, body = '', linkname = ''): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100);
  h.write('0000644\0', 100);
  h.write('0000000\0', 108);
  h.write('0000000\0', 116);
  h.write(`${body.length.toString(8).padStart(11, '0')}\0`, 124);
  h.write('00000000000\0', 136);
  h.write('        ', 148);
  h.write(type, 156);
  h.write(linkname, 157);
  h.write('ustar\0', 257);
  h.write('00', 263);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  const data = Buffer.from(body);
  return Buffer.concat([h, data, Buffer.alloc((512 - (data.length % 512)) % 512)]);
}
const tgz = (...entries: Buffer[]) => gzipSync(Buffer.concat([...entries, Buffer.alloc(1024)]));

const tmp = () => mkdtempSync(join(tmpdir(), 'drover-agent-bundle-'));

test('entries that could escape the folder or are not plain are named', () => {
  assert.equal(entryProblem({ type: 'File', path: 'a/b.txt' }), undefined);
  assert.equal(entryProblem({ type: 'SymbolicLink', path: 'a/l', linkpath: '../b.txt' }), undefined);
  assert.match(entryProblem({ type: 'File', path: '../x' })!, /"\.\." in it/);
  assert.match(entryProblem({ type: 'File', path: 'a/../../x' })!, /"\.\." in it/);
  assert.match(entryProblem({ type: 'File', path: '/etc/x' })!, /absolute path/);
  assert.match(entryProblem({ type: 'SymbolicLink', path: 'l', linkpath: '/etc/passwd' })!, /symlink to an absolute path/);
  assert.match(entryProblem({ type: 'SymbolicLink', path: 'a/l', linkpath: '../../etc' })!, /pointing out of the bundle/);
  assert.match(entryProblem({ type: 'Link', path: 'h', linkpath: 'x' })!, /a Link entry/);
  assert.match(entryProblem({ type: 'CharacterDevice', path: 'null' })!, /a CharacterDevice entry/);
  assert.match(entryProblem({ type: 'FIFO', path: 'p' })!, /a FIFO entry/);
});

test('an unsafe bundle is refused whole: nothing is unpacked, not even its safe entries', async (t) => {
  const dir = tmp();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const cases: [string, Buffer][] = [
    ['dot-dot', tgz(entry('ok.txt', '0', 'fine'), entry('../escaped.txt', '0', 'bad'))],
    ['absolute', tgz(entry('ok.txt', '0', 'fine'), entry('/tmp/abs-escape.txt', '0', 'bad'))],
    ['symlink out', tgz(entry('ok.txt', '0', 'fine'), entry('sub/link', '2', '', '../../..'))],
    ['hard link', tgz(entry('ok.txt', '0', 'fine'), entry('hard', '1', '', '/etc/passwd'))],
    ['device', tgz(entry('ok.txt', '0', 'fine'), entry('dev', '3'))],
  ];
  for (const [what, data] of cases) {
    const file = join(dir, `${what}.tgz`);
    writeFileSync(file, data);
    const target = join(dir, `out-${what}`, 'app');
    await assert.rejects(unpackBundle(file, target, 1e6), (e: unknown) => e instanceof BundleFetchError && /refused, nothing was unpacked/.test(e.message), what);
    assert.ok(!existsSync(join(target, 'ok.txt')), `${what}: nothing unpacked`);
  }
  assert.ok(!existsSync(join(dir, 'escaped.txt')) && !existsSync('/tmp/abs-escape.txt'));
  const big = join(dir, 'big.tgz');
  writeFileSync(big, tgz(entry('a.txt', '0', 'x'.repeat(100))));
  await assert.rejects(unpackBundle(big, join(dir, 'big'), 50), /hold 100 bytes, more than the 50/);
  const garbage = join(dir, 'garbage.tgz');
  writeFileSync(garbage, 'not a tarball');
  await assert.rejects(unpackBundle(garbage, join(dir, 'garbage'), 50), /not a readable tar\.gz/);
});

