/**
 * Load-balancer drivers: put members into and out of a live HTTP load balancer, without
 * restarts, reloads or failed requests.
 *
 * ```ts
 * const lb = createDriver('haproxy', { listen: { host: '127.0.0.1', port: 8080 }, workdir: '/srv/front/lb', balance: 'leastconn' });
 * await lb.start();
 * await lb.setMembers([
 *   { id: 'i-1', address: '10.0.0.7:8080', state: 'ready' },
 *   { id: 'i-2', address: '10.0.0.8:8080', state: 'ready' },
 * ]);
 * await lb.setHostMap({ 'acme.example.com': 'i-2' });
 * // scale in: drain, wait for zero (or a deadline), then remove
 * await lb.setMembers([{ id: 'i-1', address: '10.0.0.7:8080', state: 'ready' }, { id: 'i-2', address: '10.0.0.8:8080', state: 'drain' }]);
 * const busy = (await lb.stats()).find((s) => s.id === 'i-2')?.activeConnections;
 * await lb.setMembers([{ id: 'i-1', address: '10.0.0.7:8080', state: 'ready' }]);
 * await lb.stop();
 * ```
 *
 * `builtin` (the default) is a Node proxy in this process; `haproxy` runs and supervises
 * HAProxy ≥ 2.6 and drives it through its runtime API.
 */
import { BuiltinDriver } from './builtin.js';
import { HaproxyDriver } from './haproxy.js';
import { LbInputError, type LbDriverKind, type LbOptions, type LoadBalancerDriver } from './types.js';

export type * from './types.js';
export {
  compileLbOptions,
  hostOnly,
  HaproxyVersionError,
  LB_DRIVER_KINDS,
  LB_ERROR_CODES,
  LbError,
  LbInputError,
  MEMBER_STATES,
  parseAddress,
} from './types.js';
export { BuiltinDriver } from './builtin.js';
export { HaproxyDriver, requireHaproxy } from './haproxy.js';
export { HAPROXY_MIN_VERSION, isSupportedVersion, parseHaproxyVersion, type HaproxyVersion } from './haproxy-config.js';
export { membersFromImports, type MembersFromImportsResult } from './members.js';

export const DEFAULT_LB_DRIVER: LbDriverKind = 'builtin';

export function createDriver(kind: LbDriverKind, options: LbOptions): LoadBalancerDriver {
  switch (kind) {
    case 'builtin':
      return new BuiltinDriver(options);
    case 'haproxy':
      return new HaproxyDriver(options);
    default:
      throw new LbInputError('driver', `must be builtin or haproxy, got ${JSON.stringify(kind)}`);
  }
}
