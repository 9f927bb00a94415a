/**
 * The thread the embedded store's PostgreSQL runs in (pglite-thread.ts): PGlite in the folder
 * its first message names, one statement at a time, in the order they come. No state but the
 * database.
 *
 * Built into one bundle with PGlite's JavaScript (dist/cli/store-worker.cjs, scripts/build-cli.mjs),
 * loaded with a V8 code cache made by {@link openStoreDb} at build time; this module otherwise.
 */
import { readFileSync } from 'node:fs';
import { parentPort, type MessagePort } from 'node:worker_threads';
import type { PGlite, PGliteOptions } from '@electric-sql/pglite';
import type { OpenRequest, ThreadAnswer, ThreadRequest } from './pglite-thread.js';
import { seedStore } from './pglite-template.js';

const describe = (err: unknown) =>
  err instanceof Error ? { name: err.name, message: err.message, props: { ...(err as unknown as Record<string, unknown>) } } : { name: 'Error', message: String(err), props: {} };

interface Artifacts {
  readonly wasm: Buffer;
  readonly data: Buffer;
}

/**
 * PGlite's WebAssembly and files, read from where PGlite keeps them; undefined if they are not
 * there (PGlite then loads them itself). Read at once, in one go each (15 MB, from the page cache
 * as a rule): read in chunks through libuv, they reached the compile ~20 ms later.
 */
export function readArtifacts(): Artifacts | undefined {
  try {
    const base = import.meta.resolve('@electric-sql/pglite');
    return { wasm: readFileSync(new URL('./pglite.wasm', base)), data: readFileSync(new URL('./pglite.data', base)) };
  } catch {
    return undefined;
  }
}

/** Node's WebAssembly (this project's TypeScript setup has no DOM types). */
const wasmApi = (globalThis as unknown as { WebAssembly: { compile(bytes: Uint8Array): Promise<unknown> } }).WebAssembly;

/**
 * PGlite started in `dir`: a new store seeded from `template` first, while PGlite's WebAssembly
 * compiles on V8's threads, and synced to the disk while PostgreSQL starts; resolves once both
 * are done. `a`: {@link readArtifacts}, read by the caller as early as it can.
 */
export async function openStoreDb(dir: string, template: string | null, a: Artifacts | undefined): Promise<PGlite> {
  // Compiled on V8's threads while this one copies a new store's files from the template and
  // loads PGlite's JavaScript (V8 compiles each function when it is first called).
  const compiled = a ? wasmApi.compile(a.wasm).catch(() => undefined) : undefined;
  // A new copy is synced to the disk (libuv's threads) while PGlite loads and PostgreSQL starts on it (this one).
  const synced = template !== null ? seedStore(dir, template) : undefined;
  synced?.catch(() => undefined); // said below
  // PGlite's JavaScript, loaded after the copy (this thread does one thing at a time; the compile goes on meanwhile).
  const [{ DURABLE_START_PARAMS, DurableNodeFS }, { KnownTypesPGlite, readArrayTypes }] = await Promise.all([import('./pglite-durable.js'), import('./pglite-array-types.js')]);
  const module = await compiled;
  // Without them, PGlite loads its files itself.
  const options: PGliteOptions = {
    fs: new DurableNodeFS(dir),
    startParams: [...DURABLE_START_PARAMS],
    ...(a && module ? { pgliteWasmModule: module, fsBundle: new Blob([a.data]) } : {}),
  };
  const db = new KnownTypesPGlite(options, a ? readArrayTypes(a.wasm.length, a.data.length) : undefined);
  await db.waitReady;
  try {
    await synced;
  } catch (err) {
    await db.close().catch(() => undefined);
    throw err;
  }
  return db;
}

async function serve(port: MessagePort): Promise<void> {
  const send = (a: ThreadAnswer) => port.postMessage(a);
  const artifacts = readArtifacts();
  const { open: dir, template } = await new Promise<OpenRequest>((resolve) => port.once('message', resolve));
  let db: PGlite;
  try {
    db = await openStoreDb(dir, template, artifacts);
  } catch (err) {
    send({ failed: describe(err) });
    throw err;
  }
  // One at a time: a transaction's statements come one after another, never interleaved with others (the client sees to it).
  let tail: Promise<unknown> = Promise.resolve();
  port.on('message', (r: ThreadRequest) => {
    tail = tail.then(async () => {
      try {
        if (r.op === 'query') send({ id: r.id, rows: (await db.query(r.sql, r.params as unknown[])).rows });
        else if (r.op === 'exec') {
          await db.exec(r.sql);
          send({ id: r.id, rows: [] });
        } else {
          await db.close();
          send({ id: r.id, rows: [] });
          port.close();
        }
      } catch (err) {
        send({ id: r.id, error: describe(err) });
      }
    });
  });
  send({ ready: true });
}

// A failed start is said to the thread's owner (above); the thread then ends with the error.
if (parentPort) void serve(parentPort);
