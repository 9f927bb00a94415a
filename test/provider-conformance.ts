/**
 * The provider conformance suite: what every provider must do, run once per provider
 * (test/provider-conformance.test.ts). Real agent processes wherever the provider makes them; no
 * controller answers them, which a provider must not care about.
 *
 * What the controller relies on: a request answers at once (the machine may still be pending);
 * describe converges to running with an address, and says gone once destroyed; the instance id
 * is an idempotency key (asked twice, one machine); destroy is idempotent and ends everything
 * of the machine; list shows exactly the machines not gone, with enough to destroy one the
 * caller never recorded (an orphan); a provisioning timeout the controller can wait out.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { processesOfInstance, type CreateInstanceRequest, type InstanceHandle, type Machine, type Provider } from '../src/adapters/providers/index.js';
import { until } from './helpers.js';

export interface ConformanceTarget {
  /** A provider that keeps its machines under `dir` (a fresh folder per test). */
  make(dir: string): Provider;
  /** Whether an address is one its agents may get. @default 127.0.0.1 only */
  readonly addressOk?: (ip: string) => boolean;
  /** Whether {@link Provider.onExit} hears of this machine's agent ending (not of one a joined node runs). @default always */
  readonly reportsExit?: (id: string) => boolean;
  /** Why this provider cannot run here (its suite is skipped, and says why). */
  readonly skip?: string;
  /**
   * Machines elsewhere (a cloud's VMs, here a fake cloud's): no processes or folders on this
   * machine to look at; each machine has its own address, and its port and folder are its
   * agent's there (told when it joins), not the provider's.
   * `exists` says whether the machine is still there, as the cloud sees it.
   */
  readonly remote?: { exists(id: string): boolean | Promise<boolean> };
}

const req = (instanceId: string): CreateInstanceRequest => ({ instanceId, epoch: 1, key: 'x'.repeat(32), controllerUrl: 'http://127.0.0.1:9', app: 'a', role: 'r' });

/** Looks until the machine is running (or gone), as the controller's provisioning job does. */
async function running(p: Provider, h: InstanceHandle): Promise<Machine> {
  return until(`${h.id} running`, async () => {
    const [m] = await p.describe([h]);
    assert.notEqual(m?.state, 'gone', `${h.id} is gone before it ran: ${m?.message ?? ''}`);
    return m?.state === 'running' ? m : undefined;
  }, 20_000, 50);
}

const ids = (ms: readonly Machine[]) => ms.map((m) => m.id).sort();

export function providerConformance(name: string, target: ConformanceTarget): void {
  const addressOk = target.addressOk ?? ((ip: string) => ip === '127.0.0.1');
  const setup = (t: { after: (fn: () => Promise<void>) => void }) => {
    const dir = mkdtempSync(join(tmpdir(), 'drover-provider-'));
    const provider = target.make(dir);
    const made: string[] = [];
    t.after(async () => {
      // Whatever a failed test left running goes too.
      await Promise.all(made.map((id) => provider.destroy({ id, providerRef: null }).catch(() => undefined)));
      await provider.close();
      rmSync(dir, { recursive: true, force: true });
    });
    return { provider, made };
  };

  test(`${name}: a request answers at once; describe converges to running; each machine has its own folder and port; destroy ends its whole tree`, { timeout: 60_000, ...(target.skip ? { skip: target.skip } : {}) }, async (t) => {
    const { provider, made } = setup(t);
    assert.ok(Number.isFinite(provider.provisionTimeoutMs) && provider.provisionTimeoutMs > 0, 'a provisioning timeout');
    const exits: string[] = [];
    provider.onExit((id) => exits.push(id));
    const names = ['i-c0ffee01', 'i-c0ffee02', 'i-c0ffee03'];
    made.push(...names);
    // A provider that loads its cloud's client library in the background says when it has.
    await provider.ready?.();
    const t0 = Date.now();
    const asked = await Promise.all(names.map((id) => provider.request(req(id))));
    // An agent takes a second or more to boot; the request must not wait for it.
    assert.ok(Date.now() - t0 < 1500, `requests answered in ${Date.now() - t0} ms`);
    for (const [k, m] of asked.entries()) {
      assert.equal(m.id, names[k]);
      assert.notEqual(m.state, 'gone');
    }
    const up = await Promise.all(asked.map((m) => running(provider, { id: m.id, providerRef: m.providerRef })));
    const remote = target.remote;
    if (remote) assert.equal(new Set(up.map((m) => m.ip)).size, 3, 'distinct addresses');
    else {
      assert.equal(new Set(up.map((m) => m.port)).size, 3, 'distinct ports');
      assert.equal(new Set(up.map((m) => m.workdir)).size, 3, 'distinct folders');
    }
    for (const m of up) {
      assert.ok(m.ip !== undefined && addressOk(m.ip), `an address its agent may have: ${m.ip}`);
      // A remote machine's port and folder are its agent's, told when it joins.
      if (!remote) assert.ok(m.port !== undefined && m.port > 0, 'a port');
      if (!remote) assert.ok(m.workdir && existsSync(m.workdir), 'its folder exists');
      assert.ok(m.providerRef, 'a reference to find it again');
    }
    if (remote) {
      // Destroyed one by one; each is gone from the cloud once describe says so.
      for (const m of up) {
        const h = { id: m.id, providerRef: m.providerRef };
        await provider.destroy(h);
        await until(`${m.id} gone`, async () => ((await provider.describe([h]))[0]?.state === 'gone' ? true : undefined), 20_000, 50);
      }
      await until('nothing left in the cloud', async () => ((await Promise.all(names.map(async (id) => remote.exists(id)))).every((e) => !e) ? true : undefined), 20_000, 50);
      const told = names.filter((id) => target.reportsExit?.(id) ?? true);
      await until('exits reported', async () => (told.every((id) => exits.includes(id)) ? true : undefined), 5000, 50);
      return;
    }
    // What a role leaves behind when its agent is killed: a process of its own, marked as the instance's.
    const stray = spawn('sleep', ['60'], { detached: true, stdio: 'ignore', env: { ...process.env, DROVER_INSTANCE: names[0]!, DROVER_WORKDIR: up[0]!.workdir! } });
    stray.unref();
    await until('the stray runs', async () => (processesOfInstance(names[0]!).includes(stray.pid!) ? true : undefined), 5000, 20);

    const h0 = { id: names[0]!, providerRef: up[0]!.providerRef };
    await provider.destroy(h0);
    await until(`${names[0]} gone`, async () => ((await provider.describe([h0]))[0]?.state === 'gone' ? true : undefined), 20_000, 50);
    assert.deepEqual(processesOfInstance(names[0]!), [], 'nothing of it runs, the stray included');
    await Promise.all(up.slice(1).map((m) => provider.destroy({ id: m.id, providerRef: m.providerRef })));
    const told = names.filter((id) => target.reportsExit?.(id) ?? true);
    await until('exits reported', async () => (told.every((id) => exits.includes(id)) ? true : undefined), 5000, 50);
    const after = await provider.describe(up.map((m) => ({ id: m.id, providerRef: m.providerRef })));
    assert.deepEqual(after.map((m) => m.state), ['gone', 'gone', 'gone']);
    for (const id of names) assert.deepEqual(processesOfInstance(id), []);
  });

  test(`${name}: the instance id is an idempotency key: asked twice, at once or later, one machine`, { timeout: 60_000, ...(target.skip ? { skip: target.skip } : {}) }, async (t) => {
    const { provider, made } = setup(t);
    made.push('i-1d0000a1', 'i-1d0000a2');
    const [a, b] = await Promise.all([provider.request(req('i-1d0000a1')), provider.request(req('i-1d0000a1'))]);
    assert.deepEqual(a, b, 'two requests at once: the same machine');
    const up = await running(provider, { id: a.id, providerRef: a.providerRef });
    const again = await provider.request(req('i-1d0000a1'));
    assert.equal(again.state, 'running');
    assert.deepEqual(again.providerRef, up.providerRef, 'asked again later: the same machine');
    assert.equal(again.port, up.port);
    await provider.request(req('i-1d0000a2'));
    assert.deepEqual(ids(await provider.list()), ['i-1d0000a1', 'i-1d0000a2'], 'two ids, two machines; the repeat made none');
    if (target.remote) assert.ok(await target.remote.exists('i-1d0000a1'));
    else assert.ok(processesOfInstance('i-1d0000a1').length >= 1);
  });

  test(`${name}: list shows exactly the machines not gone, with enough to destroy one nobody recorded; destroy is idempotent`, { timeout: 60_000, ...(target.skip ? { skip: target.skip } : {}) }, async (t) => {
    const { provider, made } = setup(t);
    made.push('i-0f0f0f01', 'i-0f0f0f02');
    assert.deepEqual(await provider.list(), [], 'nothing yet');
    const a = await provider.request(req('i-0f0f0f01'));
    await provider.request(req('i-0f0f0f02'));
    await running(provider, { id: a.id, providerRef: a.providerRef });
    assert.deepEqual(ids(await provider.list()), ['i-0f0f0f01', 'i-0f0f0f02']);
    await provider.destroy({ id: 'i-0f0f0f01', providerRef: a.providerRef });
    await provider.destroy({ id: 'i-0f0f0f01', providerRef: a.providerRef }); // again: fine
    assert.deepEqual(ids(await provider.list()), ['i-0f0f0f02']);
    // The caller never recorded this one (a controller that crashed after asking): list finds it, and that is enough to end it.
    const [orphan] = await provider.list();
    await provider.destroy({ id: orphan!.id, providerRef: orphan!.providerRef });
    await until('the orphan gone', async () => ((await provider.list()).length === 0 ? true : undefined), 20_000, 50);
    assert.equal((await provider.describe([{ id: orphan!.id, providerRef: null }]))[0]?.state, 'gone', 'found gone by its id alone');
    if (target.remote) await until('the orphan gone from the cloud', async () => (!(await target.remote!.exists(orphan!.id)) ? true : undefined), 20_000, 50);
    else assert.deepEqual(processesOfInstance(orphan!.id), []);
    // Never made: gone, and destroying it is fine.
    assert.equal((await provider.describe([{ id: 'i-00000000', providerRef: null }]))[0]?.state, 'gone');
    await provider.destroy({ id: 'i-00000000', providerRef: null });
  });
}
