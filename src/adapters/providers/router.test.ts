import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Ec2ProviderSettings } from '../../core/index.js';
import { ProviderNotConfiguredError, ProviderRouter } from './router.js';
import type { CreateInstanceRequest, ExitInfo, InstanceHandle, Machine, Provider } from './types.js';

/** A provider that keeps its machines in a map (its reference names itself, as a real one's does). */
class MapProvider implements Provider {
  readonly machines = new Map<string, Machine>();
  readonly listeners: ((id: string, info: ExitInfo) => void)[] = [];
  closed = false;
  constructor(readonly name: string, readonly provisionTimeoutMs: number) {}
  async request(req: CreateInstanceRequest): Promise<Machine> {
    const m = this.machines.get(req.instanceId) ?? { id: req.instanceId, state: 'pending' as const, providerRef: { at: this.name } };
    this.machines.set(req.instanceId, m);
    return m;
  }
  async describe(hs: readonly InstanceHandle[]): Promise<Machine[]> {
    return hs.map((h) => this.machines.get(h.id) ?? { id: h.id, state: 'gone', providerRef: h.providerRef });
  }
  async list(): Promise<Machine[]> {
    return [...this.machines.values()];
  }
  async destroy(h: InstanceHandle): Promise<void> {
    this.machines.delete(h.id);
  }
  onExit(l: (id: string, info: ExitInfo) => void): void {
    this.listeners.push(l);
  }
  async close(): Promise<void> {
    this.closed = true;
  }
}

const req = (id: string, settings?: CreateInstanceRequest['settings']): CreateInstanceRequest => ({
  instanceId: id, epoch: 1, key: 'k', controllerUrl: 'http://127.0.0.1:9', app: 'a', role: 'r', ...(settings ? { settings } : {}),
});
const EC2: Ec2ProviderSettings = { kind: 'ec2', region: 'eu-west-1', image: 'ami-0abcdef1234567890', instanceType: 't3.small', subnet: 'subnet-0abc1234', securityGroups: ['sg-0abc1234'] };

test('router: a request goes to the provider its settings name; the reference says which; describe, destroy and list follow it', async () => {
  const local = new MapProvider('local', 5000);
  const ec2 = new MapProvider('ec2', 600_000);
  const r = new ProviderRouter({ fallback: local, clouds: { ec2 } });
  assert.deepEqual(r.kinds(), ['local', 'ec2']);
  const a = await r.request(req('i-a'));
  const b = await r.request(req('i-b', EC2));
  const c = await r.request(req('i-c', { kind: 'local' }));
  assert.deepEqual([a.providerRef, b.providerRef, c.providerRef], [{ at: 'local', provider: 'local' }, { at: 'ec2', provider: 'ec2' }, { at: 'local', provider: 'local' }]);
  assert.deepEqual([...local.machines.keys()], ['i-a', 'i-c']);
  assert.deepEqual([...ec2.machines.keys()], ['i-b']);
  assert.equal(r.provisionTimeoutFor('ec2'), 600_000);
  assert.equal(r.provisionTimeoutFor(undefined), 5000);
  assert.equal(r.provisionTimeoutMs, 5000);
  assert.deepEqual(r.provisionTimeouts(), { local: 5000, ec2: 600_000 });
  // Unknown reference (a crash between request and record): whoever has a machine of that id answers.
  const seen = await r.describe([{ id: 'i-b', providerRef: null }, { id: 'i-a', providerRef: null }, { id: 'i-x', providerRef: null }, b]);
  assert.deepEqual(seen.map((m) => [m.id, m.state, m.providerRef?.provider]), [['i-b', 'pending', 'ec2'], ['i-a', 'pending', 'local'], ['i-x', 'gone', undefined], ['i-b', 'pending', 'ec2']]);
  assert.deepEqual((await r.list()).map((m) => `${m.id}@${String(m.providerRef?.provider)}`).sort(), ['i-a@local', 'i-b@ec2', 'i-c@local']);
  await r.destroy({ id: 'i-b', providerRef: b.providerRef });
  assert.equal(ec2.machines.size, 0);
  assert.equal(local.machines.size, 2, 'the other provider was not asked to destroy it');
  // A reference from before the router (no provider): the default chain's.
  await r.destroy({ id: 'i-a', providerRef: { at: 'local' } });
  assert.deepEqual([...local.machines.keys()], ['i-c']);
  // Not known where: every provider ends what it has of that id.
  await r.destroy({ id: 'i-c', providerRef: null });
  assert.equal(local.machines.size, 0);
  const exits: string[] = [];
  r.onExit((id) => exits.push(id));
  local.listeners[0]?.('i-1', { code: 0, signal: null });
  ec2.listeners[0]?.('i-2', { code: 0, signal: null });
  assert.deepEqual(exits, ['i-1', 'i-2'], 'exits of every provider are heard');
  await r.close();
  assert.ok(local.closed && ec2.closed);
});

test('router: a kind the controller does not run is refused, naming the flag that would start it', async () => {
  const r = new ProviderRouter({ fallback: new MapProvider('local', 5000) });
  await assert.rejects(r.request(req('i-a', EC2)), (e: unknown) => e instanceof ProviderNotConfiguredError && /no ec2 provider \(start it with --provider ec2\)/.test(e.message));
  assert.equal(r.serves(EC2), false);
  assert.equal(r.serves({ kind: 'local' }), true);
  assert.equal(r.serves(undefined), true);
});

test('router: each cloud\'s billing where its provider sets one, for the planner', () => {
  const openstack = Object.assign(new MapProvider('openstack', 900_000), { billing: { granularitySeconds: 60, minimumSeconds: 60 } });
  const none = Object.assign(new MapProvider('openstack', 900_000), { billing: null });
  assert.deepEqual(new ProviderRouter({ fallback: new MapProvider('local', 5000), clouds: { ec2: new MapProvider('ec2', 600_000), openstack } }).billingOverrides(), {
    openstack: { granularitySeconds: 60, minimumSeconds: 60 },
  });
  assert.deepEqual(new ProviderRouter({ fallback: new MapProvider('local', 5000), clouds: { openstack: none } }).billingOverrides(), { openstack: null });
});
