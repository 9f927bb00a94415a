import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { z } from 'zod';
import { parse as parseYaml } from 'yaml';
import { ManualClock } from './clock.js';
import { MetricStore } from './metrics.js';
import { growthQuantile, holdFor } from './adaptive.js';
import { EMPTY_FORECAST, observeMinute, trusted } from './forecast.js';
import {
  adaptivePolicy,
  evaluate,
  historyNeededMs,
  learnedCapacities,
  POLICY_DEFAULTS,
  queuePolicy,
  recordAction,
  targetPolicy,
  thresholdPolicy,
  type Decision,
  type Policy,
  type PolicyState,
} from './policy.js';
import { checkPolicyMetrics, compileMetrics, compileScale, metricsSchema, scaleSchema } from './policy-spec.js';

type Inst = { id: string; servingSince: number | null };

/**
 * One role on a fake clock: samples go into a real store, each `tick` advances the clock and
 * evaluates, and a decision is carried out at once (current := desired).
 */
class Role {
  readonly clock = new ManualClock(0);
  readonly store = new MetricStore();
  state: PolicyState | undefined;
  instances: Inst[];
  current: number;
  readonly decisions: { t: number; d: Decision }[] = [];

  constructor(
    readonly name: string,
    readonly policies: Policy[],
    readonly opts: { current: number; min: number; max: number; warmupMs?: number; instances?: Inst[] },
  ) {
    this.current = opts.current;
    this.instances = opts.instances ?? Array.from({ length: opts.current }, (_, k) => ({ id: `i-${k + 1}`, servingSince: -1e9 }));
  }

  /** One sample of `metric` per instance, `value(id)`, at the clock's time. */
  sample(metric: string, value: number | ((id: string) => number)): void {
    for (const i of this.instances) {
      this.store.add(this.name, metric, { t: this.clock.now(), value: typeof value === 'number' ? value : value(i.id), instance: i.id });
    }
  }

  /** A role-wide sample. */
  sampleRole(metric: string, value: number): void {
    this.store.add(this.name, metric, { t: this.clock.now(), value });
  }

  evaluate(): Decision {
    const d = evaluate(
      this.policies,
      {
        role: this.name,
        now: this.clock.now(),
        current: this.current,
        min: this.opts.min,
        max: this.opts.max,
        instances: this.instances,
        warmupMs: this.opts.warmupMs ?? 0,
        metrics: this.store,
      },
      this.state,
    );
    this.state = d.state;
    // New instances start serving now (and warm up); scale-in removes the newest.
    for (let k = this.current; k < d.desired; k++) this.instances.push({ id: `n-${this.clock.now()}-${k}`, servingSince: this.clock.now() });
    if (d.desired < this.current) this.instances = this.instances.slice(0, Math.max(0, this.instances.length - (this.current - d.desired)));
    this.current = d.desired;
    this.decisions.push({ t: this.clock.now(), d });
    return d;
  }

  /** Every `everyMs` until `untilMs`: feed, then evaluate. */
  run(untilMs: number, everyMs: number, feed: (t: number) => void): void {
    while (this.clock.now() <= untilMs) {
      feed(this.clock.now());
      this.evaluate();
      this.clock.advance(everyMs);
    }
  }

  changes(): { t: number; reason: string }[] {
    return this.decisions.filter((x) => x.d.changed).map((x) => ({ t: x.t, reason: x.d.reason }));
  }

  reasonAt(t: number): string | undefined {
    return this.decisions.find((x) => x.t === t)?.d.reason;
  }
}

const cpuThreshold = (o: Partial<Parameters<typeof thresholdPolicy>[0]> = {}) =>
  thresholdPolicy({ metric: 'cpu', upper: 0.75, lower: 0.3, forMs: 30_000, cooldownMs: 60_000, ...o });

describe('threshold', () => {
  test('scales out only once the breach has lasted `for`', () => {
    const r = new Role('api', [cpuThreshold()], { current: 2, min: 1, max: 6 });
    r.run(130_000, 5000, (t) => r.sample('cpu', t < 100_000 ? 0.5 : 0.82));
    assert.equal(r.reasonAt(95_000), 'api stays at 2: mean cpu 0.50 within [0.30, 0.75]');
    assert.equal(r.reasonAt(100_000), 'api stays at 2: mean cpu 0.82 > 0.75 for 0s of 30s');
    assert.equal(r.reasonAt(125_000), 'api stays at 2: mean cpu 0.82 > 0.75 for 25s of 30s');
    assert.deepEqual(r.changes(), [{ t: 130_000, reason: 'api 2→3: mean cpu 0.82 > 0.75 for 30s (cooldown clear, max 6)' }]);
  });

  test('a dip below the bound starts the breach over', () => {
    const r = new Role('api', [cpuThreshold()], { current: 2, min: 1, max: 6 });
    r.run(150_000, 5000, (t) => r.sample('cpu', t < 100_000 || t === 115_000 ? 0.5 : 0.82));
    assert.deepEqual(r.changes().map((c) => c.t), [150_000]);
  });

  test('scales in once the value has stayed below `lower` for `for`', () => {
    const r = new Role('api', [cpuThreshold({ forMs: 120_000 })], { current: 3, min: 1, max: 6 });
    r.run(120_000, 5000, () => r.sample('cpu', 0.21));
    assert.equal(r.reasonAt(115_000), 'api stays at 3: mean cpu 0.21 < 0.30 for 115s of 120s');
    assert.deepEqual(r.changes(), [{ t: 120_000, reason: 'api 3→2: mean cpu 0.21 < 0.30 for 120s' }]);
  });

  test('waits out the cooldown after an action, then acts again', () => {
    const r = new Role('api', [cpuThreshold()], { current: 2, min: 1, max: 6 });
    r.run(200_000, 5000, () => r.sample('cpu', 0.82));
    assert.deepEqual(r.changes().map((c) => [c.t, r.decisions.find((x) => x.t === c.t)?.d.desired]), [
      [30_000, 3],
      [90_000, 4],
      [150_000, 5],
    ]);
    assert.equal(r.reasonAt(60_000), 'api stays at 3: mean cpu 0.82 > 0.75 for 30s, cooling down (30s left)');
  });

  test('adds and removes `step` instances', () => {
    const up = new Role('api', [cpuThreshold({ step: 2 })], { current: 2, min: 1, max: 6 });
    up.run(30_000, 5000, () => up.sample('cpu', 0.9));
    assert.deepEqual(up.changes(), [{ t: 30_000, reason: 'api 2→4: mean cpu 0.90 > 0.75 for 30s (cooldown clear, max 6)' }]);
    const down = new Role('api', [cpuThreshold({ step: 3 })], { current: 5, min: 1, max: 6 });
    down.run(30_000, 5000, () => down.sample('cpu', 0.1));
    assert.deepEqual(down.changes(), [{ t: 30_000, reason: 'api 5→2: mean cpu 0.10 < 0.30 for 30s' }]);
  });

  test('stat max reacts to one hot instance where the mean does not', () => {
    const hot = (id: string) => (id === 'i-1' ? 0.95 : 0.4);
    const mean = new Role('api', [cpuThreshold()], { current: 3, min: 1, max: 6 });
    mean.run(60_000, 5000, () => mean.sample('cpu', hot));
    assert.equal(mean.changes().length, 0);
    const max = new Role('api', [cpuThreshold({ stat: 'max' })], { current: 3, min: 1, max: 6 });
    max.run(30_000, 5000, () => max.sample('cpu', hot));
    assert.deepEqual(max.changes(), [{ t: 30_000, reason: 'api 3→4: max cpu 0.95 > 0.75 for 30s (cooldown clear, max 6)' }]);
  });

  test('at max, says so', () => {
    const r = new Role('api', [cpuThreshold()], { current: 6, min: 1, max: 6 });
    r.run(30_000, 5000, () => r.sample('cpu', 0.82));
    assert.equal(r.changes().length, 0);
    assert.equal(r.reasonAt(30_000), 'api stays at 6: mean cpu 0.82 > 0.75 for 30s, already at max 6');
  });

  test('one bound only: the other direction never acts', () => {
    const r = new Role('api', [thresholdPolicy({ metric: 'cpu', upper: 0.75, forMs: 10_000 })], { current: 3, min: 1, max: 6 });
    r.run(60_000, 5000, () => r.sample('cpu', 0.01));
    assert.equal(r.changes().length, 0);
    assert.equal(r.reasonAt(60_000), 'api stays at 3: mean cpu 0.01 not above 0.75');
  });

  test('a scaling action recorded from outside starts the cooldown', () => {
    const r = new Role('api', [cpuThreshold()], { current: 2, min: 1, max: 6 });
    r.state = recordAction(undefined, 10_000, 2, 3);
    r.current = 3;
    r.run(60_000, 5000, () => r.sample('cpu', 0.82));
    assert.equal(r.reasonAt(60_000), 'api stays at 3: mean cpu 0.82 > 0.75 for 30s, cooling down (10s left)');
    assert.equal(r.changes().length, 0);
  });
});

describe('target', () => {
  test('desired = ceil(current × metric / target)', () => {
    const up = new Role('api', [targetPolicy({ metric: 'cpu', target: 0.5 })], { current: 2, min: 1, max: 10 });
    up.sample('cpu', 0.9);
    assert.equal(up.evaluate().reason, 'api 2→4: mean cpu 0.90 vs target 0.50 over 60s (max 10)');

    const down = new Role('api', [targetPolicy({ metric: 'cpu', target: 0.5, scaleDownStabilizationMs: 0 })], { current: 3, min: 1, max: 10 });
    down.sample('cpu', 0.2);
    assert.equal(down.evaluate().reason, 'api 3→2: mean cpu 0.20 vs target 0.50 over 60s');

    // 0.9 / 0.3 is 3.0000000000000004 in floating point: still 9, not 10.
    const exact = new Role('api', [targetPolicy({ metric: 'cpu', target: 0.3 })], { current: 1, min: 1, max: 20 });
    exact.sample('cpu', 0.9);
    assert.equal(exact.evaluate().desired, 3);
  });

  test('the mean is over the window, one vote per instance', () => {
    const r = new Role('api', [targetPolicy({ metric: 'cpu', target: 0.5, windowMs: 30_000 })], { current: 2, min: 1, max: 10 });
    r.store.add('api', 'cpu', { t: 0, value: 5, instance: 'i-1' }); // older than the window
    for (let t = 10_000; t <= 40_000; t += 1000) r.store.add('api', 'cpu', { t, value: 0.3, instance: 'i-1' });
    r.store.add('api', 'cpu', { t: 40_000, value: 0.9, instance: 'i-2' });
    r.clock.set(40_000);
    const d = r.evaluate();
    assert.equal(d.inputs['target.cpu.value'], 0.6000000000000001);
    assert.equal(d.desired, 3);
  });

  test('within the tolerance band nothing changes', () => {
    const r = new Role('api', [targetPolicy({ metric: 'cpu', target: 0.5 })], { current: 2, min: 1, max: 10 });
    r.sample('cpu', 0.54);
    assert.equal(r.evaluate().reason, 'api stays at 2: mean cpu 0.54 within 10% of target 0.50');
    r.clock.advance(60_001);
    r.sample('cpu', 0.46);
    assert.equal(r.evaluate().changed, false);
    r.clock.advance(60_001);
    r.sample('cpu', 0.56);
    assert.equal(r.evaluate().desired, 3);
  });

  test('scale-down stabilization: a metric flapping for 5 minutes never scales down early', () => {
    const flapping = (t: number) => (Math.floor(t / 60_000) % 2 === 0 ? 0.5 : 0.1);
    const r = new Role('api', [targetPolicy({ metric: 'cpu', target: 0.5 })], { current: 4, min: 1, max: 10 });
    r.run(300_000, 5000, (t) => r.sample('cpu', flapping(t)));
    assert.ok(r.decisions.every((x) => x.d.desired === 4), 'no scale-down while flapping');
    // The damping is what holds it: without it the same metric scales down at once.
    const raw = r.decisions.map((x) => x.d.perPolicy[0]?.inputs.raw ?? 4);
    assert.ok(raw.some((n) => n < 4));
    const bare = new Role('api', [targetPolicy({ metric: 'cpu', target: 0.5, scaleDownStabilizationMs: 0 })], { current: 4, min: 1, max: 10 });
    bare.run(300_000, 5000, (t) => bare.sample('cpu', flapping(t)));
    const firstDown = bare.changes()[0];
    assert.ok(firstDown && firstDown.t < 300_000);

    // Then steadily low: it scales down 5 minutes after the last recommendation of 4.
    r.run(900_000, 5000, () => r.sample('cpu', 0.1));
    const lastHigh = Math.max(...r.decisions.filter((x) => (x.d.perPolicy[0]?.inputs.raw ?? 0) >= 4).map((x) => x.t));
    const down = r.changes()[0];
    assert.ok(down);
    assert.equal(down.t, lastHigh + 300_000);
    assert.match(down.reason, /^api 4→[123]: mean cpu 0\.10 vs target 0\.50 over 60s/);
    assert.match(r.reasonAt(lastHigh + 295_000) ?? '', /wants 1, held by scale-down stabilization \(highest in the last 300s: 4\)/);
  });

  test('rate limits: at most max(4 instances, 100%) added per 15s', () => {
    const r = new Role('api', [targetPolicy({ metric: 'cpu', target: 0.5 })], { current: 1, min: 1, max: 100 });
    // One measured instance at 10 cores: 20 wanted throughout.
    r.instances = [{ id: 'i-1', servingSince: -1e9 }];
    r.run(45_000, 5000, () => r.store.add('api', 'cpu', { t: r.clock.now(), value: 10, instance: 'i-1' }));
    assert.deepEqual(r.changes(), [
      { t: 0, reason: 'api 1→5: mean cpu 10 vs target 0.50 over 60s, wants 20, rate-limited to 5 by +4 or +100% per 15s (max 100)' },
      { t: 15_000, reason: 'api 5→10: mean cpu 10 vs target 0.50 over 60s, measured on 1 of 5, wants 20, rate-limited to 10 by +4 or +100% per 15s (max 100)' },
      { t: 30_000, reason: 'api 10→20: mean cpu 10 vs target 0.50 over 60s, measured on 1 of 10 (max 100)' },
    ]);
    assert.equal(r.reasonAt(5000), 'api stays at 5: mean cpu 10 vs target 0.50 over 60s, measured on 1 of 5, wants 20, rate-limited to 5 by +4 or +100% per 15s');
  });

  test('rate limits: scale-down by a fixed number per period', () => {
    const p = targetPolicy({
      metric: 'cpu',
      target: 0.5,
      scaleDownStabilizationMs: 0,
      scaleDown: { instances: 1, periodMs: 60_000, select: 'max' },
    });
    const r = new Role('api', [p], { current: 5, min: 1, max: 10 });
    r.run(130_000, 10_000, () => r.sample('cpu', 0.05));
    assert.deepEqual(r.changes().map((c) => [c.t, c.reason]), [
      [0, 'api 5→4: mean cpu 0.05 vs target 0.50 over 60s, wants 1, rate-limited to 4 by -1 per 60s'],
      [60_000, 'api 4→3: mean cpu 0.05 vs target 0.50 over 60s, wants 1, rate-limited to 3 by -1 per 60s'],
      [120_000, 'api 3→2: mean cpu 0.05 vs target 0.50 over 60s, wants 1, rate-limited to 2 by -1 per 60s'],
    ]);
  });

  test('no metric data: abstains and says so', () => {
    const r = new Role('api', [targetPolicy({ metric: 'rps', target: 100 })], { current: 2, min: 1, max: 10 });
    const d = r.evaluate();
    assert.equal(d.reason, 'api stays at 2: no rps data from instances past warm-up in the last 60s');
    assert.equal(d.perPolicy[0]?.noData, true);
  });
});

describe('queue', () => {
  const worker = (o: { current: number; min?: number; activation?: number; stabilization?: number }) =>
    new Role(
      'worker',
      [
        queuePolicy({
          metric: 'backlog',
          perInstance: 10,
          activation: o.activation ?? 1,
          scaleDownStabilizationMs: o.stabilization ?? POLICY_DEFAULTS.queue.scaleDownStabilizationMs,
        }),
      ],
      { current: o.current, min: o.min ?? 0, max: 8 },
    );

  test('backlog 37 at 10 per instance → 4', () => {
    const r = worker({ current: 2 });
    r.sampleRole('backlog', 37);
    assert.equal(r.evaluate().reason, 'worker 2→4: backlog 37 at 10 per instance (max 8)');
  });

  test('max caps it, and the reason says what was wanted', () => {
    const r = worker({ current: 2 });
    r.sampleRole('backlog', 370);
    assert.equal(r.evaluate().reason, 'worker 2→8: backlog 370 at 10 per instance, wants 37 (capped at max 8)');
  });

  test('from zero: nothing below the activation, one instance at it', () => {
    const r = worker({ current: 0, activation: 5 });
    r.sampleRole('backlog', 3);
    assert.equal(r.evaluate().reason, 'worker stays at 0: backlog 3 below activation 5');
    r.clock.advance(5000);
    r.sampleRole('backlog', 5);
    assert.equal(r.evaluate().reason, 'worker 0→1: backlog 5 at 10 per instance (max 8)');
  });

  test('scales to zero with min 0 once the scale-down stabilization has passed, and back to 1 when work arrives', () => {
    const r = worker({ current: 2 });
    r.run(400_000, 5000, (t) => r.sampleRole('backlog', t === 0 ? 15 : 0));
    assert.deepEqual(r.changes(), [{ t: 300_000, reason: 'worker 2→0: backlog 0 below activation 1' }]);
    assert.equal(
      r.reasonAt(295_000),
      'worker stays at 2: backlog 0 below activation 1, wants 0, held by scale-down stabilization (highest in the last 300s: 2)',
    );
    r.sampleRole('backlog', 3);
    assert.equal(r.evaluate().reason, 'worker 0→1: backlog 3 at 10 per instance (max 8)');
  });

  test('with min 1 it never goes to zero', () => {
    const r = worker({ current: 1, min: 1, stabilization: 0 });
    r.sampleRole('backlog', 0);
    assert.equal(r.evaluate().reason, 'worker stays at 1: backlog 0 below activation 1, already at min 1');
  });

  test('per-instance backlogs add up; a gone instance does not count', () => {
    const r = worker({ current: 2 });
    r.instances = [
      { id: 'a', servingSince: null },
      { id: 'b', servingSince: 0 },
    ];
    r.store.add('worker', 'backlog', { t: 0, value: 20, instance: 'a' });
    r.store.add('worker', 'backlog', { t: 0, value: 20, instance: 'b' });
    r.store.add('worker', 'backlog', { t: 0, value: 500, instance: 'gone' });
    assert.equal(r.evaluate().desired, 4);
  });

  test('no backlog reading: abstains', () => {
    const r = worker({ current: 2 });
    r.sampleRole('backlog', 50);
    r.clock.advance(31_000);
    assert.equal(r.evaluate().reason, 'worker stays at 2: no backlog data in the last 30s');
  });
});

describe('warm-up', () => {
  test('a new instance at 0% cpu does not drag the mean down', () => {
    const instances: Inst[] = [
      { id: 'a', servingSince: -1e9 },
      { id: 'b', servingSince: -1e9 },
      { id: 'new', servingSince: 0 },
    ];
    const cpu = (id: string) => (id === 'new' ? 0 : 0.9);
    const warm = new Role('api', [cpuThreshold()], { current: 3, min: 1, max: 6, warmupMs: 60_000, instances });
    warm.run(30_000, 5000, () => warm.sample('cpu', cpu));
    assert.deepEqual(warm.changes(), [{ t: 30_000, reason: 'api 3→4: mean cpu 0.90 > 0.75 for 30s (cooldown clear, max 6)' }]);
    // Counted, the idle newcomer would hide the load.
    const cold = new Role('api', [cpuThreshold()], { current: 3, min: 1, max: 6, warmupMs: 0, instances });
    cold.run(30_000, 5000, () => cold.sample('cpu', cpu));
    assert.equal(cold.changes().length, 0);
  });

  test('samples taken during warm-up never count, even after it', () => {
    const instances: Inst[] = [
      { id: 'a', servingSince: -1e9 },
      { id: 'new', servingSince: 0 },
    ];
    // At max, so the reason shows what the policy sees without the count moving.
    const r = new Role('api', [cpuThreshold()], { current: 2, min: 1, max: 2, warmupMs: 60_000, instances });
    r.run(65_000, 5000, (t) => r.sample('cpu', (id) => (id === 'new' && t < 60_000 ? 0 : 0.9)));
    // Counting the newcomer's idle warm-up samples at 35..55s would put the mean at 0.45.
    assert.equal(r.reasonAt(65_000), 'api stays at 2: mean cpu 0.90 > 0.75 for 30s, already at max 2');
  });

  test('target tracking does not scale again while new instances warm up', () => {
    const r = new Role('api', [targetPolicy({ metric: 'cpu', target: 0.5 })], {
      current: 4,
      min: 1,
      max: 20,
      warmupMs: 60_000,
      instances: [
        { id: 'a', servingSince: -1e9 },
        { id: 'b', servingSince: -1e9 },
        { id: 'c', servingSince: -5000 },
        { id: 'd', servingSince: null },
      ],
    });
    r.sample('cpu', (id) => (id === 'a' || id === 'b' ? 0.9 : 0));
    assert.equal(r.evaluate().reason, 'api stays at 4: mean cpu 0.90 vs target 0.50 over 60s, measured on 2 of 4');
  });

  test('no instance past warm-up: the policy abstains', () => {
    const r = new Role('api', [cpuThreshold()], { current: 1, min: 1, max: 6, warmupMs: 60_000, instances: [{ id: 'a', servingSince: 0 }] });
    r.sample('cpu', 0.99);
    assert.equal(r.evaluate().reason, 'api stays at 1: no cpu data from instances past warm-up in the last 30s');
  });
});

describe('several policies', () => {
  const both = (o: { stabilization?: number } = {}) => [
    cpuThreshold(),
    queuePolicy({ metric: 'backlog', perInstance: 10, scaleDownStabilizationMs: o.stabilization ?? 0 }),
  ];

  test('the largest desired count wins', () => {
    const r = new Role('worker', both(), { current: 2, min: 0, max: 8 });
    r.run(30_000, 5000, () => {
      r.sample('cpu', 0.5);
      r.sampleRole('backlog', 37);
    });
    assert.equal(r.reasonAt(0), 'worker 2→4: backlog 37 at 10 per instance (max 8)');
    const d = r.decisions[0]?.d;
    assert.deepEqual(d?.perPolicy.map((p) => [p.kind, p.desired]), [
      ['threshold', 2],
      ['queue', 4],
    ]);
    assert.equal(d?.inputs['queue.backlog.value'], 37);
    assert.equal(d?.inputs['threshold.cpu.value'], 0.5);
  });

  test('scale-in needs every policy to agree; a stay lists every reason', () => {
    const r = new Role('worker', both(), { current: 2, min: 0, max: 8 });
    r.sample('cpu', 0.5);
    r.sampleRole('backlog', 0);
    assert.equal(r.evaluate().reason, 'worker stays at 2: mean cpu 0.50 within [0.30, 0.75]; backlog 0 below activation 1');
  });

  test('a policy without data does not block the others from scaling out', () => {
    const r = new Role('worker', both(), { current: 2, min: 0, max: 8 });
    r.sampleRole('backlog', 61);
    const d = r.evaluate();
    assert.equal(d.reason, 'worker 2→7: backlog 61 at 10 per instance (max 8)');
    assert.equal(d.perPolicy[0]?.noData, true);
  });
});

describe('bounds', () => {
  test('below min is raised, above max lowered, saying why', () => {
    const low = new Role('api', [], { current: 1, min: 2, max: 6 });
    assert.equal(low.evaluate().reason, 'api 1→2: raised to min 2 (no scaling policy)');
    const high = new Role('api', [cpuThreshold()], { current: 9, min: 1, max: 6 });
    high.sample('cpu', 0.5);
    assert.equal(high.evaluate().reason, 'api 9→6: lowered to max 6 (mean cpu 0.50 within [0.30, 0.75])');
    const floor = new Role('api', [cpuThreshold({ step: 5 })], { current: 4, min: 2, max: 6 });
    floor.run(30_000, 5000, () => floor.sample('cpu', 0.1));
    assert.equal(floor.reasonAt(30_000), 'api 4→2: mean cpu 0.10 < 0.30 for 30s, wants 0 (held at min 2)');
  });

  const policyArb: fc.Arbitrary<Policy> = fc.oneof(
    fc
      .record({
        upper: fc.option(fc.double({ min: 0.5, max: 5, noNaN: true }), { nil: undefined }),
        lower: fc.option(fc.double({ min: 0, max: 0.49, noNaN: true }), { nil: undefined }),
        forMs: fc.integer({ min: 0, max: 120_000 }),
        step: fc.integer({ min: 1, max: 5 }),
        cooldownMs: fc.integer({ min: 0, max: 300_000 }),
        stat: fc.constantFrom('mean' as const, 'max' as const, 'p95' as const),
      })
      .map(({ upper, lower, ...o }) =>
        thresholdPolicy({ metric: 'cpu', ...o, ...(upper !== undefined ? { upper } : {}), ...(lower !== undefined ? { lower } : {}) }),
      ),
    fc
      .record({
        target: fc.double({ min: 0.01, max: 5, noNaN: true }),
        tolerance: fc.double({ min: 0, max: 1, noNaN: true }),
        scaleDownStabilizationMs: fc.integer({ min: 0, max: 300_000 }),
        scaleUpStabilizationMs: fc.integer({ min: 0, max: 60_000 }),
        windowMs: fc.integer({ min: 1000, max: 120_000 }),
      })
      .map((o) => targetPolicy({ metric: 'cpu', ...o })),
    fc
      .record({ perInstance: fc.double({ min: 0.1, max: 100, noNaN: true }), activation: fc.double({ min: 0, max: 10, noNaN: true }) })
      .map((o) => queuePolicy({ metric: 'backlog', ...o, scaleDownStabilizationMs: 60_000 })),
  );
  const sampleArb = fc.record({
    t: fc.integer({ min: 0, max: 600_000 }),
    value: fc.double({ min: 0, max: 1000, noNaN: true }),
    instance: fc.constantFrom('a', 'b', 'c', undefined),
    metric: fc.constantFrom('cpu', 'backlog'),
  });
  const scenario = fc
    .record({
      policies: fc.array(policyArb, { maxLength: 4 }),
      samples: fc.array(sampleArb, { maxLength: 200 }),
      instances: fc.subarray(['a', 'b', 'c']).chain((ids) =>
        fc.tuple(...ids.map((id) => fc.option(fc.integer({ min: 0, max: 600_000 }), { nil: null }).map((s) => ({ id, servingSince: s })))),
      ),
      min: fc.integer({ min: 0, max: 10 }),
      span: fc.integer({ min: 0, max: 30 }),
      current: fc.integer({ min: 0, max: 50 }),
      warmupMs: fc.integer({ min: 0, max: 120_000 }),
      times: fc.array(fc.integer({ min: 0, max: 700_000 }), { minLength: 1, maxLength: 6 }),
    })
    .map((s) => ({ ...s, max: s.min + s.span, times: [...s.times].sort((a, b) => a - b) }));

  test('property: min <= desired <= max, always; same inputs, same decision', () => {
    fc.assert(
      fc.property(scenario, (s) => {
        const store = new MetricStore();
        for (const x of s.samples) store.add('r', x.metric, { t: x.t, value: x.value, ...(x.instance ? { instance: x.instance } : {}) });
        let state: PolicyState | undefined;
        let current = s.current;
        for (const now of s.times) {
          const ctx = { role: 'r', now, current, min: s.min, max: s.max, instances: s.instances, warmupMs: s.warmupMs, metrics: store };
          const d = evaluate(s.policies, ctx, state);
          assert.ok(d.desired >= s.min && d.desired <= s.max, `${d.desired} outside [${s.min}, ${s.max}]: ${d.reason}`);
          assert.ok(Number.isInteger(d.desired));
          assert.equal(d.changed, d.desired !== current);
          // Deterministic, and the state survives a JSON round trip (the controller stores it).
          assert.deepEqual(evaluate(s.policies, ctx, state), d);
          const revived = JSON.parse(JSON.stringify(state ?? null)) as PolicyState | null;
          assert.deepEqual(evaluate(s.policies, ctx, revived ?? undefined), d);
          state = d.state;
          current = d.desired;
        }
      }),
      { numRuns: 300 },
    );
  });
});

test('the state stays small over a long run', () => {
  const r = new Role('api', [cpuThreshold(), targetPolicy({ metric: 'cpu', target: 0.5 })], { current: 3, min: 1, max: 10 });
  r.run(3_600_000, 5000, (t) => r.sample('cpu', Math.floor(t / 450_000) % 2 === 0 ? 0.9 : 0.1));
  const s = r.state;
  assert.ok(s);
  assert.ok(s.events.length <= 5, `events: ${s.events.length}`);
  const recs = s.recommendations['target:cpu']?.length ?? 0;
  assert.ok(recs <= 60, `recommendations: ${recs}`);
  assert.ok(r.changes().length > 4, `changes: ${r.changes().length}`);
});

test('fast enough for 10,000 instances', () => {
  const n = 10_000;
  const store = new MetricStore();
  const instances = Array.from({ length: n }, (_, k) => ({ id: `i-${k}`, servingSince: -1e9 }));
  for (let t = 0; t <= 180_000; t += 5000) for (const i of instances) store.add('api', 'cpu', { t: t + (i.id.length % 5) * 1000, value: 0.8, instance: i.id });
  const policies = [thresholdPolicy({ metric: 'cpu', upper: 0.75, lower: 0.3, forMs: 120_000, stat: 'p95' }), targetPolicy({ metric: 'cpu', target: 0.5 })];
  assert.ok(historyNeededMs(policies) <= store.horizonMs);
  // CPU time, not wall time: a complexity guard that other work on the machine cannot trip.
  const started = process.cpuUsage();
  const d = evaluate(policies, { role: 'api', now: 180_000, current: n, min: 1, max: 20_000, instances, warmupMs: 0, metrics: store }, undefined);
  const used = process.cpuUsage(started);
  const ms = (used.user + used.system) / 1000;
  assert.equal(d.desired, 16_000);
  assert.ok(ms < 2000, `one evaluation took ${ms.toFixed(0)}ms of CPU`);
});

describe('YAML: scale and metrics', () => {
  const role = z.strictObject({ scale: scaleSchema.optional(), metrics: metricsSchema.optional() });
  const parseRole = (text: string) => role.parse(parseYaml(text));
  const issues = (value: unknown) => {
    const r = role.safeParse(value);
    assert.ok(!r.success, 'expected a refusal');
    return r.error.issues.map((i) => `${i.path.map(String).join('.')}: ${i.message}`);
  };

  test('a full example compiles, defaults filled in', () => {
    const raw = parseRole(`
scale:
  - threshold: { metric: cpu, upper: 0.75, lower: 0.30, for: 30s, cooldown: 2m }
  - target: { metric: rps, target: 200, scaleDown: { stabilization: 2m, instances: 1, period: 1m } }
  - queue: { metric: backlog, perInstance: 10 }
metrics:
  - name: rps
    http: /metrics
    select: 'http_requests_per_second{route!="/health"}'
  - name: backlog
    url: "\${queue.url}/stats"
    format: json
    select: stats.backlog
    interval: 10s
`);
    const policies = compileScale(raw.scale ?? []);
    assert.deepEqual(policies, [
      { kind: 'threshold', metric: 'cpu', upper: 0.75, lower: 0.3, forMs: 30_000, step: 1, cooldownMs: 120_000, stat: 'mean' },
      {
        kind: 'target',
        metric: 'rps',
        target: 200,
        tolerance: 0.1,
        windowMs: 60_000,
        scaleUpStabilizationMs: 0,
        scaleDownStabilizationMs: 120_000,
        scaleUp: { instances: 4, percent: 100, periodMs: 15_000, select: 'max' },
        scaleDown: { instances: 1, periodMs: 60_000, select: 'max' },
      },
      { kind: 'queue', metric: 'backlog', perInstance: 10, activation: 1, scaleDownStabilizationMs: 300_000 },
    ]);
    const sources = compileMetrics(raw.metrics ?? []);
    assert.deepEqual(sources, [
      { name: 'rps', format: 'prometheus', select: 'http_requests_per_second{route!="/health"}', intervalMs: 5000, timeoutMs: 2000, scope: 'instance', http: '/metrics' },
      { name: 'backlog', format: 'json', select: 'stats.backlog', intervalMs: 10_000, timeoutMs: 2000, scope: 'role', url: '${queue.url}/stats' },
    ]);
    assert.deepEqual(checkPolicyMetrics(policies, sources), []);
    assert.deepEqual(checkPolicyMetrics(policies, []), [
      { path: 'scale[1].target.metric', message: 'no metric "rps": declare it under metrics, or use a built-in one (cpu, host_cpu, load1, memory)' },
      { path: 'scale[2].queue.metric', message: 'no metric "backlog": declare it under metrics, or use a built-in one (cpu, host_cpu, load1, memory)' },
    ]);
  });

  test('the compiled defaults are the documented ones', () => {
    const [threshold, target, queue] = compileScale(
      scaleSchema.parse([{ threshold: { metric: 'cpu', upper: 1 } }, { target: { metric: 'cpu', target: 0.5 } }, { queue: { metric: 'q', perInstance: 5 } }]),
    );
    assert.deepEqual(threshold, thresholdPolicy({ metric: 'cpu', upper: 1 }));
    assert.deepEqual(target, targetPolicy({ metric: 'cpu', target: 0.5 }));
    assert.deepEqual(queue, queuePolicy({ metric: 'q', perInstance: 5 }));
    assert.deepEqual(target, {
      kind: 'target',
      metric: 'cpu',
      target: 0.5,
      tolerance: 0.1,
      scaleUpStabilizationMs: 0,
      scaleDownStabilizationMs: 300_000,
      scaleUp: { instances: 4, percent: 100, periodMs: 15_000, select: 'max' },
      scaleDown: { percent: 100, periodMs: 15_000, select: 'max' },
      windowMs: 60_000,
    });
  });

  test('bad policies are refused, each problem named', () => {
    assert.deepEqual(issues({ scale: [{ threshold: { metric: 'cpu' } }] }), ['scale.0.threshold: expected upper, lower or both']);
    assert.deepEqual(issues({ scale: [{ threshold: { metric: 'cpu', upper: 0.3, lower: 0.5 } }] }), ['scale.0.threshold.lower: must be below upper (0.3)']);
    assert.deepEqual(issues({ scale: [{ target: { metric: 'cpu', target: 0.5, tolerance: 2 } }] }), [
      'scale.0.target.tolerance: expected a number between 0 and 1',
    ]);
    assert.deepEqual(issues({ scale: [{ queue: { metric: 'q', perInstance: 0, scaleDownStabilization: 'soon' } }] }), [
      'scale.0.queue.perInstance: expected a number greater than 0',
      'scale.0.queue.scaleDownStabilization: expected a duration such as "5s" or "500ms"',
    ]);
    assert.deepEqual(issues({ scale: [{ target: { metric: 'cpu', target: 1 }, queue: { metric: 'q', perInstance: 1 } }] }), [
      'scale.0: expected exactly one of threshold, target, queue or adaptive (found target and queue)',
    ]);
    assert.deepEqual(issues({ scale: [{ threshold: { metric: 'cpu', upper: 1, step: 0, stat: 'median' } }] }), [
      'scale.0.threshold.step: expected an integer >= 1',
      'scale.0.threshold.stat: expected mean, max or p95',
    ]);
    const unknown = role.safeParse({ scale: [{ target: { metric: 'cpu', target: 1, bogus: 1 } }] });
    assert.ok(!unknown.success);
    assert.deepEqual(
      unknown.error.issues.map((i) => [i.code, i.path.join('.'), i.code === 'unrecognized_keys' ? i.keys : []]),
      [['unrecognized_keys', 'scale.0.target', ['bogus']]],
    );
    assert.deepEqual(issues({ scale: { target: { metric: 'cpu', target: 1 } } }), [
      'scale: expected a list of policies, e.g. [{ target: { metric: cpu, target: 0.6 } }]',
    ]);
  });

  test('bad metric sources are refused, each problem named', () => {
    assert.deepEqual(issues({ metrics: [{ name: 'cpu', http: '/m', select: 'x' }] }), [
      'metrics.0.name: "cpu" is a built-in metric (cpu, host_cpu, load1, memory, lb_requests, lb_member_requests, lb_inflight); choose another name',
    ]);
    assert.deepEqual(issues({ metrics: [{ name: 'a', select: 'x' }] }), [
      "metrics.0: expected exactly one of http (scraped by each agent from its role's process) or url (scraped once by the controller)",
    ]);
    assert.deepEqual(issues({ metrics: [{ name: 'a', http: '/m', select: 'x{' }] }), [
      'metrics.0.select: expected a Prometheus selector such as http_requests_total or queue_depth{queue="jobs"}',
    ]);
    assert.deepEqual(issues({ metrics: [{ name: 'a', url: 'http://q/stats', format: 'json', select: 'a..b' }] }), [
      'metrics.0.select: expected a JSON path such as stats.backlog or queues[0].depth',
    ]);
    assert.deepEqual(issues({ metrics: [{ name: 'a', url: 'ftp://q', select: 'x' }] }), [
      'metrics.0.url: expected an http:// or https:// URL (templated, e.g. "${queue.url}/stats")',
    ]);
    assert.deepEqual(issues({ metrics: [{ name: 'a', http: '/m', scope: 'role', select: 'x' }] }), [
      'metrics.0.scope: a role metric is scraped once by the controller: use url instead of http',
    ]);
    assert.deepEqual(
      issues({
        metrics: [
          { name: 'a', http: '/m', select: 'x' },
          { name: 'a', http: '/n', select: 'y', interval: '1s', timeout: '2s' },
        ],
      }),
      ['metrics.1.timeout: must not exceed interval (1s)', 'metrics.1.name: duplicate metric "a" (already at metrics[0])'],
    );
  });

  test('the schemas make a JSON Schema for editors', () => {
    const schema = JSON.stringify(z.toJSONSchema(role, { io: 'input', target: 'draft-07' }));
    assert.match(schema, /"threshold"/);
    assert.match(schema, /"default":"5m"/);
  });
});


// ---------------------------------------------------------------------------------------------
// adaptive

/** A deterministic stream in [0, 1) for the tests (not the simulator's sfc32: no import across doors). */
function lcg(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 2 ** 32;
  };
}
const gauss = (u: () => number) => Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());

/**
 * A role whose instances truly serve `capacity` req/s, fed every 15 s on the role's clock: the
 * demand (role-wide), each ready instance's cpu (served / capacity) and rps, and the backlog the
 * shortfall leaves; the policy's decisions are carried out at once.
 */
function adaptiveRole(o: { capacity: number; prior?: number; demand: (t: number) => number; current?: number; noise?: number; seed?: number }) {
  const p = adaptivePolicy({ metric: 'demand', backlog: 'backlog', served: 'rps', reactionMs: 75_000, ...(o.prior !== undefined ? { perInstance: o.prior } : {}), forecast: false });
  const r = new Role('web', [p], { current: o.current ?? 4, min: 1, max: 1000 });
  const u = lcg(o.seed ?? 7);
  let backlog = 0;
  r.run(4 * 3_600_000, 15_000, (t) => {
    const lambda = o.demand(t);
    const mu = r.current * o.capacity;
    const served = Math.min(mu, lambda + backlog / 15);
    backlog = Math.max(0, backlog + (lambda - served) * 15);
    const noisy = (v: number) => Math.max(0, v * (1 + (o.noise ?? 0) * gauss(u)));
    r.sampleRole('demand', noisy(lambda));
    r.sampleRole('backlog', backlog);
    r.sample('cpu', () => Math.min(1, noisy(served / mu)));
    r.sample('rps', () => noisy(served / r.current));
  });
  return r;
}

describe('adaptive: learned capacity, volatility headroom, backlog, forecast gating', () => {
  test('capacity learning converges from priors 20% off either way, with noisy metrics (property)', () => {
    fc.assert(
      fc.property(fc.double({ min: 5, max: 100, noNaN: true }), fc.constantFrom(0.8, 1.2), fc.double({ min: 0.3, max: 0.8, noNaN: true }), fc.integer({ min: 1, max: 1000 }), (capacity, off, load, seed) => {
        const r = adaptiveRole({ capacity, prior: capacity * off, demand: () => 4 * capacity * load, noise: 0.05, seed });
        const last = r.decisions.at(-1)?.d;
        const learned = last?.inputs['adaptive.demand.capacity'] ?? NaN;
        assert.deepEqual(learnedCapacities(last?.inputs ?? {}), { demand: learned }, 'what the API and /metrics show');
        assert.ok(Math.abs(learned / capacity - 1) < 0.03, `learned ${learned} for a true ${capacity} (prior ${capacity * off})`);
        // The reason names it.
        assert.match(last?.reason ?? '', /learned capacity/);
      }),
      { numRuns: 12 },
    );
  });

  test('without a prior it abstains until it has seen load, then learns the capacity', () => {
    const r = adaptiveRole({ capacity: 20, demand: () => 50 });
    const first = r.decisions[0]?.d;
    assert.equal(first?.perPolicy[0]?.noData, true);
    assert.match(first?.reason ?? '', /learning capacity/);
    const learned = r.decisions.at(-1)?.d.inputs['adaptive.demand.capacity'] ?? NaN;
    assert.ok(Math.abs(learned - 20) < 0.2, `learned ${learned}`);
  });

  test('a saturated role (growing queue) teaches the served rate as the capacity, whatever the CPU reads', () => {
    // CPU reads 0.5 (an I/O-bound role) while only 10 req/s per instance get through.
    const p = adaptivePolicy({ metric: 'demand', backlog: 'backlog', served: 'rps', perInstance: 30, forecast: false });
    const r = new Role('web', [p], { current: 2, min: 2, max: 2 });
    let backlog = 0;
    r.run(2 * 3_600_000, 15_000, () => {
      backlog += (40 - 20) * 15;
      r.sampleRole('demand', 40);
      r.sampleRole('backlog', backlog);
      r.sample('cpu', 0.5);
      r.sample('rps', 10);
    });
    const learned = r.decisions.at(-1)?.d.inputs['adaptive.demand.capacity'] ?? NaN;
    assert.ok(learned < 11, `learned ${learned}`);
  });

  test('headroom grows with volatility', () => {
    const steady = lcg(3);
    const jumpy = lcg(3);
    const calm = adaptiveRole({ capacity: 25, prior: 25, demand: () => 200 * Math.exp(0.02 * gauss(steady)) });
    // A new level every minute: the log rate jumps with a standard deviation of about 0.5.
    const levels = new Map<number, number>();
    const wild = adaptiveRole({
      capacity: 25,
      prior: 25,
      demand: (t) => {
        const m = Math.floor(t / 60_000);
        if (!levels.has(m)) levels.set(m, 200 * Math.exp(0.35 * gauss(jumpy)));
        return levels.get(m) ?? 200;
      },
    });
    const room = (r: Role) => r.decisions.at(-1)?.d.inputs['adaptive.demand.headroom'] ?? NaN;
    assert.ok(room(calm) <= 0.15, `calm headroom ${room(calm)}`);
    assert.ok(room(wild) > 2 * room(calm), `jumpy headroom ${room(wild)} vs calm ${room(calm)}`);
    assert.match(wild.decisions.at(-1)?.d.reason ?? '', /headroom \d+% from p90 growth within 120s/);
    // And the scale-down hold with it.
    assert.ok((wild.decisions.at(-1)?.d.inputs['adaptive.demand.holdMs'] ?? 0) > (calm.decisions.at(-1)?.d.inputs['adaptive.demand.holdMs'] ?? 0));
  });

  test('growthQuantile and holdFor, by hand', () => {
    // Minutes 100, 150, 100, 150...: the largest growth within 1 minute is +50% half the time, -33% otherwise.
    const rates = Array.from({ length: 21 }, (_, k) => (k % 2 === 0 ? 100 : 150));
    assert.equal(growthQuantile(rates, 1, 0.95), 0.5);
    assert.equal(growthQuantile(rates, 1, 0.4), 100 / 150 - 1);
    assert.equal(growthQuantile(rates.slice(0, 5), 1, 0.95), undefined);
    assert.equal(holdFor(0.5, 60_000, 4, 120_000, 900_000), 180_000);
    assert.equal(holdFor(5, 60_000, 4, 120_000, 900_000), 900_000);
  });

  test('a backlog is sized to drain within drainWithin, on top of the rate', () => {
    const p = adaptivePolicy({ metric: 'demand', backlog: 'backlog', perInstance: 10, forecast: false, minHeadroom: 0.1, maxHeadroom: 0.1, drainWithinMs: 60_000 });
    const at = (backlog: number) => {
      const r = new Role('web', [p], { current: 20, min: 1, max: 1000 });
      r.sampleRole('demand', 100);
      r.sampleRole('backlog', backlog);
      r.sample('cpu', 0.5);
      return r.evaluate();
    };
    // 100 × 1.1 / 10 = 11 without a queue.
    assert.equal(at(0).desired, 11);
    // 6,000 waiting, nothing growing (20 × 10 ≥ 100): + 6000 / 60 s / 10 = 10 more.
    const d = at(6000);
    assert.equal(d.desired, 21);
    assert.match(d.reason, /web 20→21: rate 100\/s, backlog 6,000, capacity 10\/s \(prior, nothing learned yet\), headroom 10%/);
  });

  test('the forecast is trusted on a repeating day, not on a random walk', () => {
    // Three days of a daily sawtooth: bursts at the same minutes every day.
    let s = EMPTY_FORECAST;
    for (let m = 0; m < 3 * 1440; m++) s = observeMinute(s, m, 100 + 300 * Math.max(0, 1 - (m % 60) / 20), 2);
    assert.ok(trusted(s), `error ${s.err} vs naive ${s.errNaive}`);
    const u = lcg(11);
    let w = EMPTY_FORECAST;
    let x = 0;
    for (let m = 0; m < 3 * 1440; m++) {
      x += 0.1 * gauss(u);
      w = observeMinute(w, m, 200 * Math.exp(x), 2);
    }
    assert.equal(trusted(w), false, `error ${w.err} vs naive ${w.errNaive}`);
  });

  test('YAML: adaptive compiles, names its metrics, and refuses what makes no sense', () => {
    const parsed = scaleSchema.parse(parseYaml(`
- adaptive: { metric: demand, perInstance: 25, backlog: backlog, served: rps, reaction: 75s, quantile: 0.9 }
`));
    const [p] = compileScale(parsed);
    assert.equal(p?.kind, 'adaptive');
    if (p?.kind !== 'adaptive') return;
    assert.equal(p.reactionMs, 75_000);
    assert.equal(p.quantile, 0.9);
    assert.equal(p.cpu, 'cpu');
    assert.equal(p.drainWithinMs, POLICY_DEFAULTS.adaptive.drainWithinMs);
    assert.deepEqual(
      checkPolicyMetrics([p], [{ name: 'demand' }]).map((i) => i.path),
      ['scale[0].adaptive.served', 'scale[0].adaptive.backlog'],
    );
    assert.equal(scaleSchema.safeParse([{ adaptive: { metric: 'demand', quantile: 1.5 } }]).success, false);
    assert.equal(scaleSchema.safeParse([{ adaptive: { metric: 'demand', minHeadroom: 0.6, maxHeadroom: 0.5 } }]).success, false);
  });
});
