/**
 * The store conformance suite (a module, not a test file): run by test/store-conformance.test.ts
 * against embedded PGlite and a private PostgreSQL server.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAppFile } from '../src/core/index.js';
import { FencedStore, LeaseLostError, TenantConflictError, type NewInstance, type NewTenant, type Store } from '../src/adapters/store/index.js';

const spec = parseAppFile(`
app: shop
roles:
  web:
    count: 2
    start: web
  db:
    min: 1
    max: 3
    start: db
`);

const tenant = (id: string, over: Partial<NewTenant> = {}): NewTenant => ({
  id, app: 'shop', role: 'web', name: id.replace(/^t-/, 'lab-'), host: null, callbackUrl: null, email: null, createdAt: 100, ...over,
});

const rec = (id: string, over: Partial<NewInstance> = {}): NewInstance => ({
  id, app: 'shop', role: 'web', pool: null, state: 'provisioning', goal: 'run', epoch: 1, joinToken: 't', ip: '127.0.0.1', port: 1000,
  workdir: '/tmp/x', providerRef: { pid: 1 }, roleHash: 'h', exports: null, importsSent: null, importsApplied: null,
  assignOrderId: null, stopOrderId: null, drainOrderId: null, restarts: 0, message: null, lastExit: null, createdAt: 1, startedAt: null,
  stateSince: 1, stopRequestedAt: null, drainRequestedAt: null, destroyedAt: null, ...over,
});

/** What a suite run needs: a fresh, empty store per test. */
export type OpenStore = () => Promise<{ store: Store; cleanup: () => void | Promise<void> }>;

/**
 * Every method of the {@link Store} interface. `satisfies` makes the compiler refuse a list that
 * misses one, so a method added to Store must be added here — and the last test of the suite
 * fails until some test calls it.
 */
export const STORE_METHODS = {
  close: true, transaction: true,
  putApp: true, getApp: true, listApps: true, setAppDeleting: true, deleteApp: true,
  listRoles: true, setRoleCount: true, setPolicyState: true,
  insertInstance: true, updateInstance: true, getInstance: true, listInstances: true,
  putOrder: true, ackOrder: true, pendingOrders: true,
  appendEvent: true, listEvents: true, pruneEvents: true, pruneOrders: true, pruneFleet: true,
  createTenant: true, getTenant: true, listTenants: true, updateTenant: true, reserveSeat: true, reserveMove: true, seatsUsed: true, listTenantSeats: true,
  appendNotification: true, listNotifications: true,
  acquireLease: true, renewLease: true, releaseLease: true, getLease: true, assertLease: true,
  createJoinToken: true, getJoinToken: true, listJoinTokens: true, revokeJoinToken: true, useJoinToken: true,
  insertNode: true, updateNode: true, getNode: true, listNodes: true,
} as const satisfies Record<keyof Store, true>;

/** `store`, noting in `seen` the name of every method called on it (or on a transaction of it). */
function tracked(store: Store, seen: Set<string>): Store {
  return new Proxy(store, {
    get(target, prop, receiver) {
      const v: unknown = Reflect.get(target, prop, receiver);
      if (typeof prop !== 'string' || typeof v !== 'function') return v;
      return (...args: unknown[]): unknown => {
        seen.add(prop);
        if (prop === 'transaction') {
          const fn = args[0] as (tx: Store) => Promise<unknown>;
          return target.transaction((tx) => fn(tracked(tx, seen)));
        }
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}

/**
 * The store conformance suite: what every Store implementation must do, whatever runs it (one
 * connection or many). Registers its tests under `name`; `openFresh` gives each test an empty store.
 */
export function storeConformance(name: string, openFresh: OpenStore, opts: { manyConnections: boolean }) {
  const seen = new Set<string>();
  const open = async () => {
    const { store, cleanup } = await openFresh();
    return { store: tracked(store, seen), cleanup };
  };

  test(`${name}: apps keep their spec, role order and counts; a hand-set count survives a re-apply`, async () => {
    const { store, cleanup } = await open();
    try {
      const first = await store.putApp({ name: 'shop', spec, appDir: '/a', at: 10 });
      assert.equal(first.changed, true);
      assert.deepEqual(Object.keys(first.app.spec.roles), ['web', 'db']);
      assert.deepEqual(first.app.spec, spec);
      const same = await store.putApp({ name: 'shop', spec, appDir: '/a', at: 11 });
      assert.equal(same.changed, false);
      assert.equal(same.app.generation, 1);
      await store.setRoleCount('shop', 'db', 3, true);
      await store.putApp({ name: 'shop', spec, appDir: '/b', at: 12 });
      const roles = await store.listRoles('shop');
      assert.deepEqual(roles.map((r) => [r.role, r.desired, r.pinned]), [['db', 3, true], ['web', 2, false]]);
      assert.equal((await store.getApp('shop'))?.generation, 2);
    } finally {
      await store.close();
      await cleanup();
    }
  });

  test(`${name}: instances, orders and events`, async () => {
    const { store, cleanup } = await open();
    try {
      await store.putApp({ name: 'shop', spec, appDir: '/a', at: 10 });
      await store.insertInstance(rec('i-1'));
      await store.insertInstance(rec('i-2', { createdAt: 2 }));
      await store.updateInstance('i-1', { state: 'serving', exports: { url: 'http://x' }, lastExit: { code: 1, signal: null, tail: ['a'] } });
      const i1 = await store.getInstance('i-1');
      assert.equal(i1?.state, 'serving');
      assert.deepEqual(i1?.exports, { url: 'http://x' });
      assert.deepEqual(i1?.lastExit, { code: 1, signal: null, tail: ['a'] });
      await store.updateInstance('i-2', { destroyedAt: 50, state: 'failed' });
      assert.deepEqual((await store.listInstances({ app: 'shop' })).map((i) => i.id), ['i-1']);
      assert.deepEqual((await store.listInstances({ app: 'shop', goneSince: 40 })).map((i) => i.id), ['i-1', 'i-2']);
      assert.deepEqual((await store.listInstances({ app: 'shop', goneSince: 60 })).map((i) => i.id), ['i-1']);

      await store.putOrder({ id: 'o-1', instanceId: 'i-1', kind: 'stop', payload: { id: 'o-1', kind: 'stop', reason: 'x' }, createdAt: 5 });
      await store.putOrder({ id: 'o-1', instanceId: 'i-1', kind: 'stop', payload: { id: 'o-1', kind: 'stop', reason: 'x' }, createdAt: 5 });
      assert.equal((await store.pendingOrders('i-1')).length, 1, 'an order id is stored once');
      assert.equal(await store.ackOrder('o-1', 'i-2', 6), false, 'another instance cannot acknowledge it');
      assert.equal(await store.ackOrder('o-1', 'i-1', 6), true);
      assert.equal((await store.pendingOrders('i-1')).length, 0);

      for (let k = 0; k < 5; k++) await store.appendEvent({ at: k, app: 'shop', role: null, instance: null, kind: 'app.apply', message: `m${k}`, data: null });
      const latest = await store.listEvents({ limit: 2 });
      assert.deepEqual(latest.map((e) => e.message), ['m3', 'm4']);
      const after = await store.listEvents({ after: latest[0]!.id });
      assert.deepEqual(after.map((e) => e.message), ['m4']);
    } finally {
      await store.close();
      await cleanup();
    }
  });

  test(`${name}: retention prunes events by age and by count, newest kept`, async () => {
    const { store, cleanup } = await open();
    try {
      for (let k = 0; k < 10; k++) await store.appendEvent({ at: 100 + k, app: 'shop', role: null, instance: null, kind: 'app.apply', message: `m${k}`, data: null });
      assert.equal(await store.pruneEvents({}), 0, 'no bound, nothing deleted');
      assert.equal(await store.pruneEvents({ before: 103 }), 3, 'older than the age');
      assert.deepEqual((await store.listEvents({ limit: 100 })).map((e) => e.message), ['m3', 'm4', 'm5', 'm6', 'm7', 'm8', 'm9']);
      assert.equal(await store.pruneEvents({ keep: 4 }), 3, 'beyond the count');
      assert.deepEqual((await store.listEvents({ limit: 100 })).map((e) => e.message), ['m6', 'm7', 'm8', 'm9']);
      assert.equal(await store.pruneEvents({ keep: 4 }), 0, 'already within the count');
      assert.equal(await store.pruneEvents({ before: 108, keep: 3 }), 2, 'both bounds at once');
      assert.deepEqual((await store.listEvents({ limit: 100 })).map((e) => e.message), ['m8', 'm9']);
      const next = await store.appendEvent({ at: 200, app: null, role: null, instance: null, kind: 'app.apply', message: 'after', data: null });
      assert.ok(next.id > 10, 'ids are not reused after pruning');
      assert.equal(await store.pruneEvents({ keep: 0 }), 3);
      assert.deepEqual(await store.listEvents({}), []);
    } finally {
      await store.close();
      await cleanup();
    }
  });

  test(`${name}: retention prunes old fleet records: gone nodes, expired or revoked tokens, used-up instance tokens; never one a ready node holds`, async () => {
    const { store, cleanup } = await open();
    try {
      const token = (id: string, o: { maxUses?: number | null; expiresAt?: number | null; instanceId?: string; createdAt?: number } = {}) =>
        store.createJoinToken({ id, hash: `h-${id}`, app: 'shop', labels: null, maxUses: o.maxUses ?? null, expiresAt: o.expiresAt ?? null, createdAt: o.createdAt ?? 1, ...(o.instanceId ? { instanceId: o.instanceId } : {}) });
      const node = (id: string, tokenId: string, state: 'ready' | 'gone' | 'revoked', lastSeenAt: number) =>
        store.insertNode({ id, app: 'shop', tokenId, hostname: id, addresses: ['10.0.0.1'], labels: {}, nodeKey: 'k', state, joinedAt: 1, lastSeenAt });
      await token('t-expired', { expiresAt: 50 });
      await token('t-expired-held', { expiresAt: 50 });
      await token('t-revoked');
      await store.revokeJoinToken('t-revoked', 60);
      await token('t-used-up-operator', { maxUses: 1 });
      assert.ok(await store.useJoinToken('t-used-up-operator', 10));
      await token('t-cloud-used', { maxUses: 1, expiresAt: 5000, instanceId: 'i-1' });
      assert.ok(await store.useJoinToken('t-cloud-used', 10));
      await token('t-cloud-unused', { maxUses: 1, expiresAt: 5000, instanceId: 'i-2' });
      await token('t-young-revoked', { createdAt: 150 });
      await store.revokeJoinToken('t-young-revoked', 160);
      await node('n-gone-old', 't-cloud-used', 'gone', 40);
      await node('n-gone-new', 't-cloud-used', 'gone', 150);
      await node('n-revoked-old', 't-revoked', 'revoked', 70);
      await node('n-ready', 't-expired-held', 'ready', 20);
      assert.deepEqual(await store.pruneFleet({ before: 100 }), { tokens: 3, nodes: 2 });
      assert.deepEqual((await store.listNodes()).map((n) => n.id).sort(), ['n-gone-new', 'n-ready']);
      assert.deepEqual(
        (await store.listJoinTokens()).map((t) => t.id).sort(),
        ['t-cloud-unused', 't-expired-held', 't-used-up-operator', 't-young-revoked'],
        'expired, revoked and used-up cloud tokens go; one a ready node holds, an unused or operator one, and a young one stay',
      );
      assert.deepEqual(await store.pruneFleet({ before: 100 }), { tokens: 0, nodes: 0 });
    } finally {
      await store.close();
      await cleanup();
    }
  });

  test(`${name}: retention prunes acknowledged orders by age; pending orders of live instances stay`, async () => {
    const { store, cleanup } = await open();
    try {
      await store.putApp({ name: 'shop', spec, appDir: '/a', at: 10 });
      await store.insertInstance(rec('i-live'));
      await store.insertInstance(rec('i-gone', { destroyedAt: 20 }));
      await store.insertInstance(rec('i-gone-late', { destroyedAt: 500 }));
      const order = (id: string, instanceId: string, createdAt: number) =>
        store.putOrder({ id, instanceId, kind: 'stop', payload: { id, kind: 'stop', reason: 'x' }, createdAt });
      await order('o-old-acked', 'i-live', 1);
      await store.ackOrder('o-old-acked', 'i-live', 50);
      await order('o-new-acked', 'i-live', 2);
      await store.ackOrder('o-new-acked', 'i-live', 150);
      await order('o-old-pending', 'i-live', 3);
      await order('o-gone-pending', 'i-gone', 4);
      await order('o-gone-late-pending', 'i-gone-late', 5);
      assert.equal(await store.pruneOrders({ ackedBefore: 100 }), 2, 'the old acknowledged one and the one to an instance destroyed long ago');
      assert.deepEqual((await store.pendingOrders('i-live')).map((o) => o.id), ['o-old-pending'], 'a pending order is kept whatever its age');
      assert.deepEqual((await store.pendingOrders('i-gone')).map((o) => o.id), []);
      assert.deepEqual((await store.pendingOrders('i-gone-late')).map((o) => o.id), ['o-gone-late-pending']);
      assert.equal(await store.pruneOrders({ ackedBefore: 100 }), 0);
      assert.equal(await store.pruneOrders({ ackedBefore: 1000 }), 2, 'the newer acknowledged one, and the later-destroyed instance');
      assert.deepEqual((await store.pendingOrders('i-live')).map((o) => o.id), ['o-old-pending']);
    } finally {
      await store.close();
      await cleanup();
    }
  });

  test(`${name}: a failed transaction leaves nothing behind`, async () => {
    const { store, cleanup } = await open();
    try {
      await store.putApp({ name: 'shop', spec, appDir: '/a', at: 10 });
      await assert.rejects(
        store.transaction(async (tx) => {
          await tx.insertInstance(rec('i-9'));
          throw new Error('boom');
        }),
        /boom/,
      );
      assert.equal(await store.getInstance('i-9'), undefined);
    } finally {
      await store.close();
      await cleanup();
    }
  });

  test(`${name}: listing apps, marking one deleting, forgetting it with its roles`, async () => {
    const { store, cleanup } = await open();
    try {
      await store.putApp({ name: 'shop', spec, appDir: '/a', at: 1 });
      await store.putApp({ name: 'blog', spec: { ...spec, app: 'blog' }, appDir: '/b', at: 2 });
      assert.deepEqual((await store.listApps()).map((a) => a.name).sort(), ['blog', 'shop']);
      await store.setAppDeleting('shop', 3);
      assert.equal((await store.getApp('shop'))!.deleting, true);
      const again = await store.putApp({ name: 'shop', spec, appDir: '/a', at: 4 });
      assert.equal(again.app.deleting, false, 'applying again cancels a delete');
      await store.deleteApp('shop');
      assert.equal(await store.getApp('shop'), undefined);
      assert.deepEqual(await store.listRoles('shop'), []);
      assert.deepEqual((await store.listApps()).map((a) => a.name), ['blog']);
    } finally {
      await store.close();
      await cleanup();
    }
  });

  test(`${name}: conditional writes: the version read decides, one of two racing writers wins, no update is lost`, async () => {
    const { store, cleanup } = await open();
    try {
      await store.putApp({ name: 'shop', spec, appDir: '/a', at: 1 });
      await store.insertInstance(rec('i-1'));
      const read = (await store.getInstance('i-1'))!;
      assert.equal(read.version, 0);
      assert.equal(await store.updateInstance('i-1', { state: 'spare' }, { ifVersion: read.version }), true);
      assert.equal(await store.updateInstance('i-1', { state: 'failed' }, { ifVersion: read.version }), false, 'a stale version is refused');
      const now = (await store.getInstance('i-1'))!;
      assert.equal(now.state, 'spare', 'nothing of the refused write applied');
      assert.equal(now.version, 1);
      assert.equal(await store.updateInstance('i-1', { message: 'm' }), true, 'unconditional writes still go, and bump the version');
      assert.equal((await store.getInstance('i-1'))!.version, 2);
      assert.equal(await store.updateInstance('i-nope', { message: 'm' }), false);

      // Ten writers race from the same read: exactly one wins.
      const base = (await store.getInstance('i-1'))!;
      const wins = await Promise.all(Array.from({ length: 10 }, (_, k) => store.updateInstance('i-1', { restarts: k + 1 }, { ifVersion: base.version })));
      assert.equal(wins.filter(Boolean).length, 1);
      // Read-modify-write with retry: no increment is lost.
      await store.updateInstance('i-1', { restarts: 0 });
      const bump = async () => {
        for (let k = 0; k < 5; k++) {
          for (;;) {
            const cur = (await store.getInstance('i-1'))!;
            if (await store.updateInstance('i-1', { restarts: cur.restarts + 1 }, { ifVersion: cur.version })) break;
          }
        }
      };
      await Promise.all(Array.from({ length: 6 }, bump));
      assert.equal((await store.getInstance('i-1'))!.restarts, 30);

      // Roles: a pin set after the autoscaler's read wins over the autoscaler's write.
      const [web] = (await store.listRoles('shop')).filter((r) => r.role === 'web');
      assert.equal(await store.setRoleCount('shop', 'web', 5, true), true, 'the operator pins 5');
      assert.equal(await store.setRoleCount('shop', 'web', 1, false, { ifVersion: web!.version }), false, 'the autoscaler, planning on the old read, loses');
      const after = (await store.listRoles('shop')).find((r) => r.role === 'web')!;
      assert.deepEqual([after.desired, after.pinned], [5, true]);
      assert.equal(await store.setRoleCount('shop', 'nope', 1, false), false);
      await store.setPolicyState('shop', 'web', { x: 1 });
      assert.equal((await store.listRoles('shop')).find((r) => r.role === 'web')!.version, after.version, 'policy state does not bump the version');
    } finally {
      await store.close();
      await cleanup();
    }
  });
  test(`${name}: tenants: created pending in arrival order, read, listed by app, role, state and instance, updated with versions`, async () => {
    const { store, cleanup } = await open();
    try {
      const a = await store.createTenant(tenant('t-1', { host: 'Lab-1.Labs.Example.Test', callbackUrl: 'https://hooks.example.test/x', email: 'ops@example.test' }));
      assert.equal(a.created, true);
      assert.deepEqual(
        { ...a.tenant, seq: 0 },
        {
          id: 't-1', app: 'shop', role: 'web', name: 'lab-1', host: 'lab-1.labs.example.test', state: 'pending', instanceId: null, targetInstanceId: null,
          reason: null, pinned: false, callbackUrl: 'https://hooks.example.test/x', email: 'ops@example.test', idempotencyKey: null, attempts: 0,
          lastOutput: null, seq: 0, createdAt: 100, updatedAt: 100, version: 0,
        },
        'hosts are kept lowercase',
      );
      await store.createTenant(tenant('t-2', { role: 'db', pinned: true, reason: 'waiting' }));
      await store.createTenant(tenant('t-3', { app: 'other' }));
      assert.deepEqual(await store.getTenant('t-1'), a.tenant);
      assert.equal(await store.getTenant('t-nope'), undefined);
      assert.deepEqual((await store.listTenants()).map((t) => t.id), ['t-1', 't-2', 't-3'], 'arrival order');
      const all = await store.listTenants();
      assert.ok(all[0]!.seq < all[1]!.seq && all[1]!.seq < all[2]!.seq);
      assert.deepEqual((await store.listTenants({ app: 'shop' })).map((t) => t.id), ['t-1', 't-2']);
      assert.deepEqual((await store.listTenants({ app: 'shop', role: 'db' })).map((t) => [t.id, t.pinned, t.reason]), [['t-2', true, 'waiting']]);

      const v0 = (await store.getTenant('t-1'))!;
      assert.equal(await store.updateTenant('t-1', { state: 'failed', reason: 'add exited with code 3', lastOutput: ['a', 'b'], attempts: 6, updatedAt: 200 }, { ifVersion: v0.version }), true);
      assert.equal(await store.updateTenant('t-1', { state: 'pending' }, { ifVersion: v0.version }), false, 'a stale version is refused');
      const v1 = (await store.getTenant('t-1'))!;
      assert.deepEqual([v1.state, v1.reason, v1.lastOutput, v1.attempts, v1.updatedAt, v1.version], ['failed', 'add exited with code 3', ['a', 'b'], 6, 200, 1]);
      assert.equal(await store.updateTenant('t-1', { pinned: true, host: 'X.Example.Test' }), true);
      assert.deepEqual([(await store.getTenant('t-1'))!.host, (await store.getTenant('t-1'))!.version], ['x.example.test', 2]);
      assert.equal(await store.updateTenant('t-nope', { pinned: true }), false);
      assert.deepEqual((await store.listTenants({ state: 'failed' })).map((t) => t.id), ['t-1']);
      assert.deepEqual((await store.listTenants({ state: ['failed', 'pending'], app: 'shop' })).map((t) => t.id), ['t-1', 't-2']);
      assert.deepEqual(await store.listTenants({ state: [] }), []);
    } finally {
      await store.close();
      await cleanup();
    }
  });

  test(`${name}: tenants: an idempotency key returns the same tenant, never a second (also racing); a duplicate name or host is refused naming the field`, async () => {
    const { store, cleanup } = await open();
    try {
      const first = await store.createTenant(tenant('t-1'), 'key-1');
      assert.equal(first.created, true);
      assert.equal(first.tenant.idempotencyKey, 'key-1');
      const again = await store.createTenant(tenant('t-9', { name: 'other' }), 'key-1');
      assert.deepEqual(again, { tenant: first.tenant, created: false }, 'the same key: the first tenant, whatever the request carries');
      const elsewhere = await store.createTenant(tenant('t-2', { app: 'other' }), 'key-1');
      assert.equal(elsewhere.created, true, 'keys are per app');

      // Twenty racing requests with one key: one tenant.
      const racing = await Promise.all(Array.from({ length: 20 }, (_, k) => store.createTenant(tenant(`t-r${k}`, { name: `race-${k}` }), 'key-race')));
      assert.equal(racing.filter((r) => r.created).length, 1);
      assert.equal(new Set(racing.map((r) => r.tenant.id)).size, 1);

      await store.createTenant(tenant('t-3', { name: 'acme', host: 'acme.labs.example.test' }));
      await assert.rejects(store.createTenant(tenant('t-4', { name: 'acme' })), (e: unknown) => {
        assert.ok(e instanceof TenantConflictError);
        assert.deepEqual([e.field, e.value, e.existingId], ['name', 'acme', 't-3']);
        return true;
      });
      await assert.rejects(store.createTenant(tenant('t-5', { name: 'acme2', host: 'ACME.labs.example.test' }), 'key-5'), (e: unknown) => {
        assert.ok(e instanceof TenantConflictError);
        assert.deepEqual([e.field, e.value], ['host', 'acme.labs.example.test']);
        assert.match(e.message, /a tenant with host "acme.labs.example.test" already exists in this app \(t-3\)/);
        return true;
      });
      assert.equal(await store.getTenant('t-5'), undefined, 'nothing stored');
      assert.equal((await store.createTenant(tenant('t-5', { name: 'acme2' }), 'key-5')).created, true, 'the refused key was not taken');
      await assert.rejects(store.createTenant(tenant('t-3', { name: 'fresh' })), /tenant id t-3 is taken/);
      // Once removed, its name and host may be signed up again.
      await store.updateTenant('t-3', { state: 'removed' });
      assert.equal((await store.createTenant(tenant('t-6', { name: 'acme', host: 'acme.labs.example.test' }))).created, true);
    } finally {
      await store.close();
      await cleanup();
    }
  });

  test(`${name}: reserveSeat takes a seat only on a live instance of the tenant's role with room; seatsUsed counts; a seat is never taken by updateTenant`, async () => {
    const { store, cleanup } = await open();
    try {
      await store.insertInstance(rec('i-1', { state: 'serving' }));
      await store.insertInstance(rec('i-boot', { state: 'starting' }));
      await store.insertInstance(rec('i-drain', { state: 'serving', goal: 'drain' }));
      await store.insertInstance(rec('i-gone', { state: 'serving', destroyedAt: 5 }));
      await store.insertInstance(rec('i-unresp', { state: 'unresponsive' }));
      await store.insertInstance(rec('i-db', { role: 'db', state: 'serving' }));
      for (let k = 1; k <= 6; k++) await store.createTenant(tenant(`t-${k}`));

      assert.equal(await store.reserveSeat('t-1', 'i-1', 2, 300), true);
      const t1 = (await store.getTenant('t-1'))!;
      assert.deepEqual([t1.state, t1.instanceId, t1.updatedAt, t1.version], ['placing', 'i-1', 300, 1]);
      assert.equal(await store.reserveSeat('t-1', 'i-1', 2), true, 'a repeated order: the seat is already its own');
      assert.equal((await store.getTenant('t-1'))!.version, 1, '…and nothing changed');
      assert.equal(await store.reserveSeat('t-1', 'i-boot', 2), false, 'a placed tenant is not placed again elsewhere');
      assert.equal(await store.reserveSeat('t-2', 'i-1', 2), true);
      assert.equal(await store.reserveSeat('t-3', 'i-1', 2), false, 'full');
      assert.equal((await store.getTenant('t-3'))!.state, 'pending');
      assert.equal(await store.reserveSeat('t-3', 'i-boot', 2), true, 'a booting instance takes reservations');
      for (const id of ['i-drain', 'i-gone', 'i-unresp', 'i-db', 'i-nope']) assert.equal(await store.reserveSeat('t-4', id, 2), false, id);
      assert.equal(await store.reserveSeat('t-nope', 'i-1', 2), false);
      assert.equal((await store.getTenant('t-4'))!.version, 0, 'a refused reservation changes nothing');

      // A seat is held while placing, ready, moving or removing; freed by failed, pending, removed.
      await store.updateTenant('t-2', { state: 'ready' });
      assert.deepEqual(Object.fromEntries(await store.seatsUsed(['i-1', 'i-boot', 'i-db'])), { 'i-1': 2, 'i-boot': 1, 'i-db': 0 });
      await store.updateTenant('t-2', { state: 'removing' });
      assert.equal(await store.reserveSeat('t-4', 'i-1', 2), false, 'removing still holds its seat');
      await store.updateTenant('t-2', { state: 'removed' });
      assert.equal(await store.reserveSeat('t-4', 'i-1', 2), true, 'a removed tenant frees its seat');
      assert.equal(await store.reserveSeat('t-5', 'i-1', 3), true, 'capacity is the caller\'s (the role\'s current one)');
      assert.deepEqual(Object.fromEntries(await store.seatsUsed([])), {});

      // updateTenant cannot grab a seat: a seat-holding state on an instance the tenant holds none on is refused.
      assert.equal(await store.updateTenant('t-6', { state: 'placing', instanceId: 'i-boot' }), false);
      assert.equal(await store.updateTenant('t-5', { instanceId: 'i-boot' }), false, 'nor moving a placed tenant by hand');
      assert.equal(await store.updateTenant('t-5', { state: 'failed', instanceId: 'i-1', reason: 'x' }), true, 'its own instance is fine');
      assert.equal(await store.updateTenant('t-5', { state: 'pending', instanceId: null }), true);
      assert.deepEqual((await store.listTenants({ instanceId: 'i-1' })).map((t) => t.id), ['t-1', 't-2', 't-4']);
    } finally {
      await store.close();
      await cleanup();
    }
  });

  test(`${name}: reserveMove holds a seat on the target too until the move ends`, async () => {
    const { store, cleanup } = await open();
    try {
      await store.insertInstance(rec('i-1', { state: 'serving' }));
      await store.insertInstance(rec('i-2', { state: 'serving' }));
      for (let k = 1; k <= 3; k++) await store.createTenant(tenant(`t-${k}`));
      assert.equal(await store.reserveSeat('t-1', 'i-1', 1), true);
      assert.equal(await store.reserveMove('t-1', 'i-2', 1), false, 'only a ready tenant moves');
      await store.updateTenant('t-1', { state: 'ready' });
      assert.equal(await store.reserveMove('t-1', 'i-1', 1), false, 'not onto its own instance');
      assert.equal(await store.reserveMove('t-1', 'i-2', 1, 400), true);
      assert.equal(await store.reserveMove('t-1', 'i-2', 1), true, 'a repeated order');
      const moving = (await store.getTenant('t-1'))!;
      assert.deepEqual([moving.state, moving.instanceId, moving.targetInstanceId, moving.updatedAt], ['moving', 'i-1', 'i-2', 400]);
      assert.deepEqual(Object.fromEntries(await store.seatsUsed(['i-1', 'i-2'])), { 'i-1': 1, 'i-2': 1 });
      // listTenantSeats: the seat holders only (t-2, t-3 are pending), narrowly, in arrival order.
      assert.deepEqual(await store.listTenantSeats('shop'), [{ id: 't-1', role: 'web', host: null, state: 'moving', instanceId: 'i-1', targetInstanceId: 'i-2' }]);
      assert.deepEqual(await store.listTenantSeats('nope'), []);
      assert.equal(await store.reserveSeat('t-2', 'i-2', 1), false, 'the target seat is taken');
      assert.equal(await store.reserveSeat('t-2', 'i-1', 1), false, 'and so is the source seat');
      assert.equal(await store.updateTenant('t-1', { state: 'ready', instanceId: 'i-2', targetInstanceId: null }), true, 'the move ends on the target');
      assert.deepEqual(Object.fromEntries(await store.seatsUsed(['i-1', 'i-2'])), { 'i-1': 0, 'i-2': 1 });
      assert.equal(await store.reserveSeat('t-2', 'i-1', 1), true);
    } finally {
      await store.close();
      await cleanup();
    }
  });

  test(`${name}: 200 tenants racing reserveSeat for an instance of capacity 20: exactly 20 win`, async () => {
    const { store, cleanup } = await open();
    try {
      await store.insertInstance(rec('i-1', { state: 'serving' }));
      await store.insertInstance(rec('i-2', { state: 'starting' }));
      const ids = Array.from({ length: 200 }, (_, k) => `t-${k}`);
      for (const id of ids) await store.createTenant(tenant(id));
      const wins = await Promise.all(ids.map((id) => store.reserveSeat(id, 'i-1', 20)));
      assert.equal(wins.filter(Boolean).length, 20);
      assert.equal((await store.seatsUsed(['i-1'])).get('i-1'), 20);
      assert.equal((await store.listTenants({ state: 'placing' })).length, 20);
      // Each tenant racing for two instances at once (a controller and its restarted twin): one seat each, never two.
      const losers = ids.filter((_, k) => !wins[k]).slice(0, 30);
      const both = await Promise.all(losers.flatMap((id) => [store.reserveSeat(id, 'i-2', 20), store.reserveSeat(id, 'i-2', 20)]));
      assert.equal(both.filter(Boolean).length, 40, 'the repeat of a won reservation answers true');
      assert.equal((await store.seatsUsed(['i-2'])).get('i-2'), 20);
    } finally {
      await store.close();
      await cleanup();
    }
  });

  test(`${name}: notification attempts are recorded per tenant, oldest first`, async () => {
    const { store, cleanup } = await open();
    try {
      await store.createTenant(tenant('t-1'));
      await store.createTenant(tenant('t-2'));
      const n1 = await store.appendNotification({
        tenantId: 't-1', messageId: 'msg_1', kind: 'webhook', event: 'tenant.ready', target: 'https://hooks.example.test/x', attempt: 1, status: 'failed', response: 'HTTP 500', at: 10,
      });
      await store.appendNotification({ tenantId: 't-2', messageId: 'msg_2', kind: 'email', event: 'tenant.ready', target: 'ops@example.test', attempt: 1, status: 'delivered', response: '250 OK', at: 11 });
      await store.appendNotification({ ...n1, attempt: 2, status: 'delivered', response: 'HTTP 204', at: 12 });
      const list = await store.listNotifications('t-1');
      assert.deepEqual(list.map((n) => [n.messageId, n.kind, n.event, n.attempt, n.status, n.response, n.at]), [
        ['msg_1', 'webhook', 'tenant.ready', 1, 'failed', 'HTTP 500', 10],
        ['msg_1', 'webhook', 'tenant.ready', 2, 'delivered', 'HTTP 204', 12],
      ]);
      assert.equal(list[0]!.id, n1.id);
      assert.deepEqual(await store.listNotifications('t-nope'), []);
      await assert.rejects(store.appendNotification({ ...n1, tenantId: 't-nope' }), 'an attempt belongs to a tenant');
    } finally {
      await store.close();
      await cleanup();
    }
  });

  test(`${name}: every field of an instance is stored and read back as written (times as numbers, JSON as JSON); filters by role and gone`, async () => {
    const { store, cleanup } = await open();
    try {
      const now = 1_764_457_000_123; // epoch ms: a bigint column, beyond 32 bits
      const full: NewInstance = {
        id: 'i-full', app: 'shop', role: 'web', pool: '*', state: 'serving', goal: 'drain', epoch: 7, joinToken: 'tok', ip: '10.0.0.7', port: 8080,
        workdir: '/srv/i-full', providerRef: { pid: 4242, nested: { a: [1, 'b', null] } }, roleHash: 'abc123', exports: { url: 'http://10.0.0.7:8080', 'x.y': 'z' },
        importsSent: 'v2', importsApplied: 'v1', assignOrderId: 'o-a', stopOrderId: 'o-s', drainOrderId: 'o-d', restarts: 3, message: 'héllo "quoted" \\ ünïcode',
        lastExit: { code: null, signal: 'SIGKILL', tail: ['line 1', 'line 2'] }, createdAt: now, startedAt: now + 1, stateSince: now + 2, stopRequestedAt: now + 3,
        drainRequestedAt: now + 4, destroyedAt: null, slot: 2, ports: { http: 41000, admin: 41001 },
      };
      await store.insertInstance(full);
      const read = await store.getInstance('i-full');
      assert.deepEqual(read, { ...full, version: 0 });
      for (const k of ['epoch', 'port', 'restarts', 'createdAt', 'startedAt', 'stateSince', 'version'] as const) assert.equal(typeof read?.[k], 'number', k);

      const patch = {
        role: 'db', pool: null, state: 'stopping', goal: 'stop', epoch: 8, joinToken: 'tok2', ip: '10.0.0.8', port: 9090, workdir: '/w', providerRef: null, roleHash: 'h2',
        exports: null, importsSent: null, importsApplied: 'v2', assignOrderId: null, stopOrderId: null, drainOrderId: null, restarts: 4, message: null, lastExit: null,
        startedAt: null, stateSince: now + 10, stopRequestedAt: null, drainRequestedAt: null, destroyedAt: now + 20, slot: 3, ports: { http: 42000 },
      } as const;
      assert.equal(await store.updateInstance('i-full', patch), true);
      assert.deepEqual(await store.getInstance('i-full'), { ...full, ...patch, version: 1 });

      await store.insertInstance(rec('i-web'));
      await store.insertInstance(rec('i-db', { role: 'db', createdAt: 2 }));
      await store.insertInstance(rec('i-spare', { role: null, pool: '*', createdAt: 3 }));
      await store.insertInstance(rec('i-other', { app: 'blog', createdAt: 4 }));
      assert.deepEqual((await store.listInstances()).map((i) => i.id), ['i-web', 'i-db', 'i-spare', 'i-other'], 'all apps, live only, oldest first');
      assert.deepEqual((await store.listInstances({ app: 'shop', role: 'db' })).map((i) => i.id), ['i-db']);
      assert.deepEqual((await store.listInstances({ app: 'shop', includeGone: true })).map((i) => i.id), ['i-web', 'i-db', 'i-spare', 'i-full']);
      assert.deepEqual((await store.listInstances({ app: 'nope' })), []);
    } finally {
      await store.close();
      await cleanup();
    }
  });

  test(`${name}: roles: the autoscaler's state round-trips as JSON; unknown apps have no roles; events filter by app`, async () => {
    const { store, cleanup } = await open();
    try {
      await store.putApp({ name: 'shop', spec, appDir: '/a', at: 1 });
      const state = { windows: [{ at: 1_764_457_000_000, desired: 3 }], cooldownUntil: null, note: 'ok' };
      await store.setPolicyState('shop', 'web', state);
      assert.deepEqual((await store.listRoles('shop')).find((r) => r.role === 'web')!.policyState, state);
      assert.equal((await store.listRoles('shop')).find((r) => r.role === 'db')!.policyState, null);
      assert.deepEqual(await store.listRoles('nope'), []);
      for (const app of ['shop', 'blog', null, 'shop']) await store.appendEvent({ at: 5, app, role: null, instance: null, kind: 'app.apply', message: `for ${app}`, data: { n: 1 } });
      const shop = await store.listEvents({ app: 'shop' });
      assert.deepEqual(shop.map((e) => e.message), ['for shop', 'for shop']);
      assert.deepEqual(shop[0]!.data, { n: 1 });
      assert.equal(typeof shop[0]!.id, 'number');
      assert.deepEqual((await store.listEvents({ after: shop[0]!.id, app: 'shop' })).map((e) => e.id), [shop[1]!.id]);
      assert.equal((await store.listEvents({ limit: 0 })).length, 1, 'a limit below 1 is taken as 1');
    } finally {
      await store.close();
      await cleanup();
    }
  });

  test(`${name}: transactions: a nested call joins the outer one; it commits or rolls back whole`, async () => {
    const { store, cleanup } = await open();
    try {
      const out = await store.transaction(async (tx) => {
        await tx.insertInstance(rec('i-a'));
        const inner = await tx.transaction(async (tx2) => {
          await tx2.insertInstance(rec('i-b'));
          return 'inner';
        });
        return `${inner}+outer`;
      });
      assert.equal(out, 'inner+outer');
      assert.deepEqual((await store.listInstances()).map((i) => i.id), ['i-a', 'i-b']);
      await assert.rejects(
        store.transaction(async (tx) => {
          await tx.insertInstance(rec('i-c'));
          await tx.transaction(async (tx2) => {
            await tx2.insertInstance(rec('i-d'));
            throw new Error('inner boom');
          });
        }),
        /inner boom/,
      );
      assert.deepEqual((await store.listInstances()).map((i) => i.id), ['i-a', 'i-b'], 'neither the outer nor the inner write stayed');
      // An SQL error inside (a duplicate id) rolls back too, and the store stays usable.
      await assert.rejects(store.transaction(async (tx) => {
        await tx.insertInstance(rec('i-e'));
        await tx.insertInstance(rec('i-a'));
      }));
      assert.equal(await store.getInstance('i-e'), undefined);
      assert.equal((await store.listInstances()).length, 2);
      if (opts.manyConnections) {
        // Others do not see a transaction's writes before it commits.
        let release!: () => void;
        const gate = new Promise<void>((r) => (release = r));
        let inserted!: () => void;
        const didInsert = new Promise<void>((r) => (inserted = r));
        const tx = store.transaction(async (t) => {
          await t.insertInstance(rec('i-late'));
          inserted();
          await gate;
        });
        await didInsert;
        assert.equal(await store.getInstance('i-late'), undefined, 'not visible before commit');
        release();
        await tx;
        assert.equal((await store.getInstance('i-late'))?.id, 'i-late');
      }
    } finally {
      await store.close();
      await cleanup();
    }
  });

  test(`${name}: 50 writers racing with one version read: exactly one wins, on an instance, a role and a tenant`, async () => {
    const { store, cleanup } = await open();
    try {
      await store.putApp({ name: 'shop', spec, appDir: '/a', at: 1 });
      await store.insertInstance(rec('i-1'));
      await store.createTenant(tenant('t-1'));
      const inst = (await store.getInstance('i-1'))!;
      const role = (await store.listRoles('shop')).find((r) => r.role === 'web')!;
      const ten = (await store.getTenant('t-1'))!;
      const n = 50;
      const [a, b, c] = await Promise.all([
        Promise.all(Array.from({ length: n }, (_, k) => store.updateInstance('i-1', { restarts: k + 1 }, { ifVersion: inst.version }))),
        Promise.all(Array.from({ length: n }, (_, k) => store.setRoleCount('shop', 'web', k + 1, false, { ifVersion: role.version }))),
        Promise.all(Array.from({ length: n }, (_, k) => store.updateTenant('t-1', { attempts: k + 1 }, { ifVersion: ten.version }))),
      ]);
      assert.equal(a.filter(Boolean).length, 1, 'instance');
      assert.equal(b.filter(Boolean).length, 1, 'role');
      assert.equal(c.filter(Boolean).length, 1, 'tenant');
      assert.equal((await store.getInstance('i-1'))!.restarts, a.indexOf(true) + 1, 'the winner\'s write is the one stored');
      assert.equal((await store.listRoles('shop')).find((r) => r.role === 'web')!.desired, b.indexOf(true) + 1);
      assert.equal((await store.getTenant('t-1'))!.attempts, c.indexOf(true) + 1);
      assert.equal((await store.getInstance('i-1'))!.version, inst.version + 1);
    } finally {
      await store.close();
      await cleanup();
    }
  });

  test(`${name}: ten applies of one new app racing: all succeed, one made it, the rest found it unchanged`, async () => {
    const { store, cleanup } = await open();
    try {
      const res = await Promise.all(Array.from({ length: 10 }, (_, k) => store.putApp({ name: 'shop', spec, appDir: '/a', at: 10 + k })));
      assert.equal(res.filter((r) => r.changed).length, 1);
      assert.ok(res.every((r) => r.app.generation === 1));
      assert.deepEqual((await store.listRoles('shop')).map((r) => [r.role, r.desired]), [['db', 1], ['web', 2]]);
      // Changed specs racing: each apply is whole, the generation counts every change. Counts
      // other than the stored one (2): a racer with count 2 that ran first found its spec
      // unchanged (a CI run saw 4 changes of 5).
      const specs = [3, 4, 5, 6, 7].map((c) => ({ ...spec, roles: { ...spec.roles, web: { ...spec.roles.web!, count: c, max: Math.max(c, spec.roles.web!.max) } } }));
      const changed = await Promise.all(specs.map((sp, k) => store.putApp({ name: 'shop', spec: sp, appDir: '/a', at: 100 + k })));
      assert.equal(changed.filter((r) => r.changed).length, 5);
      const last = (await store.getApp('shop'))!;
      assert.equal(last.generation, 6);
      const web = (await store.listRoles('shop')).find((r) => r.role === 'web')!;
      assert.equal(web.desired, last.spec.roles.web!.count, 'the stored count is the stored spec\'s');
    } finally {
      await store.close();
      await cleanup();
    }
  });

  test(`${name}: a reader following events by id never steps over one, whatever the writers' interleaving`, async () => {
    const { store, cleanup } = await open();
    try {
      let done = false;
      const writes = Promise.all(
        Array.from({ length: 400 }, (_, k) => store.appendEvent({ at: k, app: 'shop', role: null, instance: null, kind: 'app.apply', message: `e${k}`, data: null })),
      ).finally(() => (done = true));
      const seen: number[] = [];
      let cursor = 0;
      const follow = async () => {
        const evs = await store.listEvents({ after: cursor, limit: 1000 });
        for (const e of evs) seen.push(e.id);
        cursor = evs[evs.length - 1]?.id ?? cursor;
      };
      while (!done) await follow();
      const written = await writes;
      await follow();
      assert.deepEqual(seen, written.map((e) => e.id).sort((x, y) => x - y), 'every event seen once, in id order');
    } finally {
      await store.close();
      await cleanup();
    }
  });

  test(`${name}: join tokens: used at most maxUses times (also by racers), never once expired or revoked; nodes kept per app`, async () => {
    const { store, cleanup } = await open();
    try {
      await store.createJoinToken({ id: 'a', hash: 'h-a', app: 'shop', labels: { zone: 'z1' }, maxUses: 2, expiresAt: 10_000, createdAt: 1 });
      await store.createJoinToken({ id: 'b', hash: 'h-b', app: 'shop', labels: null, maxUses: null, expiresAt: null, createdAt: 2 });
      const a = (await store.getJoinToken('a'))!;
      assert.deepEqual(a, { id: 'a', hash: 'h-a', app: 'shop', labels: { zone: 'z1' }, maxUses: 2, uses: 0, expiresAt: 10_000, revokedAt: null, createdAt: 1, instanceId: null });
      await store.createJoinToken({ id: 'i', hash: 'h-i', app: 'shop', labels: null, maxUses: 1, expiresAt: 10_000, createdAt: 1, instanceId: 'i-0abc' });
      assert.equal((await store.getJoinToken('i'))!.instanceId, 'i-0abc', 'a token made for one instance says which');
      assert.equal(await store.getJoinToken('nope'), undefined);
      const raced = await Promise.all(Array.from({ length: 10 }, () => store.useJoinToken('a', 5)));
      assert.equal(raced.filter(Boolean).length, 2, 'two uses, however many racers');
      assert.equal((await store.getJoinToken('a'))!.uses, 2);
      assert.equal(await store.useJoinToken('b', 20_000), true, 'no expiry, no limit');
      await store.createJoinToken({ id: 'c', hash: 'h-c', app: 'shop', labels: null, maxUses: null, expiresAt: 100, createdAt: 3 });
      assert.equal(await store.useJoinToken('c', 100), false, 'expired at its expiry');
      assert.equal(await store.useJoinToken('c', 99), true);
      assert.equal(await store.revokeJoinToken('b', 30), true);
      assert.equal(await store.revokeJoinToken('b', 31), false, 'already revoked');
      assert.equal(await store.useJoinToken('b', 32), false, 'revoked');
      assert.equal(await store.useJoinToken('nope', 1), false);
      assert.deepEqual((await store.listJoinTokens()).map((t) => [t.id, t.revokedAt]), [['a', null], ['i', null], ['b', 30], ['c', null]]);

      const node = { id: 'n-1', app: 'shop', tokenId: 'a', hostname: 'h1', addresses: ['10.0.0.2'], labels: { zone: 'z1' }, nodeKey: 'k', state: 'ready' as const, joinedAt: 5, lastSeenAt: 5 };
      await store.insertNode(node);
      await store.insertNode({ ...node, id: 'n-2', app: 'other', joinedAt: 6 });
      assert.deepEqual(await store.getNode('n-1'), { ...node, instanceId: null, version: 0 });
      await store.insertNode({ ...node, id: 'n-i', tokenId: 'i', joinedAt: 7, instanceId: 'i-0abc' });
      assert.equal((await store.getNode('n-i'))!.instanceId, 'i-0abc', 'a node made for one instance says which');
      assert.equal(await store.updateNode('n-1', { addresses: ['10.0.0.3', 'fd00::3'], lastSeenAt: 9, state: 'gone', labels: {} }), true);
      assert.deepEqual(await store.getNode('n-1'), { ...node, addresses: ['10.0.0.3', 'fd00::3'], lastSeenAt: 9, state: 'gone', labels: {}, instanceId: null, version: 1 });
      assert.equal(await store.updateNode('n-9', { lastSeenAt: 1 }), false);
      assert.deepEqual((await store.listNodes()).map((n) => n.id), ['n-1', 'n-2', 'n-i']);
      assert.deepEqual((await store.listNodes({ app: 'other' })).map((n) => n.id), ['n-2']);
      assert.equal(await store.getNode('n-9'), undefined);
    } finally {
      await store.close();
      await cleanup();
    }
  });

  test(`${name}: leases: one holder at a time on the database's clock; renewed by its holder only; released to the next with a higher epoch`, async () => {
    const { store, cleanup } = await open();
    try {
      assert.equal(await store.getLease('leader'), undefined);
      const a = (await store.acquireLease('leader', 'ctl-a', 60_000))!;
      assert.deepEqual([a.name, a.holder, a.epoch], ['leader', 'ctl-a', 1]);
      assert.equal(a.expiresAt - a.renewedAt, 60_000);
      assert.equal(a.acquiredAt, a.renewedAt);
      assert.ok(Math.abs(a.now - Date.now()) < 60_000, 'times are epoch ms');
      assert.equal(await store.acquireLease('leader', 'ctl-b', 60_000), undefined, 'held by another');
      assert.ok(await store.acquireLease('other', 'ctl-b', 60_000), 'leases are per name');
      const again = (await store.acquireLease('leader', 'ctl-a', 60_000))!;
      assert.deepEqual([again.holder, again.epoch, again.acquiredAt], ['ctl-a', 1, a.acquiredAt], 'its holder acquiring again renews it, same epoch');
      const renewed = (await store.renewLease('leader', 'ctl-a', 1, 120_000))!;
      assert.equal(renewed.epoch, 1);
      assert.equal(renewed.expiresAt - renewed.renewedAt, 120_000);
      assert.ok(renewed.renewedAt >= a.renewedAt);
      assert.equal(await store.renewLease('leader', 'ctl-b', 1, 60_000), undefined, 'only its holder renews');
      assert.equal(await store.renewLease('leader', 'ctl-a', 2, 60_000), undefined, 'with its epoch');
      assert.equal(await store.releaseLease('leader', 'ctl-b', 1), false, 'only its holder releases');
      assert.equal(await store.releaseLease('leader', 'ctl-a', 1), true);
      assert.equal(await store.releaseLease('leader', 'ctl-a', 1), false, 'released once');
      assert.equal(await store.renewLease('leader', 'ctl-a', 1, 60_000), undefined, 'a released lease is not renewed');
      const got = await store.getLease('leader');
      assert.ok(got && got.expiresAt <= got.now, 'released: expired');
      const b = (await store.acquireLease('leader', 'ctl-b', 60_000))!;
      assert.deepEqual([b.holder, b.epoch], ['ctl-b', 2], 'the next holder gets the next epoch');
      assert.deepEqual(await store.getLease('leader').then((l) => [l?.holder, l?.epoch]), ['ctl-b', 2]);
      await assert.rejects(store.acquireLease('leader', 'ctl-a', 0), RangeError);
      await assert.rejects(store.renewLease('leader', 'ctl-b', 2, 1.5), RangeError);
    } finally {
      await store.close();
      await cleanup();
    }
  });

  test(`${name}: leases: an expired lease goes to the next holder; the stale holder is refused; racers get it once`, async () => {
    const { store, cleanup } = await open();
    try {
      const a = (await store.acquireLease('leader', 'ctl-a', 300))!;
      assert.equal(await store.acquireLease('leader', 'ctl-b', 300), undefined);
      await new Promise((r) => setTimeout(r, 450));
      assert.ok((await store.getLease('leader'))!.expiresAt <= (await store.getLease('leader'))!.now, 'expired by the database clock');
      assert.equal(await store.renewLease('leader', 'ctl-a', a.epoch, 300), undefined, 'an expired lease is not renewed: its holder must stop');
      const b = (await store.acquireLease('leader', 'ctl-b', 60_000))!;
      assert.deepEqual([b.holder, b.epoch], ['ctl-b', 2]);
      assert.equal(await store.renewLease('leader', 'ctl-a', a.epoch, 300), undefined, 'the stale holder stays refused');
      assert.equal(await store.releaseLease('leader', 'ctl-a', a.epoch), false, 'and cannot release it from under the new one');
      assert.equal(await store.acquireLease('leader', 'ctl-a', 300), undefined);
      assert.equal((await store.getLease('leader'))!.holder, 'ctl-b');

      // Twenty holders racing for a free lease, then for an expired one: one wins each time.
      const first = await Promise.all(Array.from({ length: 20 }, (_, k) => store.acquireLease('race', `h-${k}`, 300)));
      const won = first.filter((l) => l !== undefined);
      assert.equal(won.length, 1);
      assert.equal(won[0]!.epoch, 1);
      await new Promise((r) => setTimeout(r, 450));
      const second = await Promise.all(Array.from({ length: 20 }, (_, k) => store.acquireLease('race', `h2-${k}`, 60_000)));
      const won2 = second.filter((l) => l !== undefined);
      assert.equal(won2.length, 1);
      assert.equal(won2[0]!.epoch, 2, 'the epoch moved once');
      assert.equal((await store.getLease('race'))!.holder, won2[0]!.holder);
    } finally {
      await store.close();
      await cleanup();
    }
  });

  test(`${name}: fencing: a write made under a lease lands only while its holder holds it with that epoch`, async () => {
    const { store, cleanup } = await open();
    try {
      const a = (await store.acquireLease('leader', 'ctl-a', 60_000))!;
      await store.assertLease('leader', 'ctl-a', a.epoch);
      await store.transaction((tx) => tx.assertLease('leader', 'ctl-a', a.epoch));
      for (const [holder, epoch] of [['ctl-b', a.epoch], ['ctl-a', a.epoch + 1], ['ctl-a', 0]] as const) {
        await assert.rejects(store.assertLease('leader', holder, epoch), LeaseLostError, `${holder}@${epoch}`);
      }
      await assert.rejects(store.assertLease('nobody', 'ctl-a', 1), LeaseLostError, 'a lease never taken');

      const fenced = new FencedStore(store, 'leader');
      // No fence (a standby): reads pass, every write is refused and leaves nothing.
      await assert.rejects(fenced.insertInstance(rec('i-f0')), LeaseLostError);
      await assert.rejects(fenced.transaction((tx) => tx.insertInstance(rec('i-f0'))), LeaseLostError);
      assert.equal(await fenced.getInstance('i-f0'), undefined);
      fenced.setFence({ name: 'leader', holder: 'ctl-a', epoch: a.epoch });
      await fenced.insertInstance(rec('i-f1'));
      assert.equal(await fenced.updateInstance('i-f1', { state: 'starting' }), true);
      await fenced.putApp({ name: 'shop', spec, appDir: '/srv/shop', at: 1 });
      await fenced.appendEvent({ app: 'shop', role: null, instance: null, kind: 'app.apply', message: 'm', data: null, at: 1 });
      await fenced.transaction(async (tx) => {
        await tx.insertInstance(rec('i-f2'));
        await tx.updateInstance('i-f2', { state: 'starting' });
      });
      assert.equal((await store.getInstance('i-f2'))?.state, 'starting');

      // The lease changes hands: the deposed holder's writes are refused, whole transactions too.
      assert.equal(await store.releaseLease('leader', 'ctl-a', a.epoch), true);
      const b = (await store.acquireLease('leader', 'ctl-b', 60_000))!;
      assert.equal(b.epoch, a.epoch + 1);
      await assert.rejects(fenced.updateInstance('i-f1', { state: 'serving' }), LeaseLostError);
      await assert.rejects(fenced.insertInstance(rec('i-f3')), LeaseLostError);
      await assert.rejects(fenced.setRoleCount('shop', 'web', 5, true), LeaseLostError);
      await assert.rejects(fenced.appendEvent({ app: 'shop', role: null, instance: null, kind: 'app.apply', message: 'late', data: null, at: 2 }), LeaseLostError);
      await assert.rejects(
        fenced.transaction(async (tx) => {
          await tx.insertInstance(rec('i-f4'));
        }),
        LeaseLostError,
      );
      assert.equal((await store.getInstance('i-f1'))?.state, 'starting', 'nothing of the deposed holder landed');
      assert.equal(await store.getInstance('i-f3'), undefined);
      assert.equal(await store.getInstance('i-f4'), undefined);
      assert.equal((await store.listRoles('shop')).find((r) => r.role === 'web')?.desired, 2);
      assert.deepEqual((await store.listEvents({})).map((e) => e.message), ['m']);
      // Reads still pass; the new holder's fence works.
      assert.equal((await fenced.getInstance('i-f1'))?.id, 'i-f1');
      fenced.setFence({ name: 'leader', holder: 'ctl-b', epoch: b.epoch });
      assert.equal(await fenced.updateInstance('i-f1', { state: 'serving' }), true);
    } finally {
      await store.close();
      await cleanup();
    }
  });

  test(`${name}: fencing: a lease cannot change hands while a transaction made under it is open; its writes land first`, async () => {
    const { store, cleanup } = await open();
    try {
      const a = (await store.acquireLease('leader', 'ctl-a', 150))!;
      const fenced = new FencedStore(store, 'leader');
      fenced.setFence({ name: 'leader', holder: 'ctl-a', epoch: a.epoch });
      const order: string[] = [];
      const tx = fenced.transaction(async (t) => {
        await t.insertInstance(rec('i-g1'));
        // The lease expires meanwhile (150 ms); the transaction was fenced when it began.
        await new Promise((r) => setTimeout(r, 400));
        await t.updateInstance('i-g1', { state: 'starting' });
        order.push('committed');
      });
      await new Promise((r) => setTimeout(r, 250));
      // On one connection (PGlite) this queues behind the transaction; on many (PostgreSQL) the
      // acquire waits for the transaction's lock on the lease row. Either way it comes second.
      const taken = store.acquireLease('leader', 'ctl-b', 60_000).then((l) => {
        order.push('taken over');
        return l;
      });
      await tx;
      const b = await taken;
      assert.deepEqual(order, ['committed', 'taken over']);
      assert.equal(b?.epoch, a.epoch + 1);
      assert.equal((await store.getInstance('i-g1'))?.state, 'starting');
      await assert.rejects(fenced.updateInstance('i-g1', { state: 'serving' }), LeaseLostError);
    } finally {
      await store.close();
      await cleanup();
    }
  });

  test(`${name}: the suite called every method of the Store interface`, () => {
    const missing = Object.keys(STORE_METHODS).filter((m) => !seen.has(m));
    assert.deepEqual(missing, [], 'methods no test of the suite calls');
  });
}
