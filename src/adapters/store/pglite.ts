/** The embedded store: PGlite (PostgreSQL compiled to WASM) in a folder, or in memory. */
import { PGlite, type Transaction } from '@electric-sql/pglite';
import type { SqlClient } from './sql.js';
import { SqlStore } from './sql.js';

type Queryable = Pick<Transaction, 'query' | 'exec'>;

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

/** Opens (creating if needed) the embedded store. `dir` undefined → in memory. */
export async function openPgliteStore(dir?: string): Promise<SqlStore> {
  const db = dir === undefined ? new PGlite() : new PGlite(dir);
  await db.waitReady;
  return SqlStore.open(client(db, db));
}
