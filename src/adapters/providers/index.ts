/**
 * Providers: make and destroy instances.
 *
 * ```ts
 * const provider = new LocalProvider({ baseDir: '.drover/instances' });
 * const made = await provider.createInstance({ instanceId: 'i-1', epoch: 1, joinToken, controllerUrl, app: 'shop', role: 'api' });
 * ```
 */
export type * from './types.js';
export { LocalProvider, freePort, processesOfInstance, processesOfInstancesIn, type LocalProviderOptions } from './local.js';
export { StaticProvider, nodeOf, type NodeDirectory } from './static.js';
