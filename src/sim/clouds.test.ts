import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseAppFile } from '../core/index.js';
import { bootQuantileMs, CLOUD_BOOTS, cloudBoot, lognormalFrom, SIM_PROVIDERS } from './clouds.js';
import { commandOptions } from './command.js';
import { formatTable, runComparison, type ComparisonReport } from './compare.js';
import { Rng } from './rng.js';
import { traceOf } from './trace.js';
import { parseBoot, sampleBoot, SimInputError } from './units.js';

const APP = `app: t
roles:
  web:
    min: 1
    max: 100
    warmup: 0s
    scale:
      - queue: { metric: demand, perInstance: 8 }
    metrics:
      - { name: demand, url: "http://127.0.0.1:1/stats", format: json, select: rate }
`;
const EXACT = { queueModel: 'fluid', metricNoise: false, metricLagMs: 0, drainMs: 0, baselines: [] } as const;
const minutes = (n: number, rate: number) => new Array<number>(n).fill(rate);
/** 10 req/s (2 instances) with two 10-minute bursts to 26 req/s (4 instances: what 2 spares cover). */
const bursty = traceOf('bursty', 60_000, [...minutes(30, 10), ...minutes(10, 26), ...minutes(20, 10), ...minutes(10, 26), ...minutes(20, 10)]);
const row = (r: ComparisonReport, name: string) => r.rows.find((x) => x.name === name)!;

test('each provider has a lognormal boot whose median and p90 are the documented ones, with its sources', () => {
  for (const kind of SIM_PROVIDERS) {
    const c = CLOUD_BOOTS[kind];
    assert.equal(bootQuantileMs(c.boot, 0.5), c.medianMs, kind);
    assert.ok(Math.abs(bootQuantileMs(c.boot, 0.9) - c.p90Ms) / c.p90Ms < 0.002, `${kind}: p90 ${bootQuantileMs(c.boot, 0.9)} vs ${c.p90Ms}`);
    assert.ok(bootQuantileMs(c.boot, 0.99) > c.p90Ms);
    assert.ok(c.source.length > 80, `${kind} says where its numbers come from`);
  }
  assert.ok(CLOUD_BOOTS.local.p90Ms < 5000, 'a process, not a VM');
  assert.ok(CLOUD_BOOTS.openstack.p90Ms > CLOUD_BOOTS.ec2.p90Ms, 'a private cloud: the longer tail');
  assert.throws(() => cloudBoot('gce'), (e: unknown) => e instanceof SimInputError && /--provider: expected one of local, ec2, openstack, got "gce"/.test(e.message));
  assert.throws(() => lognormalFrom(10, 5), SimInputError);
});

test('sampled boot times follow the distribution and repeat under a seed', () => {
  const b = CLOUD_BOOTS.ec2.boot;
  const draw = (seed: number) => Array.from({ length: 20_000 }, ((rng) => () => sampleBoot(b, rng))(new Rng(seed, 1)));
  const xs = draw(7).sort((a, c) => a - c);
  const q = (p: number) => xs[Math.floor(p * xs.length)]!;
  assert.ok(Math.abs(q(0.5) / 50_000 - 1) < 0.03, `median ${q(0.5)}`);
  assert.ok(Math.abs(q(0.9) / 80_000 - 1) < 0.04, `p90 ${q(0.9)}`);
  assert.deepEqual(draw(7).slice(0, 50), draw(7).slice(0, 50));
  assert.notDeepEqual(draw(7).slice(0, 50), draw(8).slice(0, 50));
});

test('time to serve: a rise of the desired count serves a boot later without spares, at once with them', () => {
  const trace = traceOf('step', 60_000, [...minutes(10, 10), ...minutes(20, 30)]);
  const app = parseAppFile(APP);
  const cold = runComparison({ app, trace, capacity: 10, boot: '60s', spares: 0, ...EXACT });
  const d = row(cold, 'drover');
  assert.ok(d.timeToServe.count >= 1);
  assert.equal(d.timeToServe.maxMs, 60_000, 'a 60 s boot, at 15 s ticks');
  const warm = runComparison({ app, trace, capacity: 10, boot: '60s', spares: 5, ...EXACT });
  assert.equal(row(warm, 'drover').timeToServe.maxMs, 0, 'spares take the role in the same tick');
  assert.ok(row(warm, 'drover').violatingMinutes < d.violatingMinutes);
});

test('--provider ec2: its boot times, and what warm spares buy there, deterministically', () => {
  const opts = { app: parseAppFile(APP), trace: bursty, capacity: 10, provider: 'ec2', seed: 3, ...EXACT } as const;
  const r = runComparison(opts);
  assert.equal(r.settings.provider, 'ec2');
  assert.equal(r.settings.bootQuantilesMs.p50, 50_000);
  assert.deepEqual(r.rows.map((x) => x.name), ['drover', 'drover, 2 spares']);
  assert.deepEqual(r.spares, { with: 'drover, 2 spares', without: 'drover', spares: 2 });
  const without = row(r, 'drover');
  const withSpares = row(r, 'drover, 2 spares');
  assert.ok(withSpares.timeToServe.meanMs < without.timeToServe.meanMs, `${withSpares.timeToServe.meanMs} < ${without.timeToServe.meanMs}`);
  assert.ok(withSpares.violatingMinutes < without.violatingMinutes, `${withSpares.violatingMinutes} < ${without.violatingMinutes}`);
  assert.equal(withSpares.timeToServe.maxMs, 0, 'the spares cover each burst');
  assert.ok(withSpares.instanceHours > without.instanceHours, 'spares are paid for');
  const table = formatTable(r);
  assert.match(table, /boot on ec2 lognormal median 50s σ 0\.367 \(p90 80 s, p99 117 s\)/);
  assert.match(table, /\*\*What warm spares buy on ec2 \(boot median 50 s, p90 80 s, p99 117 s\)\*\*/);
  assert.match(table, /2 warm spares cost \+[\d.]+ instance-hours \(\+[\d.]+%\) and save \d+ SLO-violating minutes?; a rise of the desired count serves in 0 s on average instead of \d+ s/);
  assert.deepEqual(runComparison(opts), r, 'the same seed, the same report');
  // An explicit boot wins over the provider's; no provider, no comparison.
  const own = runComparison({ ...opts, boot: '10s' });
  assert.equal(own.settings.boot, '10s');
  assert.equal(runComparison({ ...opts, provider: undefined }).spares, null);
});

test("the app file's provider kind is used when no flag names one; a role with spares is compared with none", () => {
  const app = parseAppFile(`${APP.replace('    warmup: 0s\n', '    warmup: 0s\n    spares: 1\n')}provider:
  kind: openstack
  flavor: m1.small
  image: debian-12
  network: private
`);
  const r = runComparison({ app, trace: bursty, capacity: 10, ...EXACT });
  assert.equal(r.settings.provider, 'openstack');
  assert.equal(r.settings.bootQuantilesMs.p50, 55_000);
  assert.deepEqual(r.spares, { with: 'drover', without: 'drover, no spares', spares: 1 });
  assert.equal(runComparison({ app, trace: bursty, capacity: 10, provider: 'local', ...EXACT }).settings.bootQuantilesMs.p50, 800);
});

test('drover simulate --provider: checked, and passed on', () => {
  assert.throws(() => commandOptions({ app: 'x.yaml', trace: 'synthetic:flash', provider: 'azure' }), /--provider: expected one of local, ec2, openstack/);
  const o = commandOptions({ app: 'x.yaml', trace: 'synthetic:flash', provider: 'openstack' });
  assert.equal(o.provider, 'openstack');
  assert.equal(o.boot, undefined, "the provider's boot, unless --boot says otherwise");
  assert.deepEqual(parseBoot('lognormal:50s,0.367'), CLOUD_BOOTS.ec2.boot);
});
