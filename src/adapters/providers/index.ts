/**
 * Providers: make and destroy instances, two-phase (request, then observe).
 *
 * ```ts
 * const provider = new LocalProvider({ baseDir: '.drover/instances' });
 * await provider.request({ instanceId: 'i-1', epoch: 1, key, controllerUrl, app: 'shop', role: 'api' }); // at once
 * const [m] = await provider.describe([{ id: 'i-1', providerRef: null }]); // m.state: pending | running | gone
 * await provider.destroy({ id: 'i-1', providerRef: m.providerRef });
 * ```
 */
export type * from './types.js';
export { LocalProvider, freePort, processesOfInstance, processesOfInstancesIn, type LocalProviderOptions } from './local.js';
export { StaticProvider, nodeOf, type NodeDirectory } from './static.js';
export { SshProvider, loadSshHosts, hostKeyFingerprint, HostKeyMismatchError, SshConfigError, type SshHost, type SshProviderOptions } from './ssh.js';
export { OpenStackProvider, OpenStackClient, OpenStackError, credentialsFromEnv, openStackProviderFromEnv, openStackFactory, type OpenStackProviderOptions, type OpenStackCredentials, type OpenStackErrorKind, type OpenStackClientOptions } from './openstack.js';
export { ProviderRouter, ProviderNotConfiguredError, DEFAULT_PROVIDER, type CloudKind, type ProviderRouterOptions } from './router.js';
export { providerFactories, CloudSettingError, type CloudProviderContext } from './router-factories.js';
export { Ec2Provider, Ec2Error, ec2Factory, clientToken, EC2_TAGS, EC2_PROVISION_TIMEOUT_MS, type Ec2ProviderOptions } from './ec2.js';
