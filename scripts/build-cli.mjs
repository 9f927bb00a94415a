// Bundles the CLI's entry (src/cli/main.ts) into dist/cli/drover.js, the file bin/drover.js
// runs: one file to read instead of a tree of modules, and only what every command needs.
// The heavy parts a command loads when it runs (the controller, the store, the providers,
// the app-file schema: `import()` in main.ts) stay outside, as dist/'s own modules, so the
// bundle and the controller share one copy of them. Of the core, the bundle takes what its
// static imports use (the token proof): the core's modules have no side effects when loaded,
// so the rest of its door is left out.
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';
import { dirname, relative, resolve } from 'node:path';

const root = fileURLToPath(new URL('..', import.meta.url));
const src = resolve(root, 'src');
const cliDir = resolve(src, 'cli');

/** @type {import('esbuild').Plugin} */
const split = {
  name: 'drover-cli-split',
  setup(b) {
    b.onResolve({ filter: /^\.\.?\// }, (args) => {
      if (!args.importer.startsWith(src)) return undefined;
      const target = resolve(dirname(args.importer), args.path);
      // Within src/cli: bundled.
      if (target.startsWith(cliDir + '/')) return undefined;
      // A door loaded on demand: left to dist/, where tsc put it (same path from dist/cli as from src/cli).
      if (args.kind === 'dynamic-import') return { path: `./${relative(cliDir, target)}`.replace(/^\.\/\.\.\//, '../'), external: true };
      // The core's door, imported statically (client.ts: the token proof): bundled, shaken.
      if (target.startsWith(resolve(src, 'core') + '/')) {
        return { path: target.replace(/\.js$/, '.ts'), sideEffects: false };
      }
      return undefined;
    });
  },
};

await build({
  entryPoints: [resolve(src, 'cli/main.ts')],
  outfile: resolve(root, 'dist/cli/drover.js'),
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  plugins: [split],
  logLevel: 'warning',
});
