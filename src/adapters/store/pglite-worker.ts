/**
 * The thread the embedded store's PostgreSQL runs in (pglite-thread.ts): PGlite in the folder
 * its first message names, one statement at a time, in the order they come. No state but the
 * database.
 */
import { readFile } from 'node:fs/promises';
import { parentPort } from 'node:worker_threads';
import { PGlite, type PGliteOptions } from '@electric-sql/pglite';
import type { ThreadAnswer, ThreadRequest } from './pglite-thread.js';

const port = parentPort;
const describe = (err: unknown) =>
  err instanceof Error ? { name: err.name, message: err.message, props: { ...(err as unknown as Record<string, unknown>) } } : { name: 'Error', message: String(err), props: {} };

/**
 * What PGlite loads before it opens a folder — its WebAssembly, compiled, and its files — made
 * ready while the folder is still being prepared (the template copied in). Undefined if they
 * are not where PGlite keeps them: PGlite then loads them itself.
 */
async function prepared(): Promise<PGliteOptions | undefined> {
  try {
    const base = import.meta.resolve('@electric-sql/pglite');
    const [wasm, data] = await Promise.all([readFile(new URL('./pglite.wasm', base)), readFile(new URL('./pglite.data', base))]);
    const compiled: unknown = await wasmApi.compile(wasm);
    return { pgliteWasmModule: compiled, fsBundle: new Blob([data]) };
  } catch {
    return undefined;
  }
}

/** Node's WebAssembly (this project's TypeScript setup has no DOM types). */
const wasmApi = (globalThis as unknown as { WebAssembly: { compile(bytes: Uint8Array): Promise<unknown> } }).WebAssembly;

if (port) {
  const send = (a: ThreadAnswer) => port.postMessage(a);
  const ready = prepared();
  const dir = await new Promise<string>((resolve) => port.once('message', (m: { open: string }) => resolve(m.open)));
  let db: PGlite;
  try {
    db = new PGlite(dir, (await ready) ?? {});
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
