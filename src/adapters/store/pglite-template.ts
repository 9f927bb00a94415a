/**
 * A fresh embedded store from a template: `npm run build` makes an empty, migrated PGlite data
 * folder once (scripts/build-store-template.mjs → dist/store-template/), and the first start on
 * a new data folder copies it instead of running initdb, which takes seconds. Without a
 * template (a build that did not make one), PGlite creates the folder as before.
 *
 * The copy (39 MB, a few tenths of a second of disk work) can start before the controller's code
 * has even loaded ({@link startStoreSeed}: the CLI does so), into a folder of its own beside the
 * store; the controller, once it holds the data folder's lock, renames it into place.
 */
import { cpSync, existsSync, readdirSync, renameSync, rmSync, rmdirSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The template's folder: `dist/store-template/` at the package root (this file is three levels below it, in src/ or dist/). */
export const STORE_TEMPLATE_DIR = fileURLToPath(new URL('../../../dist/store-template/', import.meta.url));

const hasStore = (dir: string) => existsSync(dir) && readdirSync(dir).length > 0;
const seedPrefix = (dir: string) => `${basename(dir)}.seed-`;

/**
 * Copies the template into `dir` when `dir` holds no store yet; true when it did. `seeded`, a
 * whole copy made by {@link startStoreSeed}, is renamed into place instead of copying again
 * (and removed if not needed). `DROVER_STORE_TEMPLATE=off` turns it off (initdb runs, as
 * without a build's template).
 */
export function seedFromTemplate(dir: string, template = STORE_TEMPLATE_DIR, env: NodeJS.ProcessEnv = process.env, seeded?: string): boolean {
  try {
    if (env.DROVER_STORE_TEMPLATE === 'off' || hasStore(dir)) return false;
    if (seeded && existsSync(join(seeded, 'PG_VERSION'))) {
      try {
        if (existsSync(dir)) rmdirSync(dir); // empty: hasStore said so
        renameSync(seeded, dir);
        return true;
      } catch {
        // not renamed: copied below, as without a seed
      }
    }
    if (!existsSync(`${template}/PG_VERSION`)) return false;
    try {
      // mode 0700/0600 follows in openPgliteStore (makePrivate).
      cpSync(template, dir, { recursive: true, errorOnExist: true, force: false });
      return true;
    } catch {
      // An unreadable template (installed by another user), a full disk: PGlite makes the store
      // itself, as without a template, from an empty folder.
      try {
        rmSync(dir, { recursive: true, force: true });
      } catch {
        // nothing was made there (its parent is not a folder)
      }
      return false;
    }
  } finally {
    if (seeded) remove(seeded);
  }
}

/**
 * Starts copying the template beside the store folder `dir` (into `<dir>.seed-<pid>-<random>`,
 * in the data folder, which must already be private) when `dir` holds no store: the copy runs
 * in a thread of its own while this process loads the controller. Resolves to the copy's folder,
 * whole, or undefined (no store to make, no template, or the copy failed: nothing is left).
 * Copies left by a process that died meanwhile are removed first.
 */
export function startStoreSeed(dir: string, template = STORE_TEMPLATE_DIR, env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> {
  removeDeadSeeds(dir);
  if (env.DROVER_STORE_TEMPLATE === 'off' || hasStore(dir) || !existsSync(`${template}/PG_VERSION`)) return Promise.resolve(undefined);
  const seed = join(dirname(dir), `${seedPrefix(dir)}${process.pid}-${randomBytes(4).toString('hex')}`);
  // In a thread of its own: fs.promises.cp would wait for this thread between files, and this
  // thread is about to be busy loading the controller.
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      if (ok) return resolve(seed);
      remove(seed);
      resolve(undefined);
    };
    let worker: Worker;
    try {
      worker = new Worker(COPY, { eval: true, workerData: { from: template, to: seed }, execArgv: [] });
    } catch {
      return done(false);
    }
    worker.once('error', () => undefined);
    worker.once('exit', (code) => done(code === 0));
  });
}

/** The copying thread: exit code 0 once the copy is whole. */
const COPY = `const { cpSync } = require('node:fs'); const { workerData: w } = require('node:worker_threads'); cpSync(w.from, w.to, { recursive: true, errorOnExist: true, force: false });`;

/**
 * Removes this process's copies beside `dir` that were not taken, whole or half-made: for when
 * it leaves without starting a controller (a bad app file, a data folder in use).
 */
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
