/**
 * The provider conformance suite: what every provider must do. Run against the local provider
 * (real agent processes; no controller answers them, which a provider must not care about).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalProvider, processesOfInstance, type Provider } from '../src/adapters/providers/index.js';
import { until } from './helpers.js';

export function providerConformance(name: string, make: (dir: string) => Provider) {
  test(`${name}: instances are made in parallel, each with its own folder and port, and destroyed with their whole tree`, { timeout: 60_000 }, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'drover-provider-'));
    const provider = make(dir);
    t.after(async () => {
      await provider.close();
      rmSync(dir, { recursive: true, force: true });
    });
    const exits: string[] = [];
    provider.onExit((id) => exits.push(id));
    const ids = ['i-c0ffee01', 'i-c0ffee02', 'i-c0ffee03'];
    const made = await Promise.all(
      ids.map((instanceId) => provider.createInstance({ instanceId, epoch: 1, key: 'x'.repeat(32), controllerUrl: 'http://127.0.0.1:9', app: 'a', role: 'r' })),
    );
    assert.equal(new Set(made.map((m) => m.port)).size, 3, 'distinct ports');
    assert.equal(new Set(made.map((m) => m.workdir)).size, 3, 'distinct folders');
    for (const m of made) {
      assert.equal(m.ip, '127.0.0.1');
      assert.ok(existsSync(m.workdir));
    }
    for (const [k, id] of ids.entries()) assert.equal(await provider.isAlive({ id, providerRef: made[k]!.providerRef }), true);

    // A stray child of the instance (what a role leaves behind) must go too.
    await provider.destroyInstance({ id: ids[0]!, providerRef: made[0]!.providerRef });
    assert.deepEqual(processesOfInstance(ids[0]!), []);
    assert.equal(await provider.isAlive({ id: ids[0]!, providerRef: made[0]!.providerRef }), false);
    await until('exit reported', async () => (exits.includes(ids[0]!) ? true : undefined), 5000, 50);
    // Idempotent.
    await provider.destroyInstance({ id: ids[0]!, providerRef: made[0]!.providerRef });
    await Promise.all(ids.slice(1).map((id, k) => provider.destroyInstance({ id, providerRef: made[k + 1]!.providerRef })));
    for (const id of ids) assert.deepEqual(processesOfInstance(id), []);
  });
}

providerConformance('local', (dir) => new LocalProvider({ baseDir: dir, killGraceMs: 2000 }));
