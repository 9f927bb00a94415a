/** Keeps bench/README.md current: a benchmark replaces its own `## …` section and leaves the others. */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../src/sim/trace.js';

const README = join(REPO_ROOT, 'bench', 'README.md');

/** `markdown` starts with `heading`; returns the file written. */
export function writeReadmeSection(heading: string, markdown: string): string {
  const before = existsSync(README) ? readFileSync(README, 'utf8') : '# Benchmarks\n\nEach `npm run bench:*` script prints a table; the latest results are kept here.\n';
  const start = before.indexOf(`${heading}\n`);
  let after: string;
  if (start < 0) after = `${before.trimEnd()}\n\n${markdown}`;
  else {
    const next = before.indexOf('\n## ', start + heading.length);
    after = before.slice(0, start) + markdown + (next < 0 ? '' : `\n${before.slice(next + 1)}`);
  }
  writeFileSync(README, after.endsWith('\n') ? after : `${after}\n`);
  return README;
}
