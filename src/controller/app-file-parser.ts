/**
 * Parses and compiles app files off the controller's event loop.
 *
 * Why a worker thread, and not only a parse that is bounded by construction: `parseAppFile`
 * does bound everything it can see (size, nesting, aliases, entries, values; src/core/spec.ts),
 * and those bounds give a user a clear reason. But the largest file they allow still takes a
 * few hundred milliseconds to lex on a loaded machine, and the proof that no input is slow
 * would have to cover a YAML library, zod and every regular expression of the schema. On the
 * controller's one thread, a stall of seconds makes every agent look silent, and the controller
 * replaces them. So the work runs in a worker with a hard time limit: past it the worker is
 * terminated (which stops it mid-instruction) and the file refused. The event loop only ever
 * sends text and receives a compiled spec.
 *
 * @example
 * ```ts
 * const parser = new AppFileParser({ timeLimitMs: 2000 });
 * const spec = await parser.parseYaml(text); // AppSpec, or throws SpecError
 * await parser.close();
 * ```
 */
import { fileURLToPath } from 'node:url';
import type { Worker, WorkerOptions } from 'node:worker_threads';
import { startBundledWorker } from '../adapters/threads/index.js';
import { APP_FILE_LIMITS, shapeIssues, SpecError, type AppSpec, type SpecIssue } from '../core/index.js';

export interface AppFileParserOptions {
  /** Hard limit on one parse, counted from when the worker receives it. @default 2000 */
  readonly timeLimitMs?: number;
  /** How long a new worker may take to load its modules. @default 30000 */
  readonly startLimitMs?: number;
  /** Heap of the worker; a file that needs more is refused. @default 128 */
  readonly memoryLimitMb?: number;
}

/** A message to the worker. */
export type ParseJob = { readonly id: number; readonly kind: 'yaml'; readonly text: string } | { readonly id: number; readonly kind: 'json'; readonly value: unknown };

/** The worker's answer to a {@link ParseJob}: a spec, the issues of a SpecError, or an unexpected error. */
export type ParseAnswer =
  | { readonly id: number; readonly ok: true; readonly spec: AppSpec }
  | { readonly id: number; readonly ok: false; readonly issues: readonly SpecIssue[] }
  | { readonly id: number; readonly ok: false; readonly crash: string };

interface Running {
  readonly worker: Worker;
  readonly ready: Promise<void>;
}

/** What {@link AppFileParser.warm} parses: a small app using the common fields. */
export const WARM_UP_FILE = [
  'app: warm-up',
  'roles:',
  '  db:',
  '    start: sleep 1',
  '    exports: { url: "http://${ip}:${port}" }',
  '    health: { http: /health, interval: 500ms }',
  '  api:',
  '    imports: [db.url]',
  '    env: { DATABASE_URL: "${db.url}" }',
  '    start: sleep 1',
  '    exports: { endpoint: "http://${ip}:${port}" }',
  '    min: 1',
  '    max: 4',
  '  front:',
  '    imports: [api.*]',
  '    update: printf "%s" "$API_ENDPOINT" > members.txt',
  '    start: sleep 1',
  '',
].join('\n');

/** Where the worker's code is: next to this module, as .js once built, as .ts when run from source. */
const ENTRY = new URL(import.meta.url.endsWith('.ts') ? './parse-worker.ts' : './parse-worker.js', import.meta.url);
/** The worker's code as one bundle with its V8 code cache (scripts/build-cli.mjs; adapters/threads loads it). */
const BUNDLE = fileURLToPath(new URL('../cli/parse-worker.cjs', import.meta.url));

/** The worker, with the process's options but those a thread refuses (adapters/threads). */
function startParserWorker(options: WorkerOptions): Worker {
  return startBundledWorker(ENTRY, BUNDLE, options);
}

/**
 * One worker, kept warm and reused: jobs run one at a time, so the time limit measures the job
 * alone. A worker that is terminated (time limit) or dies (memory limit) is replaced on the next job.
 */
export class AppFileParser {
  readonly #timeLimitMs: number;
  readonly #startLimitMs: number;
  readonly #memoryLimitMb: number;
  #running: Running | undefined;
  #tail: Promise<unknown> = Promise.resolve();
  #nextId = 1;
  #closed = false;

  constructor(opts: AppFileParserOptions = {}) {
    this.#timeLimitMs = opts.timeLimitMs ?? 2000;
    this.#startLimitMs = opts.startLimitMs ?? 30_000;
    this.#memoryLimitMb = opts.memoryLimitMb ?? 128;
  }

  /**
   * YAML text → spec. Throws {@link SpecError} for a file that cannot be used, or that is too big
   * or too slow to check. `timeLimitMs` overrides the parser's limit for this file.
   */
  parseYaml(text: string, opts: { timeLimitMs?: number } = {}): Promise<AppSpec> {
    const bytes = Buffer.byteLength(text, 'utf8');
    if (bytes > APP_FILE_LIMITS.bytes) {
      return Promise.reject(new SpecError([{ path: '', message: `the app file is ${bytes} bytes; at most ${APP_FILE_LIMITS.bytes} (256 KiB) are allowed` }]));
    }
    return this.#enqueue({ id: this.#nextId++, kind: 'yaml', text }, opts.timeLimitMs ?? this.#timeLimitMs);
  }

  /** A parsed app file (a JSON body) → spec. */
  compile(value: unknown): Promise<AppSpec> {
    // Copying a value to the worker recurses through it: a value past the structural bounds is
    // refused here, by an iterative walk that stops at the bounds.
    const shape = shapeIssues(value, () => true);
    if (shape.fatal) return Promise.reject(new SpecError(shape.issues.map((i) => ({ path: pathText(i.path), message: i.message }))));
    return this.#enqueue({ id: this.#nextId++, kind: 'json', value }, this.#timeLimitMs);
  }

  /**
   * Starts the worker now and has it parse a small app file, so the first apply waits neither
   * for its modules to load nor for the parser's code to compile (a tenth of a second or more
   * on a busy machine, right on the path of `drover up`).
   */
  warm(): void {
    if (this.#closed || this.#running) return;
    this.#start().ready.catch(() => {
      // Reported to the first job that needs the worker.
    });
    this.parseYaml(WARM_UP_FILE).catch(() => {
      // Only a warm-up: a failure here is a real job's to report.
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    const r = this.#running;
    this.#running = undefined;
    if (r) await r.worker.terminate();
  }

  /** The worker thread now running, if any (for logs and tests). */
  get threadId(): number | undefined {
    return this.#running?.worker.threadId;
  }

  #enqueue(job: ParseJob, timeLimitMs: number): Promise<AppSpec> {
    const run = this.#tail.then(() => this.#run(job, timeLimitMs));
    this.#tail = run.catch(() => undefined);
    return run;
  }

  #start(): Running {
    const worker = startParserWorker({ resourceLimits: { maxOldGenerationSizeMb: this.#memoryLimitMb, stackSizeMb: 4 } });
    // An idle parser must not keep the controller's process alive.
    worker.unref();
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error(`the app file parser did not start within ${this.#startLimitMs} ms`)), this.#startLimitMs);
      const fail = (err: Error) => {
        clearTimeout(timer);
        worker.off('message', onMessage);
        void worker.terminate();
        if (this.#running?.worker === worker) this.#running = undefined;
        reject(err);
      };
      // Ended before it was ready (closed, or it died): said now, and the start timer with it,
      // which would otherwise hold the process for the whole start limit.
      const onExit = (code: number) => fail(new Error(`the app file parser stopped before it was ready (exit code ${code})`));
      const onMessage = (m: unknown) => {
        if (typeof m === 'object' && m !== null && 'ready' in m) {
          clearTimeout(timer);
          worker.off('message', onMessage);
          worker.off('error', fail);
          worker.off('exit', onExit);
          resolve();
        }
      };
      worker.on('message', onMessage);
      worker.once('error', fail);
      worker.once('exit', onExit);
    });
    const running = { worker, ready };
    this.#running = running;
    // Whatever ends the worker, the next job starts a new one.
    worker.once('exit', () => {
      if (this.#running === running) this.#running = undefined;
    });
    return running;
  }

  async #run(job: ParseJob, timeLimitMs: number): Promise<AppSpec> {
    if (this.#closed) throw new Error('the app file parser is closed');
    const running = this.#running ?? this.#start();
    await running.ready;
    const { worker } = running;
    return new Promise<AppSpec>((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(timer);
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
      };
      const refuse = (message: string) => {
        cleanup();
        reject(new SpecError([{ path: '', message }]));
      };
      const timer = setTimeout(() => {
        // terminate() stops the worker even inside a loop that never yields.
        if (this.#running === running) this.#running = undefined;
        void worker.terminate();
        refuse(`the app file took longer than ${timeLimitMs} ms to check; it is too large or too complex`);
      }, timeLimitMs);
      const onMessage = (a: ParseAnswer) => {
        if (a.id !== job.id) return;
        cleanup();
        if (a.ok) resolve(a.spec);
        else if ('issues' in a) reject(new SpecError(a.issues));
        else reject(new Error(`the app file parser failed: ${a.crash}`));
      };
      const onError = (err: Error) => {
        if (this.#running === running) this.#running = undefined;
        if ((err as NodeJS.ErrnoException).code === 'ERR_WORKER_OUT_OF_MEMORY') {
          refuse(`the app file needs more than ${this.#memoryLimitMb} MB to check; it is too large or too complex`);
        } else {
          cleanup();
          reject(new Error('the app file parser failed', { cause: err }));
        }
      };
      const onExit = (code: number) => {
        cleanup();
        reject(new Error(`the app file parser stopped (exit code ${code})`));
      };
      worker.on('message', onMessage);
      worker.once('error', onError);
      worker.once('exit', onExit);
      worker.postMessage(job);
    });
  }
}

/** Shape paths are only reported when past a bound; the wording matches spec.ts's. */
function pathText(path: readonly (string | number)[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_-]*$/.test(seg)) out += out ? `.${seg}` : seg;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}
