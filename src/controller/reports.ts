/**
 * What an agent may say about itself. An authenticated agent is still only trusted with facts
 * about its own instance; a report that its instance could not have produced — a role it was
 * never given, an export its role does not declare, an export value other than what the role's
 * template renders to — means the instance is not doing what the controller ordered, and it is
 * fenced and replaced rather than believed.
 *
 * Exports are never taken from the report: the controller renders them itself from the role's
 * templates, its own record of the instance (address, port, folder) and the imports the agent
 * says it applied; the report only has to agree.
 */
import { join } from 'node:path';
import {
  exportsUseImports,
  extraAutoPorts,
  importsVersion,
  renderExports,
  resolveImports,
  resolvePorts,
  roleBuiltins,
  roleHash,
  type AgentStatus,
  type ImportedMember,
  type RoleSpec,
} from '../core/index.js';
import type { InstanceRecord, StoredApp } from '../adapters/store/index.js';

export type ReportVerdict =
  /** `exports`: what to store (null: none, not serving). `ports`: the role's ports, first reported now. */
  | { readonly kind: 'ok'; readonly exports: Readonly<Record<string, string>> | null; readonly ports?: Readonly<Record<string, number>> }
  /** Cannot be checked now (the agent runs an older spec, or imports not yet applied): keep what is stored. */
  | { readonly kind: 'keep'; readonly ports?: Readonly<Record<string, number>> }
  | { readonly kind: 'impossible'; readonly reason: string };

const ROLE_STATES = new Set(['assigned', 'deploying', 'waiting', 'starting', 'serving', 'draining', 'stopping']);

function show(v: string): string {
  return JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}…` : v);
}

function sameExports(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && b[k] === a[k]);
}

/**
 * Checks one status report against the instance's record and the app.
 * The app is read (`app`) only for a serving report, the one whose exports are checked: most
 * heartbeats need no store read. `serving` gives the members the role would import now (to
 * re-render import-based exports).
 */
export async function checkReport(
  inst: InstanceRecord,
  s: AgentStatus,
  getApp: () => Promise<Pick<StoredApp, 'name' | 'appDir' | 'spec'> | undefined>,
  serving: () => Promise<Readonly<Record<string, readonly ImportedMember[]>>>,
): Promise<ReportVerdict> {
  const p = await checkPorts(inst, s, getApp);
  if ('reason' in p) return { kind: 'impossible', reason: p.reason };
  const v = await checkRest(inst, s, getApp, serving, p.ports ?? inst.ports ?? undefined);
  return p.ports && v.kind !== 'impossible' ? { ...v, ports: p.ports } : v;
}

/** Same names and numbers, in any order (the store's JSON does not keep the order of keys). */
function samePorts(a: Readonly<Record<string, number>>, b: Readonly<Record<string, number>>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && b[k] === a[k]);
}

/**
 * The ports an agent reports: its role's `ports:` with the extra auto ports it chose. Once stored
 * they never change; the first report must match the role (fixed ports as written, the first
 * auto port the instance's own). `ports`: newly reported, to store.
 */
async function checkPorts(
  inst: InstanceRecord,
  s: AgentStatus,
  getApp: () => Promise<Pick<StoredApp, 'spec'> | undefined>,
): Promise<{ ports?: Readonly<Record<string, number>> } | { reason: string }> {
  const reported = s.ports;
  if (reported === undefined) return {};
  if (inst.ports) return samePorts(inst.ports, reported) ? {} : { reason: `reported ports ${JSON.stringify(reported)}, but earlier ${JSON.stringify(inst.ports)}` };
  if (inst.role === null) return { reason: 'reported ports without a role' };
  const app = await getApp();
  const role = app && Object.hasOwn(app.spec.roles, inst.role) ? app.spec.roles[inst.role] : undefined;
  // An older spec of the role, or one gone: nothing to check them against, nothing to store.
  if (!role || inst.roleHash !== roleHash(role)) return {};
  const extra = Object.fromEntries(extraAutoPorts(role).map((k) => [k, Object.hasOwn(reported, k) ? reported[k]! : 0]));
  const expected = resolvePorts(role, inst.port, extra);
  if (!expected || !samePorts(expected, reported)) {
    return { reason: `reported ports ${JSON.stringify(reported)}, which role ${role.name}'s ports: (${JSON.stringify(role.ports ?? {})}) on port ${inst.port} cannot give` };
  }
  return { ports: expected };
}

async function checkRest(
  inst: InstanceRecord,
  s: AgentStatus,
  getApp: () => Promise<Pick<StoredApp, 'name' | 'appDir' | 'spec'> | undefined>,
  serving: () => Promise<Readonly<Record<string, readonly ImportedMember[]>>>,
  ports: Readonly<Record<string, number>> | undefined,
): Promise<ReportVerdict> {
  if (s.role !== undefined && s.role !== inst.role) {
    return { kind: 'impossible', reason: `reported running role ${show(s.role)}, which it was never ${inst.role === null ? 'given (it is a spare)' : `given (its role is ${inst.role})`}` };
  }
  if (inst.assignOrderId === null && ROLE_STATES.has(s.state)) {
    return { kind: 'impossible', reason: `reported state ${s.state} without ever being given a role` };
  }
  if (s.exports !== undefined && Object.keys(s.exports).length > 0 && s.state !== 'serving') {
    return { kind: 'impossible', reason: `reported exports while ${s.state}` };
  }
  if (s.state !== 'serving' || inst.goal !== 'run' || inst.role === null) return { kind: 'ok', exports: null };
  // The heartbeat of a serving instance repeating exports already checked and stored: nothing
  // new is claimed, nothing to read (with many instances, heartbeats are most reports).
  if (inst.state === 'serving' && inst.exports !== null && sameExports(s.exports ?? {}, inst.exports)) return { kind: 'keep' };
  const app = await getApp();
  const role: RoleSpec | undefined = app && Object.hasOwn(app.spec.roles, inst.role) ? app.spec.roles[inst.role] : undefined;
  if (!app || !role) return { kind: 'ok', exports: null };
  const reported = s.exports ?? {};
  // An instance that still runs an older spec of its role is being replaced: its exports were
  // checked when they were first stored, against the spec it was given then.
  if (inst.roleHash !== roleHash(role)) return { kind: 'keep' };
  for (const k of Object.keys(reported)) {
    if (!Object.hasOwn(role.exports, k)) return { kind: 'impossible', reason: `reported export ${show(k)}, which role ${role.name} does not declare` };
  }
  let imports = {};
  if (exportsUseImports(role)) {
    imports = resolveImports(role, await serving()).imports;
    // Rendered with other imports than the ones it applied: check once it has caught up.
    if (s.importsVersion === undefined || s.importsVersion !== importsVersion(imports)) return { kind: 'keep' };
  }
  if (role.ports && !ports) return { kind: 'impossible', reason: `reported serving without the ports of role ${role.name}` };
  const render = (appDir: string) =>
    renderExports(role, roleBuiltins(role, { app: app.name, appDir, instance: inst.id, ip: inst.ip, port: inst.port, workdir: inst.workdir, ...(ports ? { ports } : {}) }), imports);
  const mismatch = (expected: Readonly<Record<string, string>>) => Object.entries(expected).find(([k, v]) => (Object.hasOwn(reported, k) ? reported[k] : undefined) !== v);
  const expected = render(app.appDir);
  const wrong = mismatch(expected);
  if (!wrong) return { kind: 'ok', exports: expected };
  // An instance given the app bundle (docs/fleet.md) has `${appDir}` = the bundle unpacked in its
  // own folder: the only other value the agent may have rendered.
  const bundled = render(join(inst.workdir, 'app'));
  if (!mismatch(bundled)) return { kind: 'ok', exports: bundled };
  const [k, v] = wrong;
  const got = Object.hasOwn(reported, k) ? reported[k] : undefined;
  return { kind: 'impossible', reason: `reported export ${k} = ${got === undefined ? 'nothing' : show(got)}, but its role renders ${show(v)}` };
}
