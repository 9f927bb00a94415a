/**
 * Stores: the controller's durable state.
 *
 * ```ts
 * const store = await openPgliteStore('./.drover/db');
 * await store.putApp({ name: 'shop', spec, appDir: '/srv/shop', at: clock.now() });
 * ```
 */
export type * from './types.js';
export { SqlStore, type SqlClient } from './sql.js';
export { openPgliteStore, StoreOpenError } from './pglite.js';
export { TenantConflictError } from './types.js';
