/**
 * A fresh embedded store from a template: `npm run build` makes an empty, migrated PGlite data
 * folder once (scripts/build-store-template.mjs → dist/store-template/), and the first start on
 * a new data folder copies it instead of running initdb, which takes seconds. Without a
 * template (a build that did not make one), PGlite creates the folder as before.
 *
 * The copy (pglite-copy.ts: private, and sparse where the template is zeros; about 9 MB written
 * of 25) is made by the store's thread itself while PGlite's WebAssembly compiles, so it waits
 * for nothing the controller's thread does, and synced to the disk while PostgreSQL starts.
 */
import { existsSync, readdirSync, renameSync, rmSync, rmdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { closeCopy, copyStoreTree, syncCopy, type CopiedTree } from './pglite-copy.js';

/** The template's folder: `dist/store-template/` at the package root (this file is three levels below it, in src/ or dist/). */
export const STORE_TEMPLATE_DIR = fileURLToPath(new URL('../../../dist/store-template/', import.meta.url));

const hasStore = (dir: string) => existsSync(dir) && readdirSync(dir).length > 0;
const seedPrefix = (dir: string) => `${basename(dir)}.seed-`;

/** The template a new store in this process is seeded from: none when `DROVER_STORE_TEMPLATE=off` (initdb runs, as without a build's template). */
export function storeTemplate(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return env.DROVER_STORE_TEMPLATE === 'off' ? undefined : STORE_TEMPLATE_DIR;
}

/**
 * Copies the template into `dir` when `dir` holds no store yet; then the copy's sync to the disk,
 * already under way on libuv's threads (`syncCopy`, pglite-copy.ts), which PostgreSQL may start
 * beside but nothing may be committed before. The copy is made beside it
 * (`<dir>.seed-<pid>-<random>`, in the data folder, which must be private and locked by the
 * caller) and renamed into place once whole, so a process killed halfway leaves no half store
 * (its copy is removed at the next start). Runs in the store's own thread (pglite-worker.ts),
 * before PGlite opens the folder, so nothing else has to wait for it. Undefined, with nothing
 * left behind, when there is a store already, no template, or the copy fails (an unreadable
 * template, a full disk): PGlite then makes the store itself.
 */
export function seedStore(dir: string, template: string | undefined): Promise<void> | undefined {
  removeDeadSeeds(dir);
  if (template === undefined || hasStore(dir) || !existsSync(join(template, 'PG_VERSION'))) return undefined;
  const seed = join(dirname(dir), `${seedPrefix(dir)}${process.pid}-${randomBytes(4).toString('hex')}`);
  let copied: CopiedTree | undefined;
  try {
    copied = copyStoreTree(template, seed);
    if (existsSync(dir)) rmdirSync(dir); // empty: hasStore said so
    renameSync(seed, dir);
  } catch {
    if (copied) closeCopy(copied);
    remove(seed);
    return undefined;
  }
  return syncCopy(copied, dir, [dirname(dir)]);
}

/** Removes this process's copies beside `dir` that were not taken: for when it exits while its store's thread is still copying. */
export function dropStoreSeeds(dir: string): void {
  removeDeadSeeds(dir, true);
}

/** Removes `<dir>.seed-<pid>-*` folders whose process is gone (killed while copying), and with `own`, this process's. */
function removeDeadSeeds(dir: string, own = false): void {
  let names: string[];
  try {
    names = readdirSync(dirname(dir));
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(seedPrefix(dir))) continue;
    const pid = Number(/^(\d+)-/.exec(name.slice(seedPrefix(dir).length))?.[1]);
    if (!Number.isSafeInteger(pid) || (pid === process.pid ? !own : alive(pid))) continue;
    remove(join(dirname(dir), name));
  }
}

function remove(path: string): void {
  try {
    rmSync(path, { recursive: true, force: true });
  } catch {
    // nothing there to remove (its parent is not a folder), or not ours to remove
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
