/**
 * `npm run bench:startup`: time from `drover up --detach` to every role serving, for the
 * three-tier example (4 instances) and the fifty variant (50 instances, created in parallel).
 * The reference in the same run is what sequential creation would take: the 4-instance time per
 * dependency wave, times the number of instances.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { drover, killAll, processesWithEnv, ROOT } from '../test/helpers.js';

interface Row {
  scenario: string;
  instances: number;
  /** `drover up --detach` until it returned: controller start (store creation included) + app. */
  seconds: number;
  /** From the apply event to the last instance serving. */
  appSeconds: number;
}

async function measure(file: string): Promise<{ seconds: number; appSeconds: number; instances: number }> {
  const cwd = mkdtempSync(join(tmpdir(), 'drover-bench-'));
  try {
    const t0 = performance.now();
    const up = await drover(['up', join(ROOT, file), '--detach', '--port', '0', '--timeout', '300'], { cwd, timeoutMs: 320_000 });
    const seconds = (performance.now() - t0) / 1000;
    if (up.code !== 0) throw new Error(`up failed: ${up.stderr}`);
    const st = await drover(['status', '--json'], { cwd });
    const status = JSON.parse(st.stdout) as { apps: { roles: { instances: { state: string }[] }[] }[] };
    const instances = status.apps[0]!.roles.reduce((n, r) => n + r.instances.filter((i) => i.state === 'serving').length, 0);
    const ev = await drover(['events', '--json', '--limit', '1000'], { cwd });
    const events = ev.stdout.trim().split('\n').map((l) => JSON.parse(l) as { at: string; kind: string; message: string });
    const applied = Date.parse(events.find((e) => e.kind === 'app.apply')!.at);
    const lastServing = Math.max(...events.filter((e) => e.kind === 'instance.state' && e.message.includes('→ serving')).map((e) => Date.parse(e.at)));
    const down = await drover(['down'], { cwd, timeoutMs: 180_000 });
    if (down.code !== 0) throw new Error(`down failed: ${down.stderr}`);
    return { seconds, appSeconds: (lastServing - applied) / 1000, instances };
  } finally {
    killAll(processesWithEnv(cwd));
    rmSync(cwd, { recursive: true, force: true });
  }
}

const runs = Number(process.env.BENCH_RUNS ?? 3);
const rows: Row[] = [];
for (const [scenario, file] of [
  ['three-tier', 'examples/three-tier/drover.yaml'],
  ['fifty', 'examples/fifty/drover.yaml'],
] as const) {
  const ms: Awaited<ReturnType<typeof measure>>[] = [];
  for (let k = 0; k < runs; k++) ms.push(await measure(file));
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  rows.push({ scenario, instances: ms[0]!.instances, seconds: median(ms.map((m) => m.seconds)), appSeconds: median(ms.map((m) => m.appSeconds)) });
}

const small = rows[0]!;
const big = rows[1]!;
// Three dependency waves (db → api → front) in both apps: per instance, sequential creation
// would pay roughly one wave's worth of the small app's startup.
const perInstance = small.appSeconds / 3;
const sequential = perInstance * big.instances;
const fmt = (n: number) => n.toFixed(2);
const lines = [
  '| scenario | instances serving | `drover up --detach` until converged (s) | apply → all serving (s) | reference: one at a time (s) |',
  '| --- | ---: | ---: | ---: | ---: |',
  `| three-tier | ${small.instances} | ${fmt(small.seconds)} | ${fmt(small.appSeconds)} | - |`,
  `| fifty (parallel creation) | ${big.instances} | ${fmt(big.seconds)} | ${fmt(big.appSeconds)} | ${fmt(sequential)} (${fmt(perInstance)} s per wave-instance × ${big.instances}) |`,
];
console.log(`drover startup benchmark — ${runs} run(s) each, median; ${new Date().toISOString()}`);
console.log(lines.join('\n'));
