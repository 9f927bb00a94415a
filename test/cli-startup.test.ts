/**
 * The CLI starts fast because a command loads only what it needs: the bundle bin/drover.js runs
 * (dist/cli/drover.js, made by `npm run build`) imports nothing heavy up front — the controller,
 * the store, the app-file schema (zod, yaml) and the logger are loaded by the commands that use
 * them. bench:startup measures the time; this keeps the shape that makes it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { DEFAULT_PORT as CONTROLLER_PORT } from '../src/controller/index.js';
import { DEFAULT_PORT } from '../src/cli/main.js';
import { drover, ROOT } from './helpers.js';

const BUNDLE = `${ROOT}dist/cli/drover.js`;

test('the CLI bundle loads only node built-ins and commander up front; the rest on demand', { skip: !existsSync(BUNDLE) && !process.env.CI && 'no dist/cli/drover.js (run npm run build)' }, () => {
  const code = readFileSync(BUNDLE, 'utf8');
  const staticImports = [...code.matchAll(/^import\s[^;]*?from\s+"([^"]+)";?$/gm)].map((m) => m[1]!);
  assert.deepEqual([...new Set(staticImports.filter((s) => !s.startsWith('node:')))], ['commander']);
  const dynamic = new Set([...code.matchAll(/\bimport\("([^"]+)"\)/g)].map((m) => m[1]!));
  for (const heavy of ['../controller/index.js', '../core/index.js', '../adapters/providers/index.js', 'pino']) assert.ok(dynamic.has(heavy), `${heavy} is loaded on demand`);
  // The core's schema (zod) is not in the bundle: only the token proof is.
  assert.ok(!/from "zod"|from "yaml"/.test(code));
});

test('--version answers without loading the CLI; the default port is the controller\'s', async () => {
  const pkg = JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as { version: string };
  const r = await drover(['--version'], { cwd: ROOT });
  assert.equal(r.code, 0);
  assert.equal(r.stdout, `${pkg.version}\n`);
  assert.equal(DEFAULT_PORT, CONTROLLER_PORT);
  const help = await drover(['up', '--help'], { cwd: ROOT });
  assert.match(help.stdout, /default: 7420/);
});
