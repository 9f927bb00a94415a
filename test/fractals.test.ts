// The fractals example run as plain processes, without drover: the contract drover and the
// demo rely on (env in, HTTP out), the worker's determinism, the queue's at-least-once
// delivery, and a burst of work surviving a worker killed with SIGKILL.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inflateSync } from 'node:zlib';
import { freePort, Procs, stopProc } from './fractal-procs.js';
import {
  PNG_SIGNATURE,
  chooseConstant,
  crc32,
  pngInfo,
  renderFractal,
  renderFractalAsync,
  type Region,
} from '../examples/fractals/fractal.mjs';

const dir = fileURLToPath(new URL('../examples/fractals/', import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Harness (the processes themselves: fractal-procs.ts)

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 10_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
    await sleep(everyMs);
  }
}

async function tempDir(t: TestContext, prefix: string): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), prefix));
  t.after(() => rm(d, { recursive: true, force: true }));
  return d;
}

interface ErrorBody {
  error: { code: string; message: string; field?: string | null; details?: { field: string }[] };
}

interface Fractal extends Region {
  uuid: string;
  status: string;
  duration: number | null;
  size: number | null;
  checksum: string | null;
  generated_by: string | null;
  created_at: string;
  updated_at: string;
}

interface Page {
  num_results: number;
  objects: Fractal[];
  page: number;
  total_pages: number;
}

interface Leased {
  lease: string;
  id: string;
  payload: unknown;
  deliveries: number;
}

interface Stats {
  backlog: number;
  ready: number;
  leased: number;
  acked: number;
  redelivered: number;
  enqueued: number;
}

/** An answer; `json` is what the program is expected to send, or its error body. */
interface Answer<T> {
  status: number;
  headers: Headers;
  body: Buffer;
  json: T & Partial<ErrorBody>;
}

async function http<T = unknown>(url: string, init: { method?: string; json?: unknown; body?: Buffer; type?: string } = {}): Promise<Answer<T>> {
  const headers: Record<string, string> = {};
  let body: string | Buffer | undefined;
  if (init.json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(init.json);
  } else if (init.body) {
    headers['content-type'] = init.type ?? 'application/octet-stream';
    body = init.body;
  }
  const res = await fetch(url, { method: init.method ?? 'GET', headers, body, signal: AbortSignal.timeout(10_000) });
  const buf = Buffer.from(await res.arrayBuffer());
  let json: unknown;
  try {
    json = JSON.parse(buf.toString('utf8'));
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, body: buf, json: json as T & Partial<ErrorBody> };
}

const post = <T = unknown>(url: string, json: unknown) => http<T>(url, { method: 'POST', json });

/** Runs the CLI; resolves with its exit code and output. */
function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(dir, 'fractals.mjs'), ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** The PNG's scanlines, inflated from its IDAT chunks. */
function pngScanlines(png: Buffer): Buffer {
  const parts: Buffer[] = [];
  for (let off = 8; off < png.length; ) {
    const len = png.readUInt32BE(off);
    if (png.toString('latin1', off + 4, off + 8) === 'IDAT') parts.push(png.subarray(off + 8, off + 8 + len));
    off += 12 + len;
  }
  return inflateSync(Buffer.concat(parts));
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

const SMALL = { width: 32, height: 24, iterations: 64, xa: -1.6, xb: 1.6, ya: -1.2, yb: 1.2 } satisfies Region;

// ---------------------------------------------------------------------------------------------

void test('fractal.mjs: a task always renders to the same image', async () => {
  const task = { uuid: '6f1ac6d2-7938-4590-8000-000000000001', ...SMALL };

  // Pinned: c and the pixels must not change between versions or platforms, or a redelivered
  // task would produce a different image than its first delivery.
  const c = chooseConstant(task.uuid);
  assert.deepEqual(c, { re: -0.567187, im: 0.634795, inside: false });
  const a = renderFractal(task);
  assert.equal(a.pixelsChecksum, '464ce55d6534ae0bd28269fefd296f473dedd9b75d66b0b461a72c3b4617b0b7');

  // The PNG's bytes depend on the zlib build, so they are compared within this process only.
  const b = renderFractal(task);
  const sliced = await renderFractalAsync(task, { sliceMs: 0 });
  assert.equal(b.checksum, a.checksum);
  assert.equal(sliced.checksum, a.checksum);
  assert.equal(a.checksum, sha256(a.png));
  assert.ok(a.png.equals(b.png));

  assert.ok(a.png.subarray(0, 8).equals(PNG_SIGNATURE));
  assert.deepEqual(pngInfo(a.png), { width: 32, height: 24 });
  const lines = pngScanlines(a.png);
  assert.equal(lines.length, 24 * (1 + 32 * 3));
  assert.equal(sha256(lines), a.pixelsChecksum);

  assert.notDeepEqual(chooseConstant(randomUUID()), c, 'another uuid, another constant');
  assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
  const corrupt = Buffer.from(a.png);
  corrupt.writeUInt8(corrupt.readUInt8(40) ^ 0xff, 40);
  assert.equal(pngInfo(corrupt), undefined);
  assert.equal(pngInfo(Buffer.from('not a png')), undefined);
});

void test('queue: unacked leases come back, acks are final, a restart keeps what was not acked', async (t) => {
  const procs = new Procs();
  t.after(() => procs.stopAll());
  const work = await tempDir(t, 'fractals-queue-');
  const port = await freePort();
  const env = { DROVER_WORKDIR: work, VISIBILITY_TIMEOUT: '1s' };
  let q = await procs.start('queue.mjs', 'q', env, port);

  assert.equal((await post(`${q.url}/tasks`, { id: 't1', payload: { n: 1 } })).status, 201);
  const again = await post(`${q.url}/tasks`, { id: 't1', payload: { n: 1 } });
  assert.deepEqual([again.status, again.json], [200, { id: 't1', created: false }], 'an enqueue retried with its id is not a second task');
  assert.equal((await post(`${q.url}/tasks`, { id: 't2', payload: { n: 2 } })).status, 201);
  const bad = await post(`${q.url}/tasks`, { payload: 1, priority: 3 });
  assert.equal(bad.status, 400);
  assert.equal(bad.json.error?.field, 'priority');

  const first = await post<Leased>(`${q.url}/lease`, { consumer: 'c1' });
  assert.equal(first.status, 200);
  assert.equal(first.json.id, 't1');
  assert.equal(first.json.deliveries, 1);
  const second = await post<Leased>(`${q.url}/lease`, { consumer: 'c2' });
  assert.equal(second.json.id, 't2');
  assert.equal((await post<Leased>(`${q.url}/lease`, { wait: 0.2 })).status, 204, 'nothing ready: a long poll ends empty');
  let stats = (await http<Stats>(`${q.url}/stats`)).json;
  assert.deepEqual([stats.backlog, stats.ready, stats.leased], [2, 0, 2]);

  // c1 never acks: after the visibility timeout, t1 is delivered again.
  assert.equal((await post(`${q.url}/extend/${second.json.lease}`, {})).status, 200);
  const redelivered = await post<Leased>(`${q.url}/lease`, { wait: 3, consumer: 'c3' });
  assert.equal(redelivered.json.id, 't1');
  assert.equal(redelivered.json.deliveries, 2);
  assert.equal((await post(`${q.url}/ack/${first.json.lease}`, {})).status, 410, 'an expired lease cannot be acked');
  assert.equal((await http(`${q.url}/ack/${redelivered.json.lease}`, { method: 'POST' })).status, 204);
  assert.equal((await http(`${q.url}/nack/${second.json.lease}`, { method: 'POST' })).status, 204);
  stats = (await http<Stats>(`${q.url}/stats`)).json;
  assert.deepEqual([stats.backlog, stats.ready, stats.leased, stats.acked, stats.redelivered], [1, 1, 0, 1, 1]);

  // Killed outright, restarted on the same folder: t2 (nacked, never acked) is still there.
  await stopProc(q, 'SIGKILL');
  q = await procs.start('queue.mjs', 'q2', env, port);
  stats = (await http<Stats>(`${q.url}/stats`)).json;
  assert.deepEqual([stats.backlog, stats.acked], [1, 1]);
  const after = await post<Leased>(`${q.url}/lease`, {});
  assert.equal(after.json.id, 't2');
  assert.deepEqual(after.json.payload, { n: 2 });
});

void test('api: the /v1/fractal contract, images, the page and the CLI', async (t) => {
  const procs = new Procs();
  t.after(() => procs.stopAll());
  const store = await procs.start('store.mjs', 'store-1', { DROVER_WORKDIR: await tempDir(t, 'fractals-store-') });
  const queue = await procs.start('queue.mjs', 'queue-1', { DROVER_WORKDIR: await tempDir(t, 'fractals-q-') });
  const api = await procs.start('api.mjs', 'api-1', { STORE_URL: store.url, QUEUE_URL: `${queue.url},http://127.0.0.1:${await freePort()}` });
  const v1 = `${api.url}/v1/fractal`;

  await t.test('create: 201 with a generated uuid, and a task on the queue', async () => {
    const res = await post<Fractal>(v1, SMALL);
    assert.equal(res.status, 201);
    assert.match(res.json.uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    assert.equal(res.json.status, 'pending');
    assert.equal(res.headers.get('location'), `/v1/fractal/${res.json.uuid}`);
    assert.equal(res.headers.get('x-fractals-api'), 'api-1');
    const stats = (await http<Stats>(`${queue.url}/stats`)).json;
    assert.equal(stats.backlog, 1);
    const task = await post<Leased>(`${queue.url}/lease`, {});
    assert.equal(task.json.id, res.json.uuid);
    assert.deepEqual(task.json.payload, { uuid: res.json.uuid, ...SMALL });
  });

  await t.test('create: a given uuid is kept; a second create with it is 409', async () => {
    const uuid = randomUUID();
    assert.equal((await post<Fractal>(v1, { uuid, ...SMALL })).json.uuid, uuid);
    const dup = await post<Fractal>(v1, { uuid, ...SMALL });
    assert.equal(dup.status, 409);
    assert.equal(dup.json.error?.code, 'already_exists');
  });

  await t.test('create: bad input is a 400 naming the field', async () => {
    const cases: [unknown, string, RegExp][] = [
      [{ ...SMALL, width: 0 }, 'width', /width: expected an integer from 1 to 4096/],
      [{ ...SMALL, height: '64' }, 'height', /height: expected an integer/],
      [{ ...SMALL, iterations: undefined }, 'iterations', /iterations: required/],
      [{ ...SMALL, xb: -2 }, 'xb', /xb: must be greater than xa/],
      [{ ...SMALL, yb: -1.2 }, 'yb', /yb: must be greater than ya/],
      [{ ...SMALL, uuid: 'abc' }, 'uuid', /uuid: expected a UUID/],
      [{ ...SMALL, colour: 'red' }, 'colour', /colour: unknown field/],
    ];
    for (const [body, field, message] of cases) {
      const res = await post<Fractal>(v1, body);
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(res.json.error?.field, field);
      assert.match(res.json.error?.message, message);
    }
    const many = await post<Fractal>(v1, { width: -1 });
    assert.deepEqual(
      many.json.error?.details?.map((d: { field: string }) => d.field),
      ['width', 'height', 'iterations', 'xa', 'xb', 'ya', 'yb'],
      'every problem at once',
    );
    const notJson = await http(v1, { method: 'POST', body: Buffer.from('{"width":'), type: 'application/json' });
    assert.equal(notJson.status, 400);
    assert.equal(notJson.json.error?.code, 'invalid_json');
  });

  await t.test('list: paged, with num_results, page and total_pages', async () => {
    for (let i = 0; i < 3; i++) assert.equal((await post<Fractal>(v1, SMALL)).status, 201);
    const p1 = await http<Page>(`${v1}?page=1&results_per_page=2`);
    assert.equal(p1.status, 200);
    assert.deepEqual([p1.json.num_results, p1.json.page, p1.json.total_pages, p1.json.objects.length], [5, 1, 3, 2]);
    const p3 = await http<Page>(`${v1}?page=3&results_per_page=2`);
    assert.equal(p3.json.objects.length, 1);
    const all = await http<Page>(v1);
    assert.equal(new Set(all.json.objects.map((o: { uuid: string }) => o.uuid)).size, 5);
    const bad = await http<Page>(`${v1}?results_per_page=0`);
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error?.field, 'results_per_page');
  });

  await t.test('show, result, image, delete, 404', async () => {
    const created = (await post<Fractal>(v1, SMALL)).json;
    const url = `${v1}/${created.uuid}`;
    const shown = await http<Fractal>(url);
    assert.equal(shown.status, 200);
    assert.deepEqual(shown.json, created);

    const notYet = await http(`${api.url}/fractal/${created.uuid}`);
    assert.deepEqual([notYet.status, notYet.json.error?.code], [404, 'not_ready']);
    const r = renderFractal({ uuid: created.uuid, ...SMALL });
    const early = await http(url, { method: 'PUT', json: { status: 'done', checksum: r.checksum } });
    assert.deepEqual([early.status, early.json.error?.code], [409, 'image_missing'], 'done is refused before the image is stored');

    const wrong = renderFractal({ uuid: created.uuid, ...SMALL, width: 16 });
    assert.equal((await http(`${api.url}/fractal/${created.uuid}`, { method: 'PUT', body: wrong.png, type: 'image/png' })).status, 400);
    assert.equal((await http(`${api.url}/fractal/${created.uuid}`, { method: 'PUT', body: Buffer.from('GIF89a'), type: 'image/png' })).status, 400);
    const up = await http<{ uuid: string; size: number; checksum: string }>(`${api.url}/fractal/${created.uuid}`, { method: 'PUT', body: r.png, type: 'image/png' });
    assert.equal(up.status, 200);
    assert.deepEqual(up.json, { uuid: created.uuid, size: r.png.length, checksum: r.checksum });

    const result = { status: 'done', duration: 0.01, size: r.png.length, checksum: r.checksum, generated_by: 'test' };
    const put = await http<Fractal>(url, { method: 'PUT', json: result });
    assert.equal(put.status, 200);
    assert.deepEqual({ ...put.json, created_at: undefined, updated_at: undefined }, { ...created, ...result, created_at: undefined, updated_at: undefined });
    const badPut = await http(url, { method: 'PUT', json: { status: 'finished', width: 3 } });
    assert.equal(badPut.status, 400);
    assert.equal(badPut.json.error?.field, 'width');

    const img = await http(`${api.url}/fractal/${created.uuid}`);
    assert.equal(img.status, 200);
    assert.equal(img.headers.get('content-type'), 'image/png');
    assert.ok(img.body.subarray(0, 8).equals(PNG_SIGNATURE));
    assert.equal(sha256(img.body), r.checksum);

    const page = await http(`${api.url}/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);
    assert.match(page.body.toString(), new RegExp(`<img src="/fractal/${created.uuid}"`));
    assert.match(page.body.toString(), /http-equiv="refresh"/);

    assert.equal((await http(url, { method: 'DELETE' })).status, 204);
    const gone = await http(url);
    assert.deepEqual([gone.status, gone.json.error?.code], [404, 'not_found']);
    assert.equal((await http(`${api.url}/fractal/${created.uuid}`)).status, 404);
    assert.equal((await http(url, { method: 'DELETE' })).status, 404);
    assert.equal((await http(url, { method: 'PUT', json: { status: 'failed' } })).status, 404);
    assert.equal((await http(`${api.url}/healthz`)).status, 200);
  });

  await t.test('CLI: create, list, show, delete; exit codes 0, 1, 2', async () => {
    const env = { FRACTALS_URL: api.url };
    const created = await cli(['create', '--tasks', '2', '--width', '40:60', '--height', '30', '--iterations', '50'], env);
    assert.equal(created.code, 0, created.stderr);
    const uuids = created.stdout.trim().split('\n').map((l) => l.split(/\s+/)[0] ?? '');
    assert.equal(uuids.length, 2);
    const list = await cli(['list'], env);
    assert.equal(list.code, 0, list.stderr);
    for (const u of uuids) assert.match(list.stdout, new RegExp(u));
    const show = await cli(['--endpoint-url', api.url, 'show', uuids[0] ?? '', '--json']);
    assert.equal(show.code, 0, show.stderr);
    assert.equal((JSON.parse(show.stdout) as { height: number }).height, 30);
    assert.equal((await cli(['delete', uuids[0] ?? ''], env)).code, 0);
    const missing = await cli(['show', uuids[0] ?? ''], env);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no fractal/);
    const usage = await cli(['create', '--width', '0'], env);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /--width/);
    assert.equal((await cli(['create', '--xa', '2', '--xb', '1'], env)).code, 2);
    assert.equal((await cli(['show', 'not-a-uuid'], env)).code, 2);
    const down = await cli(['list'], { FRACTALS_URL: `http://127.0.0.1:${await freePort()}` });
    assert.equal(down.code, 1);
    assert.match(down.stderr, /cannot reach the fractal api/);
  });
});

/**
 * A task that takes a worker a steady fraction of a second: a uuid whose Julia constant keeps
 * 0 bounded, over a tiny region around 0, so every pixel runs every iteration. The kill below
 * must land while the render runs, whatever constant the uuid picks.
 */
function heavyTask(): Region & { uuid: string } {
  for (;;) {
    const uuid = randomUUID();
    const c = chooseConstant(uuid);
    let x = 0;
    let y = 0;
    let bounded = true;
    for (let n = 0; n < 25_000 && bounded; n++) {
      [x, y] = [x * x - y * y + c.re, 2 * x * y + c.im];
      bounded = x * x + y * y <= 4;
    }
    if (bounded) return { uuid, width: 64, height: 64, iterations: 10_000, xa: -1e-4, xb: 1e-4, ya: -1e-4, yb: 1e-4 };
  }
}

interface Lease {
  lease: string;
  id: string;
  consumer: string;
  held_ms: number;
}

void test('end to end: 12 tasks over 2 workers, one killed mid-task, each task done exactly once', async (t) => {
  const procs = new Procs();
  t.after(() => procs.stopAll());
  const store = await procs.start('store.mjs', 'store-1', { DROVER_WORKDIR: await tempDir(t, 'fractals-store-') });
  const queue = await procs.start('queue.mjs', 'queue-1', { DROVER_WORKDIR: await tempDir(t, 'fractals-q-'), VISIBILITY_TIMEOUT: '2s' });
  const api = await procs.start('api.mjs', 'api-1', { STORE_URL: store.url, QUEUE_URL: queue.url });
  const workerEnv = { QUEUE_URL: queue.url, API_URL: api.url, LEASE_WAIT: '5s' };
  const [wa, wb] = await Promise.all([procs.start('worker.mjs', 'w-a', workerEnv), procs.start('worker.mjs', 'w-b', workerEnv)]);
  const v1 = `${api.url}/v1/fractal`;
  const records = async () => (await http<Page>(`${v1}?results_per_page=100`)).json.objects;
  const leases = async () => (await http<Lease[]>(`${queue.url}/leases`)).json;
  const stats = async () => (await http<Stats>(`${queue.url}/stats`)).json;

  try {
    const tasks = Array.from({ length: 12 }, heavyTask);
    const created = await Promise.all(tasks.map((task) => post<Fractal>(v1, task)));
    assert.deepEqual(
      created.map((r) => r.status),
      Array<number>(12).fill(201),
    );

    // Once w-b has finished a task, kill it right after it leases the next one.
    const victim = await until(
      'w-b to finish one task and lease another',
      async () => {
        const doneByB = (await records()).some((r) => r.status === 'done' && r.generated_by === 'w-b');
        const held = (await leases()).find((l) => l.consumer === 'w-b' && l.held_ms < 150);
        return doneByB && held ? held : undefined;
      },
      30_000,
      20,
    );
    await stopProc(wb, 'SIGKILL');
    assert.ok(
      (await leases()).some((l) => l.lease === victim.lease),
      'the killed worker still held its lease (the kill landed mid-task)',
    );

    const all = await until(
      'every task to be done',
      async () => {
        const list = await records();
        return list.length === 12 && list.every((r) => r.status === 'done') ? list : undefined;
      },
      45_000,
      200,
    );
    const s = await stats();
    assert.ok(s.redelivered >= 1, `the killed worker's task was delivered again: ${JSON.stringify(s)}`);
    assert.deepEqual([s.backlog, s.acked, s.enqueued], [0, 12, 12], 'each task acked exactly once');

    assert.deepEqual(new Set(all.map((r) => r.uuid)), new Set(tasks.map((task) => task.uuid)));
    assert.deepEqual(new Set(all.map((r) => r.generated_by)), new Set(['w-a', 'w-b']), 'the work spread over both workers');
    const redone = all.find((r) => r.uuid === victim.id);
    assert.equal(redone?.generated_by, 'w-a', "the killed worker's task was finished by the other");
    for (const r of all) {
      const img = await http(`${api.url}/fractal/${r.uuid}`);
      assert.equal(img.headers.get('content-type'), 'image/png');
      assert.equal(sha256(img.body), r.checksum);
      assert.equal(img.body.length, r.size);
    }
    const again = renderFractal(tasks.find((task) => task.uuid === victim.id) ?? tasks[0]!);
    assert.equal(again.checksum, redone?.checksum, 'the redelivered task gave the image its first delivery would have');

    // SIGTERM mid-task: the worker finishes and stores the task, acks it, then exits 0.
    const last = heavyTask();
    assert.equal((await post<Fractal>(v1, last)).status, 201);
    await until('w-a to lease the last task', async () => ((await leases()).some((l) => l.id === last.uuid && l.consumer === 'w-a') ? true : undefined));
    assert.equal(await stopProc(wa), 0);
    const rec = (await http<Fractal>(`${v1}/${last.uuid}`)).json;
    assert.deepEqual([rec.status, rec.generated_by], ['done', 'w-a']);
    const after = await stats();
    assert.deepEqual([after.backlog, after.acked, after.redelivered], [0, 13, s.redelivered], 'drained, not redelivered');
  } catch (err) {
    // The programs' output says why far better than a bare assertion.
    t.diagnostic(procs.dump());
    throw err;
  }
});
