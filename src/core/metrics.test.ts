import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  instantStats,
  MetricStore,
  parseJsonPath,
  parsePrometheusSelector,
  parsePrometheusText,
  pickJson,
  pickPrometheus,
  samplesFromVitals,
  stats,
  statsOfValues,
  type Sample,
} from './metrics.js';

describe('MetricStore', () => {
  test('a window holds the samples between its bounds, both included, oldest first', () => {
    const store = new MetricStore();
    for (let t = 0; t <= 50_000; t += 5000) store.add('api', 'cpu', { t, value: t / 1000, instance: 'i-1' });
    assert.deepEqual(
      store.window('api', 'cpu', 10_000, 20_000).map((s) => s.t),
      [10_000, 15_000, 20_000],
    );
    assert.deepEqual(store.window('api', 'cpu', 10_001, 14_999), []);
    assert.deepEqual(store.window('api', 'cpu', 20_000, 10_000), []);
    assert.deepEqual(store.window('api', 'memory', 0, 50_000), []);
    assert.deepEqual(store.window('db', 'cpu', 0, 50_000), []);
    assert.deepEqual(store.window('api', 'cpu', 45_000, 99_000), [
      { t: 45_000, value: 45, instance: 'i-1' },
      { t: 50_000, value: 50, instance: 'i-1' },
    ]);
  });

  test('role-wide samples carry no instance', () => {
    const store = new MetricStore();
    store.add('worker', 'backlog', { t: 1, value: 37 });
    assert.deepEqual(store.window('worker', 'backlog', 0, 10), [{ t: 1, value: 37 }]);
  });

  test('a late sample lands in time order', () => {
    const store = new MetricStore();
    for (const t of [0, 10, 20, 5, 15, 20]) store.add('api', 'cpu', { t, value: t, instance: 'a' });
    assert.deepEqual(
      store.window('api', 'cpu', 0, 100).map((s) => s.t),
      [0, 5, 10, 15, 20, 20],
    );
  });

  test('excluded instances are left out of a window', () => {
    const store = new MetricStore();
    for (const instance of ['a', 'b', 'c']) store.add('api', 'cpu', { t: 1, value: 1, instance });
    store.add('api', 'cpu', { t: 1, value: 5 });
    const got = store.window('api', 'cpu', 0, 2, { excludeInstances: new Set(['b']) });
    assert.deepEqual(got.map((s) => s.instance ?? '-'), ['a', 'c', '-']);
  });

  test('NaN and infinite values are dropped', () => {
    const store = new MetricStore();
    store.add('api', 'cpu', { t: 1, value: NaN });
    store.add('api', 'cpu', { t: 2, value: Infinity });
    store.add('api', 'cpu', { t: NaN, value: 1 });
    assert.equal(store.size, 0);
  });

  test('memory stays bounded: a series keeps only its horizon', () => {
    const store = new MetricStore({ horizonMs: 60_000 });
    for (let t = 0; t <= 3_600_000; t += 1000) {
      for (const instance of ['a', 'b']) store.add('api', 'cpu', { t, value: 1, instance });
    }
    // 61 seconds of two instances, both ends of the horizon included.
    assert.equal(store.size, 122);
    assert.equal(store.window('api', 'cpu', 0, 3_540_000 - 1).length, 0);
    assert.equal(store.window('api', 'cpu', 3_540_000, 3_600_000).length, 122);
  });

  test('the default horizon is 15 minutes', () => {
    const store = new MetricStore();
    assert.equal(store.horizonMs, 900_000);
    for (let t = 0; t <= 1_800_000; t += 60_000) store.add('api', 'cpu', { t, value: 1 });
    assert.equal(store.size, 16);
  });

  test('prune drops old samples and empty series; forgetRole drops a role', () => {
    const store = new MetricStore();
    store.add('api', 'cpu', { t: 10, value: 1 });
    store.add('api', 'memory', { t: 30, value: 1 });
    store.add('db', 'cpu', { t: 30, value: 1 });
    store.prune(20);
    assert.deepEqual(store.metricsOf('api'), ['memory']);
    assert.equal(store.size, 2);
    store.forgetRole('db');
    assert.deepEqual(store.metricsOf('db'), []);
    assert.equal(store.size, 1);
  });
});

describe('stats', () => {
  test('mean, max, p95 (nearest rank) and count', () => {
    const samples = Array.from({ length: 100 }, (_, k): Sample => ({ t: k, value: 100 - k }));
    assert.deepEqual(stats(samples), { mean: 50.5, max: 100, p95: 95, count: 100 });
    assert.deepEqual(statsOfValues([3]), { mean: 3, max: 3, p95: 3, count: 1 });
    assert.equal(statsOfValues(Array.from({ length: 20 }, (_, k) => k + 1))?.p95, 19);
    assert.equal(stats([]), undefined);
  });

  test('p95 is the smallest value with at least 95% of values at or below it', () => {
    fc.assert(
      fc.property(fc.array(fc.double({ min: -1e6, max: 1e6, noNaN: true }), { minLength: 1, maxLength: 300 }), (values) => {
        const s = statsOfValues(values);
        assert.ok(s);
        const sorted = [...values].sort((a, b) => a - b);
        assert.equal(s.p95, sorted[Math.ceil(0.95 * values.length) - 1]);
        assert.equal(s.max, sorted[sorted.length - 1]);
        assert.ok(s.mean >= (sorted[0] ?? 0) - 1e-6 && s.mean <= s.max + 1e-6);
      }),
    );
  });

  test("instantStats: each instance's latest sample at each time, within the lookback", () => {
    const samples: Sample[] = [
      { t: 0, value: 0.2, instance: 'a' },
      { t: 0, value: 0.4, instance: 'b' },
      { t: 5, value: 0.6, instance: 'a' },
      { t: 20, value: 1.0, instance: 'b' },
    ];
    const [at0, at10, at20, at30] = instantStats(samples, [0, 10, 20, 30], 12);
    assert.equal(at0?.mean, 0.30000000000000004);
    assert.equal(at0?.count, 2);
    // At 10, b's sample from 0 is still within the lookback of 12.
    assert.equal(at10?.mean, 0.5);
    // At 20, a's sample from 5 is 15 old: gone.
    assert.deepEqual(at20, { mean: 1, max: 1, p95: 1, count: 1 });
    assert.equal(at30?.max, 1);
    assert.equal(instantStats(samples, [-1], 10)[0], undefined);
    // Times in any order, samples in any order: same answers.
    const shuffled = [samples[3], samples[0], samples[2], samples[1]].filter((s): s is Sample => s !== undefined);
    assert.deepEqual(instantStats(shuffled, [30, 0, 20, 10], 12), [at30, at0, at20, at10]);
  });
});

test('samplesFromVitals: the built-in metrics of one report', () => {
  const got = samplesFromVitals('i-1', {
    at: 1000,
    loadavg: [1.5, 1, 0.5],
    cpu: 0.25,
    memUsedBytes: 1,
    memTotalBytes: 2,
    role: { cpu: 1.2, rssBytes: 4096, pids: 3 },
    metrics: { rps: 120, cpu: 99 },
  });
  assert.deepEqual(
    got.map((g) => [g.metric, g.sample.value]),
    [
      ['host_cpu', 0.25],
      ['load1', 1.5],
      ['cpu', 1.2],
      ['memory', 4096],
      // A declared metric cannot shadow a built-in one.
      ['rps', 120],
    ],
  );
  assert.ok(got.every((g) => g.sample.instance === 'i-1' && g.sample.t === 1000));
  const noRole = samplesFromVitals('i-1', { at: 1, loadavg: [0, 0, 0], cpu: 0, memUsedBytes: 0, memTotalBytes: 0 });
  assert.deepEqual(noRole.map((g) => g.metric), ['host_cpu', 'load1']);
});

describe('Prometheus text format', () => {
  const EXPOSITION = [
    '# HELP http_requests_total The total number of HTTP requests.',
    '# TYPE http_requests_total counter',
    'http_requests_total{method="post",code="200"} 1027 1395066363000',
    'http_requests_total{method="post",code="400"}    3 1395066363000',
    '',
    '# Escaping in label values:',
    'msdos_file_access_time_seconds{path="C:\\\\DIR\\\\FILE.TXT",error="Cannot find file:\\n\\"FILE.TXT\\""} 1.458255915e9',
    '',
    '# Minimalistic line:',
    'metric_without_timestamp_and_labels 12.47',
    '',
    '# A weird metric from before the epoch:',
    'something_weird{problem="division by zero"} +Inf -3982045',
    'not_a_number NaN',
    'negative_inf{a="b",} -Inf',
    'rpc_duration_seconds_bucket{le="+Inf"} 144320 # {trace_id="abc"} 1.5',
    '{"my.dotted.metric", env="prod"} 7',
    'queue_depth { queue = "jobs" } 41',
    '   indented_metric 2   ',
    'windows_line 5\r',
    // Malformed: skipped, the rest still read.
    'no_value',
    'bad_value abc',
    'unclosed{a="b" 1',
    'bad_escape{a="\\x"} 1',
    'dup_label{a="1",a="2"} 1',
    'glued{a="b"}1',
    'too many tokens here 1 2',
    '{a="b"} 3',
  ].join('\n');

  test('series, labels, escapes, special values, timestamps', () => {
    const parsed = parsePrometheusText(EXPOSITION);
    assert.deepEqual(parsed.slice(0, 4), [
      { name: 'http_requests_total', labels: { method: 'post', code: '200' }, value: 1027, timestamp: 1395066363000 },
      { name: 'http_requests_total', labels: { method: 'post', code: '400' }, value: 3, timestamp: 1395066363000 },
      {
        name: 'msdos_file_access_time_seconds',
        labels: { path: 'C:\\DIR\\FILE.TXT', error: 'Cannot find file:\n"FILE.TXT"' },
        value: 1.458255915e9,
      },
      { name: 'metric_without_timestamp_and_labels', labels: {}, value: 12.47 },
    ]);
    const byName = new Map(parsed.map((p) => [p.name, p]));
    assert.deepEqual(byName.get('something_weird'), {
      name: 'something_weird',
      labels: { problem: 'division by zero' },
      value: Infinity,
      timestamp: -3982045,
    });
    assert.ok(Number.isNaN(byName.get('not_a_number')?.value));
    assert.equal(byName.get('negative_inf')?.value, -Infinity);
    assert.deepEqual(byName.get('rpc_duration_seconds_bucket'), {
      name: 'rpc_duration_seconds_bucket',
      labels: { le: '+Inf' },
      value: 144320,
    });
    assert.deepEqual(byName.get('my.dotted.metric')?.labels, { env: 'prod' });
    assert.deepEqual(byName.get('queue_depth'), { name: 'queue_depth', labels: { queue: 'jobs' }, value: 41 });
    assert.equal(byName.get('indented_metric')?.value, 2);
    assert.equal(byName.get('windows_line')?.value, 5);
    // Every malformed line, and only those, skipped.
    assert.equal(parsed.length, 12);
  });

  test('a label named __proto__ is an ordinary label', () => {
    const [s] = parsePrometheusText('m{__proto__="x"} 1');
    assert.ok(s);
    assert.equal(Object.getPrototypeOf(s.labels), Object.prototype);
    assert.equal(Object.hasOwn(s.labels, '__proto__'), true);
    assert.equal(pickPrometheus([s], 'm{__proto__="x"}'), 1);
  });

  test('the parser never throws, whatever the input', () => {
    const alphabet = fc.constantFrom(...'ab_:{}="\\,# \t\n\r.+-eE0123456789NaInf'.split(''));
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: alphabet, maxLength: 80 }), fc.string({ unit: 'binary' })), (text) => {
        const parsed = parsePrometheusText(text);
        for (const s of parsed) {
          assert.equal(typeof s.name, 'string');
          assert.equal(typeof s.value, 'number');
        }
        pickPrometheus(parsed, text);
      }),
      { numRuns: 2000 },
    );
  });

  test('pickPrometheus sums the series a selector matches', () => {
    const parsed = parsePrometheusText(
      [
        'jobs{queue="a",state="ready"} 10',
        'jobs{queue="b",state="ready"} 5',
        'jobs{queue="b",state="done"} 100',
        'jobs_nan{queue="a"} NaN',
        'jobs_nan{queue="b"} 2',
        'only_nan NaN',
      ].join('\n'),
    );
    assert.equal(pickPrometheus(parsed, 'jobs'), 115);
    assert.equal(pickPrometheus(parsed, 'jobs{state="ready"}'), 15);
    assert.equal(pickPrometheus(parsed, 'jobs{ queue = "b" , state != "done" }'), 5);
    assert.equal(pickPrometheus(parsed, 'jobs{missing=""}'), 115);
    assert.equal(pickPrometheus(parsed, 'jobs_nan'), 2);
    assert.equal(pickPrometheus(parsed, 'only_nan'), undefined);
    assert.equal(pickPrometheus(parsed, 'absent'), undefined);
    assert.equal(pickPrometheus(parsed, 'jobs{state="none"}'), undefined);
    assert.equal(pickPrometheus(parsed, 'jobs{'), undefined);
  });

  test('selectors: what parses and what does not', () => {
    assert.deepEqual(parsePrometheusSelector('up'), { name: 'up', matchers: [] });
    assert.deepEqual(parsePrometheusSelector('a:b{x="1",y!="\\"2"}'), {
      name: 'a:b',
      matchers: [
        { label: 'x', op: '=', value: '1' },
        { label: 'y', op: '!=', value: '"2' },
      ],
    });
    for (const bad of ['', '1up', 'up{', 'up{x}', 'up{x=1}', 'up{x=~"a"}', 'up extra', 'up{x="1"} y']) {
      assert.equal(parsePrometheusSelector(bad), undefined, bad);
    }
  });
});

describe('JSON paths', () => {
  const doc = {
    stats: { backlog: 37, quoted: '12.5', word: 'many', flag: true, nothing: null },
    queues: [{ depth: 4 }, { depth: 9 }],
    'odd.key': { n: 3 },
    jobs: ['a', 'b', 'c'],
  };

  test('dotted paths, indexes, quoted keys, the root', () => {
    assert.equal(pickJson(doc, 'stats.backlog'), 37);
    assert.equal(pickJson(doc, 'queues[1].depth'), 9);
    assert.equal(pickJson(doc, 'queues.0.depth'), 4);
    assert.equal(pickJson(doc, '["odd.key"].n'), 3);
    assert.equal(pickJson(doc, "$['odd.key'].n"), 3);
    assert.equal(pickJson(doc, '$.stats.backlog'), 37);
    assert.equal(pickJson(doc, 'jobs.length'), 3);
    assert.equal(pickJson(42, '$'), 42);
  });

  test('a quoted number counts; anything else is no value', () => {
    assert.equal(pickJson(doc, 'stats.quoted'), 12.5);
    for (const path of ['stats.word', 'stats.flag', 'stats.nothing', 'stats', 'stats.missing', 'queues[7].depth', 'stats.backlog.x']) {
      assert.equal(pickJson(doc, path), undefined, path);
    }
    assert.equal(pickJson(doc, 'stats.constructor'), undefined);
    assert.equal(pickJson(doc, '__proto__'), undefined);
    assert.equal(pickJson({ n: Infinity }, 'n'), undefined);
    assert.equal(pickJson(undefined, 'a'), undefined);
  });

  test('malformed paths parse to undefined', () => {
    assert.deepEqual(parseJsonPath('a.b[2]["c d"]'), ['a', 'b', 2, 'c d']);
    for (const bad of ['a..b', 'a[', 'a[x]', 'a["b]', '.', 'a.', 'a b']) assert.equal(parseJsonPath(bad), undefined, bad);
    assert.equal(pickJson(doc, 'a..b'), undefined);
  });
});
