/**
 * `npm run bench:startup`:
 *
 * 1. The CLI's own start: wall time of `drover --version` and `drover status` (against a
 *    running controller), as shipped (bin/drover.js: the bundle, each command loading what it
 *    needs) and, in the same run, with every module the CLI used to load up front (the
 *    controller, core, store, transport, providers, logger) loaded eagerly first — the before.
 *    Where NODE_EXTRA_CA_CERTS is set, `status` and `node -e ""` also without it: Node 20 loads
 *    that file's certificates at every start, before any JavaScript.
 * 2. `drover up` on a fresh data folder: time from the command's start to `app … applied`:
 *    as shipped (bin/drover.js), from dist/'s modules without the bundles, and from dist/'s
 *    modules with DROVER_STORE_TEMPLATE=off (initdb, as before the template); in a folder under
 *    the system's temporary folder and, as shipped, in one under the checkout (where a user's
 *    project usually is). The cost of creating a file in each place is printed with them: a new
 *    store is ~350 files, and on some machines the temporary folder's file system is far slower
 *    at making them (0.5 ms a file against 0.02 ms was measured on one).
 * 3. Time from `drover up --detach` to every role serving, for the three-tier example
 *    (4 instances) and the fifty variant (50 instances, created in parallel). The reference in
 *    the same run is what sequential creation would take: the 4-instance time per dependency
 *    wave, times the number of instances.
 *
 * BENCH_RUNS (default 3) runs of the up scenarios, BENCH_CLI_RUNS (default 9) of each command;
 * BENCH_CONVERGE=0 leaves out part 3.
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, drover, killAll, processesWithEnv, ROOT } from '../test/helpers.js';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Wall time of one process, ms. */
function wall(args: string[], env: NodeJS.ProcessEnv, cwd: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const p = spawn(process.execPath, args, { cwd, env, stdio: 'ignore' });
    p.once('error', reject);
    p.once('close', (code) => (code === 0 ? resolve(performance.now() - t0) : reject(new Error(`${args.join(' ')} exited with ${code}`))));
  });
}

/** The CLI as it was: everything it imported at start, loaded before the command runs. */
const EAGER = `
await Promise.all(['controller/index.js', 'core/index.js', 'adapters/store/index.js', 'adapters/transport/index.js', 'adapters/providers/index.js'].map((m) => import(${JSON.stringify(ROOT + 'dist/')} + m)));
await import(${JSON.stringify(ROOT + 'node_modules/pino/pino.js')});
const { main } = await import(${JSON.stringify(ROOT + 'dist/cli/main.js')});
process.exitCode = await main(['node', 'drover', ...process.argv.slice(1).filter((a) => a !== '--')]);`;

/**
 * The CLI from dist/'s own modules (tsc's output, one file per module, no bundle, no code cache),
 * as before the bundles. Without --input-type, which the controller's worker threads would inherit.
 */
const UNBUNDLED = `
import(${JSON.stringify(ROOT + 'dist/cli/main.js')}).then(async ({ main }) => {
  process.exitCode = await main(['node', 'drover', ...process.argv.slice(1).filter((a) => a !== '--')]);
});`;

async function cliTimes(): Promise<{ command: string; before?: number; now: number }[]> {
  const cwd = mkdtempSync(join(tmpdir(), 'drover-bench-cli-'));
  const env: NodeJS.ProcessEnv = { ...process.env, DROVER_LOG_LEVEL: 'warn' };
  try {
    const up = await drover(['up', join(ROOT, 'examples/three-tier/drover.yaml'), '--detach', '--port', '0'], { cwd, timeoutMs: 180_000 });
    if (up.code !== 0) throw new Error(`up failed: ${up.stderr}`);
    const n = Number(process.env.BENCH_CLI_RUNS ?? 9);
    const rows: { command: string; before?: number; now: number }[] = [];
    for (const command of [['--version'], ['status']]) {
      const before: number[] = [];
      const now: number[] = [];
      for (let k = 0; k < n; k++) {
        before.push(await wall(['--input-type=module', '-e', EAGER, '--', ...command], env, cwd));
        now.push(await wall([BIN, ...command], env, cwd));
      }
      rows.push({ command: `drover ${command.join(' ')}`, before: median(before), now: median(now) });
    }
    const bare: number[] = [];
    for (let k = 0; k < n; k++) bare.push(await wall(['-e', ''], env, cwd));
    rows.push({ command: 'reference: `node -e ""`', before: median(bare), now: median(bare) });
    // Node 20 reads NODE_EXTRA_CA_CERTS's file and builds its certificate store at every start,
    // before any JavaScript runs (50-70 ms measured here): where it is set, also without it.
    if (env.NODE_EXTRA_CA_CERTS) {
      const plain = Object.fromEntries(Object.entries(env).filter(([k]) => k !== 'NODE_EXTRA_CA_CERTS'));
      const status: number[] = [];
      const node: number[] = [];
      for (let k = 0; k < n; k++) {
        status.push(await wall([BIN, 'status'], plain, cwd));
        node.push(await wall(['-e', ''], plain, cwd));
      }
      rows.push({ command: 'drover status, NODE_EXTRA_CA_CERTS unset (it is set here)', now: median(status) });
      rows.push({ command: 'reference: `node -e ""`, NODE_EXTRA_CA_CERTS unset', now: median(node) });
    }
    await drover(['down'], { cwd, timeoutMs: 180_000 });
    return rows;
  } finally {
    killAll(processesWithEnv(cwd));
    rmSync(cwd, { recursive: true, force: true });
  }
}

/**
 * `drover up FILE` (foreground) on a fresh data folder: ms until it printed `app … applied`.
 * `initdb`: the store made by PGlite's initdb (DROVER_STORE_TEMPLATE=off) and the CLI from
 * dist/'s modules, as before the template; `files`: the template, the CLI from dist/'s modules;
 * `now`: bin/drover.js (the bundles with their code cache).
 */
type How = 'initdb' | 'files' | 'now' | 'checkout';
/** Where a fresh data folder is made: the system's temporary folder, or (`checkout`) one in the checkout. */
const CHECKOUT_TMP = join(ROOT, '.bench-tmp');
const parentOf = (how: How) => (how === 'checkout' ? CHECKOUT_TMP : tmpdir());

async function upApplied(file: string, how: How): Promise<number> {
  const cwd = mkdtempSync(join(parentOf(how), 'drover-bench-up-'));
  try {
    const env = { ...process.env, DROVER_LOG_LEVEL: 'warn', ...(how === 'initdb' ? { DROVER_STORE_TEMPLATE: 'off' } : {}) };
    const cli = how === 'now' || how === 'checkout' ? [BIN] : ['-e', UNBUNDLED, '--'];
    const t0 = performance.now();
    const p = spawn(process.execPath, [...cli, 'up', join(ROOT, file), '--port', '0'], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const ms = await new Promise<number>((resolve, reject) => {
      p.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (/^app \S+ applied$/m.test(out)) resolve(performance.now() - t0);
      });
      p.once('close', (code) => reject(new Error(`up exited with ${code} before applying: ${out}`)));
    });
    // Ctrl-C: the app is stopped, then the controller.
    const gone = new Promise((r) => p.once('close', r));
    p.kill('SIGINT');
    await gone;
    return ms;
  } finally {
    killAll(processesWithEnv(cwd));
    rmSync(cwd, { recursive: true, force: true });
  }
}

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
console.log(`drover startup benchmark — ${new Date().toISOString()}; node ${process.version}, ${cpus().length} cores, load average ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
const cli = await cliTimes();
console.log('\n| command | before: all modules loaded up front (ms) | now (ms) |');
console.log('| --- | ---: | ---: |');
for (const r of cli) console.log(`| ${r.command} | ${r.before === undefined ? '-' : Math.round(r.before)} | ${Math.round(r.now)} |`);
mkdirSync(CHECKOUT_TMP, { recursive: true });
const applied: Record<How, number[]> = { initdb: [], files: [], now: [], checkout: [] };
for (let k = 0; k < runs; k++) {
  for (const how of ['initdb', 'files', 'now', 'checkout'] as const) applied[how].push(await upApplied('examples/three-tier/drover.yaml', how));
}
const createUs = (parent: string) => {
  const dir = mkdtempSync(join(parent, 'drover-bench-files-'));
  try {
    const t0 = performance.now();
    for (let i = 0; i < 300; i++) closeSync(openSync(join(dir, `f${i}`), 'wx', 0o600));
    return ((performance.now() - t0) / 300) * 1000;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
};
// Measured once per place, after the runs.
const createCost = new Map([tmpdir(), CHECKOUT_TMP].map((p) => [p, Math.round(createUs(p))]));
const where = (how: How) => `${parentOf(how)}/: ${createCost.get(parentOf(how))} µs to create a file`;
console.log(`\n| \`drover up\` on a fresh data folder, until \`app … applied\` (median of ${runs}; ${runs} runs of each, taken in turn) | data folder in | ms |`);
console.log('| --- | --- | ---: |');
console.log(`| before: the store made by initdb (DROVER_STORE_TEMPLATE=off), the CLI and controller from dist/'s modules | ${where('initdb')} | ${Math.round(median(applied.initdb))} |`);
console.log(`| the store from the build's template, the CLI and controller from dist/'s modules (no bundle, no code cache; the store started early, as below) | ${where('files')} | ${Math.round(median(applied.files))} |`);
console.log(`| now: bin/drover.js (bundles with their code cache; the store's thread started before the controller loads) | ${where('now')} | ${Math.round(median(applied.now))} |`);
console.log(`| now, the data folder in the checkout | ${where('checkout')} | ${Math.round(median(applied.checkout))} |\n`);
rmSync(CHECKOUT_TMP, { recursive: true, force: true });
const rows: Row[] = [];
// BENCH_CONVERGE=0 stops here (the CLI and apply figures only).
if (process.env.BENCH_CONVERGE === '0') process.exit(0);
for (const [scenario, file] of [
  ['three-tier', 'examples/three-tier/drover.yaml'],
  ['fifty', 'examples/fifty/drover.yaml'],
] as const) {
  const ms: Awaited<ReturnType<typeof measure>>[] = [];
  for (let k = 0; k < runs; k++) ms.push(await measure(file));
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
console.log(`\`drover up --detach\` until converged — ${runs} run(s) each, median`);
console.log(lines.join('\n'));
