/** Turns what a balancer role imports (`api.*`) into members. */
import type { ImportedMember } from '../../core/index.js';
import { parseAddress, type LbMember } from './types.js';

export interface MembersFromImportsResult {
  readonly members: LbMember[];
  /** Members whose export could not be read as an address, with the reason (for an event). */
  readonly skipped: { readonly instance: string; readonly reason: string }[];
}

/**
 * Reads each member's `exportKey` (`http://10.0.0.7:8080`, `10.0.0.7:8080` or `[::1]:8080`)
 * as its address; the instance id is the member id. Imported members serve, so all are
 * `ready`; a member about to go is drained by the caller by listing it with `drain`.
 */
export function membersFromImports(imported: readonly ImportedMember[], exportKey: string): MembersFromImportsResult {
  const members: LbMember[] = [];
  const skipped: { instance: string; reason: string }[] = [];
  for (const m of imported) {
    const raw = m.exports[exportKey];
    if (raw === undefined) {
      skipped.push({ instance: m.instance, reason: `exports no ${JSON.stringify(exportKey)}` });
      continue;
    }
    let address = raw;
    if (/^[a-z][a-z0-9+.-]*:\/\//i.test(raw)) {
      try {
        const u = new URL(raw);
        address = `${u.hostname}:${u.port || (u.protocol === 'https:' ? '443' : '80')}`;
      } catch {
        address = '';
      }
    }
    if (!parseAddress(address)) {
      skipped.push({ instance: m.instance, reason: `${exportKey}=${JSON.stringify(raw)} is not an IP address and port` });
      continue;
    }
    members.push({ id: m.instance, address, state: 'ready' });
  }
  return { members, skipped };
}
