import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { BundleError, BundleStore, ignored, packFolder, parseIgnore, parseSize } from './bundle.js';

function folder(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'drover-bundle-'));
  for (const [p, text] of Object.entries(files)) {
    mkdirSync(join(dir, p, '..'), { recursive: true });
    writeFileSync(join(dir, p), text);
  }
  return dir;
}

/** The entry names of a packed tar, in order (ustar names, pax paths for long ones). */
function names(gz: Buffer): string[] {
  const tar = gunzipSync(gz);
  const out: string[] = [];
  let pax: string | undefined;
  for (let off = 0; off + 512 <= tar.length; ) {
    const h = tar.subarray(off, off + 512);
    if (h.every((b) => b === 0)) break;
    const size = parseInt(h.subarray(124, 136).toString('ascii').replace(/\0.*$/, ''), 8);
    const type = String.fromCharCode(h[156]!);
    const body = tar.subarray(off + 512, off + 512 + size);
    if (type === 'x') pax = /path=([^\n]*)\n/.exec(body.toString('utf8'))?.[1];
    else {
      out.push(pax ?? h.subarray(0, 100).toString('utf8').replace(/\0.*$/s, ''));
      pax = undefined;
    }
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return out;
}

test('packing is deterministic: the same files give the same bytes whatever their mtimes, owners and order of creation', async (t) => {
  const a = folder({ 'b.txt': 'bee', 'a/x.mjs': 'export {}', 'a/y.txt': 'y' });
  const b = folder({ 'a/y.txt': 'y', 'a/x.mjs': 'export {}', 'b.txt': 'bee' });
  t.after(() => [a, b].forEach((d) => rmSync(d, { recursive: true, force: true })));
  const old = new Date(2001, 1, 1);
  const { utimesSync } = await import('node:fs');
  utimesSync(join(b, 'b.txt'), old, old);
  chmodSync(join(b, 'a/y.txt'), 0o600); // not executable either way: 0644 in the bundle
  const pa = await packFolder(a);
  const pb = await packFolder(b);
  assert.equal(pa.sha256, pb.sha256);
  assert.deepEqual(pa.data, pb.data);
  assert.deepEqual(names(pa.data), ['a/', 'a/x.mjs', 'a/y.txt', 'b.txt']);
  assert.equal(pa.files, 3);
  writeFileSync(join(b, 'b.txt'), 'bee!');
  assert.notEqual((await packFolder(b)).sha256, pa.sha256, 'a changed file changes the name');
  chmodSync(join(a, 'a/x.mjs'), 0o755);
  assert.notEqual((await packFolder(a)).sha256, pa.sha256, 'the executable bit is kept');
});

test('.droverignore: names at any depth, globs, folders only with a trailing /, anchored paths, negation; .git and .drover always out', async (t) => {
  const rules = parseIgnore('# comment\n\n*.log\nbuild/\n/top.txt\ndocs/*.md\n!keep.log\n**/tmp/**\n');
  const is = (p: string, dir = false) => ignored(rules, p, dir);
  assert.ok(is('x.log') && is('deep/er/x.log'));
  assert.ok(!is('keep.log'), 'negation takes it back');
  assert.ok(is('build', true) && is('a/build', true) && !is('build'), 'build/ matches folders only');
  assert.ok(is('top.txt') && !is('sub/top.txt'), 'a leading / anchors');
  assert.ok(is('docs/a.md') && !is('docs/sub/a.md') && !is('x/docs/a.md'), 'a / in the middle anchors; * stays within a name');
  assert.ok(is('a/tmp/b/c'));
  const dir = folder({
    '.droverignore': 'node_modules/\n*.log\n', 'server.mjs': 'x', 'app.log': 'l', 'node_modules/p/i.js': 'x', '.git/HEAD': 'ref', '.drover/db': 'x', 'lib/a.mjs': 'a',
  });
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  assert.deepEqual(names((await packFolder(dir)).data), ['.droverignore', 'lib/', 'lib/a.mjs', 'server.mjs']);
  writeFileSync(join(dir, '.droverignore'), 'x\n'.repeat(1001));
  await assert.rejects(packFolder(dir), /\.droverignore: 2002 bytes in 1002 lines; at most 65536 bytes and 1000 lines/);
});

test('symlinks inside the folder are kept; one pointing out of it, or to an absolute path, refuses the pack naming it', async (t) => {
  const dir = folder({ 'lib/a.mjs': 'a' });
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  symlinkSync('lib/a.mjs', join(dir, 'main.mjs'));
  assert.deepEqual(names((await packFolder(dir)).data), ['lib/', 'lib/a.mjs', 'main.mjs']);
  symlinkSync('../../etc/passwd', join(dir, 'lib/evil'));
  await assert.rejects(packFolder(dir), (e: unknown) => e instanceof BundleError && e.kind === 'unsafe_link' && /lib\/evil: a symlink pointing out of the app folder/.test(e.message));
  rmSync(join(dir, 'lib/evil'));
  symlinkSync('/etc/passwd', join(dir, 'abs'));
  await assert.rejects(packFolder(dir), /abs: a symlink to an absolute path/);
});

test('a folder over the limit is refused with its size, the limit and the largest files', async (t) => {
  const dir = folder({ 'big.bin': 'x'.repeat(3000), 'mid.bin': 'x'.repeat(2000), 'small.txt': 'x' });
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  await assert.rejects(packFolder(dir, { maxBytes: 4096 }), (e: unknown) => {
    assert.ok(e instanceof BundleError && e.kind === 'too_large');
    assert.match(e.message, /holds 4\.9 KiB in 3 files, more than the bundle limit of 4\.0 KiB/);
    assert.match(e.message, /largest: big\.bin \(2\.9 KiB\), mid\.bin \(2\.0 KiB\), small\.txt \(1 bytes\)/);
    assert.match(e.message, /\.droverignore/);
    return true;
  });
  assert.ok((await packFolder(dir, { maxBytes: 8192 })).files === 3);
});

test('long and non-ASCII paths are packed whole (pax records)', async (t) => {
  const long = `${'d'.repeat(90)}/${'f'.repeat(90)}.txt`;
  const dir = folder({ [long]: 'x', 'é.txt': 'y' });
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  assert.deepEqual(names((await packFolder(dir)).data), [`${'d'.repeat(90)}/`, long, 'é.txt']);
});

test('the store packs once per generation, keeps bundles private, and excludes its own data folder', async (t) => {
  const app = folder({ 'server.mjs': 'x' });
  const data = join(app, 'state');
  mkdirSync(data);
  writeFileSync(join(data, 'secret'), 'key');
  t.after(() => rmSync(app, { recursive: true, force: true }));
  const store = new BundleStore({ dir: join(data, 'bundles'), exclude: [data] });
  const first = await store.forApp('shop', app, 1);
  assert.equal(await store.forApp('shop', app, 1), first, 'the same generation: the same bundle, not packed again');
  const f = store.file('shop', first.sha256)!;
  assert.equal(statSync(f.path).mode & 0o777, 0o600);
  assert.equal(statSync(join(data, 'bundles')).mode & 0o777, 0o700);
  assert.equal(store.file('other', first.sha256), undefined, 'a bundle belongs to its app');
  writeFileSync(join(app, 'server.mjs'), 'y');
  const second = await store.forApp('shop', app, 2);
  assert.notEqual(second.sha256, first.sha256);
  assert.equal(store.current('shop')?.sha256, second.sha256);
  const { readFileSync } = await import('node:fs');
  assert.ok(!gunzipSync(readFileSync(store.file('shop', second.sha256)!.path)).includes('key'), 'the data folder is not in the bundle');
  store.forget('shop');
  assert.equal(store.file('shop', second.sha256), undefined, 'a deleted app\'s bundles go with it');
  assert.equal(store.current('shop'), undefined);
});

test('DROVER_BUNDLE_LIMIT sizes: bytes or K/M/G (KiB, MiB, GiB), at most 4 GiB', () => {
  assert.equal(parseSize('1048576'), 1048576);
  assert.equal(parseSize('64MiB'), 64 * 1024 * 1024);
  assert.equal(parseSize('500K'), 500 * 1024);
  assert.equal(parseSize('1.5 g'), 1.5 * 1024 ** 3);
  for (const bad of ['', '0', '-1', '5T', '64 MB extra', '5G'.repeat(2), '4.1G']) assert.equal(parseSize(bad), undefined, bad);
});
