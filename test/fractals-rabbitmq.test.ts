// The fractals example on RabbitMQ: a real broker, started exactly as the `queue` role of
// examples/fractals/drover-rabbitmq.yaml starts it (its env, deploy and start, rendered as
// drover renders them), then store + api + 2 workers as plain processes with an amqp://
// QUEUE_URL. Checked: the burst completes over both workers, the api's /v1/queue/stats reports
// RabbitMQ's backlog, a worker killed with SIGKILL mid-task has its task redelivered by the
// broker and done exactly once, and the api and a worker ride out a broker restart.
//
// Needs Debian's rabbitmq-server (`apt-get install rabbitmq-server`): skipped without it, except
// with CI=true, where its absence fails the suite.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import amqp from 'amqplib';
import { parseAppFile, renderTemplate, type BuiltinValues } from '../src/core/index.js';
import { chooseConstant, type Region } from '../examples/fractals/fractal.mjs';
import { sleep, until } from './helpers.js';
import { rabbitmqServer, rabbitmqSkip, superviseBroker } from './rabbitmq.js';
import { freePort, Procs, stopProc, type Proc } from './fractal-procs.js';

const dir = fileURLToPath(new URL('../examples/fractals/', import.meta.url));

const server = rabbitmqServer();
const skip = rabbitmqSkip();

async function tempDir(t: TestContext, prefix: string): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), prefix));
  t.after(() => rm(d, { recursive: true, force: true }));
  return d;
}

// ---------------------------------------------------------------------------------------------
// The broker

interface Broker {
  readonly url: string;
  readonly workdir: string;
  /** Seconds from start to the first AMQP connection. */
  readonly startSeconds: number;
  output: () => string;
  /** SIGTERM, and wait for the node to stop (its epmd stays, as under drover). */
  stop(): Promise<void>;
  /** Starts the node again on the same folder and port (deploy is not re-run). */
  restart(): Promise<number>;
}

/** Runs a bash script with the role's environment; resolves with its exit code and output. */
function bash(script: string, env: NodeJS.ProcessEnv, cwd: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-c', script], { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

/**
 * A RabbitMQ node in a temp folder on a free loopback port, started from drover-rabbitmq.yaml's
 * `queue` role. t.after stops it and ends every process it left (its private epmd): those
 * carry a marker in their environment, so nothing else is touched.
 */
async function startBroker(t: TestContext): Promise<Broker> {
  const spec = parseAppFile(readFileSync(join(dir, 'drover-rabbitmq.yaml'), 'utf8'));
  const role = spec.roles.queue;
  assert.ok(role?.deploy && role.start, 'drover-rabbitmq.yaml has a queue role with deploy and start');
  // Removed by this function's own t.after, once the node has stopped (hooks run in order).
  const workdir = await mkdtemp(join(tmpdir(), 'fractals-rabbitmq-'));
  const port = await freePort();
  const instance = `t-${randomUUID().slice(0, 8)}`;
  const marker = `FRACTALS_RABBITMQ_TEST=${instance}`;
  const builtins: BuiltinValues = { port: String(port), ip: '127.0.0.1', instance, role: 'queue', app: spec.app, workdir, appDir: dir.replace(/\/$/, '') };
  const render = (s: string) => renderTemplate(s, builtins, {});
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    FRACTALS_RABBITMQ_TEST: instance,
    PORT: String(port),
    DROVER_PORT: String(port),
    DROVER_IP: '127.0.0.1',
    DROVER_INSTANCE: instance,
    DROVER_ROLE: 'queue',
    DROVER_APP: spec.app,
    DROVER_WORKDIR: workdir,
    DROVER_APP_DIR: builtins.appDir,
    ...Object.fromEntries(Object.entries(role.env).map(([k, v]) => [k, render(v)])),
  };
  const url = render(role.exports.url ?? '');
  assert.equal(url, `amqp://guest:guest@127.0.0.1:${port}`);

  const deployed = await bash(render(role.deploy), env, workdir);
  assert.equal(deployed.code, 0, `the queue role's deploy step failed:\n${deployed.output}`);

  // Started as the role's start step would be (bash, the rendered command), watched and stopped by the shared harness.
  const node = await superviseBroker(t, { argv: ['bash', '-c', render(role.start ?? '')], env, cwd: workdir, url, marker, workdir });
  return { url, workdir, startSeconds: node.startSeconds, output: () => node.output(), stop: () => node.stop(), restart: () => node.restart() };
}

// ---------------------------------------------------------------------------------------------
// The fractal programs

interface Fractal extends Region {
  uuid: string;
  status: string;
  generated_by: string | null;
}

interface QueueStats {
  backlog: number;
  ready: number;
  unacked: number;
  consumers: number;
}

async function getJson<T>(url: string): Promise<{ status: number; json: T }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, json: json as T };
}

async function postJson<T>(url: string, body: unknown): Promise<{ status: number; json: T }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(15_000) });
  return { status: res.status, json: (await res.json()) as T };
}

/**
 * Over half a second of rendering with SAMPLES=1 (every pixel runs every iteration; see
 * fractals.test.ts): long enough to kill a worker mid-task.
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
    if (bounded) return { uuid, width: 160, height: 160, iterations: 10_000, xa: -1e-4, xb: 1e-4, ya: -1e-4, yb: 1e-4 };
  }
}

/** The uuids a worker's log says it rendered ("<uuid>: 64x64, 10000 it, …"), with the delivery note. */
function rendered(output: string): { uuid: string; line: string }[] {
  return [...output.matchAll(/: ([0-9a-f-]{36}): \d+x\d+, \d+ it, [^\n]*/g)].map((m) => ({ uuid: m[1] ?? '', line: m[0] }));
}

// ---------------------------------------------------------------------------------------------

void test('fractals on RabbitMQ: backlog, 10 tasks over 2 workers, one killed mid-task, a broker restart, a clean stop', { skip, timeout: 150_000 }, async (t) => {
  if (!server) assert.fail('CI=true and rabbitmq-server is not installed: .ci/run installs it (apt-get install rabbitmq-server)');

  // t.after hooks run in the order they are added: the programs stop before the broker.
  const procs = new Procs();
  t.after(() => procs.stopAll());
  const broker = await startBroker(t);
  t.diagnostic(`RabbitMQ started in ${broker.startSeconds.toFixed(1)}s (${server})`);
  const queueName = `fractals-${randomUUID().slice(0, 8)}`;
  const store = await procs.start('store.mjs', 'store-1', { DROVER_WORKDIR: await tempDir(t, 'fractals-store-') });
  const api = await procs.start('api.mjs', 'api-1', { STORE_URL: store.url, QUEUE_URL: broker.url, QUEUE_NAME: queueName });
  const v1 = `${api.url}/v1/fractal`;
  const stats = async () => {
    const res = await getJson<QueueStats>(`${api.url}/v1/queue/stats`);
    assert.equal(res.status, 200, JSON.stringify(res.json));
    return res.json;
  };
  const records = async () => (await getJson<{ objects: Fractal[] }>(`${v1}?results_per_page=100`)).json.objects;
  const workerEnv = { QUEUE_URL: broker.url, QUEUE_NAME: queueName, API_URL: api.url, SAMPLES: '1', LEASE_WAIT: '2s' };
  const statusOf = async (w: Proc) => (await getJson<{ state: string; current: string | null; completed: number }>(`${w.url}/status`)).json;

  try {
    // No worker yet: the backlog is every task, all of it ready.
    const tasks = Array.from({ length: 10 }, heavyTask);
    const created = await Promise.all(tasks.map((task) => postJson<Fractal>(v1, task)));
    assert.deepEqual(
      created.map((r) => r.status),
      Array<number>(10).fill(201),
    );
    assert.deepEqual(await stats(), { backlog: 10, ready: 10, unacked: 0, consumers: 0 });

    // Two workers: each holds one task (prefetch 1), unacked, still counted in the backlog.
    const [wa, wb] = await Promise.all([procs.start('worker.mjs', 'w-a', workerEnv), procs.start('worker.mjs', 'w-b', workerEnv)]);
    assert.ok(wa && wb);
    const busy = await until('both workers to hold a task', async () => {
      const s = await stats();
      return s.unacked === 2 ? s : undefined;
    }, 15_000, 50);
    assert.equal(busy.consumers, 2);
    assert.equal(busy.backlog, busy.ready + 2);
    assert.ok(busy.backlog <= 10, JSON.stringify(busy));

    // Once w-b has finished a task, kill it in the middle of its next one.
    const victim = await until(
      'w-b to finish one task and start another',
      async () => {
        const s = await statusOf(wb);
        if (s.completed < 1 || s.state !== 'working' || !s.current) return undefined;
        const rec = (await getJson<Fractal>(`${v1}/${s.current}`)).json;
        return rec.status === 'processing' && rec.generated_by === 'w-b' ? s.current : undefined;
      },
      30_000,
      20,
    );
    await stopProc(wb, 'SIGKILL');
    await until('RabbitMQ to drop the killed worker\'s consumer', async () => ((await stats()).consumers === 1 ? true : undefined), 5000, 50);

    const all = await until(
      'every task to be done',
      async () => {
        const list = await records();
        return list.length === 10 && list.every((r) => r.status === 'done') ? list : undefined;
      },
      45_000,
      200,
    );
    // The last ack may still be on its way when the record says done.
    await until('the queue to be empty', async () => ((await stats()).backlog === 0 ? true : undefined), 5000, 50);
    assert.deepEqual(await stats(), { backlog: 0, ready: 0, unacked: 0, consumers: 1 });
    assert.deepEqual(new Set(all.map((r) => r.generated_by)), new Set(['w-a', 'w-b']), 'the work spread over both workers');
    assert.equal(all.find((r) => r.uuid === victim)?.generated_by, 'w-a', "the killed worker's task was finished by the other");

    // Exactly once: every task rendered to its end by one worker only, the victim's on its
    // second delivery (RabbitMQ's redelivered flag).
    const byA = rendered(wa.output);
    const byB = rendered(wb.output);
    const counts = new Map<string, number>();
    for (const r of [...byA, ...byB]) counts.set(r.uuid, (counts.get(r.uuid) ?? 0) + 1);
    assert.deepEqual([...counts.keys()].sort(), tasks.map((task) => task.uuid).sort());
    assert.ok([...counts.values()].every((n) => n === 1), `each task rendered once: ${JSON.stringify([...counts])}`);
    assert.ok(!byB.some((r) => r.uuid === victim), 'the victim never finished on w-b');
    assert.match(byA.find((r) => r.uuid === victim)?.line ?? '', /\(delivery 2\)/);
    assert.ok(byA.filter((r) => r.uuid !== victim).every((r) => !/\(delivery/.test(r.line)), 'no other task was delivered twice');

    // The broker goes away: the api answers 503 and the worker waits, neither exits; both
    // reconnect once it is back, with the queue (durable) still there.
    await broker.stop();
    const down = await getJson<{ error: { code: string } }>(`${api.url}/v1/queue/stats`);
    assert.deepEqual([down.status, down.json.error.code], [503, 'queue_unavailable']);
    const refused = await postJson<{ error: { code: string } }>(v1, heavyTask());
    assert.deepEqual([refused.status, refused.json.error.code], [503, 'queue_unavailable']);
    await sleep(1500);
    assert.equal(api.child.exitCode, null, 'the api is still running');
    assert.equal(wa.child.exitCode, null, 'the worker is still running');
    const restartSeconds = await broker.restart();
    t.diagnostic(`RabbitMQ restarted in ${restartSeconds.toFixed(1)}s`);
    const after = await until('the api to reach RabbitMQ again', async () => {
      const res = await getJson<QueueStats>(`${api.url}/v1/queue/stats`);
      return res.status === 200 ? res.json : undefined;
    }, 20_000, 200);
    assert.equal(after.ready, 0);
    const late = heavyTask();
    assert.equal((await postJson<Fractal>(v1, late)).status, 201);
    const rec = await until('the worker to reconnect and do the new task', async () => {
      const r = (await getJson<Fractal>(`${v1}/${late.uuid}`)).json;
      return r.status === 'done' ? r : undefined;
    }, 30_000, 200);
    assert.equal(rec.generated_by, 'w-a');
    assert.match(wa.output, /connected to RabbitMQ at .* again/);

    // SIGTERM mid-task: the worker cancels its consumer, finishes and acks its task, and exits
    // 0. The task queued meanwhile was never sent to it (it would come back marked redelivered).
    const [last, next] = [heavyTask(), heavyTask()];
    assert.equal((await postJson<Fractal>(v1, last)).status, 201);
    await until('w-a to start the last task', async () => ((await statusOf(wa)).current === last.uuid ? true : undefined), 10_000, 20);
    assert.equal((await postJson<Fractal>(v1, next)).status, 201);
    assert.equal(await stopProc(wa), 0, 'SIGTERM: the worker exits 0');
    const lastRec = (await getJson<Fractal>(`${v1}/${last.uuid}`)).json;
    assert.deepEqual([lastRec.status, lastRec.generated_by], ['done', 'w-a']);
    await until('the stopped worker to leave', async () => ((await stats()).consumers === 0 ? true : undefined), 5000, 50);
    assert.deepEqual(await stats(), { backlog: 1, ready: 1, unacked: 0, consumers: 0 });
    const conn = await amqp.connect(broker.url);
    try {
      const ch = await conn.createChannel();
      const msg = await ch.get(queueName, { noAck: false });
      assert.ok(msg, 'the next task is still queued');
      assert.equal(msg.properties.messageId, next.uuid);
      assert.equal(msg.fields.redelivered, false, 'never delivered to the stopping worker');
      assert.deepEqual(JSON.parse(msg.content.toString()), next, 'the payload is the task');
      assert.equal(msg.properties.deliveryMode, 2, 'persistent');
    } finally {
      await conn.close();
    }
  } catch (err) {
    t.diagnostic(`${procs.dump()}\n--- rabbitmq\n${broker.output()}`);
    throw err;
  }
});
