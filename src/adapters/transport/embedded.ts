/**
 * The embedded transport: agents open a WebSocket to `/v1/agent` on the controller. No broker.
 *
 * A connection goes through the handshake of core/auth.ts before anything else: a plain `hello`
 * (no secret), the controller's `challenge` proving it holds the instance's key, then sealed
 * frames only. The agent's first sealed message (`join`) proves the agent; only then does the
 * connection count, and only then may it replace an earlier connection of the same instance.
 * Browsers are refused (an `Origin` header), malformed or forged frames close the connection,
 * and error texts never leave the process.
 */
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { WebSocket } from 'ws';
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
import type { ControllerTransport, TransportHandlers } from './types.js';

const HELLO_TIMEOUT_MS = 10_000;
const MAX_MESSAGE_BYTES = 1 << 20;
/** Frames a connection may have queued for handling; more means a flood, and it is closed. */
const MAX_QUEUED = 256;

/** Close codes agents and tests can tell apart. Reasons are fixed words, never internal text. */
export const CLOSE = {
  noHello: 4001,
  badMessage: 4002,
  helloFirst: 4003,
  refused: 4004,
  replaced: 4005,
  badFrame: 4006,
  flood: 4007,
} as const;

function text(raw: unknown): string {
  return Buffer.isBuffer(raw) ? raw.toString('utf8') : Array.isArray(raw) ? Buffer.concat(raw as Buffer[]).toString('utf8') : String(raw);
}

interface Conn {
  readonly socket: WebSocket;
  readonly channel: SealedChannel;
}

export class EmbeddedTransport implements ControllerTransport {
  readonly name = 'embedded';
  private readonly conns = new Map<string, Conn>();

  constructor(
    private readonly handlers: TransportHandlers,
    private readonly heartbeatMs: number,
  ) {}

  /** Registers the `/v1/agent` WebSocket route; call inside the Fastify app before `listen`. */
  register(app: FastifyInstance): void {
    app.get(
      '/v1/agent',
      {
        websocket: true,
        schema: { hide: true },
        // A page in a browser may open WebSockets anywhere; agents never send an Origin.
        preValidation: async (req, reply) => {
          if (req.headers.origin !== undefined) {
            await reply.code(403).send({ error: { code: 'forbidden', message: 'browsers may not connect to the agent endpoint' } });
          }
        },
      },
      (socket, req) => this.accept(socket, req.socket.remoteAddress),
    );
  }

  private suspicious(instanceId: string | null, reason: string, remote: string | undefined): void {
    this.handlers.onSuspicious?.({ instanceId, reason, remote });
  }

  private accept(socket: WebSocket, remote: string | undefined): void {
    // Handshake state of this connection.
    let phase: 'hello' | 'join' | 'joined' | 'closed' = 'hello';
    let instanceId: string | undefined;
    let epoch = 0;
    let channel: SealedChannel | undefined;
    let queued = 0;
    let chain = Promise.resolve();
    const helloTimer = setTimeout(() => socket.close(CLOSE.noHello, 'no hello'), HELLO_TIMEOUT_MS);
    const close = (code: number, reason: string): void => {
      phase = 'closed';
      socket.close(code, reason);
    };
    const plain = (msg: PlainControllerMessage): void => {
      if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(msg));
    };

    const handle = async (raw: string): Promise<void> => {
      if (phase === 'closed') return;
      if (phase === 'hello') {
        let parsed: unknown;
        try {
          parsed = JSON.parse(raw);
        } catch {
          close(CLOSE.badMessage, 'bad message');
          return;
        }
        const hello = parseHello(parsed);
        if (!hello.ok) {
          const isHello = typeof parsed === 'object' && parsed !== null && (parsed as { type?: unknown }).type === 'hello';
          close(isHello ? CLOSE.badMessage : CLOSE.helloFirst, isHello ? 'bad message' : 'hello first');
          return;
        }
        clearTimeout(helloTimer);
        const h = hello.message;
        if (h.protocol !== PROTOCOL_VERSION) {
          plain({ type: 'refused', reason: `protocol ${h.protocol} is not spoken here (controller speaks ${PROTOCOL_VERSION})` });
          close(CLOSE.refused, 'refused');
          return;
        }
        const key = await this.handlers.keyFor(h.instanceId);
        if (phase !== 'hello') return;
        if (key === undefined) {
          this.suspicious(h.instanceId, 'hello for an instance this controller does not know', remote);
          plain({ type: 'refused', reason: 'unknown instance' });
          close(CLOSE.refused, 'refused');
          return;
        }
        const nonce = randomBytes(NONCE_BYTES).toString('base64url');
        const params = { key, instanceId: h.instanceId, epoch: h.epoch, agentNonce: h.nonce, controllerNonce: nonce };
        instanceId = h.instanceId;
        epoch = h.epoch;
        channel = new SealedChannel('controller', params);
        phase = 'join';
        plain({ type: 'challenge', nonce, proof: controllerProof(params) });
        return;
      }
      const opened = channel!.open(raw);
      if (!opened.ok) {
        // Before join this is someone without the key; after, a forged or replayed frame.
        this.suspicious(instanceId ?? null, `${phase === 'join' ? 'failed to prove the instance key' : 'sent a frame that is not authentic'} (${opened.error})`, remote);
        close(CLOSE.badFrame, 'bad frame');
        return;
      }
      const msg = parseAgentMessage(opened.message);
      if (!msg.ok) {
        this.suspicious(instanceId ?? null, `malformed message: ${msg.reason}`, remote);
        close(CLOSE.badMessage, 'bad message');
        return;
      }
      const m = msg.message;
      const id = instanceId!;
      if (phase === 'join') {
        if (m.type !== 'join') {
          close(CLOSE.helloFirst, 'join first');
          return;
        }
        const verdict = await this.handlers.onJoin(id, epoch, m);
        if (phase !== 'join') return;
        if (!verdict.accept) {
          // Proven: the agent obeys this one.
          this.sendOn({ socket, channel: channel! }, { type: 'refused', reason: verdict.reason });
          close(CLOSE.refused, 'refused');
          return;
        }
        phase = 'joined';
        const prev = this.conns.get(id);
        if (prev && prev.socket !== socket) prev.socket.close(CLOSE.replaced, 'replaced by a newer connection');
        const conn = { socket, channel: channel! };
        this.conns.set(id, conn);
        await this.handlers.onStatus(id, m.status, undefined);
        this.sendOn(conn, { type: 'welcome', heartbeatMs: this.heartbeatMs });
        await this.handlers.onConnect(id);
        return;
      }
      if (this.conns.get(id)?.socket !== socket) return;
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
          close(CLOSE.badMessage, 'bad message');
          break;
      }
    };

    socket.on('message', (raw) => {
      if (phase === 'closed') return;
      if (++queued > MAX_QUEUED) {
        close(CLOSE.flood, 'too many messages');
        return;
      }
      const t = text(raw);
      // One message at a time, in order, per connection.
      chain = chain
        .then(() => handle(t))
        .catch((err: unknown) => {
          this.suspicious(instanceId ?? null, `handling a message failed: ${err instanceof Error ? err.message : String(err)}`, remote);
          close(1011, 'internal error');
        })
        .finally(() => {
          queued -= 1;
        });
    });
    socket.on('close', () => {
      phase = 'closed';
      clearTimeout(helloTimer);
      if (instanceId && this.conns.get(instanceId)?.socket === socket) {
        this.conns.delete(instanceId);
        this.handlers.onDisconnect(instanceId);
      }
    });
    socket.on('error', () => socket.terminate());
  }

  /** Options for @fastify/websocket. */
  static readonly wsOptions = { maxPayload: MAX_MESSAGE_BYTES };

  private sendOn(conn: Conn, msg: ControllerMessage): boolean {
    if (conn.socket.readyState !== conn.socket.OPEN) return false;
    conn.socket.send(conn.channel.seal(msg));
    return true;
  }

  send(instanceId: string, msg: ControllerMessage): boolean {
    const c = this.conns.get(instanceId);
    return c ? this.sendOn(c, msg) : false;
  }

  isConnected(instanceId: string): boolean {
    return this.conns.has(instanceId);
  }

  fence(instanceId: string, reason: string): void {
    const c = this.conns.get(instanceId);
    if (!c) return;
    this.sendOn(c, { type: 'refused', reason });
    this.conns.delete(instanceId);
    c.socket.close(CLOSE.refused, 'fenced');
  }

  connected(): string[] {
    return [...this.conns.keys()];
  }

  async close(): Promise<void> {
    for (const c of this.conns.values()) c.socket.close(1001, 'controller stopping');
    this.conns.clear();
    await Promise.resolve();
  }
}
