import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compileScale, defaultRequestPolicies, scaleSchema, defaultScaleEntries, DEFAULT_KNOBS } from '../core/index.js';
import { defaultApp } from './default-app.js';

test('the simulated default app scales with exactly the policies a balanced role gets by default in the controller', () => {
  const simulated = defaultApp(25).roles.web!.scale;
  // The same entries, with the simulator's metric names and its capacity prior.
  assert.deepEqual(simulated, compileScale(scaleSchema.parse(defaultScaleEntries(DEFAULT_KNOBS, { rate: 'demand', served: 'rps', backlog: 'backlog' }, 25))));
  // And the controller's, metric names and prior aside.
  const neutral = (ps: typeof simulated) =>
    ps.map((p) => (p.kind === 'adaptive' ? { ...p, metric: '', served: '', backlog: '', perInstance: undefined } : p));
  assert.deepEqual(neutral(simulated), neutral(defaultRequestPolicies()));
});
