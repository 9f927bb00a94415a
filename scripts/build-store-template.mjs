// Makes dist/store-template/: an empty embedded store (PGlite data folder) with drover's
// migrations applied, copied by a controller's first start on a new data folder instead of
// running initdb there (seconds). Run by `npm run build`, after tsc (it opens the store through
// dist/, so the template has exactly the migrations of this build).
import { chmodSync, cpSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
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
  // An empty database, nothing secret: readable by whoever runs drover (a copy is made private).
  readable(`${out}.tmp`);
  // Whole or not at all: a build stopped halfway leaves no half template behind.
  const { renameSync } = await import('node:fs');
  // Another build may have made one meanwhile (the same content): this one replaces it.
  rmSync(out, { recursive: true, force: true });
  renameSync(`${out}.tmp`, out);
} finally {
  rmSync(work, { recursive: true, force: true });
  rmSync(`${out}.tmp`, { recursive: true, force: true });
}

function readable(path) {
  const dir = statSync(path).isDirectory();
  chmodSync(path, dir ? 0o755 : 0o644);
  if (dir) for (const e of readdirSync(path)) readable(join(path, e));
}
