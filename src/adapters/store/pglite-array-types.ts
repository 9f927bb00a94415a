/**
 * PGlite's array types, known without asking. At every start PGlite reads which array type
 * belongs to which element type (a join over pg_type on a cold engine: 150–200 ms of the store's
 * thread here, of which 100–150 ms are saved from a start to a first apply; the rest is warming
 * up that the first statements then pay) so that a JavaScript array passed for `$1::text[]` is written `{a,b}` and an array
 * read back is parsed. The embedded store only ever needs PostgreSQL's own types (it makes none),
 * and those are fixed by the PostgreSQL that PGlite ships: `npm run build` reads them once
 * (scripts/build-store-template.mjs → dist/store-array-types.json), and a start with the same
 * PGlite files uses them instead of the query. A different PGlite (its files' sizes differ), or
 * no such file, and PGlite asks as before.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { PGlite, types, type PGliteOptions } from '@electric-sql/pglite';

type Parser = Parameters<typeof types.arrayParser>[1];

/** Made by the build beside the store's template (this file is three levels below the package root). */
export const ARRAY_TYPES_FILE = fileURLToPath(new URL('../../../dist/store-array-types.json', import.meta.url));

/** PostgreSQL's first OID for objects made after initdb: below it, its own types. */
const FIRST_NORMAL_OID = 16384;

/** The element and array type of each of PostgreSQL's own array types: PGlite's query, less types made later. */
export const ARRAY_TYPES_SQL = `select b.oid as elem, b.typarray as arr from pg_catalog.pg_type a
  join pg_catalog.pg_type b on b.oid = a.typelem
  where a.typcategory = 'A' and b.oid < ${FIRST_NORMAL_OID} and b.typarray <> 0
  group by b.oid, b.typarray order by b.oid`;

/** The file: which PGlite files it was read with (their sizes), and the pairs. */
export interface ArrayTypes {
  readonly wasmBytes: number;
  readonly dataBytes: number;
  readonly pairs: readonly (readonly [elem: number, arr: number])[];
}

const isOid = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0 && v < FIRST_NORMAL_OID;

/** The file's content if it is whole and well-formed, else undefined (PGlite then asks). */
export function parseArrayTypes(text: string): ArrayTypes | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const { wasmBytes, dataBytes, pairs } = v as Record<string, unknown>;
  if (!Number.isSafeInteger(wasmBytes) || !Number.isSafeInteger(dataBytes) || !Array.isArray(pairs) || pairs.length === 0) return undefined;
  if (!pairs.every((p: unknown) => Array.isArray(p) && p.length === 2 && isOid(p[0]) && isOid(p[1]))) return undefined;
  return { wasmBytes: wasmBytes as number, dataBytes: dataBytes as number, pairs: pairs as [number, number][] };
}

/** The build's file, if there is one and it was made with PGlite files of these sizes. */
export function readArrayTypes(wasmBytes: number, dataBytes: number, file = ARRAY_TYPES_FILE): ArrayTypes | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const t = parseArrayTypes(text);
  return t && t.wasmBytes === wasmBytes && t.dataBytes === dataBytes ? t : undefined;
}

/** PGlite that takes its array types from `known` at start instead of querying them (a forced refresh still queries). */
export class KnownTypesPGlite extends PGlite {
  // A plain field: undefined, not an error, if PGlite ever asked before this constructor's end (it then queries).
  private readonly known: ArrayTypes | undefined;

  constructor(options: PGliteOptions, known: ArrayTypes | undefined) {
    super(options);
    this.known = known;
  }

  override async _initArrayTypes(opts?: { force?: boolean }): Promise<void> {
    const known = this.known;
    if (opts?.force || !known) return super._initArrayTypes(opts);
    for (const [elem, arr] of known.pairs) {
      this.serializers[arr] = (x: unknown) => types.arraySerializer(x, this.serializers[elem], arr);
      // An element type without a parser gives strings, as in PGlite (its signature says otherwise).
      this.parsers[arr] = (x: string) => types.arrayParser(x, this.parsers[elem] as Parser, arr) as unknown;
    }
  }
}
