/**
 * The thread the embedded store's PostgreSQL runs in (pglite-thread.ts): PGlite in the folder
 * given, one statement at a time, in the order they come. No state but the database.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { PGlite } from '@electric-sql/pglite';
import type { ThreadAnswer, ThreadRequest } from './pglite-thread.js';

const port = parentPort;
const describe = (err: unknown) =>
  err instanceof Error ? { name: err.name, message: err.message, props: { ...(err as unknown as Record<string, unknown>) } } : { name: 'Error', message: String(err), props: {} };

if (port) {
  const send = (a: ThreadAnswer) => port.postMessage(a);
  let db: PGlite;
  try {
    db = new PGlite((workerData as { dir: string }).dir);
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
