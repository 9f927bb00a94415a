import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deferredStore } from './deferred.js';
import type { Store } from './types.js';

void test('a deferred store: calls wait for the store, then run on it; a store that failed to open fails every call with its error', async () => {
  let open!: (s: Store) => void;
  const calls: string[] = [];
  const real = { listApps: async () => { calls.push('listApps'); return []; }, close: async () => { calls.push('close'); } } as unknown as Store;
  const store = deferredStore(new Promise<Store>((r) => (open = r)));
  const early = store.listApps();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(calls, [], 'nothing runs before the store is open');
  open(real);
  assert.deepEqual(await early, []);
  await store.close();
  assert.deepEqual(calls, ['listApps', 'close']);
  // Not a thenable: awaiting it gives the store, not a wait for it.
  assert.equal(await Promise.resolve(store), store);

  const broken = new Error('damaged');
  const failing = Promise.reject(broken);
  failing.catch(() => undefined);
  const bad = deferredStore(failing);
  await assert.rejects(bad.listApps(), (err) => err === broken);
  await assert.rejects(bad.getApp('x'), (err) => err === broken);
});
