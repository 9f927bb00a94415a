/**
 * Joined hosts: the controller's end of the node protocol (core/fleet.ts, docs/fleet.md) on the
 * WebSocket `/v1/node`, and the {@link NodeDirectory} the static provider places instances with.
 *
 * A join is a mutual proof on the join token (keyed by its stored sha256): the controller proves
 * itself first, the node second, and only then is a use of the token taken (one conditional
 * write) and the node's key minted, sent inside a box only the token's holder can open. A join
 * refused for any reason (unknown token, wrong proof, expired, used up, revoked) is logged with
 * the reason for the operator; the node is told only "refused".
 *
 * A node runs at most one instance at a time: it is a spare of the app's pool until the static
 * provider assigns it, and goes back to the pool when the instance is destroyed (agent and role
 * stopped, folder removed). A node out of reach is told on its return to stop whatever it still
 * runs that the store says is gone; the instance's agent itself is fenced by its epoch.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import websocket from '@fastify/websocket';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import {
  boxKey,
  boxSeal,
  checkJoinProof,
  chooseHost,
  controllerProof,
  joinProof,
  joinProofSchema,
  NODE_PROTOCOL,
  nodeHelloSchema,
  nodeMessageSchema,
  SealedChannel,
  type Clock,
  type HostCandidate,
  type NodeMessage,
  type NodeOrder,
  type NodePlainMessage,
} from '../core/index.js';
import type { CreateInstanceRequest, CreatedInstance, NodeDirectory } from '../adapters/providers/index.js';
import type { JoinTokenRecord, Store } from '../adapters/store/index.js';
import type { EventInput } from './context.js';

const MAX_MESSAGE_BYTES = 64 * 1024;
const HELLO_TIMEOUT_MS = 10_000;
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;
/** The answer to every refused join, whatever the reason: a guesser learns nothing. */
export const JOIN_REFUSED = 'refused';

interface NodeConn {
  readonly socket: WebSocket;
  readonly channel: SealedChannel;
  readonly startKey: Buffer;
  lastHeardAt: number;
  running: Map<string, { port: number; pid: number }>;
}

interface Waiter {
  resolve(m: NodeMessage): void;
}

export interface NodeRegistryOptions {
  readonly store: Store;
  readonly clock: Clock;
  readonly log: Logger;
  readonly heartbeatMs: number;
  readonly record: (ev: EventInput) => Promise<unknown>;
  /** Asks for a reconcile pass of the app (a node joined: a role may be waiting for a host). */
  readonly enqueue: (app: string) => void;
  /** This machine as a host for placement. @default host `os.hostname()`, labels `host=<it>`, `local=true` */
  readonly local?: { readonly host: string; readonly labels: Readonly<Record<string, string>> };
  /** Forgets a role's failures and reconciles it (`drover retry`): a host came that may fit it. */
  readonly retry?: (app: string, role: string) => Promise<unknown>;
  /**
   * A node joined with a token made for one instance (a cloud machine's user data,
   * controller/bootstrap.ts): it is to run that instance now. Called once per join, after the
   * node proved its key.
   */
  readonly bound?: (nodeId: string, instanceId: string) => void;
}

const LOCAL_HOST = { host: hostname(), labels: { host: hostname(), local: 'true' } };

/** No host fits a role's placement: the instance is not made (the message names each host seen and why). */
export class UnplaceableError extends Error {
  override readonly name = 'UnplaceableError';
}

/** Why a token does not let a node join now, or undefined if it does. */
export function tokenRefusal(t: JoinTokenRecord | undefined, now: number): string | undefined {
  if (!t) return 'unknown token';
  if (t.revokedAt !== null) return `token ${t.id} was revoked`;
  if (t.expiresAt !== null && t.expiresAt <= now) return `token ${t.id} expired`;
  if (t.maxUses !== null && t.uses >= t.maxUses) return `token ${t.id} is used up (${t.uses} of ${t.maxUses})`;
  return undefined;
}

export class NodeRegistry implements NodeDirectory {
  readonly #conns = new Map<string, NodeConn>();
  /** Instances placed on a node whose create has not finished (instance id → node id). */
  readonly #reserved = new Map<string, string>();
  readonly #waiters = new Map<string, Waiter>();
  readonly #timer: NodeJS.Timeout;
  readonly #seenWritten = new Map<string, number>();
  readonly #refusalsSeen = new Map<string, number>();
  /** Instances placed on this machine whose create has not been recorded yet (they count for spread). */
  readonly #reservedLocal = new Map<string, string>();
  readonly #unplaceableTold = new Map<string, { reason: string; at: number }>();

  constructor(private readonly o: NodeRegistryOptions) {
    this.#timer = setInterval(() => this.#sweep(), o.heartbeatMs);
    this.#timer.unref();
  }

  /** Mounts `/v1/node` (and the WebSocket plugin if the transport did not). */
  async register(app: FastifyInstance): Promise<void> {
    if (!app.hasDecorator('websocketServer')) await app.register(websocket, { options: { maxPayload: MAX_MESSAGE_BYTES } });
    app.get(
      '/v1/node',
      {
        websocket: true,
        schema: { hide: true },
        preValidation: async (req, reply) => {
          if (req.headers.origin !== undefined) await reply.code(403).send({ error: { code: 'forbidden', message: 'browsers may not connect to the node endpoint' } });
        },
      },
      (socket, req) => this.#accept(socket, req.socket.remoteAddress),
    );
  }

  close(): void {
    clearInterval(this.#timer);
    for (const c of this.#conns.values()) c.socket.close(1001, 'controller stopping');
    this.#conns.clear();
  }

  connected(nodeId: string): boolean {
    const c = this.#conns.get(nodeId);
    return c !== undefined && c.lastHeardAt >= Date.now() - (3 * this.o.heartbeatMs + 1000);
  }

  /** Instances a connected node reported running. */
  running(nodeId: string): string[] {
    return [...(this.#conns.get(nodeId)?.running.keys() ?? [])];
  }

  // --- NodeDirectory ------------------------------------------------------------------------

  /**
   * The host for a new instance of `role` (core/placement.ts `chooseHost`): a joined node's id, or
   * undefined for this machine (the fallback provider). Throws {@link UnplaceableError} when no
   * host fits the role's `placement` (labels, strict spread) — the instance is then not made, and
   * `role.unplaceable` says why (once per reason, then at most once a minute).
   */
  async reserve(app: string, role: string | null, instanceId: string): Promise<string | undefined> {
    const stored = await this.o.store.getApp(app);
    const spec = role !== null && stored && Object.hasOwn(stored.spec.roles, role) ? stored.spec.roles[role] : undefined;
    // A node made for one cloud instance is never a host of the pool.
    const nodes = (await this.o.store.listNodes({ app })).filter((n) => n.state === 'ready' && n.instanceId === null);
    const live = (await this.o.store.listInstances({ app })).filter((i) => i.destroyedAt === null);
    // From here on synchronous: two creates of one pass never take the same node.
    const busy = new Map<string, string>([...this.#reserved].map(([inst, node]) => [node, inst]));
    for (const i of live) {
      const n = i.providerRef?.node;
      if (typeof n === 'string') busy.set(n, i.id);
    }
    const local = this.o.local ?? LOCAL_HOST;
    const candidates: HostCandidate[] = nodes.map((n) => {
      const runs = busy.get(n.id) ?? this.running(n.id)[0];
      const unavailable = !this.connected(n.id) ? 'unreachable' : runs !== undefined ? `busy (runs ${runs})` : undefined;
      return { id: n.id, host: n.hostname, labels: n.labels, ...(unavailable !== undefined ? { unavailable } : {}) };
    });
    candidates.push({ id: 'local', host: local.host, labels: local.labels });
    const hostOfNode = new Map(nodes.map((n) => [n.id, n.hostname]));
    const membersOn = new Map<string, number>();
    const count = (host: string) => membersOn.set(host, (membersOn.get(host) ?? 0) + 1);
    for (const i of live) {
      if (i.role !== role || role === null || i.id === instanceId || i.goal === 'stop' || i.state === 'failed' || i.state === 'terminated') continue;
      const n = i.providerRef?.node ?? this.#reserved.get(i.id);
      if (typeof n === 'string') count(hostOfNode.get(n) ?? (typeof i.providerRef?.host === 'string' ? i.providerRef.host : n));
      else if (i.providerRef !== null || this.#reservedLocal.has(i.id)) count(local.host);
    }
    // Recorded with its provider reference (counted above from the store), or gone: forgotten here.
    for (const [id, of] of this.#reservedLocal) if (of === app && !live.some((i) => i.id === id && i.providerRef === null)) this.#reservedLocal.delete(id);
    const choice = chooseHost({ role, ...(spec?.placement ? { constraints: spec.placement } : {}), candidates, membersOn });
    if (!choice.ok) {
      this.#noteUnplaceable(app, role, choice.reason, spec?.placement ? { ...spec.placement } : null);
      throw new UnplaceableError(choice.reason);
    }
    if (role !== null) this.#unplaceableTold.delete(`${app}/${role}`);
    if (choice.host.id === 'local') {
      this.#reservedLocal.set(instanceId, app);
      return undefined;
    }
    this.#reserved.set(instanceId, choice.host.id);
    return choice.host.id;
  }

  /**
   * A host joined or came back: each role of the app that found no host is retried now (its
   * failed attempts forgotten, as `drover retry` does), rather than after its backoff or its
   * degraded mark runs out.
   */
  #hostsChanged(app: string): void {
    for (const key of [...this.#unplaceableTold.keys()]) {
      const [of, role] = key.split('/');
      if (of !== app || role === undefined || role === '*') continue;
      this.#unplaceableTold.delete(key);
      void this.o.retry?.(app, role).catch((err: unknown) => this.o.log.warn({ err, app, role }, 'retrying a role after a host came failed'));
    }
  }

  /** Why no host fit the role's placement at its last attempt; undefined once one did. */
  unplaceable(app: string, role: string): string | undefined {
    return this.#unplaceableTold.get(`${app}/${role}`)?.reason;
  }

  /** `role.unplaceable`, once per reason (the countdown-free gist), again at most once a minute. */
  #noteUnplaceable(app: string, role: string | null, reason: string, placement: Record<string, unknown> | null): void {
    const key = `${app}/${role ?? '*'}`;
    const told = this.#unplaceableTold.get(key);
    const now = Date.now();
    if (told && told.reason === reason && told.at > now - 60_000) return;
    this.#unplaceableTold.set(key, { reason, at: now });
    void this.o.record({ app, role, instance: null, kind: 'role.unplaceable', message: reason, data: { placement } }).catch(() => undefined);
  }

  /** Starts the instance a node joined for (its token was made for it): as {@link start}, the node taken for it. */
  async startBound(nodeId: string, req: CreateInstanceRequest): Promise<CreatedInstance> {
    this.#reserved.set(req.instanceId, nodeId);
    return this.start(nodeId, req);
  }

  /** A cloud machine's node whose machine is gone: it is gone too (never reconnected to, listed as gone). */
  async forget(nodeId: string): Promise<void> {
    for (const [inst, n] of this.#reserved) if (n === nodeId) this.#reserved.delete(inst);
    const c = this.#conns.get(nodeId);
    this.#conns.delete(nodeId);
    c?.socket.close(1000, 'machine destroyed');
    await this.o.store.updateNode(nodeId, { state: 'gone' });
  }

  async start(nodeId: string, req: CreateInstanceRequest): Promise<CreatedInstance> {
    const c = this.#conns.get(nodeId);
    const node = await this.o.store.getNode(nodeId);
    if (!c || !node) {
      this.#reserved.delete(req.instanceId);
      throw new Error(`node ${nodeId} is not connected`);
    }
    const box = boxSeal(c.startKey, { key: req.key, ...(req.transportUrl ? { transportUrl: req.transportUrl } : {}) }, `start|${req.instanceId}`);
    const answer = this.#await(req.instanceId, START_TIMEOUT_MS);
    // The node gives its agent the URL it joined with (the controller's own may be 0.0.0.0).
    this.#send(c, { type: 'start', instanceId: req.instanceId, epoch: req.epoch, controllerUrl: req.controllerUrl, box });
    const m = await answer;
    if (m.type !== 'started') {
      this.#reserved.delete(req.instanceId);
      throw new Error(`node ${nodeId} (${node.hostname}) could not start it: ${m.type === 'startFailed' ? m.reason : 'no answer'}`);
    }
    await this.o.record({
      app: req.app, role: req.role, instance: req.instanceId, kind: 'node.assigned',
      message: `${req.instanceId} (${req.role ?? 'spare'}) placed on node ${nodeId} (host ${node.hostname}, ${m.ip}:${m.port})`,
      data: { node: nodeId, host: node.hostname, ip: m.ip, port: m.port },
    });
    return { ip: m.ip, port: m.port, workdir: m.workdir, providerRef: { node: nodeId, host: node.hostname, pid: m.pid, port: m.port } };
  }

  async stop(nodeId: string, instanceId: string): Promise<void> {
    this.#reserved.delete(instanceId);
    const c = this.#conns.get(nodeId);
    const node = await this.o.store.getNode(nodeId);
    const release = (how: string) =>
      this.o.record({
        app: node?.app ?? null, role: null, instance: instanceId, kind: 'node.released',
        message: `node ${nodeId}${node ? ` (host ${node.hostname})` : ''}: ${instanceId} ${how}; the node is back in the pool`,
        data: { node: nodeId, host: node?.hostname ?? null },
      });
    // Out of reach: told when it is back (its report lists the instance, which is gone by then).
    if (!c || !this.connected(nodeId)) {
      await release('is stopped and its folder removed when the node is back in reach');
      return;
    }
    const answer = this.#await(instanceId, STOP_TIMEOUT_MS);
    this.#send(c, { type: 'stop', instanceId });
    const m = await answer;
    c.running.delete(instanceId);
    await release(m.type === 'stopped' ? 'stopped, its folder removed' : 'did not confirm its stop in time; it is stopped when the node next reports it');
  }

  runs(nodeId: string, instanceId: string): boolean {
    const c = this.#conns.get(nodeId);
    return !c || !this.connected(nodeId) || c.running.has(instanceId) || this.#reserved.has(instanceId);
  }

  // --- the protocol -------------------------------------------------------------------------

  #await(instanceId: string, ms: number): Promise<NodeMessage> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(instanceId);
        resolve({ type: 'startFailed', instanceId, reason: `no answer within ${ms / 1000}s` });
      }, ms);
      this.#waiters.set(instanceId, {
        resolve: (m) => {
          clearTimeout(timer);
          this.#waiters.delete(instanceId);
          resolve(m);
        },
      });
    });
  }

  #send(c: NodeConn, order: NodeOrder): void {
    if (c.socket.readyState === c.socket.OPEN) c.socket.send(c.channel.seal(order));
  }

  #sweep(): void {
    const oldest = Date.now() - (3 * this.o.heartbeatMs + 1000);
    for (const [id, c] of this.#conns) {
      if (c.lastHeardAt >= oldest) continue;
      this.#conns.delete(id);
      c.socket.close(4008, 'no heartbeat');
      this.o.log.warn({ node: id }, 'node silent for three heartbeats: out of reach');
    }
  }

  #refuseJoin(socket: WebSocket, reason: string, remote: string | undefined, tokenId: string | null): void {
    this.o.log.warn({ remote, tokenId }, `node join refused: ${reason}`);
    // One event per peer and kind of refusal a minute: a flood of bad joins cannot flood the event log.
    const key = `${remote ?? '-'}|${reason.replace(/[0-9a-f]{16}/g, '').replace(/\(.*\)/, '')}`;
    const now = Date.now();
    if ((this.#refusalsSeen.get(key) ?? -Infinity) > now - 60_000) return this.#sendRefused(socket);
    if (this.#refusalsSeen.size > 1000) this.#refusalsSeen.clear();
    this.#refusalsSeen.set(key, now);
    void this.o.record({ app: null, role: null, instance: null, kind: 'security.join', message: `node join${remote ? ` from ${remote}` : ''} refused: ${reason}`, data: { tokenId } })
      .catch(() => undefined);
    this.#sendRefused(socket);
  }

  #sendRefused(socket: WebSocket): void {
    const msg: NodePlainMessage = { type: 'refused', reason: JOIN_REFUSED };
    if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(msg));
    socket.close(4004, 'refused');
  }

  #accept(socket: WebSocket, remote: string | undefined): void {
    type Phase =
      | { kind: 'hello' }
      | { kind: 'joinProof'; token: JoinTokenRecord; nodeNonce: string; controllerNonce: string; hello: { addresses: string[]; labels: Record<string, string>; hostname: string } }
      | { kind: 'sealed'; nodeId: string; conn: NodeConn; first: boolean; boundTo?: string }
      | { kind: 'closed' };
    let phase: Phase = { kind: 'hello' };
    let chain = Promise.resolve();
    let queued = 0;
    const helloTimer = setTimeout(() => socket.close(4001, 'no hello'), HELLO_TIMEOUT_MS);
    const plain = (m: NodePlainMessage) => {
      if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(m));
    };
    const parse = (raw: string): unknown => {
      try {
        return JSON.parse(raw) as unknown;
      } catch {
        return undefined;
      }
    };
    const sealedPhase = (nodeId: string, key: string, nodeNonce: string, controllerNonce: string): Phase => ({
      kind: 'sealed', nodeId, first: true,
      conn: {
        socket, lastHeardAt: Date.now(), running: new Map(),
        channel: new SealedChannel('controller', { key, instanceId: nodeId, epoch: 0, agentNonce: nodeNonce, controllerNonce }),
        startKey: boxKey(key, nodeNonce, controllerNonce, 'start'),
      },
    });

    const handle = async (raw: string): Promise<void> => {
      const now = this.o.clock.now();
      if (phase.kind === 'hello') {
        clearTimeout(helloTimer);
        const h = nodeHelloSchema.safeParse(parse(raw));
        if (!h.success || h.data.protocol !== NODE_PROTOCOL) {
          phase = { kind: 'closed' };
          this.#refuseJoin(socket, h.success ? `protocol ${h.data.protocol} is not spoken here` : 'malformed hello', remote, null);
          return;
        }
        const controllerNonce = randomBytes(32).toString('base64url');
        if (h.data.type === 'nodeJoin') {
          const token = await this.o.store.getJoinToken(h.data.tokenId);
          const why = tokenRefusal(token, now);
          if (why || !token) {
            phase = { kind: 'closed' };
            this.#refuseJoin(socket, why ?? 'unknown token', remote, h.data.tokenId);
            return;
          }
          const params = { hash: token.hash, tokenId: token.id, nodeNonce: h.data.nonce, controllerNonce };
          phase = { kind: 'joinProof', token, nodeNonce: h.data.nonce, controllerNonce, hello: { addresses: h.data.addresses, labels: h.data.labels, hostname: h.data.hostname } };
          plain({ type: 'joinChallenge', nonce: controllerNonce, proof: joinProof('controller', params) });
          return;
        }
        const node = await this.o.store.getNode(h.data.nodeId);
        if (!node || node.state !== 'ready') {
          phase = { kind: 'closed' };
          this.#refuseJoin(socket, node ? `node ${node.id} is ${node.state}` : `unknown node ${h.data.nodeId}`, remote, null);
          return;
        }
        // The addresses it claims count only once it has proved its key (its first sealed report carries them).
        phase = sealedPhase(node.id, node.nodeKey, h.data.nonce, controllerNonce);
        plain({ type: 'challenge', nonce: controllerNonce, proof: controllerProof({ key: node.nodeKey, instanceId: node.id, epoch: 0, agentNonce: h.data.nonce, controllerNonce }) });
        return;
      }
      if (phase.kind === 'joinProof') {
        const p = joinProofSchema.safeParse(parse(raw));
        const { token, nodeNonce, controllerNonce, hello } = phase;
        const params = { hash: token.hash, tokenId: token.id, nodeNonce, controllerNonce };
        phase = { kind: 'closed' };
        if (!p.success || !checkJoinProof('node', params, p.data.proof)) {
          this.#refuseJoin(socket, `wrong token for id ${token.id} (the proof failed)`, remote, token.id);
          return;
        }
        if (token.instanceId !== null) {
          // A cloud machine's token: its instance must still be waiting for it (not scaled in, failed or taken).
          const inst = await this.o.store.getInstance(token.instanceId);
          const why = !inst || inst.destroyedAt !== null ? 'is gone' : inst.state !== 'provisioning' ? `is ${inst.state}` : typeof inst.providerRef?.node === 'string' ? 'runs on a node already' : undefined;
          if (why) {
            this.#refuseJoin(socket, `token ${token.id} was made for instance ${token.instanceId}, which ${why}`, remote, token.id);
            return;
          }
        }
        if (!(await this.o.store.useJoinToken(token.id, this.o.clock.now()))) {
          this.#refuseJoin(socket, tokenRefusal(await this.o.store.getJoinToken(token.id), this.o.clock.now()) ?? `token ${token.id} could not be used`, remote, token.id);
          return;
        }
        const nodeId = `n-${randomBytes(6).toString('hex')}`;
        const key = randomBytes(32).toString('base64url');
        const labels = { ...(token.labels ?? {}), ...hello.labels };
        await this.o.store.insertNode({
          id: nodeId, app: token.app, tokenId: token.id, hostname: hello.hostname, addresses: hello.addresses, labels, nodeKey: key, state: 'ready', joinedAt: now, lastSeenAt: now,
          instanceId: token.instanceId,
        });
        plain({ type: 'joinWelcome', box: boxSeal(boxKey(token.hash, nodeNonce, controllerNonce, 'join'), { nodeId, key }, `join|${token.id}`) });
        phase = { ...sealedPhase(nodeId, key, nodeNonce, controllerNonce), ...(token.instanceId !== null ? { boundTo: token.instanceId } : {}) };
        await this.o.record({
          app: token.app, role: null, instance: token.instanceId, kind: 'node.joined',
          message: token.instanceId !== null
            ? `node ${nodeId} (${hello.hostname}, ${hello.addresses.join(', ')}) joined with token ${token.id}, made for instance ${token.instanceId}: it runs that instance`
            : `node ${nodeId} (${hello.hostname}, ${hello.addresses.join(', ')}) joined the pool of ${token.app} with token ${token.id}${Object.keys(labels).length ? `; labels ${Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(',')}` : ''}`,
          data: { node: nodeId, hostname: hello.hostname, addresses: hello.addresses, labels, tokenId: token.id, instance: token.instanceId },
        });
        return;
      }
      if (phase.kind !== 'sealed') return;
      const s = phase;
      const opened = s.conn.channel.open(raw);
      const m = opened.ok ? nodeMessageSchema.safeParse(opened.message) : undefined;
      if (!m?.success) {
        phase = { kind: 'closed' };
        this.o.log.warn({ node: s.nodeId, remote, error: opened.ok ? 'malformed' : opened.error }, s.first ? 'node failed to prove its key' : 'node sent a frame that is not authentic or not well formed');
        socket.close(4006, 'bad frame');
        return;
      }
      s.conn.lastHeardAt = Date.now();
      if (s.first) {
        s.first = false;
        const prev = this.#conns.get(s.nodeId);
        if (prev && prev.socket !== socket) prev.socket.close(4005, 'replaced by a newer connection');
        this.#conns.set(s.nodeId, s.conn);
        this.#send(s.conn, { type: 'welcome', heartbeatMs: this.o.heartbeatMs });
        this.o.log.info({ node: s.nodeId, remote }, 'node connected');
        const node = await this.o.store.getNode(s.nodeId);
        if (node && m.data.type === 'report' && JSON.stringify(node.addresses) !== JSON.stringify(m.data.addresses)) {
          await this.o.store.updateNode(node.id, { addresses: m.data.addresses });
        }
        if (node && node.instanceId === null) {
          this.#hostsChanged(node.app);
          this.o.enqueue(node.app);
        }
        if (s.boundTo !== undefined) this.o.bound?.(s.nodeId, s.boundTo);
      }
      await this.#onMessage(s.nodeId, s.conn, m.data);
    };

    socket.on('message', (raw: Buffer) => {
      if (phase.kind === 'closed') return;
      if (++queued > 64) {
        phase = { kind: 'closed' };
        socket.close(4007, 'too many messages');
        return;
      }
      const text = raw.toString('utf8');
      chain = chain
        .then(() => handle(text))
        .catch((err: unknown) => {
          this.o.log.warn({ err, remote }, 'handling a node message failed');
          phase = { kind: 'closed' };
          socket.close(1011, 'internal error');
        })
        .finally(() => {
          queued -= 1;
        });
    });
    socket.on('close', () => {
      clearTimeout(helloTimer);
      // A node whose token is wrong cannot check our proof, and leaves without proving itself.
      if (phase.kind === 'joinProof') this.#refuseJoin(socket, `wrong token for id ${phase.token.id} (the node could not check the controller's proof, and left)`, remote, phase.token.id);
      if (phase.kind === 'sealed' && this.#conns.get(phase.nodeId)?.socket === socket) this.#conns.delete(phase.nodeId);
      phase = { kind: 'closed' };
    });
    socket.on('error', () => socket.terminate());
  }

  async #onMessage(nodeId: string, c: NodeConn, m: NodeMessage): Promise<void> {
    switch (m.type) {
      case 'report': {
        c.running = new Map(m.instances.map((i) => [i.id, { port: i.port, pid: i.pid }]));
        const now = this.o.clock.now();
        if ((this.#seenWritten.get(nodeId) ?? 0) < now - 10_000) {
          this.#seenWritten.set(nodeId, now);
          await this.o.store.updateNode(nodeId, { lastSeenAt: now, addresses: m.addresses });
        }
        // Whatever the node runs that the store says is gone (destroyed while it was out of
        // reach, or never recorded) is stopped now.
        for (const i of m.instances) {
          if (this.#reserved.has(i.id) || this.#waiters.has(i.id)) continue;
          const inst = await this.o.store.getInstance(i.id);
          if (!inst || inst.destroyedAt !== null || inst.providerRef?.node !== nodeId) {
            this.o.log.info({ node: nodeId, instance: i.id }, 'node still runs an instance that is gone; stopping it');
            this.#send(c, { type: 'stop', instanceId: i.id });
          }
        }
        return;
      }
      case 'started':
      case 'startFailed':
      case 'stopped':
        // Only answers to what this controller asked: a node cannot make up instances.
        if (!this.#waiters.has(m.instanceId)) return;
        this.#waiters.get(m.instanceId)?.resolve(m);
        if (m.type === 'started') c.running.set(m.instanceId, { port: m.port, pid: m.pid });
        if (m.type === 'stopped') c.running.delete(m.instanceId);
        return;
    }
  }
}
