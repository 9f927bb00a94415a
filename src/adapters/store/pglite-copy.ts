/**
 * Copies the embedded store's template (scripts/build-store-template.mjs) into a new store
 * folder: private as it is made (folders 0700, files 0600), and sparse where the template is
 * zeros to its end. Most of a write-ahead log segment is zeros (16 MB, of which a few pages are
 * used); those pages are not written but left as a hole that reads as the same zeros, so a new
 * store costs the disk a few megabytes, not the template's whole size. The copy is then synced
 * to the disk (`syncTree`) on libuv's threads while PGlite loads and PostgreSQL starts on it.
 */
import { closeSync, ftruncateSync, mkdirSync, openSync, readdirSync, readFileSync, writeSync } from 'node:fs';
import { open, readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';

/** PostgreSQL's page: the unit of what is left out. */
const PAGE = 8192;
const ZERO = Buffer.alloc(PAGE);

/** Copies the folder `from` into `to`, which must not exist; only folders and regular files (a template has nothing else). */
export function copyStoreTree(from: string, to: string): void {
  mkdirSync(to, { mode: 0o700 });
  for (const e of readdirSync(from, { withFileTypes: true })) {
    const src = join(from, e.name);
    const dst = join(to, e.name);
    if (e.isDirectory()) copyStoreTree(src, dst);
    else if (e.isFile()) copySparse(src, dst);
    else throw new Error(`${src} is neither a file nor a folder`);
  }
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

function copySparse(src: string, dst: string): void {
  const data = readFileSync(src);
  const keep = usedLength(data);
  const fd = openSync(dst, 'wx', 0o600);
  try {
    for (let off = 0; off < keep; ) off += writeSync(fd, data, off, keep - off, off);
    if (keep < data.length) ftruncateSync(fd, data.length);
  } finally {
    closeSync(fd);
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
