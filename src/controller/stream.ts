/**
 * `GET /v1/stream`: the dashboard's one live feed, as server-sent events.
 *
 * One hub per API serves every client. It coalesces: stored events are read from the store at
 * most every {@link StreamOptions.tickMs} (250 ms) and sent as one `events` frame; the state
 * (roles, instances, balancers) is recomputed at most every {@link StreamOptions.stateMs} when an
 * event says it changed, and every {@link StreamOptions.refreshMs} anyway (vitals come with
 * heartbeats, not events); only what changed is sent. Each frame is serialised once for all
 * clients.
 *
 * Resume: `events` frames carry the id of their last stored event as the SSE id. A client that
 * reconnects with `Last-Event-ID` (browsers do it by themselves) gets the events after it from the
 * store, then the whole current state: state is level-triggered, so nothing else needs replaying.
 *
 * Memory per client is bounded: a client that has more than {@link StreamOptions.maxBufferedBytes}
 * unsent is disconnected (it reconnects and resumes) rather than buffered for.
 *
 * Frame types (`event:` field), each `data:` one JSON object — docs/api.md, "The live stream":
 * hello, events, roles, instances, balancers, samples, history.
 */
import type { ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { SCALING_EVENT_KINDS, type BalancerStatus } from '../core/index.js';
import type { EventRecord } from '../adapters/store/index.js';
import type { Controller, InstanceView } from './controller.js';
import { ApiError } from './errors.js';

export interface StreamOptions {
  /** How often new events are looked for and sent. @default 250 */
  readonly tickMs: number;
  /** Least time between two state computations prompted by events. @default 500 */
  readonly stateMs: number;
  /** The state is recomputed this often even without events (vitals, balancer counters). @default 2000 */
  readonly refreshMs: number;
  /** One sample of every role's counts and scaling metric per this. @default 5000 */
  readonly sampleMs: number;
  /** How long samples and scaling decisions are kept for charts. @default 3600000 (1 hour) */
  readonly historyMs: number;
  /** A client with more than this unsent is dropped. @default 4 MiB */
  readonly maxBufferedBytes: number;
  /** At most this many streams at once; more are refused with 503. @default 64 */
  readonly maxClients: number;
  /** Events sent to a new client (without Last-Event-ID), and at most per resume. @default 300 */
  readonly backlog: number;
}

export const DEFAULT_STREAM_OPTIONS: StreamOptions = {
  tickMs: 250,
  stateMs: 500,
  refreshMs: 2000,
  sampleMs: 5000,
  historyMs: 3_600_000,
  maxBufferedBytes: 4 << 20,
  maxClients: 64,
  backlog: 300,
};

/** A role as the dashboard shows it: the API's role, without its instances. */
export type StreamRole = Record<string, unknown> & { readonly name: string; readonly desired: number; readonly live: number; readonly serving: number };

/** What the stream reads, beyond the controller: the API's own views of apps and roles. */
export interface StreamSource {
  readonly controller: Controller;
  readonly version: string;
  /** Apps as `GET /v1/apps` shows them (without the spec). */
  apps(): Promise<Record<string, unknown>[]>;
  /** Roles of an app as `GET /v1/apps/{name}/roles` shows them. */
  roles(app: string): Promise<StreamRole[]>;
  /** A tick that failed (it is retried at the next one). */
  onError(err: unknown): void;
}

/** One instance row of the dashboard: what changes, compact (vitals reduced to what is shown). */
export interface StreamInstance {
  readonly id: string;
  readonly app: string;
  readonly role: string | null;
  readonly pool: string | null;
  readonly state: string;
  readonly goal: string;
  readonly host: string;
  readonly address: string | null;
  readonly createdAt: number;
  readonly startedAt: number | null;
  readonly stateSince: number;
  readonly restarts: number;
  readonly message: string | null;
  readonly connected: boolean;
  /** Role CPU in cores, 2 decimals; null without vitals. */
  readonly cpu: number | null;
  /** Established connections to the role's port (in-flight work). */
  readonly connections: number | null;
}

export interface StreamBalancer extends BalancerStatus {
  readonly instance: string;
  readonly app: string;
  readonly role: string | null;
}

/** One point of a role's chart. */
export interface RoleSample {
  readonly t: number;
  readonly desired: number;
  readonly live: number;
  readonly serving: number;
  /** The role's scaling metric (its first policy's; `cpu` without one): mean over instances of the last 15 s. */
  readonly metric: number | null;
}

interface Client {
  readonly res: ServerResponse;
}

const round2 = (x: number) => Math.round(x * 100) / 100;

export function streamInstance(i: InstanceView): StreamInstance {
  return {
    id: i.id,
    app: i.app,
    role: i.role,
    pool: i.pool,
    state: i.state,
    goal: i.goal,
    host: i.ip,
    address: i.port ? `${i.ip}:${i.port}` : null,
    createdAt: i.createdAt,
    startedAt: i.startedAt,
    stateSince: i.stateSince,
    restarts: i.restarts,
    message: i.message,
    connected: i.connected,
    cpu: i.vitals?.role ? round2(i.vitals.role.cpu) : null,
    connections: i.vitals?.role?.connections ?? null,
  };
}

function frame(type: string, data: unknown, id?: number): string {
  return `event: ${type}\n${id !== undefined ? `id: ${id}\n` : ''}data: ${JSON.stringify(data)}\n\n`;
}

/** Serves `/v1/stream`; one per API. */
export class StreamHub {
  readonly o: StreamOptions;
  private readonly clients = new Set<Client>();
  private readonly c: Controller;
  /** Last stored event id sent to everyone. */
  private cursor = 0;
  private eventsDue = false;
  private stateDue = true;
  private lastStateAt = 0;
  private lastSampleAt = 0;
  private timer: NodeJS.Timeout | undefined;
  /** Ticks and new clients take turns: a client's opening frames and the broadcasts never interleave. */
  private turn: Promise<unknown> = Promise.resolve();
  private closed = false;
  private started = false;
  /** The last state sent, serialised per item, to send only what changed. */
  private instances = new Map<string, { json: string; value: StreamInstance }>();
  private roles = new Map<string, string>();
  private rolesValue = new Map<string, StreamRole[]>();
  private apps: Record<string, unknown>[] = [];
  private appsJson = '';
  private balancers = new Map<string, { json: string; value: StreamBalancer }>();
  /** Per `app/role`: samples of the last hour. */
  private readonly samples = new Map<string, RoleSample[]>();
  /** Scaling events of the last hour, for the charts' marks. */
  private decisions: ReturnType<typeof streamEvent>[] = [];
  private readonly onEvent = (e: EventRecord) => {
    this.eventsDue = true;
    if (e.kind !== 'instance.log') this.stateDue = true;
  };

  constructor(
    private readonly src: StreamSource,
    opts: Partial<StreamOptions> = {},
  ) {
    this.o = { ...DEFAULT_STREAM_OPTIONS, ...opts };
    this.c = src.controller;
  }

  /**
   * Starts the hub in the background, after the API is ready: a controller's start does not
   * wait for it (it reads the store, which may still be opening, and its reads would queue
   * before the first apply's). The first stream opened starts it if it has not started yet,
   * or failed to.
   */
  begin(): Promise<void> {
    return this.exclusive(() => this.start());
  }

  /** Starts sampling (charts cover the time before anyone looks) and listening for events; once. */
  async start(): Promise<void> {
    if (this.started || this.closed) return;
    const last = await this.c.listEvents({ after: 0, limit: 1 });
    // The newest id: events are listed oldest first, so read the tail.
    this.cursor = await this.newestEventId(last[0]?.id ?? 0);
    const recent = await this.c.listEvents({ after: Math.max(0, this.cursor - 2000), limit: 1000 });
    const since = Date.now() - this.o.historyMs;
    this.decisions = recent.filter((e) => SCALING_EVENT_KINDS.includes(e.kind) && e.at >= since).map(streamEvent);
    this.c.events.off('event', this.onEvent);
    this.c.events.on('event', this.onEvent);
    this.lastStateAt = Date.now();
    await this.refreshState(false);
    this.started = true;
    this.schedule();
  }

  private async newestEventId(from: number): Promise<number> {
    let id = from;
    for (;;) {
      const more = await this.c.listEvents({ after: id, limit: 1000 });
      if (more.length === 0) return id;
      id = more[more.length - 1]!.id;
    }
  }

  close(): void {
    this.closed = true;
    this.c.events.off('event', this.onEvent);
    if (this.timer) clearTimeout(this.timer);
    for (const cl of this.clients) cl.res.end();
    this.clients.clear();
  }

  get clientCount(): number {
    return this.clients.size;
  }

  private schedule(): void {
    if (this.closed) return;
    this.timer = setTimeout(() => {
      void this.tick()
        .catch((err: unknown) => this.src.onError(err))
        .finally(() => this.schedule());
    }, this.o.tickMs);
    this.timer.unref();
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.turn.then(fn, fn);
    this.turn = run.catch(() => undefined);
    return run;
  }

  /** One coalescing step: new events, then the state if due, then a sample if due. */
  tick(): Promise<void> {
    return this.exclusive(() => this.step());
  }

  private async step(): Promise<void> {
    {
      const now = Date.now();
      if (this.eventsDue) {
        this.eventsDue = false;
        const evs = await this.c.listEvents({ after: this.cursor, limit: 500 });
        if (evs.length === 500) this.eventsDue = true;
        if (evs.length > 0) {
          this.cursor = evs[evs.length - 1]!.id;
          const out = evs.map(streamEvent);
          this.noteDecisions(out, now);
          this.broadcast(frame('events', { events: out }, this.cursor));
        }
      }
      const due = (this.stateDue && now - this.lastStateAt >= this.o.stateMs) || now - this.lastStateAt >= this.o.refreshMs;
      if (due) {
        this.stateDue = false;
        this.lastStateAt = now;
        await this.refreshState(true);
      }
      if (now - this.lastSampleAt >= this.o.sampleMs) {
        this.lastSampleAt = now;
        this.sample(now);
      }
    }
  }

  private noteDecisions(evs: ReturnType<typeof streamEvent>[], now: number): void {
    const since = now - this.o.historyMs;
    const add = evs.filter((e) => SCALING_EVENT_KINDS.includes(e.kind));
    if (add.length === 0 && (this.decisions[0]?.atMs ?? now) >= since) return;
    this.decisions = [...this.decisions, ...add].filter((e) => e.atMs >= since).slice(-1000);
  }

  /** Reads the state, and (when `send`) sends each part that changed. */
  private async refreshState(send: boolean): Promise<void> {
    const apps = await this.src.apps();
    const appsJson = JSON.stringify(apps);
    if (appsJson !== this.appsJson) {
      this.apps = apps;
      this.appsJson = appsJson;
      if (send) this.broadcast(frame('apps', { apps }));
    }
    const names = apps.map((a) => String(a.name));
    for (const name of names) {
      const roles = await this.src.roles(name).catch(() => undefined);
      if (!roles) continue;
      const json = JSON.stringify(roles);
      if (this.roles.get(name) !== json) {
        this.roles.set(name, json);
        this.rolesValue.set(name, roles);
        if (send) this.broadcast(frame('roles', { app: name, roles }));
      }
    }
    for (const gone of [...this.roles.keys()].filter((n) => !names.includes(n))) {
      this.roles.delete(gone);
      this.rolesValue.delete(gone);
      if (send) this.broadcast(frame('roles', { app: gone, roles: [] }));
    }
    const list = await this.c.listInstances();
    const upsert: StreamInstance[] = [];
    const seen = new Set<string>();
    const balancers: StreamBalancer[] = [];
    for (const i of list) {
      seen.add(i.id);
      const value = streamInstance(i);
      const json = JSON.stringify(value);
      if (this.instances.get(i.id)?.json !== json) {
        this.instances.set(i.id, { json, value });
        upsert.push(value);
      }
      if (i.balancer) balancers.push({ instance: i.id, app: i.app, role: i.role, ...i.balancer });
    }
    const remove = [...this.instances.keys()].filter((id) => !seen.has(id));
    for (const id of remove) this.instances.delete(id);
    if (send && (upsert.length > 0 || remove.length > 0)) this.broadcast(frame('instances', { upsert, remove }));
    const bSeen = new Set<string>();
    let bChanged = false;
    for (const b of balancers) {
      bSeen.add(b.instance);
      const json = JSON.stringify(b);
      if (this.balancers.get(b.instance)?.json !== json) {
        this.balancers.set(b.instance, { json, value: b });
        bChanged = true;
      }
    }
    for (const id of [...this.balancers.keys()]) {
      if (!bSeen.has(id)) {
        this.balancers.delete(id);
        bChanged = true;
      }
    }
    if (send && bChanged) this.broadcast(frame('balancers', { balancers: [...this.balancers.values()].map((b) => b.value) }));
  }

  /** One chart point per role, from the state last read. */
  private sample(now: number): void {
    const since = now - this.o.historyMs;
    const point: Record<string, RoleSample> = {};
    for (const [app, roles] of this.rolesValue) {
      for (const r of roles) {
        const key = `${app}/${r.name}`;
        const s: RoleSample = { t: now, desired: r.desired, live: r.live, serving: r.serving, metric: this.metricOf(app, r) };
        point[key] = s;
        const list = this.samples.get(key) ?? [];
        list.push(s);
        while (list.length > 0 && list[0]!.t < since) list.shift();
        this.samples.set(key, list);
      }
    }
    for (const key of [...this.samples.keys()]) if (!Object.hasOwn(point, key)) this.samples.delete(key);
    this.broadcast(frame('samples', { t: now, roles: point }));
  }

  private metricOf(app: string, r: StreamRole): number | null {
    const metric = typeof r.metric === 'string' ? r.metric : 'cpu';
    const now = Date.now();
    const w = this.c.metricStore.window(`${app}/${r.name}`, metric, now - 15_000, now);
    if (w.length === 0) return null;
    // The latest value of each series (instance), then their mean: the role's value now.
    const latest = new Map<string | undefined, number>();
    for (const s of w) latest.set(s.instance, s.value);
    let sum = 0;
    for (const v of latest.values()) sum += v;
    return Math.round((sum / latest.size) * 1000) / 1000;
  }

  /** Takes over a response: writes the SSE headers and the opening frames, then keeps it for broadcasts. */
  attach(res: ServerResponse, lastEventId: number | undefined): Promise<'ok' | 'busy'> {
    return this.exclusive(() => this.open(res, lastEventId));
  }

  private async open(res: ServerResponse, lastEventId: number | undefined): Promise<'ok' | 'busy'> {
    if (this.clients.size >= this.o.maxClients) return 'busy';
    await this.start();
    // Events already stored but not broadcast yet, and a state an event made stale, go out to
    // everyone first: then this client's opening frames are as new as anyone's.
    await this.step();
    if (this.stateDue) {
      this.stateDue = false;
      this.lastStateAt = Date.now();
      await this.refreshState(true);
    }
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      'x-accel-buffering': 'no',
      connection: 'keep-alive',
    });
    // Tells the browser how long to wait before reconnecting after a drop.
    res.write('retry: 1000\n\n');
    const client: Client = { res };
    const c = this.c;
    // No broadcast runs meanwhile (exclusive): the replay up to the cursor, then the live
    // frames, miss nothing and repeat nothing.
    const replay = await c.listEvents({ after: lastEventId ?? Math.max(0, this.cursor - this.o.backlog), limit: this.o.backlog });
    // Events the hub has not broadcast yet come with the next `events` frame; the replay stops at the cursor.
    const upTo = replay.filter((e) => e.id <= this.cursor);
    const truncated = lastEventId !== undefined && upTo.length === this.o.backlog && (upTo[upTo.length - 1]?.id ?? 0) < this.cursor;
    const head = [
      frame('hello', { version: this.src.version, startedAt: c.startedAt, serverTime: Date.now(), resumed: lastEventId !== undefined, tickMs: this.o.tickMs }),
      frame('events', { events: upTo.map(streamEvent), initial: lastEventId === undefined, truncated }, Math.max(this.cursor, lastEventId ?? 0)),
      frame('apps', { apps: this.apps }),
      ...[...this.rolesValue].map(([app, roles]) => frame('roles', { app, roles })),
      frame('instances', { upsert: [...this.instances.values()].map((x) => x.value), remove: [], reset: true }),
      frame('balancers', { balancers: [...this.balancers.values()].map((b) => b.value) }),
      frame('history', { samples: Object.fromEntries(this.samples), decisions: this.decisions, historyMs: this.o.historyMs }),
    ];
    if (res.destroyed) return 'ok';
    res.write(head.join(''));
    this.clients.add(client);
    const ping = setInterval(() => this.write(client, ': ping\n\n'), 15_000);
    ping.unref();
    res.on('close', () => {
      clearInterval(ping);
      this.clients.delete(client);
    });
    return 'ok';
  }

  private broadcast(text: string): void {
    for (const cl of this.clients) this.write(cl, text);
  }

  private write(cl: Client, text: string): void {
    if (cl.res.destroyed) return;
    // A client that does not read is dropped, not buffered for: it resumes with Last-Event-ID.
    if (cl.res.writableLength + text.length > this.o.maxBufferedBytes) {
      this.clients.delete(cl);
      cl.res.destroy();
      return;
    }
    cl.res.write(text);
  }
}

/** An event as the stream and `GET /v1/events` show it, with its time also in ms for charts. */
export function streamEvent(e: EventRecord) {
  return { ...e, at: new Date(e.at).toISOString(), atMs: e.at };
}

/** How long after the API is ready the hub starts by itself (without a stream opened first). */
const START_DELAY_MS = 2000;

/** Registers `GET /v1/stream` on the API; the hub lives as long as the server. */
export function registerStream(app: FastifyInstance, src: StreamSource, opts: Partial<StreamOptions> = {}): StreamHub {
  const hub = new StreamHub(src, opts);
  app.addHook('onReady', async () => {
    // Not on the way of a start's first apply, which shares the store with it: a little later,
    // or with the first stream opened.
    setTimeout(() => {
      hub.begin().catch((err: unknown) => app.log.error({ err }, 'the live stream could not start; the first stream opened tries again'));
    }, START_DELAY_MS).unref();
  });
  app.addHook('preClose', async () => hub.close());
  app.get<{ Querystring: { lastEventId?: string } }>(
    '/v1/stream',
    {
      schema: {
        tags: ['events'],
        summary: 'Server-sent events: state changes, decisions, metric samples and balancer members, live (docs/api.md, "The live stream")',
        querystring: { type: 'object', additionalProperties: false, properties: { lastEventId: { type: 'string', pattern: '^[0-9]{1,15}$' } } },
      },
    },
    async (req, reply) => {
      const header = req.headers['last-event-id'];
      const text = typeof header === 'string' && /^[0-9]{1,15}$/.test(header) ? header : req.query.lastEventId;
      const last = text !== undefined ? Number(text) : undefined;
      reply.hijack();
      let r: 'ok' | 'busy';
      try {
        r = await hub.attach(reply.raw, last);
      } catch (err) {
        // Fastify no longer answers for a hijacked reply: said here, in the API's error format.
        req.log.error({ err }, 'opening a live stream failed');
        if (reply.raw.headersSent) reply.raw.end();
        else {
          reply.raw.writeHead(500, { 'content-type': 'application/json; charset=utf-8' });
          reply.raw.end(JSON.stringify(new ApiError('internal', 'stream: the controller could not open the stream; try again').body()));
        }
        return;
      }
      if (r === 'busy') {
        reply.raw.writeHead(503, { 'content-type': 'application/json; charset=utf-8', 'retry-after': '5' });
        reply.raw.end(JSON.stringify(new ApiError('busy', `stream: ${hub.o.maxClients} live streams are open already; try again shortly`).body()));
      }
    },
  );
  return hub;
}
