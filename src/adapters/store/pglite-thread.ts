/**
 * The embedded store's PostgreSQL (PGlite, WebAssembly) in a thread of its own, reached by
 * messages: starting it on a folder is about a second of CPU, which then runs on another core
 * while the controller loads and builds its API; afterwards its statements no longer hold up
 * the controller's event loop (heartbeats, the API).
 *
 * Statements run one at a time, in order. A transaction holds the database: statements from
 * outside it wait until it ends, as with PGlite in the same thread.
 */
import { storeTemplate } from './pglite-template.js';
import { fileURLToPath } from 'node:url';
import { startBundledWorker } from '../threads/index.js';
import type { SqlClient } from './sql.js';

/** The thread's first message: the folder to open, and the template to seed it from if it is new. */
export interface OpenRequest {
  readonly open: string;
  readonly template: string | null;
}
export type ThreadRequest = { readonly id: number } & Work;
type Work = { readonly op: 'query'; readonly sql: string; readonly params: readonly unknown[] } | { readonly op: 'exec' | 'close'; readonly sql: string };
interface ErrorText {
  readonly name: string;
  readonly message: string;
  readonly props: Record<string, unknown>;
}
export type ThreadAnswer =
  | { readonly ready: true }
  | { readonly failed: ErrorText }
  | { readonly id: number; readonly rows: unknown[] }
  | { readonly id: number; readonly error: ErrorText };

const ENTRY = new URL(import.meta.url.endsWith('.ts') ? './pglite-worker.ts' : './pglite-worker.js', import.meta.url);
/** The worker and PGlite's JavaScript as one bundle with its V8 code cache (scripts/build-cli.mjs). */
const BUNDLE = fileURLToPath(new URL('../../cli/store-worker.cjs', import.meta.url));

/** An error of the thread, as a local one: its name, message and fields (a PostgreSQL error's code, detail, …). */
function revive(e: ErrorText): Error {
  const err = new Error(e.message);
  Object.assign(err, e.props);
  err.name = e.name;
  return err;
}

/**
 * PGlite in a thread on `dir`; resolves once the database is ready, rejects with PGlite's error
 * if it cannot start. A new store is first seeded from `template` (pglite-template.ts) by the
 * thread itself, while PGlite's WebAssembly compiles, and synced to the disk while PostgreSQL
 * starts.
 */
export async function openPgliteThread(dir: string, template?: string): Promise<SqlClient> {
  // The process's options, but those a thread refuses; the build's bundle, or from source through tsx (adapters/threads).
  const worker = startBundledWorker(ENTRY, BUNDLE);
  const pending = new Map<number, { resolve: (rows: unknown[]) => void; reject: (err: Error) => void }>();
  let nextId = 1;
  let stopped: Error | undefined;
  // Alive while it has work: an idle store does not keep the process running (nor did PGlite in the same thread).
  const refresh = () => (pending.size > 0 ? worker.ref() : worker.unref());
  const ready = new Promise<void>((resolve, reject) => {
    const onMessage = (a: ThreadAnswer) => {
      if ('ready' in a) return resolve();
      if ('failed' in a) return reject(revive(a.failed));
      const p = pending.get(a.id);
      if (!p) return;
      pending.delete(a.id);
      refresh();
      if ('error' in a) p.reject(revive(a.error));
      else p.resolve(a.rows);
    };
    worker.on('message', onMessage);
    const stop = (why: string) => {
      stopped ??= new Error(`the embedded store's thread stopped: ${why}`);
      reject(stopped);
      for (const p of pending.values()) p.reject(stopped);
      pending.clear();
    };
    worker.on('error', (err) => stop(err.message));
    worker.on('exit', (code) => stop(`exit code ${code}`));
  });
  const send = (r: Work): Promise<unknown[]> => {
    if (stopped) return Promise.reject(stopped);
    const id = nextId++;
    return new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject });
      refresh();
      worker.postMessage({ ...r, id });
    });
  };
  try {
    worker.postMessage({ open: dir, template: template ?? null } satisfies OpenRequest);
    await ready;
  } catch (err) {
    await worker.terminate();
    throw err;
  }
  worker.unref();

  // The transaction in progress: other statements wait for its end.
  let held: Promise<void> = Promise.resolve();
  const exclusive = async <T>(fn: () => Promise<T>): Promise<T> => {
    const before = held;
    let release!: () => void;
    held = new Promise<void>((r) => (release = r));
    await before;
    try {
      return await fn();
    } finally {
      release();
    }
  };
  const direct = {
    query: async <T>(sql: string, params: readonly unknown[] = []) => ({ rows: (await send({ op: 'query', sql, params })) as T[] }),
    exec: async (sql: string) => {
      await send({ op: 'exec', sql });
    },
  };
  const inTx: SqlClient = {
    ...direct,
    transaction: (fn) => fn(inTx),
    close: () => Promise.reject(new Error('close the store, not a transaction')),
  };
  return {
    query: (sql, params) => exclusive(() => direct.query(sql, params)),
    exec: (sql) => exclusive(() => direct.exec(sql)),
    transaction: (fn) =>
      exclusive(async () => {
        await direct.exec('BEGIN');
        try {
          const r = await fn(inTx);
          await direct.exec('COMMIT');
          return r;
        } catch (err) {
          await direct.exec('ROLLBACK').catch(() => undefined);
          throw err;
        }
      }),
    close: () =>
      exclusive(async () => {
        if (stopped) return;
        await send({ op: 'close', sql: '' });
        await worker.terminate();
      }),
  };
}

/**
 * Starts the embedded store's database in `dir` (a store folder in a private data folder whose
 * lock the caller holds): the template copied in if it is new, then PGlite started in its
 * thread. The CLI calls it before loading the controller, which finishes opening the store
 * (`openPgliteStore` with `started`). Rejects with PGlite's error if the folder cannot be used.
 */
export function startEmbeddedDb(dir: string): Promise<SqlClient> {
  return openPgliteThread(dir, storeTemplate());
}
