// Makes dist/store-template/: an empty embedded store (PGlite data folder) with drover's
// migrations applied, copied by a controller's first start on a new data folder instead of
// running initdb there (seconds). Run by `npm run build`, after tsc (it opens the store through
// dist/, so the template has exactly the migrations of this build).
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const out = join(root, 'dist/store-template');
// Made from scratch, never seeded from the template of an earlier build.
rmSync(out, { recursive: true, force: true });
const { openPgliteStore } = await import(join(root, 'dist/adapters/store/index.js'));
const work = mkdtempSync(join(tmpdir(), 'drover-store-template-'));
try {
  const dir = join(work, 'db');
  const store = await openPgliteStore(dir);
  await store.close();
  cpSync(dir, `${out}.tmp`, { recursive: true });
  // Whole or not at all: a build stopped halfway leaves no half template behind.
  const { renameSync } = await import('node:fs');
  renameSync(`${out}.tmp`, out);
} finally {
  rmSync(work, { recursive: true, force: true });
  rmSync(`${out}.tmp`, { recursive: true, force: true });
}
