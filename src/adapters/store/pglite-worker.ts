/**
 * The thread the embedded store's PostgreSQL runs in (pglite-thread.ts): PGlite in the folder
 * its first message names, one statement at a time, in the order they come. No state but the
 * database.
 */
import { readFile } from 'node:fs/promises';
import { parentPort } from 'node:worker_threads';
import type { PGlite, PGliteOptions } from '@electric-sql/pglite';
import type { OpenRequest, ThreadAnswer, ThreadRequest } from './pglite-thread.js';
import { seedStore } from './pglite-template.js';

const port = parentPort;
const describe = (err: unknown) =>
  err instanceof Error ? { name: err.name, message: err.message, props: { ...(err as unknown as Record<string, unknown>) } } : { name: 'Error', message: String(err), props: {} };

/** PGlite's WebAssembly and files, read from where PGlite keeps them; undefined if they are not there (PGlite then loads them itself). */
async function readArtifacts(): Promise<{ wasm: Buffer; data: Buffer } | undefined> {
  try {
    const base = import.meta.resolve('@electric-sql/pglite');
    const [wasm, data] = await Promise.all([readFile(new URL('./pglite.wasm', base)), readFile(new URL('./pglite.data', base))]);
    return { wasm, data };
  } catch {
    return undefined;
  }
}

/** Node's WebAssembly (this project's TypeScript setup has no DOM types). */
const wasmApi = (globalThis as unknown as { WebAssembly: { compile(bytes: Uint8Array): Promise<unknown> } }).WebAssembly;

if (port) {
  const send = (a: ThreadAnswer) => port.postMessage(a);
  const artifacts = readArtifacts();
  const { open: dir, template } = await new Promise<OpenRequest>((resolve) => port.once('message', resolve));
  let db: PGlite;
  try {
    const a = await artifacts;
    // Compiled on V8's threads while this one copies a new store's files from the template and
    // loads PGlite's JavaScript (V8 compiles each function when it is first called).
    const compiled = a ? wasmApi.compile(a.wasm).catch(() => undefined) : undefined;
    // A new copy is synced to the disk by the thread that started this one, while PGlite loads and PostgreSQL starts on it here.
    if (template !== null && seedStore(dir, template)) send({ seeded: true });
    // PGlite's JavaScript, loaded after the copy (this thread does one thing at a time; the compile goes on meanwhile).
    const [{ DURABLE_START_PARAMS, DurableNodeFS }, { KnownTypesPGlite, readArrayTypes }] = await Promise.all([import('./pglite-durable.js'), import('./pglite-array-types.js')]);
    const module = await compiled;
    // Without them, PGlite loads its files itself.
    const options: PGliteOptions = {
      fs: new DurableNodeFS(dir),
      startParams: [...DURABLE_START_PARAMS],
      ...(a && module ? { pgliteWasmModule: module, fsBundle: new Blob([a.data]) } : {}),
    };
    db = new KnownTypesPGlite(options, a ? readArrayTypes(a.wasm.length, a.data.length) : undefined);
    await db.waitReady;
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
