/**
 * The embedded store's writes reach the disk before a commit returns.
 *
 * PGlite, as shipped, starts PostgreSQL with `-F` (fsync off), and the Emscripten file system it
 * runs on a folder with (NODEFS) has no fsync at all: `fsync()` returns at once, `fdatasync()`
 * too. A committed change then sits in the operating system's cache for up to half a minute, and
 * a power cut or a kernel crash can lose it or leave the store damaged. Here:
 * - PostgreSQL runs with fsync on and `wal_sync_method=fsync` (its fdatasync would reach nothing);
 * - NODEFS's fsync is the real one (`fsync(2)` on the file's descriptor, or on the folder's);
 * - a store just copied from the template is synced, files and folders, before it is used
 *   (`syncCopy`, pglite-copy.ts).
 */
import { closeSync, fsyncSync, openSync } from 'node:fs';
import { PGlite } from '@electric-sql/pglite';
import { NodeFS } from '@electric-sql/pglite/nodefs';

/**
 * PGlite's start parameters with fsync on, WAL flushed with fsync, and a 32 MB buffer pool
 * instead of 128 MB: PostgreSQL clears its whole pool at every start (about 70 ms of the store's
 * thread for 128 MB); the controller's state is a few megabytes, and what does not fit is read
 * from the operating system's cache.
 */
export const DURABLE_START_PARAMS: readonly string[] = [
  ...PGlite.defaultStartParams.filter((p) => p !== '-F'),
  '-c', 'fsync=on',
  '-c', 'wal_sync_method=fsync',
  '-c', 'shared_buffers=32MB',
];

/** What of the Emscripten module this file touches. */
interface EmscriptenNodeFs {
  /** Called by PGlite's file packager (a later preRun step) for each file of its bundle (pglite.data). */
  FS_createDataFile?: (path: string, name: string | null, data: Uint8Array, ...rest: boolean[]) => unknown;
  readonly NODEFS?: {
    stream_ops: { fsync?: (stream: NodeFsStream) => number };
    realPath(node: unknown): string;
  };
  readonly FS?: { ErrnoError: new (errno: number) => Error };
}
interface NodeFsStream {
  readonly nfd?: number;
  readonly node: unknown;
}

/** Emscripten's errno for an I/O error: what PostgreSQL gets when an fsync fails (and then stops, as it must). */
const EIO = 29;

/** Gives NODEFS a real fsync; runs before PostgreSQL starts (Emscripten's preRun). */
export function realFsync(mod: EmscriptenNodeFs): void {
  const nodefs = mod.NODEFS;
  if (!nodefs?.stream_ops || typeof nodefs.realPath !== 'function' || !mod.FS?.ErrnoError) {
    throw new Error('this PGlite has no NODEFS file system to make durable');
  }
  const ErrnoError = mod.FS.ErrnoError;
  nodefs.stream_ops.fsync = (stream) => {
    try {
      if (typeof stream.nfd === 'number') fsyncSync(stream.nfd);
      else {
        // A folder (PostgreSQL syncs one after creating or renaming a file in it): NODEFS keeps no descriptor for it.
        const fd = openSync(nodefs.realPath(stream.node), 'r');
        try {
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
      }
      return 0;
    } catch {
      throw new ErrnoError(EIO);
    }
  };
}

/** The time zone database's folder in PGlite's bundle, and the zones kept from it: the store's own (UTC, set in its postgresql.conf) and its aliases. */
const ZONES = '/pglite/share/postgresql/timezone/';
const KEPT_ZONES: ReadonlySet<string> = new Set(['UTC', 'GMT', 'Etc/UTC', 'Etc/GMT', 'Etc/UCT', 'UCT', 'Universal', 'Zulu']);

/**
 * Leaves the time zone database (594 of the bundle's 699 files) out of PGlite's in-memory share
 * folder, all but the store's own zone, UTC: unpacking the bundle makes every file in memory
 * through Emscripten's path lookups, and these cost a tenth of PostgreSQL's start (measured
 * about 50 ms of 350 on this project's 2-core machine). Drover's statements keep every time as
 * epoch milliseconds and name no zone; a zone other than UTC named in SQL would be refused
 * ("time zone … not recognized"). Runs before PGlite's file packager, which calls it per file.
 */
export function leaveOutTimeZones(mod: EmscriptenNodeFs): void {
  const create = mod.FS_createDataFile;
  if (typeof create !== 'function') return; // another PGlite build: its files are all unpacked
  mod.FS_createDataFile = (path, name, ...rest) => {
    if (name === null && path.startsWith(ZONES) && !KEPT_ZONES.has(path.slice(ZONES.length))) return undefined;
    return create(path, name, ...rest);
  };
}

/** PGlite's file system on a folder (NODEFS), with {@link realFsync}, and {@link leaveOutTimeZones}. */
export class DurableNodeFS extends NodeFS {
  override async init(pg: PGlite, opts: Parameters<NodeFS['init']>[1]): ReturnType<NodeFS['init']> {
    const { emscriptenOpts } = await super.init(pg, opts);
    const preRun = [...((emscriptenOpts as { preRun?: unknown[] }).preRun ?? []), (mod: EmscriptenNodeFs) => realFsync(mod), (mod: EmscriptenNodeFs) => leaveOutTimeZones(mod)];
    return { emscriptenOpts: { ...emscriptenOpts, preRun } as typeof emscriptenOpts };
  }
}
