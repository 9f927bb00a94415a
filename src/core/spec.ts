/**
 * The app file (`drover.yaml`): its raw schema, and the compiler from raw YAML to an
 * {@link AppSpec}. A file is refused whole, with every problem found at once, each naming the
 * field (`roles.api.imports[0]`) and the reason; nothing downstream ever sees a half-valid spec.
 */
import { z } from 'zod';
import { Composer, Lexer, LineCounter, Parser, type CST, type Document } from 'yaml';
import { cyclesOf } from './imports.js';
import { APP_FILE_LIMITS, MAX_FAILURE_THRESHOLD, MAX_ROLE_COUNT, MAX_SPARES, RESERVED_NAMES, shapeIssues } from './limits.js';
import { duration, err, intAtLeast } from './schema-words.js';
import { checkPolicyMetrics, compileMetrics, compileScale, metricsSchema, scaleSchema } from './policy-spec.js';
import { balancedRoles, defaultRequestPolicies } from './default-policy.js';
import { BUILTIN_VARS, envName, isBuiltin, isNamedBuiltin, templateRefs, type BuiltinVar } from './template.js';
import { compileListen, compileVolumes, crossRolePortIssues, listenSchema, portsSchema, rolePortIssues, volumesSchema } from './ports.js';
import { hostTemplateProblem, TENANT_NAME_RULE } from './tenants.js';
import { providerSettingsSchema, type ProviderSettings } from './provider-settings.js';
import type { AppSpec, HealthSpec, ImportRef, LoadBalancerSpec, RoleSpec, TenantsSpec } from './types.js';

/** One problem in an app file. `path` is empty for problems of the whole document. */
export interface SpecIssue {
  /** Dotted, with `[i]` for list items: `roles.api.imports[0]`. */
  readonly path: string;
  readonly message: string;
}

/** An app file that cannot be used. `message` lists every issue, one `path: reason` per line. */
export class SpecError extends Error {
  override readonly name = 'SpecError';
  readonly issues: readonly SpecIssue[];
  constructor(issues: readonly SpecIssue[], options?: { cause?: unknown }) {
    super(issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join('\n'), options);
    this.issues = issues;
  }
}

// ---------------------------------------------------------------------------------------------
// Raw schema

const NAME = /^[a-z][a-z0-9-]{0,62}$/;
const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** Same alphabet as a key in a `${role.key}` template reference. */
const EXPORT_KEY = /^[A-Za-z_][A-Za-z0-9_-]*$/;
const IMPORT = /^([a-z][a-z0-9-]{0,62})\.([A-Za-z_][A-Za-z0-9_-]*|\*)(\?)?$/;

const NAME_RULE = 'lowercase letters, digits and "-", starting with a letter, at most 63 characters';
/** A Unix user name as useradd takes it (a trailing `$` for machine accounts), or a uid. */
const USER_NAME = /^[a-z_][a-z0-9_-]{0,31}\$?$/;
/** 2^32 - 1 is (uid_t)-1, "no user", which setuid refuses. */
const MAX_UID = 4_294_967_294;
const USER_RULE = `a Unix user name (${USER_NAME.source}) or a uid from 0 to ${MAX_UID}`;

const reservedName = (n: string) => RESERVED_NAMES.has(n);


const command = (what: string) =>
  z
    .string(err('expected a string (a bash command)'))
    .refine((s) => s.trim() !== '', { error: 'expected a command, got an empty string' })
    .meta({ description: what });

/** YAML turns `port: 8080` and `debug: true` into numbers and booleans; a value is text here. */
const scalarText = z
  .union([z.string(), z.number(), z.boolean()], err('expected a string'))
  .transform((v) => String(v));

const envKey = z
  .string()
  .regex(ENV_KEY, { error: 'invalid variable name: expected letters, digits and "_", not starting with a digit', abort: true })
  .refine((k) => !k.startsWith('DROVER_'), { error: 'the DROVER_ prefix is reserved for the variables drover sets' });

const exportKey = z.string().regex(EXPORT_KEY, {
  error: 'invalid export name: expected letters, digits, "_" and "-", starting with a letter or "_"',
});

// A role `drover` or `drover-x` would turn its exports into DROVER_* variables of its importers
// (`${drover-x.url}` → DROVER_X_URL), where they could pass for drover's own.
const roleName = z
  .string()
  .regex(NAME, { error: `invalid role name: expected ${NAME_RULE}`, abort: true })
  .refine((n) => n !== 'drover' && !n.startsWith('drover-'), {
    error: 'role names "drover" and "drover-…" are reserved: their exports would become DROVER_ variables of their importers',
  })
  .refine((n) => !isNamedBuiltin(n), { error: (iss) => `role name ${JSON.stringify(iss.input)} is reserved: \${${String(iss.input)}.NAME} names the role's own ${String(iss.input)}` });

const userSchema = z
  .union(
    [
      z.int(`expected ${USER_RULE}`).min(0, `expected ${USER_RULE}`).max(MAX_UID, `expected ${USER_RULE}`),
      z.string().regex(USER_NAME),
      z.string().regex(/^\d{1,10}$/).refine((s) => Number(s) <= MAX_UID, `expected ${USER_RULE}`),
    ],
    err(`expected ${USER_RULE}`),
  )
  .transform((u) => String(u))
  .meta({
    description:
      "Runs the role's commands as this Unix user (a name or a uid). Needs the agent to run as root; the instance folder is made writable for that user.",
  });

const importRef = z
  .string(err('expected "role.key", "role.*" or "role.key?"'))
  .regex(IMPORT, {
    error: (iss) =>
      `expected "role.key", "role.*" or "role.key?", got ${JSON.stringify(typeof iss.input === 'string' ? iss.input : '')}`,
  })
  .transform((raw): ImportRef => {
    const [, role = '', key = '', optional] = IMPORT.exec(raw) ?? [];
    return { raw, role, key, optional: optional === '?' };
  })
  .meta({
    description:
      'An export of another role: "db.url", every export of every member "api.*", or optional with a trailing "?" ("cache.url?").',
  });

const healthSchema = z
  .strictObject(
    {
      http: z
        .string(err('expected a path starting with "/"'))
        // A regex rather than startsWith: that one becomes a non-standard JSON Schema `format`.
        .regex(/^\//, err('expected a path starting with "/"'))
        .optional()
        .meta({ description: 'Path probed with HTTP GET on 127.0.0.1:${port}.' }),
      tcp: z
        .literal(true, err('expected true (leave tcp out for no TCP check)'))
        .optional()
        .meta({ description: "Healthy when the role's port accepts TCP connections." }),
      exec: command('A bash command run with the role\'s environment; exit 0 is healthy.').optional(),
      interval: duration({ positive: true }).prefault('2s').meta({ description: 'Time between probes.' }),
      timeout: duration({ positive: true }).prefault('1s').meta({ description: 'Time one probe may take.' }),
      failureThreshold: intAtLeast(1, MAX_FAILURE_THRESHOLD)
        .default(3)
        .meta({ description: 'Consecutive failed probes before the check counts as failed.' }),
    },
    err('expected a mapping'),
  )
  .superRefine((h, ctx) => {
    const kinds = (['http', 'tcp', 'exec'] as const).filter((k) => h[k] !== undefined);
    if (kinds.length !== 1) {
      const found = kinds.length === 0 ? 'none' : kinds.join(' and ');
      ctx.addIssue({ code: 'custom', input: h, message: `expected exactly one of http, tcp or exec (found ${found})` });
    }
  })
  .meta({
    description: 'How the agent tells that the role works. Exactly one of http, tcp or exec.',
    // JSON Schema can say "exactly one" where zod needs a refinement; editors then flag it too.
    oneOf: [{ required: ['http'] }, { required: ['tcp'] }, { required: ['exec'] }],
  });

const loadBalancerSchema = z
  .strictObject(
    {
      driver: z
        .enum(['builtin', 'haproxy'], err('expected builtin or haproxy'))
        .prefault('builtin')
        .meta({ description: 'builtin: a Node reverse proxy inside the agent. haproxy: a supervised HAProxy driven through its runtime API.' }),
      listen: z
        .number(err('expected a port number'))
        .int(err('expected a port number'))
        .min(1, err('expected a port from 1 to 65535'))
        .max(65535, err('expected a port from 1 to 65535'))
        .optional()
        .meta({ description: 'Port the balancer listens on (127.0.0.1 for the local provider); default: the instance port (${port}).' }),
      members: z
        .string(err('expected role.key, e.g. api.endpoint'))
        .regex(/^[a-z][a-z0-9-]{0,62}\.[A-Za-z_][A-Za-z0-9_-]*$/, err('expected role.key, e.g. api.endpoint'))
        .meta({ description: "The imported export whose value is each member's address (http://ip:port or ip:port)." }),
      balance: z.enum(['roundrobin', 'leastconn'], err('expected roundrobin or leastconn')).prefault('roundrobin'),
      healthCheck: z
        .strictObject(
          {
            path: z.string().regex(/^\//, err('expected a path starting with "/"')).optional(),
            interval: duration({ positive: true }).prefault('2s'),
            failureThreshold: intAtLeast(1, MAX_FAILURE_THRESHOLD).default(3),
          },
          err('expected a mapping'),
        )
        .optional()
        .meta({ description: 'Active health checks of members (HTTP GET of path, else TCP connect).' }),
      ejectAfterFailures: intAtLeast(1, MAX_FAILURE_THRESHOLD).default(3).meta({ description: 'Consecutive failed connections that take a member out (passive health).' }),
      ejectFor: duration({ positive: true }).prefault('10s').meta({ description: 'How long an ejected member stays out before it is tried again.' }),
    },
    err('expected a mapping'),
  )
  .meta({ description: "Makes the role a load balancer over another role's members, reconfigured live as they come and go." });

/** Tenants one instance may hold: beyond this, a seat count per instance stops meaning much. */
export const MAX_TENANT_CAPACITY = 10_000;
/** Retries of a failing `add`: with backoff doubling to a minute, 100 retries span well over an hour. */
const MAX_TENANT_RETRIES = 100;

/**
 * A tenant command: a command like `start` (multi-line, templated with the role's values), run
 * with TENANT_ID, TENANT_NAME and TENANT_HOST in its environment. `${tenant}` is refused rather
 * than left for bash (which would expand an unset variable to nothing): the tenant's values reach
 * commands only as environment variables, never as shell text.
 */
const tenantCommand = (what: string) =>
  command(what).refine((s) => !templateRefs(s).some((r) => r.name === 'tenant' && r.key === undefined), {
    error: '${tenant} is not replaced in commands: use "$TENANT_NAME" (also $TENANT_ID, $TENANT_HOST), quoted',
  });

const tenantsSchema = z
  .strictObject(
    {
      capacity: intAtLeast(1, MAX_TENANT_CAPACITY).meta({ description: `Tenants one instance holds (1 to ${MAX_TENANT_CAPACITY}).` }),
      add: tenantCommand('bash command run on the chosen instance to add a tenant; exit 0 = placed (TENANT_ID, TENANT_NAME, TENANT_HOST in its environment).'),
      remove: tenantCommand('bash command run on the instance to remove a tenant, after its host is unrouted.'),
      move: tenantCommand(
        'bash command run on the new instance instead of add when a tenant moves off a live instance (TENANT_FROM_INSTANCE in its environment); remove then runs on the old one.',
      ).optional(),
      host: z
        .string(err('expected a host-name template such as "${tenant}.labs.example.test"'))
        .superRefine((t, ctx) => {
          const problem = hostTemplateProblem(t);
          if (problem) ctx.addIssue({ code: 'custom', input: t, message: problem });
        })
        .optional()
        .meta({ description: 'Host name of each tenant, e.g. "${tenant}.labs.example.test": ${tenant} is the tenant\'s name (' + TENANT_NAME_RULE + ').' }),
      addTimeout: duration({ positive: true }).prefault('2m').meta({ description: 'Time one run of add (or move) may take; past it, the run counts as failed.' }),
      removeTimeout: duration({ positive: true }).prefault('2m').meta({ description: 'Time one run of remove may take.' }),
      retries: intAtLeast(0, MAX_TENANT_RETRIES)
        .default(5)
        .meta({ description: 'Retries of a failing add (backoff 1 s doubling to 1 min) before the tenant is failed.' }),
    },
    err('expected a mapping'),
  )
  .meta({ description: 'The role hosts SaaS tenants: how many fit on one instance, and the commands that add and remove one.' });

const labelName = z.string(err('expected a label name')).min(1).max(63).regex(/^[A-Za-z0-9_.-]+$/, { error: 'label names are letters, digits, "_", "." and "-" (at most 63)' });
const labelValue = z.union([z.string(), z.number(), z.boolean()], err('expected a label value')).transform(String)
  .pipe(z.string().max(63).regex(/^[A-Za-z0-9_.:-]*$/, { error: 'label values are letters, digits, "_", ".", ":" and "-" (at most 63)' }));

const placementSchema = z
  .strictObject(
    {
      labels: z
        .record(labelName, labelValue, err('expected a mapping of label names to values, e.g. { disk: ssd }'))
        .refine((r) => Object.keys(r).length <= 16, { error: 'at most 16 labels' })
        .optional()
        .meta({ description: 'Only hosts with every one of these labels (`k: v`) take the role; this machine has host=<hostname> and local=true.' }),
      spread: z.enum(['host'], err('expected "host"')).optional().meta({ description: 'host: members go to hosts that run no member of the role yet, where there is one.' }),
      strict: z.boolean(err('expected true or false')).prefault(false)
        .meta({ description: 'With spread: a member is never stacked on a host that runs one already; with none free, the role waits (unplaceable).' }),
    },
    err('expected a mapping'),
  )
  .superRefine((p, ctx) => {
    if (p.strict && p.spread === undefined) ctx.addIssue({ code: 'custom', input: p, path: ['strict'], message: 'needs spread: host' });
  })
  .meta({ description: 'Which hosts may run the role\'s members (labels) and how they spread over hosts.' });

const roleSchema = z
  .strictObject(
    {
      count: intAtLeast(0, MAX_ROLE_COUNT)
        .optional()
        .meta({ description: 'Instances to run. Alone: a fixed size. With min/max: the size to start at (default min).' }),
      min: intAtLeast(0, MAX_ROLE_COUNT).optional().meta({ description: 'Fewest instances scaling may leave. Goes with max.' }),
      max: intAtLeast(1, MAX_ROLE_COUNT).optional().meta({ description: 'Most instances scaling may make. Goes with min.' }),
      start: command('Long-running command the agent starts and supervises (templated).').optional(),
      deploy: command('bash script run once before start: fetch, build, configure (templated).').optional(),
      stop: command('bash script run to stop the role; SIGTERM otherwise (templated).').optional(),
      update: command('bash script re-run whenever an import changes value or members (templated).').optional(),
      undeploy: command('bash script run after stop when the instance leaves the role (templated).').optional(),
      user: userSchema.optional(),
      env: z
        .record(envKey, scalarText, err('expected a mapping of variable names to values'))
        .optional()
        .meta({ description: "Extra environment for the role's commands; values are templated." }),
      exports: z
        .record(exportKey, scalarText, err('expected a mapping of export names to values'))
        .optional()
        .meta({ description: 'Values published once the role serves, e.g. url: "http://${ip}:${port}".' }),
      imports: z
        .array(importRef, err('expected a list such as [db.url, cache.url?]'))
        .max(100, { error: 'at most 100 imports' })
        .optional()
        .meta({ description: 'Exports of other roles this role needs; a required one holds the start until it resolves.' }),
      health: healthSchema.optional(),
      stopTimeout: duration({ positive: false })
        .prefault('10s')
        .meta({ description: 'Time stop (or SIGTERM) has before SIGKILL.' }),
      spares: intAtLeast(0, MAX_SPARES)
        .optional()
        .meta({ description: 'Warm spares kept for this role: agents running, no role yet, ready to take it in about a second.' }),
      warmup: duration({ positive: false })
        .prefault('30s')
        .meta({ description: "After an instance starts serving, its metrics are left out of averages this long." }),
      drainTimeout: duration({ positive: false })
        .prefault('30s')
        .meta({ description: 'How long a draining instance may take to finish in-flight work before it is stopped.' }),
      loadBalancer: loadBalancerSchema.optional(),
      ports: portsSchema.optional(),
      listen: listenSchema.optional(),
      volumes: volumesSchema.optional(),
      tenants: tenantsSchema.optional(),
      placement: placementSchema.optional(),
      provider: providerSettingsSchema
        .optional()
        .meta({ description: "Where this role's instances run (overrides the app's provider: block whole); docs/cloud.md." }),
      scale: scaleSchema.optional().meta({ description: 'Scaling policies; the largest count any of them wants wins. Needs min and max. Left out on a balanced role with min < max: Drover\'s default (adaptive on lb_requests); [] for none.' }),
      metrics: metricsSchema.optional().meta({ description: 'Metrics scraped besides the built-in vitals (cpu, host_cpu, load1, memory).' }),
    },
    err('expected a mapping'),
  )
  .superRefine((r, ctx) => {
    const issue = (path: string, message: string) => ctx.addIssue({ code: 'custom', input: r, path: [path], message });
    if (r.scale?.length && r.min === undefined && r.max === undefined) issue('scale', 'needs min and max: the bounds scaling stays within');
    if (r.loadBalancer && r.start !== undefined) issue('start', 'a load balancer role runs its driver; leave start out');
    if (r.placement && r.spares) issue('spares', 'a role with placement takes no warm spares (a spare\'s host is chosen before its role is known); leave spares out');
    if (r.tenants && r.loadBalancer) issue('tenants', 'a load balancer role cannot host tenants; put tenants on the role it balances');
    // A role with tenants needs max >= 1: `max` itself is at least 1 (intAtLeast), and a role with
    // `count` alone compiles to max MAX_ROLE_COUNT, so no further check is needed here.
    if (r.min !== undefined && r.max === undefined) issue('max', 'required when min is set');
    else if (r.max !== undefined && r.min === undefined) issue('min', 'required when max is set');
    else if (r.min !== undefined && r.max !== undefined) {
      if (r.min > r.max) issue('min', `must not exceed max (${r.max})`);
      else if (r.count !== undefined && (r.count < r.min || r.count > r.max))
        issue('count', `must be between min (${r.min}) and max (${r.max})`);
    }
  })
  .meta({
    description: 'One kind of server: how to deploy, start, stop and update it, what it exports and imports.',
    dependencies: { min: ['max'], max: ['min'] },
  });

type ParsedRole = z.output<typeof roleSchema>;

/** The raw app file, as written. {@link compileAppSpec} adds the checks across roles. */
export const appFileSchema = z
  .strictObject(
    {
      app: z
        .string(err(`expected a name of ${NAME_RULE}`))
        .regex(NAME, { ...err(`expected a name of ${NAME_RULE}`), abort: true })
        .refine((n) => !reservedName(n), { error: (iss) => `${JSON.stringify(iss.input)} is a reserved name` })
        .meta({ description: `The application's name: ${NAME_RULE}.` }),
      spares: intAtLeast(0, MAX_SPARES)
        .optional()
        .meta({ description: 'Warm spares kept for any role of the app; a scale-out takes one before making a new instance.' }),
      provider: providerSettingsSchema
        .optional()
        .meta({ description: 'Where instances run (local, ec2, openstack) for every role without its own; default: this machine and joined hosts. docs/cloud.md.' }),
      roles: z
        .record(roleName, roleSchema, err('expected a mapping of role names to roles'))
        .refine((roles) => Object.keys(roles).length > 0, { error: 'expected at least one role' })
        .meta({ description: 'The roles of the app, by name; started in the order their imports require.' }),
    },
    {
      error: (iss) =>
        iss.code === 'invalid_type'
          ? iss.input === undefined || iss.input === null
            ? 'the app file is empty: expected a mapping with "app" and "roles"'
            : 'expected a mapping with "app" and "roles"'
          : undefined,
    },
  );

/** Fallback wording for issues that no field above words itself. */
const errorMap = (iss: z.core.$ZodRawIssue): string | undefined => {
  switch (iss.code) {
    case 'invalid_type':
      if (iss.input === undefined) return 'required';
      return `expected ${TYPE_WORDS[iss.expected] ?? iss.expected}`;
    case 'invalid_value':
      return `expected ${iss.values.map((v) => String(v)).join(' or ')}`;
    default:
      return undefined;
  }
};

const TYPE_WORDS: Partial<Record<string, string>> = {
  object: 'a mapping',
  record: 'a mapping',
  array: 'a list',
  string: 'a string',
  number: 'a number',
  int: 'an integer',
  boolean: 'true or false',
};

/** A JSON Schema of the app file for editors (draft-07: the one YAML/JSON editors know best). */
export function appFileJsonSchema(): Record<string, unknown> {
  const { $schema, ...rest } = z.toJSONSchema(appFileSchema, { io: 'input', target: 'draft-07' });
  return {
    $schema,
    $id: 'urn:drover:app-file:v1',
    title: 'drover.yaml',
    description:
      'A drover app file: the roles of an application, how to run them, what they export and import. ' +
      'Reference: docs/app-file.md.',
    ...rest,
  };
}

// ---------------------------------------------------------------------------------------------
// Compile

/**
 * YAML text → {@link AppSpec}. Throws {@link SpecError} listing every problem, YAML syntax included.
 *
 * Bounded: the text is refused past {@link APP_FILE_LIMITS}`.bytes` before it is looked at; the
 * tokens are then checked for nesting, entries per collection and aliases before the YAML tree
 * is built (the duplicate-key check costs the square of a mapping's size, the tree is built by
 * recursion); the value is checked for its expanded size before any schema walks it. Each step
 * is linear in what the previous one let through. The controller still runs this in a worker
 * thread with a hard time limit (src/controller/app-file-parser.ts): these bounds give a clear
 * reason, the worker makes sure a case they miss cannot stall the controller.
 */
export function parseAppFile(text: string): AppSpec {
  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes > APP_FILE_LIMITS.bytes) {
    throw new SpecError([{ path: '', message: `the app file is ${bytes} bytes; at most ${APP_FILE_LIMITS.bytes} (256 KiB) are allowed` }]);
  }
  const lineCounter = new LineCounter();
  const where = (offset: number) => {
    const { line, col } = lineCounter.linePos(offset);
    return `line ${line}, column ${col}`;
  };
  const tokens = boundedTokens(text, lineCounter, where);
  let doc: Document.Parsed | undefined;
  for (const d of new Composer({ prettyErrors: false, uniqueKeys: true }).compose(tokens, true, text.length)) {
    if (doc) {
      throw new SpecError([{ path: '', message: `YAML syntax error at ${where(d.range[0])}: the app file holds more than one YAML document` }]);
    }
    doc = d;
  }
  if (!doc) return compileAppSpec(undefined);
  if (doc.errors.length > 0) {
    throw new SpecError(doc.errors.map((e) => ({ path: '', message: `YAML syntax error at ${where(e.pos[0])}: ${e.message}` })));
  }
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: APP_FILE_LIMITS.aliases });
  } catch (cause) {
    // Alias bombs and aliases to nowhere surface only here.
    const reason = cause instanceof Error ? cause.message : String(cause);
    throw new SpecError([{ path: '', message: `YAML error: ${reason}` }], { cause });
  }
  return compileAppSpec(raw);
}

/**
 * The YAML tokens (CST) of `text`, refused when they nest too deep, hold too many entries in one
 * collection or too many aliases. The lexer and parser are iterative; the nesting is read off the
 * parser's own stack as it grows, so a `[[[[…` of any length is refused before anything recurses.
 */
function boundedTokens(text: string, lineCounter: LineCounter, where: (offset: number) => string): CST.Token[] {
  const L = APP_FILE_LIMITS;
  const fail = (offset: number, message: string): never => {
    throw new SpecError([{ path: '', message: `${message} (at ${where(offset)})` }]);
  };
  const parser = new Parser(lineCounter.addNewLine);
  lineCounter.addNewLine(0);
  const tokens: CST.Token[] = [];
  // A level of nesting takes one entry of the parser's stack, plus a few for the document and
  // the scalar or item being read; the exact depth is checked again on the value (shapeIssues).
  const maxStack = L.depth + 8;
  for (const lexeme of new Lexer().lex(text)) {
    for (const t of parser.next(lexeme)) tokens.push(t);
    if (parser.stack.length > maxStack) fail(parser.offset, `nested more than ${L.depth} levels deep`);
  }
  for (const t of parser.end()) tokens.push(t);

  let aliases = 0;
  const stack: CST.Token[] = [...tokens];
  while (stack.length > 0) {
    const t = stack.pop()!;
    if (t.type === 'alias') {
      if (++aliases > L.aliases) fail(t.offset, `more than ${L.aliases} aliases`);
    } else if (t.type === 'document') {
      if (t.value) stack.push(t.value);
    } else if (t.type === 'block-map' || t.type === 'block-seq' || t.type === 'flow-collection') {
      if (t.items.length > L.entries) fail(t.offset, `a mapping or list with more than ${L.entries} entries`);
      for (const item of t.items) {
        if (item.key) stack.push(item.key);
        if (item.value) stack.push(item.value);
      }
    }
  }
  return tokens;
}

const COMMANDS: ReadonlySet<string> = new Set(['start', 'deploy', 'stop', 'update', 'undeploy']);
const TENANT_COMMANDS: ReadonlySet<string> = new Set(['add', 'remove', 'move']);

/**
 * Where a string may hold tabs and newlines: commands and scripts (a `deploy: |` block), and env
 * values (a certificate, a config snippet). Names, exports, paths, URLs and selectors are one
 * line: an export becomes a variable and a template value of other roles, where a newline would
 * split what their commands read.
 */
function isMultiLine(path: readonly (string | number)[]): boolean {
  if (path[0] !== 'roles' || typeof path[2] !== 'string') return false;
  if (path.length === 3) return COMMANDS.has(path[2]);
  if (path.length === 4) {
    return path[2] === 'env' || (path[2] === 'health' && path[3] === 'exec') || (path[2] === 'tenants' && TENANT_COMMANDS.has(String(path[3])));
  }
  return false;
}

/** A parsed app file (any JS value) → {@link AppSpec}, or {@link SpecError} listing every problem. */
export function compileAppSpec(raw: unknown): AppSpec {
  // The shape first: past a bound, no schema may walk the value.
  const shape = shapeIssues(raw, isMultiLine);
  const issues: SpecIssue[] = shape.issues.map((i) => ({ path: pathOf(i.path), message: i.message }));
  if (shape.fatal) throw new SpecError(issues);
  const rawRoles = isObject(raw) && Object.hasOwn(raw, 'roles') ? raw.roles : undefined;
  if (isObject(rawRoles) && Object.keys(rawRoles).length > APP_FILE_LIMITS.roles) {
    throw new SpecError([{ path: 'roles', message: `at most ${APP_FILE_LIMITS.roles} roles are allowed (found ${Object.keys(rawRoles).length})` }]);
  }
  // One reason per field: the shape's (a control character, a reserved name) is the one to fix first.
  const shaped = new Set(issues.map((i) => i.path));
  const parsed = appFileSchema.safeParse(raw, { error: errorMap });
  if (!parsed.success) issues.push(...fromZod(parsed.error.issues).filter((i) => !shaped.has(i.path)));

  // Roles are also compiled one by one so the checks across roles still run, and report,
  // when some other role (or `app`) is broken.
  const roles = new Map<string, RoleSpec>();
  const broken = new Set<string>();
  if (isObject(rawRoles)) {
    for (const [name, value] of Object.entries(rawRoles)) {
      if (!NAME.test(name)) continue;
      const role = reservedName(name) ? undefined : roleSchema.safeParse(value, { error: errorMap });
      if (role?.success) roles.set(name, buildRole(name, role.data, appProvider(raw)));
      else broken.add(name);
    }
  }
  // A balanced role with a range and no `scale:` of its own scales on Drover's default
  // (core/default-policy.ts).
  const balanced = balancedRoles(roles.values());
  for (const [name, role] of roles) {
    const written = isObject(rawRoles) ? rawRoles[name] : undefined;
    const given = (k: string) => isObject(written) && Object.hasOwn(written, k);
    // Tenant-hosting roles are sized by their tenants' seats, not by requests.
    if (balanced.has(name) && given('min') && given('max') && role.min < role.max && !given('scale') && !role.tenants) {
      roles.set(name, { ...role, scale: defaultRequestPolicies(), scaleDefault: true });
    }
  }
  for (const role of roles.values()) {
    role.metrics.forEach((m, i) => {
      if (reservedName(m.name)) issues.push({ path: pathOf(['roles', role.name, 'metrics', i, 'name']), message: `${q(m.name)} is a reserved name` });
    });
  }
  issues.push(...crossRoleIssues(roles, broken));

  if (issues.length > 0 || !parsed.success) throw new SpecError(dedupe(issues));
  return {
    app: parsed.data.app, spares: parsed.data.spares ?? 0, roles: Object.fromEntries(roles),
    ...(parsed.data.provider ? { provider: parsed.data.provider } : {}),
  };
}

/** The app's own `provider:` block when it is valid (its problems are reported by the whole file's parse). */
function appProvider(raw: unknown): ProviderSettings | undefined {
  if (!isObject(raw) || !Object.hasOwn(raw, 'provider') || raw.provider === undefined) return undefined;
  const p = providerSettingsSchema.safeParse(raw.provider);
  return p.success ? p.data : undefined;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function buildLoadBalancer(lb: NonNullable<ParsedRole['loadBalancer']>): LoadBalancerSpec {
  const [role = '', key = ''] = lb.members.split('.');
  return {
    driver: lb.driver,
    ...(lb.listen !== undefined ? { listen: lb.listen } : {}),
    members: { role, key },
    balance: lb.balance,
    ...(lb.healthCheck
      ? { healthCheck: { ...(lb.healthCheck.path !== undefined ? { path: lb.healthCheck.path } : {}), intervalMs: lb.healthCheck.interval, failureThreshold: lb.healthCheck.failureThreshold } }
      : {}),
    ejectAfterFailures: lb.ejectAfterFailures,
    ejectForMs: lb.ejectFor,
  };
}

/** Upper bound of a role with only `count` (or nothing) in the file. */
export { MAX_ROLE_COUNT };

function buildRole(name: string, r: ParsedRole, appProvider?: ProviderSettings): RoleSpec {
  // `count` alone is a size, not a bound: `drover scale` may move it anywhere in [0, MAX_ROLE_COUNT].
  const fixed = r.min === undefined && r.max === undefined;
  const min = r.min ?? 0;
  // A role binding fixed ports has one member per host: with `count` alone, scaling stops at 1
  // unless its members are spread one per host.
  const onePerHost = Object.values(r.ports ?? {}).some((p) => typeof p === 'number') && !(r.placement?.spread === 'host' && r.placement.strict);
  const max = r.max ?? (fixed ? (onePerHost ? 1 : MAX_ROLE_COUNT) : 1);
  // Absent steps are left out rather than set to undefined, so a spec survives a JSON round trip unchanged.
  const steps: { -readonly [K in 'start' | 'deploy' | 'stop' | 'update' | 'undeploy' | 'health']?: RoleSpec[K] } = {};
  for (const k of ['start', 'deploy', 'stop', 'update', 'undeploy'] as const) if (r[k] !== undefined) steps[k] = r[k];
  if (r.health) steps.health = buildHealth(r.health);
  const user = r.user !== undefined ? { user: r.user } : {};
  return {
    name,
    min,
    max,
    count: r.count ?? (fixed ? 1 : min),
    ...steps,
    ...user,
    env: { ...r.env },
    exports: { ...r.exports },
    imports: r.imports ?? [],
    stopTimeoutMs: r.stopTimeout,
    spares: r.spares ?? 0,
    warmupMs: r.warmup,
    drainTimeoutMs: r.drainTimeout,
    ...(r.loadBalancer ? { loadBalancer: buildLoadBalancer(r.loadBalancer) } : {}),
    ...(r.ports ? { ports: { ...r.ports } } : {}),
    ...(r.listen !== undefined ? { listen: compileListen(r.listen) } : {}),
    ...(r.volumes ? { volumes: compileVolumes(r.volumes) } : {}),
    ...(r.tenants ? { tenants: buildTenants(r.tenants) } : {}),
    ...(r.placement ? { placement: { labels: { ...r.placement.labels }, ...(r.placement.spread ? { spread: r.placement.spread } : {}), strict: r.placement.strict } } : {}),
    // A role's own block replaces the app's whole (no field-by-field merge: a role on another cloud shares nothing).
    ...((r.provider ?? appProvider) ? { provider: r.provider ?? appProvider } : {}),
    scale: compileScale(r.scale ?? []),
    metrics: compileMetrics(r.metrics ?? []),
  };
}

function buildTenants(t: NonNullable<ParsedRole['tenants']>): TenantsSpec {
  return {
    capacity: t.capacity,
    add: t.add,
    remove: t.remove,
    ...(t.move !== undefined ? { move: t.move } : {}),
    ...(t.host !== undefined ? { host: t.host } : {}),
    addTimeoutMs: t.addTimeout,
    removeTimeoutMs: t.removeTimeout,
    maxAttempts: t.retries + 1,
  };
}

function buildHealth(h: NonNullable<ParsedRole['health']>): HealthSpec {
  const kind = h.http !== undefined ? { http: h.http } : h.tcp !== undefined ? { tcp: h.tcp } : { exec: h.exec ?? '' };
  return { ...kind, intervalMs: h.interval, timeoutMs: h.timeout, failureThreshold: h.failureThreshold };
}

/**
 * Imports and template references against the other roles, and cycles of required imports.
 * A role in `broken` exists but did not compile: refs to it are neither refused nor checked.
 */
function crossRoleIssues(roles: ReadonlyMap<string, RoleSpec>, broken: ReadonlySet<string>): SpecIssue[] {
  const issues: SpecIssue[] = [];
  const exists = (name: string) => roles.has(name) || broken.has(name);
  const exportsOf = (name: string) => roles.get(name)?.exports;

  for (const role of roles.values()) {
    const lb = role.loadBalancer;
    if (lb) {
      const path = pathOf(['roles', role.name, 'loadBalancer', 'members']);
      const covered = role.imports.some((ref) => ref.role === lb.members.role && (ref.key === '*' || ref.key === lb.members.key));
      if (!exists(lb.members.role)) issues.push({ path, message: `no role ${q(lb.members.role)}` });
      else if (!covered) issues.push({ path, message: `${lb.members.role}.${lb.members.key} is not imported (add ${q(`${lb.members.role}.*`)} to imports)` });
      else if (exportsOf(lb.members.role) && !Object.hasOwn(exportsOf(lb.members.role) ?? {}, lb.members.key)) {
        issues.push({ path, message: `role ${q(lb.members.role)} exports no ${q(lb.members.key)}` });
      }
    }
    for (const [path, message] of rolePortIssues(role)) issues.push({ path: pathOf(['roles', role.name, ...path]), message });
    const fixedPort = Object.entries(role.ports ?? {}).find(([, p]) => typeof p === 'number');
    if (fixedPort && !(role.placement?.spread === 'host' && role.placement.strict)) {
      const why = `a role binding a fixed port (ports.${fixedPort[0]}: ${String(fixedPort[1])}) runs one member per host`;
      const fix = 'or give placement: { spread: host, strict: true } (joined hosts), or use listen: for a stable port';
      if (role.count > 1) issues.push({ path: pathOf(['roles', role.name, 'count']), message: `${why}: count must be at most 1, ${fix}` });
      else if (role.max > 1) issues.push({ path: pathOf(['roles', role.name, 'max']), message: `${why}: max must be 1, ${fix}` });
    }
    for (const m of checkPolicyMetrics(role.scale, role.metrics, balancedRoles(roles.values()).has(role.name))) issues.push({ path: pathOf(['roles', role.name]) + '.' + m.path, message: m.message });
    const seen = new Map<string, number>();
    role.imports.forEach((ref, i) => {
      const path = pathOf(['roles', role.name, 'imports', i]);
      const add = (message: string) => issues.push({ path, message });
      if (ref.role === role.name) return add('a role cannot import itself');
      if (!exists(ref.role)) return add(`no role ${q(ref.role)}`);
      const id = `${ref.role}.${ref.key}`;
      const first = seen.get(id);
      if (first !== undefined) return add(`duplicate import ${q(id)} (already at imports[${first}])`);
      seen.set(id, i);
      const exported = exportsOf(ref.role);
      if (exported && ref.key !== '*' && !Object.hasOwn(exported, ref.key))
        add(`role ${q(ref.role)} exports no ${q(ref.key)}`);
    });

    for (const [path, template] of templatesOf(role)) {
      const reported = new Set<string>();
      for (const ref of templateRefs(template)) {
        if (reported.has(ref.text)) continue;
        reported.add(ref.text);
        const message =
          ref.key === undefined
            ? bareRefProblem(path, ref.name, ref.text)
            : isNamedBuiltin(ref.name)
              ? namedRefProblem(role, path, ref.name, ref.key, ref.text)
              : templateRefProblem(role, ref.name, ref.key, ref.text, exists, exportsOf);
        if (message) issues.push({ path: pathOf(['roles', role.name, ...path]), message });
      }
    }
  }

  const graph = new Map(
    [...roles.values()].map((r) => [
      r.name,
      r.imports.filter((ref) => !ref.optional && ref.role !== r.name).map((ref) => ref.role),
    ]),
  );
  for (const i of crossRolePortIssues([...roles.values()])) issues.push({ path: pathOf(['roles', i.role, ...i.path]), message: i.message });
  for (const cycle of cyclesOf(graph)) issues.push({ path: '', message: `import cycle: ${cycle.join(' → ')}` });
  return issues;
}

const BUILTIN_LIST = BUILTIN_VARS.map((b) => `\${${b}}`).join(', ');
/** Built-ins with no value where the controller renders a role metric's url (once per role, not per instance). */
const PER_INSTANCE: ReadonlySet<string> = new Set(['port', 'ip', 'instance', 'workdir']);

/**
 * A bare `${name}` where nothing but Drover reads the text: an export or a role metric's url is
 * never run by a shell, so a name Drover does not know would stay there as written.
 */
function bareRefProblem(path: readonly (string | number)[], name: string, text: string): string | undefined {
  const plain = path[0] === 'exports' ? 'exports are' : path[0] === 'metrics' ? "a role metric's url is" : undefined;
  if (!plain) return undefined;
  if (!isBuiltin(name)) return `${text} is not a Drover name, and ${plain} not run by a shell: it would stay as written (names: ${BUILTIN_LIST}, or role.key of an import)`;
  if (path[0] === 'metrics' && PER_INSTANCE.has(name)) return `${text} has no value here: a role metric is scraped once by the controller, not per instance`;
  return undefined;
}

/**
 * What is accepted but likely not meant, each naming the field: a built-in that shares its name
 * with a role (`${app}` is the app's name, not role `app`'s export), a name left for bash that
 * looks like a misspelt built-in (`${appdir}`: unset in bash, so empty), and a `${name}` in an env
 * value, which no shell expands. `drover validate`, `apply` and `up` print them; the API returns
 * them as `warnings`.
 */
export function appFileWarnings(spec: AppSpec): SpecIssue[] {
  const out: SpecIssue[] = [];
  for (const role of Object.values(spec.roles)) {
    for (const [path, template] of templatesOf(role)) {
      const at = pathOf(['roles', role.name, ...path]);
      const seen = new Set<string>();
      for (const ref of templateRefs(template)) {
        if (ref.key !== undefined || seen.has(ref.text)) continue;
        seen.add(ref.text);
        if (isBuiltin(ref.name)) {
          if (Object.hasOwn(spec.roles, ref.name)) {
            out.push({ path: at, message: `${ref.text} is the built-in (${BUILTIN_MEANING[ref.name]}), not an export of role ${q(ref.name)}; for its export write \${${ref.name}.KEY}` });
          }
          continue;
        }
        const near = nearBuiltin(ref.name);
        if (near && path[0] !== 'exports' && path[0] !== 'metrics') {
          out.push({ path: at, message: `${ref.text} is not a Drover name (left as written, for bash it is an unset variable); did you mean \${${near}}?` });
        } else if (path[0] === 'env') {
          out.push({ path: at, message: `${ref.text} is not a Drover name, and env values are not run by a shell: the role gets it as written` });
        }
      }
    }
  }
  return out;
}

const BUILTIN_MEANING: Readonly<Record<BuiltinVar, string>> = {
  port: "the instance's port for the role",
  ip: "the instance's address",
  instance: "the instance's id",
  role: "the role's name",
  app: "the app's name",
  workdir: "the instance's folder",
  appDir: 'the folder of the app file',
};

/** The built-in a name seems a misspelling of: same letters in another case or with `_`/`-`, or one or two edits away. */
function nearBuiltin(name: string): BuiltinVar | undefined {
  if (/^[A-Z0-9_]+$/.test(name)) return undefined; // an environment variable, by convention
  const squash = (x: string) => x.toLowerCase().replace(/[-_]/g, '');
  for (const b of BUILTIN_VARS) {
    if (squash(b) === squash(name) || `${squash(b)}id` === squash(name)) return b;
  }
  if (name.length < 4) return undefined;
  for (const b of BUILTIN_VARS) if (b.length >= 4 && editDistance(b.toLowerCase(), name.toLowerCase()) <= 2) return b;
  return undefined;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

/** `${ports.NAME}` / `${volumes.NAME}`: a name the role declares, where it has a value. */
function namedRefProblem(role: RoleSpec, path: readonly (string | number)[], name: 'ports' | 'volumes', key: string, text: string): string | undefined {
  const declared = name === 'ports' ? Object.keys(role.ports ?? {}) : [...(role.volumes ?? [])];
  if (!declared.includes(key)) {
    const field = name === 'ports' ? 'ports' : 'volumes';
    return `${text}: role ${q(role.name)} has no ${name === 'ports' ? 'port' : 'volume'} ${q(key)} (${declared.length ? `${field}: ${declared.join(', ')}` : `declare it under ${field}:`})`;
  }
  if (path[0] === 'metrics') return `${text} has no value here: a role metric is scraped once by the controller, not per instance`;
  if (name === 'volumes' && path[0] === 'exports') return `${text}: a volume's path is local to its host, and exports are read on other hosts`;
  return undefined;
}

function templateRefProblem(
  role: RoleSpec,
  name: string,
  key: string,
  text: string,
  exists: (name: string) => boolean,
  exportsOf: (name: string) => Readonly<Record<string, string>> | undefined,
): string | undefined {
  if (key === '*')
    return `${text} cannot be used in a template: name one export, e.g. \${${name}.url}, or read $${envName(name, 'members')}`;
  if (name === role.name) return `${text} refers to the role's own export; a role cannot import itself`;
  if (!exists(name)) return `${text} refers to no role ${q(name)}`;
  const byName = role.imports.filter((ref) => ref.role === name);
  if (byName.some((ref) => ref.key === key)) return undefined; // the import itself is checked above
  if (!byName.some((ref) => ref.key === '*')) return `${text} is not imported (add ${q(`${name}.${key}`)} to imports)`;
  const exported = exportsOf(name);
  if (exported && !Object.hasOwn(exported, key)) return `${text}: role ${q(name)} exports no ${q(key)}`;
  return undefined;
}

/** Every templated text of a role, with its path below the role. */
function templatesOf(role: RoleSpec): [(string | number)[], string][] {
  const out: [(string | number)[], string][] = [];
  for (const k of ['start', 'deploy', 'stop', 'update', 'undeploy'] as const) {
    const t = role[k];
    if (t !== undefined) out.push([[k], t]);
  }
  for (const [k, v] of Object.entries(role.env)) out.push([['env', k], v]);
  for (const [k, v] of Object.entries(role.exports)) out.push([['exports', k], v]);
  if (role.health?.exec !== undefined) out.push([['health', 'exec'], role.health.exec]);
  if (role.tenants) {
    for (const k of ['add', 'remove', 'move'] as const) {
      const t = role.tenants[k];
      if (t !== undefined) out.push([['tenants', k], t]);
    }
  }
  role.metrics.forEach((m, i) => {
    if (m.scope === 'role') out.push([['metrics', i, 'url'], m.url]);
  });
  return out;
}

function fromZod(zodIssues: readonly z.core.$ZodIssue[]): SpecIssue[] {
  const out: SpecIssue[] = [];
  for (const iss of zodIssues) {
    const path = pathOf(iss.path);
    if (iss.code === 'unrecognized_keys') {
      for (const key of iss.keys) out.push({ path, message: `unknown key ${q(key)}` });
    } else if (iss.code === 'invalid_key') {
      out.push({ path, message: iss.issues[0]?.message ?? iss.message });
    } else {
      out.push({ path, message: iss.message });
    }
  }
  return out;
}

const PLAIN_KEY = /^[A-Za-z_][A-Za-z0-9_-]*$/;

/** `['roles', 'api', 'imports', 0]` → `roles.api.imports[0]`; odd keys are quoted: `env["A B"]`. */
function pathOf(path: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (typeof seg === 'string' && PLAIN_KEY.test(seg)) out += out ? `.${seg}` : seg;
    else out += `[${JSON.stringify(String(seg))}]`;
  }
  return out;
}

function q(s: string): string {
  return JSON.stringify(s);
}

function dedupe(issues: readonly SpecIssue[]): SpecIssue[] {
  const seen = new Set<string>();
  return issues.filter((i) => {
    const k = `${i.path}\0${i.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}
