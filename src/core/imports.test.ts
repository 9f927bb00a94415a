import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  dependents,
  findCycle,
  importsVersion,
  requiredDeps,
  resolveImports,
  satisfied,
  startOrder,
  stopOrder,
} from './imports.js';
import { compileAppSpec, parseAppFile, SpecError } from './spec.js';
import type { AppSpec, ImportedMember, ImportRef, RoleSpec } from './types.js';

// ---- random import graphs ---------------------------------------------------------------------

/** How role i imports role j. Required kinds only point at lower-numbered roles in acyclic graphs. */
type Edge = 'url' | '*' | 'url?' | '*?' | 'url+port?';
const REQUIRED: ReadonlySet<Edge> = new Set(['url', '*', 'url+port?']);

interface Graph {
  readonly n: number;
  /** edges[i] maps j to how role i imports role j. */
  readonly edges: Map<number, Edge>[];
  /** The order roles are written in the file. */
  readonly order: number[];
}

const name = (i: number) => `r${i}`;

function rawSpec(g: Graph): unknown {
  const roles: Record<string, unknown> = {};
  for (const i of g.order) {
    const imports = [...g.edges[i]!].flatMap(([j, e]) =>
      e === 'url+port?' ? [`${name(j)}.url`, `${name(j)}.port?`] : [`${name(j)}.${e}`],
    );
    roles[name(i)] = { start: `run ${name(i)}`, exports: { url: `u${i}`, port: `${1000 + i}` }, imports };
  }
  return { app: 'graph', roles };
}

const acyclic: fc.Arbitrary<Graph> = fc.integer({ min: 1, max: 14 }).chain((n) =>
  fc
    .tuple(
      fc.tuple(
        ...Array.from({ length: n }, (_, i) =>
          fc.array(
            fc.tuple(
              // Any other role: skip over i rather than filter it out (a lone role has no other).
              fc.integer({ min: 0, max: Math.max(0, n - 2) }).map((j) => (j >= i ? j + 1 : j)),
              fc.constantFrom<Edge>('url', '*', 'url?', '*?', 'url+port?'),
            ),
            { maxLength: n > 1 ? 4 : 0 },
          ),
        ),
      ),
      fc.shuffledSubarray(
        Array.from({ length: n }, (_, i) => i),
        { minLength: n, maxLength: n },
      ),
    )
    .map(([picks, order]) => {
      const edges = picks.map((list, i) => {
        const m = new Map<number, Edge>();
        // Required edges only point down, so the graph of required imports stays acyclic.
        for (const [j, e] of list) m.set(j, REQUIRED.has(e) && j > i ? (e === '*' ? '*?' : 'url?') : e);
        return m;
      });
      return { n, edges, order };
    }),
);

test('property: acyclic graphs compile and start every role after its required imports', () => {
  fc.assert(
    fc.property(acyclic, (g) => {
      const spec = compileAppSpec(rawSpec(g));
      const waves = startOrder(spec);
      const flat = waves.flat();
      assert.equal(flat.length, g.n, 'every role appears exactly once');
      assert.deepEqual(new Set(flat), new Set(Object.keys(spec.roles)));
      const wave = new Map(waves.flatMap((w, k) => w.map((r) => [r, k] as const)));
      for (const role of Object.keys(spec.roles)) {
        const deps = requiredDeps(spec, role);
        for (const d of deps) assert.ok(wave.get(d)! < wave.get(role)!, `${role} starts after ${d}`);
        // Waves are as early as possible: no role waits a wave longer than it must.
        const k = wave.get(role)!;
        if (k > 0) assert.ok(deps.some((d) => wave.get(d) === k - 1), `${role} could start earlier`);
        for (let i = 0; i < g.n; i++) {
          const e = g.edges[Number(role.slice(1))]!.get(i);
          assert.equal(deps.includes(name(i)), e !== undefined && REQUIRED.has(e));
        }
      }
      for (const w of waves) {
        const inFileOrder = Object.keys(spec.roles).filter((r) => w.includes(r));
        assert.deepEqual(w, inFileOrder, 'a wave keeps file order');
      }
      assert.deepEqual(stopOrder(spec), [...waves].reverse());
      assert.equal(findCycle(spec), undefined);
    }),
    { numRuns: 300 },
  );
});

test('property: a cycle of required imports is refused, and the message names a real cycle', () => {
  const cyclic = acyclic
    .filter((g) => g.n >= 2)
    .chain((g) =>
      fc
        .uniqueArray(fc.integer({ min: 0, max: g.n - 1 }), { minLength: 2, maxLength: g.n })
        .map((chain) => {
          // Down a descending chain (allowed), then one required edge back up closes the cycle.
          const down = [...chain].sort((a, b) => b - a);
          const edges = g.edges.map((m) => new Map(m));
          for (let k = 0; k + 1 < down.length; k++) edges[down[k]!]!.set(down[k + 1]!, 'url');
          edges[down[down.length - 1]!]!.set(down[0]!, '*');
          return { ...g, edges };
        }),
    );
  fc.assert(
    fc.property(cyclic, (g) => {
      let error: unknown;
      try {
        compileAppSpec(rawSpec(g));
      } catch (e) {
        error = e;
      }
      assert.ok(error instanceof SpecError, 'refused with a SpecError');
      const cycles = error.issues.filter((i) => i.message.startsWith('import cycle: '));
      assert.ok(cycles.length >= 1);
      assert.deepEqual(
        error.issues.filter((i) => !cycles.includes(i)),
        [],
        'a cycle is the only problem',
      );
      for (const issue of cycles) {
        assert.equal(issue.path, '');
        const path = issue.message.slice('import cycle: '.length).split(' → ');
        assert.equal(path[0], path[path.length - 1], 'the cycle is closed');
        const inner = path.slice(0, -1);
        assert.equal(new Set(inner).size, inner.length, 'no role repeats inside the cycle');
        assert.equal(path[0], [...inner].sort()[0], 'starts at the lexically first role');
        for (let k = 0; k + 1 < path.length; k++) {
          const from = Number(path[k]!.slice(1));
          const e = g.edges[from]!.get(Number(path[k + 1]!.slice(1)));
          assert.ok(e !== undefined && REQUIRED.has(e), `${path[k]} requires ${path[k + 1]}`);
        }
      }
    }),
    { numRuns: 300 },
  );
});

// ---- order helpers on a known app -------------------------------------------------------------

const THREE_TIER = parseAppFile(
  [
    'app: shop',
    'roles:',
    '  lb:',
    '    imports: [web.*]',
    '  web:',
    '    exports: { url: x }',
    '    imports: [api.url, cache.url?]',
    '  api:',
    '    exports: { url: x }',
    '    imports: [db.url, db.port, cache.*?]',
    '  db:',
    '    exports: { url: x, port: "5432" }',
    '  cache:',
    '    exports: { url: x }',
    '    imports: [web.url?]',
    '',
  ].join('\n'),
);

test('startOrder puts roles in waves; stopOrder reverses them', () => {
  assert.deepEqual(startOrder(THREE_TIER), [['db', 'cache'], ['api'], ['web'], ['lb']]);
  assert.deepEqual(stopOrder(THREE_TIER), [['lb'], ['web'], ['api'], ['db', 'cache']]);
});

test('requiredDeps lists each required role once; dependents counts optional importers too', () => {
  assert.deepEqual(requiredDeps(THREE_TIER, 'api'), ['db']);
  assert.deepEqual(requiredDeps(THREE_TIER, 'db'), []);
  assert.deepEqual(dependents(THREE_TIER, 'cache'), ['web', 'api']);
  assert.deepEqual(dependents(THREE_TIER, 'web'), ['lb', 'cache']);
  assert.deepEqual(dependents(THREE_TIER, 'lb'), []);
  assert.throws(() => requiredDeps(THREE_TIER, 'nope'), /no role "nope"/);
  assert.throws(() => dependents(THREE_TIER, 'constructor'), /no role "constructor"/);
});

/** A compiled app with one bare role: hand-built specs start from it, so they get every default field. */
const BARE = compileAppSpec({ app: 'loop', roles: { me: {} } });

/** A role importing `imports` as given: no check that the roles exist or that the graph is acyclic. */
function role(imports: string[], name = 'me'): RoleSpec {
  const refs = imports.map((raw): ImportRef => {
    const optional = raw.endsWith('?');
    const [r = '', key = ''] = (optional ? raw.slice(0, -1) : raw).split('.');
    return { raw, role: r, key, optional };
  });
  return { ...BARE.roles.me!, name, imports: refs };
}

test('findCycle and startOrder on a hand-built spec with a cycle', () => {
  const spec: AppSpec = {
    ...BARE,
    roles: { b: role(['a.x'], 'b'), a: role(['c.x'], 'a'), c: role(['b.x', 'd.x?'], 'c'), d: role(['a.x'], 'd') },
  };
  assert.deepEqual(findCycle(spec), ['a', 'c', 'b', 'a']);
  assert.throws(() => startOrder(spec), { message: 'import cycle: a → c → b → a' });
});

// ---- resolveImports ---------------------------------------------------------------------------

const SERVING: Readonly<Record<string, readonly ImportedMember[]>> = {
  db: [
    { instance: 'i-3', exports: { url: 'db3', port: '3' } },
    { instance: 'i-1', exports: { url: 'db1', port: '1' } },
  ],
  api: [
    { instance: 'i-9', exports: { endpoint: 'e9', admin: 'a9' } },
    { instance: 'i-2', exports: { endpoint: 'e2' } },
  ],
  cache: [],
};

test('resolveImports narrows exports to the keys asked for and sorts members by instance id', () => {
  const { imports, missing } = resolveImports(role(['db.url']), SERVING);
  assert.deepEqual(imports, {
    db: [
      { instance: 'i-1', exports: { url: 'db1' } },
      { instance: 'i-3', exports: { url: 'db3' } },
    ],
  });
  assert.deepEqual(missing, []);
});

test('resolveImports: a wildcard brings every export of every member', () => {
  const { imports } = resolveImports(role(['api.*']), SERVING);
  assert.deepEqual(imports, {
    api: [
      { instance: 'i-2', exports: { endpoint: 'e2' } },
      { instance: 'i-9', exports: { endpoint: 'e9', admin: 'a9' } },
    ],
  });
});

test('resolveImports: several refs to one role merge their keys', () => {
  const { imports } = resolveImports(role(['db.url', 'db.port?']), SERVING);
  assert.deepEqual(imports.db, [
    { instance: 'i-1', exports: { url: 'db1', port: '1' } },
    { instance: 'i-3', exports: { url: 'db3', port: '3' } },
  ]);
  assert.deepEqual(resolveImports(role(['api.admin', 'api.*?']), SERVING).imports, resolveImports(role(['api.*']), SERVING).imports);
});

test('resolveImports: members without the key are left out', () => {
  const { imports, missing } = resolveImports(role(['api.admin']), SERVING);
  assert.deepEqual(imports, { api: [{ instance: 'i-9', exports: { admin: 'a9' } }] });
  assert.deepEqual(missing, []);
});

test('resolveImports: a required ref with no member is missing; an optional one is not', () => {
  const res = resolveImports(role(['cache.url', 'queue.url', 'db.url', 'search.*?', 'db.nope?']), SERVING);
  assert.deepEqual(res.imports, {
    cache: [],
    queue: [],
    db: [
      { instance: 'i-1', exports: { url: 'db1' } },
      { instance: 'i-3', exports: { url: 'db3' } },
    ],
    search: [],
  });
  assert.deepEqual(
    res.missing.map((r) => r.raw),
    ['cache.url', 'queue.url'],
  );
  assert.equal(satisfied(role(['cache.url', 'db.url']), res.imports), false);
  assert.equal(satisfied(role(['db.url', 'search.*?']), res.imports), true);
});

test('resolveImports: a required key no member exports is missing even when the role serves', () => {
  const { imports, missing } = resolveImports(role(['api.admin', 'api.metrics']), { api: [{ instance: 'i-2', exports: { endpoint: 'e2' } }] });
  assert.deepEqual(imports, { api: [] });
  assert.deepEqual(
    missing.map((r) => r.raw),
    ['api.admin', 'api.metrics'],
  );
});

test('resolveImports does not mistake Object.prototype for a serving role', () => {
  const { imports, missing } = resolveImports(role(['constructor.url', 'tostring.x?']), {});
  assert.deepEqual(imports, { constructor: [], tostring: [] });
  assert.deepEqual(
    missing.map((r) => r.raw),
    ['constructor.url'],
  );
});

test('importsVersion is stable across key order and changes with any value', () => {
  const a = {
    db: [{ instance: 'i-1', exports: { url: 'u', port: 'p' } }],
    api: [{ instance: 'i-2', exports: { endpoint: 'e' } }],
  };
  const b = {
    api: [{ exports: { endpoint: 'e' }, instance: 'i-2' }],
    db: [{ exports: { port: 'p', url: 'u' }, instance: 'i-1' }],
  };
  assert.match(importsVersion(a), /^[0-9a-f]{64}$/);
  assert.equal(importsVersion(a), importsVersion(b));
  assert.notEqual(importsVersion(a), importsVersion({ ...a, db: [{ instance: 'i-1', exports: { url: 'u2', port: 'p' } }] }));
  assert.notEqual(importsVersion(a), importsVersion({ ...a, cache: [] }));
  assert.notEqual(importsVersion({}), importsVersion({ db: [] }));
});

test('property: importsVersion ignores how the objects were built', () => {
  const members = fc.array(
    fc.record({ instance: fc.string(), exports: fc.dictionary(fc.string(), fc.string()) }),
    { maxLength: 4 },
  );
  fc.assert(
    fc.property(fc.dictionary(fc.string(), members), (imports) => {
      const reversed = Object.fromEntries(
        Object.entries(imports)
          .reverse()
          .map(([r, ms]) => [
            r,
            ms.map((m) => ({ exports: Object.fromEntries(Object.entries(m.exports).reverse()), instance: m.instance })),
          ]),
      );
      assert.equal(importsVersion(reversed), importsVersion(imports));
    }),
  );
});
