// The worker's pure part: choose a Julia constant from a task's uuid, render the Julia set over
// the task's region, encode it as PNG. No I/O and no clock, so a test can check that a task
// always yields the same image.
import { createHash } from 'node:crypto';
import { deflateSync } from 'node:zlib';

/** @typedef {{ width: number, height: number, iterations: number, xa: number, xb: number, ya: number, yb: number }} Region */
/** @typedef {{ re: number, im: number, inside: boolean }} JuliaConstant */

/**
 * A seeded generator (sfc32) fed from sha256(seed): Math.random cannot be seeded, and the
 * same uuid must give the same constant on every worker.
 * @param {string} seed
 * @returns {() => number} uniform in [0, 1)
 */
export function seededRandom(seed) {
  const h = createHash('sha256').update(seed).digest();
  let a = h.readUInt32LE(0);
  let b = h.readUInt32LE(4);
  let c = h.readUInt32LE(8);
  let d = h.readUInt32LE(12);
  return () => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
}

const PROBE_ITERATIONS = 256;

/** Iterations before c escapes under z → z² + c from 0; PROBE_ITERATIONS if it never does. */
function mandelbrotEscape(re, im) {
  let x = 0;
  let y = 0;
  for (let n = 0; n < PROBE_ITERATIONS; n++) {
    const xx = x * x;
    const yy = y * y;
    if (xx + yy > 4) return n;
    y = 2 * x * y + im;
    x = xx - yy + re;
  }
  return PROBE_ITERATIONS;
}

/**
 * A constant c near the boundary of the Mandelbrot set, where Julia sets are most intricate:
 * either just outside it (c escapes, but slowly: a dust with long spirals) or just inside it
 * (c stays bounded but a point 0.02 away escapes: a filled set with a rich edge). Inside
 * constants make heavy work, since bounded points run every iteration; so the workload of a
 * task depends on its iterations, as a user of the tutorial would expect.
 * c is rounded to 6 decimals so the value a record shows reproduces the image.
 * @param {string} seed the task's uuid
 * @returns {JuliaConstant}
 */
export function chooseConstant(seed) {
  const rand = seededRandom(seed);
  const round = (v) => Math.round(v * 1e6) / 1e6;
  for (let tries = 0; tries < 100_000; tries++) {
    const re = round(-2 + rand() * 2.5);
    const im = round(-1.2 + rand() * 2.4);
    const n = mandelbrotEscape(re, im);
    if (n >= 20 && n < PROBE_ITERATIONS) return { re, im, inside: false };
    if (n === PROBE_ITERATIONS) {
      const d = 0.02;
      const nearEdge =
        mandelbrotEscape(re + d, im) < PROBE_ITERATIONS ||
        mandelbrotEscape(re - d, im) < PROBE_ITERATIONS ||
        mandelbrotEscape(re, im + d) < PROBE_ITERATIONS ||
        mandelbrotEscape(re, im - d) < PROBE_ITERATIONS;
      if (nearEdge) return { re, im, inside: true };
    }
  }
  // Unreachable in practice (about one sample in ten is accepted); a fixed classic keeps the
  // function total.
  return { re: -0.8, im: 0.156, inside: true };
}

// A cyclic gradient (deep blue → white → orange → black → deep blue), sampled every 4
// iterations so neighbouring escape counts shade smoothly instead of banding.
const STOPS = [
  [0, [0, 7, 100]],
  [0.16, [32, 107, 203]],
  [0.42, [237, 255, 255]],
  [0.6425, [255, 170, 0]],
  [0.8575, [0, 2, 0]],
  [1, [0, 7, 100]],
];
const PALETTE = (() => {
  const p = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; i++) {
    const t = i / 256;
    let k = 0;
    while (STOPS[k + 1][0] < t) k++;
    const [t0, c0] = STOPS[k];
    const [t1, c1] = STOPS[k + 1];
    const f = (t - t0) / (t1 - t0);
    for (let ch = 0; ch < 3; ch++) p[i * 3 + ch] = Math.round(c0[ch] + (c1[ch] - c0[ch]) * f);
  }
  return p;
})();

/** Iterations before z escapes under z → z² + c; `iterations` if it never does. */
function juliaEscape(x, y, c, iterations) {
  let n = 0;
  for (; n < iterations; n++) {
    const xx = x * x;
    const yy = y * y;
    if (xx + yy > 4) break;
    y = 2 * x * y + c.im;
    x = xx - yy + c.re;
  }
  return n;
}

/**
 * Renders rows [from, to) into `raw`, the PNG scanline buffer (one filter byte, then RGB per
 * row). Row 0 is the top of the picture, at imaginary part yb. With samples = s > 1, each
 * pixel is the mean colour of an s × s grid inside it (anti-aliasing, at s² the work).
 */
function renderRows(region, c, samples, raw, from, to) {
  const { width, height, iterations, xa, xb, ya, yb } = region;
  const dx = (xb - xa) / width;
  const dy = (yb - ya) / height;
  const stride = 1 + width * 3;
  const s2 = samples * samples;
  for (let row = from; row < to; row++) {
    let o = row * stride;
    raw[o++] = 0; // filter: none
    for (let col = 0; col < width; col++) {
      let r = 0;
      let g = 0;
      let b = 0;
      for (let sy = 0; sy < samples; sy++) {
        const y = yb - (row + (samples === 1 ? 0 : (sy + 0.5) / samples)) * dy;
        for (let sx = 0; sx < samples; sx++) {
          const x = xa + (col + (samples === 1 ? 0 : (sx + 0.5) / samples)) * dx;
          const n = juliaEscape(x, y, c, iterations);
          // Bounded points stay black.
          if (n < iterations) {
            const p = ((n * 4) & 255) * 3;
            r += PALETTE[p];
            g += PALETTE[p + 1];
            b += PALETTE[p + 2];
          }
        }
      }
      // Integer rounding keeps the pixels identical on every platform.
      raw[o++] = Math.floor((r + (s2 >> 1)) / s2);
      raw[o++] = Math.floor((g + (s2 >> 1)) / s2);
      raw[o++] = Math.floor((b + (s2 >> 1)) / s2);
    }
  }
}

/**
 * The picture's scanlines, computed in slices: a generator so the worker can give its event
 * loop a turn between slices (lease heartbeats, SIGTERM) while tests render in one go.
 * @param {Region} region
 * @param {JuliaConstant} c
 * @param {number} samples per axis, per pixel
 * @param {number} rowsPerSlice
 * @returns {Generator<number, Buffer, void>} yields rows done so far; returns the scanlines
 */
export function* juliaScanlines(region, c, samples = 1, rowsPerSlice = 16) {
  const raw = Buffer.alloc(region.height * (1 + region.width * 3));
  for (let row = 0; row < region.height; row += rowsPerSlice) {
    const to = Math.min(region.height, row + rowsPerSlice);
    renderRows(region, c, samples, raw, row, to);
    if (to < region.height) yield to;
  }
  return raw;
}

// ---------------------------------------------------------------------------------------------
// PNG

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 as PNG (and zlib) define it; zlib.crc32 only exists from Node 20.15. */
export function crc32(buf) {
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

export const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

function chunk(type, data) {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'latin1');
  data.copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/**
 * An 8-bit RGB PNG from scanlines that already carry their filter bytes.
 * @param {number} width
 * @param {number} height
 * @param {Buffer} scanlines height × (1 + 3·width) bytes
 */
export function encodePng(width, height, scanlines) {
  if (scanlines.length !== height * (1 + width * 3)) throw new Error('scanlines do not match width × height');
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type: RGB
  ihdr[10] = 0; // compression: deflate
  ihdr[11] = 0; // filter method 0
  ihdr[12] = 0; // no interlace
  return Buffer.concat([
    PNG_SIGNATURE,
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(scanlines, { level: 6 })),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/**
 * Width and height of a PNG, after checking its signature, its IHDR and every chunk's CRC;
 * undefined if it is not a well-formed PNG.
 * @param {Buffer} buf
 * @returns {{ width: number, height: number } | undefined}
 */
export function pngInfo(buf) {
  if (buf.length < 8 + 25 + 12 || !buf.subarray(0, 8).equals(PNG_SIGNATURE)) return undefined;
  let off = 8;
  let info;
  let sawEnd = false;
  while (off + 12 <= buf.length) {
    const len = buf.readUInt32BE(off);
    if (off + 12 + len > buf.length) return undefined;
    const type = buf.toString('latin1', off + 4, off + 8);
    if (crc32(buf.subarray(off + 4, off + 8 + len)) !== buf.readUInt32BE(off + 8 + len)) return undefined;
    if (off === 8) {
      if (type !== 'IHDR' || len !== 13) return undefined;
      info = { width: buf.readUInt32BE(off + 8), height: buf.readUInt32BE(off + 12) };
    }
    off += 12 + len;
    if (type === 'IEND') {
      sawEnd = true;
      break;
    }
  }
  return sawEnd && info && info.width > 0 && info.height > 0 ? info : undefined;
}

// ---------------------------------------------------------------------------------------------
// One task, start to end

/**
 * @typedef {object} Rendered
 * @property {Buffer} png
 * @property {string} checksum sha256 of the PNG, hex
 * @property {string} pixelsChecksum sha256 of the scanlines, hex: the same on every platform,
 *   whereas the PNG's deflate stream may differ between zlib builds
 * @property {JuliaConstant} c
 */

function finish(region, c, raw) {
  const png = encodePng(region.width, region.height, raw);
  return {
    png,
    checksum: createHash('sha256').update(png).digest('hex'),
    pixelsChecksum: createHash('sha256').update(raw).digest('hex'),
    c,
  };
}

/** Anti-aliasing samples per axis when a caller gives none: 4 samples per pixel. */
export const DEFAULT_SAMPLES = 2;

/**
 * Renders a task in one go.
 * @param {Region & { uuid: string }} task
 * @param {{ samples?: number }} [opts]
 * @returns {Rendered}
 */
export function renderFractal(task, opts = {}) {
  const c = chooseConstant(task.uuid);
  const gen = juliaScanlines(task, c, opts.samples ?? DEFAULT_SAMPLES);
  let step = gen.next();
  while (!step.done) step = gen.next();
  return finish(task, c, step.value);
}

/**
 * Renders a task like {@link renderFractal}, with the same bytes, but gives the event loop a
 * turn about every `sliceMs` of work.
 * @param {Region & { uuid: string }} task
 * @param {{ samples?: number, sliceMs?: number }} [opts]
 * @returns {Promise<Rendered>}
 */
export async function renderFractalAsync(task, opts = {}) {
  const sliceMs = opts.sliceMs ?? 50;
  const c = chooseConstant(task.uuid);
  const gen = juliaScanlines(task, c, opts.samples ?? DEFAULT_SAMPLES, 1);
  let sliceStart = performance.now();
  let step = gen.next();
  while (!step.done) {
    if (performance.now() - sliceStart >= sliceMs) {
      await new Promise((resolve) => setImmediate(resolve));
      sliceStart = performance.now();
    }
    step = gen.next();
  }
  return finish(task, c, step.value);
}

/** "-0.745123+0.112345i" */
export function formatConstant(c) {
  return `${c.re}${c.im < 0 ? '-' : '+'}${Math.abs(c.im)}i`;
}
