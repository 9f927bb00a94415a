import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { stringify } from 'yaml';
import { appFileJsonSchema, compileAppSpec, parseAppFile, SpecError } from './spec.js';
import type { AppSpec } from './types.js';

/** The error lines a file is refused with; fails if it is accepted or fails some other way. */
function refusal(text: string): string[] {
  try {
    parseAppFile(text);
  } catch (e) {
    assert.ok(e instanceof SpecError, `expected a SpecError, got ${String(e)}`);
    return e.message.split('\n');
  }
  assert.fail('expected the file to be refused');
}

const yaml = (lines: string[]) => `${lines.join('\n')}\n`;

/** What a role without scaling settings compiles to. */
const ELASTIC_DEFAULTS = { spares: 0, warmupMs: 30_000, drainTimeoutMs: 30_000, scale: [], metrics: [] };

test('a minimal file compiles with every default filled in', () => {
  const spec = parseAppFile(yaml(['app: hello', 'roles:', '  web:', '    start: node server.mjs']));
  assert.deepEqual(spec, {
    app: 'hello',
    spares: 0,
    roles: {
      web: {
        name: 'web',
        min: 0,
        max: 1000,
        count: 1,
        start: 'node server.mjs',
        env: {},
        exports: {},
        imports: [],
        stopTimeoutMs: 10_000,
        ...ELASTIC_DEFAULTS,
      },
    },
  });
});

const FULL = yaml([
  '# yaml-language-server: $schema=../schema/drover.schema.json',
  'app: three-tier',
  'roles:',
  '  db:',
  '    count: 1',
  '    start: node ${appDir}/db.mjs --port ${port}',
  '    exports: { url: "http://${ip}:${port}" }',
  '    health: { tcp: true }',
  '    stopTimeout: 1m',
  '  cache:',
  '    count: 0',
  '    start: node cache.mjs',
  '    exports: { url: "redis://${ip}:${port}", size: 64 }',
  '  api:',
  '    min: 2',
  '    max: 6',
  '    count: 3',
  '    deploy: |',
  '      npm ci --prefix ${workdir}',
  '    start: node api.mjs --db ${db.url} --cache "${cache.url}"',
  '    stop: kill -TERM "$PID"',
  '    update: echo "db is now ${db.url}, home is ${HOME}"',
  '    undeploy: rm -rf ${workdir}/node_modules',
  '    env: { DB: "${db.url}", WORKERS: 4, DEBUG: false }',
  '    exports: { endpoint: "http://${ip}:${port}" }',
  '    imports: [db.url, cache.*?]',
  '    health: { http: /health, interval: 1.5s, timeout: 500ms, failureThreshold: 5 }',
  '  lb:',
  '    start: node lb.mjs',
  '    imports: [api.*]',
  '    health: { exec: "curl -fs http://127.0.0.1:${port}/" }',
  '    stopTimeout: 0s',
]);

test('a full file compiles field by field', () => {
  const spec = parseAppFile(FULL);
  assert.equal(spec.app, 'three-tier');
  assert.deepEqual(Object.keys(spec.roles), ['db', 'cache', 'api', 'lb'], 'roles keep file order');
  const { db, cache, api, lb } = spec.roles;
  assert.deepEqual(db, {
    name: 'db',
    min: 0,
    max: 1000,
    count: 1,
    start: 'node ${appDir}/db.mjs --port ${port}',
    env: {},
    exports: { url: 'http://${ip}:${port}' },
    imports: [],
    health: { tcp: true, intervalMs: 2000, timeoutMs: 1000, failureThreshold: 3 },
    stopTimeoutMs: 60_000,
    ...ELASTIC_DEFAULTS,
  });
  assert.deepEqual([cache?.min, cache?.max, cache?.count], [0, 1000, 0]);
  assert.deepEqual(cache?.exports, { url: 'redis://${ip}:${port}', size: '64' });
  assert.deepEqual(api, {
    name: 'api',
    min: 2,
    max: 6,
    count: 3,
    deploy: 'npm ci --prefix ${workdir}\n',
    start: 'node api.mjs --db ${db.url} --cache "${cache.url}"',
    stop: 'kill -TERM "$PID"',
    update: 'echo "db is now ${db.url}, home is ${HOME}"',
    undeploy: 'rm -rf ${workdir}/node_modules',
    env: { DB: '${db.url}', WORKERS: '4', DEBUG: 'false' },
    exports: { endpoint: 'http://${ip}:${port}' },
    imports: [
      { raw: 'db.url', role: 'db', key: 'url', optional: false },
      { raw: 'cache.*?', role: 'cache', key: '*', optional: true },
    ],
    health: { http: '/health', intervalMs: 1500, timeoutMs: 500, failureThreshold: 5 },
    stopTimeoutMs: 10_000,
    ...ELASTIC_DEFAULTS,
  });
  assert.deepEqual(lb?.imports, [{ raw: 'api.*', role: 'api', key: '*', optional: false }]);
  assert.deepEqual(lb?.health, { exec: 'curl -fs http://127.0.0.1:${port}/', intervalMs: 2000, timeoutMs: 1000, failureThreshold: 3 });
  assert.equal(lb?.stopTimeoutMs, 0);
});

test('a compiled spec survives a JSON round trip unchanged', () => {
  const spec = parseAppFile(FULL);
  assert.deepEqual(JSON.parse(JSON.stringify(spec)), spec);
});

test('compileAppSpec takes an already parsed object', () => {
  const spec = compileAppSpec({ app: 'x', roles: { a: { min: 1, max: 4 } } });
  assert.deepEqual([spec.roles.a?.min, spec.roles.a?.max, spec.roles.a?.count], [1, 4, 1], 'count defaults to min');
});

test('durations take ms, s, m and h, with decimals', () => {
  const ms = (d: string) => parseAppFile(yaml(['app: x', 'roles:', '  a:', `    stopTimeout: ${d}`])).roles.a?.stopTimeoutMs;
  assert.equal(ms('500ms'), 500);
  assert.equal(ms('2s'), 2000);
  assert.equal(ms('1.5s'), 1500);
  assert.equal(ms('1m'), 60_000);
  assert.equal(ms('1h'), 3_600_000);
});

// ---- refusals, each with its exact message ----------------------------------------------------

test('an unknown key is named', () => {
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  db:', '    strat: node db.mjs'])), ['roles.db: unknown key "strat"']);
  assert.deepEqual(refusal(yaml(['app: x', 'role: {}', 'roles: { a: {} }'])), ['unknown key "role"']);
});

test('a missing field is required', () => {
  assert.deepEqual(refusal(yaml(['roles: { a: {} }'])), ['app: required']);
  assert.deepEqual(refusal(yaml(['app: x'])), ['roles: required']);
});

test('names must be lowercase', () => {
  assert.deepEqual(refusal(yaml(['app: Shop', 'roles:', '  Web: {}', '  ok: {}'])), [
    'app: expected a name of lowercase letters, digits and "-", starting with a letter, at most 63 characters',
    'roles.Web: invalid role name: expected lowercase letters, digits and "-", starting with a letter, at most 63 characters',
  ]);
  assert.deepEqual(refusal(yaml(['app: x', 'roles: {}'])), ['roles: expected at least one role']);
});

test('a bad count is refused', () => {
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  db:', '    count: -1'])), ['roles.db.count: expected an integer >= 0']);
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  db:', '    count: 1.5'])), ['roles.db.count: expected an integer >= 0']);
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  db:', '    count: two'])), ['roles.db.count: expected an integer >= 0']);
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  db:', '    min: 0', '    max: 0'])), ['roles.db.max: expected an integer >= 1']);
});

test('min, max and count must agree', () => {
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  db:', '    min: 3', '    max: 2'])), ['roles.db.min: must not exceed max (2)']);
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  db:', '    min: 1', '    max: 3', '    count: 5'])), [
    'roles.db.count: must be between min (1) and max (3)',
  ]);
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  db:', '    min: 1'])), ['roles.db.max: required when min is set']);
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  db:', '    max: 3'])), ['roles.db.min: required when max is set']);
});

test('a bad duration is refused', () => {
  for (const d of ['5', '5d', '"5 s"', '-1s', '.5s', 'soon', '[1s]']) {
    assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  db:', `    health: { tcp: true, interval: ${d} }`])), [
      'roles.db.health.interval: expected a duration such as "5s" or "500ms"',
    ]);
  }
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  db:', '    health: { tcp: true, timeout: 0s }'])), [
    'roles.db.health.timeout: expected a duration greater than 0',
  ]);
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  db:', '    stopTimeout: 1000h'])), [
    'roles.db.stopTimeout: expected a duration of at most 24h',
  ]);
});

test('health takes exactly one kind of check', () => {
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  db:', '    health: { http: /health, tcp: true }'])), [
    'roles.db.health: expected exactly one of http, tcp or exec (found http and tcp)',
  ]);
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  db:', '    health: { interval: 5s }'])), [
    'roles.db.health: expected exactly one of http, tcp or exec (found none)',
  ]);
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  db:', '    health: { http: health }'])), [
    'roles.db.health.http: expected a path starting with "/"',
  ]);
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  db:', '    health: { tcp: false }'])), [
    'roles.db.health.tcp: expected true (leave tcp out for no TCP check)',
  ]);
});

test('env and export names are checked', () => {
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  db:', '    env: { "1X": a, "A B": b }', '    exports: { "-u": c }'])), [
    'roles.db.env["1X"]: invalid variable name: expected letters, digits and "_", not starting with a digit',
    'roles.db.env["A B"]: invalid variable name: expected letters, digits and "_", not starting with a digit',
    'roles.db.exports["-u"]: invalid export name: expected letters, digits, "_" and "-", starting with a letter or "_"',
  ]);
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  db:', '    env: { __proto__: a }'])), [
    'roles.db.env.__proto__: "__proto__" is a reserved name',
  ]);
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  db:', '    env: { A: { b: c } }'])), ['roles.db.env.A: expected a string']);
});

test('a malformed import is refused', () => {
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  db: {}', '  api:', '    imports: [db, db.url??, 7]'])), [
    'roles.api.imports[0]: expected "role.key", "role.*" or "role.key?", got "db"',
    'roles.api.imports[1]: expected "role.key", "role.*" or "role.key?", got "db.url??"',
    'roles.api.imports[2]: expected "role.key", "role.*" or "role.key?"',
  ]);
});

test('an import of an unknown role is refused', () => {
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  db: {}', '  api:', '    imports: [dbx.url]'])), [
    'roles.api.imports[0]: no role "dbx"',
  ]);
});

test('a role cannot import itself', () => {
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  api:', '    exports: { u: x }', '    imports: [api.u]'])), [
    'roles.api.imports[0]: a role cannot import itself',
  ]);
});

test('an import of a key the role does not export is refused', () => {
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  db:', '    exports: { dsn: x }', '  api:', '    imports: [db.url]'])), [
    'roles.api.imports[0]: role "db" exports no "url"',
  ]);
});

test('a duplicate import is refused', () => {
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  db:', '    exports: { url: x }', '  api:', '    imports: [db.url, db.url?]'])), [
    'roles.api.imports[1]: duplicate import "db.url" (already at imports[0])',
  ]);
});

test('a template may only use what the role imports', () => {
  const lines = [
    'app: x',
    'roles:',
    '  db:',
    '    exports: { url: x, port: "5432" }',
    '  api:',
    '    imports: [db.url]',
    '    start: run ${db.url} ${db.port} ${HOME} ${1}',
    '    env: { P: "${db.port}" }',
    '    exports: { self: "${api.self}" }',
    '    health: { exec: "check ${nope.x}" }',
  ];
  assert.deepEqual(refusal(yaml(lines)), [
    'roles.api.start: ${db.port} is not imported (add "db.port" to imports)',
    'roles.api.env.P: ${db.port} is not imported (add "db.port" to imports)',
    "roles.api.exports.self: ${api.self} refers to the role's own export; a role cannot import itself",
    'roles.api.health.exec: ${nope.x} refers to no role "nope"',
  ]);
});

test('a wildcard import covers every exported key in templates, and only those', () => {
  const ok = parseAppFile(yaml(['app: x', 'roles:', '  db:', '    exports: { url: x }', '  api:', '    imports: [db.*]', '    start: run ${db.url}']));
  assert.equal(ok.roles.api?.start, 'run ${db.url}');
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  db:', '    exports: { url: x }', '  api:', '    imports: [db.*]', '    start: run ${db.dsn}'])), [
    'roles.api.start: ${db.dsn}: role "db" exports no "dsn"',
  ]);
});

test('${role.*} is refused inside a template', () => {
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  db:', '    exports: { url: x }', '  api:', '    imports: [db.*]', '    start: run ${db.*}'])), [
    'roles.api.start: ${db.*} cannot be used in a template: name one export, e.g. ${db.url}, or read $DB_MEMBERS',
  ]);
});

test('a cycle of required imports is refused with the cycle spelled out', () => {
  const lines = [
    'app: x',
    'roles:',
    '  web:',
    '    exports: { u: x }',
    '    imports: [db.u]',
    '  db:',
    '    exports: { u: x }',
    '    imports: [api.u]',
    '  api:',
    '    exports: { u: x }',
    '    imports: [web.u]',
  ];
  assert.deepEqual(refusal(yaml(lines)), ['import cycle: api → web → db → api']);
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  db:', '    exports: { u: x }', '    imports: [api.*]', '  api:', '    exports: { u: x }', '    imports: [db.u]'])), [
    'import cycle: api → db → api',
  ]);
});

test('optional imports may form a cycle', () => {
  const spec = parseAppFile(yaml(['app: x', 'roles:', '  a:', '    exports: { u: x }', '    imports: [b.u?]', '  b:', '    exports: { u: x }', '    imports: [a.u]']));
  assert.deepEqual(Object.keys(spec.roles), ['a', 'b']);
});

test('YAML syntax errors carry their line and column', () => {
  assert.deepEqual(refusal('app: x\nroles: [1, 2\nweb: {}\n'), [
    'YAML syntax error at line 3, column 1: Flow sequence in block collection must be sufficiently indented and end with a ]',
  ]);
  assert.deepEqual(refusal('app: x\napp: y\nroles: { a: {} }\n'), ['YAML syntax error at line 2, column 1: Map keys must be unique']);
});

test('a file that is not a mapping is refused whole', () => {
  assert.deepEqual(refusal(''), ['the app file is empty: expected a mapping with "app" and "roles"']);
  assert.deepEqual(refusal('- a\n- b\n'), ['expected a mapping with "app" and "roles"']);
});

test('every issue is reported at once, with paths and reasons apart', () => {
  const lines = [
    'app: x',
    'roles:',
    '  db:',
    '    count: -1',
    '  api:',
    '    imports: [dbx.url]',
    '  web:',
    '    imports: [api.*]',
    '    strat: x',
  ];
  try {
    parseAppFile(yaml(lines));
    assert.fail('expected a SpecError');
  } catch (e) {
    assert.ok(e instanceof SpecError);
    assert.equal(e.name, 'SpecError');
    assert.deepEqual(e.issues, [
      { path: 'roles.db.count', message: 'expected an integer >= 0' },
      { path: 'roles.web', message: 'unknown key "strat"' },
      { path: 'roles.api.imports[0]', message: 'no role "dbx"' },
    ]);
    assert.equal(e.message, e.issues.map((i) => `${i.path}: ${i.message}`).join('\n'));
  }
});

// ---- JSON Schema -------------------------------------------------------------------------------

test('schema/drover.schema.json is up to date (run: npx tsx scripts/write-schema.ts)', () => {
  const onDisk = readFileSync(new URL('../../schema/drover.schema.json', import.meta.url), 'utf8');
  assert.equal(onDisk, `${JSON.stringify(appFileJsonSchema(), null, 2)}\n`);
});

test('the JSON Schema names itself and refuses unknown keys', () => {
  const schema = appFileJsonSchema();
  assert.equal(schema.$id, 'urn:drover:app-file:v1');
  assert.equal(schema.title, 'drover.yaml');
  assert.equal(schema.additionalProperties, false);
  assert.deepEqual(schema.required, ['app', 'roles']);
});

// ---- fuzz --------------------------------------------------------------------------------------

/** Either a spec or a SpecError with at least one issue; anything else is a bug. */
function outcome(run: () => AppSpec): void {
  let spec: AppSpec;
  try {
    spec = run();
  } catch (e) {
    if (!(e instanceof SpecError)) throw e;
    assert.ok(e.issues.length > 0);
    return;
  }
  assert.equal(typeof spec.app, 'string');
  for (const [name, role] of Object.entries(spec.roles)) {
    assert.equal(role.name, name);
    assert.ok(role.min <= role.count && role.count <= role.max);
  }
}

const VALID = {
  app: 'fuzz',
  roles: {
    db: { count: 1, start: 'db --port ${port}', exports: { url: 'x', port: 1 }, health: { tcp: true } },
    api: {
      min: 1,
      max: 3,
      start: 'api ${db.url}',
      env: { A: 'b' },
      imports: ['db.url', 'cache.*?'],
      exports: { endpoint: 'e' },
      health: { http: '/h', interval: '1s' },
    },
    cache: { exports: { url: 'c' }, stopTimeout: '5s' },
  },
};

const MUTATION_PATHS: (string | number)[][] = [
  [],
  ['app'],
  ['roles'],
  ['roles', 'db'],
  ['roles', 'db', 'count'],
  ['roles', 'db', 'min'],
  ['roles', 'db', 'exports'],
  ['roles', 'db', 'exports', 'url'],
  ['roles', 'db', 'health'],
  ['roles', 'db', 'health', 'http'],
  ['roles', 'api', 'imports'],
  ['roles', 'api', 'imports', 0],
  ['roles', 'api', 'imports', 2],
  ['roles', 'api', 'env'],
  ['roles', 'api', 'env', 'B'],
  ['roles', 'api', 'start'],
  ['roles', 'api', 'health', 'interval'],
  ['roles', 'api', 'max'],
  ['roles', 'cache', 'stopTimeout'],
  ['roles', 'cache', 'imports'],
  ['roles', 'new'],
  ['extra'],
];

const anything = fc.anything({
  withBigInt: true,
  withBoxedValues: true,
  withDate: true,
  withMap: true,
  withSet: true,
  withNullPrototype: true,
  withObjectString: true,
  withSparseArray: true,
  withTypedArray: true,
  withUnicodeString: true,
});

/** Sets (or, for `undefined`, deletes) the value at `path` when its parent is an object. */
function mutate(root: unknown, path: readonly (string | number)[], value: unknown): unknown {
  if (path.length === 0) return value;
  let parent: unknown = root;
  for (const seg of path.slice(0, -1)) {
    if (typeof parent !== 'object' || parent === null) return root;
    parent = Reflect.get(parent, seg);
  }
  if (typeof parent !== 'object' || parent === null) return root;
  const last = path[path.length - 1]!;
  // Fuzzed parents include typed arrays and frozen boxes: a mutation they refuse (a typed array
  // cannot hold an object without a prototype, say) is skipped, not a failure of the parser.
  try {
    if (value === undefined) Reflect.deleteProperty(parent, last);
    else Reflect.set(parent, last, value);
  } catch {
    // left as it was
  }
  return root;
}

const mutated = fc
  .array(fc.tuple(fc.constantFrom(...MUTATION_PATHS), fc.oneof(anything, fc.constant(undefined))), { maxLength: 4 })
  .map((muts) => muts.reduce<unknown>((acc, [path, value]) => mutate(acc, path, value), structuredClone(VALID)));

test('fuzz: compileAppSpec returns a spec or throws SpecError, on any value', () => {
  fc.assert(fc.property(anything, (raw) => outcome(() => compileAppSpec(raw))), { numRuns: 500 });
  fc.assert(fc.property(mutated, (raw) => outcome(() => compileAppSpec(raw))), { numRuns: 1000 });
});

test('fuzz: parseAppFile returns a spec or throws SpecError, on any text', () => {
  fc.assert(fc.property(fc.string({ unit: 'binary' }), (text) => outcome(() => parseAppFile(text))), { numRuns: 500 });
  const yamlText = mutated.map((raw) => {
    try {
      // stringify(undefined) is undefined, whatever its type says.
      const text: string | undefined = stringify(raw);
      return text ?? '';
    } catch {
      // fast-check also makes objects without a prototype, which String() cannot print.
      try {
        return JSON.stringify(raw) ?? '';
      } catch {
        return '';
      }
    }
  });
  const edited = fc
    .tuple(yamlText, fc.nat(), fc.string({ maxLength: 8 }))
    .map(([text, at, insert]) => text.slice(0, at % (text.length + 1)) + insert + text.slice(at % (text.length + 1)));
  fc.assert(fc.property(fc.oneof(yamlText, edited), (text) => outcome(() => parseAppFile(text))), { numRuns: 1000 });
});

test('the valid fuzz seed compiles', () => {
  assert.deepEqual(Object.keys(compileAppSpec(structuredClone(VALID)).roles), ['db', 'api', 'cache']);
});

test('a load balancer role: compiled with defaults; its members must be imported and exported', () => {
  const base = ['app: x', 'roles:', '  api:', '    count: 2', '    start: api', '    exports: { endpoint: "http://${ip}:${port}" }', '  lb:'];
  const spec = parseAppFile(yaml([...base, '    imports: [api.*]', '    loadBalancer: { members: api.endpoint, healthCheck: { path: /health } }']));
  assert.deepEqual(spec.roles.lb?.loadBalancer, {
    driver: 'builtin',
    members: { role: 'api', key: 'endpoint' },
    balance: 'roundrobin',
    healthCheck: { path: '/health', intervalMs: 2000, failureThreshold: 3 },
    ejectAfterFailures: 3,
    ejectForMs: 10_000,
  });
  assert.deepEqual(refusal(yaml([...base, '    loadBalancer: { members: api.endpoint }'])), [
    'roles.lb.loadBalancer.members: api.endpoint is not imported (add "api.*" to imports)',
  ]);
  assert.deepEqual(refusal(yaml([...base, '    imports: [api.*]', '    loadBalancer: { members: api.url, driver: nginx }'])), [
    'roles.lb.loadBalancer.driver: expected builtin or haproxy',
  ]);
  assert.deepEqual(refusal(yaml([...base, '    imports: [api.*]', '    start: x', '    loadBalancer: { members: api.endpoint }'])), [
    'roles.lb.start: a load balancer role runs its driver; leave start out',
  ]);
});

test('scaling: policies need bounds, and name metrics that exist', () => {
  const role = ['app: x', 'roles:', '  w:', '    start: w'];
  assert.deepEqual(refusal(yaml([...role, '    scale: [ { queue: { metric: backlog, perInstance: 10 } } ]'])), [
    'roles.w.scale: needs min and max: the bounds scaling stays within',
  ]);
  const lines = refusal(yaml([...role, '    min: 0', '    max: 4', '    scale: [ { queue: { metric: backlog, perInstance: 10 } } ]']));
  assert.equal(lines.length, 1);
  assert.match(lines[0]!, /^roles\.w\.scale\[0\]\.queue\.metric: .*backlog/);
  const ok = parseAppFile(
    yaml([...role, '    min: 0', '    max: 4', '    spares: 1', '    warmup: 5s', '    scale: [ { threshold: { metric: cpu, upper: 0.8, lower: 0.2, for: 10s } } ]']),
  );
  assert.equal(ok.roles.w?.scale[0]?.kind, 'threshold');
  assert.equal(ok.roles.w?.spares, 1);
  assert.equal(ok.roles.w?.warmupMs, 5000);
});

test('a count alone stays within the largest role size', () => {
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  w:', '    count: 1001', '    start: w'])), ['roles.w.count: must be at most 1000']);
  assert.equal(parseAppFile(yaml(['app: x', 'roles:', '  w:', '    count: 1000', '    start: w'])).roles.w?.max, 1000);
});

// ---- bounded, strict input ----------------------------------------------------------------------

test('control characters are refused in every string, with the field named; commands and env values may span lines', () => {
  const lines = refusal(
    yaml([
      'app: x',
      'roles:',
      '  api:',
      '    start: "node api.mjs\\0--evil"',
      '    deploy: "echo a\\u007f"',
      '    exports: { url: "http://a\\nb" }',
      '    env: { A: "x\\ry" }',
      '    health: { http: "/h\\th" }',
    ]),
  );
  assert.deepEqual(lines.sort(), [
    'roles.api.deploy: control character U+007F is not allowed',
    'roles.api.env.A: control character U+000D is not allowed',
    'roles.api.exports.url: control character U+000A is not allowed here (only commands and env values may hold tabs and newlines)',
    'roles.api.health.http: control character U+0009 is not allowed here (only commands and env values may hold tabs and newlines)',
    'roles.api.start: control character U+0000 is not allowed',
  ]);
  // A key, too, and a JSON spec as well as YAML.
  assert.throws(() => compileAppSpec({ app: 'x', roles: { a: { env: { 'A\u0001': 'b' } } } }), /roles\.a\.env: key "A\\u0001": control character U\+0001 is not allowed/);
  const ok = parseAppFile(yaml(['app: x', 'roles:', '  a:', '    deploy: |', '      set -e', '      \techo hi', '    env: { CERT: "a\\nb\\tc" }']));
  assert.equal(ok.roles.a?.deploy, 'set -e\n\techo hi\n');
  assert.equal(ok.roles.a?.env.CERT, 'a\nb\tc');
});

test('names that collide with Object built-ins are refused wherever they would become a record key', () => {
  const lines = refusal(
    yaml([
      'app: constructor',
      'roles:',
      '  constructor: { start: x }',
      '  prototype: { start: x }',
      '  a:',
      '    start: x',
      '    env: { toString: a, hasOwnProperty: b }',
      '    exports: { valueOf: c, __proto__: d }',
      '    min: 0',
      '    max: 2',
      '    metrics: [{ name: isPrototypeOf, http: /m, select: m }]',
      '    scale: [{ target: { metric: isPrototypeOf, target: 1 } }]',
    ]),
  );
  assert.deepEqual(lines.sort(), [
    'app: "constructor" is a reserved name',
    'roles.a.env.hasOwnProperty: "hasOwnProperty" is a reserved name',
    'roles.a.env.toString: "toString" is a reserved name',
    'roles.a.exports.__proto__: "__proto__" is a reserved name',
    'roles.a.exports.valueOf: "valueOf" is a reserved name',
    'roles.a.metrics[0].name: "isPrototypeOf" is a reserved name',
    'roles.constructor: "constructor" is a reserved name',
    'roles.prototype: "prototype" is a reserved name',
  ]);
  // A JSON spec with a __proto__ key (JSON.parse makes it an own property) is refused the same way.
  assert.throws(() => compileAppSpec(JSON.parse('{"app":"x","roles":{"__proto__":{"start":"x"},"a":{}}}')), /roles\.__proto__: "__proto__" is a reserved name/);
});

test('the DROVER_ prefix is reserved: for env keys, and for role names whose exports would become DROVER_ variables', () => {
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  a:', '    start: x', '    env: { DROVER_IP: 1.2.3.4, PORT: 80, MY_DROVER_X: y }'])), [
    'roles.a.env.DROVER_IP: the DROVER_ prefix is reserved for the variables drover sets',
  ]);
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  drover: { start: x }', '  drover-db: { start: x }', '  droverish: { start: x }'])), [
    'roles.drover: role names "drover" and "drover-…" are reserved: their exports would become DROVER_ variables of their importers',
    'roles.drover-db: role names "drover" and "drover-…" are reserved: their exports would become DROVER_ variables of their importers',
  ]);
});

test('user: a Unix user name or a uid, kept as text', () => {
  const role = (u: string) => yaml(['app: x', 'roles:', '  a:', '    start: x', `    user: ${u}`]);
  assert.equal(parseAppFile(role('www-data')).roles.a?.user, 'www-data');
  assert.equal(parseAppFile(role('_svc$')).roles.a?.user, '_svc$');
  assert.equal(parseAppFile(role('1000')).roles.a?.user, '1000');
  assert.equal(parseAppFile(role('"0"')).roles.a?.user, '0');
  assert.equal(parseAppFile(role('4294967294')).roles.a?.user, '4294967294');
  assert.equal(parseAppFile(yaml(['app: x', 'roles:', '  a: { start: x }'])).roles.a?.user, undefined);
  const rule = 'roles.a.user: expected a Unix user name (^[a-z_][a-z0-9_-]{0,31}\\$?$) or a uid from 0 to 4294967294';
  for (const bad of ['Root', '4294967295', '-1', '1.5', '"a b"', '"../x"', 'x23456789012345678901234567890123', 'true', '[a]']) {
    assert.deepEqual(refusal(role(bad)), [rule], bad);
  }
});

test('every number has an upper bound', () => {
  const role = (...lines: string[]) => yaml(['app: x', 'roles:', '  a:', '    start: x', ...lines.map((l) => `    ${l}`)]);
  assert.deepEqual(refusal(role('min: 0', 'max: 1001')), ['roles.a.max: must be at most 1000']);
  assert.deepEqual(refusal(role('min: 1001', 'max: 1001')), ['roles.a.min: must be at most 1000', 'roles.a.max: must be at most 1000']);
  assert.deepEqual(refusal(role('spares: 101')), ['roles.a.spares: must be at most 100']);
  assert.deepEqual(refusal(yaml(['app: x', 'spares: 101', 'roles:', '  a: { start: x }'])), ['spares: must be at most 100']);
  assert.deepEqual(refusal(role('stopTimeout: 25h')), ['roles.a.stopTimeout: expected a duration of at most 24h']);
  assert.deepEqual(refusal(role('drainTimeout: 1441m')), ['roles.a.drainTimeout: expected a duration of at most 24h']);
  assert.deepEqual(refusal(role('health: { tcp: true, failureThreshold: 101 }')), ['roles.a.health.failureThreshold: must be at most 100']);
  assert.deepEqual(refusal(yaml(['app: x', 'roles:', '  a:', '    loadBalancer: { members: a.x, listen: 65536 }'])).filter((l) => l.includes('listen')), [
    'roles.a.loadBalancer.listen: expected a port from 1 to 65535',
  ]);
  // Numbers the schema does not bound itself (a threshold, a target) are within ±1e15.
  assert.deepEqual(refusal(role('min: 0', 'max: 2', 'scale: [{ threshold: { metric: cpu, upper: 1e16 } }]')), [
    'roles.a.scale[0].threshold.upper: expected a number from -1000000000000000 to 1000000000000000',
  ]);
  assert.equal(parseAppFile(role('stopTimeout: 24h', 'spares: 100', 'count: 1000')).roles.a?.stopTimeoutMs, 86_400_000);
});

test('the JSON Schema carries the bounds', () => {
  const text = JSON.stringify(appFileJsonSchema());
  const role = (appFileJsonSchema() as { properties: { roles: { additionalProperties: { properties: Record<string, { maximum?: number }> } } } }).properties.roles.additionalProperties.properties;
  assert.equal(role.count?.maximum, 1000);
  assert.equal(role.max?.maximum, 1000);
  assert.equal(role.spares?.maximum, 100);
  assert.ok(role.user, 'user is in the schema');
  assert.match(text, /"maximum":65535/);
});

// ---- bounded parsing: each hostile file is refused fast, with a reason --------------------------

/** Refused within `ms`, with a message matching `reason`. */
function refusedFast(text: string, reason: RegExp, ms = 2000): void {
  const t0 = performance.now();
  const lines = refusal(text);
  const took = performance.now() - t0;
  assert.ok(lines.some((l) => reason.test(l)), `${lines.join('\n')} !~ ${String(reason)}`);
  assert.ok(took < ms, `took ${Math.round(took)} ms`);
}

test('bounded parsing: size, nesting, aliases, entries, roles, values, string length', () => {
  refusedFast(`app: x\nroles:\n  a:\n    start: "${'x'.repeat(300 * 1024)}"\n`, /^the app file is \d+ bytes; at most 262144 \(256 KiB\) are allowed$/);
  refusedFast(`app: x\nroles: ${'['.repeat(100_000)}${']'.repeat(100_000)}\n`, /^nested more than 32 levels deep \(at line 2, column \d+\)$/);
  refusedFast(`app: x\nroles:\n  - ${'- '.repeat(100_000)}x\n`, /^nested more than 32 levels deep/);
  refusedFast(`app: x\nroles: ${'{a: '.repeat(50_000)}1${'}'.repeat(50_000)}\n`, /^nested more than 32 levels deep/);
  // Many keys in one mapping: the duplicate-key check is quadratic, so the count is checked first.
  refusedFast(`app: x\nroles:\n  a:\n    env:\n${Array.from({ length: 15_000 }, (_, i) => `      K${i}: v\n`).join('')}`, /^a mapping or list with more than 1000 entries \(at line 5, column 7\)$/);
  refusedFast(`app: x\nx: &a [1]\nroles: [${Array.from({ length: 500 }, () => '*a').join(',')}]\n`, /^more than 100 aliases/);
  const bomb = ['a: &a ["x","x","x","x","x","x","x","x","x"]', 'b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]', 'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]', 'd: [*c,*c,*c,*c,*c,*c,*c,*c,*c]', 'app: x', 'roles: {}'];
  refusedFast(yaml(bomb), /^YAML error: Excessive alias count/);
  refusedFast(`app: x\nroles:\n${Array.from({ length: 150 }, (_, i) => `  r${i}: { start: x }\n`).join('')}`, /^roles: at most 100 roles are allowed \(found 150\)$/);
  refusedFast(`app: x\nroles:\n  a:\n    start: "${'x'.repeat(70 * 1024)}"\n`, /^roles\.a\.start: longer than 65536 characters$/);
  // Values past the limit once aliases are expanded (a JSON spec has no aliases, but may share references).
  const big = Array.from({ length: 900 }, () => 'x');
  const shared = Array.from({ length: 30 }, () => big);
  assert.throws(() => compileAppSpec({ app: 'x', roles: { a: { env: {}, imports: shared } } }), /more than 20000 values/);
  const deep: unknown[] = [];
  let at = deep;
  for (let i = 0; i < 100_000; i++) at = (at[0] = []);
  assert.throws(() => compileAppSpec({ app: 'x', roles: deep }), /^SpecError: roles(\[0\])+: nested more than 32 levels deep$/);
});

test('a file at the size limit that is valid still compiles', () => {
  const filler = '#'.repeat(200) + '\n';
  const head = yaml(['app: x', 'roles:', '  a: { start: x }']);
  const text = head + filler.repeat(Math.floor((256 * 1024 - head.length) / filler.length));
  assert.ok(Buffer.byteLength(text) <= 256 * 1024);
  assert.equal(parseAppFile(text).app, 'x');
});

// ---------------------------------------------------------------------------------------------
// tenants:

const labs = (tenants: string[], extra: string[] = []) =>
  yaml(['app: labs', 'roles:', '  web:', '    min: 1', '    max: 5', '    start: node web.mjs', ...extra, '    tenants:', ...tenants.map((l) => `      ${l}`)]);

test('tenants: compiled with defaults (2m timeouts, 5 retries = 6 attempts); commands may span lines', () => {
  const spec = parseAppFile(labs(['capacity: 20', 'add: |', '  mkdir -p "/srv/labs/$TENANT_NAME"', '  echo added', 'remove: rm -rf "/srv/labs/$TENANT_NAME"']));
  assert.deepEqual(spec.roles.web?.tenants, {
    capacity: 20,
    add: 'mkdir -p "/srv/labs/$TENANT_NAME"\necho added\n',
    remove: 'rm -rf "/srv/labs/$TENANT_NAME"',
    addTimeoutMs: 120_000,
    removeTimeoutMs: 120_000,
    maxAttempts: 6,
  });
  const full = parseAppFile(
    labs(['capacity: 10000', 'add: a', 'remove: r', 'move: m', 'host: "${tenant}.labs.example.test"', 'addTimeout: 30s', 'removeTimeout: 1m', 'retries: 0']),
  );
  assert.deepEqual(full.roles.web?.tenants, {
    capacity: 10_000, add: 'a', remove: 'r', move: 'm', host: '${tenant}.labs.example.test', addTimeoutMs: 30_000, removeTimeoutMs: 60_000, maxAttempts: 1,
  });
  assert.deepEqual(JSON.parse(JSON.stringify(full)), full, 'survives a JSON round trip');
  assert.equal(parseAppFile(labs(['capacity: 1', 'add: a', 'remove: r'])).roles.web?.tenants?.capacity, 1);
});

test('tenants: a bad capacity is refused', () => {
  for (const [capacity, reason] of [
    ['0', 'expected an integer >= 1'],
    ['-3', 'expected an integer >= 1'],
    ['2.5', 'expected an integer >= 1'],
    ['"20"', 'expected an integer >= 1'],
    ['10001', 'must be at most 10000'],
  ] as const) {
    assert.deepEqual(refusal(labs([`capacity: ${capacity}`, 'add: a', 'remove: r'])), [`roles.web.tenants.capacity: ${reason}`], capacity);
  }
  assert.deepEqual(refusal(labs(['add: a', 'remove: r'])), ['roles.web.tenants.capacity: required']);
});

test('tenants: add and remove are required commands; retries and timeouts are bounded; unknown keys named', () => {
  assert.deepEqual(refusal(labs(['capacity: 2'])), ['roles.web.tenants.add: required', 'roles.web.tenants.remove: required']);
  assert.deepEqual(refusal(labs(['capacity: 2', 'add: "  "', 'remove: r'])), ['roles.web.tenants.add: expected a command, got an empty string']);
  assert.deepEqual(refusal(labs(['capacity: 2', 'add: a', 'remove: r', 'retries: 101'])), ['roles.web.tenants.retries: must be at most 100']);
  assert.deepEqual(refusal(labs(['capacity: 2', 'add: a', 'remove: r', 'addTimeout: 0s'])), ['roles.web.tenants.addTimeout: expected a duration greater than 0']);
  assert.deepEqual(refusal(labs(['capacity: 2', 'add: a', 'remove: r', 'removeTimeout: 5'])), ['roles.web.tenants.removeTimeout: expected a duration such as "5s" or "500ms"']);
  assert.deepEqual(refusal(labs(['capacity: 2', 'add: a', 'remove: r', 'seats: 3'])), ['roles.web.tenants: unknown key "seats"']);
  assert.deepEqual(refusal(yaml(['app: labs', 'roles:', '  web:', '    start: x', '    tenants: 20'])), ['roles.web.tenants: expected a mapping']);
});

test('tenants: the host template has ${tenant} as its only variable and renders to a host name', () => {
  const bad: [string, RegExp][] = [
    ['labs.example.test', /expected \$\{tenant\} in the template/],
    ['${tenant}.${app}.example.test', /\$\{app\} is not allowed: the only variable of a host template is \$\{tenant\}/],
    ['${tenant}', /renders to "lab-7" for a tenant named "lab-7", not a valid host name/],
    ['${tenant}.Labs.example.test', /not a valid host name/],
    ['${tenant}_x.example.test', /not a valid host name/],
    ['${tenant}..example.test', /not a valid host name/],
    ['${tenant}.example.test.', /not a valid host name/],
    ['-${tenant}.example.test', /not a valid host name/],
    ['${tenant}.' + 'x'.repeat(64) + '.test', /not a valid host name/],
    ['https://${tenant}.example.test', /not a valid host name/],
    ['${tenant}.example.test/path', /not a valid host name/],
  ];
  for (const [host, reason] of bad) {
    const lines = refusal(labs(['capacity: 2', 'add: a', 'remove: r', `host: ${JSON.stringify(host)}`]));
    assert.equal(lines.length, 1, host);
    assert.ok(lines[0]!.startsWith('roles.web.tenants.host: '), lines[0]);
    assert.match(lines[0]!, reason, host);
  }
  for (const host of ['${tenant}.labs.example.test', 'lab-${tenant}.example.test', '${tenant}.${tenant}.example.test', 'x.${tenant}.eu-1.example.test']) {
    assert.equal(parseAppFile(labs(['capacity: 2', 'add: a', 'remove: r', `host: ${JSON.stringify(host)}`])).roles.web?.tenants?.host, host);
  }
  assert.deepEqual(refusal(labs(['capacity: 2', 'add: a', 'remove: r', 'host: 7'])), ['roles.web.tenants.host: expected a host-name template such as "${tenant}.labs.example.test"']);
});

test('tenants: control characters are refused; commands may hold tabs and newlines, the host may not', () => {
  const lines = refusal(
    labs(['capacity: 2', 'add: "a\\u0000b"', 'remove: "r\\u001b[2J"', 'move: "m\\tn\\nok"', 'host: "${tenant}.x\\n.test"']),
  );
  assert.deepEqual(lines, [
    'roles.web.tenants.add: control character U+0000 is not allowed',
    'roles.web.tenants.remove: control character U+001B is not allowed',
    'roles.web.tenants.host: control character U+000A is not allowed here (only commands and env values may hold tabs and newlines)',
  ]);
});

test('tenants: commands are templates like start (imports checked); ${tenant} is refused in them', () => {
  assert.deepEqual(refusal(labs(['capacity: 2', 'add: psql ${db.url} -c x', 'remove: r'])), ['roles.web.tenants.add: ${db.url} refers to no role "db"']);
  assert.deepEqual(refusal(labs(['capacity: 2', 'add: mkdir /srv/${tenant}', 'remove: r', 'move: echo "${tenant}"'])), [
    'roles.web.tenants.add: ${tenant} is not replaced in commands: use "$TENANT_NAME" (also $TENANT_ID, $TENANT_HOST), quoted',
    'roles.web.tenants.move: ${tenant} is not replaced in commands: use "$TENANT_NAME" (also $TENANT_ID, $TENANT_HOST), quoted',
  ]);
  // $TENANT_NAME and ${TENANT_NAME} are bash's; ${port} and imports are Drover's, as in start.
  const spec = parseAppFile(
    yaml([
      'app: labs', 'roles:', '  db:', '    start: db', '    exports: { url: "postgres://${ip}:${port}" }',
      '  web:', '    start: web', '    imports: [db.url]', '    tenants:', '      capacity: 3',
      '      add: psql ${db.url} -c "create schema \\"${TENANT_NAME}\\""', '      remove: echo $TENANT_ID ${port}',
    ]),
  );
  assert.equal(spec.roles.web?.tenants?.capacity, 3);
});

test('tenants: not on a load balancer role', () => {
  const text = yaml([
    'app: labs', 'roles:', '  api:', '    start: api', '    exports: { endpoint: "http://${ip}:${port}" }',
    '  lb:', '    imports: [api.*]', '    loadBalancer: { members: api.endpoint }', '    tenants: { capacity: 2, add: a, remove: r }',
  ]);
  assert.deepEqual(refusal(text), ['roles.lb.tenants: a load balancer role cannot host tenants; put tenants on the role it balances']);
});

test('tenants: a role with tenants needs max >= 1; with count alone it may grow to the largest role size', () => {
  assert.deepEqual(refusal(labs(['capacity: 2', 'add: a', 'remove: r']).replace('max: 5', 'max: 0').replace('min: 1', 'min: 0')), [
    'roles.web.max: expected an integer >= 1',
  ]);
  const fixed = parseAppFile(yaml(['app: labs', 'roles:', '  web:', '    count: 0', '    start: w', '    tenants: { capacity: 2, add: a, remove: r }']));
  assert.equal(fixed.roles.web?.max, 1000);
});

test('provider: the top-level block is every role\'s; a role\'s own block replaces it whole', () => {
  const spec = parseAppFile(yaml([
    'app: shop',
    'provider: { kind: ec2, region: eu-west-1, image: ami-0abcdef1234567890, instanceType: t3.small, subnet: subnet-0abc1234, securityGroups: [sg-0abc1234], tags: { team: web } }',
    'roles:',
    '  api: { start: node api.mjs }',
    '  db: { start: ./db.sh, provider: { kind: local } }',
  ]));
  assert.equal(spec.provider?.kind, 'ec2');
  assert.deepEqual(spec.roles.api?.provider, spec.provider);
  assert.deepEqual(spec.roles.db?.provider, { kind: 'local' });
  assert.deepEqual(JSON.parse(JSON.stringify(spec)), spec, 'survives a JSON round trip');
  const plain = parseAppFile(yaml(['app: shop', 'roles:', '  api: { start: node api.mjs }']));
  assert.equal(plain.provider, undefined);
  assert.equal(Object.hasOwn(plain.roles.api!, 'provider'), false, 'no block: the controller\'s default');
});

test('provider: missing or wrong settings are refused with the field named', () => {
  const lines = refusal(yaml([
    'app: shop',
    'provider: { kind: ec2, region: mars, image: ami-0abcdef1234567890, instanceType: t3.small, securityGroups: [], tags: { "drover:app": x } }',
    'roles:',
    '  api: { start: x, provider: { kind: gce } }',
    '  web: { start: x, provider: { kind: openstack, flavor: m1.small, image: debian-12, network: net, secret: x } }',
  ]));
  const has = (prefix: string, re: RegExp) => assert.ok(lines.some((l) => l.startsWith(prefix) && re.test(l)), `${prefix} ${re} in:\n${lines.join('\n')}`);
  has('provider.region:', /AWS region/);
  has('provider.subnet:', /required/);
  has('provider.securityGroups:', /at least one/);
  has('provider.tags["drover:app"]:', /Drover's own/);
  has('roles.api.provider.kind:', /local, ec2 or openstack/);
  has('roles.web.provider', /secret/);
});
