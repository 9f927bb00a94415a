/**
 * The embedded transport: agents open a WebSocket to `/v1/agent` on the controller. No broker.
 * Messages are JSON (protocol.ts). The first message must be a `hello` within 10 s; until the
 * controller accepts it, nothing else is processed.
 */
import type { FastifyInstance } from 'fastify';
import type { WebSocket } from 'ws';
import type { AgentMessage, ControllerMessage } from '../../core/index.js';
import type { ControllerTransport, TransportHandlers } from './types.js';

const HELLO_TIMEOUT_MS = 10_000;
const MAX_MESSAGE_BYTES = 1 << 20;

function parse(raw: unknown): AgentMessage | undefined {
  try {
    const text = Buffer.isBuffer(raw) ? raw.toString('utf8') : Array.isArray(raw) ? Buffer.concat(raw as Buffer[]).toString('utf8') : String(raw);
    const m = JSON.parse(text) as unknown;
    if (typeof m !== 'object' || m === null || typeof (m as { type?: unknown }).type !== 'string') return undefined;
    return m as AgentMessage;
  } catch {
    return undefined;
  }
}

export class EmbeddedTransport implements ControllerTransport {
  readonly name = 'embedded';
  private readonly sockets = new Map<string, WebSocket>();

  constructor(
    private readonly handlers: TransportHandlers,
    private readonly heartbeatMs: number,
  ) {}

  /** Registers the `/v1/agent` WebSocket route; call inside the Fastify app before `listen`. */
  register(app: FastifyInstance): void {
    app.get('/v1/agent', { websocket: true, schema: { hide: true } }, (socket) => {
      let instanceId: string | undefined;
      let chain = Promise.resolve();
      const helloTimer = setTimeout(() => socket.close(4001, 'no hello'), HELLO_TIMEOUT_MS);
      socket.on('message', (raw) => {
        // Handle messages one at a time, in order, per connection.
        chain = chain.then(async () => {
          const msg = parse(raw);
          if (!msg) {
            socket.close(4002, 'bad message');
            return;
          }
          if (!instanceId) {
            if (msg.type !== 'hello') {
              socket.close(4003, 'hello first');
              return;
            }
            clearTimeout(helloTimer);
            const verdict = await this.handlers.onHello(msg);
            if (!verdict.accept) {
              this.sendOn(socket, { type: 'refused', reason: verdict.reason });
              socket.close(4004, 'refused');
              return;
            }
            instanceId = msg.instanceId;
            const prev = this.sockets.get(instanceId);
            if (prev && prev !== socket) prev.close(4005, 'replaced by a newer connection');
            this.sockets.set(instanceId, socket);
            await this.handlers.onStatus(instanceId, msg.status, undefined);
            this.sendOn(socket, { type: 'welcome', heartbeatMs: this.heartbeatMs });
            await this.handlers.onConnect(instanceId);
            return;
          }
          switch (msg.type) {
            case 'status':
              await this.handlers.onStatus(instanceId, msg.status, msg.vitals);
              break;
            case 'ack':
              await this.handlers.onAck(instanceId, msg.orderId);
              break;
            case 'log':
              this.handlers.onLog(instanceId, msg.lines);
              break;
            default:
              break;
          }
        }).catch((err: unknown) => {
          socket.close(1011, err instanceof Error ? err.message.slice(0, 100) : 'error');
        });
      });
      socket.on('close', () => {
        clearTimeout(helloTimer);
        if (instanceId && this.sockets.get(instanceId) === socket) {
          this.sockets.delete(instanceId);
          this.handlers.onDisconnect(instanceId);
        }
      });
      socket.on('error', () => socket.terminate());
    });
  }

  /** Options for @fastify/websocket. */
  static readonly wsOptions = { maxPayload: MAX_MESSAGE_BYTES };

  private sendOn(socket: WebSocket, msg: ControllerMessage): boolean {
    if (socket.readyState !== socket.OPEN) return false;
    socket.send(JSON.stringify(msg));
    return true;
  }

  send(instanceId: string, msg: ControllerMessage): boolean {
    const s = this.sockets.get(instanceId);
    return s ? this.sendOn(s, msg) : false;
  }

  isConnected(instanceId: string): boolean {
    return this.sockets.has(instanceId);
  }

  fence(instanceId: string, reason: string): void {
    const s = this.sockets.get(instanceId);
    if (!s) return;
    this.sendOn(s, { type: 'refused', reason });
    this.sockets.delete(instanceId);
    s.close(4004, 'fenced');
  }

  connected(): string[] {
    return [...this.sockets.keys()];
  }

  async close(): Promise<void> {
    for (const s of this.sockets.values()) s.close(1001, 'controller stopping');
    this.sockets.clear();
    await Promise.resolve();
  }
}
