// Builds the dashboard (web/) into dist/ui: one ES module and one stylesheet, no CDN, served by
// the controller at /ui (src/controller/ui.ts). Run by `npm run build` (and so by `npm ci`).
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const out = `${root}dist/ui`;
rmSync(out, { recursive: true, force: true });
mkdirSync(`${out}/assets`, { recursive: true });

await build({
  entryPoints: { app: `${root}web/src/main.js`, },
  outdir: `${out}/assets`,
  bundle: true,
  format: 'esm',
  minify: true,
  sourcemap: true,
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  legalComments: 'linked',
  logLevel: 'warning',
});
await build({
  entryPoints: { app: `${root}web/src/app.css` },
  outdir: `${out}/assets`,
  bundle: true,
  minify: true,
  logLevel: 'warning',
});
copyFileSync(`${root}web/index.html`, `${out}/index.html`);
console.log('dashboard built into dist/ui');
