/**
 * A store whose writes are fenced by a lease: each write (and each transaction) first checks, in
 * the same transaction, that the lease is still held with the given epoch, and locks it against a
 * change of hands until it commits. A deposed leader's writes are refused ({@link LeaseLostError})
 * and leave nothing behind, however late they arrive; reads pass through unchecked (a standby
 * serves them). Without a fence (a standby, a leader that stepped down) every write is refused.
 *
 * Used on a shared database (PostgreSQL), where two controllers can write. The embedded store
 * has one writer by construction (the data folder's lock), so it needs none.
 */
import { LeaseLostError, type Store } from './types.js';

/** The lease a store's writes are made under. */
export interface Fence {
  readonly name: string;
  readonly holder: string;
  readonly epoch: number;
}

type Args<K extends keyof Store> = Store[K] extends (...a: infer A) => unknown ? A : never;
type Result<K extends keyof Store> = Store[K] extends (...a: never[]) => infer R ? Awaited<R> : never;

export class FencedStore implements Store {
  #fence: Fence | undefined;

  constructor(
    private readonly inner: Store,
    /** Named in the error a write gets when there is no fence. */
    private readonly lease: string,
  ) {}

  /** Writes from now on are made under `fence`; undefined: refused (standby). */
  setFence(fence: Fence | undefined): void {
    this.#fence = fence;
  }

  get fence(): Fence | undefined {
    return this.#fence;
  }

  private async fenced<T>(fn: (tx: Store) => Promise<T>): Promise<T> {
    const f = this.#fence;
    if (!f) throw new LeaseLostError(this.lease, 'this controller', 0);
    return this.inner.transaction(async (tx) => {
      await tx.assertLease(f.name, f.holder, f.epoch);
      return fn(tx);
    });
  }

  private write<K extends keyof Store>(method: K, ...args: Args<K>): Promise<Result<K>> {
    return this.fenced((tx) => (tx[method] as (...a: Args<K>) => Promise<Result<K>>).apply(tx, args));
  }

  close(): Promise<void> {
    return this.inner.close();
  }
  transaction<T>(fn: (tx: Store) => Promise<T>): Promise<T> {
    return this.fenced(fn);
  }

  // ---- writes: fenced
  putApp(...a: Args<'putApp'>) { return this.write('putApp', ...a); }
  setAppDeleting(...a: Args<'setAppDeleting'>) { return this.write('setAppDeleting', ...a); }
  deleteApp(...a: Args<'deleteApp'>) { return this.write('deleteApp', ...a); }
  setRoleCount(...a: Args<'setRoleCount'>) { return this.write('setRoleCount', ...a); }
  setPolicyState(...a: Args<'setPolicyState'>) { return this.write('setPolicyState', ...a); }
  insertInstance(...a: Args<'insertInstance'>) { return this.write('insertInstance', ...a); }
  updateInstance(...a: Args<'updateInstance'>) { return this.write('updateInstance', ...a); }
  putOrder(...a: Args<'putOrder'>) { return this.write('putOrder', ...a); }
  ackOrder(...a: Args<'ackOrder'>) { return this.write('ackOrder', ...a); }
  appendEvent(...a: Args<'appendEvent'>) { return this.write('appendEvent', ...a); }
  pruneEvents(...a: Args<'pruneEvents'>) { return this.write('pruneEvents', ...a); }
  pruneOrders(...a: Args<'pruneOrders'>) { return this.write('pruneOrders', ...a); }
  pruneFleet(...a: Args<'pruneFleet'>) { return this.write('pruneFleet', ...a); }
  createTenant(...a: Args<'createTenant'>) { return this.write('createTenant', ...a); }
  updateTenant(...a: Args<'updateTenant'>) { return this.write('updateTenant', ...a); }
  reserveSeat(...a: Args<'reserveSeat'>) { return this.write('reserveSeat', ...a); }
  reserveMove(...a: Args<'reserveMove'>) { return this.write('reserveMove', ...a); }
  appendNotification(...a: Args<'appendNotification'>) { return this.write('appendNotification', ...a); }
  createJoinToken(...a: Args<'createJoinToken'>) { return this.write('createJoinToken', ...a); }
  revokeJoinToken(...a: Args<'revokeJoinToken'>) { return this.write('revokeJoinToken', ...a); }
  useJoinToken(...a: Args<'useJoinToken'>) { return this.write('useJoinToken', ...a); }
  insertNode(...a: Args<'insertNode'>) { return this.write('insertNode', ...a); }
  updateNode(...a: Args<'updateNode'>) { return this.write('updateNode', ...a); }

  // ---- reads, and the lease itself: not fenced
  getApp(...a: Args<'getApp'>) { return this.inner.getApp(...a); }
  listApps(...a: Args<'listApps'>) { return this.inner.listApps(...a); }
  listRoles(...a: Args<'listRoles'>) { return this.inner.listRoles(...a); }
  getInstance(...a: Args<'getInstance'>) { return this.inner.getInstance(...a); }
  listInstances(...a: Args<'listInstances'>) { return this.inner.listInstances(...a); }
  pendingOrders(...a: Args<'pendingOrders'>) { return this.inner.pendingOrders(...a); }
  listEvents(...a: Args<'listEvents'>) { return this.inner.listEvents(...a); }
  getTenant(...a: Args<'getTenant'>) { return this.inner.getTenant(...a); }
  listTenants(...a: Args<'listTenants'>) { return this.inner.listTenants(...a); }
  listTenantSeats(...a: Args<'listTenantSeats'>) { return this.inner.listTenantSeats(...a); }
  seatsUsed(...a: Args<'seatsUsed'>) { return this.inner.seatsUsed(...a); }
  listNotifications(...a: Args<'listNotifications'>) { return this.inner.listNotifications(...a); }
  getJoinToken(...a: Args<'getJoinToken'>) { return this.inner.getJoinToken(...a); }
  listJoinTokens(...a: Args<'listJoinTokens'>) { return this.inner.listJoinTokens(...a); }
  getNode(...a: Args<'getNode'>) { return this.inner.getNode(...a); }
  listNodes(...a: Args<'listNodes'>) { return this.inner.listNodes(...a); }
  acquireLease(...a: Args<'acquireLease'>) { return this.inner.acquireLease(...a); }
  renewLease(...a: Args<'renewLease'>) { return this.inner.renewLease(...a); }
  releaseLease(...a: Args<'releaseLease'>) { return this.inner.releaseLease(...a); }
  getLease(...a: Args<'getLease'>) { return this.inner.getLease(...a); }
  assertLease(...a: Args<'assertLease'>) { return this.inner.assertLease(...a); }
}
