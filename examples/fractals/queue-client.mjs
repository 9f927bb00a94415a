// The api and the worker speak to the work queue only through this interface; the URL's scheme
// picks the implementation: http:// the embedded queue (queue.mjs), amqp:// RabbitMQ
// (queue-amqp.mjs, which maps each call to AMQP):
//
//   enqueue(id, payload)   AMQP: basic.publish, persistent, message-id = id, publisher confirm
//   lease({ waitMs })      AMQP: basic.consume with prefetch 1, no auto-ack
//   delivery.ack()         AMQP: basic.ack
//   delivery.nack()        AMQP: basic.nack with requeue
//   delivery.extend()      AMQP: nothing (RabbitMQ holds an unacked message until the channel
//                          closes; its consumer_timeout plays the visibility timeout's part)
//   stats()                AMQP: { backlog, ready, unacked, consumers } from queue.declare (passive)
//   close()                AMQP: closes the connection (unacked deliveries are requeued)
import { CallError, call, describeAnswer, failOn5xx, retry } from './lib.mjs';
import { amqpQueueClient } from './queue-amqp.mjs';

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
 *   embedded queue: idempotent, a task with that id already queued is not added twice;
 *   RabbitMQ: at least once (a retry after a lost publisher confirm may queue it twice)
 * @property {(opts: { waitMs: number, consumer: string, signal?: AbortSignal }) => Promise<Delivery | null>} lease
 *   the next task, waiting up to waitMs for one; null if none came. An aborted signal ends the
 *   wait; on RabbitMQ it also ends the subscription (no task is sent to this client any more)
 * @property {() => Promise<Record<string, number>>} stats
 *   always with `backlog`: tasks queued or being worked on (embedded: ready + leased; RabbitMQ:
 *   ready + unacked)
 * @property {() => Promise<void>} close lets go of the queue (a lease in progress ends empty)
 * @property {'http' | 'amqp'} kind
 */

/** Thrown by ack/nack/extend when the lease was lost: the task is (or will be) delivered again. */
export class LeaseLost extends Error {
  constructor(message) {
    super(message);
    this.name = 'LeaseLost';
  }
}

/**
 * @param {string} url the embedded queue's base URL (http://…), or a RabbitMQ URL (amqp://…)
 * @param {{ log?: { info: (m: string) => void, warn: (m: string) => void }, name?: string, queueName?: string }} [opts]
 *   for RabbitMQ: log (connection lost and made again), name (the connection's name in RabbitMQ),
 *   queueName (default $QUEUE_NAME, else `fractals`)
 * @returns {QueueClient}
 */
export function createQueueClient(url, opts = {}) {
  if (/^amqps?:\/\//.test(url)) {
    return amqpQueueClient(url, { ...opts, queueName: opts.queueName ?? process.env.QUEUE_NAME, LeaseLost });
  }
  if (!/^https?:/.test(url)) throw new Error(`${url}: expected an http:// URL of the embedded queue or an amqp:// URL of RabbitMQ`);
  return httpQueueClient(url.replace(/\/+$/, ''));
}

function httpQueueClient(base) {
  const leaseCall = (op, lease) => async () => {
    const res = failOn5xx(await call(`${base}/${op}/${lease}`, { method: 'POST', timeoutMs: 5000 }), `${op} ${lease}`);
    if (res.status === 410) throw new LeaseLost(describeAnswer(res));
    if (res.status >= 300) throw new CallError(`${op}: ${describeAnswer(res)}`, { status: res.status });
  };

  return {
    kind: 'http',

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

    async close() {},
  };
}
