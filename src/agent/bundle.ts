/**
 * App bundles, the agent's end (docs/fleet.md, "App bundles"): before `deploy`, the agent of a
 * role whose assignment names a bundle fetches it from the controller (proving its instance key,
 * core/bundle.ts), checks its size while it streams and its sha256 once it is in, keeps it in a
 * cache shared by the instances of this host (`<instances folder>/.bundles`, 0700: an unchanged
 * bundle is not fetched again), and unpacks it into `<instance folder>/app`, which becomes
 * `${appDir}`.
 *
 * Unpacking refuses the whole bundle — nothing is written — if any entry is not a plain file,
 * folder or symlink (hard links, devices, fifos), has an absolute path or a `..` in it, is a
 * symlink whose target is absolute or leads out of the folder, or if the files add up to more
 * than the assignment said. The `tar` package then extracts with `strict` (a warning is an
 * error), the same checks as a filter, and fixed modes (0644/0755).
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat, utimes } from 'node:fs/promises';
import { dirname, join, posix } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import { extract, list, type ReadEntry } from 'tar';
import { bundleRequestHeaders, SHA256_HEX, type BundleRef } from '../core/index.js';

/** Bundles kept in a host's cache (the newest used). */
const CACHE_KEPT = 5;
/** Entries of one bundle; the controller packs no more. */
const MAX_ENTRIES = 100_000;
/** @default 5 minutes for a download. */
const DEFAULT_TIMEOUT_MS = 5 * 60_000;

/** The bundle could not be fetched or is not safe to unpack; the message says which and why. */
export class BundleFetchError extends Error {
  override readonly name = 'BundleFetchError';
}

export interface BundleFetcherOptions {
  /** The controller (http(s):// or ws(s)://, as the agent was given it). */
  readonly controllerUrl: string;
  readonly instanceId: string;
  /** The instance key: the request's proof is keyed by it. */
  readonly key: string;
  /** Where fetched bundles are kept, shared by the agents of this host. */
  readonly cacheDir: string;
  readonly log?: Logger;
  /** @default 300000 */
  readonly timeoutMs?: number;
}

export interface PreparedBundle {
  /** The unpacked folder: `${appDir}`. */
  readonly dir: string;
  /** Taken from the host's cache (no download). */
  readonly cached: boolean;
}

/** Why an entry may not be unpacked, or undefined if it may. */
export function entryProblem(e: { type: string; path: string; linkpath?: string | undefined }): string | undefined {
  const path = e.path;
  if (path.includes('\0')) return `${JSON.stringify(path)}: a NUL in the path`;
  if (path.startsWith('/') || /^[A-Za-z]:/.test(path)) return `${path}: an absolute path`;
  const parts = path.split('/');
  if (parts.includes('..')) return `${path}: a path with ".." in it`;
  switch (e.type) {
    case 'File':
    case 'OldFile':
    case 'ContiguousFile':
    case 'Directory':
      return undefined;
    case 'SymbolicLink': {
      const target = e.linkpath ?? '';
      if (target === '' || target.startsWith('/')) return `${path}: a symlink to an absolute path (${target})`;
      const resolved = posix.normalize(posix.join(posix.dirname(path.replace(/\/+$/, '')), target));
      if (resolved === '..' || resolved.startsWith('../')) return `${path}: a symlink pointing out of the bundle (${target})`;
      return undefined;
    }
    default:
      return `${path}: a ${e.type} entry (only files, folders and symlinks are unpacked)`;
  }
}

/** http(s) base of the controller from the URL the agent was given. */
function httpBase(controllerUrl: string): URL {
  const u = new URL(controllerUrl);
  if (u.protocol === 'ws:') u.protocol = 'http:';
  else if (u.protocol === 'wss:') u.protocol = 'https:';
  return u;
}

async function sha256Of(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

export class BundleFetcher {
  /** Downloads made and cache hits, for logs and tests. */
  readonly counts = { downloads: 0, cacheHits: 0 };

  constructor(private readonly o: BundleFetcherOptions) {}

  /**
   * Makes `target` hold exactly the bundle's files: from the host's cache if it has the bundle
   * (checked again against its sha256), else downloaded. Throws {@link BundleFetchError}.
   */
  async prepare(app: string, ref: BundleRef, target: string, signal?: AbortSignal): Promise<PreparedBundle> {
    if (!SHA256_HEX.test(ref.sha256)) throw new BundleFetchError(`bundle name ${JSON.stringify(ref.sha256)} is not a sha256`);
    await mkdir(this.o.cacheDir, { recursive: true, mode: 0o700 });
    const file = join(this.o.cacheDir, `${ref.sha256}.tgz`);
    let cached = false;
    try {
      const st = await stat(file);
      cached = st.size === ref.size && (await sha256Of(file)) === ref.sha256;
      if (!cached) await rm(file, { force: true });
    } catch {
      cached = false;
    }
    if (cached) {
      this.counts.cacheHits++;
      const now = new Date();
      await utimes(file, now, now).catch(() => undefined);
      this.o.log?.info({ bundle: ref.sha256 }, 'app bundle taken from this host\'s cache');
    } else {
      await this.#download(app, ref, file, signal);
      this.counts.downloads++;
      this.o.log?.info({ bundle: ref.sha256, bytes: ref.size }, 'app bundle downloaded');
      await this.#pruneCache(file);
    }
    await unpackBundle(file, target, ref.unpackedBytes);
    return { dir: target, cached };
  }

  async #download(app: string, ref: BundleRef, file: string, signal?: AbortSignal): Promise<void> {
    const url = new URL(`/v1/bundles/${encodeURIComponent(app)}/${ref.sha256}`, httpBase(this.o.controllerUrl));
    const headers = bundleRequestHeaders({ key: this.o.key, instanceId: this.o.instanceId, app, sha256: ref.sha256, at: Date.now(), nonce: randomBytes(24).toString('base64url') });
    const timeout = AbortSignal.timeout(this.o.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    let res: Response;
    try {
      res = await fetch(url, { headers, signal: signal ? AbortSignal.any([signal, timeout]) : timeout, redirect: 'error' });
    } catch (err) {
      throw new BundleFetchError(`fetching app bundle ${ref.sha256.slice(0, 12)} from ${url.origin}: ${(err as Error).message}`);
    }
    if (res.status !== 200 || !res.body) {
      const text = (await res.text().catch(() => '')).slice(0, 300);
      let why = text;
      try {
        why = (JSON.parse(text) as { error?: { message?: string } }).error?.message ?? text;
      } catch {
        // not JSON
      }
      throw new BundleFetchError(`the controller answered ${res.status} to the request for app bundle ${ref.sha256.slice(0, 12)}: ${why}`);
    }
    const declared = Number(res.headers.get('content-length'));
    if (Number.isFinite(declared) && declared > ref.size) throw new BundleFetchError(`app bundle ${ref.sha256.slice(0, 12)} is ${declared} bytes; the assignment said ${ref.size}`);
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    const hash = createHash('sha256');
    let got = 0;
    try {
      await pipeline(
        res.body,
        async function* (source: AsyncIterable<Uint8Array>) {
          for await (const chunk of source) {
            got += chunk.length;
            if (got > ref.size) throw new BundleFetchError(`app bundle ${ref.sha256.slice(0, 12)} is longer than the ${ref.size} bytes the assignment said`);
            hash.update(chunk);
            yield chunk;
          }
        },
        createWriteStream(tmp, { mode: 0o600 }),
      );
      const sum = hash.digest('hex');
      if (got !== ref.size || sum !== ref.sha256) throw new BundleFetchError(`app bundle ${ref.sha256.slice(0, 12)} arrived with sha256 ${sum.slice(0, 12)} and ${got} bytes: not the bundle asked for`);
      await rename(tmp, file);
    } catch (err) {
      await rm(tmp, { force: true });
      if (err instanceof BundleFetchError) throw err;
      throw new BundleFetchError(`downloading app bundle ${ref.sha256.slice(0, 12)}: ${(err as Error).message}`);
    }
  }

  /** Keeps the {@link CACHE_KEPT} newest bundles of the host's cache. */
  async #pruneCache(keep: string): Promise<void> {
    const dir = dirname(keep);
    const files = (await readdir(dir)).filter((f) => /^[0-9a-f]{64}\.tgz$/.test(f));
    if (files.length <= CACHE_KEPT) return;
    const dated = await Promise.all(files.map(async (f) => ({ f, at: (await stat(join(dir, f)).catch(() => ({ mtimeMs: 0 }))).mtimeMs })));
    dated.sort((a, b) => b.at - a.at);
    for (const { f } of dated.slice(CACHE_KEPT)) if (join(dir, f) !== keep) await rm(join(dir, f), { force: true });
  }
}

/**
 * Unpacks a bundle into `target` (emptied first), after checking every entry: refused whole,
 * nothing written, if one is unsafe ({@link entryProblem}) or the files add up to more than
 * `maxBytes`.
 */
export async function unpackBundle(file: string, target: string, maxBytes: number): Promise<void> {
  const problems: string[] = [];
  let entries = 0;
  let bytes = 0;
  try {
    await list({
      file,
      strict: true,
      onReadEntry: (e: ReadEntry) => {
        entries++;
        bytes += e.size;
        const p = entryProblem(e);
        if (p && problems.length < 5) problems.push(p);
      },
    });
  } catch (err) {
    throw new BundleFetchError(`the app bundle is not a readable tar.gz: ${(err as Error).message}`);
  }
  if (entries > MAX_ENTRIES) problems.push(`${entries} entries, more than ${MAX_ENTRIES}`);
  if (bytes > maxBytes) problems.push(`its files hold ${bytes} bytes, more than the ${maxBytes} the assignment said`);
  if (problems.length) throw new BundleFetchError(`the app bundle is refused, nothing was unpacked: ${problems.join('; ')}`);
  await rm(target, { recursive: true, force: true });
  await mkdir(target, { recursive: true, mode: 0o755 });
  try {
    await extract({
      file,
      cwd: target,
      strict: true,
      preservePaths: false,
      preserveOwner: false,
      noMtime: true,
      chmod: true,
      processUmask: 0o022,
      filter: (_path, e) => 'type' in e && entryProblem(e) === undefined,
    });
  } catch (err) {
    await rm(target, { recursive: true, force: true });
    throw new BundleFetchError(`unpacking the app bundle: ${(err as Error).message}`);
  }
}
