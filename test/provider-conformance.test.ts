/**
 * The provider conformance suite (test/provider-conformance.ts) against every provider: the local
 * one, and the static one over joined nodes. The nodes here are a stand-in for the controller's
 * node registry that starts agents with a local provider of their own after a delay (a node
 * answering over the network); what the registry itself does is tested in test/join.test.ts
 * and test/fleet.test.ts with real joined hosts.
 */
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { LocalProvider, StaticProvider, type CreateInstanceRequest, type CreatedInstance, type NodeDirectory } from '../src/adapters/providers/index.js';
import { providerConformance } from './provider-conformance.js';

providerConformance('local', { make: (dir) => new LocalProvider({ baseDir: dir, killGraceMs: 2000 }) });

/** One idle node: the first instance asked for goes there, the rest to the fallback. */
class OneNode implements NodeDirectory {
  readonly onNode = new Set<string>();
  private holder?: string;
  constructor(private readonly host: LocalProvider) {}
  async reserve(_app: string, _role: string | null, instanceId: string): Promise<string | undefined> {
    if (this.holder !== undefined) return undefined;
    this.holder = instanceId;
    this.onNode.add(instanceId);
    return 'n-1';
  }
  async start(node: string, req: CreateInstanceRequest): Promise<CreatedInstance> {
    await sleep(300); // the node's answer comes over the network
    const m = await this.host.request(req);
    return { ip: m.ip, port: m.port, workdir: m.workdir, providerRef: { node, pid: m.providerRef.pid, port: m.port } };
  }
  async stop(_node: string, instanceId: string): Promise<void> {
    await this.host.destroy({ id: instanceId, providerRef: null });
    if (this.holder === instanceId) this.holder = undefined;
  }
  runs(_node: string, instanceId: string): boolean {
    return this.holder === instanceId;
  }
}

let nodes: OneNode | undefined;
providerConformance('static', {
  make: (dir) => {
    nodes = new OneNode(new LocalProvider({ baseDir: join(dir, 'node'), killGraceMs: 2000 }));
    return new StaticProvider(nodes, new LocalProvider({ baseDir: join(dir, 'local'), killGraceMs: 2000 }));
  },
  reportsExit: (id) => !nodes?.onNode.has(id),
});
