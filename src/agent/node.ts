/**
 * A joined host (`drover agent --join URL --token T`): it joins an app's pool with a join token
 * (core/fleet.ts), then waits as a spare until the controller asks it to start an instance's
 * agent, which it runs like the local provider does (its own process group, the key on stdin,
 * a port on this host's address), and stops (folder removed) when the controller says so.
 *
 * The join token is used once, at the join; afterwards the node proves itself with the key the
 * controller minted for it, which it keeps in memory only (a restarted node joins again).
 * Nothing is obeyed from a peer that has not proved it holds the token or the node's key.
 */
import { hostname as osHostname, networkInterfaces } from 'node:os';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import WebSocket from 'ws';
import {
  boxKey,
  boxOpen,
  checkControllerProof,
  checkJoinProof,
  joinBoxSchema,
  joinProof,
  joinTokenId,
  NODE_PROTOCOL,
  nodeOrderSchema,
  nodePlainSchema,
  SealedChannel,
  startBoxSchema,
  tokenHash,
  type NodeMessage,
  type NodeOrder,
} from '../core/index.js';
import { LocalProvider, type CreatedInstance } from '../adapters/providers/index.js';
import { Backoff } from './transport.js';

export interface NodeAgentOptions {
  /** The controller's URL, e.g. `http://10.231.7.1:7420`; its agents reach it there too. */
  readonly url: string;
  /** The join token (`drj.…`). */
  readonly token: string;
  readonly labels: Readonly<Record<string, string>>;
  /** Where instance folders go (`<dataDir>/instances/<id>`). */
  readonly dataDir: string;
  /** This host's addresses; the first is used for instances. @default every non-loopback address */
  readonly addresses?: readonly string[];
  readonly hostname?: string;
  readonly logger: Logger;
  /** Extra environment for instance agents (tests shorten timings). */
  readonly agentEnv?: Readonly<Record<string, string>>;
}

export interface NodeExit {
  readonly reason: 'refused' | 'closed';
  readonly message: string;
}

/** Non-loopback addresses of this host, IPv4 first. */
export function hostAddresses(): string[] {
  const v4: string[] = [];
  const v6: string[] = [];
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      if (a.internal) continue;
      if (a.family === 'IPv4') v4.push(a.address);
      else if (!a.address.startsWith('fe80')) v6.push(a.address);
    }
  }
  return [...v4, ...v6].slice(0, 16);
}

/** What a node says for every refusal: it cannot tell (and is not told) which reason it was. */
export const NODE_REFUSED = 'refused by the controller (a wrong, expired, used-up or revoked join token, or a removed node)';
/** A join whose controller fails its proof this many times in a row gives up: the token is wrong, or the peer is not the controller. */
const MAX_BAD_JOIN_PROOFS = 3;

export class NodeAgent {
  readonly #o: NodeAgentOptions;
  readonly #addresses: string[];
  readonly #provider: LocalProvider;
  readonly #instances = new Map<string, CreatedInstance>();
  readonly #backoff = new Backoff(250, 2000);
  #node?: { id: string; key: string };
  #badJoinProofs = 0;
  #ws?: WebSocket;
  #closed = false;
  #done!: (e: NodeExit) => void;
  readonly #exit = new Promise<NodeExit>((resolve) => {
    this.#done = resolve;
  });

  constructor(o: NodeAgentOptions) {
    this.#o = o;
    this.#addresses = [...(o.addresses ?? hostAddresses())];
    if (this.#addresses.length === 0) throw new Error('this host has no address other than loopback; give one with --address');
    if (!joinTokenId(o.token)) throw new Error('the join token is not one (drj.<id>.<secret>)');
    this.#provider = new LocalProvider({ baseDir: join(o.dataDir, 'instances'), ip: this.#addresses[0]!, ...(o.agentEnv ? { env: o.agentEnv } : {}) });
    this.#provider.onExit((id, info) => {
      const made = this.#instances.get(id);
      this.#instances.delete(id);
      o.logger.info({ instance: id, code: info.code, signal: info.signal }, 'an instance agent ended');
      // Fenced (3): it must never serve again; nothing of it is kept.
      if (made && info.code === 3) rmSync(made.workdir, { recursive: true, force: true });
    });
  }

  /** The node id once joined. */
  get nodeId(): string | undefined {
    return this.#node?.id;
  }

  run(): Promise<NodeExit> {
    this.#connect();
    return this.#exit;
  }

  async close(message = 'closed'): Promise<void> {
    this.#closed = true;
    this.#ws?.close(1000, 'node stopping');
    for (const [id, made] of this.#instances) await this.#provider.destroy({ id, providerRef: made.providerRef });
    this.#done({ reason: 'closed', message });
  }

  #finish(e: NodeExit): void {
    this.#closed = true;
    this.#ws?.close(1000, e.reason);
    this.#done(e);
  }

  #connect(): void {
    if (this.#closed) return;
    const log = this.#o.logger;
    const url = this.#o.url.replace(/^http/, 'ws').replace(/\/+$/, '') + '/v1/node';
    const ws = new WebSocket(url, { handshakeTimeout: 5000 });
    this.#ws = ws;
    const nonce = randomBytes(32).toString('base64url');
    const tokenId = joinTokenId(this.#o.token)!;
    const hash = tokenHash(this.#o.token);
    let channel: SealedChannel | undefined;
    let startKey: Buffer | undefined;
    let controllerNonce = '';
    let heartbeat: NodeJS.Timeout | undefined;
    let lastPong = Date.now();
    let pinger: NodeJS.Timeout | undefined;
    const sendSealed = (m: NodeMessage) => {
      if (channel && ws.readyState === ws.OPEN) ws.send(channel.seal(m));
    };
    const report = () => sendSealed({ type: 'report', addresses: this.#addresses, instances: [...this.#instances].map(([id, m]) => ({ id, port: m.port, pid: Number(m.providerRef.pid) })) });
    const restart = (why: string) => {
      log.warn({ why }, 'node connection lost; reconnecting');
      ws.terminate();
    };
    ws.on('open', () => {
      this.#backoff.reset();
      const hello = this.#node
        ? { type: 'nodeHello', protocol: NODE_PROTOCOL, nodeId: this.#node.id, nonce, addresses: this.#addresses }
        : { type: 'nodeJoin', protocol: NODE_PROTOCOL, tokenId, nonce, addresses: this.#addresses, labels: this.#o.labels, hostname: (this.#o.hostname ?? osHostname()).replace(/[^A-Za-z0-9_.-]/g, '-').slice(0, 253) };
      ws.send(JSON.stringify(hello));
    });
    let chain = Promise.resolve();
    ws.on('message', (raw: Buffer) => {
      const text = raw.toString('utf8');
      chain = chain.then(async () => {
        if (!channel) {
          let m: unknown;
          try {
            m = JSON.parse(text);
          } catch {
            m = undefined;
          }
          const p = nodePlainSchema.safeParse(m);
          if (!p.success) return restart('unexpected message before the controller proved itself');
          const msg = p.data;
          if (msg.type === 'refused') {
            // Unproven, but there is nothing to keep running: a join is never retried with a refused token.
            log.error('the controller refused this node');
            return this.#finish({ reason: 'refused', message: NODE_REFUSED });
          }
          if (msg.type === 'joinChallenge' && !this.#node) {
            controllerNonce = msg.nonce;
            const params = { hash, tokenId, nodeNonce: nonce, controllerNonce };
            if (!checkJoinProof('controller', params, msg.proof)) {
              // Nothing is proved to it; after a few tries the node stops, as if refused.
              if (++this.#badJoinProofs >= MAX_BAD_JOIN_PROOFS) return this.#finish({ reason: 'refused', message: NODE_REFUSED });
              return restart('the peer could not prove it knows the join token');
            }
            ws.send(JSON.stringify({ type: 'joinProof', proof: joinProof('node', params) }));
            return;
          }
          if (msg.type === 'joinWelcome' && !this.#node && controllerNonce) {
            const opened = joinBoxSchema.safeParse(boxOpen(boxKey(hash, nonce, controllerNonce, 'join'), msg.box, `join|${tokenId}`));
            if (!opened.success) return restart('the join box does not open with this token');
            this.#node = { id: opened.data.nodeId, key: opened.data.key };
            log.info({ node: this.#node.id }, 'joined the pool');
          } else if (msg.type === 'challenge' && this.#node) {
            controllerNonce = msg.nonce;
            if (!checkControllerProof({ key: this.#node.key, instanceId: this.#node.id, epoch: 0, agentNonce: nonce, controllerNonce }, msg.proof)) {
              return restart("the peer could not prove it is this node's controller");
            }
          } else return restart('unexpected message in the handshake');
          channel = new SealedChannel('agent', { key: this.#node.key, instanceId: this.#node.id, epoch: 0, agentNonce: nonce, controllerNonce });
          startKey = boxKey(this.#node.key, nonce, controllerNonce, 'start');
          report();
          return;
        }
        const opened = channel.open(text);
        if (!opened.ok) return restart(`a controller frame failed its check (${opened.error})`);
        const o = nodeOrderSchema.safeParse(opened.message);
        if (!o.success) return log.warn('dropped a controller message that does not match the protocol');
        await this.#order(o.data, startKey!, sendSealed, (ms) => {
          clearInterval(heartbeat);
          heartbeat = setInterval(report, ms);
          clearInterval(pinger);
          lastPong = Date.now();
          pinger = setInterval(() => {
            if (Date.now() - lastPong > 3 * ms + 1000) return restart('the controller stopped answering');
            ws.ping();
          }, ms);
        }, (why) => this.#finish({ reason: 'refused', message: why }));
      }).catch((err: unknown) => log.error({ err }, 'handling a controller message failed'));
    });
    ws.on('pong', () => {
      lastPong = Date.now();
    });
    ws.on('error', (err) => log.debug({ err: err.message }, 'node connection error'));
    ws.on('close', () => {
      clearInterval(heartbeat);
      clearInterval(pinger);
      if (this.#closed) return;
      // Not unref'd: this timer is what keeps a node with no connection alive.
      setTimeout(() => this.#connect(), this.#backoff.next());
    });
  }

  async #order(o: NodeOrder, startKey: Buffer, send: (m: NodeMessage) => void, welcome: (ms: number) => void, refused: (why: string) => void): Promise<void> {
    const log = this.#o.logger;
    switch (o.type) {
      case 'welcome':
        welcome(o.heartbeatMs);
        return;
      case 'refused':
        refused(o.reason);
        return;
      case 'start': {
        const secrets = startBoxSchema.safeParse(boxOpen(startKey, o.box, `start|${o.instanceId}`));
        if (!secrets.success) {
          send({ type: 'startFailed', instanceId: o.instanceId, reason: 'the instance key did not open' });
          return;
        }
        const running = this.#instances.get(o.instanceId);
        if (running) {
          send({ type: 'started', instanceId: o.instanceId, ip: running.ip, port: running.port, workdir: running.workdir, pid: Number(running.providerRef.pid) });
          return;
        }
        try {
          // The agent reaches the controller where this node did (the controller's own URL may say 0.0.0.0).
          const made = await this.#provider.request({
            instanceId: o.instanceId, epoch: o.epoch, key: secrets.data.key, controllerUrl: this.#o.url, app: '', role: null,
            ...(secrets.data.transportUrl ? { transportUrl: secrets.data.transportUrl } : {}),
          });
          this.#instances.set(o.instanceId, made);
          log.info({ instance: o.instanceId, port: made.port }, 'started an instance agent');
          send({ type: 'started', instanceId: o.instanceId, ip: made.ip, port: made.port, workdir: made.workdir, pid: Number(made.providerRef.pid) });
        } catch (err) {
          send({ type: 'startFailed', instanceId: o.instanceId, reason: err instanceof Error ? err.message : String(err) });
        }
        return;
      }
      case 'stop': {
        const made = this.#instances.get(o.instanceId);
        const workdir = made?.workdir ?? join(this.#o.dataDir, 'instances', o.instanceId);
        await this.#provider.destroy({ id: o.instanceId, providerRef: made?.providerRef ?? null });
        this.#instances.delete(o.instanceId);
        rmSync(workdir, { recursive: true, force: true });
        log.info({ instance: o.instanceId }, 'stopped an instance; back in the pool');
        send({ type: 'stopped', instanceId: o.instanceId });
        return;
      }
    }
  }
}
