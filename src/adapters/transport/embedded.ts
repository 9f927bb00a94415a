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
import websocket from '@fastify/websocket';
import type { FastifyInstance } from 'fastify';
import type { WebSocket } from 'ws';
import type { ControllerMessage } from '../../core/index.js';
import { ControllerSession, Presence, settleWithin, type SessionEnd } from './session.js';
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
  /** No heartbeat for three heartbeat intervals: the agent is absent, whatever TCP says. */
  silent: 4008,
} as const;

function text(raw: unknown): string {
  return Buffer.isBuffer(raw) ? raw.toString('utf8') : Array.isArray(raw) ? Buffer.concat(raw as Buffer[]).toString('utf8') : String(raw);
}

interface Conn {
  readonly socket: WebSocket;
  readonly session: ControllerSession;
  /** Resolves once the connection is closed and every frame it brought is handled. */
  readonly settled: Promise<void>;
}

export class EmbeddedTransport implements ControllerTransport {
  readonly name = 'embedded';
  private readonly conns = new Map<string, Conn>();
  private readonly presence: Presence;

  constructor(
    private readonly handlers: TransportHandlers,
    private readonly heartbeatMs: number,
  ) {
    this.presence = new Presence(heartbeatMs, (oldest) => this.sweep(oldest));
  }

  /** Registers the `/v1/agent` WebSocket route; call inside the Fastify app before `listen`. */
  async register(app: FastifyInstance): Promise<void> {
    await app.register(websocket, { options: { maxPayload: MAX_MESSAGE_BYTES } });
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

  /** Closes connections whose agent stopped sending heartbeats; it reconnects if it can. */
  private sweep(oldest: number): void {
    for (const [id, c] of this.conns) {
      if (c.session.lastHeardAt >= oldest) continue;
      this.conns.delete(id);
      c.session.close();
      c.socket.close(CLOSE.silent, 'no heartbeat');
      this.handlers.onDisconnect(id);
    }
  }

  private accept(socket: WebSocket, remote: string | undefined): void {
    let queued = 0;
    let chain = Promise.resolve();
    let markSettled = (): void => undefined;
    const settled = new Promise<void>((resolve) => (markSettled = resolve));
    const helloTimer = setTimeout(() => socket.close(CLOSE.noHello, 'no hello'), HELLO_TIMEOUT_MS);
    const session: ControllerSession = new ControllerSession(
      this.handlers,
      {
        remote,
        plain: (msg) => {
          clearTimeout(helloTimer);
          if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(msg));
        },
        sealed: (frame) => {
          if (socket.readyState === socket.OPEN) socket.send(frame);
        },
        end: (why: SessionEnd, reason: string) => socket.close(CLOSE[why], reason),
        joined: (s) => {
          const id = s.instanceId!;
          const prev = this.conns.get(id);
          if (prev && prev.socket !== socket) {
            prev.session.close();
            prev.socket.close(CLOSE.replaced, 'replaced by a newer connection');
          }
          this.conns.set(id, { socket, session: s, settled });
        },
      },
      this.heartbeatMs,
    );

    socket.on('message', (raw) => {
      if (session.phase === 'closed') return;
      if (++queued > MAX_QUEUED) {
        session.close();
        socket.close(CLOSE.flood, 'too many messages');
        return;
      }
      const t = text(raw);
      // One message at a time, in order, per connection.
      chain = chain
        .then(async () => {
          // A replaced or silent connection says nothing more for its instance.
          const id = session.instanceId;
          if (session.phase === 'joined' && id !== undefined && this.conns.get(id)?.socket !== socket) return;
          await session.handle(t);
        })
        .catch((err: unknown) => {
          session.suspicious(`handling a message failed: ${err instanceof Error ? err.message : String(err)}`);
          session.close();
          socket.close(1011, 'internal error');
        })
        .finally(() => {
          queued -= 1;
        });
    });
    socket.on('close', () => {
      clearTimeout(helloTimer);
      // What the agent sent before it closed is still its word (its last lines and its final
      // status as it stops): those frames are handled first, in order, and only then is the
      // session over. A session ended by the controller (fenced, replaced, flood) is already
      // closed and skips them.
      chain = chain.then(() => {
        session.close();
        const id = session.instanceId;
        if (id && this.conns.get(id)?.socket === socket) {
          this.conns.delete(id);
          this.handlers.onDisconnect(id);
        }
        markSettled();
      });
    });
    socket.on('error', () => socket.terminate());
  }

  send(instanceId: string, msg: ControllerMessage): boolean {
    const c = this.conns.get(instanceId);
    return c && this.isConnected(instanceId) && c.socket.readyState === c.socket.OPEN ? c.session.send(msg) : false;
  }

  isConnected(instanceId: string): boolean {
    const c = this.conns.get(instanceId);
    return c !== undefined && this.presence.present(c.session.lastHeardAt);
  }

  async settle(instanceId: string, withinMs: number): Promise<void> {
    const c = this.conns.get(instanceId);
    if (!c) return;
    await settleWithin(c.settled, withinMs);
  }

  fence(instanceId: string, reason: string): void {
    const c = this.conns.get(instanceId);
    if (!c) return;
    c.session.send({ type: 'refused', reason });
    c.session.close();
    this.conns.delete(instanceId);
    c.socket.close(CLOSE.refused, 'fenced');
  }

  connected(): string[] {
    return [...this.conns.keys()].filter((id) => this.isConnected(id));
  }

  async close(): Promise<void> {
    this.presence.stop();
    for (const c of this.conns.values()) {
      c.session.close();
      c.socket.close(1001, 'controller stopping');
    }
    this.conns.clear();
    await Promise.resolve();
  }
}
