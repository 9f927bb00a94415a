/**
 * Rendering a role's templates for the place they go.
 *
 * - Exports and `env:` values are plain strings: {@link renderTemplate} substitutes values.
 * - Commands are shell text, and no value is ever spliced into shell text: every `${...}` that
 *   Drover resolves becomes a quoted reference to an environment variable that holds the value
 *   (`${db.url}` → `"${DROVER_IMPORT_DB_URL}"`), so a value such as `$(id)` or `a; rm -rf /`
 *   reaches the command as data and is never parsed by the shell. The quoting follows where the
 *   reference sits: bare words get double quotes, inside "…" the bare reference, inside '…' the
 *   single quotes are closed around it.
 *
 * The same builtins are computed by the agent (to run the role) and the controller (to check the
 * exports an agent reports against what the role could have produced).
 */
import { firstPort, type ListenSpec } from './ports.js';
import { envName, importValue, isBuiltin, isNamedBuiltin, namedBuiltin, renderTemplate, templateRefs, type BuiltinValues, type BuiltinVar } from './template.js';
import type { ResolvedImports, RoleSpec } from './types.js';

/** Where a builtin's value lives in a command's environment. */
const BUILTIN_ENV: Readonly<Record<BuiltinVar, string>> = {
  port: 'DROVER_PORT',
  ip: 'DROVER_IP',
  instance: 'DROVER_INSTANCE',
  role: 'DROVER_ROLE',
  app: 'DROVER_APP',
  workdir: 'DROVER_WORKDIR',
  appDir: 'DROVER_APP_DIR',
};

const REF = /\$\{([A-Za-z_][A-Za-z0-9_-]*)(?:\.([A-Za-z_][A-Za-z0-9_-]*|\*))?\}/y;

type Context = 'bare' | 'double' | 'single' | 'ansi';

interface Frame {
  ctx: Context;
  /** For a `$(` frame: open parentheses inside it; for a backtick frame: -1. */
  parens: number;
}

/** The quoted reference to `$name` for a position in `ctx`. */
function reference(name: string, ctx: Context): string {
  switch (ctx) {
    case 'bare':
      return `"\${${name}}"`;
    case 'double':
      return `\${${name}}`;
    case 'single':
      return `'"\${${name}}"'`;
    case 'ansi':
      return `'"\${${name}}"$'`;
  }
}

/**
 * Renders a command: the shell text with quoted variable references, and the variables to add
 * to its environment. References Drover does not resolve (`${HOME}`, `${1}`, an import that is
 * not declared) are left for the shell as written.
 */
export function renderCommand(template: string, builtins: BuiltinValues, imports: ResolvedImports): { command: string; env: Record<string, string> } {
  const env: Record<string, string> = {};
  const names = new Map<string, string>();
  const varFor = (ref: string, base: string, value: string): string => {
    const known = names.get(ref);
    if (known) return known;
    let name = base;
    for (let n = 2; Object.hasOwn(env, name) && env[name] !== value; n++) name = `${base}_${n}`;
    env[name] = value;
    names.set(ref, name);
    return name;
  };
  const stack: Frame[] = [{ ctx: 'bare', parens: 0 }];
  let out = '';
  let i = 0;
  while (i < template.length) {
    const top = stack[stack.length - 1]!;
    const c = template[i]!;
    if (c === '$' && template[i + 1] === '{') {
      REF.lastIndex = i;
      const m = REF.exec(template);
      if (m) {
        const [text, name, key] = m as unknown as [string, string, string | undefined];
        let value: string | undefined;
        let envVar: string | undefined;
        if (key === undefined) {
          if (isBuiltin(name)) {
            envVar = BUILTIN_ENV[name];
            value = builtins[name];
          }
        } else if (isNamedBuiltin(name)) {
          value = namedBuiltin(builtins, name, key);
          envVar = `DROVER_${name === 'ports' ? 'PORT' : 'VOLUME'}_${envName(key)}`;
        } else if (key !== '*' && Object.hasOwn(imports, name)) {
          value = importValue(imports, name, key) ?? '';
          envVar = `DROVER_IMPORT_${envName(name, key)}`;
        }
        if (envVar !== undefined && value !== undefined) {
          out += reference(varFor(text, envVar, value), top.ctx);
        } else {
          out += text;
        }
        i += text.length;
        continue;
      }
    }
    out += c;
    i += 1;
    switch (top.ctx) {
      case 'single':
        if (c === "'") stack.pop();
        break;
      case 'ansi':
        if (c === '\\' && i < template.length) {
          out += template[i];
          i += 1;
        } else if (c === "'") stack.pop();
        break;
      case 'double':
        if (c === '\\' && i < template.length) {
          out += template[i];
          i += 1;
        } else if (c === '"') stack.pop();
        else if (c === '$' && template[i] === '(') {
          out += '(';
          i += 1;
          stack.push({ ctx: 'bare', parens: 0 });
        } else if (c === '`') stack.push({ ctx: 'bare', parens: -1 });
        break;
      case 'bare':
        if (c === '\\' && i < template.length) {
          out += template[i];
          i += 1;
        } else if (c === "'") {
          // `$'…'` is an ANSI-C string, with backslash escapes.
          stack.push({ ctx: out.length >= 2 && out[out.length - 2] === '$' ? 'ansi' : 'single', parens: 0 });
        } else if (c === '"') stack.push({ ctx: 'double', parens: 0 });
        else if (c === '`') {
          if (top.parens === -1 && stack.length > 1) stack.pop();
          else stack.push({ ctx: 'bare', parens: -1 });
        } else if (c === '$' && template[i] === '(') {
          out += '(';
          i += 1;
          stack.push({ ctx: 'bare', parens: 0 });
        } else if (c === '(' && top.parens >= 0) top.parens += 1;
        else if (c === ')' && stack.length > 1 && top.parens >= 0) {
          if (top.parens === 0) stack.pop();
          else top.parens -= 1;
        }
        break;
    }
  }
  return { command: out, env };
}

/** `${workdir}` of a role: the instance's folder, or for a role that runs as another user its `home/` inside it. */
export function roleWorkdir(instanceWorkdir: string, role: Pick<RoleSpec, 'user'>): string {
  return role.user === undefined ? instanceWorkdir : `${instanceWorkdir.replace(/\/+$/, '')}/home`;
}

/** The built-in values of a role on an instance, as both the agent and the controller compute them. */
export function roleBuiltins(
  role: Pick<RoleSpec, 'name' | 'user' | 'loadBalancer' | 'ports'>,
  at: {
    app: string;
    appDir: string;
    instance: string;
    ip: string;
    port: number;
    workdir: string;
    /** Every port of `ports:` by number (resolvePorts); absent: the role has none. */
    ports?: Readonly<Record<string, number>>;
    /** The path of each volume; absent: the role has none. */
    volumes?: Readonly<Record<string, string>>;
  },
): BuiltinValues {
  const first = role.ports ? Object.keys(role.ports)[0] : undefined;
  const firstNumber = first !== undefined ? at.ports?.[first] : undefined;
  const fixedFirst = firstPort(role);
  return {
    // A balancer listening on a fixed port publishes that one.
    port: String(role.loadBalancer?.listen ?? firstNumber ?? (typeof fixedFirst === 'number' ? fixedFirst : at.port)),
    ip: at.ip,
    instance: at.instance,
    role: role.name,
    app: at.app,
    workdir: roleWorkdir(at.workdir, role),
    appDir: at.appDir,
    ...(at.ports ? { ports: Object.fromEntries(Object.entries(at.ports).map(([k, v]) => [k, String(v)])) } : {}),
    ...(at.volumes ? { volumes: { ...at.volumes } } : {}),
  };
}

/** The role's port a `listen:` entry leads to, given the role's builtins. */
export function listenTarget(l: ListenSpec, builtins: BuiltinValues): number {
  return Number(l.to !== undefined ? (builtins.ports?.[l.to] ?? builtins.port) : builtins.port);
}

/** The exports a role publishes when serving, rendered from its templates. */
export function renderExports(role: Pick<RoleSpec, 'exports'>, builtins: BuiltinValues, imports: ResolvedImports): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(role.exports)) out[k] = renderTemplate(v, builtins, imports);
  return out;
}

/** Whether any export template refers to an imported value (so checking it needs the imports the agent applied). */
export function exportsUseImports(role: Pick<RoleSpec, 'exports'>): boolean {
  // `${ports.admin}` has a dot too, but is the role's own.
  return Object.values(role.exports).some((v) => templateRefs(v).some((r) => r.key !== undefined && !isNamedBuiltin(r.name)));
}
