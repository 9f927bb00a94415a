/**
 * A provider that also makes and removes what each instance needs on the transport: before the
 * provider makes an instance, its queue and broker user (amqp), whose URL goes to the agent with
 * its key; after the provider destroys it, the user and queue are deleted. For a transport that
 * needs nothing (embedded) it is the provider unchanged.
 */
import type { CreateInstanceRequest, CreatedInstance, ExitInfo, InstanceHandle, Provider } from '../providers/index.js';
import type { ControllerTransport } from './types.js';

export function withTransportProvisioning(provider: Provider, transport: () => ControllerTransport | undefined): Provider {
  return {
    get name() {
      return provider.name;
    },
    async createInstance(req: CreateInstanceRequest): Promise<CreatedInstance> {
      const url = await transport()?.provision?.(req.instanceId);
      try {
        return await provider.createInstance(url ? { ...req, transportUrl: url } : req);
      } catch (err) {
        await transport()?.deprovision?.(req.instanceId).catch(() => undefined);
        throw err;
      }
    },
    async destroyInstance(instance: InstanceHandle): Promise<void> {
      await provider.destroyInstance(instance);
      await transport()?.deprovision?.(instance.id);
    },
    isAlive: (instance: InstanceHandle) => provider.isAlive(instance),
    onExit: (listener: (instanceId: string, info: ExitInfo) => void) => provider.onExit(listener),
    close: () => provider.close(),
  };
}
