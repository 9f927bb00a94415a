/**
 * PGlite's WebAssembly compiled ahead for the functions a start uses.
 *
 * V8 compiles a WebAssembly function the first time it is called (lazy compilation). PGlite's
 * PostgreSQL has 13,725 of them; a controller's start and first apply call about 2,200, each
 * compiled on the store's thread as it gets there: about half of that thread's time from
 * PostgreSQL's start to the app applied, measured. Compiling all of them ahead takes V8's threads
 * half a second of CPU, more than it saves on two cores.
 *
 * V8 reads a "compilationHints" section (one byte per function: lazy or eager) when started with
 * `--experimental-wasm-compilation-hints` and without lazy compilation: bin/wasm-flags.js sets
 * both, on Node 20's V8, for the whole process before anything is loaded (the bundles' code
 * caches are made under the same flags). The functions a training run of `drover up` called
 * (pglite-hot-functions.ts, made by `npm run store:hints`) are marked eager, and compiled on V8's
 * threads while the store's thread copies the template; the others stay lazy. The section is
 * added to the bytes in memory: PGlite's own file is not changed.
 *
 * With `DROVER_STORE_HINTS=off`, or when the PGlite files differ from the training run's, every
 * function is marked lazy: compiled when first called, as V8 does by default. Without the flags
 * (another V8, or PGlite started by other code than bin/drover.js) V8 ignores the section.
 * Nothing but the compile's timing depends on it.
 */
import { HOT_FUNCTIONS } from './pglite-hot-functions.js';

/** The training run's functions, as stored: PGlite's wasm size, its count of own functions, and a bitmap of the hot ones. */
export interface HotFunctions {
  readonly wasmBytes: number;
  readonly declared: number;
  /** Base64 of one bit per own function (not imports), lowest bit first: set for eager. */
  readonly eager: string;
}

/** Where the code section starts, and how many functions the module imports and declares. */
export interface WasmLayout {
  readonly importedFunctions: number;
  readonly declaredFunctions: number;
  readonly codeSectionAt: number;
}

const MAGIC = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
const SECTION = { custom: 0, import: 2, function: 3, code: 10 } as const;
const HINTS_NAME = 'compilationHints';
/** One hint byte: strategy in the low two bits (1 lazy, 2 eager), tiers left to V8. */
const LAZY = 1;
const EAGER = 2;

class Reader {
  constructor(
    readonly bytes: Uint8Array,
    public at: number,
  ) {}
  byte(): number {
    if (this.at >= this.bytes.length) throw new RangeError('past the end');
    return this.bytes[this.at++] as number;
  }
  u32(): number {
    let result = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      const b = this.byte();
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) {
        if (result > 0xffffffff) throw new RangeError('LEB128 over 32 bits');
        return result;
      }
    }
    throw new RangeError('LEB128 too long');
  }
  skip(n: number): void {
    if (this.at + n > this.bytes.length) throw new RangeError('past the end');
    this.at += n;
  }
  limits(): void {
    const flags = this.byte();
    this.u32();
    if (flags & 1) this.u32();
  }
}

function leb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return out;
}

/** The module's function counts and code section, or undefined if `bytes` is not a module this reader understands. */
export function wasmLayout(bytes: Uint8Array): WasmLayout | undefined {
  try {
    if (bytes.length < 8 || MAGIC.some((b, i) => bytes[i] !== b)) return undefined;
    const r = new Reader(bytes, 8);
    let importedFunctions = 0;
    let declaredFunctions: number | undefined;
    while (r.at < bytes.length) {
      const start = r.at;
      const id = r.byte();
      const size = r.u32();
      const end = r.at + size;
      if (end > bytes.length) return undefined;
      if (id === SECTION.custom) {
        const n = r.u32();
        if (Buffer.from(bytes.subarray(r.at, r.at + n)).toString('latin1') === HINTS_NAME) return undefined; // hinted already: V8 takes one
      } else if (id === SECTION.import) {
        for (let i = r.u32(); i > 0; i--) {
          r.skip(r.u32()); // module
          r.skip(r.u32()); // field
          const kind = r.byte();
          if (kind === 0) {
            r.u32(); // type index
            importedFunctions++;
          } else if (kind === 1) {
            r.byte(); // element type
            r.limits();
          } else if (kind === 2) r.limits();
          else if (kind === 3) r.skip(2); // value type, mutability
          else if (kind === 4) {
            r.byte(); // tag attribute
            r.u32();
          } else return undefined;
        }
      } else if (id === SECTION.function) declaredFunctions = r.u32();
      else if (id === SECTION.code) {
        return declaredFunctions === undefined ? undefined : { importedFunctions, declaredFunctions, codeSectionAt: start };
      }
      r.at = end;
    }
    return undefined;
  } catch {
    return undefined;
  }
}

/**
 * `bytes` with a compilation hints section before its code section: eager for the own functions
 * whose bit is set in `eager`, lazy for the rest. Undefined if the module is not what `hot` was
 * made for (its size or its count of functions differ) or cannot be read.
 */
export function withCompilationHints(bytes: Uint8Array, hot: HotFunctions): Uint8Array | undefined {
  if (bytes.length !== hot.wasmBytes) return undefined;
  const layout = wasmLayout(bytes);
  if (!layout || layout.declaredFunctions !== hot.declared) return undefined;
  const bits = Buffer.from(hot.eager, 'base64');
  if (bits.length !== Math.ceil(hot.declared / 8)) return undefined;
  const hints = new Uint8Array(hot.declared);
  for (let i = 0; i < hot.declared; i++) hints[i] = ((bits[i >> 3] as number) >> (i & 7)) & 1 ? EAGER : LAZY;
  const name = Buffer.from(HINTS_NAME, 'utf8');
  const payload = Buffer.concat([Buffer.from(leb(name.length)), name, Buffer.from(leb(hot.declared)), hints]);
  const section = Buffer.concat([Buffer.from([SECTION.custom, ...leb(payload.length)]), payload]);
  return Buffer.concat([bytes.subarray(0, layout.codeSectionAt), section, bytes.subarray(layout.codeSectionAt)]);
}

/** The bitmap of {@link HotFunctions} for the own functions `eager` (indices among own functions). */
export function hotBitmap(declared: number, eager: Iterable<number>): string {
  const bits = Buffer.alloc(Math.ceil(declared / 8));
  for (const i of eager) {
    if (!Number.isInteger(i) || i < 0 || i >= declared) throw new RangeError(`function ${i} is not one of the module's ${declared}`);
    bits[i >> 3] = (bits[i >> 3] as number) | (1 << (i & 7));
  }
  return bits.toString('base64');
}

/** Whether hints may mark functions eager (not turned off with DROVER_STORE_HINTS=off). */
export function hintsWanted(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.DROVER_STORE_HINTS !== 'off';
}

/**
 * PGlite's WebAssembly to compile: with the training run's functions eager when
 * {@link hintsWanted} and the run was made with these bytes, else with every function lazy (what
 * V8 does without flags, kept when the flags are set); `bytes` as they are if they cannot be
 * read as a module (with the flags, V8 then compiles it whole).
 */
export function compileInput(bytes: Uint8Array, hot: HotFunctions = HOT_FUNCTIONS, env: NodeJS.ProcessEnv = process.env): { bytes: Uint8Array; eager: boolean } {
  const trained = hintsWanted(env) ? withCompilationHints(bytes, hot) : undefined;
  if (trained) return { bytes: trained, eager: true };
  const layout = wasmLayout(bytes);
  const lazy = layout && withCompilationHints(bytes, { wasmBytes: bytes.length, declared: layout.declaredFunctions, eager: hotBitmap(layout.declaredFunctions, []) });
  return { bytes: lazy ?? bytes, eager: false };
}
