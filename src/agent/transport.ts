/**
 * The agent's side of a transport: how it reaches its controller. The runtime sees only
 * {@link AgentTransport}: `start` with its callbacks, `send` a message, `close`. What carries the
 * frames (a WebSocket to the controller, queues on a RabbitMQ broker) is the transport's
 * business; the handshake and the sealed frames of core/auth.ts are the same on every carrier
 * and live here ({@link AgentSession}), so the broker in between is a carrier, never a party
 * the agent trusts: it obeys only frames sealed with the session key it agreed with its
 * controller.
 *
 * Every inbound message is checked against the schema shared with the controller
 * (core/wire.ts): one that does not match is dropped and logged, never acted on half-read.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import {
  checkControllerProof,
  NONCE_BYTES,
  parseControllerMessage,
  parsePlainControllerMessage,
  PROTOCOL_VERSION,
  SealedChannel,
  type AgentMessage,
  type SealedControllerMessage,
  type HelloMessage,
} from '../core/index.js';

/** What the runtime gives a transport. */
export interface AgentTransportEvents {
  /** The agent's first sealed message of a session (whole status, applied order ids). */
  join(): Extract<AgentMessage, { type: 'join' }>;
  /** An authentic, well-formed message from the controller. */
  message(msg: SealedControllerMessage): void;
  /** The session ended (the transport reconnects by itself until closed). */
  down(): void;
}

export interface AgentTransport {
  /** For logs: where this transport reaches the controller (no secret in it). */
  readonly describe: string;
  /** Connects, and keeps reconnecting with backoff until {@link close}. Call once. */
  start(events: AgentTransportEvents): void;
  /** Sends sealed; false if there is no proven session now (nothing is said to an unproven peer). */
  send(msg: AgentMessage): Promise<boolean>;
  /** Ends the session and stops reconnecting. */
  close(reason: string): Promise<void>;
}

/** What every agent transport needs: who it is, its key, and how to back off. */
export interface AgentTransportOptions {
  readonly instanceId: string;
  /** The instance's key, shared with the controller and never sent. */
  readonly key: string;
  readonly epoch: number;
  readonly logger: Logger;
  /** First reconnect delay; doubles on every failed attempt. @default 250 */
  readonly reconnectMinMs?: number;
  /** @default 5000 */
  readonly reconnectMaxMs?: number;
  /** A connection or handshake that takes longer is abandoned. @default 5000 */
  readonly handshakeTimeoutMs?: number;
}

/** Reconnect delays: min, doubling per failed attempt, capped; reset once welcomed. */
export class Backoff {
  #attempt = 0;
  constructor(
    private readonly minMs: number,
    private readonly maxMs: number,
  ) {}
  get attempt(): number {
    return this.#attempt;
  }
  next(): number {
    const d = Math.min(this.minMs * 2 ** this.#attempt, this.maxMs);
    this.#attempt += 1;
    return d;
  }
  reset(): void {
    this.#attempt = 0;
  }
}

/** What one inbound text led to. */
export type Inbound =
  /** Nothing to do (a message handled, or one dropped and logged). */
  | { readonly kind: 'ok' }
  /** The controller proved itself: send this sealed join. */
  | { readonly kind: 'join'; readonly frame: string }
  /** The session can no longer be trusted (a forged or out-of-order frame, a failed proof): start over. */
  | { readonly kind: 'restart'; readonly why: string };

/**
 * One session's handshake and sealing, on the agent's side. A transport makes one per
 * connection attempt, sends {@link hello}, feeds every inbound text to {@link receive} and
 * seals outbound messages with {@link seal}.
 */
export class AgentSession {
  readonly #o: AgentTransportOptions;
  readonly #nonce = randomBytes(NONCE_BYTES).toString('base64url');
  #channel?: SealedChannel;
  #welcomed = false;

  constructor(
    options: AgentTransportOptions,
    private readonly events: AgentTransportEvents,
  ) {
    this.#o = options;
  }

  /** The hello's text (plain: no secret in it). */
  hello(): string {
    const hello: HelloMessage = { type: 'hello', protocol: PROTOCOL_VERSION, instanceId: this.#o.instanceId, epoch: this.#o.epoch, nonce: this.#nonce };
    return JSON.stringify(hello);
  }

  /** A short id of this session, safe to show (a hash prefix of the agent's nonce is not needed: the nonce is public). */
  get id(): string {
    return this.#nonce.slice(0, 16);
  }

  get proven(): boolean {
    return this.#channel !== undefined;
  }

  get welcomed(): boolean {
    return this.#welcomed;
  }

  seal(msg: AgentMessage): string | undefined {
    return this.#channel?.seal(msg);
  }

  receive(text: string): Inbound {
    const log = this.#o.logger;
    if (!this.#channel) {
      let m: unknown;
      try {
        m = JSON.parse(text);
      } catch {
        m = undefined;
      }
      const parsed = parsePlainControllerMessage(m);
      if (!parsed.ok) {
        log.warn({ reason: parsed.reason }, 'unexpected message before the controller proved itself; starting over');
        return { kind: 'restart', why: 'unexpected message' };
      }
      const r = parsed.message;
      if (r.type === 'refused') {
        // Anyone able to answer could say this: the role keeps running, and we ask again later.
        log.warn({ reason: r.reason.slice(0, 200) }, 'refused without proof of being the controller; retrying');
        return { kind: 'restart', why: 'unproven refusal' };
      }
      const params = { key: this.#o.key, instanceId: this.#o.instanceId, epoch: this.#o.epoch, agentNonce: this.#nonce, controllerNonce: r.nonce };
      if (!checkControllerProof(params, r.proof)) {
        log.error("the peer could not prove it is this instance's controller; obeying nothing, retrying");
        return { kind: 'restart', why: 'bad proof' };
      }
      this.#channel = new SealedChannel('agent', params);
      return { kind: 'join', frame: this.#channel.seal(this.events.join()) };
    }
    const opened = this.#channel.open(text);
    if (!opened.ok) {
      log.error({ error: opened.error }, 'a controller frame failed its authenticity check; starting over');
      return { kind: 'restart', why: `bad frame (${opened.error})` };
    }
    const parsed = parseControllerMessage(opened.message);
    if (!parsed.ok) {
      // Authentic but malformed: a controller bug or a newer controller. Dropped, never half-applied.
      log.warn({ reason: parsed.reason }, 'dropped a controller message that does not match the protocol');
      return { kind: 'ok' };
    }
    if (parsed.message.type === 'welcome') this.#welcomed = true;
    this.events.message(parsed.message);
    return { kind: 'ok' };
  }
}
