/**
 * The agent's end of the amqp transport: it consumes its own durable queue
 * (`drover.agent.<instance>`, exclusively) and publishes to the `drover.agents` exchange under
 * its own routing key, as its own broker user, which may do nothing else (docs/rabbitmq.md).
 * Frames are the same sealed frames as on a WebSocket (transport.ts): the broker carries them
 * and cannot forge one.
 *
 * A session is named by a `session` header on every message; frames of an older session found
 * in the queue (sent before a reconnect) are dropped. The agent starts a new session when it
 * (re)connects to the broker, when no welcome comes within the handshake timeout, and when the
 * controller says it does not know the session (it restarted).
 */
import amqp, { type ChannelModel, type ConfirmChannel, type ConsumeMessage } from 'amqplib';
import { AMQP_NAMES, type AgentMessage } from '../core/index.js';
import { AgentSession, Backoff, type AgentTransport, type AgentTransportEvents, type AgentTransportOptions } from './transport.js';

export interface AmqpAgentTransportOptions extends AgentTransportOptions {
  /** `amqp://agent-user:password@host:port/vhost`: this instance's own broker user. */
  readonly url: string;
}

export class AmqpAgentTransport implements AgentTransport {
  readonly describe: string;
  readonly #o: AmqpAgentTransportOptions;
  readonly #backoff: Backoff;
  readonly #handshakeMs: number;
  #events?: AgentTransportEvents;
  #conn?: ChannelModel;
  #ch?: ConfirmChannel;
  #session?: AgentSession;
  #closed = false;
  #timer?: NodeJS.Timeout;
  #welcomeTimer?: NodeJS.Timeout;
  /** The last session was welcomed (so a loss is worth a warning). */
  #wasWelcomed = false;

  constructor(options: AmqpAgentTransportOptions) {
    this.#o = options;
    const u = new URL(options.url);
    u.password = '';
    u.username = '';
    this.describe = u.toString();
    this.#backoff = new Backoff(options.reconnectMinMs ?? 250, options.reconnectMaxMs ?? 5000);
    this.#handshakeMs = options.handshakeTimeoutMs ?? 5000;
  }

  start(events: AgentTransportEvents): void {
    this.#events = events;
    void this.#connect();
  }

  #later(fn: () => void): void {
    if (this.#closed) return;
    clearTimeout(this.#timer);
    const delay = this.#backoff.next();
    this.#o.logger.debug({ delayMs: delay }, 'reconnecting');
    this.#timer = setTimeout(fn, delay);
  }

  async #connect(): Promise<void> {
    if (this.#closed) return;
    const log = this.#o.logger;
    let conn: ChannelModel | undefined;
    try {
      const u = new URL(this.#o.url);
      if (!u.searchParams.has('heartbeat')) u.searchParams.set('heartbeat', '10');
      // noDelay: small frames must not wait for Nagle's algorithm (an order's round trip was 44 ms with it, 3 ms without).
      conn = await amqp.connect(u.toString(), { timeout: this.#handshakeMs, noDelay: true, clientProperties: { connection_name: `drover-agent ${this.#o.instanceId}` } });
      if (this.#closed) {
        await conn.close().catch(() => undefined);
        return;
      }
      const c = conn;
      c.on('error', (err: Error) => log.warn({ err: err.message }, 'broker connection error'));
      c.on('close', () => this.#lost(c));
      const ch = await c.createConfirmChannel();
      ch.on('error', (err: Error) => log.warn({ err: err.message }, 'broker channel error'));
      ch.on('close', () => void c.close().catch(() => undefined));
      await ch.prefetch(64);
      // Exclusive: an older agent of this instance still consuming keeps this one out until it is fenced.
      await ch.consume(AMQP_NAMES.agentQueue(this.#o.instanceId), (m) => this.#delivery(ch, m), { noAck: false, exclusive: true });
      this.#conn = c;
      this.#ch = ch;
      log.info({ broker: this.describe }, 'connected to the broker');
      this.#newSession();
    } catch (err) {
      // Each failed attempt would log the same line every few seconds while the broker is away.
      if (this.#backoff.attempt === 0 || this.#wasWelcomed) log.warn({ err: err instanceof Error ? err.message : String(err) }, 'cannot reach the broker; retrying');
      this.#wasWelcomed = false;
      await conn?.close().catch(() => undefined);
      if (!this.#conn) this.#later(() => void this.#connect());
    }
  }

  #lost(conn: ChannelModel): void {
    if (this.#conn !== conn) return;
    this.#conn = undefined;
    this.#ch = undefined;
    const had = this.#session;
    this.#session = undefined;
    clearTimeout(this.#welcomeTimer);
    if (this.#closed) return;
    if (had?.welcomed) this.#o.logger.warn('lost the broker connection; the role keeps running, reconnecting');
    this.#events?.down();
    this.#later(() => void this.#connect());
  }

  /** A fresh handshake on the current connection. */
  #newSession(): void {
    const ch = this.#ch;
    if (!ch || this.#closed) return;
    const events = this.#events!;
    const session = new AgentSession(this.#o, {
      join: () => events.join(),
      message: (msg) => {
        if (msg.type === 'welcome') {
          clearTimeout(this.#welcomeTimer);
          this.#backoff.reset();
          this.#wasWelcomed = true;
        }
        events.message(msg);
      },
      down: () => undefined,
    });
    this.#session = session;
    clearTimeout(this.#welcomeTimer);
    // No welcome in time (the controller is away, or lost the hello): start over, backing off.
    this.#welcomeTimer = setTimeout(() => {
      if (this.#session === session && !session.welcomed) this.#restart(session, 'no welcome from the controller');
    }, this.#handshakeMs);
    void this.#publish(ch, session, 'hello', session.hello());
  }

  #restart(session: AgentSession, why: string): void {
    if (this.#session !== session) return;
    this.#o.logger.debug({ why }, 'starting a new session');
    if (session.welcomed) this.#events?.down();
    this.#session = undefined;
    clearTimeout(this.#welcomeTimer);
    this.#later(() => this.#newSession());
  }

  #publish(ch: ConfirmChannel, session: AgentSession, kind: 'hello' | 'frame', text: string): Promise<boolean> {
    return new Promise((resolve) => {
      try {
        ch.publish(
          AMQP_NAMES.agentsExchange,
          AMQP_NAMES.agentKey(this.#o.instanceId, kind),
          Buffer.from(text),
          { persistent: true, headers: { session: session.id }, contentType: 'application/json' },
          (err: unknown) => resolve(!err),
        );
      } catch {
        resolve(false);
      }
    });
  }

  #delivery(ch: ConfirmChannel, m: ConsumeMessage | null): void {
    if (!m) {
      // Our queue was deleted (the instance is being destroyed) or the consumer cancelled.
      void this.#conn?.close().catch(() => undefined);
      return;
    }
    try {
      ch.ack(m);
    } catch {
      return;
    }
    const session = this.#session;
    const headers = (m.properties.headers ?? {}) as Record<string, unknown>;
    if (!session || headers.session !== session.id) return; // a frame of an earlier session
    const r = session.receive(m.content.toString('utf8'));
    if (r.kind === 'join') void this.#publish(ch, session, 'frame', r.frame);
    else if (r.kind === 'restart') this.#restart(session, r.why);
  }

  send(msg: AgentMessage): Promise<boolean> {
    const ch = this.#ch;
    const session = this.#session;
    const frame = session?.seal(msg);
    if (!ch || !session || frame === undefined) return Promise.resolve(false);
    return this.#publish(ch, session, 'frame', frame);
  }

  async close(_reason: string): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    clearTimeout(this.#welcomeTimer);
    const conn = this.#conn;
    this.#conn = undefined;
    this.#ch = undefined;
    this.#session = undefined;
    await conn?.close().catch(() => undefined);
  }
}
