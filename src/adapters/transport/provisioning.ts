/**
 * A provider that also makes and removes what each instance needs on the transport: before the
 * provider is asked for an instance, its queue and broker user (amqp), whose URL goes to the
 * agent with its key; after the provider destroyed it, the user and queue are deleted. For a
 * transport that needs nothing (embedded) it is the provider unchanged.
 *
 * A request is made once per instance (the controller describes before it asks again): a
 * second request would mint the broker user a new password its running agent does not have.
 */
import type { CreateInstanceRequest, ExitInfo, InstanceHandle, Machine, Provider } from '../providers/index.js';
import type { ControllerTransport } from './types.js';

export function withTransportProvisioning(provider: Provider, transport: () => ControllerTransport | undefined): Provider {
  return {
    get name() {
      return provider.name;
    },
    get provisionTimeoutMs() {
      return provider.provisionTimeoutMs;
    },
    async request(req: CreateInstanceRequest): Promise<Machine> {
      const url = await transport()?.provision?.(req.instanceId);
      try {
        return await provider.request(url ? { ...req, transportUrl: url } : req);
      } catch (err) {
        await transport()?.deprovision?.(req.instanceId).catch(() => undefined);
        throw err;
      }
    },
    describe: (handles: readonly InstanceHandle[]) => provider.describe(handles),
    list: () => provider.list(),
    async destroy(instance: InstanceHandle): Promise<void> {
      await provider.destroy(instance);
      await transport()?.deprovision?.(instance.id);
    },
    onExit: (listener: (instanceId: string, info: ExitInfo) => void) => provider.onExit(listener),
    close: () => provider.close(),
  };
}
