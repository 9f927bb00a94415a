/**
 * The port keeper: one small process per fixed `listen:` port on a host. It holds the listening
 * socket and hands each connection to a serving member of the role (round robin), spliced to the
 * member's own auto port. Members come and go; the keeper stays, so a rolling replacement never
 * leaves the port without a listener and the kernel never refuses a connection:
 *
 *   new member serves → it joins the keeper → the old member drains: the keeper stops handing it
 *   connections, its in-flight ones finish, it stops. At every moment some member is in rotation.
 *
 * Agents talk to their keeper over a Unix socket next to it (`<ports-dir>/<port>.sock`, in a
 * 0700 folder), one JSON line per message:
 *   → {"app","role","instance","backend":"ip:port"}   ← {"ok":true} | {"ok":false,"error"}
 *   → {"serving":true|false}
 * A member is in rotation while its control connection is open and it says serving: an agent
 * killed with SIGKILL leaves rotation at once. A connection that arrives while no member serves
 * is held (up to `holdMs`) until one does. With no agent connected for `idleExitMs`, the keeper
 * closes the port and exits (after `drover down`, the port is free again shortly).
 *
 * Why a separate process: Node 20 cannot set SO_REUSEPORT (so two members cannot share the port),
 * and role processes are arbitrary programs; the agent of a member cannot hold the port either,
 * since it leaves with its member. The keeper is spawned by the first agent that needs it, in a
 * session of its own, and carries no instance's marker: destroying an instance does not end it.
 */
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';

export interface PortKeeperOptions {
  readonly ip: string;
  readonly port: number;
  readonly socketPath: string;
  /** Exit once no agent has been connected this long. @default 5000 */
  readonly idleExitMs?: number;
  /** How long a connection waits for a serving member before it is closed. @default 10000 */
  readonly holdMs?: number;
  readonly log?: (msg: string) => void;
}

interface Member {
  readonly id: number;
  readonly instance: string;
  readonly host: string;
  readonly port: number;
  serving: boolean;
  /** Connections to this member, for the status line and for `leastconn`-free fairness checks. */
  active: number;
}

/** One JSON line from an agent, bounded. */
const MAX_LINE = 4096;

export class PortKeeper {
  readonly #o: Required<Omit<PortKeeperOptions, 'log'>> & { log: (msg: string) => void };
  #tcp?: Server;
  #control?: Server;
  readonly #members = new Map<number, Member>();
  #nextId = 1;
  #rr = 0;
  #owner?: { app: string; role: string };
  #agents = 0;
  #idleTimer?: NodeJS.Timeout;
  readonly #held = new Set<{ socket: Socket; timer: NodeJS.Timeout }>();
  #closed = false;
  #onClosed?: () => void;
  /** Counters, for tests and the log. */
  readonly stats = { accepted: 0, dispatched: 0, held: 0, dropped: 0, retried: 0 };

  constructor(options: PortKeeperOptions) {
    this.#o = { idleExitMs: 5000, holdMs: 10_000, log: () => undefined, ...options };
  }

  /** Binds the port, then the control socket. Rejects with EADDRINUSE if the port is taken. */
  async start(): Promise<void> {
    const tcp = createServer({ pauseOnConnect: true }, (s) => this.#accept(s));
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', reject);
      tcp.listen({ host: this.#o.ip, port: this.#o.port, backlog: 1024 }, () => {
        tcp.off('error', reject);
        resolve();
      });
    });
    this.#tcp = tcp;
    mkdirSync(dirname(this.#o.socketPath), { recursive: true, mode: 0o700 });
    // We hold the TCP port, so no other keeper of it runs: a socket file left there is stale.
    rmSync(this.#o.socketPath, { force: true });
    const control = createServer((s) => this.#agent(s));
    await new Promise<void>((resolve, reject) => {
      control.once('error', reject);
      control.listen(this.#o.socketPath, () => {
        control.off('error', reject);
        resolve();
      });
    });
    chmodSync(this.#o.socketPath, 0o600);
    this.#control = control;
    this.#armIdle();
    this.#o.log(`keeping ${this.#o.ip}:${this.#o.port}`);
  }

  /** Resolves when the keeper has closed (idle, or {@link close}). */
  closed(): Promise<void> {
    return this.#closed ? Promise.resolve() : new Promise((r) => (this.#onClosed = r));
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#idleTimer);
    this.#tcp?.close();
    this.#control?.close();
    for (const h of this.#held) {
      clearTimeout(h.timer);
      h.socket.destroy();
    }
    this.#held.clear();
    rmSync(this.#o.socketPath, { force: true });
    this.#o.log(`closed ${this.#o.ip}:${this.#o.port}`);
    this.#onClosed?.();
  }

  members(): { instance: string; backend: string; serving: boolean; active: number }[] {
    return [...this.#members.values()].map((m) => ({ instance: m.instance, backend: `${m.host}:${m.port}`, serving: m.serving, active: m.active }));
  }

  #armIdle(): void {
    clearTimeout(this.#idleTimer);
    if (this.#agents > 0 || this.#closed) return;
    this.#idleTimer = setTimeout(() => {
      this.#o.log(`no agent for ${this.#o.idleExitMs} ms; releasing the port`);
      this.close();
    }, this.#o.idleExitMs);
  }

  // ---- agents --------------------------------------------------------------------------------

  #agent(s: Socket): void {
    this.#agents += 1;
    clearTimeout(this.#idleTimer);
    let member: Member | undefined;
    let buf = '';
    const reply = (o: unknown) => s.write(`${JSON.stringify(o)}\n`);
    s.setEncoding('utf8');
    s.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > MAX_LINE * 4) return void s.destroy();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.length > MAX_LINE) return void s.destroy();
        let msg: Record<string, unknown>;
        try {
          msg = JSON.parse(line) as Record<string, unknown>;
        } catch {
          return void s.destroy();
        }
        if (!member) {
          const r = this.#register(msg);
          if ('error' in r) {
            reply({ ok: false, error: r.error });
            s.end();
            return;
          }
          member = r.member;
          reply({ ok: true });
        } else if (typeof msg.serving === 'boolean') {
          member.serving = msg.serving;
          this.#o.log(`${member.instance} ${member.serving ? 'in rotation' : 'out of rotation'}`);
          if (member.serving) this.#release();
        }
      }
    });
    const gone = (): void => {
      if (member) {
        this.#members.delete(member.id);
        this.#o.log(`${member.instance} left`);
        member = undefined;
        if (this.#members.size === 0) this.#owner = undefined;
      }
      this.#agents -= 1;
      this.#armIdle();
    };
    s.once('close', gone);
    s.on('error', () => undefined);
  }

  #register(msg: Record<string, unknown>): { member: Member } | { error: string } {
    const text = (k: string) => (typeof msg[k] === 'string' && (msg[k]).length <= 256 ? (msg[k]) : undefined);
    const app = text('app');
    const role = text('role');
    const instance = text('instance');
    const backend = text('backend');
    const m = backend ? /^(.+):(\d{1,5})$/.exec(backend) : null;
    const port = m ? Number(m[2]) : NaN;
    if (!app || !role || !instance || !m || !(port >= 1 && port <= 65535)) return { error: 'expected app, role, instance and backend "ip:port"' };
    if (this.#owner && (this.#owner.app !== app || this.#owner.role !== role)) {
      return { error: `port ${this.#o.port} is held for role ${this.#owner.role} of app ${this.#owner.app}` };
    }
    this.#owner = { app, role };
    const member: Member = { id: this.#nextId++, instance, host: m[1]!, port, serving: false, active: 0 };
    this.#members.set(member.id, member);
    this.#o.log(`${instance} joined (${backend})`);
    return { member };
  }

  // ---- clients -------------------------------------------------------------------------------

  #accept(client: Socket): void {
    this.stats.accepted += 1;
    client.on('error', () => undefined);
    this.#dispatch(client, Date.now() + this.#o.holdMs, new Set());
  }

  #serving(tried: ReadonlySet<number>): Member | undefined {
    const list = [...this.#members.values()].filter((m) => m.serving && !tried.has(m.id));
    if (list.length === 0) return undefined;
    this.#rr = (this.#rr + 1) % list.length;
    return list[this.#rr];
  }

  /** Hands `client` to a serving member; with none (or none reachable), holds it until `deadline`. */
  #dispatch(client: Socket, deadline: number, tried: Set<number>): void {
    if (client.destroyed) return;
    const m = this.#serving(tried);
    if (!m) {
      const left = deadline - Date.now();
      if (left <= 0 || this.#closed) {
        this.stats.dropped += 1;
        client.destroy();
        return;
      }
      this.stats.held += 1;
      const h = {
        socket: client,
        timer: setTimeout(() => {
          this.#held.delete(h);
          // Members that refused may be back: try them all again.
          this.#dispatch(client, deadline, new Set());
        }, Math.min(left, 250)),
      };
      this.#held.add(h);
      return;
    }
    const upstream = connect({ host: m.host, port: m.port });
    upstream.setNoDelay(true);
    let connected = false;
    upstream.once('connect', () => {
      connected = true;
      m.active += 1;
      this.stats.dispatched += 1;
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
    upstream.on('error', () => {
      if (connected) client.destroy();
      else {
        // Nothing was sent yet (the client is paused): another member may take it.
        this.stats.retried += 1;
        tried.add(m.id);
        this.#dispatch(client, deadline, tried);
      }
    });
    upstream.once('close', () => {
      if (connected) {
        m.active -= 1;
        client.end();
      }
    });
    client.once('close', () => {
      if (connected) upstream.end();
    });
  }

  /** A member came into rotation: the held connections go to it now. */
  #release(): void {
    for (const h of [...this.#held]) {
      clearTimeout(h.timer);
      this.#held.delete(h);
      this.#dispatch(h.socket, Date.now() + this.#o.holdMs, new Set());
    }
  }
}
