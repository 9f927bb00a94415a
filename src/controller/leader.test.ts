import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { openPgliteStore, type Lease, type Store } from '../adapters/store/index.js';
import { LEADER_LEASE, Leadership, leadershipTimes, parseHolder, holderName } from './leader.js';

const log = pino({ level: 'silent' });

/** A store whose lease renewals can be made to hang (a database that stopped answering this controller). */
function stallable(store: Store): { store: Store; stall: () => void } {
  let stalled = false;
  const s = new Proxy(store, {
    get(target, prop, receiver) {
      if (prop === 'renewLease') {
        return (...a: Parameters<Store['renewLease']>) => (stalled ? new Promise<never>(() => {}) : target.renewLease(...a));
      }
      const v: unknown = Reflect.get(target, prop, receiver);
      return typeof v === 'function' ? (v as (...x: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { store: s, stall: () => (stalled = true) };
}

function candidate(store: Store, holder: string, ttlMs: number) {
  const events: { what: 'elected' | 'deposed'; at: number; epoch?: number; reason?: string }[] = [];
  const l = new Leadership({
    store, holder, log, times: leadershipTimes(ttlMs, { retryMs: 50 }),
    onElected: async (lease: Lease) => void events.push({ what: 'elected', at: Date.now(), epoch: lease.epoch }),
    onDeposed: async (reason: string) => void events.push({ what: 'deposed', at: Date.now(), reason }),
  });
  return { l, events };
}

test('one of two candidates leads; a leader that cannot renew steps down before its lease can expire; the standby takes over with the next epoch', async () => {
  const raw = await openPgliteStore();
  try {
    const a = stallable(raw);
    const ca = candidate(a.store, 'ctl-a', 600);
    const cb = candidate(raw, 'ctl-b', 600);
    await ca.l.start();
    await cb.l.start();
    assert.equal(ca.l.state, 'leader');
    assert.equal(cb.l.state, 'standby');
    assert.equal(ca.events[0]?.epoch, 1);
    await sleep(700); // renewals keep it: longer than one ttl
    assert.equal(ca.l.state, 'leader');
    assert.equal(cb.l.state, 'standby');

    a.stall();
    const stalledAt = Date.now();
    const lease = (await raw.getLease(LEADER_LEASE))!;
    const expiresIn = lease.expiresAt - lease.now;
    for (let i = 0; i < 60 && (cb.l.state as string) !== 'leader'; i++) await sleep(50);
    assert.equal(ca.l.state, 'stopped');
    assert.equal(cb.l.state, 'leader');
    const deposed = ca.events.find((e) => e.what === 'deposed')!;
    const elected = cb.events.find((e) => e.what === 'elected')!;
    assert.match(deposed.reason!, /could not be renewed in time/);
    assert.ok(deposed.at < elected.at, 'the old leader stopped before the new one started');
    assert.ok(deposed.at - stalledAt < expiresIn, `stepped down ${deposed.at - stalledAt} ms after the stall, before the lease could expire (${expiresIn} ms)`);
    assert.equal(elected.epoch, 2);
    assert.equal(cb.l.lease?.epoch, 2);
    await cb.l.stop();
    assert.ok(cb.events.some((e) => e.what === 'deposed'), 'stopping steps down');
    const after = (await raw.getLease(LEADER_LEASE))!;
    assert.ok(after.expiresAt <= after.now, 'and releases the lease, so a standby takes it at once');
    await ca.l.stop();
  } finally {
    await raw.close();
  }
});

test('a leader whose lease was taken (it stalled past its expiry) steps down at its next renewal', async () => {
  const raw = await openPgliteStore();
  try {
    const ca = candidate(raw, 'ctl-a', 400);
    await ca.l.start();
    assert.equal(ca.l.state, 'leader');
    // Someone else took it meanwhile (as after a long stall): release then acquire from outside.
    const l = (await raw.getLease(LEADER_LEASE))!;
    await raw.releaseLease(LEADER_LEASE, 'ctl-a', l.epoch);
    assert.ok(await raw.acquireLease(LEADER_LEASE, 'ctl-x', 60_000));
    for (let i = 0; i < 40 && ca.l.state === 'leader'; i++) await sleep(25);
    assert.equal(ca.l.state, 'stopped');
    assert.match(ca.events.find((e) => e.what === 'deposed')!.reason!, /lost/);
    await ca.l.stop();
  } finally {
    await raw.close();
  }
});

test('holder names carry the URL, host and pid, and read back; anything else reads back raw', () => {
  const { name, info } = holderName('http://10.0.0.1:7420');
  assert.deepEqual(parseHolder(name), info);
  assert.deepEqual(parseHolder('embedded'), { raw: 'embedded' });
  assert.deepEqual(parseHolder('{"id":1}'), { raw: '{"id":1}' });
});
