/**
 * docs/app-file.md documents every field of the app file, with its default: this walks the JSON
 * Schema made from the zod schema (what `drover schema` prints) and fails on a field path the
 * page has no table row for, or a row that does not give the field's default.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { appFileJsonSchema } from '../src/core/index.js';
import { ROOT } from './helpers.js';

/** Which section of the page holds the table of each object of the file. Nested objects are rows `parent.child`. */
const SECTIONS: Readonly<Record<string, string>> = {
  '': '## Top level',
  'roles.*': '## A role',
  provider: '## Provider',
  'roles.*.provider': '## Provider',
  'roles.*.health': '### Health',
  'roles.*.loadBalancer': '### Load balancer',
  'roles.*.metrics[]': '### Metrics',
  'roles.*.tenants': '## Tenants',
  'roles.*.scale[].threshold': '#### `threshold`',
  'roles.*.scale[].target': '#### `target`',
  'roles.*.scale[].queue': '#### `queue`',
  'roles.*.scale[].adaptive': '## The `adaptive` scaling policy',
};

type Node = { $ref?: string; properties?: Record<string, Node>; additionalProperties?: unknown; items?: Node; anyOf?: Node[]; oneOf?: Node[]; allOf?: Node[]; default?: unknown };

const page = readFileSync(`${ROOT}/docs/app-file.md`, 'utf8');

function section(heading: string): string {
  const lines = page.split('\n');
  const at = lines.findIndex((l) => l.trim() === heading);
  assert.ok(at >= 0, `docs/app-file.md has no section "${heading}"`);
  const level = heading.indexOf(' ');
  const end = lines.findIndex((l, i) => i > at && /^#{1,6} /.test(l) && l.indexOf(' ') <= level);
  return lines.slice(at, end < 0 ? undefined : end).join('\n');
}

/** The table row whose first cell names `field` in backticks; its second cell gives the default. */
function row(text: string, field: string): string | undefined {
  return text.split('\n').find((l) => l.startsWith('|') && (l.split('|')[1] ?? '').includes(`\`${field}\``));
}

const ms = (n: number, unit: string) => n * ({ ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as Record<string, number>)[unit]!;
const durations = (text: string) => [...text.matchAll(/\b(\d+(?:\.\d+)?)(ms|s|m|h)\b/g)].map((m) => ms(Number(m[1]), m[2]!));

function mentionsDefault(r: string, d: unknown): boolean {
  if (typeof d === 'number') return new RegExp(`(^|[^0-9.])${String(d).replace('.', '\\.')}([^0-9.]|$)`).test(r);
  if (typeof d === 'boolean') return r.includes(String(d));
  if (typeof d === 'string') {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(d);
    if (m) return durations(r).includes(ms(Number(m[1]), m[2]!));
    return r.includes(d);
  }
  return true; // {}: the row says what an empty one means
}

test('docs/app-file.md has a row, with the default, for every field of the app file', () => {
  const schema = appFileJsonSchema() as Node & { $defs?: Record<string, Node> };
  const deref = (n: Node | undefined): Node | undefined => (n?.$ref ? deref(schema.$defs?.[n.$ref.split('/').pop() ?? '']) : n);
  const missing: string[] = [];
  const visited = new Set<string>();
  let fields = 0;
  const walk = (raw: Node | undefined, path: string, where: { text: string; prefix: string } | undefined) => {
    const n = deref(raw);
    if (!n) return;
    if (Object.hasOwn(SECTIONS, path) && n.properties) {
      visited.add(path);
      where = { text: section(SECTIONS[path]!), prefix: '' };
    }
    for (const k of ['anyOf', 'oneOf', 'allOf'] as const) for (const x of n[k] ?? []) walk(x, path, where);
    for (const [k, v] of Object.entries(n.properties ?? {})) {
      const child = path ? `${path}.${k}` : k;
      if (where) {
        fields++;
        const name = where.prefix + k;
        const r = row(where.text, name);
        const d = deref(v)?.default;
        if (!r) missing.push(`${child}: no row for \`${name}\``);
        else if (d !== undefined && !mentionsDefault(r.split('|')[2] ?? '', d)) missing.push(`${child}: the row of \`${name}\` does not give its default ${JSON.stringify(d)}`);
      }
      walk(v, child, where && { text: where.text, prefix: `${where.prefix}${k}.` });
    }
    if (n.additionalProperties && typeof n.additionalProperties === 'object') walk(n.additionalProperties, `${path}.*`.replace(/^\./, ''), undefined);
    if (n.items) walk(n.items, `${path}[]`, undefined);
  };
  walk(schema, '', undefined);
  assert.deepEqual(missing, []);
  assert.deepEqual([...visited].sort(), Object.keys(SECTIONS).sort(), 'every section maps to an object of the schema');
  assert.ok(fields > 90, `only ${fields} fields walked`);
});

test('the check can fail: a field the page does not have is found missing', () => {
  assert.equal(row(section('## A role'), 'noSuchField'), undefined);
  assert.equal(mentionsDefault('| `for` | `2m` | …', '1m'), false);
  assert.equal(mentionsDefault('| `window` | `1h` | …', '60m'), true);
});
