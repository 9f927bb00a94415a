/**
 * The embedded store's writes reach the disk before a commit returns.
 *
 * PGlite, as shipped, starts PostgreSQL with `-F` (fsync off), and the Emscripten file system it
 * runs on a folder with (NODEFS) has no fsync at all: `fsync()` returns at once, `fdatasync()`
 * too. A committed change then sits in the operating system's cache for up to half a minute, and
 * a power cut or a kernel crash can lose it or leave the store damaged. Here:
 * - PostgreSQL runs with fsync on and `wal_sync_method=fsync` (its fdatasync would reach nothing);
 * - NODEFS's fsync is the real one (`fsync(2)` on the file's descriptor, or on the folder's);
 * - a store just copied from the template is synced, files and folders, before it is used.
 */
import { closeSync, fsyncSync, openSync } from 'node:fs';
import { open, readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
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

/** PGlite's file system on a folder (NODEFS), with {@link realFsync}. */
export class DurableNodeFS extends NodeFS {
  override async init(pg: PGlite, opts: Parameters<NodeFS['init']>[1]): ReturnType<NodeFS['init']> {
    const { emscriptenOpts } = await super.init(pg, opts);
    const preRun = [...((emscriptenOpts as { preRun?: unknown[] }).preRun ?? []), (mod: EmscriptenNodeFs) => realFsync(mod)];
    return { emscriptenOpts: { ...emscriptenOpts, preRun } as typeof emscriptenOpts };
  }
}

/**
 * Syncs every file and folder under `dir`, then the folder holding it, on libuv's threads (a
 * fresh copy of the template: its files were written without a sync). A file gone meanwhile
 * (PostgreSQL, started beside, removed or renamed it) is skipped: its replacement is PostgreSQL's.
 */
export async function syncTree(dir: string): Promise<void> {
  const files: string[] = [];
  const folders: string[] = [];
  const walk = async (d: string): Promise<void> => {
    folders.push(d);
    for (const e of await readdir(d, { withFileTypes: true }).catch(gone([]))) {
      if (e.isDirectory()) await walk(join(d, e.name));
      else if (e.isFile()) files.push(join(d, e.name));
    }
  };
  await walk(dir);
  // Four at a time: libuv's threads (PGlite itself reads and writes on the store's thread).
  const queue = [...files, ...folders.reverse(), dirname(dir)];
  await Promise.all(Array.from({ length: 4 }, async () => {
    for (let p = queue.shift(); p !== undefined; p = queue.shift()) await syncOne(p);
  }));
}

async function syncOne(path: string): Promise<void> {
  const fh = await open(path, 'r').catch(gone(undefined));
  if (!fh) return;
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** For a `.catch`: the fallback when the path is gone, the error otherwise. */
function gone<T>(fallback: T): (err: unknown) => T {
  return (err) => {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return fallback;
    throw err;
  };
}
