/**
 * Stores: the controller's durable state.
 *
 * ```ts
 * const store = await openPgliteStore('./.drover/db');            // embedded
 * const store = await openPostgresStore('postgres://drover@db/drover'); // a PostgreSQL server
 * await store.putApp({ name: 'shop', spec, appDir: '/srv/shop', at: clock.now() });
 * ```
 */
export type * from './types.js';
export { SqlStore, type SqlClient } from './sql.js';
export { openPgliteStore, StoreOpenError, type PgliteStoreOptions } from './pglite.js';
export { dropStoreSeeds } from './pglite-template.js';
export { deferredStore } from './deferred.js';
export { startEmbeddedDb } from './pglite-thread.js';
export {
  checkPostgresUrl, DEFAULT_POOL_SIZE, isPostgresUrl, MAX_POOL_SIZE, openPostgresStore, redactStoreUrl, StoreUnavailableError, StoreUrlError,
  type PostgresStoreOptions,
} from './postgres.js';
export { LeaseLostError, TenantConflictError } from './types.js';
export { FencedStore, type Fence } from './fenced.js';
