/**
 * The cloud providers a controller can run (`drover controller --provider KIND`, env
 * DROVER_PROVIDERS), by kind: each factory makes the provider from the controller's environment
 * (credentials come from there — the AWS SDK's chain, OpenStack's OS_* variables — never from an
 * app file). A kind without a factory here cannot be asked for.
 */
import type { CloudKind } from './router.js';
import type { Provider } from './types.js';

export interface CloudProviderContext {
  /** The controller's environment (settings such as DROVER_EC2_PROVISION_TIMEOUT, the SDKs' own variables). */
  readonly env: NodeJS.ProcessEnv;
  /**
   * Who this controller is (the same for a leader and its standbys): written on every machine
   * (`drover:controller`), so `list` sees this controller's machines only, never another's in the
   * same account.
   */
  readonly controllerId: string;
}

/** A setting of a cloud provider that cannot be used: the controller does not start, and says which. */
export class CloudSettingError extends Error {
  override readonly name = 'CloudSettingError';
}

/** Filled in by the controller (server.ts), one line per kind: `providerFactories.ec2 = ec2Factory`. */
export const providerFactories: Partial<Record<CloudKind, (ctx: CloudProviderContext) => Provider>> = {};
