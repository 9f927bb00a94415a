// drover-test: alone (runs PostgreSQL clusters under the store's whole conformance load)
/**
 * The store conformance suite against embedded PGlite (in memory). The same suite runs against
 * PostgreSQL in test/store-postgres.test.ts.
 */
import { openPgliteStore } from '../src/adapters/store/index.js';
import { storeConformance } from './store-conformance.js';

storeConformance('pglite (memory)', async () => ({ store: await openPgliteStore(), cleanup: () => {} }), { manyConnections: false });
