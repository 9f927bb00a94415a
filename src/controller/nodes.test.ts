import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { parseAppFile, systemClock } from '../core/index.js';
import type { InstanceRecord, NodeRecord, Store } from '../adapters/store/index.js';
import { NodeRegistry, UnplaceableError } from './nodes.js';
import type { EventInput } from './context.js';

/** A registry whose nodes are all connected and idle unless told otherwise: the choice of a host, without sockets. */
class Registry extends NodeRegistry {
  override connected(): boolean {
    return true;
  }
  override running(): string[] {
    return [];
  }
}

const node = (id: string, hostname: string, labels: Record<string, string>): NodeRecord => ({
  id, app: 'shop', tokenId: 't', hostname, addresses: ['10.0.0.2'], labels, nodeKey: 'k', state: 'ready', joinedAt: 1, lastSeenAt: 1, instanceId: null, version: 0,
});

function setup(yaml: string, nodes: NodeRecord[], instances: Partial<InstanceRecord>[] = []) {
  const spec = parseAppFile(yaml);
  const events: EventInput[] = [];
  const store = {
    getApp: async () => ({ name: 'shop', appDir: '/srv', spec, generation: 1 }),
    listNodes: async () => nodes,
    listInstances: async (f: { app: string }) => (f.app === 'shop' ? instances : []).map((i) => ({ destroyedAt: null, goal: 'run', state: 'serving', providerRef: null, ...i })),
  } as unknown as Store;
  const reg = new Registry({
    store, clock: systemClock, log: pino({ level: 'silent' }), heartbeatMs: 60_000, enqueue: () => undefined,
    record: async (ev) => events.push(ev), local: { host: 'ctl', labels: { host: 'ctl', local: 'true' } },
  });
  return { reg, events };
}

test('labels choose the node; this machine only when its own labels fit; nothing fits: refused and told once', async (t) => {
  const { reg, events } = setup('app: shop\nroles:\n  db:\n    start: x\n    placement: { labels: { disk: ssd } }\n', [node('n-1', 'a', { disk: 'hdd' }), node('n-2', 'b', { disk: 'ssd' })]);
  t.after(() => reg.close());
  assert.equal(await reg.reserve('shop', 'db', 'i-1'), 'n-2');
  // n-2 is reserved now: the next db finds no host (n-1 lacks the label, this machine too).
  await assert.rejects(reg.reserve('shop', 'db', 'i-2'), (e: unknown) => e instanceof UnplaceableError && /node n-2 \(b\): busy \(runs i-1\)/.test(e.message) && /this machine \(ctl\): lacks disk=ssd/.test(e.message));
  await assert.rejects(reg.reserve('shop', 'db', 'i-3'), UnplaceableError);
  assert.equal(events.filter((e) => e.kind === 'role.unplaceable').length, 1, 'the same reason is told once');
  assert.match(reg.unplaceable('shop', 'db') ?? '', /no host fits db/);
});

test('strict spread counts members on this machine, also those whose creation is still on its way', async (t) => {
  const instances: Partial<InstanceRecord>[] = [];
  const { reg, events } = setup('app: shop\nroles:\n  web:\n    count: 2\n    start: x\n    placement: { spread: host, strict: true }\n', [], instances);
  t.after(() => reg.close());
  instances.push({ id: 'i-1', role: 'web', state: 'provisioning' });
  assert.equal(await reg.reserve('shop', 'web', 'i-1'), undefined, 'this machine');
  instances.push({ id: 'i-2', role: 'web', state: 'provisioning' });
  // i-1's record has no provider reference yet (its agent is still starting): its reservation counts.
  await assert.rejects(reg.reserve('shop', 'web', 'i-2'), /this machine \(ctl\): runs 1 member\(s\) of web already \(strict spread\)/);
  assert.equal(events.length, 1);
  // A reservation of another app does not make this one's forgotten.
  await reg.reserve('other', null, 'i-9');
  await assert.rejects(reg.reserve('shop', 'web', 'i-3'), UnplaceableError);
});

test('soft spread prefers the host without a member and stacks when it must; a node labelled role=x is kept for x', async (t) => {
  const yaml = 'app: shop\nroles:\n  web:\n    count: 3\n    start: x\n    placement: { spread: host }\n';
  const onLocal = [{ id: 'i-0', role: 'web', providerRef: { pid: 5 } }];
  const a = setup(yaml, [node('n-1', 'a', { role: 'db' }), node('n-2', 'b', {})], onLocal);
  t.after(() => a.reg.close());
  assert.equal(await a.reg.reserve('shop', 'web', 'i-1'), 'n-2');
  assert.equal(await a.reg.reserve('shop', 'web', 'i-2'), undefined, 'n-1 is kept for db, n-2 taken: this machine, stacked');
  assert.equal(a.events.length, 0);
  assert.equal(a.reg.unplaceable('shop', 'web'), undefined);
});
