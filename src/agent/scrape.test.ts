import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { MetricScraper, scrapeMetric, type InstanceMetricSource } from './scrape.js';

type TestContext = { after: (fn: () => unknown) => void };

async function server(t: TestContext, handler: http.RequestListener): Promise<number> {
  const s = http.createServer(handler);
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    s.closeAllConnections();
    s.close();
  });
  return (s.address() as AddressInfo).port;
}

const depth: InstanceMetricSource = {
  name: 'depth',
  scope: 'instance',
  http: '/metrics',
  format: 'prometheus',
  select: 'queue_depth{queue="jobs"}',
  intervalMs: 50,
  timeoutMs: 300,
};

void test('scrapeMetric reads Prometheus text and JSON, and says why it could not', async (t) => {
  let status = 200;
  const port = await server(t, (req, res) => {
    res.statusCode = status;
    if (req.url === '/metrics') res.end('queue_depth{queue="jobs"} 4\nqueue_depth{queue="mail"} 9\n');
    else if (req.url === '/stats') res.end('{"queues":[{"depth":"12"}]}');
    else if (req.url === '/hang') return;
    else res.end('not json');
  });
  assert.equal(await scrapeMetric(port, depth, { timeoutMs: 500 }), 4);
  const json = { ...depth, format: 'json', http: '/stats', select: 'queues[0].depth' } as const;
  assert.equal(await scrapeMetric(port, json, { timeoutMs: 500 }), 12);
  await assert.rejects(scrapeMetric(port, { ...json, http: '/text' }, { timeoutMs: 500 }), /did not answer JSON/);
  await assert.rejects(scrapeMetric(port, { ...depth, select: 'absent' }, { timeoutMs: 500 }), /nothing matching absent/);
  await assert.rejects(scrapeMetric(port, { ...depth, http: '/hang' }, { timeoutMs: 100 }), /timed out after 100ms/);
  await assert.rejects(scrapeMetric(port, depth, { timeoutMs: 500, maxBytes: 10 }), /more than 10 bytes/);
  status = 503;
  await assert.rejects(scrapeMetric(port, depth, { timeoutMs: 500 }), /answered HTTP 503/);
});

void test('the scraper keeps the last good value, drops it on failure and when it grows stale', async (t) => {
  let healthy = true;
  const port = await server(t, (_req, res) => {
    res.statusCode = healthy ? 200 : 500;
    res.end('queue_depth{queue="jobs"} 4\n');
  });
  let skew = 0;
  const scraper = new MetricScraper({
    sources: [depth],
    port,
    logger: pino({ level: 'silent' }),
    now: () => Date.now() + skew,
  });
  t.after(() => scraper.stop());
  assert.equal(scraper.values(), undefined);
  scraper.start();
  await sleep(150);
  assert.deepEqual(scraper.values(), { depth: 4 });
  skew = 3 * depth.intervalMs + 100;
  assert.equal(scraper.values(), undefined, 'older than three intervals');
  skew = 0;
  await sleep(100);
  assert.deepEqual(scraper.values(), { depth: 4 });
  healthy = false;
  await sleep(150);
  assert.equal(scraper.values(), undefined, 'the last scrape failed');
  healthy = true;
  await sleep(150);
  scraper.stop();
  assert.equal(scraper.values(), undefined, 'nothing once stopped');
});

void test("scrapeMetric reads from the instance's own address when given one", async (t) => {
  const s = http.createServer((_req, res) => res.end('queue_depth{queue="jobs"} 7\n'));
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.2', resolve));
  t.after(() => {
    s.closeAllConnections();
    s.close();
  });
  const port = (s.address() as AddressInfo).port;
  assert.equal(await scrapeMetric(port, depth, { timeoutMs: 500, host: '127.0.0.2' }), 7);
  await assert.rejects(scrapeMetric(port, depth, { timeoutMs: 500 }), 'nothing on 127.0.0.1:port');
});
