#!/usr/bin/env node
// Thin launcher: the CLI is compiled to dist/ by `npm ci` (prepare) or `npm run build`, and
// bundled into dist/cli/drover.cjs (scripts/build-cli.mjs), loaded with its V8 code cache
// (bundle.js), so a command loads only what it needs, compiled once at build time.
// `--version` is answered from package.json without loading anything else.
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) {
  process.stdout.write(`${JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version}\n`);
} else {
  const bundle = fileURLToPath(new URL('../dist/cli/drover.cjs', import.meta.url));
  const { main } = existsSync(bundle) ? (await import('./bundle.js')).loadBundle(bundle) : await import('../dist/cli/main.js');
  main(process.argv).then((code) => { process.exitCode = code; }, (err) => { console.error(err); process.exitCode = 1; });
}
