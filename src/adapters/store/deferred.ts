/**
 * A store that is still opening, usable at once: each call waits for the store, then runs on
 * it. The controller builds its API and listens while the embedded store starts, instead of
 * after; requests that come meanwhile wait for the whole start (server.ts, api.ts).
 */
import type { Store } from './types.js';

/** Every member of the store is a method that answers with a promise: a call can wait. */
type AsyncOnly = { [K in keyof Store]: Store[K] extends (...a: never[]) => Promise<unknown> ? never : K }[keyof Store];
const everyMethodIsAsync: [AsyncOnly] extends [never] ? true : never = true;
void everyMethodIsAsync;

/**
 * `opening` as a store now. A call made before it opened waits for it; if it failed, the call
 * fails with the same error.
 */
export function deferredStore(opening: Promise<Store>): Store {
  return new Proxy({} as Store, {
    get(_target, key) {
      // Not a thenable: `await deferredStore(...)` must not wait for the store through `then`.
      if (key === 'then' || typeof key === 'symbol') return undefined;
      return async (...args: unknown[]) => {
        const store = await opening;
        const method = (store as unknown as Record<string, unknown>)[key];
        if (typeof method !== 'function') throw new TypeError(`the store has no method ${key}`);
        return (method as (...a: unknown[]) => unknown).apply(store, args);
      };
    },
  });
}
