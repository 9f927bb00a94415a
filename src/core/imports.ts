/**
 * The import graph of an app: which roles must serve before another may start, in what order
 * roles start and stop, and what a role's imports resolve to given the members now serving.
 *
 * Only required imports order the start: an optional import (`cache.url?`) lets the importer
 * start without it and hands the value over later through `update`, so optional edges may
 * even form cycles.
 */
import { createHash } from 'node:crypto';
import type { AppSpec, ImportedMember, ImportRef, ResolvedImports, RoleSpec } from './types.js';

function roleOf(spec: AppSpec, role: string): RoleSpec {
  // `spec.roles[role]` alone would find `constructor` and friends on the prototype.
  const found = Object.hasOwn(spec.roles, role) ? spec.roles[role] : undefined;
  if (!found) throw new Error(`app "${spec.app}" has no role "${role}"`);
  return found;
}

/** The roles `role` requires (each once, in the order its imports name them). Throws for an unknown role. */
export function requiredDeps(spec: AppSpec, role: string): string[] {
  const deps = new Set<string>();
  for (const ref of roleOf(spec, role).imports) if (!ref.optional) deps.add(ref.role);
  return [...deps];
}

/** Roles that import `role`, required or optional, in file order. Throws for an unknown role. */
export function dependents(spec: AppSpec, role: string): string[] {
  roleOf(spec, role);
  return Object.values(spec.roles)
    .filter((r) => r.name !== role && r.imports.some((ref) => ref.role === role))
    .map((r) => r.name);
}

function requiredGraph(spec: AppSpec): Map<string, string[]> {
  return new Map(Object.keys(spec.roles).map((name) => [name, requiredDeps(spec, name)]));
}

/**
 * One cycle per strongly connected component of `graph` (edges to nodes outside the graph are
 * ignored), sorted by first node. Each cycle is closed — `['api', 'db', 'api']` — starts at the
 * component's lexically first node and is the shortest way back to it, so the same graph
 * always yields the same text whatever order its nodes were written in.
 */
export function cyclesOf(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  const next = (n: string): string[] => [...new Set(graph.get(n) ?? [])].filter((m) => graph.has(m)).sort(compare);
  return stronglyConnected([...graph.keys()], next)
    .filter((scc) => scc.length > 1 || next(scc[0]!).includes(scc[0]!))
    .map((scc) => shortestCycle(scc, next))
    .sort((a, b) => compare(a[0]!, b[0]!));
}

/**
 * The closed cycle of required imports that starts at the lexically first role in it, e.g.
 * `['api', 'db', 'api']` (api imports db, db imports api); undefined when there is none.
 */
export function findCycle(spec: AppSpec): string[] | undefined {
  return cyclesOf(requiredGraph(spec))[0];
}

/**
 * Roles in waves: every required import of a role in wave k is in a wave before k; a wave's
 * roles may start in parallel. Within a wave, roles keep file order. Imports of roles that are
 * not in the spec are ignored (there is nothing to wait for in this app). Throws on a cycle,
 * which a spec from `compileAppSpec` never has.
 */
export function startOrder(spec: AppSpec): string[][] {
  const graph = requiredGraph(spec);
  const level = new Map<string, number>();
  const pending = new Map<string, number>();
  const waiters = new Map<string, string[]>();
  const ready: string[] = [];
  for (const [name, deps] of graph) {
    const known = deps.filter((d) => graph.has(d));
    pending.set(name, known.length);
    for (const d of known) waiters.set(d, [...(waiters.get(d) ?? []), name]);
    if (known.length === 0) {
      level.set(name, 0);
      ready.push(name);
    }
  }
  for (let i = 0; i < ready.length; i++) {
    const done = ready[i]!;
    for (const w of waiters.get(done) ?? []) {
      level.set(w, Math.max(level.get(w) ?? 0, level.get(done)! + 1));
      const left = pending.get(w)! - 1;
      pending.set(w, left);
      if (left === 0) ready.push(w);
    }
  }
  if (ready.length < graph.size) {
    const cycle = findCycle(spec) ?? [];
    throw new Error(`import cycle: ${cycle.join(' → ')}`);
  }
  const waves: string[][] = [];
  for (const name of graph.keys()) (waves[level.get(name)!] ??= []).push(name);
  return waves;
}

/** Start waves reversed: a role stops before the roles it imports. */
export function stopOrder(spec: AppSpec): string[][] {
  return startOrder(spec).reverse();
}

interface Wanted {
  all: boolean;
  readonly keys: Set<string>;
}

/**
 * What `role`'s imports resolve to, given `serving`: for every role, the members now serving
 * with all their exports. Each imported role maps to its members that have a requested key
 * (every member for `role.*`), sorted by instance id, exports narrowed to the requested keys;
 * several refs to one role merge. An imported role with no such member maps to `[]`.
 * `missing` lists the required refs no member satisfies: while it is not empty the role waits.
 */
export function resolveImports(
  role: RoleSpec,
  serving: Readonly<Record<string, readonly ImportedMember[]>>,
): { imports: ResolvedImports; missing: ImportRef[] } {
  const wanted = new Map<string, Wanted>();
  for (const ref of role.imports) {
    const w = wanted.get(ref.role) ?? { all: false, keys: new Set<string>() };
    if (ref.key === '*') w.all = true;
    else w.keys.add(ref.key);
    wanted.set(ref.role, w);
  }
  const imports: Record<string, ImportedMember[]> = {};
  for (const [name, w] of wanted) {
    const members = Object.hasOwn(serving, name) ? (serving[name] ?? []) : [];
    imports[name] = members
      .filter((m) => w.all || [...w.keys].some((k) => Object.hasOwn(m.exports, k)))
      .map((m) => (m.hosts?.length ? { instance: m.instance, exports: pick(m.exports, w), hosts: [...m.hosts].sort() } : { instance: m.instance, exports: pick(m.exports, w) }))
      .sort((a, b) => compare(a.instance, b.instance));
  }
  return { imports, missing: missingRefs(role, imports) };
}

/** True when every required import of `role` has at least one member in `imports`. */
export function satisfied(role: RoleSpec, imports: ResolvedImports): boolean {
  return missingRefs(role, imports).length === 0;
}

function missingRefs(role: RoleSpec, imports: ResolvedImports): ImportRef[] {
  return role.imports.filter((ref) => {
    if (ref.optional) return false;
    const members = Object.hasOwn(imports, ref.role) ? (imports[ref.role] ?? []) : [];
    return !members.some((m) => ref.key === '*' || Object.hasOwn(m.exports, ref.key));
  });
}

function pick(exports: Readonly<Record<string, string>>, w: Wanted): Record<string, string> {
  // fromEntries defines own properties: an export an agent calls `__proto__` stays a key, not a prototype.
  return Object.fromEntries(Object.entries(exports).filter(([k]) => w.all || w.keys.has(k)));
}

/**
 * A hash of `imports` that ignores key order, so the controller and agent agree on "same
 * imports" without agreeing on how objects were built. Member order is kept: it is meaningful
 * (instance-id order) and `resolveImports` fixes it.
 */
export function importsVersion(imports: ResolvedImports): string {
  return createHash('sha256').update(canonicalJson(imports)).digest('hex');
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value).sort(([a], [b]) => compare(a, b));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** Code-unit order: the same on every machine, unlike `localeCompare`. */
function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Tarjan's algorithm without recursion, so a long chain of roles cannot overflow the stack. */
function stronglyConnected(nodes: readonly string[], next: (n: string) => string[]): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const out: string[][] = [];
  const visit = (n: string): { node: string; succ: string[]; i: number } => {
    index.set(n, index.size);
    low.set(n, index.get(n)!);
    stack.push(n);
    onStack.add(n);
    return { node: n, succ: next(n), i: 0 };
  };
  for (const root of nodes) {
    if (index.has(root)) continue;
    const work = [visit(root)];
    while (work.length > 0) {
      const frame = work[work.length - 1]!;
      if (frame.i < frame.succ.length) {
        const w = frame.succ[frame.i++]!;
        if (!index.has(w)) work.push(visit(w));
        else if (onStack.has(w)) low.set(frame.node, Math.min(low.get(frame.node)!, index.get(w)!));
        continue;
      }
      work.pop();
      const parent = work[work.length - 1];
      if (parent) low.set(parent.node, Math.min(low.get(parent.node)!, low.get(frame.node)!));
      if (low.get(frame.node) === index.get(frame.node)) {
        const scc: string[] = [];
        let m: string | undefined;
        do {
          m = stack.pop()!;
          onStack.delete(m);
          scc.push(m);
        } while (m !== frame.node);
        out.push(scc);
      }
    }
  }
  return out;
}

function shortestCycle(scc: readonly string[], next: (n: string) => string[]): string[] {
  const members = new Set(scc);
  const start = [...scc].sort(compare)[0]!;
  const parent = new Map<string, string>();
  const queue = [start];
  for (let i = 0; i < queue.length; i++) {
    const u = queue[i]!;
    for (const v of next(u)) {
      if (!members.has(v)) continue;
      if (v === start) {
        const path = [start];
        for (let n: string | undefined = u; n !== undefined && n !== start; n = parent.get(n)) path.splice(1, 0, n);
        path.push(start);
        return path;
      }
      if (!parent.has(v)) {
        parent.set(v, u);
        queue.push(v);
      }
    }
  }
  // Unreachable for a real strongly connected component; keeps the type honest.
  return [start, start];
}
