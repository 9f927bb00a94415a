/**
 * Copies the embedded store's template (scripts/build-store-template.mjs) into a new store
 * folder: private as it is made (folders 0700, files 0600), and sparse where the template is
 * zeros to its end. Most of a write-ahead log segment is zeros (16 MB, of which a few pages are
 * used); those pages are not written but left as a hole that reads as the same zeros, so a new
 * store costs the disk a few megabytes, not the template's whole size. The copy is then synced
 * to the disk (`syncCopy`) on libuv's threads while PGlite loads and PostgreSQL starts on it.
 */
import { close, closeSync, fsync, ftruncateSync, mkdirSync, openSync, readdirSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

/** PostgreSQL's page: the unit of what is left out. */
const PAGE = 8192;
const ZERO = Buffer.alloc(PAGE);

/**
 * A copy just made: its files still open (their descriptors, for {@link syncCopy} or
 * {@link closeCopy}) and its folders, relative to the copy's root (`''` is the root).
 */
export interface CopiedTree {
  readonly files: number[];
  readonly folders: string[];
}

/**
 * Copies the folder `from` into `to`, which must not exist; only folders and regular files (a
 * template has nothing else). The caller owns the open files it returns; on an error they are
 * closed here.
 */
export function copyStoreTree(from: string, to: string): CopiedTree {
  const copied: CopiedTree = { files: [], folders: [] };
  try {
    copyFolder(from, to, '', copied);
  } catch (err) {
    closeCopy(copied);
    throw err;
  }
  return copied;
}

function copyFolder(from: string, to: string, rel: string, copied: CopiedTree): void {
  mkdirSync(to, { mode: 0o700 });
  copied.folders.push(rel);
  for (const e of readdirSync(from, { withFileTypes: true })) {
    const src = join(from, e.name);
    const dst = join(to, e.name);
    if (e.isDirectory()) copyFolder(src, dst, rel ? `${rel}/${e.name}` : e.name, copied);
    else if (e.isFile()) copied.files.push(copySparse(src, dst));
    else throw new Error(`${src} is neither a file nor a folder`);
  }
}

/** Closes a copy's files without syncing them (a copy given up). */
export function closeCopy(copied: CopiedTree): void {
  for (const fd of copied.files.splice(0)) {
    try {
      closeSync(fd);
    } catch {
      // closed already
    }
  }
}

/**
 * Syncs a copy now at `root` to the disk: each file (then closes it), each folder, and the
 * folders `also` (the one the copy was renamed into). Every sync is asked at once, on libuv's
 * threads, which carry on while this thread is busy (PostgreSQL's start holds the store's
 * thread for a quarter of a second): by the time it is free, they are done. Rejects with the
 * first failure (PostgreSQL must not start on a copy that may not be on the disk); every file is
 * closed either way.
 */
export function syncCopy(copied: CopiedTree, root: string, also: readonly string[] = []): Promise<void> {
  const files = copied.files.splice(0);
  const syncs = files.map((fd) => syncFd(fd));
  for (const path of [...copied.folders.map((rel) => (rel ? join(root, rel) : root)), ...also]) {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (err) {
      syncs.push(Promise.reject(err instanceof Error ? err : new Error(String(err))));
      continue;
    }
    syncs.push(syncFd(fd));
  }
  return Promise.all(syncs).then(() => undefined);
}

/** fsync(2) on libuv's thread pool, then close, whatever the outcome. */
function syncFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) =>
    fsync(fd, (syncErr) => {
      close(fd, (closeErr) => {
        const err = syncErr ?? closeErr;
        if (err) reject(err);
        else resolve();
      });
    }),
  );
}

/** How many leading bytes of `data` hold anything: its length less the whole zero pages at its end. */
export function usedLength(data: Buffer): number {
  let keep = data.length;
  while (keep > 0) {
    const page = Math.floor((keep - 1) / PAGE) * PAGE;
    if (data.compare(ZERO, 0, keep - page, page, keep) !== 0) break;
    keep = page;
  }
  return keep;
}

/** Copies one file, sparse; returns its descriptor, still open. */
function copySparse(src: string, dst: string): number {
  const data = readFileSync(src);
  const keep = usedLength(data);
  const fd = openSync(dst, 'wx', 0o600);
  try {
    for (let off = 0; off < keep; ) off += writeSync(fd, data, off, keep - off, off);
    if (keep < data.length) ftruncateSync(fd, data.length);
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  return fd;
}
