/**
 * The simulator: reports are reproducible, the harness's answers are right where they can be
 * worked out by hand, and the oracle is a true lower bound. Generated traces only: the WorldCup
 * trace is for the bench, not for tests.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parseAppFile } from '../src/core/index.js';
import {
  defaultApp,
  erlangC,
  erlangWait,
  fluidStep,
  formatTable,
  parseBoot,
  parseSlo,
  parseTrace,
  renderSvg,
  runComparison,
  runComparisonParallel,
  simulate,
  simulateCommand,
  commandOptions,
  SimInputError,
  syntheticTrace,
  traceOf,
  type ComparisonReport,
} from '../src/sim/index.js';

/** A role scaled by the load balancer's request rate at 8 of an instance's 10 req/s. */
const DEMAND_APP = parseAppFile(`app: t
roles:
  web:
    min: 1
    max: 100
    warmup: 0s
    scale:
      - queue: { metric: demand, perInstance: 8 }
    metrics:
      - { name: demand, url: "http://127.0.0.1:1/stats", format: json, select: rate }
`);

/**
 * The harness's exact mode: the fluid queue (nobody waits below saturation), exact metrics seen
 * at once, instant drains. The known answers below are worked out by hand in it.
 */
const EXACT = { queueModel: 'fluid', metricNoise: false, metricLagMs: 0, drainMs: 0 } as const;

const minutes = (n: number, rate: number) => new Array<number>(n).fill(rate);
const row = (r: ComparisonReport, name: string) => {
  const found = r.rows.find((x) => x.name === name);
  assert.ok(found, `no row ${name}`);
  return found;
};

describe('known answers', () => {
  test('constant 100 req/s at 10 req/s per instance, boot 0: fixed and oracle need 10 instances', () => {
    const r = runComparison({ app: DEMAND_APP, trace: traceOf('constant', 60_000, minutes(120, 100)), capacity: 10, boot: '0s' , ...EXACT });
    const fixed = row(r, 'fixed');
    const oracle = row(r, 'oracle');
    assert.equal(fixed.peakInstances, 10);
    assert.equal(fixed.instanceHours, 20);
    assert.equal(oracle.instanceHours, 20);
    assert.equal(oracle.violatingMinutes, 0);
    assert.equal(oracle.queued, 0);
    assert.equal(r.oracleInstanceHours, 20);
    // The demand policy plans for 8 req/s per instance: ceil(100 / 8) = 13, once the first
    // tick has measured the rate (10 instances until then).
    assert.equal(row(r, 'drover').instanceHours, (15 * 10 + 7185 * 13) / 3600);
  });

  test('a step from 10 to 50 req/s: oracle and fixed instance-hours, with and without a boot', () => {
    const trace = traceOf('step', 60_000, [...minutes(60, 10), ...minutes(60, 50)]);
    const instant = runComparison({ app: DEMAND_APP, trace, capacity: 10, boot: '0s' , ...EXACT });
    assert.equal(row(instant, 'oracle').instanceHours, 1 * 1 + 5 * 1);
    assert.equal(row(instant, 'fixed').instanceHours, 5 * 2);
    // With a 60 s boot the four extra instances are made a minute ahead of the step.
    const booting = runComparison({ app: DEMAND_APP, trace, capacity: 10, boot: '60s' , ...EXACT });
    assert.equal(row(booting, 'oracle').instanceHours, Math.round((6 + 4 / 60) * 1e4) / 1e4);
    assert.equal(row(booting, 'oracle').violatingMinutes, 0);
  });

  test("the step through Drover's own evaluate and plan: one tick of lag, then ceil(50 / 8) = 7", () => {
    const trace = traceOf('step', 60_000, [...minutes(60, 10), ...minutes(60, 50)]);
    const r = runComparison({ app: DEMAND_APP, trace, capacity: 10, boot: '0s', baselines: [] , ...EXACT });
    const d = row(r, 'drover');
    // 1 instance for the first tick (no rate measured yet), 2 (ceil(10 / 8)) until the tick after
    // the step, then 7: 15 s × 1 + 3600 s × 2 + 3585 s × 7.
    assert.equal(d.instanceHours, (15 + 3600 * 2 + 3585 * 7) / 3600);
    assert.equal(d.scalingActions, 2);
    // The step's tick queues 450 requests behind 2 instances; 7 drain them in 22.5 s.
    assert.equal(d.queued, 750 + 750 + 375);
    assert.equal(d.dropped, 0);
    assert.equal(d.violatingMinutes, 1);
  });

  test('Erlang C against hand-computed values: waits grow before saturation', () => {
    const close = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-12, `${a} vs ${b}`);
    // M/M/1: C = ρ, Wq = ρ / (μ - λ).
    close(erlangC(1, 0.8), 0.8);
    close(erlangWait(1, 0.8, 1), 4);
    // M/M/2 at a = 1: B(2, 1) = 1/5, C = 2·(1/5) / (2 - 1·(4/5)) = 1/3; Wq = (1/3) / (2 - 1).
    close(erlangC(2, 1), 1 / 3);
    close(erlangWait(2, 1, 1), 1 / 3);
    // M/M/3 at a = 2: B = 4/19, C = 4/9; Wq = (4/9) / (3·10 - 20) with 10 req/s servers.
    close(erlangC(3, 2), 4 / 9);
    close(erlangWait(3, 20, 10), 4 / 9 / 10);
    // Saturation: everyone waits, for ever.
    assert.equal(erlangC(2, 2), 1);
    assert.equal(erlangWait(2, 20, 10), Infinity);
    // 25 req/s instances, 90% busy: 1 instance waits 360 ms, 10 instances far less (pooling).
    close(erlangWait(1, 22.5, 25), 0.9 / 2.5);
    assert.ok(erlangWait(10, 225, 25) < 0.03);
  });

  test('the Erlang model in a run: waits below saturation where the fluid queue has none', () => {
    // 1 instance of 10 req/s at 9 req/s: the fluid queue never waits; M/M/1 waits 0.9 s per request.
    const trace = traceOf('flat', 60_000, minutes(10, 9));
    const one = { name: 'one', app: DEMAND_APP, role: 'web', trace, capacity: 10, boot: parseBoot('0s'), slo: parseSlo('wait:500ms'), seed: 1, schedule: { desiredAt: () => 1 }, min: 0, max: 10 };
    const fluid = simulate({ ...one, ...EXACT });
    const erl = simulate({ ...one, ...EXACT, queueModel: 'erlang' });
    assert.equal(fluid.meanWaitMs, 0);
    assert.equal(Math.round(erl.meanWaitMs), 900);
    assert.equal(erl.violatingMinutes, 10);
  });

  test('the fluid queue: overload builds a backlog, spare capacity drains it, the timeout drops', () => {
    // 20 req/s into 10 req/s for 10 s: the backlog grows to 100, 50 on average, which takes 5 s.
    const over = fluidStep(0, 20, 10, 10, 30);
    assert.equal(over.backlog, 100);
    assert.equal(over.served, 100);
    assert.equal(over.waitSeconds / 200, 5);
    // 100 waiting, 5 req/s arriving into 15 req/s: empty after 10 of the 20 s.
    const drain = fluidStep(100, 5, 15, 20, 30);
    assert.equal(drain.backlog, 0);
    assert.equal(drain.served, 200);
    assert.equal(drain.queued, 50);
    // No member: everything is refused.
    assert.equal(fluidStep(10, 5, 0, 10, 30).dropped, 60);
    // The queue holds at most 30 s of service: 10 req/s × 30 s; the rest is dropped.
    const full = fluidStep(0, 30, 10, 60, 30);
    assert.equal(full.backlog, 300);
    assert.equal(full.dropped, 20 * 60 - 300);
  });
});

describe('the harness', () => {
  test('the same seed gives the same report, a random boot and crashes included', () => {
    const opts = {
      app: defaultApp(25),
      trace: syntheticTrace({ family: 'flash', seed: 4, days: 1 }),
      capacity: 25,
      boot: 'lognormal:60s,0.5',
      crashRate: 0.05,
      seed: 7,
      variants: [{ name: 'drover+forecast', forecast: true }],
    } as const;
    const a = runComparison(opts);
    const b = runComparison(opts);
    assert.deepEqual(a, b);
    assert.ok(row(a, 'drover').crashes > 0, 'crashes were injected');
    assert.notDeepEqual(runComparison({ ...opts, seed: 8 }).rows, a.rows);
  });

  test('the oracle is never beaten on cost by a policy that meets the SLO', () => {
    const traces = [
      syntheticTrace({ family: 'diurnal', seed: 11, days: 1 }),
      syntheticTrace({ family: 'ramps', seed: 12, days: 1 }),
      syntheticTrace({ family: 'flash', seed: 13, days: 1 }),
    ];
    for (const trace of traces) {
      for (const boot of ['0s', '90s']) {
        const r = runComparison({
          app: defaultApp(25),
          trace,
          capacity: 25,
          boot,
          slo: 'wait:500ms',
          variants: [{ name: 'drover+forecast', forecast: true }, { name: 'drover+spare', spares: 1 }],
        });
        const oracle = row(r, 'oracle');
        assert.equal(oracle.violatingMinutes, 0, `${trace.name}, boot ${boot}: the oracle meets the SLO`);
        for (const x of r.rows) {
          if (x.violatingMinutes === 0) {
            assert.ok(x.instanceHours >= oracle.instanceHours - 1e-9, `${trace.name}, boot ${boot}: ${x.name} ${x.instanceHours} < oracle ${oracle.instanceHours}`);
          }
        }
      }
    }
  });

  test('planning only when something changed gives the report of planning every tick', () => {
    const base = {
      name: 'x',
      app: defaultApp(25),
      role: 'web',
      trace: syntheticTrace({ family: 'ramps', seed: 2, days: 1 }),
      capacity: 25,
      boot: parseBoot('uniform:30s..90s'),
      slo: parseSlo('wait:500ms'),
      seed: 3,
      crashRate: 0.02,
    };
    assert.deepEqual(simulate(base), simulate({ ...base, replanEveryTick: true }));
  });

  test('crashed instances are fenced and replaced by the planner', () => {
    const r = simulate({
      name: 'crashy',
      app: DEMAND_APP,
      role: 'web',
      trace: traceOf('flat', 60_000, minutes(6 * 60, 40)),
      capacity: 10,
      boot: parseBoot('30s'),
      slo: parseSlo('wait:500ms'),
      seed: 1,
      crashRate: 0.5,
    });
    assert.ok(r.crashes >= 5, `crashes: ${r.crashes}`);
    // Each crash costs the role one instance for a heartbeat timeout and a boot, not for good.
    assert.ok(r.series.capacity.every((c) => c >= 30), 'capacity recovers after each crash');
  });

  test('worker threads give the report of one thread', async () => {
    const opts = { app: DEMAND_APP, trace: traceOf('step', 60_000, [...minutes(30, 10), ...minutes(30, 50)]), capacity: 10, boot: '30s', seed: 5 };
    assert.deepEqual(await runComparisonParallel(opts, 2), runComparison(opts));
  });
});

describe('inputs', () => {
  test('the WorldCup format reads as is: GMT timestamps, counts per minute, gaps held', () => {
    const t = parseTrace('period,count\n1998-04-30 21:30:00,60\n1998-04-30 21:31:00,120\n1998-04-30 21:33:00,300\n', 'wc');
    assert.equal(t.startMs, Date.UTC(1998, 3, 30, 21, 30));
    assert.equal(t.stepMs, 60_000);
    assert.deepEqual([...t.rates], [1, 2, 2, 5]);
    assert.equal(t.filled, 1);
  });

  test('offsets and rates; refusals name the line', () => {
    const t = parseTrace('# seconds, requests/s\noffset,rate\n0,5\n30,7\n60,9\n', 'r');
    assert.equal(t.stepMs, 30_000);
    assert.deepEqual([...t.rates], [5, 7, 9]);
    assert.throws(() => parseTrace('time,value\n0,1\n', 'x.csv'), /x\.csv:1: cannot tell whether column "value" is a rate or a count/);
    assert.throws(() => parseTrace('time,rate\n0,1\n0,2\n', 'x.csv'), /x\.csv:3: times must increase/);
    assert.throws(() => parseTrace('time,rate\n0,-1\n', 'x.csv'), /x\.csv:2: expected a number >= 0/);
  });

  test('boot distributions and SLOs', () => {
    assert.deepEqual(parseBoot('60s'), { kind: 'fixed', ms: 60_000 });
    assert.deepEqual(parseBoot('uniform:30s..90s'), { kind: 'uniform', minMs: 30_000, maxMs: 90_000 });
    assert.deepEqual(parseBoot('lognormal:1m,0.5'), { kind: 'lognormal', medianMs: 60_000, sigma: 0.5 });
    assert.deepEqual(parseSlo('util:80%'), { kind: 'util', max: 0.8 });
    assert.throws(() => parseBoot('uniform:90s..30s'), SimInputError);
    assert.throws(() => parseSlo('p99<1s'), /--slo: expected wait:DURATION/);
  });

  test('a policy on a metric the simulator does not produce is refused by name', () => {
    const app = parseAppFile(`app: t
roles:
  web:
    min: 1
    max: 3
    scale:
      - target: { metric: load1, target: 2 }
`);
    assert.throws(
      () => runComparison({ app, trace: traceOf('x', 60_000, [1, 2]), capacity: 1, boot: '0s', baselines: [] }),
      /roles\.web\.scale: metric "load1" is not simulated/,
    );
  });
});

describe('drover simulate', () => {
  test('prints the table, writes the SVG, and refuses a bad flag with exit code 1', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'drover-sim-'));
    try {
      const appFile = join(dir, 'drover.yaml');
      const traceFile = join(dir, 'traffic.csv');
      writeFileSync(appFile, `app: shop\nroles:\n  db:\n    count: 1\n  api:\n    min: 1\n    max: 20\n    scale:\n      - target: { metric: cpu, target: 0.6 }\n`);
      writeFileSync(traceFile, ['time,rate', ...Array.from({ length: 90 }, (_, k) => `${k * 60},${k < 45 ? 20 : 60}`)].join('\n'));
      const out: string[] = [];
      const err: string[] = [];
      const io = { stdout: (t: string) => void out.push(t), stderr: (t: string) => void err.push(t) };
      const svg = join(dir, 'plot.svg');
      const code = await simulateCommand({ app: appFile, trace: traceFile, capacity: '10', boot: '30s', svg, threads: 1 }, io);
      assert.equal(code, 0, err.join(''));
      const table = out.join('');
      for (const name of ['drover', 'threshold', 'hpa', 'aws', 'fixed', 'oracle']) assert.match(table, new RegExp(`^\\| ${name} \\|`, 'm'));
      assert.match(table, /role api: target cpu 0\.6/);
      const plot = readFileSync(svg, 'utf8');
      assert.match(plot, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
      assert.equal((plot.match(/stroke-width="1\.2"/g) ?? []).length, 6, 'one capacity line per policy');

      out.length = 0;
      assert.equal(await simulateCommand({ app: appFile, trace: traceFile, json: true, baselines: 'oracle', threads: 1 }, io), 0);
      const json = JSON.parse(out.join('')) as ComparisonReport;
      assert.deepEqual(json.rows.map((r) => r.name), ['drover', 'oracle']);

      err.length = 0;
      assert.equal(await simulateCommand({ app: appFile, trace: traceFile, capacity: '-1' }, io), 1);
      assert.match(err.join(''), /--capacity: expected requests\/s per instance/);
      err.length = 0;
      assert.equal(await simulateCommand({ app: join(dir, 'nope.yaml'), trace: traceFile }, io), 1);
      assert.match(err.join(''), /--app: no such file/);

      // The model's knobs: instances truly 20% slower than the policies are told, exact metrics.
      const opts = commandOptions({ app: appFile, trace: traceFile, capacityFactor: '0.8', queue: 'fluid', noise: false, metricLag: '10s', drain: '20s' });
      assert.deepEqual([opts.capacityFactor, opts.queueModel, opts.metricNoise, opts.metricLagMs, opts.drainMs], [0.8, 'fluid', false, 10_000, 20_000]);
      out.length = 0;
      assert.equal(await simulateCommand({ app: appFile, trace: traceFile, json: true, baselines: 'oracle', capacity: '10', capacityFactor: '0.5', threads: 1 }, io), 0);
      const slow = JSON.parse(out.join('')) as ComparisonReport;
      out.length = 0;
      assert.equal(await simulateCommand({ app: appFile, trace: traceFile, json: true, baselines: 'oracle', capacity: '10', threads: 1 }, io), 0);
      const right = JSON.parse(out.join('')) as ComparisonReport;
      const oracleCost = (r: ComparisonReport) => r.rows.find((x) => x.name === 'oracle')!.instanceHours;
      assert.ok(oracleCost(slow) > oracleCost(right) * 1.5, `the oracle knows instances are half as fast: ${oracleCost(slow)} vs ${oracleCost(right)} instance-hours`);
      for (const [flags, msg] of [
        [{ capacityFactor: '0' }, /--capacity-factor: expected a factor greater than 0/],
        [{ capacityFactor: 'x' }, /--capacity-factor: expected/],
        [{ queue: 'mm1' }, /--queue: expected erlang or fluid/],
        [{ metricLag: 'soon' }, /--metric-lag: expected a duration/],
      ] as const) {
        err.length = 0;
        assert.equal(await simulateCommand({ app: appFile, trace: traceFile, ...flags }, io), 1);
        assert.match(err.join(''), msg);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('formatTable and renderSvg on a report', () => {
    const r = runComparison({ app: DEMAND_APP, trace: traceOf('flat', 60_000, minutes(30, 30)), capacity: 10, boot: '0s' });
    assert.match(formatTable(r), /\| oracle \| 2 \| 1\.00 \| 0% \(0 min\) \|/);
    assert.match(renderSvg(r), /<\/svg>\n$/);
  });
});
