/**
 * App bundles on this machine (no namespaces needed): with bundles on for local instances
 * (`DROVER_BUNDLE_LOCAL=1`, here the server option), a role's `${appDir}` is the bundle unpacked
 * in its instance folder, and an apply after the folder changed rolls the role to the new bundle
 * (the same folder again changes nothing); an app folder that cannot be packed refuses the apply whole —
 * `422 bundle_refused` naming the size, the limit and the largest files, or the symlink that
 * leads out — and nothing is stored.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startServer } from '../src/controller/index.js';
import { killAll, processesWithEnv, until } from './helpers.js';

interface Inst { id: string; role: string | null; state: string; workdir: string; message: string | null }

test('local instances on the bundle: ${appDir} is the unpacked copy; a folder over the limit or with a link out refuses the apply', { timeout: 60_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-bundles-local-'));
  const app = join(dir, 'app');
  mkdirSync(app);
  writeFileSync(join(app, 'message.txt'), 'from the bundle\n');
  const server = await startServer({ dataDir: join(dir, '.drover'), port: 0, logger: pino({ level: 'silent' }), heartbeatMs: 500, bundleLocal: true, bundleLimitBytes: 64 * 1024 });
  t.after(async () => {
    await server.close();
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
  });
  const put = (name: string, appDir: string) =>
    fetch(`${server.url}/v1/apps/${name}`, {
      method: 'PUT', headers: { authorization: `Bearer ${server.token}`, 'content-type': 'application/json' },
      // The role copies the file it finds in ${appDir} into its own folder, and says where ${appDir} was.
      body: JSON.stringify({ yaml: `app: ${name}\nroles:\n  web:\n    count: 1\n    drainTimeout: 1s\n    stopTimeout: 1s\n    start: cp "$DROVER_APP_DIR/message.txt" "$DROVER_WORKDIR/seen.txt" && echo "$DROVER_APP_DIR" > "$DROVER_WORKDIR/appdir.txt" && exec sleep 600\n`, appDir }),
    });
  const res = await put('shop', app);
  assert.equal(res.status, 201, await res.clone().text());
  const body = (await res.json()) as { bundle: { sha256: string; files: number } | null };
  assert.equal(body.bundle?.files, 1);
  const inst = await until('web serving', async () => {
    const r = await fetch(`${server.url}/v1/instances?app=shop`, { headers: { authorization: `Bearer ${server.token}` } });
    return ((await r.json()) as { instances: Inst[] }).instances.find((i) => i.state === 'serving');
  }, 30_000);
  const seenDir = await until('the role wrote what it saw', async () => readFileSync(join(inst.workdir, 'appdir.txt'), 'utf8').trim(), 10_000);
  assert.equal(seenDir, join(inst.workdir, 'app'), '${appDir} is the unpacked bundle in the instance folder');
  assert.equal(readFileSync(join(inst.workdir, 'seen.txt'), 'utf8'), 'from the bundle\n');

  // The same file and folder: nothing changes. The folder changed: a new bundle, and the role rolls to it.
  const same = (await (await put('shop', app)).json()) as { changed: boolean; bundle: { sha256: string } };
  assert.equal(same.changed, false);
  assert.equal(same.bundle.sha256, body.bundle?.sha256);
  writeFileSync(join(app, 'message.txt'), 'changed folder\n');
  const rolled = (await (await put('shop', app)).json()) as { changed: boolean; bundle: { sha256: string } };
  assert.equal(rolled.changed, true, 'a changed folder is a change');
  assert.notEqual(rolled.bundle.sha256, body.bundle?.sha256);
  const next = await until('the role rolled to the new bundle', async () => {
    const r = await fetch(`${server.url}/v1/instances?app=shop`, { headers: { authorization: `Bearer ${server.token}` } });
    const all = ((await r.json()) as { instances: Inst[] }).instances;
    const fresh = all.find((i) => i.state === 'serving' && i.id !== inst.id);
    return fresh && !all.some((i) => i.id === inst.id) ? fresh : undefined;
  }, 40_000);
  assert.equal(await until('the new member wrote what it saw', async () => readFileSync(join(next.workdir, 'seen.txt'), 'utf8'), 10_000), 'changed folder\n');

  // Over the limit (64 KiB here): refused whole, with the sizes and the largest files.
  const big = join(dir, 'big');
  mkdirSync(big);
  writeFileSync(join(big, 'huge.bin'), Buffer.alloc(100 * 1024));
  writeFileSync(join(big, 'small.txt'), 'x');
  const refused = await put('big', big);
  assert.equal(refused.status, 422);
  const err = ((await refused.json()) as { error: { code: string; message: string; details: { path: string }[] } }).error;
  assert.equal(err.code, 'bundle_refused');
  assert.match(err.message, /^appDir: the app folder .*big holds 100\.0 KiB in 2 files, more than the bundle limit of 64\.0 KiB; largest: huge\.bin \(100\.0 KiB\), small\.txt \(1 bytes\)/);
  assert.equal(err.details[0]?.path, 'appDir');
  const missing = await fetch(`${server.url}/v1/apps/big`, { headers: { authorization: `Bearer ${server.token}` } });
  assert.equal(missing.status, 404, 'nothing was stored');

  // A symlink out of the folder: refused, naming it.
  const linky = join(dir, 'linky');
  mkdirSync(linky);
  symlinkSync('../.drover/token', join(linky, 'token'));
  const out = await put('linky', linky);
  assert.equal(out.status, 422);
  assert.match(((await out.json()) as { error: { message: string } }).error.message, /token: a symlink pointing out of the app folder \(\.\.\/\.drover\/token\)/);
});
