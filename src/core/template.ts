/**
 * `${name}` substitution in commands, env values and exports.
 *
 * Only drover's own names are replaced: the built-ins below and `role.key` references to
 * imported values. Anything else (`${HOME}`, `${1}`) is left for bash, so lifecycle scripts can
 * use shell variables freely. An imported reference resolves to the values of every member,
 * joined by commas, in instance-id order.
 */
import type { ResolvedImports } from './types.js';

export const BUILTIN_VARS = ['port', 'ip', 'instance', 'role', 'app', 'workdir', 'appDir'] as const;
export type BuiltinVar = (typeof BUILTIN_VARS)[number];
/**
 * The built-ins of a role on an instance, and its named ports and volumes (`${ports.http}`,
 * `${volumes.data}`: names of `ports:` and `volumes:`, by name).
 */
export type BuiltinValues = Readonly<Record<BuiltinVar, string>> & {
  readonly ports?: Readonly<Record<string, string>>;
  readonly volumes?: Readonly<Record<string, string>>;
};

/** `${ports.NAME}` and `${volumes.NAME}`: these two names are not roles (role names refuse them). */
export const NAMED_BUILTINS = ['ports', 'volumes'] as const;
export type NamedBuiltin = (typeof NAMED_BUILTINS)[number];

export function isNamedBuiltin(name: string): name is NamedBuiltin {
  return name === 'ports' || name === 'volumes';
}

/** The value of `${ports.NAME}` / `${volumes.NAME}`, or undefined if the role has no such one. */
export function namedBuiltin(builtins: BuiltinValues, name: NamedBuiltin, key: string): string | undefined {
  const m = builtins[name];
  return m && Object.hasOwn(m, key) ? m[key] : undefined;
}

const REF = /\$\{([A-Za-z_][A-Za-z0-9_-]*)(?:\.([A-Za-z_][A-Za-z0-9_-]*|\*))?\}/g;

/** A `${...}` reference found in a template. */
export interface TemplateRef {
  readonly text: string;
  /** `port`, or the role of `db.url`. */
  readonly name: string;
  /** `url` of `db.url`; undefined for a bare name. */
  readonly key?: string;
}

/** Every `${name}` / `${role.key}` reference in a template (built-in or not). */
export function templateRefs(template: string): TemplateRef[] {
  const out: TemplateRef[] = [];
  for (const m of template.matchAll(REF)) {
    const [text, name, key] = m;
    out.push(key === undefined ? { text, name: name! } : { text, name: name!, key });
  }
  return out;
}

export function isBuiltin(name: string): name is BuiltinVar {
  return (BUILTIN_VARS as readonly string[]).includes(name);
}

/** The comma-joined values of `key` over the members of `role`, or undefined if none has it. */
export function importValue(imports: ResolvedImports, role: string, key: string): string | undefined {
  // Own properties only: `${db.constructor}` must not find Object's constructor.
  const members = Object.hasOwn(imports, role) ? imports[role] : undefined;
  if (!members) return undefined;
  const vals = members.map((m) => (Object.hasOwn(m.exports, key) ? m.exports[key] : undefined)).filter((v): v is string => v !== undefined);
  return vals.length ? vals.join(',') : undefined;
}

/**
 * Substitutes built-ins and imported values. An imported reference with no value renders as the
 * empty string (an optional import not yet resolved).
 */
export function renderTemplate(template: string, builtins: BuiltinValues, imports: ResolvedImports): string {
  return template.replace(REF, (text, name: string, key: string | undefined) => {
    if (key === undefined) return isBuiltin(name) ? builtins[name] : text;
    if (key === '*') return text;
    if (isNamedBuiltin(name)) return namedBuiltin(builtins, name, key) ?? text;
    if (!Object.hasOwn(imports, name) || imports[name] === undefined) return text;
    return importValue(imports, name, key) ?? '';
  });
}

/** `api`, `endpoint` → `API_ENDPOINT`. */
export function envName(...parts: string[]): string {
  return parts
    .join('_')
    .replace(/[^A-Za-z0-9]+/g, '_')
    .toUpperCase();
}

/**
 * The environment a role's commands get: built-ins as `DROVER_*` (and `PORT`), named ports as
 * `DROVER_PORT_NAME`, volumes as `DROVER_VOLUME_NAME`, every imported
 * value as `ROLE_KEY` (comma-joined over members), `ROLE_MEMBERS` as a JSON array, and the whole
 * import set as `DROVER_IMPORTS` (JSON).
 */
export function importEnv(builtins: BuiltinValues, imports: ResolvedImports): Record<string, string> {
  const env: Record<string, string> = {
    PORT: builtins.port,
    DROVER_PORT: builtins.port,
    DROVER_IP: builtins.ip,
    DROVER_INSTANCE: builtins.instance,
    DROVER_ROLE: builtins.role,
    DROVER_APP: builtins.app,
    DROVER_WORKDIR: builtins.workdir,
    DROVER_APP_DIR: builtins.appDir,
    DROVER_IMPORTS: JSON.stringify(imports),
  };
  for (const [name, port] of Object.entries(builtins.ports ?? {})) env[`DROVER_PORT_${envName(name)}`] = port;
  for (const [name, path] of Object.entries(builtins.volumes ?? {})) env[`DROVER_VOLUME_${envName(name)}`] = path;
  for (const [role, members] of Object.entries(imports)) {
    const keys = new Set(members.flatMap((m) => Object.keys(m.exports)));
    for (const key of keys) env[envName(role, key)] = importValue(imports, role, key) ?? '';
    env[envName(role, 'members')] = JSON.stringify(members.map((m) => ({ instance: m.instance, ...m.exports })));
  }
  return env;
}
