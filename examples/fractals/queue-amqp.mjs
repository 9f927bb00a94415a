// The work queue on RabbitMQ (AMQP 0-9-1, with amqplib): the same QueueClient as the embedded
// queue's, so the api and the worker do not know which one they use.
//
//   enqueue(id, payload)  basic.publish to a durable queue (default `fractals`), persistent,
//                         message-id = id, mandatory, on a confirm channel: it resolves once the
//                         broker has taken responsibility for the message (publisher confirm).
//   lease()               basic.consume with prefetch 1 and manual acks: the broker hands this
//                         client one task at a time, and holds it as unacknowledged until
//                         delivery.ack() / delivery.nack(). A client whose connection closes (a
//                         worker killed with SIGKILL) has its task requeued and delivered to
//                         another consumer by RabbitMQ. When lease()'s signal aborts (the
//                         worker is told to stop), the consumer is cancelled (basic.cancel).
//   delivery.extend()     nothing: RabbitMQ keeps an unacked message as long as the channel
//                         lives; the broker's consumer_timeout (30 min by default) is the only
//                         limit, reported as visibilityTimeoutMs.
//   stats()               { backlog, ready, unacked, consumers } from the broker (below).
//
// Unacked: AMQP itself reports only a queue's ready messages and its consumers (queue.declare
// with passive, amqplib's checkQueue). The management plugin has the unacked count, but it
// needs a port of its own and its numbers are samples (every 5 s by default). So each client
// that holds a delivery also holds one consumer on a companion queue, `<queue>.inflight`, which
// never carries a message: its consumer count, read with checkQueue as well, is the number of
// deliveries held — what RabbitMQ counts as unacknowledged. Both live on the same channel, so a
// dead worker's marker goes with its connection at the moment RabbitMQ requeues its task.
//
// The connection is made on first use and made again after it is lost, with backoff (200 ms
// doubling to 5 s): while the broker is away, calls fail fast with the reason and the caller
// (the worker's loop, the api's retry) tries again later. Nothing here exits the process.
import amqp from 'amqplib';
import { CallError, sleep } from './lib.mjs';

/** RabbitMQ's default consumer_timeout: an unacked delivery older than this closes its channel. */
const CONSUMER_TIMEOUT_MS = 30 * 60_000;
const CONNECT_TIMEOUT_MS = 5000;
const CONFIRM_TIMEOUT_MS = 10_000;
/** Seconds; a broker that stops answering is noticed within about two of these. */
const HEARTBEAT_S = 5;

/** The URL without its password, for log lines and errors. */
export function redact(url) {
  return url.replace(/^(amqps?:\/\/[^:@/]*):[^@/]*@/, '$1:***@');
}

function withHeartbeat(url) {
  if (/[?&]heartbeat=/.test(url)) return url;
  return `${url}${url.includes('?') ? '&' : '?'}heartbeat=${HEARTBEAT_S}`;
}

/**
 * @param {string} url amqp://user:pass@host:port[/vhost]
 * @param {{ queueName?: string, log?: { info: (m: string) => void, warn: (m: string) => void },
 *           name?: string, LeaseLost: new (message: string) => Error }} opts
 *   name: shown by RabbitMQ as the connection's name (management UI, rabbitmqctl)
 */
export function amqpQueueClient(url, opts) {
  const queue = opts.queueName || 'fractals';
  const inflight = `${queue}.inflight`;
  const log = opts.log ?? { info: () => {}, warn: () => {} };
  const { LeaseLost } = opts;
  const where = `${redact(url)} queue ${queue}`;

  /**
   * The live connection, if any: its channels, and what was set up on it. `gen` tells a
   * delivery's connection from a later one (an ack on a closed connection cannot be sent).
   * @type {null | { gen: number, model: import('amqplib').ChannelModel, pub: import('amqplib').ConfirmChannel,
   *                 ch: import('amqplib').Channel, consumerTag?: string, closing: boolean, dead: boolean }}
   */
  let conn = null;
  let gen = 0;
  /** @type {Promise<NonNullable<typeof conn>> | null} */
  let connecting = null;
  let failures = 0;
  let retryAt = 0;
  let lastError = '';
  let closed = false;
  /** Message ids of mandatory publishes the broker returned (no queue took them). */
  const returned = new Set();

  // Deliveries received and not yet handed out by lease(), and lease() calls waiting for one.
  /** @type {{ msg: import('amqplib').ConsumeMessage, gen: number, marker: Promise<string | undefined> }[]} */
  let buffer = [];
  /** @type {Set<{ wake: (err?: Error) => void }>} */
  const waiters = new Set();
  const wakeAll = (err) => {
    for (const w of waiters) w.wake(err);
  };

  /** A connection's end, whichever part of it reports it first (set up or not). */
  function lost(c, why) {
    if (c.dead) return;
    c.dead = true;
    const live = conn === c;
    if (live) conn = null;
    buffer = buffer.filter((e) => e.gen !== c.gen);
    if (live && !c.closing && !closed) log.warn(`RabbitMQ connection lost (${why}); reconnecting on next use`);
    if (live) wakeAll(new CallError(`RabbitMQ connection lost (${why})`, { transient: true }));
    // Whatever closed one part, close the rest: the next call starts on a clean connection.
    c.model.close().catch(() => {});
  }

  async function connect() {
    const model = await amqp.connect(withHeartbeat(url), {
      timeout: CONNECT_TIMEOUT_MS,
      clientProperties: { connection_name: opts.name ?? `fractals ${process.pid}` },
    });
    const c = { gen: ++gen, model, pub: undefined, ch: undefined, consumerTag: undefined, closing: false, dead: false };
    // Listeners first: amqplib throws an 'error' nobody listens to, which would end the process.
    // On a close, amqplib closes the channels first, then reports the connection's error: the
    // channels' reports wait a turn, so the connection's reason is the one logged.
    let setupError = '';
    model.on('error', (err) => {
      setupError = err.message;
      lost(c, err.message);
    });
    model.on('close', (err) => lost(c, err?.message ?? 'closed'));
    model.on('blocked', (reason) => log.warn(`RabbitMQ blocks publishing: ${reason}`));
    model.on('unblocked', () => log.info('RabbitMQ unblocked publishing'));
    const watch = (what, channel) => {
      let why = `${what} closed`;
      channel.on('error', (err) => {
        why = `${what}: ${err.message}`;
        setupError = why;
      });
      channel.on('close', () => setImmediate(() => lost(c, why)));
      return channel;
    };
    try {
      c.ch = watch('channel', await model.createChannel());
      c.pub = watch('confirm channel', await model.createConfirmChannel());
      // A mandatory message no queue took comes back before its confirm: remember it, so the
      // confirm is not taken for a success.
      c.pub.on('return', (msg) => returned.add(msg.properties.messageId));
      await c.ch.assertQueue(queue, { durable: true });
      // A queue nobody publishes to: only its consumer count matters. x-max-length 0 drops
      // anything published to it by mistake.
      await c.ch.assertQueue(inflight, { durable: true, maxLength: 0 });
      return c;
    } catch (err) {
      c.closing = true;
      await model.close().catch(() => {});
      throw setupError ? new Error(setupError, { cause: err }) : err;
    }
  }

  /** The connection, made now if there is none and the backoff allows it. */
  function connection() {
    if (closed) return Promise.reject(new CallError('the queue client is closed'));
    if (conn) return Promise.resolve(conn);
    if (connecting) return connecting;
    const wait = Math.round(retryAt - Date.now());
    if (wait > 0) {
      return Promise.reject(new CallError(`${lastError} (next connection attempt in ${wait}ms)`, { transient: true, unsent: true }));
    }
    connecting = connect().then(
      (c) => {
        connecting = null;
        if (closed) {
          c.closing = true;
          c.model.close().catch(() => {});
          throw new CallError('the queue client is closed');
        }
        if (c.dead) throw new CallError('the RabbitMQ connection closed as it was set up', { transient: true });
        if (failures > 0 || gen > 1) log.info(`connected to RabbitMQ at ${where} again`);
        else log.info(`connected to RabbitMQ at ${where}`);
        failures = 0;
        retryAt = 0;
        conn = c;
        return c;
      },
      (err) => {
        connecting = null;
        failures++;
        lastError = err?.message ?? String(err);
        const delay = Math.min(5000, 200 * 2 ** (failures - 1)) * (0.5 + Math.random() / 2);
        retryAt = Date.now() + delay;
        if (failures === 1 || failures % 10 === 0) log.warn(`cannot connect to RabbitMQ at ${redact(url)}: ${lastError} (attempt ${failures})`);
        throw new CallError(lastError, { transient: true, unsent: true, cause: err });
      },
    );
    return connecting;
  }

  async function publishOnce(id, body) {
    const c = await connection();
    returned.delete(id);
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new CallError(`enqueue ${id}: no publisher confirm within ${CONFIRM_TIMEOUT_MS}ms`, { transient: true }));
      }, CONFIRM_TIMEOUT_MS);
      try {
        c.pub.sendToQueue(queue, body, { persistent: true, messageId: id, contentType: 'application/json', mandatory: true }, (err) => {
          clearTimeout(timer);
          if (err) reject(new CallError(`enqueue ${id}: the broker refused the message (${err.message ?? err})`, { transient: true }));
          else if (returned.delete(id)) reject(new CallError(`enqueue ${id}: no queue ${queue} took the message`, { transient: true }));
          else resolve();
        });
      } catch (err) {
        clearTimeout(timer);
        reject(new CallError(`enqueue ${id}: ${err.message}`, { transient: true, cause: err }));
      }
    });
  }

  // -------------------------------------------------------------------------------------------
  // Consuming

  /** Set once the signal given to lease() aborts: the client takes no more tasks. */
  let unsubscribed = false;
  const watched = new WeakSet();

  /**
   * Cancels the consumer, so RabbitMQ sends this client nothing more: a worker told to stop
   * finishes its task and acks it without being sent the next one (which it would only give
   * back, marked redelivered).
   */
  function unsubscribe() {
    unsubscribed = true;
    const c = conn;
    if (c?.consumerTag) c.ch.cancel(c.consumerTag).catch(() => {});
  }

  /** Starts the consumer on this connection if it is not running yet. */
  async function consume(c) {
    if (c.consumerTag || unsubscribed) return;
    if (c.starting) return c.starting;
    c.starting = (async () => {
      // Per consumer: the broker sends the next task only once this one is acked or nacked.
      await c.ch.prefetch(1);
      const ok = await c.ch.consume(
        queue,
        (msg) => {
          if (msg === null) {
            // basic.cancel from the broker: the queue was deleted.
            lost(c, `the broker cancelled the consumer of ${queue}`);
            return;
          }
          // The marker consumer: held as long as this delivery is.
          const marker = c.ch.consume(inflight, () => {}, { noAck: true }).then(
            (r) => r.consumerTag,
            () => undefined,
          );
          buffer.push({ msg, gen: c.gen, marker });
          wakeAll();
        },
        { noAck: false },
      );
      c.consumerTag = ok.consumerTag;
      if (unsubscribed) await c.ch.cancel(ok.consumerTag); // told to stop while it started
    })().finally(() => {
      c.starting = undefined;
    });
    return c.starting;
  }

  function toDelivery(entry) {
    const { msg } = entry;
    let payload = null;
    try {
      payload = JSON.parse(msg.content.toString('utf8'));
    } catch {
      // Left null: the worker reports the task as failed and acks it.
    }
    const count = Number(msg.properties.headers?.['x-delivery-count']);
    let settled = false;
    const settle = (op) => async () => {
      if (settled) throw new LeaseLost(`task ${id} was already acked or nacked`);
      const c = conn;
      if (!c || c.gen !== entry.gen) {
        settled = true;
        throw new LeaseLost(`the connection task ${id} came on is closed: RabbitMQ delivers it again`);
      }
      settled = true;
      try {
        if (op === 'ack') c.ch.ack(msg);
        else c.ch.nack(msg, false, true);
      } catch (err) {
        // The channel closed under us: the broker requeues the task.
        throw new LeaseLost(`task ${id}: ${err.message}`);
      }
      const tag = await entry.marker;
      if (tag && conn === c) await c.ch.cancel(tag).catch(() => {});
    };
    const id = msg.properties.messageId ?? (typeof payload?.uuid === 'string' ? payload.uuid : `delivery-${msg.fields.deliveryTag}`);
    return {
      id,
      payload,
      // Classic queues say only whether a message was delivered before; quorum queues count.
      deliveries: Number.isInteger(count) && count > 0 ? count + 1 : msg.fields.redelivered ? 2 : 1,
      visibilityTimeoutMs: CONSUMER_TIMEOUT_MS,
      ack: settle('ack'),
      nack: settle('nack'),
      extend: async () => {
        if (!conn || conn.gen !== entry.gen) throw new LeaseLost(`the connection task ${id} came on is closed`);
      },
    };
  }

  return {
    kind: 'amqp',

    async enqueue(id, payload) {
      const body = Buffer.from(JSON.stringify(payload));
      // A confirm lost with its connection may hide a success: the retry can then queue the
      // task twice. The worker finds the second delivery's fractal done and only acks it.
      for (let attempt = 1; ; attempt++) {
        try {
          await publishOnce(id, body);
          return { id, created: true };
        } catch (err) {
          if (attempt >= 4 || closed) throw err;
          await sleep(Math.min(2000, 100 * 2 ** attempt) * (0.5 + Math.random() / 2));
        }
      }
    },

    async lease({ waitMs, signal }) {
      if (signal && !watched.has(signal)) {
        watched.add(signal);
        if (signal.aborted) unsubscribe();
        else signal.addEventListener('abort', unsubscribe, { once: true });
      }
      if (signal?.aborted) return null;
      const c = await connection();
      await consume(c);
      const deadline = Date.now() + waitMs;
      for (;;) {
        if (signal?.aborted) return null;
        const entry = buffer.shift();
        if (entry) {
          if (conn && entry.gen === conn.gen) return toDelivery(entry);
          continue; // from a closed connection: already requeued by the broker
        }
        const left = deadline - Date.now();
        if (left <= 0) return null;
        const err = await new Promise((resolve) => {
          const w = {
            wake: (e) => {
              waiters.delete(w);
              clearTimeout(timer);
              signal?.removeEventListener('abort', onAbort);
              resolve(e);
            },
          };
          const onAbort = () => w.wake();
          const timer = setTimeout(() => w.wake(), left);
          signal?.addEventListener('abort', onAbort, { once: true });
          waiters.add(w);
        });
        if (err) throw err;
      }
    },

    async stats() {
      const c = await connection();
      const [q, m] = await Promise.all([c.ch.checkQueue(queue), c.ch.checkQueue(inflight)]);
      return { backlog: q.messageCount + m.consumerCount, ready: q.messageCount, unacked: m.consumerCount, consumers: q.consumerCount };
    },

    /** Closes the connection: RabbitMQ requeues any task received and not acked. */
    async close() {
      closed = true;
      wakeAll();
      const c = conn ?? (connecting ? await connecting.catch(() => null) : null);
      conn = null;
      if (c) {
        c.closing = true;
        await c.model.close().catch(() => {});
      }
    },
  };
}
