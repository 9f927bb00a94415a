// The api and the worker speak to the work queue only through this interface, so a RabbitMQ
// client can be added beside the HTTP one without touching them:
//
//   enqueue(id, payload)   AMQP: basic.publish, persistent, message-id = id
//   lease({ waitMs })      AMQP: basic.consume with prefetch 1 (or basic.get), no auto-ack
//   delivery.ack()         AMQP: basic.ack
//   delivery.nack()        AMQP: basic.nack with requeue
//   delivery.extend()      AMQP: nothing (RabbitMQ holds an unacked message until the channel
//                          closes; its consumer_timeout plays the visibility timeout's part)
import { CallError, call, describeAnswer, failOn5xx, retry } from './lib.mjs';

/**
 * @typedef {object} Delivery
 * @property {string} id the task's id (the fractal's uuid)
 * @property {any} payload
 * @property {number} deliveries times this task has been handed out, this time included
 * @property {number} visibilityTimeoutMs after this long without ack, nack or extend, the task is delivered again
 * @property {() => Promise<void>} ack done: the task is forgotten
 * @property {() => Promise<void>} nack not done: delivered again at once
 * @property {() => Promise<void>} extend still working: the timeout starts over
 */

/**
 * @typedef {object} QueueClient
 * @property {(id: string, payload: unknown) => Promise<{ id: string, created: boolean }>} enqueue
 *   idempotent: a task with that id already queued is not added twice
 * @property {(opts: { waitMs: number, consumer: string, signal?: AbortSignal }) => Promise<Delivery | null>} lease
 *   the next task, waiting up to waitMs for one; null if none came
 * @property {() => Promise<Record<string, number>>} stats
 */

/** Thrown by ack/nack/extend when the lease was lost: the task is (or will be) delivered again. */
export class LeaseLost extends Error {
  constructor(message) {
    super(message);
    this.name = 'LeaseLost';
  }
}

/**
 * @param {string} url the queue's base URL; http(s) for the embedded queue
 * @returns {QueueClient}
 */
export function createQueueClient(url) {
  if (/^amqps?:/.test(url)) throw new Error(`${url}: RabbitMQ is not supported yet; use the embedded queue (queue.mjs)`);
  if (!/^https?:/.test(url)) throw new Error(`${url}: expected an http:// URL of the embedded queue`);
  return httpQueueClient(url.replace(/\/+$/, ''));
}

function httpQueueClient(base) {
  const leaseCall = (op, lease) => async () => {
    const res = failOn5xx(await call(`${base}/${op}/${lease}`, { method: 'POST', timeoutMs: 5000 }), `${op} ${lease}`);
    if (res.status === 410) throw new LeaseLost(describeAnswer(res));
    if (res.status >= 300) throw new CallError(`${op}: ${describeAnswer(res)}`, { status: res.status });
  };

  return {
    async enqueue(id, payload) {
      // Safe to repeat whatever happened to the first try: the queue keeps one task per id.
      const res = await retry(async () => failOn5xx(await call(`${base}/tasks`, { method: 'POST', json: { id, payload } }), 'enqueue'), {
        attempts: 4,
      });
      if (res.status !== 200 && res.status !== 201) throw new CallError(`enqueue: ${describeAnswer(res)}`, { status: res.status });
      return res.json();
    },

    async lease({ waitMs, consumer, signal }) {
      const res = failOn5xx(
        await call(`${base}/lease`, {
          method: 'POST',
          json: { wait: waitMs / 1000, consumer },
          // The queue answers within waitMs; the margin covers a slow network, not a dead queue.
          timeoutMs: waitMs + 5000,
          signal,
        }),
        'lease',
      );
      if (res.status === 204) return null;
      if (res.status !== 200) throw new CallError(`lease: ${describeAnswer(res)}`, { status: res.status });
      const d = res.json();
      const opts = { attempts: 4, baseMs: 200 };
      return {
        id: d.id,
        payload: d.payload,
        deliveries: d.deliveries,
        visibilityTimeoutMs: d.visibility_timeout_ms,
        ack: () => retry(leaseCall('ack', d.lease), opts),
        nack: () => retry(leaseCall('nack', d.lease), opts),
        extend: () => retry(leaseCall('extend', d.lease), opts),
      };
    },

    async stats() {
      const res = failOn5xx(await call(`${base}/stats`), 'stats');
      return res.json();
    },
  };
}
