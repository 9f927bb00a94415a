/**
 * The static provider: instances on hosts that joined the app's pool (`drover agent --join`).
 * Creating an instance assigns an idle joined node (it starts the instance's agent there);
 * destroying one returns the node to the pool (the agent and its role stopped, its folder
 * removed) instead of deleting the host. With no idle node for the app, the fallback provider
 * (the local one) makes the instance, so an app without joined hosts runs as before.
 *
 * The list of nodes and the channel to them belong to the controller ({@link NodeDirectory});
 * this module only decides which provider handles an instance.
 */
import type { CreateInstanceRequest, CreatedInstance, ExitInfo, InstanceHandle, Provider } from './types.js';

/** What the controller offers the static provider: its joined nodes. */
export interface NodeDirectory {
  /** Reserves an idle, connected node of `app` for `role` (a node labelled `role=x` takes only x); undefined if none. */
  reserve(app: string, role: string | null, instanceId: string): Promise<string | undefined>;
  /** Starts the instance's agent on the reserved node; rejects (and frees the node) if it could not. */
  start(nodeId: string, req: CreateInstanceRequest): Promise<CreatedInstance>;
  /** Stops the instance on its node and cleans its folder; a node out of reach is told when it is back. */
  stop(nodeId: string, instanceId: string): Promise<void>;
  /** Whether the node still runs the instance (true while the node is out of reach: it may). */
  runs(nodeId: string, instanceId: string): boolean;
}

export class StaticProvider implements Provider {
  constructor(
    private readonly nodes: NodeDirectory,
    private readonly fallback: Provider,
  ) {}

  /** The fallback's name: instances made by it are what they were (`local`: folders on this machine). */
  get name(): string {
    return this.fallback.name;
  }

  async createInstance(req: CreateInstanceRequest): Promise<CreatedInstance> {
    const node = await this.nodes.reserve(req.app, req.role, req.instanceId);
    if (node === undefined) return this.fallback.createInstance(req);
    return this.nodes.start(node, req);
  }

  async destroyInstance(instance: InstanceHandle): Promise<void> {
    const node = nodeOf(instance);
    if (node === undefined) return this.fallback.destroyInstance(instance);
    await this.nodes.stop(node, instance.id);
  }

  async isAlive(instance: InstanceHandle): Promise<boolean> {
    const node = nodeOf(instance);
    if (node === undefined) return this.fallback.isAlive(instance);
    return this.nodes.runs(node, instance.id);
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
