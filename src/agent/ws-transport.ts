/**
 * The agent's end of the embedded transport: a WebSocket to `ws://controller/v1/agent`. The
 * controller's liveness is checked with WebSocket pings every heartbeat: a controller that
 * vanished without closing the socket is noticed within three heartbeats, not by TCP hours later.
 */
import WebSocket, { type RawData } from 'ws';
import type { AgentMessage } from '../core/index.js';
import { AgentSession, Backoff, type AgentTransport, type AgentTransportEvents, type AgentTransportOptions } from './transport.js';

export interface WsAgentTransportOptions extends AgentTransportOptions {
  /** Where the controller listens, e.g. `http://127.0.0.1:7420`; the agent dials `ws://…/v1/agent`. */
  readonly controllerUrl: string;
}

export class WsAgentTransport implements AgentTransport {
  readonly describe: string;
  readonly #o: WsAgentTransportOptions;
  readonly #url: string;
  readonly #backoff: Backoff;
  #events?: AgentTransportEvents;
  #ws?: WebSocket;
  #session?: AgentSession;
  #closed = false;
  #reconnectTimer?: NodeJS.Timeout;
  #welcomeTimer?: NodeJS.Timeout;
  #pinger?: NodeJS.Timeout;
  #lastPong = 0;

  constructor(options: WsAgentTransportOptions) {
    this.#o = options;
    this.#url = agentUrl(options.controllerUrl);
    this.describe = this.#url;
    this.#backoff = new Backoff(options.reconnectMinMs ?? 250, options.reconnectMaxMs ?? 5000);
  }

  start(events: AgentTransportEvents): void {
    this.#events = events;
    this.#connect();
  }

  #connect(): void {
    if (this.#closed) return;
    const log = this.#o.logger;
    const handshakeMs = this.#o.handshakeTimeoutMs ?? 5000;
    const ws = new WebSocket(this.#url, { handshakeTimeout: handshakeMs });
    this.#ws = ws;
    const events = this.#events!;
    const session = new AgentSession(this.#o, {
      join: () => events.join(),
      message: (msg) => {
        if (msg.type === 'welcome') this.#onWelcome(ws, msg.heartbeatMs);
        events.message(msg);
      },
      down: () => undefined,
    });
    this.#session = session;
    ws.on('open', () => {
      log.info('connected to controller');
      // A controller that accepts the socket but never answers hello is as good as none.
      clearTimeout(this.#welcomeTimer);
      this.#welcomeTimer = setTimeout(() => {
        if (this.#ws === ws && !session.welcomed) {
          log.warn('no welcome from the controller; reconnecting');
          ws.terminate();
        }
      }, handshakeMs);
      ws.send(session.hello());
    });
    ws.on('message', (data: RawData) => {
      if (this.#ws !== ws) return;
      const r = session.receive(rawText(data));
      if (r.kind === 'join') ws.send(r.frame);
      else if (r.kind === 'restart') ws.terminate();
    });
    ws.on('pong', () => (this.#lastPong = Date.now()));
    ws.on('error', (err) => {
      // Each failed attempt would log the same line every few seconds while the controller is away.
      if (session.welcomed || this.#backoff.attempt === 0) log.warn({ err: err.message }, 'controller connection error');
    });
    ws.on('close', () => {
      if (this.#ws !== ws) return;
      if (session.welcomed) log.warn('lost the controller connection; the role keeps running, reconnecting');
      this.#ws = undefined;
      this.#session = undefined;
      clearInterval(this.#pinger);
      clearTimeout(this.#welcomeTimer);
      events.down();
      if (this.#closed) return;
      const delay = this.#backoff.next();
      log.debug({ delayMs: delay }, 'reconnecting');
      this.#reconnectTimer = setTimeout(() => this.#connect(), delay);
    });
  }

  #onWelcome(ws: WebSocket, heartbeatMs: number): void {
    clearTimeout(this.#welcomeTimer);
    this.#backoff.reset();
    this.#lastPong = Date.now();
    clearInterval(this.#pinger);
    this.#pinger = setInterval(() => {
      if (this.#ws !== ws) return;
      if (Date.now() - this.#lastPong > 3 * heartbeatMs + 1000) {
        this.#o.logger.warn('controller stopped answering pings; reconnecting');
        ws.terminate();
        return;
      }
      ws.ping();
    }, heartbeatMs);
  }

  send(msg: AgentMessage): Promise<boolean> {
    const ws = this.#ws;
    const frame = this.#session?.seal(msg);
    if (!ws || frame === undefined || ws.readyState !== WebSocket.OPEN) return Promise.resolve(false);
    return new Promise((resolve) => ws.send(frame, (err) => resolve(!err)));
  }

  async close(reason: string): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#reconnectTimer);
    clearTimeout(this.#welcomeTimer);
    clearInterval(this.#pinger);
    const ws = this.#ws;
    this.#ws = undefined;
    this.#session = undefined;
    ws?.close(1000, reason.slice(0, 100));
    await Promise.resolve();
  }
}

function agentUrl(controllerUrl: string): string {
  const u = new URL(controllerUrl);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  u.pathname = `${u.pathname.replace(/\/+$/, '')}/v1/agent`;
  return u.toString();
}

function rawText(data: RawData): string {
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  if (data instanceof ArrayBuffer) return Buffer.from(data).toString('utf8');
  return data.toString('utf8');
}
