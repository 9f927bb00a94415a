/**
 * The amqp transport: controller and agents talk through a RabbitMQ broker instead of a
 * WebSocket. The broker is a carrier, not a party anyone trusts: the handshake and the sealed
 * frames of core/auth.ts run end to end, so a frame published with another agent's
 * credentials (or by the broker itself) fails its seal exactly as a forged WebSocket frame does.
 *
 * Topology (declared by the controller on every connection, so a broker that lost it gets it back):
 *
 * ```
 * agents ──publish──▶ exchange drover.agents (topic, durable)  key <instance>.hello | <instance>.frame
 *                          └─ '#' ─▶ queue drover.controller (durable)  ◀── controller consumes (manual acks, prefetch)
 * controller ──publish (confirms)──▶ queue drover.agent.<instance> (durable, one per instance)  ◀── its agent consumes (exclusive)
 * ```
 *
 * Per-instance queues are made when the instance is made and deleted when it is destroyed,
 * never auto-deleted in between. Each agent has its own broker user, made and deleted with the
 * instance, that may read only its own queue and publish only to drover.agents under its own
 * routing key (configure/write/read patterns plus a topic permission). Users are managed through
 * the management plugin's HTTP API (docs/rabbitmq.md says why), with the controller's own user,
 * the one in its URL, which must be an administrator.
 *
 * A session is named by the agent (a `session` header: the start of its hello nonce) and is
 * otherwise what it is on a WebSocket. A frame for a session this controller does not have (it
 * restarted, or the session ended) is answered with an unproven refusal for that session, and
 * the agent starts a new one.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import amqp, { type ChannelModel, type ConfirmChannel, type ConsumeMessage } from 'amqplib';
import { pino, type Logger } from 'pino';
import { AMQP_NAMES, type ControllerMessage, type PlainControllerMessage } from '../../core/index.js';
import { ControllerSession, Presence, settleWithin, type SessionCarrier } from './session.js';
import type { ControllerTransport, TransportHandlers } from './types.js';

export interface AmqpTransportOptions {
  /**
   * `amqp://user:password@host:port/vhost` (or `amqps://`) of the controller's own broker user:
   * it declares the topology and makes and deletes agents' users, so it needs the
   * `administrator` tag and full permissions on the vhost.
   */
  readonly url: string;
  /** The management plugin's HTTP API. @default http://<host of url>:15672 */
  readonly managementUrl?: string;
  readonly logger?: Logger;
  /** First reconnect delay; doubles per failed attempt. @default 250 */
  readonly reconnectMinMs?: number;
  /** @default 10000 */
  readonly reconnectMaxMs?: number;
  /** Unacknowledged deliveries the controller takes at once. @default 256 */
  readonly prefetch?: number;
}

/** A URL or setting of the amqp transport that cannot be used; the message never holds a password. */
export class AmqpTransportError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'AmqpTransportError';
  }
}

/** Frames an instance may have queued for handling; more means a flood, and its session ends. */
const MAX_QUEUED = 256;
/** The controller queue's bounds: frames older than this are worth nothing (their session is long gone). */
const CONTROLLER_QUEUE_ARGS = { 'x-message-ttl': 600_000, 'x-max-length': 1_000_000, 'x-overflow': 'drop-head' };
/** An agent queue keeps at most this many frames; an absent agent's old frames are replaced by its next session anyway. */
const AGENT_QUEUE_ARGS = { 'x-max-length': 10_000, 'x-overflow': 'drop-head' };
/** An agent's longest reconnect backoff (5 s) and a handshake (5 s). */
const AGENT_RECONNECT_GRACE_MS = 10_000;
const ID = /^[A-Za-z0-9_.-]{1,64}$/;
const SESSION = /^[A-Za-z0-9_-]{1,64}$/;

/** The URL without its password, for logs and errors. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(not a URL)';
  }
}

/** Checks an amqp transport URL; throws {@link AmqpTransportError} naming what is wrong. */
export function parseAmqpUrl(url: string): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new AmqpTransportError('the transport URL is not a URL (expected amqp://user:password@host:5672/vhost)');
  }
  if (u.protocol !== 'amqp:' && u.protocol !== 'amqps:') throw new AmqpTransportError(`the transport URL must be amqp:// or amqps://, got ${u.protocol}//`);
  if (!u.username || !u.password) throw new AmqpTransportError(`the transport URL ${redactUrl(url)} needs the controller's user and password (amqp://user:password@host/…)`);
  return u;
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The vhost named by a URL's path ('' or '/' is the default vhost '/'). */
function vhostOf(u: URL): string {
  const p = decodeURIComponent(u.pathname.replace(/^\//, ''));
  return p === '' ? '/' : p;
}

interface Joined {
  readonly sid: string;
  readonly session: ControllerSession;
}

export class AmqpTransport implements ControllerTransport {
  readonly name = 'amqp';
  readonly #handlers: TransportHandlers;
  readonly #heartbeatMs: number;
  readonly #url: URL;
  readonly #management: URL;
  readonly #vhost: string;
  readonly #log: Logger;
  readonly #o: Required<Pick<AmqpTransportOptions, 'reconnectMinMs' | 'reconnectMaxMs' | 'prefetch'>>;
  readonly #presence: Presence;
  readonly #joined = new Map<string, Joined>();
  /** Sessions between hello and join: the latest per instance. */
  readonly #pending = new Map<string, Joined>();
  readonly #chains = new Map<string, { chain: Promise<void>; queued: number }>();
  /** Sessions already told they are unknown (one refusal each). */
  readonly #told = new Set<string>();
  /** Instances whose queues this controller made, re-declared after a reconnect; and those whose user and queue are still to delete. */
  readonly #instances = new Set<string>();
  readonly #toDelete = new Set<string>();
  /** Agents' users still to make (the broker was away when their instance was made): id → password. */
  readonly #unmade = new Map<string, string>();
  #retryTimer?: NodeJS.Timeout;
  #conn?: ChannelModel;
  #ch?: ConfirmChannel;
  #connectedAt = 0;
  #closed = false;
  #loop?: Promise<void>;
  #wake?: () => void;
  #connectedOnce?: Promise<void>;

  constructor(handlers: TransportHandlers, heartbeatMs: number, options: AmqpTransportOptions) {
    this.#handlers = handlers;
    this.#heartbeatMs = heartbeatMs;
    this.#url = parseAmqpUrl(options.url);
    this.#vhost = vhostOf(this.#url);
    this.#log = (options.logger ?? pino({ level: 'silent' })).child({ transport: 'amqp' });
    this.#o = { reconnectMinMs: options.reconnectMinMs ?? 250, reconnectMaxMs: options.reconnectMaxMs ?? 10_000, prefetch: options.prefetch ?? 256 };
    let m: URL;
    try {
      m = new URL(options.managementUrl ?? `http://${this.#url.hostname.includes(':') ? `[${this.#url.hostname}]` : this.#url.hostname}:15672`);
    } catch {
      throw new AmqpTransportError('the management URL is not a URL (expected http://host:15672)');
    }
    if (m.protocol !== 'http:' && m.protocol !== 'https:') throw new AmqpTransportError(`the management URL must be http:// or https://, got ${m.protocol}//`);
    this.#management = m;
    this.#presence = new Presence(heartbeatMs, (oldest) => this.#sweep(oldest));
  }

  /** Where the controller's broker is, without the password. */
  get describe(): string {
    return redactUrl(this.#url.toString());
  }

  /** True while the controller holds a channel to the broker. */
  get brokerConnected(): boolean {
    return this.#ch !== undefined;
  }

  /**
   * While the broker is away the controller hears no agent, through no fault of theirs; once it
   * is back, agents need their reconnect backoff and a handshake to be heard again. Silence
   * before this time is not an agent's.
   */
  hearingSince(): number {
    if (!this.#ch) return Date.now();
    return this.#connectedAt + AGENT_RECONNECT_GRACE_MS;
  }

  /**
   * Starts the connection loop: connects (and after any loss reconnects, with backoff, even if
   * the very first attempt fails), declares the topology and consumes the controller queue.
   * Resolves after the first successful connection or `waitMs`, whichever comes first: the
   * controller starts without its broker, and orders wait in the store until it is back.
   */
  async start(waitMs = 10_000): Promise<void> {
    if (!this.#loop) {
      let first!: () => void;
      this.#connectedOnce = new Promise((r) => (first = r));
      this.#loop = this.#run(first);
    }
    await Promise.race([this.#connectedOnce, sleep(waitMs, undefined, { ref: false })]);
  }

  async #run(connected: () => void): Promise<void> {
    let attempt = 0;
    while (!this.#closed) {
      try {
        const { lost } = await this.#connect();
        if (this.#closed) {
          await this.#conn?.close().catch(() => undefined);
          return;
        }
        attempt = 0;
        connected();
        this.#log.info({ broker: this.describe }, 'connected to the broker');
        await lost;
        if (this.#closed) return;
        this.#log.warn({ broker: this.describe }, 'lost the broker connection; reconnecting (agents keep serving)');
      } catch (err) {
        if (this.#closed) return;
        if (attempt === 0 || attempt % 10 === 0) this.#log.warn({ broker: this.describe, err: errorText(err), attempt }, 'cannot connect to the broker; retrying');
      }
      this.#conn = undefined;
      this.#ch = undefined;
      const delay = Math.min(this.#o.reconnectMinMs * 2 ** attempt, this.#o.reconnectMaxMs);
      attempt += 1;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** One connection, topology declared and consuming; `lost` settles when it ends. */
  async #connect(): Promise<{ lost: Promise<void> }> {
    const u = new URL(this.#url.toString());
    if (!u.searchParams.has('heartbeat')) u.searchParams.set('heartbeat', '10');
    // noDelay: small frames must not wait for Nagle's algorithm (an order's round trip was 44 ms with it, 3 ms without).
    const conn = await amqp.connect(u.toString(), { timeout: 10_000, noDelay: true, clientProperties: { connection_name: 'drover-controller' } });
    const lost = new Promise<void>((resolve) => {
      conn.on('close', () => resolve());
      conn.on('error', (err: Error) => this.#log.warn({ err: err.message }, 'broker connection error'));
    });
    try {
      const ch = await conn.createConfirmChannel();
      ch.on('error', (err: Error) => this.#log.warn({ err: err.message }, 'broker channel error'));
      ch.on('close', () => {
        if (this.#ch === ch) this.#ch = undefined;
        // A channel closed by the broker (an error) takes the connection with it: reconnect whole.
        void conn.close().catch(() => undefined);
      });
      await ch.assertExchange(AMQP_NAMES.agentsExchange, 'topic', { durable: true });
      await ch.assertQueue(AMQP_NAMES.controllerQueue, { durable: true, arguments: CONTROLLER_QUEUE_ARGS });
      await ch.bindQueue(AMQP_NAMES.controllerQueue, AMQP_NAMES.agentsExchange, '#');
      for (const id of this.#instances) await ch.assertQueue(AMQP_NAMES.agentQueue(id), { durable: true, arguments: AGENT_QUEUE_ARGS });
      await ch.prefetch(this.#o.prefetch);
      await ch.consume(AMQP_NAMES.controllerQueue, (m) => this.#delivery(ch, m), { noAck: false });
      this.#conn = conn;
      this.#ch = ch;
      this.#connectedAt = Date.now();
      void this.#retryPending();
    } catch (err) {
      await conn.close().catch(() => undefined);
      throw err;
    }
    return { lost };
  }

  #delivery(ch: ConfirmChannel, m: ConsumeMessage | null): void {
    if (!m) return; // consumer cancelled (queue deleted): the channel closes and we reconnect
    const key = m.fields.routingKey;
    const dot = key.lastIndexOf('.');
    const id = key.slice(0, dot);
    const kind = key.slice(dot + 1);
    const headers = (m.properties.headers ?? {}) as Record<string, unknown>;
    const sid = typeof headers.session === 'string' ? headers.session : '';
    const ack = (): void => {
      try {
        ch.ack(m);
      } catch {
        // the channel is gone: the broker redelivers, and the session's sequence numbers drop the repeat
      }
    };
    if (!ID.test(id) || !SESSION.test(sid) || (kind !== 'hello' && kind !== 'frame')) {
      this.#handlers.onSuspicious?.({ instanceId: ID.test(id) ? id : null, reason: 'a broker message that is not a drover frame', remote: 'amqp' });
      ack();
      return;
    }
    let q = this.#chains.get(id);
    if (!q) this.#chains.set(id, (q = { chain: Promise.resolve(), queued: 0 }));
    const entry = q;
    if (++entry.queued > MAX_QUEUED) {
      entry.queued -= 1;
      this.#endSession(id, sid, 'too many messages');
      ack();
      return;
    }
    const text = m.content.toString('utf8');
    // One frame at a time, in order, per instance.
    entry.chain = entry.chain
      .then(() => this.#handle(id, kind, sid, text))
      .catch((err: unknown) => {
        this.#handlers.onSuspicious?.({ instanceId: id, reason: `handling a message failed: ${errorText(err)}`, remote: 'amqp' });
        this.#endSession(id, sid, 'internal error');
      })
      .finally(() => {
        entry.queued -= 1;
        if (entry.queued === 0 && this.#chains.get(id) === entry) this.#chains.delete(id);
        ack();
      });
  }

  async settle(instanceId: string, withinMs: number): Promise<void> {
    const q = this.#chains.get(instanceId);
    if (!q) return;
    await settleWithin(q.chain, withinMs);
  }

  async #handle(id: string, kind: string, sid: string, text: string): Promise<void> {
    if (kind === 'hello') {
      const prev = this.#pending.get(id);
      prev?.session.close();
      const session = new ControllerSession(this.#handlers, this.#carrier(id, sid), this.#heartbeatMs);
      this.#pending.set(id, { sid, session });
      await session.handle(text);
      return;
    }
    const s = this.#joined.get(id)?.sid === sid ? this.#joined.get(id) : this.#pending.get(id)?.sid === sid ? this.#pending.get(id) : undefined;
    if (!s || s.session.phase === 'closed') {
      // A session we do not have: from before a controller restart, or one already ended.
      if (!this.#told.has(`${id}/${sid}`)) {
        if (this.#told.size > 10_000) this.#told.clear();
        this.#told.add(`${id}/${sid}`);
        this.#publish(id, sid, 'plain', JSON.stringify({ type: 'refused', reason: 'no such session; start a new one' } satisfies PlainControllerMessage));
      }
      return;
    }
    await s.session.handle(text);
  }

  #carrier(id: string, sid: string): SessionCarrier {
    return {
      remote: 'amqp',
      instanceId: id,
      plain: (msg) => this.#publish(id, sid, 'plain', JSON.stringify(msg)),
      sealed: (frame) => this.#publish(id, sid, 'frame', frame),
      end: (why, reason) => {
        // After a sealed refusal the agent stops by itself; otherwise it is told to start over.
        if (why !== 'refused') this.#publish(id, sid, 'plain', JSON.stringify({ type: 'refused', reason } satisfies PlainControllerMessage));
        this.#drop(id, sid);
      },
      joined: (session) => {
        if (this.#pending.get(id)?.session === session) this.#pending.delete(id);
        const prev = this.#joined.get(id);
        if (prev && prev.session !== session) prev.session.close();
        this.#joined.set(id, { sid, session });
      },
    };
  }

  /** Forgets a session; a joined one's agent is then absent. */
  #drop(id: string, sid: string): void {
    if (this.#pending.get(id)?.sid === sid) {
      this.#pending.get(id)!.session.close();
      this.#pending.delete(id);
    }
    const j = this.#joined.get(id);
    if (j?.sid === sid) {
      j.session.close();
      this.#joined.delete(id);
      this.#handlers.onDisconnect(id);
    }
  }

  #endSession(id: string, sid: string, reason: string): void {
    this.#publish(id, sid, 'plain', JSON.stringify({ type: 'refused', reason } satisfies PlainControllerMessage));
    this.#drop(id, sid);
  }

  /** Publishes to an agent's queue; false if there is no channel now (the caller re-sends later). */
  #publish(id: string, sid: string, type: 'plain' | 'frame', text: string): boolean {
    const ch = this.#ch;
    if (!ch) return false;
    try {
      ch.publish('', AMQP_NAMES.agentQueue(id), Buffer.from(text), { persistent: true, type, headers: { session: sid }, contentType: 'application/json' }, (err: unknown) => {
        if (err) this.#log.warn({ instance: id, err: errorText(err) }, 'the broker did not confirm a frame; its order is re-sent');
      });
      return true;
    } catch (err) {
      this.#log.warn({ instance: id, err: errorText(err) }, 'could not publish a frame');
      return false;
    }
  }

  #sweep(oldest: number): void {
    for (const [id, j] of this.#joined) {
      if (j.session.lastHeardAt >= oldest) continue;
      this.#drop(id, j.sid);
    }
  }

  send(instanceId: string, msg: ControllerMessage): boolean {
    const j = this.#joined.get(instanceId);
    if (!j || !this.isConnected(instanceId) || !this.#ch) return false;
    return j.session.send(msg);
  }

  isConnected(instanceId: string): boolean {
    const j = this.#joined.get(instanceId);
    return j !== undefined && this.#presence.present(j.session.lastHeardAt);
  }

  fence(instanceId: string, reason: string): void {
    const j = this.#joined.get(instanceId);
    if (!j) return;
    j.session.send({ type: 'refused', reason });
    this.#drop(instanceId, j.sid);
  }

  connected(): string[] {
    return [...this.#joined.keys()].filter((id) => this.isConnected(id));
  }

  // ---- instances: their queue and their broker user ------------------------------------

  /**
   * Makes an instance's queue and broker user; returns the URL its agent connects with (its own
   * user and password: hand it over privately, as the instance key is). While the broker is
   * unreachable the user and queue are made once it is back (the agent keeps retrying until then).
   */
  async provision(instanceId: string): Promise<string> {
    if (!ID.test(instanceId)) throw new AmqpTransportError(`instance id ${JSON.stringify(instanceId)} cannot name a queue`);
    const password = randomBytes(24).toString('base64url');
    this.#instances.add(instanceId);
    this.#toDelete.delete(instanceId);
    try {
      await this.#make(instanceId, password);
    } catch (err) {
      // The broker (or its management API) is away: the user and queue are made once it is back,
      // and the agent, retrying with backoff, gets in then. The instance is made now regardless.
      this.#log.warn({ instance: instanceId, err: errorText(err) }, "cannot make the agent's broker user and queue yet; will once the broker is back");
      this.#unmade.set(instanceId, password);
      this.#scheduleRetry();
    }
    const agentUrl = new URL(this.#url.toString());
    agentUrl.username = encodeURIComponent(AMQP_NAMES.agentUser(instanceId));
    agentUrl.password = password;
    agentUrl.search = '';
    return agentUrl.toString();
  }

  /** The instance's queue, its user with that password, and the user's permissions. */
  async #make(instanceId: string, password: string): Promise<void> {
    const ch = this.#ch;
    if (!ch) throw new AmqpTransportError(`the broker at ${this.describe} is not connected`);
    await ch.assertQueue(AMQP_NAMES.agentQueue(instanceId), { durable: true, arguments: AGENT_QUEUE_ARGS });
    const user = AMQP_NAMES.agentUser(instanceId);
    const vhost = encodeURIComponent(this.#vhost);
    await this.#api('PUT', `/api/users/${encodeURIComponent(user)}`, { password, tags: '' });
    await this.#api('PUT', `/api/permissions/${vhost}/${encodeURIComponent(user)}`, {
      configure: '^$',
      write: `^${escapeRegex(AMQP_NAMES.agentsExchange)}$`,
      read: `^${escapeRegex(AMQP_NAMES.agentQueue(instanceId))}$`,
    });
    await this.#api('PUT', `/api/topic-permissions/${vhost}/${encodeURIComponent(user)}`, {
      exchange: AMQP_NAMES.agentsExchange,
      write: `^${escapeRegex(instanceId)}\\.(hello|frame)$`,
      read: '^$',
    });
  }

  #scheduleRetry(): void {
    if (this.#retryTimer || this.#closed) return;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      void this.#retryPending();
    }, 2000);
    this.#retryTimer.unref();
  }

  /** Users and queues still to make or delete (the broker was away), in the background. */
  async #retryPending(): Promise<void> {
    for (const [id, password] of [...this.#unmade]) {
      if (this.#closed) return;
      try {
        await this.#make(id, password);
        if (this.#unmade.get(id) === password) this.#unmade.delete(id);
        this.#log.info({ instance: id }, "made the agent's broker user and queue");
      } catch {
        this.#scheduleRetry();
        return;
      }
    }
    for (const id of [...this.#toDelete]) {
      if (this.#closed) return;
      try {
        await this.#remove(id);
        this.#toDelete.delete(id);
        this.#log.info({ instance: id }, "deleted the agent's broker user and queue");
      } catch {
        this.#scheduleRetry();
        return;
      }
    }
  }

  /**
   * Deletes an instance's broker user (and its connections) and its queue. Idempotent, and never
   * fails the destroy: while the broker or its API is away the deletion is retried until done.
   */
  async deprovision(instanceId: string): Promise<void> {
    if (!ID.test(instanceId)) return;
    this.#instances.delete(instanceId);
    this.#unmade.delete(instanceId);
    const j = this.#joined.get(instanceId);
    if (j) this.#drop(instanceId, j.sid);
    try {
      await this.#remove(instanceId);
      this.#toDelete.delete(instanceId);
    } catch (err) {
      this.#log.warn({ instance: instanceId, err: errorText(err) }, "cannot delete the agent's broker user and queue yet; will once the broker is back");
      this.#toDelete.add(instanceId);
      this.#scheduleRetry();
    }
  }

  async #remove(instanceId: string): Promise<void> {
    const user = AMQP_NAMES.agentUser(instanceId);
    await this.#api('DELETE', `/api/users/${encodeURIComponent(user)}`, undefined, [404]);
    // Deleting a user does not end its open connections in every RabbitMQ version: end them.
    const conns = (await this.#api('GET', `/api/connections?columns=name,user`)) as { name: string; user: string }[] | undefined;
    for (const c of conns ?? []) {
      if (c.user === user) await this.#api('DELETE', `/api/connections/${encodeURIComponent(c.name)}`, undefined, [404]);
    }
    const ch = this.#ch;
    if (!ch) throw new AmqpTransportError(`the broker at ${this.describe} is not connected`);
    await ch.deleteQueue(AMQP_NAMES.agentQueue(instanceId));
  }

  /** One call to the management API as the controller's user. */
  async #api(method: string, path: string, body?: unknown, okStatuses: number[] = []): Promise<unknown> {
    const url = new URL(path, this.#management);
    const auth = Buffer.from(`${decodeURIComponent(this.#url.username)}:${decodeURIComponent(this.#url.password)}`).toString('base64');
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers: { authorization: `Basic ${auth}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(10_000),
        redirect: 'error',
      });
    } catch (err) {
      throw new AmqpTransportError(`the broker's management API at ${this.#management.origin} is unreachable: ${errorText(err)}`, { cause: err });
    }
    const text = await res.text();
    if (!res.ok && !okStatuses.includes(res.status)) {
      throw new AmqpTransportError(`the broker's management API refused ${method} ${url.pathname}: ${res.status} ${text.slice(0, 200)}`);
    }
    if (!text) return undefined;
    try {
      return JSON.parse(text);
    } catch {
      return undefined;
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#presence.stop();
    clearTimeout(this.#retryTimer);
    this.#wake?.();
    for (const j of this.#joined.values()) j.session.close();
    for (const p of this.#pending.values()) p.session.close();
    this.#joined.clear();
    this.#pending.clear();
    const conn = this.#conn;
    this.#conn = undefined;
    this.#ch = undefined;
    await conn?.close().catch(() => undefined);
    await this.#loop;
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
