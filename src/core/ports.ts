/**
 * A role's ports, stable entry points and volumes: their app-file schemas, what they compile to,
 * the checks within a role and across roles, and the values the agent and the controller both
 * compute from them.
 *
 * - `ports: { http: auto, admin: auto, jmx: 9010 }`: what the role's processes bind. `auto` is a
 *   free port chosen for each instance; a number is bound as is. `${ports.NAME}` in templates,
 *   `$DROVER_PORT_NAME` in the environment; `${port}` is the first.
 * - `listen: 8080` (or `{ http: 8080, ajp: 8009 }`): fixed ports held by the host's port keeper,
 *   which hands each connection to a serving member's port. The keeper outlives every member, so
 *   a rolling replacement never leaves the port without a listener.
 * - `volumes: [data]` (or `{ data: {} }`): folders that outlive the instance, one per member slot
 *   (`db-0`), given to the instance that takes the slot over on the same host; `${volumes.NAME}`.
 */
import { z } from 'zod';
import { err } from './schema-words.js';

/** Most named ports, listened ports and volumes one role may declare. */
export const MAX_PORTS = 16;
export const MAX_VOLUMES = 16;

const PORT_NAME = /^[a-z][a-z0-9_]{0,31}$/;
export const PORT_NAME_RULE = 'lowercase letters, digits and "_", starting with a letter, at most 32 characters';
const PORT_RANGE = 'expected a port from 1 to 65535';

const portNumber = z
  .number(err(PORT_RANGE))
  .int(err(PORT_RANGE))
  .min(1, err(PORT_RANGE))
  .max(65535, err(PORT_RANGE));

const portName = (what: string) =>
  z.string().regex(PORT_NAME, { error: (iss) => `invalid ${what} name ${JSON.stringify(iss.input)}: expected ${PORT_NAME_RULE}` });

export const portsSchema = z
  .record(
    portName('port'),
    z.union([z.literal('auto'), portNumber], { error: (iss) => (iss.input === undefined ? 'required' : `expected auto or a port from 1 to 65535`) }),
    err('expected a mapping of port names to auto or a port number, e.g. { http: auto, ajp: 8009 }'),
  )
  .superRefine((ports, ctx) => {
    const names = Object.keys(ports);
    if (names.length === 0) ctx.addIssue({ code: 'custom', input: ports, message: 'expected at least one port (leave ports out for the single ${port})' });
    if (names.length > MAX_PORTS) ctx.addIssue({ code: 'custom', input: ports, message: `at most ${MAX_PORTS} ports` });
    const seen = new Map<number, string>();
    for (const [name, v] of Object.entries(ports)) {
      if (v === 'auto') continue;
      const first = seen.get(v);
      if (first !== undefined) ctx.addIssue({ code: 'custom', input: v, path: [name], message: `port ${v} is already ports.${first}` });
      else seen.set(v, name);
    }
  })
  .meta({
    description:
      'Ports the role binds, by name: auto (a free port chosen per instance) or a fixed number. ${ports.NAME} in templates, $DROVER_PORT_NAME in the environment; ${port} is the first.',
  });

export const listenSchema = z
  .union(
    [
      portNumber,
      z
        .record(portName('port'), portNumber, err('expected a port number, or a mapping of port names to port numbers'))
        .refine((m) => Object.keys(m).length > 0 && Object.keys(m).length <= MAX_PORTS, { error: `expected 1 to ${MAX_PORTS} ports` }),
    ],
    { error: (iss) => (iss.input === undefined ? 'required' : 'expected a port from 1 to 65535, or a mapping of port names to port numbers') },
  )
  .meta({
    description:
      "Stable entry points: fixed ports the host's port keeper holds and hands to a serving member (a number: to ${port}; { NAME: number }: to ${ports.NAME}). A rolling replacement never leaves them without a listener.",
  });

const volumeName = z.string().regex(/^[a-z][a-z0-9_]{0,31}$/, { error: (iss) => `invalid volume name ${JSON.stringify(iss.input)}: expected ${PORT_NAME_RULE}` });

export const volumesSchema = z
  .union(
    [
      z.array(volumeName, err('expected a list of volume names')),
      z.record(volumeName, z.strictObject({}, err('expected {} (volumes take no options yet)')), err('expected a mapping of volume names to {}')),
    ],
    { error: (iss) => (iss.input === undefined ? 'required' : 'expected a list of volume names, or a mapping of volume names to {}') },
  )
  .superRefine((v, ctx) => {
    const names = Array.isArray(v) ? v : Object.keys(v);
    if (names.length === 0) ctx.addIssue({ code: 'custom', input: v, message: 'expected at least one volume' });
    if (names.length > MAX_VOLUMES) ctx.addIssue({ code: 'custom', input: v, message: `at most ${MAX_VOLUMES} volumes` });
    if (Array.isArray(v)) {
      v.forEach((n, i) => {
        if (v.indexOf(n) !== i) ctx.addIssue({ code: 'custom', input: n, path: [i], message: `duplicate volume ${JSON.stringify(n)}` });
      });
    }
  })
  .meta({
    description:
      'Named folders that outlive the instance: one per member slot (<role>-<n>) and host, given to the instance that takes the slot over. ${volumes.NAME} is its path.',
  });

/** A fixed port held by the host's port keeper, and the role's port it leads to. */
export interface ListenSpec {
  readonly port: number;
  /** The name in `ports:`; absent: `${port}`. */
  readonly to?: string;
}

export type PortValue = number | 'auto';

/** `listen:` as written → its compiled form. */
export function compileListen(raw: number | Readonly<Record<string, number>>): ListenSpec[] {
  if (typeof raw === 'number') return [{ port: raw }];
  return Object.entries(raw).map(([to, port]) => ({ port, to }));
}

export function compileVolumes(raw: readonly string[] | Readonly<Record<string, unknown>>): string[] {
  return Array.isArray(raw) ? [...(raw as readonly string[])] : Object.keys(raw);
}

interface PortsOfRole {
  readonly name: string;
  readonly ports?: Readonly<Record<string, PortValue>>;
  readonly listen?: readonly ListenSpec[];
  readonly volumes?: readonly string[];
  readonly loadBalancer?: { readonly listen?: number };
}

/** Problems within one role, as [path below the role, message]. */
export function rolePortIssues(role: PortsOfRole): [(string | number)[], string][] {
  const out: [(string | number)[], string][] = [];
  const ports = role.ports ?? {};
  if (role.listen && role.loadBalancer?.listen !== undefined) {
    out.push([['listen'], 'give either listen or loadBalancer.listen, not both (listen keeps the port through a rolling replacement)']);
  }
  for (const l of role.listen ?? []) {
    const at = typeof l.to === 'string' ? ['listen', l.to] : ['listen'];
    if (l.to !== undefined && !Object.hasOwn(ports, l.to)) {
      out.push([at, `no port ${JSON.stringify(l.to)} in ports (names: ${Object.keys(ports).join(', ') || 'none'})`]);
      continue;
    }
    const fixedName = Object.entries(ports).find(([, v]) => v === l.port)?.[0];
    if (fixedName !== undefined) out.push([at, `port ${l.port} is also ports.${fixedName}: the keeper holds a listen port and hands it to the role's own port, which must be another`]);
    const target = l.to !== undefined ? ports[l.to] : firstPort(role);
    if (typeof target === 'number') out.push([at, `leads to a fixed port (${target}); a listen port leads to an auto port, so that members can share the host during a roll`]);
  }
  return out;
}

/** The fixed ports a role claims on its host: its fixed `ports`, its `listen` ports and its balancer's. */
export function fixedPortsOf(role: PortsOfRole): { port: number; path: (string | number)[] }[] {
  const out: { port: number; path: (string | number)[] }[] = [];
  for (const [name, v] of Object.entries(role.ports ?? {})) if (typeof v === 'number') out.push({ port: v, path: ['ports', name] });
  for (const l of role.listen ?? []) out.push({ port: l.port, path: l.to !== undefined ? ['listen', l.to] : ['listen'] });
  if (role.loadBalancer?.listen !== undefined) out.push({ port: role.loadBalancer.listen, path: ['loadBalancer', 'listen'] });
  return out;
}

/**
 * Two roles may not claim one fixed port: members of both may share a host (every member does
 * with the local provider), where the second could not bind it.
 */
export function crossRolePortIssues(roles: readonly PortsOfRole[]): { role: string; path: (string | number)[]; message: string }[] {
  const out: { role: string; path: (string | number)[]; message: string }[] = [];
  const claimed = new Map<number, string>();
  for (const role of roles) {
    for (const f of fixedPortsOf(role)) {
      const by = claimed.get(f.port);
      if (by !== undefined && !by.startsWith(`roles.${role.name}.`)) {
        out.push({ role: role.name, path: f.path, message: `port ${f.port} is already claimed by ${by}: two roles cannot hold one fixed port on a host` });
      } else if (by === undefined) claimed.set(f.port, `roles.${role.name}.${f.path.join('.')}`);
    }
  }
  return out;
}

/** `${port}`: the first of `ports:`, or the instance's own port when there is no `ports:`. */
export function firstPort(role: Pick<PortsOfRole, 'ports'>): PortValue {
  const first = Object.values(role.ports ?? {})[0];
  return first ?? 'auto';
}

/**
 * The auto ports of a role beyond the one the provider gives every instance: the agent chooses
 * free ports for these when it takes the role. The first auto port is the instance's own.
 */
export function extraAutoPorts(role: Pick<PortsOfRole, 'ports'>): string[] {
  const autos = Object.entries(role.ports ?? {}).filter(([, v]) => v === 'auto').map(([k]) => k);
  return autos.slice(1);
}

/**
 * Every port of the role by name, as numbers: fixed ones as written, the first auto one the
 * instance's port, the others from `extra` (what the agent chose). Undefined if `extra` lacks
 * one, or gives a port it should not (not an auto port of the role, not 1–65535).
 */
export function resolvePorts(role: Pick<PortsOfRole, 'ports'>, instancePort: number, extra: Readonly<Record<string, number>>): Record<string, number> | undefined {
  const out: Record<string, number> = {};
  const wanted = new Set(extraAutoPorts(role));
  for (const k of Object.keys(extra)) if (!wanted.has(k)) return undefined;
  let firstAuto = true;
  for (const [name, v] of Object.entries(role.ports ?? {})) {
    if (typeof v === 'number') out[name] = v;
    else if (firstAuto) {
      out[name] = instancePort;
      firstAuto = false;
    } else {
      const p = Object.hasOwn(extra, name) ? extra[name] : undefined;
      if (p === undefined || !Number.isInteger(p) || p < 1 || p > 65535) return undefined;
      out[name] = p;
    }
  }
  return out;
}

/** The slot name of a member: `db-0`. Its volumes live in a folder of that name. */
export function slotName(role: string, slot: number): string {
  return `${role}-${slot}`;
}
