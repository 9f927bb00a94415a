/**
 * Mutual authentication between the controller and an agent, and the sealed channel that
 * follows it. Both sides hold the same per-instance key, made by the controller when it creates
 * the instance and handed to the agent out of band (the local provider writes it to the agent's
 * stdin). The key itself never crosses the wire:
 *
 * ```
 * agent → controller   hello      { instanceId, epoch, nonce: a }            (plain)
 * controller → agent   challenge  { nonce: c, proof: HMAC(key, "controller"|id|epoch|a|c) }
 *                      the agent checks the proof before it says or obeys anything else
 * agent → controller   sealed #1  join { pid, status, applied }              (proves the agent)
 * controller → agent   sealed #1  welcome …, then orders
 * ```
 *
 * Every later message in both directions is a sealed frame: `{ s, m, h }` where `m` is the
 * message's JSON text, `s` its sequence number in that direction (1, 2, 3 … without gaps) and `h`
 * = HMAC(session, direction|s|m), session = HMAC(key, "session"|id|epoch|a|c). Fresh nonces on
 * both sides make every session's key new, so nothing recorded from an earlier connection can be
 * replayed, and a peer that listens on the controller's port without the key learns nothing that
 * lets it pose as either side, inject, reorder or drop-and-replace a message unnoticed.
 *
 * Why not TLS with a pinned certificate: the same frames work unchanged through a message broker
 * (the amqp transport) where the controller's TLS endpoint is not the agent's peer, and the
 * agent needs no certificate machinery. What this does not give is confidentiality: orders and
 * reports are readable by whoever can read the connection. They carry no secret (no token, no
 * key); an app file's own env values do travel in orders, see docs/security.md.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

/** Length of a nonce in bytes, before base64url. */
export const NONCE_BYTES = 32;

const LABEL = 'drover/2';

/** HMAC-SHA256 of the parts joined by newlines (proofs here and in fleet.ts). */
export function hmac(key: string | Buffer, ...parts: (string | number)[]): Buffer {
  return createHmac('sha256', key).update(parts.join('\n')).digest();
}

/** Constant-time equality of two proofs. */
export function same(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Both ends' view of one handshake. */
export interface HandshakeParams {
  /** The per-instance key (never sent). */
  readonly key: string;
  readonly instanceId: string;
  readonly epoch: number;
  /** The agent's nonce, base64url. */
  readonly agentNonce: string;
  /** The controller's nonce, base64url. */
  readonly controllerNonce: string;
}

/** What the controller sends in its challenge to prove it holds the instance's key. */
export function controllerProof(p: HandshakeParams): string {
  return hmac(p.key, LABEL, 'controller', p.instanceId, p.epoch, p.agentNonce, p.controllerNonce).toString('base64url');
}

/** The agent's check of {@link controllerProof}, in constant time. */
export function checkControllerProof(p: HandshakeParams, proof: string): boolean {
  return same(Buffer.from(controllerProof(p), 'base64url'), Buffer.from(proof, 'base64url'));
}

function sessionKey(p: HandshakeParams): Buffer {
  return hmac(p.key, LABEL, 'session', p.instanceId, p.epoch, p.agentNonce, p.controllerNonce);
}

/** Why a frame was refused. */
export type FrameError = 'malformed' | 'bad-mac' | 'out-of-order';

/**
 * One side of a sealed connection. Not thread-safe across sockets: one per connection.
 *
 * ```ts
 * const ch = new SealedChannel('agent', params);
 * socket.send(ch.seal({ type: 'status', … }));
 * const r = ch.open(text); // { ok: true, message } or { ok: false, error }
 * ```
 */
export class SealedChannel {
  readonly #key: Buffer;
  readonly #out: string;
  readonly #in: string;
  #sent = 0;
  #received = 0;

  constructor(side: 'agent' | 'controller', params: HandshakeParams) {
    this.#key = sessionKey(params);
    this.#out = side === 'agent' ? 'agent→controller' : 'controller→agent';
    this.#in = side === 'agent' ? 'controller→agent' : 'agent→controller';
  }

  /** A frame carrying `message` (any JSON value), as text to send. */
  seal(message: unknown): string {
    const m = JSON.stringify(message);
    this.#sent += 1;
    const h = hmac(this.#key, this.#out, this.#sent, m).toString('base64url');
    return JSON.stringify({ s: this.#sent, m, h });
  }

  /**
   * Checks and unwraps a frame. A refused frame leaves the channel as it was; the caller should
   * drop the connection (a gap or a forgery means the connection can no longer be trusted).
   */
  open(text: string): { ok: true; message: unknown } | { ok: false; error: FrameError } {
    let f: unknown;
    try {
      f = JSON.parse(text);
    } catch {
      return { ok: false, error: 'malformed' };
    }
    if (typeof f !== 'object' || f === null) return { ok: false, error: 'malformed' };
    const { s, m, h } = f as Record<string, unknown>;
    if (typeof s !== 'number' || !Number.isSafeInteger(s) || typeof m !== 'string' || typeof h !== 'string' || h.length > 64) {
      return { ok: false, error: 'malformed' };
    }
    if (!same(hmac(this.#key, this.#in, s, m), Buffer.from(h, 'base64url'))) return { ok: false, error: 'bad-mac' };
    if (s !== this.#received + 1) return { ok: false, error: 'out-of-order' };
    let message: unknown;
    try {
      message = JSON.parse(m);
    } catch {
      return { ok: false, error: 'malformed' };
    }
    this.#received = s;
    return { ok: true, message };
  }
}

/**
 * The controller's answer to `GET /v1/identity?challenge=…`: proof that it holds the admin token,
 * given before a client sends the token. A process that took the controller's port cannot
 * answer, so the CLI never hands it the token.
 */
export function apiProof(token: string, challenge: string): string {
  return hmac(token, LABEL, 'api', challenge).toString('base64url');
}

export function checkApiProof(token: string, challenge: string, proof: string): boolean {
  return same(Buffer.from(apiProof(token, challenge), 'base64url'), Buffer.from(proof, 'base64url'));
}
