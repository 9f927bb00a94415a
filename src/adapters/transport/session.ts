/**
 * The controller's end of one agent session, whatever carries it: the handshake of core/auth.ts
 * (a plain `hello`, the controller's `challenge`, the agent's sealed `join`), then sealed frames
 * checked against the shared schema (core/wire.ts) and handed to the {@link TransportHandlers}.
 * A carrier (a WebSocket, an AMQP queue pair) only moves text; it feeds {@link ControllerSession.handle}
 * one frame at a time, in order, and does what the session's {@link SessionOutcome} says.
 */
import { randomBytes } from 'node:crypto';
import {
  controllerProof,
  NONCE_BYTES,
  parseAgentMessage,
  parseHello,
  PROTOCOL_VERSION,
  SealedChannel,
  type ControllerMessage,
  type PlainControllerMessage,
} from '../../core/index.js';
import type { TransportHandlers } from './types.js';

/** Why a carrier should end a session; each carrier maps these to its own signal (close codes). */
export type SessionEnd = 'badMessage' | 'helloFirst' | 'refused' | 'badFrame';

export interface SessionCarrier {
  /** Sends a message in the clear (only a challenge or an unproven refusal). */
  plain(msg: PlainControllerMessage): void;
  /** Sends a sealed frame's text. */
  sealed(text: string): void;
  /** Ends the session: nothing more is read from it. */
  end(why: SessionEnd, reason: string): void;
  /** The agent joined and was accepted: the carrier now delivers this session's orders. */
  joined(session: ControllerSession): void;
  readonly remote: string | undefined;
  /**
   * The instance the carrier already knows the peer speaks for (amqp: the routing key, which the
   * broker lets only that instance's user publish under). A hello naming another is refused.
   */
  readonly instanceId?: string;
}

export class ControllerSession {
  #phase: 'hello' | 'join' | 'joined' | 'closed' = 'hello';
  #instanceId: string | undefined;
  #epoch = 0;
  #channel: SealedChannel | undefined;
  /** When the agent was last heard (any authentic frame), ms epoch. */
  lastHeardAt = Date.now();

  constructor(
    private readonly handlers: TransportHandlers,
    private readonly carrier: SessionCarrier,
    private readonly heartbeatMs: number,
  ) {}

  get instanceId(): string | undefined {
    return this.#instanceId;
  }

  get epoch(): number {
    return this.#epoch;
  }

  get phase(): 'hello' | 'join' | 'joined' | 'closed' {
    return this.#phase;
  }

  /** Nothing more is handled (the carrier closed, or the session was replaced or fenced). */
  close(): void {
    this.#phase = 'closed';
  }

  /** Seals and sends; false once the session is closed or before it is proven. */
  send(msg: ControllerMessage): boolean {
    if (this.#phase === 'closed' || !this.#channel) return false;
    this.carrier.sealed(this.#channel.seal({ ...msg, leader: this.handlers.leaderEpoch?.() ?? 0 }));
    return true;
  }

  suspicious(reason: string): void {
    this.handlers.onSuspicious?.({ instanceId: this.#instanceId ?? null, reason, remote: this.carrier.remote });
  }

  #end(why: SessionEnd, reason: string): void {
    this.#phase = 'closed';
    this.carrier.end(why, reason);
  }

  /** Handles one frame's text. Call one at a time, in arrival order. */
  async handle(raw: string): Promise<void> {
    if (this.#phase === 'closed') return;
    if (this.#phase === 'hello') {
      await this.#hello(raw);
      return;
    }
    const opened = this.#channel!.open(raw);
    if (!opened.ok) {
      // Before join this is someone without the key; after, a forged or replayed frame.
      this.suspicious(`${this.#phase === 'join' ? 'failed to prove the instance key' : 'sent a frame that is not authentic'} (${opened.error})`);
      this.#end('badFrame', 'bad frame');
      return;
    }
    const parsed = parseAgentMessage(opened.message);
    if (!parsed.ok) {
      this.suspicious(`malformed message: ${parsed.reason}`);
      this.#end('badMessage', 'bad message');
      return;
    }
    const m = parsed.message;
    const id = this.#instanceId!;
    this.lastHeardAt = Date.now();
    if (this.#phase === 'join') {
      if (m.type !== 'join') {
        this.#end('helloFirst', 'join first');
        return;
      }
      const verdict = await this.handlers.onJoin(id, this.#epoch, m);
      if (this.#phase !== 'join') return;
      if (!verdict.accept) {
        // Proven: the agent obeys this one.
        this.send({ type: 'refused', reason: verdict.reason });
        this.#end('refused', 'refused');
        return;
      }
      this.#phase = 'joined';
      this.carrier.joined(this);
      await this.handlers.onStatus(id, m.status, undefined);
      this.send({ type: 'welcome', heartbeatMs: this.heartbeatMs });
      await this.handlers.onConnect(id);
      return;
    }
    switch (m.type) {
      case 'status':
        await this.handlers.onStatus(id, m.status, m.vitals);
        break;
      case 'ack':
        await this.handlers.onAck(id, m.orderId);
        break;
      case 'log':
        this.handlers.onLog(id, m.lines);
        break;
      case 'join':
        this.#end('badMessage', 'bad message');
        break;
    }
  }

  async #hello(raw: string): Promise<void> {
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch {
      this.#end('badMessage', 'bad message');
      return;
    }
    const hello = parseHello(parsed);
    if (!hello.ok) {
      const isHello = typeof parsed === 'object' && parsed !== null && (parsed as { type?: unknown }).type === 'hello';
      this.#end(isHello ? 'badMessage' : 'helloFirst', isHello ? 'bad message' : 'hello first');
      return;
    }
    const h = hello.message;
    if (this.carrier.instanceId !== undefined && h.instanceId !== this.carrier.instanceId) {
      this.#instanceId = this.carrier.instanceId;
      this.suspicious(`a hello for instance ${h.instanceId} sent as ${this.carrier.instanceId}`);
      this.#end('badMessage', 'bad message');
      return;
    }
    if (h.protocol !== PROTOCOL_VERSION) {
      this.carrier.plain({ type: 'refused', reason: `protocol ${h.protocol} is not spoken here (controller speaks ${PROTOCOL_VERSION})` });
      this.#end('refused', 'refused');
      return;
    }
    const key = await this.handlers.keyFor(h.instanceId);
    if (this.#phase !== 'hello') return;
    if (key === undefined) {
      this.#instanceId = h.instanceId;
      this.suspicious('hello for an instance this controller does not know');
      this.carrier.plain({ type: 'refused', reason: 'unknown instance' });
      this.#end('refused', 'refused');
      return;
    }
    const nonce = randomBytes(NONCE_BYTES).toString('base64url');
    const params = { key, instanceId: h.instanceId, epoch: h.epoch, agentNonce: h.nonce, controllerNonce: nonce };
    this.#instanceId = h.instanceId;
    this.#epoch = h.epoch;
    this.#channel = new SealedChannel('controller', params);
    this.#phase = 'join';
    this.carrier.plain({ type: 'challenge', nonce, proof: controllerProof(params) });
  }
}

/**
 * Presence from heartbeats: an agent counts as present while it has been heard within three
 * heartbeats (and a second of slack). A socket that stays open while the agent says nothing
 * (a wedged process, a half-open TCP connection, a broker that still holds its consumer) does
 * not make it present.
 *
 * A controller whose event loop stalled has not read what its agents sent meanwhile: after a
 * stall (a sweep that ran late) every agent gets a fresh window instead of being blamed.
 */
export function presenceWindowMs(heartbeatMs: number): number {
  return 3 * heartbeatMs + 1000;
}

export class Presence {
  #lastSweep = Date.now();
  #resumedAt = 0;
  readonly #timer: NodeJS.Timeout;

  constructor(
    private readonly heartbeatMs: number,
    /** Called every heartbeat with the time before which an agent unheard of is absent. */
    sweep: (oldest: number) => void,
  ) {
    this.#timer = setInterval(() => {
      const now = Date.now();
      if (now - this.#lastSweep > 2 * heartbeatMs + 500) this.#resumedAt = now;
      this.#lastSweep = now;
      sweep(this.oldest());
    }, heartbeatMs);
    this.#timer.unref();
  }

  /** Agents last heard before this are absent. */
  oldest(): number {
    const oldest = Date.now() - presenceWindowMs(this.heartbeatMs);
    // Within a window of a stall, everyone joined counts as heard when the controller resumed.
    return this.#resumedAt >= oldest ? -Infinity : oldest;
  }

  present(lastHeardAt: number): boolean {
    return lastHeardAt >= this.oldest();
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}

/** Waits for `p`, or `ms` at most (a transport's `settle`: an agent's last frames get that long). */
export async function settleWithin(p: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([p, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}
