#!/usr/bin/env node
// Thin launcher: the CLI is compiled to dist/ by `npm ci` (prepare) or `npm run build`, and
// bundled into dist/cli/drover.js (scripts/build-cli.mjs) so a command loads only what it needs.
// `--version` is answered from package.json without loading anything else.
import { existsSync, readFileSync } from 'node:fs';

const args = process.argv.slice(2);
if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) {
  process.stdout.write(`${JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version}\n`);
} else {
  const bundle = new URL('../dist/cli/drover.js', import.meta.url);
  const { main } = await import(existsSync(bundle) ? bundle.href : '../dist/cli/main.js');
  main(process.argv).then((code) => { process.exitCode = code; }, (err) => { console.error(err); process.exitCode = 1; });
}
