#!/usr/bin/env node
// Thin launcher: the CLI is compiled to dist/ by `npm ci` (prepare) or `npm run build`.
import { main } from '../dist/cli/main.js';
main(process.argv).then((code) => { process.exitCode = code; }, (err) => { console.error(err); process.exitCode = 1; });
