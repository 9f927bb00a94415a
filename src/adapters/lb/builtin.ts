/**
 * The builtin driver: a Node reverse proxy (HTTP/1.1, keep-alive to members, WebSocket
 * pass-through). Every request is balanced on its own, so a client's keep-alive connection is
 * never pinned to a member and draining takes effect on the next request.
 */
import http, { type ClientRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import net, { type Socket } from 'node:net';
import { pino, type Logger } from 'pino';
import {
  compileLbOptions,
  hostOnly,
  LbError,
  parseAddress,
  validateHostMap,
  validateMembers,
  type CompiledLbOptions,
  type HostMap,
  type LbAddress,
  type LbMember,
  type LbMemberStats,
  type LbOptions,
  type LoadBalancerDriver,
  type MemberState,
} from './types.js';

/** Methods a member may see twice without harm (RFC 9110 §9.2.2). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);
/** Headers that describe one hop, not the message (RFC 9110 §7.6.1). */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authenticate', 'proxy-authorization']);
/** Ours to set: a client's own values would let it forge where a request came from. */
const FORWARDED = new Set(['x-forwarded-proto', 'x-forwarded-host']);
const MAX_ATTEMPTS = 3;

class Member {
  active = 0;
  total = 0;
  failures = 0;
  /** Consecutive failed connections; a response resets it. */
  consecutive = 0;
  ejectedUntil = 0;
  probeFailures = 0;
  probeDown = false;
  removing = false;
  removeTimer: NodeJS.Timeout | undefined;
  /** Cuts one in-flight exchange or tunnel; used by `maint` and the removal deadline. */
  readonly cutters = new Set<() => void>();
  readonly host: string;
  readonly port: number;
  readonly agent: http.Agent;

  constructor(
    readonly id: string,
    readonly address: string,
    public state: MemberState,
  ) {
    const a = parseAddress(address)!;
    this.host = a.host;
    this.port = a.port;
    // lifo: the socket used last is the least likely to have been closed by the member's idle timeout.
    this.agent = new http.Agent({ keepAlive: true, scheduling: 'lifo', maxFreeSockets: 256 });
  }

  ejected(now: number): boolean {
    return this.probeDown || this.ejectedUntil > now;
  }

  cutAll(): void {
    for (const cut of [...this.cutters]) cut();
  }
}

function hasBody(req: IncomingMessage): boolean {
  const len = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (len !== undefined && len !== '0');
}

function connectionTokens(raw: readonly string[]): Set<string> {
  const out = new Set<string>();
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.toLowerCase() === 'connection') for (const t of raw[i + 1]!.split(',')) out.add(t.trim().toLowerCase());
  }
  return out;
}

/** Request headers for the member: hop-by-hop ones dropped, X-Forwarded-* added. */
function forwardHeaders(req: IncomingMessage, upgrade: boolean): string[] {
  const raw = req.rawHeaders;
  const named = connectionTokens(raw);
  const out: string[] = [];
  const xff: string[] = [];
  let host: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const lower = name.toLowerCase();
    const value = raw[i + 1]!;
    if (lower === 'x-forwarded-for') {
      xff.push(value);
      continue;
    }
    if (lower === 'host') host = value;
    if (FORWARDED.has(lower) || HOP_BY_HOP.has(lower) || named.has(lower)) continue;
    out.push(name, value);
  }
  const client = req.socket.remoteAddress?.replace(/^::ffff:/, '');
  if (client) xff.push(client);
  if (xff.length) out.push('X-Forwarded-For', xff.join(', '));
  out.push('X-Forwarded-Proto', 'http');
  if (host !== undefined) out.push('X-Forwarded-Host', host);
  if (upgrade) out.push('Connection', 'Upgrade', 'Upgrade', req.headers.upgrade ?? 'websocket');
  return out;
}

function responseHeaders(raw: readonly string[], keepUpgrade: boolean): string[] {
  const named = connectionTokens(raw);
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const lower = raw[i]!.toLowerCase();
    if (keepUpgrade && (lower === 'connection' || lower === 'upgrade')) {
      out.push(raw[i]!, raw[i + 1]!);
      continue;
    }
    if (HOP_BY_HOP.has(lower) || named.has(lower)) continue;
    out.push(raw[i]!, raw[i + 1]!);
  }
  return out;
}

function rawHead(status: number, message: string, headers: readonly string[]): string {
  let s = `HTTP/1.1 ${status} ${message}\r\n`;
  for (let i = 0; i < headers.length; i += 2) s += `${headers[i]}: ${headers[i + 1]}\r\n`;
  return s + '\r\n';
}

function isConnectError(err: NodeJS.ErrnoException): boolean {
  return ['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ETIMEDOUT'].includes(err.code ?? '');
}

export class BuiltinDriver implements LoadBalancerDriver {
  readonly name = 'builtin' as const;
  readonly #opts: CompiledLbOptions;
  readonly #log: Logger;
  /** Desired members by id, in the order given (round robin follows it). */
  #members = new Map<string, Member>();
  /** Members left out of the set that still carry requests. */
  readonly #removing = new Set<Member>();
  #hostMap: ReadonlyMap<string, string> = new Map();
  #rr = 0;
  #server: http.Server | undefined;
  #address: LbAddress | undefined;
  #probeTimer: NodeJS.Timeout | undefined;
  #probing = false;
  #stopped = false;

  constructor(options: LbOptions) {
    this.#opts = compileLbOptions(options);
    this.#log = (options.logger ?? pino()).child({ lb: 'builtin' });
  }

  get address(): LbAddress | undefined {
    return this.#address;
  }

  async start(): Promise<LbAddress> {
    if (this.#address) return this.#address;
    if (this.#stopped) throw new LbError('lb_not_started', 'the builtin load balancer was stopped; make a new driver');
    const server = http.createServer({ keepAliveTimeout: 10_000 });
    server.on('request', (req, res) => this.#onRequest(req, res));
    server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.#onUpgrade(req, socket, head));
    server.on('clientError', (_err, socket) => socket.destroy());
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.#opts.listen.port, this.#opts.listen.host, () => {
        server.off('error', reject);
        resolve();
      });
    }).catch((err: unknown) => {
      throw new LbError('lb_listen_failed', `cannot listen on ${this.#opts.listen.host}:${this.#opts.listen.port}: ${(err as Error).message}`, {}, { cause: err });
    });
    this.#server = server;
    const a = server.address() as net.AddressInfo;
    this.#address = { host: this.#opts.listen.host, port: a.port };
    if (this.#opts.healthCheck) {
      this.#probeTimer = setInterval(() => void this.#probeAll(), this.#opts.healthCheck.intervalMs);
      this.#probeTimer.unref();
    }
    this.#log.info({ address: this.#address, balance: this.#opts.balance }, 'builtin load balancer listening');
    return this.#address;
  }

  async setMembers(members: readonly LbMember[]): Promise<void> {
    const desired = validateMembers(members);
    const next = new Map<string, Member>();
    for (const d of desired) {
      let m = this.#members.get(d.id);
      if (m && m.address !== d.address) {
        this.#beginRemoval(m);
        m = undefined;
      }
      if (!m) {
        // A member put back while it was still draining out keeps its connections and counters.
        m = [...this.#removing].find((r) => r.id === d.id && r.address === d.address);
        if (m) {
          this.#removing.delete(m);
          clearTimeout(m.removeTimer);
          m.removing = false;
        } else {
          m = new Member(d.id, d.address, d.state);
          this.#log.info({ member: d.id, address: d.address, state: d.state }, 'member added');
        }
      }
      if (m.state !== d.state) {
        this.#log.info({ member: d.id, from: m.state, to: d.state }, 'member state changed');
        m.state = d.state;
      }
      if (d.state === 'maint') m.cutAll();
      next.set(d.id, m);
    }
    for (const m of this.#members.values()) if (next.get(m.id) !== m) this.#beginRemoval(m);
    this.#members = next;
  }

  async setHostMap(map: HostMap): Promise<void> {
    this.#hostMap = validateHostMap(map);
  }

  async stats(): Promise<LbMemberStats[]> {
    const now = Date.now();
    const row = (m: Member): LbMemberStats => ({
      id: m.id,
      address: m.address,
      state: m.removing && m.state === 'ready' ? 'drain' : m.state,
      removing: m.removing,
      activeConnections: m.active,
      totalRequests: m.total,
      failures: m.failures,
      ejected: m.ejected(now),
    });
    return [...[...this.#members.values()].map(row), ...[...this.#removing].map(row)];
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#probeTimer);
    const server = this.#server;
    this.#server = undefined;
    this.#address = undefined;
    for (const m of [...this.#members.values(), ...this.#removing]) {
      clearTimeout(m.removeTimer);
      m.cutAll();
      m.agent.destroy();
    }
    this.#members.clear();
    this.#removing.clear();
    if (server) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    }
  }

  #beginRemoval(m: Member): void {
    if (m.removing) return;
    m.removing = true;
    if (m.active === 0) {
      this.#forget(m);
      this.#log.info({ member: m.id }, 'member removed');
      return;
    }
    this.#removing.add(m);
    this.#log.info({ member: m.id, active: m.active }, 'member removed from rotation; waiting for its requests to finish');
    m.removeTimer = setTimeout(() => {
      this.#log.warn({ member: m.id, active: m.active }, 'member still busy at its removal deadline; cutting its connections');
      m.cutAll();
      this.#forget(m);
    }, this.#opts.removeTimeoutMs);
    m.removeTimer.unref();
  }

  #forget(m: Member): void {
    clearTimeout(m.removeTimer);
    this.#removing.delete(m);
    m.agent.destroy();
  }

  #idle(m: Member): void {
    if (m.removing && m.active === 0 && this.#removing.has(m)) {
      this.#forget(m);
      this.#log.info({ member: m.id }, 'removed member finished its last request');
    }
  }

  #routable(m: Member, now: number, tried: ReadonlySet<Member>): boolean {
    return m.state === 'ready' && !m.removing && !m.ejected(now) && !tried.has(m);
  }

  #pick(req: IncomingMessage, tried: ReadonlySet<Member>): Member | undefined {
    const now = Date.now();
    const host = hostOnly(req.headers.host);
    if (host !== undefined) {
      const id = this.#hostMap.get(host);
      const m = id === undefined ? undefined : this.#members.get(id);
      if (m && this.#routable(m, now, tried)) return m;
    }
    const all = [...this.#members.values()];
    let pool = all.filter((m) => this.#routable(m, now, tried));
    // With every ready member ejected, trying one beats answering 503 for sure.
    if (pool.length === 0) pool = all.filter((m) => m.state === 'ready' && !tried.has(m));
    if (pool.length === 0) return undefined;
    const turn = this.#rr++;
    if (this.#opts.balance === 'leastconn') {
      const least = Math.min(...pool.map((m) => m.active));
      pool = pool.filter((m) => m.active === least);
    }
    return pool[turn % pool.length];
  }

  #connectFailed(m: Member, err: Error): void {
    m.failures++;
    m.consecutive++;
    if (m.consecutive >= this.#opts.ejectAfterFailures && m.ejectedUntil <= Date.now()) {
      m.ejectedUntil = Date.now() + this.#opts.ejectForMs;
      // One more failure after the cool-off ejects it again at once.
      m.consecutive = this.#opts.ejectAfterFailures - 1;
      this.#log.warn({ member: m.id, err: err.message, forMs: this.#opts.ejectForMs }, 'member ejected after failed connections');
    }
  }

  /** Opens a request to `m`; calls back once the socket is connected (at once for a reused one). */
  #open(m: Member, req: IncomingMessage, upgrade: boolean, onConnected: () => void): ClientRequest {
    const up = http.request({
      host: m.host,
      port: m.port,
      method: req.method,
      path: req.url,
      headers: forwardHeaders(req, upgrade),
      setHost: false,
      agent: upgrade ? false : m.agent,
    });
    up.once('socket', (s: Socket) => {
      if (!s.connecting) return onConnected();
      const timer = setTimeout(() => up.destroy(Object.assign(new Error(`connect timeout after ${this.#opts.connectTimeoutMs} ms`), { code: 'ETIMEDOUT' })), this.#opts.connectTimeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        onConnected();
      });
      s.once('close', () => clearTimeout(timer));
    });
    return up;
  }

  #onRequest(req: IncomingMessage, res: ServerResponse): void {
    const body = hasBody(req);
    // A member that got the request may have acted on it: only then is the method's safety what matters.
    const replayable = !body && IDEMPOTENT.has(req.method ?? '');
    const tried = new Set<Member>();
    let clientGone = false;
    let current: ClientRequest | undefined;
    res.once('close', () => {
      clientGone = true;
      if (!res.writableFinished) current?.destroy();
    });
    const attempt = (): void => {
      const m = this.#pick(req, tried);
      if (!m) return void this.#answer(res, 503, 'no member available');
      tried.add(m);
      m.active++;
      m.total++;
      let connected = false;
      let responded = false;
      let settled = false;
      const settle = (): void => {
        if (settled) return;
        settled = true;
        m.active--;
        m.cutters.delete(cut);
        this.#idle(m);
      };
      const cut = (): void => {
        clientGone = true;
        up.destroy();
        res.destroy();
        settle();
      };
      m.cutters.add(cut);
      const up = this.#open(m, req, false, () => {
        connected = true;
        if (body) req.pipe(up);
      });
      current = up;
      if (!body) up.end();
      up.on('response', (ur: IncomingMessage) => {
        responded = true;
        m.consecutive = 0;
        if (clientGone) {
          ur.resume();
          return settle();
        }
        res.writeHead(ur.statusCode ?? 502, ur.statusMessage, responseHeaders(ur.rawHeaders, false));
        ur.pipe(res);
        ur.once('error', () => res.destroy());
        ur.once('aborted', () => res.destroy());
        res.once('close', settle);
      });
      up.on('error', (err: NodeJS.ErrnoException) => {
        if (responded) {
          res.destroy();
          return settle();
        }
        settle();
        if (clientGone || res.destroyed) return;
        const neverReached = !connected && isConnectError(err);
        if (neverReached) this.#connectFailed(m, err);
        else m.failures++;
        if ((neverReached || replayable) && tried.size < MAX_ATTEMPTS && !res.headersSent) {
          this.#log.debug({ member: m.id, err: err.message }, 'retrying on another member');
          return attempt();
        }
        this.#log.warn({ member: m.id, err: err.message, method: req.method, url: req.url }, 'request failed');
        this.#answer(res, 502, `member ${m.id} failed: ${err.message}`);
      });
    };
    attempt();
  }

  #answer(res: ServerResponse, status: number, text: string): void {
    if (res.headersSent || res.destroyed) return void res.destroy();
    res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text) + 1 });
    res.end(text + '\n');
  }

  #onUpgrade(req: IncomingMessage, client: Socket, head: Buffer): void {
    client.on('error', () => client.destroy());
    const tried = new Set<Member>();
    const attempt = (): void => {
      const m = this.#pick(req, tried);
      if (!m) return void client.end(rawHead(503, 'Service Unavailable', ['Content-Length', '0', 'Connection', 'close']));
      tried.add(m);
      m.active++;
      m.total++;
      let connected = false;
      let settled = false;
      let upstream: Socket | undefined;
      const settle = (): void => {
        if (settled) return;
        settled = true;
        m.active--;
        m.cutters.delete(cut);
        this.#idle(m);
      };
      const cut = (): void => {
        up.destroy();
        upstream?.destroy();
        client.destroy();
        settle();
      };
      m.cutters.add(cut);
      const up = this.#open(m, req, true, () => (connected = true));
      up.end();
      client.once('close', () => {
        if (!upstream) up.destroy();
      });
      up.on('upgrade', (ur: IncomingMessage, us: Socket, uhead: Buffer) => {
        m.consecutive = 0;
        upstream = us;
        if (client.destroyed) {
          us.destroy();
          return settle();
        }
        client.write(rawHead(101, ur.statusMessage ?? 'Switching Protocols', responseHeaders(ur.rawHeaders, true)));
        if (uhead.length) client.write(uhead);
        if (head.length) us.write(head);
        us.on('error', () => client.destroy());
        us.pipe(client).pipe(us);
        us.once('close', () => {
          client.destroy();
          settle();
        });
        client.once('close', () => {
          us.destroy();
          settle();
        });
      });
      up.on('response', (ur: IncomingMessage) => {
        // The member refused the upgrade: relay its answer as a plain response, then close.
        m.consecutive = 0;
        client.write(rawHead(ur.statusCode ?? 502, ur.statusMessage ?? '', [...responseHeaders(ur.rawHeaders, false), 'Connection', 'close']));
        ur.pipe(client);
        ur.once('end', () => {
          client.end();
          settle();
        });
        ur.once('error', () => cut());
      });
      up.on('error', (err: NodeJS.ErrnoException) => {
        if (upstream || settled) return;
        settle();
        if (client.destroyed) return;
        const neverReached = !connected && isConnectError(err);
        if (neverReached) {
          this.#connectFailed(m, err);
          if (tried.size < MAX_ATTEMPTS) return attempt();
        } else m.failures++;
        client.end(rawHead(502, 'Bad Gateway', ['Content-Length', '0', 'Connection', 'close']));
      });
    };
    attempt();
  }

  async #probeAll(): Promise<void> {
    const hc = this.#opts.healthCheck;
    if (!hc || this.#probing || !this.#server) return;
    this.#probing = true;
    try {
      await Promise.all(
        [...this.#members.values()]
          .filter((m) => m.state !== 'maint')
          .map(async (m) => {
            const ok = await probe(m.host, m.port, hc.path, hc.timeoutMs);
            if (ok) {
              if (m.probeDown) this.#log.info({ member: m.id }, 'member passed its health check; back in rotation');
              m.probeFailures = 0;
              m.probeDown = false;
              m.ejectedUntil = 0;
              m.consecutive = 0;
            } else if (++m.probeFailures >= hc.failureThreshold && !m.probeDown) {
              m.probeDown = true;
              this.#log.warn({ member: m.id, failures: m.probeFailures }, 'member failed its health checks; out of rotation');
            }
          }),
      );
    } finally {
      this.#probing = false;
    }
  }
}

/** One health probe: HTTP GET `path` (2xx/3xx passes) or, without a path, a TCP connect. */
function probe(host: string, port: number, path: string | undefined, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      clearTimeout(timer);
      resolve(ok);
    };
    const timer = setTimeout(() => {
      target.destroy();
      done(false);
    }, timeoutMs);
    let target: { destroy(): void };
    if (path === undefined) {
      const s = net.connect({ host, port }, () => {
        s.destroy();
        done(true);
      });
      s.on('error', () => done(false));
      target = s;
    } else {
      const r = http.get({ host, port, path, agent: false, headers: { 'user-agent': 'drover-lb-health' } }, (res) => {
        res.resume();
        done((res.statusCode ?? 500) < 400);
      });
      r.on('error', () => done(false));
      target = r;
    }
  });
}
