/** The embedded store: PGlite (PostgreSQL compiled to WASM) in a folder, or in memory. */
import { chmodSync, lstatSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { PGlite, Transaction } from '@electric-sql/pglite';
import { openPgliteThread } from './pglite-thread.js';
import { storeTemplate } from './pglite-template.js';
import type { SqlClient } from './sql.js';
import { SqlStore } from './sql.js';

type Queryable = Pick<Transaction, 'query' | 'exec'>;

/** The store in `dir` could not be opened (damaged files, a crash mid-write, a foreign folder). */
export class StoreOpenError extends Error {
  override readonly name = 'StoreOpenError';
  constructor(
    readonly dir: string,
    cause: unknown,
  ) {
    super(`the store in ${dir} cannot be opened: ${cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause)}`, { cause });
  }
}

function client(db: Queryable, root: PGlite): SqlClient {
  return {
    async query<T>(sql: string, params: readonly unknown[] = []) {
      const r = await db.query<T>(sql, params as unknown[]);
      return { rows: r.rows };
    },
    async exec(sql: string) {
      await db.exec(sql);
    },
    async transaction<T>(fn: (tx: SqlClient) => Promise<T>): Promise<T> {
      if (db !== root) return fn(client(db, root));
      return root.transaction((tx) => fn(client(tx, root)));
    },
    async close() {
      await root.close();
    },
  };
}

/**
 * Takes group and other permissions off everything under `dir`. PGlite lays a new database
 * down from an archive whose files are 0666, whatever the umask; files it creates later (WAL
 * segments, tables) follow the umask.
 */
function makePrivate(dir: string): void {
  const st = lstatSync(dir);
  if (st.isSymbolicLink()) return;
  if ((st.mode & 0o077) !== 0) chmodSync(dir, st.mode & 0o7700);
  if (st.isDirectory()) for (const e of readdirSync(dir)) makePrivate(join(dir, e));
}

export interface PgliteStoreOptions {
  /** The database, already being started in `dir` (`startEmbeddedDb`, by the CLI): opened as the store. */
  readonly started?: Promise<SqlClient>;
}

/**
 * Opens (creating if needed) the embedded store. `dir` undefined → in memory, in this thread.
 * In a folder, PGlite runs in a thread of its own, and the folder's files are made private
 * (0600, folders 0700). Throws {@link StoreOpenError} if the files are damaged.
 */
export async function openPgliteStore(dir?: string, opts: PgliteStoreOptions = {}): Promise<SqlStore> {
  if (dir === undefined) {
    const { PGlite } = await import('@electric-sql/pglite');
    const mem = new PGlite();
    await mem.waitReady;
    return SqlStore.open(client(mem, mem));
  }
  let db: SqlClient | undefined;
  try {
    if (opts.started) db = await opts.started;
    else {
      // In a thread of its own (pglite-thread.ts says why), which seeds a new store first.
      db = await openPgliteThread(dir, storeTemplate());
    }
    makePrivate(dir);
    return await SqlStore.open(db);
  } catch (err) {
    await db?.close().catch(() => undefined);
    throw new StoreOpenError(dir, err);
  }
}
