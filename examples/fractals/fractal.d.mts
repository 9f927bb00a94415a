// Types of fractal.mjs, for the TypeScript tests that check its determinism.

/** The region of the complex plane a task renders, and how finely. */
export interface Region {
  readonly width: number;
  readonly height: number;
  readonly iterations: number;
  readonly xa: number;
  readonly xb: number;
  readonly ya: number;
  readonly yb: number;
}

/** The Julia constant c = re + im·i; `inside`: c lies in the Mandelbrot set (a filled Julia set). */
export interface JuliaConstant {
  readonly re: number;
  readonly im: number;
  readonly inside: boolean;
}

export interface Rendered {
  readonly png: Buffer;
  /** sha256 of the PNG, hex. */
  readonly checksum: string;
  /** sha256 of the scanlines, hex: the same on every platform, unlike the deflate stream. */
  readonly pixelsChecksum: string;
  readonly c: JuliaConstant;
}

export const DEFAULT_SAMPLES: number;
export const PNG_SIGNATURE: Buffer;

export function seededRandom(seed: string): () => number;
export function chooseConstant(seed: string): JuliaConstant;
export function juliaScanlines(region: Region, c: JuliaConstant, samples?: number, rowsPerSlice?: number): Generator<number, Buffer, void>;
export function crc32(buf: Uint8Array): number;
export function encodePng(width: number, height: number, scanlines: Buffer): Buffer;
export function pngInfo(buf: Buffer): { width: number; height: number } | undefined;
export function renderFractal(task: Region & { readonly uuid: string }, opts?: { samples?: number }): Rendered;
export function renderFractalAsync(task: Region & { readonly uuid: string }, opts?: { samples?: number; sliceMs?: number }): Promise<Rendered>;
export function formatConstant(c: JuliaConstant): string;
