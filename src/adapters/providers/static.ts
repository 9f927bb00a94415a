/**
 * The static provider: instances on hosts that joined the app's pool (`drover agent --join`).
 * Requesting an instance assigns an idle joined node (it starts the instance's agent there, in
 * the background: the machine is `pending` until the node answers);
 * destroying one returns the node to the pool (the agent and its role stopped, its folder
 * removed) instead of deleting the host. With no idle node for the app, the fallback provider
 * (the local one) makes the instance, so an app without joined hosts runs as before — unless the
 * role's `placement` rules this machine out, when the request is refused.
 *
 * The list of nodes and the channel to them belong to the controller ({@link NodeDirectory});
 * this module only decides which provider handles an instance.
 */
import type { CreateInstanceRequest, CreatedInstance, ExitInfo, InstanceHandle, Machine, Provider } from './types.js';

/** What the controller offers the static provider: its joined nodes. */
export interface NodeDirectory {
  /**
   * The host for a new instance of `role` (a node labelled `role=x` takes only x; the role's
   * `placement` labels and spread): a reserved idle node's id, or undefined for the fallback's
   * machine. Rejects, naming the hosts seen, when no host fits the role's placement: then no
   * instance is made anywhere (docs/fleet.md, Placement).
   */
  reserve(app: string, role: string | null, instanceId: string): Promise<string | undefined>;
  /** Starts the instance's agent on the reserved node; rejects (and frees the node) if it could not. */
  start(nodeId: string, req: CreateInstanceRequest): Promise<CreatedInstance>;
  /** Stops the instance on its node and cleans its folder; a node out of reach is told when it is back. */
  stop(nodeId: string, instanceId: string): Promise<void>;
  /** Whether the node still runs the instance (true while the node is out of reach: it may). */
  runs(nodeId: string, instanceId: string): boolean;
}

/** A start on a node: pending until the node answers. */
interface NodeStart {
  readonly node: string;
  /** Resolves once the node answered (or did not in time). */
  settled?: Promise<void>;
  made?: CreatedInstance;
  error?: string;
}

/** How many released node instances are remembered as gone (a node out of reach is told on its return). */
const RELEASED_KEPT = 10_000;

export class StaticProvider implements Provider {
  /** Where each instance asked of this provider went: a node (its start) or the fallback. */
  private readonly routed = new Map<string, NodeStart | 'fallback'>();
  /** Requests in flight, by instance id: a repeated request joins the first. */
  private readonly requests = new Map<string, Promise<Machine>>();
  /** Node instances destroyed by this provider: gone, even while their node is out of reach. */
  private readonly released = new Set<string>();

  constructor(
    private readonly nodes: NodeDirectory,
    private readonly fallback: Provider,
  ) {}

  /** The fallback's name: instances made by it are what they were (`local`: folders on this machine). */
  get name(): string {
    return this.fallback.name;
  }

  /** A node starts an agent as the local provider does, one network hop further: the fallback's. */
  get provisionTimeoutMs(): number {
    return this.fallback.provisionTimeoutMs;
  }

  /** An idle node of the app if there is one (its start goes on in the background: `pending`), else the fallback's machine. */
  request(req: CreateInstanceRequest): Promise<Machine> {
    const id = req.instanceId;
    let p = this.requests.get(id);
    if (!p) {
      p = this.route(req).finally(() => this.requests.delete(id));
      this.requests.set(id, p);
    }
    return p;
  }

  private async route(req: CreateInstanceRequest): Promise<Machine> {
    const id = req.instanceId;
    const known = this.routed.get(id);
    if (known === 'fallback') return this.fallback.request(req);
    if (known) return this.nodeMachine(id, known);
    const node = await this.nodes.reserve(req.app, req.role, id);
    if (node === undefined) {
      this.routed.set(id, 'fallback');
      return this.fallback.request(req);
    }
    const start: NodeStart = { node };
    this.routed.set(id, start);
    start.settled = this.nodes.start(node, req).then(
      (made) => {
        start.made = made;
      },
      (err: unknown) => {
        start.error = err instanceof Error ? err.message : String(err);
      },
    );
    return this.nodeMachine(id, start);
  }

  private nodeMachine(id: string, s: NodeStart): Machine {
    if (s.made) return { id, state: 'running', ...s.made };
    if (s.error !== undefined) return { id, state: 'gone', providerRef: { node: s.node }, message: s.error };
    return { id, state: 'pending', providerRef: { node: s.node } };
  }

  async describe(handles: readonly InstanceHandle[]): Promise<Machine[]> {
    const local = handles.filter((h) => this.nodeFor(h) === undefined);
    const fromFallback = new Map(local.length ? (await this.fallback.describe(local)).map((m) => [m.id, m]) : []);
    return handles.map((h): Machine => {
      const node = this.nodeFor(h);
      if (node === undefined) return fromFallback.get(h.id) ?? { id: h.id, state: 'gone', providerRef: h.providerRef };
      if (this.released.has(h.id)) return { id: h.id, state: 'gone', providerRef: h.providerRef };
      const start = this.routed.get(h.id);
      if (start && start !== 'fallback') return this.nodeMachine(h.id, start);
      // Started before this controller did: the node says (what the store recorded has the address).
      return { id: h.id, state: this.nodes.runs(node, h.id) ? 'running' : 'gone', providerRef: h.providerRef };
    });
  }

  /**
   * The fallback's machines, and those this provider started on nodes. A node's instances from
   * before a controller restart are not listed: the node reports what it runs when it connects,
   * and is told to stop what the store does not know (controller/nodes.ts).
   */
  async list(): Promise<Machine[]> {
    const out = await this.fallback.list();
    for (const [id, start] of this.routed) {
      if (start === 'fallback' || this.released.has(id)) continue;
      const m = this.nodeMachine(id, start);
      if (m.state !== 'gone') out.push(m);
    }
    return out;
  }

  async destroy(instance: InstanceHandle): Promise<void> {
    const node = this.nodeFor(instance);
    if (node === undefined) {
      this.routed.delete(instance.id);
      return this.fallback.destroy(instance);
    }
    // A start still on its way is let finish: the node answers one question about an instance at a time.
    const start = this.routed.get(instance.id);
    if (start && start !== 'fallback') await start.settled;
    await this.nodes.stop(node, instance.id);
    this.routed.delete(instance.id);
    this.released.add(instance.id);
    if (this.released.size > RELEASED_KEPT) this.released.delete(this.released.values().next().value!);
  }

  private nodeFor(h: InstanceHandle): string | undefined {
    const start = this.routed.get(h.id);
    if (start === 'fallback') return undefined;
    return start?.node ?? nodeOf(h);
  }

  onExit(listener: (instanceId: string, info: ExitInfo) => void): void {
    this.fallback.onExit(listener);
  }

  close(): Promise<void> {
    return this.fallback.close();
  }
}

/** The node an instance runs on, from its provider reference. */
export function nodeOf(instance: InstanceHandle): string | undefined {
  const n = instance.providerRef?.node;
  return typeof n === 'string' ? n : undefined;
}
