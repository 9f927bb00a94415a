/**
 * The production store: a PostgreSQL server reached through `pg` (node-postgres), with a pool of
 * connections. The schema, migrations and SQL are {@link SqlStore}'s, the same as PGlite's.
 */
import type { Pool, PoolClient } from 'pg';
import type { SqlClient } from './sql.js';
import { SqlStore } from './sql.js';

/** How to reach the database, and how many connections to keep. */
export interface PostgresStoreOptions {
  /**
   * `postgres://user:password@host:5432/database?sslmode=verify-full` (or `postgresql://`). Unset
   * parts fall back on libpq's environment (PGHOST, PGUSER, PGPASSWORD, …) and `~/.pgpass`.
   */
  readonly url: string;
  /** Connections in the pool at most. @default 10 */
  readonly poolSize?: number;
  /** How long to wait for a connection (new or from the pool) before a query fails. @default 10000 */
  readonly connectTimeoutMs?: number;
  /** Shown in `pg_stat_activity.application_name`. @default 'drover' */
  readonly applicationName?: string;
  /**
   * Told about errors of idle pooled connections (the server restarted, a network cut): the pool
   * drops such a connection and opens another when needed. Without a listener they are ignored.
   */
  readonly onIdleError?: (err: Error) => void;
}

export const DEFAULT_POOL_SIZE = 10;
export const MAX_POOL_SIZE = 1000;

/** A store URL that is not one Drover can use; the message never holds the password. */
export class StoreUrlError extends Error {
  override readonly name = 'StoreUrlError';
}

/** The PostgreSQL server could not be reached or refused the connection. */
export class StoreUnavailableError extends Error {
  override readonly name = 'StoreUnavailableError';
  constructor(
    /** The URL without its password. */
    readonly url: string,
    cause: unknown,
  ) {
    super(`the PostgreSQL store at ${url} cannot be opened: ${describe(cause)}`, { cause });
  }
}

function describe(err: unknown): string {
  if (err instanceof AggregateError && err.errors.length > 0) return err.errors.map(describe).join('; ');
  if (!(err instanceof Error)) return String(err);
  const code = (err as { code?: unknown }).code;
  return `${err.message || err.name}${typeof code === 'string' && !err.message.includes(code) ? ` (${code})` : ''}`;
}

/** Whether `text` names a PostgreSQL server (rather than the embedded store). */
export function isPostgresUrl(text: string): boolean {
  return /^postgres(ql)?:\/\//i.test(text.trim());
}

/** `url` with its password (and any `password=` parameter) replaced by `***`, for messages and logs. */
export function redactStoreUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    if (u.searchParams.has('password')) u.searchParams.set('password', '***');
    return u.toString().replace('password=%2A%2A%2A', 'password=***');
  } catch {
    // Unparsable: keep the scheme and host part only, never what could be a password.
    const m = /^([a-z][a-z0-9+.-]*:\/\/)(?:[^@/]*@)?([^/?#]*)/i.exec(url);
    return m ? `${m[1]}${m[2]}/…` : '(an unparsable URL)';
  }
}

/**
 * Checks a store URL: `postgres://` or `postgresql://`, a host (or a `host=` parameter naming a
 * socket folder), a port in range. Throws {@link StoreUrlError} saying what is wrong; the
 * message shows the URL without its password.
 */
export function checkPostgresUrl(url: string): void {
  const shown = redactStoreUrl(url);
  if (url.length > 4096) throw new StoreUrlError(`the store URL is longer than 4096 characters`);
  if (!isPostgresUrl(url)) throw new StoreUrlError(`${shown}: expected a postgres:// or postgresql:// URL (or nothing, for the embedded store)`);
  let u: URL;
  try {
    // An empty host (`postgres:///db?host=/run/postgresql`) is fine for libpq and for pg.
    u = new URL(url.replace(/^(postgres(?:ql)?:\/\/(?:[^@/]*@)?)(?=[/?]|$)/i, '$1localhost'));
  } catch {
    throw new StoreUrlError(`${shown}: not a valid URL (a password with @, /, ? or # must be percent-encoded)`);
  }
  if (u.port !== '' && (Number(u.port) < 1 || Number(u.port) > 65535)) throw new StoreUrlError(`${shown}: port ${u.port} is out of range`);
  const sslmode = u.searchParams.get('sslmode');
  if (sslmode !== null && !['disable', 'prefer', 'require', 'verify-ca', 'verify-full', 'no-verify'].includes(sslmode)) {
    throw new StoreUrlError(`${shown}: sslmode=${sslmode} is not one of disable, prefer, require, verify-ca, verify-full, no-verify`);
  }
}

const INT8_OID = 20;

/**
 * bigint columns (times in ms, versions, ids) come back from `pg` as strings, since an int8 may
 * not fit a double. Drover's never exceed 2^53; one that did is an error, not a rounded number.
 */
function parseInt8(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new RangeError(`bigint ${text} does not fit a JavaScript number`);
  return n;
}

/** node-postgres, loaded by the first PostgreSQL store: a controller on its embedded store never loads it. */
type Pg = (typeof import('pg'))['default'];
const loadPg = async (): Promise<Pg> => (await import('pg')).default;

/** pg's own parsers, but int8 as a number: per pool, so other users of `pg` in the process keep theirs. */
function typesOf(pg: Pg): { getTypeParser: Pg['types']['getTypeParser'] } {
  return {
    getTypeParser: ((oid: number, format?: 'text' | 'binary'): unknown => {
      if (oid === INT8_OID && format !== 'binary') return parseInt8;
      const parser: unknown = pg.types.getTypeParser(oid, format);
      return parser;
    }) as Pg['types']['getTypeParser'],
  };
}

type Queryable = Pick<PoolClient, 'query'>;

function client(db: Queryable, pool: Pool): SqlClient {
  return {
    async query<T>(sql: string, params: readonly unknown[] = []) {
      const r = await db.query(sql, params as unknown[]);
      return { rows: r.rows as T[] };
    },
    async exec(sql: string) {
      await db.query(sql);
    },
    async transaction<T>(fn: (tx: SqlClient) => Promise<T>): Promise<T> {
      // Nested: the outer transaction's connection already holds it.
      if (db !== pool) return fn(client(db, pool));
      const conn = await pool.connect();
      let broken: Error | undefined;
      // A checked-out connection that breaks between two statements (the server restarting, an
      // administrator ending it) emits 'error': without a listener that would end the process.
      // The next statement fails instead, and the connection is not given back to the pool.
      const onError = (err: Error) => {
        broken = err;
      };
      conn.on('error', onError);
      try {
        await conn.query('begin');
        const out = await fn(client(conn, pool));
        await conn.query('commit');
        return out;
      } catch (err) {
        try {
          await conn.query('rollback');
        } catch (rollbackErr) {
          // A connection that cannot even roll back is not given to anyone else.
          broken = rollbackErr instanceof Error ? rollbackErr : new Error(String(rollbackErr));
        }
        throw err;
      } finally {
        conn.off('error', onError);
        conn.release(broken);
      }
    },
    async close() {
      await pool.end();
    },
  };
}

/**
 * Opens the store on a PostgreSQL server and applies pending migrations (under an advisory lock:
 * controllers starting at once migrate once). Throws {@link StoreUrlError} for a URL that is
 * not a PostgreSQL one, {@link StoreUnavailableError} when the server cannot be reached, refuses
 * the login or the migrations fail; both name the URL without its password.
 */
export async function openPostgresStore(opts: PostgresStoreOptions | string): Promise<SqlStore> {
  const o: PostgresStoreOptions = typeof opts === 'string' ? { url: opts } : opts;
  checkPostgresUrl(o.url);
  const poolSize = o.poolSize ?? DEFAULT_POOL_SIZE;
  if (!Number.isInteger(poolSize) || poolSize < 1 || poolSize > MAX_POOL_SIZE) {
    throw new StoreUrlError(`pool size ${poolSize}: expected a whole number from 1 to ${MAX_POOL_SIZE}`);
  }
  const shown = redactStoreUrl(o.url);
  const pg = await loadPg();
  let pool: Pool;
  try {
    pool = new pg.Pool({
      connectionString: o.url,
      max: poolSize,
      connectionTimeoutMillis: o.connectTimeoutMs ?? 10_000,
      idleTimeoutMillis: 30_000,
      keepAlive: true,
      application_name: o.applicationName ?? 'drover',
      types: typesOf(pg),
    });
  } catch (err) {
    // pg-connection-string reads sslrootcert/sslcert/sslkey files while parsing.
    throw new StoreUnavailableError(shown, err);
  }
  // An idle connection that breaks must not bring the process down (an 'error' event without a
  // listener would); the pool replaces it.
  pool.on('error', (err) => o.onIdleError?.(err));
  try {
    return await SqlStore.open(client(pool, pool));
  } catch (err) {
    await pool.end().catch(() => undefined);
    throw new StoreUnavailableError(shown, err);
  }
}
