/**
 * App bundles, the controller's end (docs/fleet.md, "App bundles"): the folder of the app file
 * packed into one deterministic, gzipped tar named by its sha256, kept under
 * `<data-dir>/bundles/` (0700, files 0600), and served to the agents of that app only.
 *
 * ```ts
 * const bundles = new BundleStore({ dir: join(dataDir, 'bundles'), maxBytes: 64 * MiB });
 * const ref = await bundles.forApp('shop', '/srv/shop', generation); // packs once per generation
 * ```
 *
 * **Why our own tar writer.** Determinism is the point of a content-addressed bundle: the same
 * folder must give the same bytes, so that an unchanged folder is not fetched again. A general
 * tar library records what the file system says (mtimes, owners, modes, the order readdir gives);
 * this writer records only what a role needs — sorted paths, a file's bytes, whether it is
 * executable (0755, else 0644), directories (0755), links inside the folder — with mtime 0 and
 * owner 0. It is the small, documented ustar format plus pax records for long or non-ASCII
 * names. Unpacking, where the danger is, uses the `tar` package (agent/bundle.ts).
 */
import { createHash } from 'node:crypto';
import { createReadStream, mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { isAbsolute, join, posix, resolve } from 'node:path';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { BUNDLE_CLOCK_SKEW_MS, BUNDLE_HEADERS, checkBundleProof, SHA256_HEX, type BundleRef } from '../core/index.js';
import type { Store } from '../adapters/store/index.js';
import type { EventInput } from './context.js';
import { ApiError } from './errors.js';

const gzipAsync = promisify(gzip);

/** @default 64 MiB: the bytes of the files of a bundle, unpacked. */
export const DEFAULT_BUNDLE_LIMIT = 64 * 1024 * 1024;
/** Files, folders and links in one bundle. */
export const MAX_BUNDLE_ENTRIES = 100_000;
/** Always left out: version control and drover's own data folders. */
export const DEFAULT_IGNORES = ['.git/', '.drover/', '.drover-node/'] as const;
/** Bounds of a `.droverignore`. */
const MAX_IGNORE_BYTES = 64 * 1024;
const MAX_IGNORE_LINES = 1000;
/** Bundles kept per app (the current one and those before it, for instances still being assigned). */
const KEPT_PER_APP = 3;

/** A size as written for `--bundle-limit` / DROVER_BUNDLE_LIMIT: bytes, or a number with KiB, MiB or GiB (K, M, G). Undefined if it is not one (or is 0 or over 4 GiB). */
export function parseSize(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib)\s*$/i.exec(text);
  if (!m) return undefined;
  const unit = m[2]!.toLowerCase()[0] ?? '';
  const n = Math.round(Number(m[1]) * ({ '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 } as Record<string, number>)[unit]!);
  return n >= 1 && n <= 4 * 1024 ** 3 ? n : undefined;
}

export type BundleErrorKind = 'too_large' | 'too_many_files' | 'unsafe_link' | 'unreadable';

/** The folder cannot be packed; the message says why, naming the file or the sizes. */
export class BundleError extends Error {
  override readonly name = 'BundleError';
  constructor(
    readonly kind: BundleErrorKind,
    message: string,
  ) {
    super(message);
  }
}

// ---------------------------------------------------------------------------------------------
// .droverignore

interface IgnoreRule {
  readonly re: RegExp;
  readonly dirOnly: boolean;
  readonly negate: boolean;
}

/** A glob of the rule's text as a regular expression over a path relative to the root. */
function globToRegExp(glob: string, anchored: boolean): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i]!;
    if (ch === '*') {
      if (glob[i + 1] === '*') {
        // `**/` any folders (or none); a trailing `**` everything below.
        if (glob[i + 2] === '/') {
          re += '(?:.*/)?';
          i += 2;
        } else {
          re += '.*';
          i += 1;
        }
      } else re += '[^/]*';
    } else if (ch === '?') re += '[^/]';
    else if (ch === '\\' && i + 1 < glob.length) re += glob[++i]!.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    else re += ch.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${anchored ? '' : '(?:.*/)?'}${re}$`);
}

/**
 * Rules of a `.droverignore` (a subset of `.gitignore`): one pattern a line; `#` comments and
 * blank lines are skipped; `*` and `?` match within a name, `**` across folders; a trailing `/`
 * matches folders only; a pattern with a `/` before its end is anchored at the app folder,
 * one without matches the name at any depth; `!` takes a path back in. The last rule that
 * matches decides; a folder left out is not looked into (nothing inside it comes back).
 */
export function parseIgnore(text: string): IgnoreRule[] {
  const rules: IgnoreRule[] = [];
  for (const raw of text.split(/\r?\n/)) {
    let line = raw.replace(/(?<!\\)\s+$/, '');
    if (line === '' || line.startsWith('#')) continue;
    const negate = line.startsWith('!');
    if (negate) line = line.slice(1);
    const dirOnly = line.endsWith('/');
    if (dirOnly) line = line.slice(0, -1);
    const anchored = line.includes('/');
    if (line.startsWith('/')) line = line.slice(1);
    if (line === '') continue;
    rules.push({ re: globToRegExp(line, anchored), dirOnly, negate });
  }
  return rules;
}

/** Whether a path (relative, `/`-separated) is left out by the rules. */
export function ignored(rules: readonly IgnoreRule[], path: string, isDir: boolean): boolean {
  let out = false;
  for (const r of rules) {
    if (r.dirOnly && !isDir) continue;
    if (r.re.test(path)) out = !r.negate;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Walking and packing

interface Entry {
  /** Relative, `/`-separated; folders end with `/`. */
  readonly path: string;
  readonly kind: 'file' | 'dir' | 'symlink';
  readonly abs: string;
  readonly size: number;
  readonly executable: boolean;
  readonly target?: string;
}

export interface PackOptions {
  /** @default {@link DEFAULT_BUNDLE_LIMIT} */
  readonly maxBytes?: number;
  /** Absolute paths never packed (the controller's data folder, when it is inside the app folder). */
  readonly exclude?: readonly string[];
}

export interface PackedBundle {
  readonly data: Buffer;
  readonly sha256: string;
  readonly files: number;
  readonly unpackedBytes: number;
  /** Entries skipped because they are neither files, folders nor links (sockets, pipes, devices). */
  readonly skipped: readonly string[];
}

const MiB = 1024 * 1024;
export const sizeText = (n: number): string => (n >= MiB ? `${(n / MiB).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} bytes`);

async function walk(root: string, o: PackOptions): Promise<{ entries: Entry[]; skipped: string[] }> {
  let rules = parseIgnore(DEFAULT_IGNORES.join('\n'));
  let text: string | undefined;
  try {
    text = await readFile(join(root, '.droverignore'), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new BundleError('unreadable', `${join(root, '.droverignore')}: ${(err as Error).message}`);
  }
  if (text !== undefined) {
    const lines = text.split('\n').length;
    if (text.length > MAX_IGNORE_BYTES || lines > MAX_IGNORE_LINES) {
      throw new BundleError('unreadable', `.droverignore: ${text.length} bytes in ${lines} lines; at most ${MAX_IGNORE_BYTES} bytes and ${MAX_IGNORE_LINES} lines`);
    }
    rules = [...rules, ...parseIgnore(text)];
  }
  const exclude = new Set((o.exclude ?? []).map((p) => resolve(p)));
  const entries: Entry[] = [];
  const skipped: string[] = [];
  const visit = async (dirAbs: string, dirRel: string): Promise<void> => {
    let names: string[];
    try {
      names = (await readdir(dirAbs)).sort();
    } catch (err) {
      throw new BundleError('unreadable', `${dirRel || '.'}: cannot list it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    for (const name of names) {
      const abs = join(dirAbs, name);
      const rel = dirRel ? `${dirRel}/${name}` : name;
      if (exclude.has(abs)) continue;
      let st;
      try {
        st = await lstat(abs);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // removed while we walked
        throw new BundleError('unreadable', `${rel}: ${(err as Error).message}`);
      }
      const isDir = st.isDirectory();
      if (ignored(rules, rel, isDir)) continue;
      if (entries.length >= MAX_BUNDLE_ENTRIES) {
        throw new BundleError('too_many_files', `the app folder has more than ${MAX_BUNDLE_ENTRIES} files and folders; leave some out with .droverignore`);
      }
      if (isDir) {
        entries.push({ path: `${rel}/`, kind: 'dir', abs, size: 0, executable: true });
        await visit(abs, rel);
      } else if (st.isFile()) {
        entries.push({ path: rel, kind: 'file', abs, size: st.size, executable: (st.mode & 0o111) !== 0 });
      } else if (st.isSymbolicLink()) {
        const target = await readlink(abs);
        if (isAbsolute(target)) throw new BundleError('unsafe_link', `${rel}: a symlink to an absolute path (${target}); only relative links inside the app folder are packed`);
        const resolved = posix.normalize(posix.join(posix.dirname(rel), target));
        if (resolved === '..' || resolved.startsWith('../')) throw new BundleError('unsafe_link', `${rel}: a symlink pointing out of the app folder (${target})`);
        entries.push({ path: rel, kind: 'symlink', abs, size: 0, executable: false, target });
      } else skipped.push(rel);
    }
  };
  await visit(root, '');
  return { entries, skipped };
}

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, '0') + '\0';
}

/** One 512-byte ustar header. */
function header(name: string, kind: 'file' | 'dir' | 'symlink' | 'pax', size: number, mode: number, linkname = ''): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100, 'utf8');
  h.write(octal(mode, 8), 100, 'ascii');
  h.write(octal(0, 8), 108, 'ascii');
  h.write(octal(0, 8), 116, 'ascii');
  h.write(octal(size, 12), 124, 'ascii');
  h.write(octal(0, 12), 136, 'ascii');
  h.write('        ', 148, 'ascii');
  h.write({ file: '0', dir: '5', symlink: '2', pax: 'x' }[kind], 156, 'ascii');
  h.write(linkname, 157, 100, 'utf8');
  h.write('ustar\0', 257, 'ascii');
  h.write('00', 263, 'ascii');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
  return h;
}

const pad = (n: number) => Buffer.alloc((512 - (n % 512)) % 512);
const plainAscii = (s: string) => /^[\x20-\x7e]*$/.test(s);

/** A pax record `"<len> key=value\n"`, whose length counts itself. */
function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let len = Buffer.byteLength(body) + 1;
  while (String(len).length + Buffer.byteLength(body) !== len) len = String(len).length + Buffer.byteLength(body);
  return `${len}${body}`;
}

function entryBlocks(e: Entry, data: Buffer | undefined): Buffer[] {
  const out: Buffer[] = [];
  const link = e.target ?? '';
  if (Buffer.byteLength(e.path) > 100 || Buffer.byteLength(link) > 100 || !plainAscii(e.path) || !plainAscii(link)) {
    const pax = Buffer.from(paxRecord('path', e.path) + (link ? paxRecord('linkpath', link) : ''), 'utf8');
    out.push(header('PaxHeader', 'pax', pax.length, 0o644), pax, pad(pax.length));
  }
  const mode = e.kind === 'file' ? (e.executable ? 0o755 : 0o644) : e.kind === 'dir' ? 0o755 : 0o777;
  const shortName = plainAscii(e.path) ? e.path.slice(0, 100) : 'entry';
  const shortLink = plainAscii(link) ? link.slice(0, 100) : '';
  out.push(header(shortName, e.kind, data?.length ?? 0, mode, shortLink));
  if (data) out.push(data, pad(data.length));
  return out;
}

/**
 * Packs a folder: the same files give the same bytes (sorted paths, mtime 0, owner 0, modes
 * 0644/0755), so the sha256 names the content. Refused ({@link BundleError}) if its files add up
 * to more than the limit (the message names the largest), if a symlink points out of it or to
 * an absolute path, or if something cannot be read.
 */
export async function packFolder(root: string, o: PackOptions = {}): Promise<PackedBundle> {
  const maxBytes = o.maxBytes ?? DEFAULT_BUNDLE_LIMIT;
  let st;
  try {
    st = statSync(root);
  } catch (err) {
    throw new BundleError('unreadable', `the app folder ${root}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (!st.isDirectory()) throw new BundleError('unreadable', `the app folder ${root} is not a folder`);
  const { entries, skipped } = await walk(root, o);
  const files = entries.filter((e) => e.kind === 'file');
  const total = files.reduce((a, e) => a + e.size, 0);
  if (total > maxBytes) {
    const largest = [...files].sort((a, b) => b.size - a.size).slice(0, 5).map((e) => `${e.path} (${sizeText(e.size)})`);
    throw new BundleError(
      'too_large',
      `the app folder ${root} holds ${sizeText(total)} in ${files.length} files, more than the bundle limit of ${sizeText(maxBytes)}; ` +
        `largest: ${largest.join(', ')}. Leave files out with a .droverignore in the folder, or raise the limit (DROVER_BUNDLE_LIMIT of the controller, e.g. 256MiB)`,
    );
  }
  const blocks: Buffer[] = [];
  let unpacked = 0;
  for (const e of entries) {
    let data: Buffer | undefined;
    if (e.kind === 'file') {
      try {
        data = await readFile(e.abs);
      } catch (err) {
        throw new BundleError('unreadable', `${e.path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
      unpacked += data.length;
      // A file that grew while we packed is counted as read.
      if (unpacked > maxBytes) throw new BundleError('too_large', `the app folder ${root} grew past the bundle limit of ${sizeText(maxBytes)} while it was packed`);
    }
    blocks.push(...entryBlocks(e, data));
  }
  blocks.push(Buffer.alloc(1024));
  const tar = Buffer.concat(blocks);
  const data = await gzipAsync(tar, { level: 6 });
  return { data, sha256: createHash('sha256').update(data).digest('hex'), files: files.length, unpackedBytes: unpacked, skipped };
}

// ---------------------------------------------------------------------------------------------
// The store of bundles

export interface BundleInfo extends BundleRef {
  readonly app: string;
  readonly appDir: string;
  readonly generation: number;
  readonly files: number;
  readonly packedAt: number;
}

export interface BundleStoreOptions {
  /** `<data-dir>/bundles`: made 0700; bundles in it 0600. */
  readonly dir: string;
  /** @default {@link DEFAULT_BUNDLE_LIMIT} */
  readonly maxBytes?: number;
  /** Absolute paths never packed (the controller's data folder). */
  readonly exclude?: readonly string[];
}

const fileName = (app: string, sha256: string) => `${app}-${sha256}.tgz`;

export class BundleStore {
  readonly maxBytes: number;
  readonly #current = new Map<string, BundleInfo>();
  readonly #packing = new Map<string, Promise<BundleInfo>>();
  readonly #downloads = new Map<string, number>();

  constructor(private readonly o: BundleStoreOptions) {
    this.maxBytes = o.maxBytes ?? DEFAULT_BUNDLE_LIMIT;
    mkdirSync(o.dir, { recursive: true, mode: 0o700 });
  }

  /**
   * The app's bundle for this generation of its file: packed once (on the first call after an
   * apply), then the same one. Throws {@link BundleError} when the folder cannot be packed.
   */
  async forApp(app: string, appDir: string, generation: number): Promise<BundleInfo> {
    const cur = this.#current.get(app);
    if (cur && cur.generation === generation && cur.appDir === appDir) return cur;
    const key = `${app}|${generation}|${appDir}`;
    const running = this.#packing.get(key);
    if (running) return running;
    const p = this.#pack(app, appDir, generation).finally(() => this.#packing.delete(key));
    this.#packing.set(key, p);
    return p;
  }

  async #pack(app: string, appDir: string, generation: number): Promise<BundleInfo> {
    const packed = await packFolder(appDir, { maxBytes: this.maxBytes, ...(this.o.exclude ? { exclude: this.o.exclude } : {}) });
    const file = join(this.o.dir, fileName(app, packed.sha256));
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, packed.data, { mode: 0o600 });
    renameSync(tmp, file);
    const info: BundleInfo = {
      app, appDir, generation, sha256: packed.sha256, size: packed.data.length, unpackedBytes: packed.unpackedBytes, files: packed.files, packedAt: Date.now(),
    };
    this.#current.set(app, info);
    this.#prune(app, packed.sha256);
    return info;
  }

  /** Keeps the newest {@link KEPT_PER_APP} bundles of an app (the current one always). */
  #prune(app: string, keep: string): void {
    const mine = readdirSync(this.o.dir)
      .filter((f) => f.startsWith(`${app}-`) && f.endsWith('.tgz') && SHA256_HEX.test(f.slice(app.length + 1, -4)))
      .map((f) => ({ f, at: statSync(join(this.o.dir, f)).mtimeMs }))
      .sort((a, b) => b.at - a.at);
    for (const { f } of mine.slice(KEPT_PER_APP)) if (f !== fileName(app, keep)) rmSync(join(this.o.dir, f), { force: true });
  }

  /**
   * Packs the folder now (an apply checks it before the file is stored); {@link adopt} then ties
   * it to the generation the store gave the file, so the first assignment does not pack again.
   */
  async packNow(app: string, appDir: string): Promise<BundleInfo> {
    return this.#pack(app, appDir, -1);
  }

  adopt(app: string, generation: number): void {
    const c = this.#current.get(app);
    if (c && c.generation === -1) this.#current.set(app, { ...c, generation });
  }

  /** The app's current bundle, if one was packed since this controller started. */
  current(app: string): (BundleInfo & { downloads: number }) | undefined {
    const c = this.#current.get(app);
    return c ? { ...c, downloads: this.downloads(app, c.sha256) } : undefined;
  }

  /** Times the bundle was served. */
  downloads(app: string, sha256: string): number {
    return this.#downloads.get(`${app}/${sha256}`) ?? 0;
  }

  /** The bundle's file and size, if the app has it. */
  file(app: string, sha256: string): { path: string; size: number } | undefined {
    if (!SHA256_HEX.test(sha256)) return undefined;
    const path = join(this.o.dir, fileName(app, sha256));
    try {
      return { path, size: statSync(path).size };
    } catch {
      return undefined;
    }
  }

  noteDownload(app: string, sha256: string): void {
    const k = `${app}/${sha256}`;
    this.#downloads.set(k, (this.#downloads.get(k) ?? 0) + 1);
  }

  /** The app is gone: its bundles too. */
  forget(app: string): void {
    this.#current.delete(app);
    for (const f of readdirSync(this.o.dir)) {
      if (f.startsWith(`${app}-`) && f.endsWith('.tgz') && SHA256_HEX.test(f.slice(app.length + 1, -4))) rmSync(join(this.o.dir, f), { force: true });
    }
    for (const k of [...this.#downloads.keys()]) if (k.startsWith(`${app}/`)) this.#downloads.delete(k);
  }
}

// ---------------------------------------------------------------------------------------------
// The route

export interface BundleRouteOptions {
  readonly bundles: BundleStore;
  readonly store: Store;
  readonly log: Logger;
  readonly record: (ev: EventInput) => Promise<unknown>;
  readonly errors: (...codes: number[]) => Record<number, unknown>;
}

const APP_NAME = /^[a-z][a-z0-9-]{0,62}$/;
const NONCE = /^[A-Za-z0-9_-]{16,64}$/;
const INSTANCE = /^[A-Za-z0-9_.-]{1,64}$/;
/** Nonces seen within the clock window: a captured request cannot be replayed. */
const MAX_NONCES = 100_000;

/**
 * `GET /v1/bundles/{app}/{sha256}`, for agents: the request proves the instance's key (see
 * core/bundle.ts); an instance of another app is answered 403 and the refusal recorded
 * (`security.agent`, at most once a minute per instance). `GET /v1/apps/{name}/bundle`, with the
 * API token: the app's current bundle and how often it was served.
 */
export function registerBundleRoutes(app: FastifyInstance, o: BundleRouteOptions): void {
  const nonces = new Map<string, number>();
  const told = new Map<string, number>();
  const header = (v: string | string[] | undefined) => (typeof v === 'string' ? v : undefined);
  app.get<{ Params: { app: string; sha256: string } }>(
    '/v1/bundles/:app/:sha256',
    {
      schema: {
        tags: ['fleet'],
        summary: "An app bundle, for an agent of that app (instance key proof in X-Drover-* headers)",
        params: { type: 'object', properties: { app: { type: 'string', pattern: APP_NAME.source }, sha256: { type: 'string', pattern: SHA256_HEX.source } }, required: ['app', 'sha256'] },
        response: { ...o.errors(400, 401, 403, 404) },
      },
    },
    async (req, reply) => {
      const { app: appName, sha256 } = req.params;
      const instanceId = header(req.headers[BUNDLE_HEADERS.instance]);
      const atText = header(req.headers[BUNDLE_HEADERS.at]);
      const nonce = header(req.headers[BUNDLE_HEADERS.nonce]);
      const proof = header(req.headers[BUNDLE_HEADERS.proof]);
      const refuse = (why: string): never => {
        o.log.warn({ instance: instanceId, app: appName, remote: req.ip }, `bundle request refused: ${why}`);
        throw new ApiError('unauthorized', 'bundle request refused: no valid instance proof');
      };
      if (!instanceId || !INSTANCE.test(instanceId) || !atText || !/^\d{1,16}$/.test(atText) || !nonce || !NONCE.test(nonce) || !proof || proof.length > 64) {
        return refuse('missing or malformed proof headers');
      }
      const at = Number(atText);
      const now = Date.now();
      if (Math.abs(now - at) > BUNDLE_CLOCK_SKEW_MS) return refuse(`its time is ${Math.round((at - now) / 1000)} s off the controller's`);
      const inst = await o.store.getInstance(instanceId);
      if (!inst || inst.destroyedAt !== null) return refuse(`unknown or destroyed instance ${instanceId}`);
      // The proof names the app asked for: checked with the key before the app is compared.
      if (!checkBundleProof({ key: inst.joinToken, instanceId, app: appName, sha256, at, nonce }, proof)) return refuse(`wrong proof for instance ${instanceId}`);
      for (const [n, exp] of nonces) {
        if (exp > now && nonces.size < MAX_NONCES) break;
        nonces.delete(n);
      }
      if (nonces.has(nonce)) return refuse(`a replayed nonce from instance ${instanceId}`);
      nonces.set(nonce, now + 2 * BUNDLE_CLOCK_SKEW_MS);
      if (inst.app !== appName) {
        o.log.warn({ instance: instanceId, app: inst.app, asked: appName, remote: req.ip }, 'an agent asked for the bundle of another app');
        if ((told.get(instanceId) ?? 0) < now - 60_000) {
          if (told.size > 10_000) told.clear();
          told.set(instanceId, now);
          await o.record({
            app: inst.app, role: inst.role, instance: instanceId, kind: 'security.agent',
            message: `${instanceId} (app ${inst.app}) asked for a bundle of app ${appName} from ${req.ip}: refused`,
            data: { asked: appName, sha256 },
          }).catch(() => undefined);
        }
        throw new ApiError('forbidden', `instance ${instanceId} is not an instance of app ${appName}`);
      }
      const f = o.bundles.file(appName, sha256);
      if (!f) throw new ApiError('not_found', `app ${appName} has no bundle ${sha256}`);
      o.bundles.noteDownload(appName, sha256);
      return reply
        .header('content-type', 'application/gzip')
        .header('content-length', f.size)
        .header('cache-control', 'no-store')
        .send(createReadStream(f.path));
    },
  );

  app.get<{ Params: { name: string } }>(
    '/v1/apps/:name/bundle',
    {
      schema: {
        tags: ['apps'],
        summary: "The app's current bundle: its sha256, sizes, files and how often agents fetched it",
        params: { type: 'object', properties: { name: { type: 'string', pattern: APP_NAME.source } }, required: ['name'] },
        response: { 200: { type: 'object', additionalProperties: true }, ...o.errors(401, 404) },
      },
    },
    async (req) => {
      const b = o.bundles.current(req.params.name);
      if (!b) throw new ApiError('not_found', `app ${req.params.name} has no bundle yet (one is packed when an instance on a joined host needs it, or at apply when its pool has hosts)`);
      return { bundle: { ...b, packedAt: new Date(b.packedAt).toISOString() } };
    },
  );
}
