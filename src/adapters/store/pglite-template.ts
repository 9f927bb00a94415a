/**
 * A fresh embedded store from a template: `npm run build` makes an empty, migrated PGlite data
 * folder once (scripts/build-store-template.mjs → dist/store-template/), and the first start on
 * a new data folder copies it instead of running initdb, which takes seconds. Without a
 * template (a build that did not make one), PGlite creates the folder as before.
 */
import { cpSync, existsSync, readdirSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The template's folder: `dist/store-template/` at the package root (this file is three levels below it, in src/ or dist/). */
export const STORE_TEMPLATE_DIR = fileURLToPath(new URL('../../../dist/store-template/', import.meta.url));

/**
 * Copies the template into `dir` when `dir` holds no store yet; true when it did.
 * `DROVER_STORE_TEMPLATE=off` turns it off (initdb runs, as without a build's template).
 */
export function seedFromTemplate(dir: string, template = STORE_TEMPLATE_DIR, env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.DROVER_STORE_TEMPLATE === 'off') return false;
  if (existsSync(dir) && readdirSync(dir).length > 0) return false;
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
}
