/**
 * Worker threads started with the process's own Node options, as far as a thread may have them.
 *
 * A worker given `execArgv` refuses options that belong to the whole process (V8's flags such as
 * `--max-semi-space-size` or `--trace-gc`), and Node's default (the parent's options) passes
 * `--input-type` (of `node -e`), which a module's worker refuses. Run as
 * `node --trace-gc bin/drover.js up`, the controller could not start its store or its app-file
 * parser. Those options are left out here: they already apply to every thread of the process.
 * So is the script of `node -e`.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker, type WorkerOptions } from 'node:worker_threads';

/** Options no worker accepts whatever the version: known without asking Node. */
const PROCESS_ONLY = /^--input-type(=|$)/;
/** The process's own script (`node -e CODE`), which is not an option for a thread. */
const SCRIPT = /^(-e|--eval|-p|--print)$/;

/** `argv` without the options of {@link PROCESS_ONLY} and the script of {@link SCRIPT} (the flag and its value). */
function threadOptions(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (SCRIPT.test(a)) i++;
    else if (!PROCESS_ONLY.test(a) && !/^--(eval|print)=/.test(a)) out.push(a);
  }
  return out;
}

/** A worker on `entry` with the process's options that a worker may have. */
export function startWorker(entry: string | URL, options: WorkerOptions = {}): Worker {
  let execArgv = threadOptions(process.execArgv);
  for (let attempt = 0; ; attempt++) {
    try {
      return new Worker(entry, { ...options, execArgv });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ERR_WORKER_INVALID_EXEC_ARGV' || execArgv.length === 0) throw err;
      // Node names the options it refused ("…invalid execArgv flags: --a, --b"): without them, then without any.
      const refused = new Set(/flags: (.*)$/.exec((err as Error).message)?.[1]?.split(', ') ?? []);
      const kept = execArgv.filter((a) => !refused.has(a) && !refused.has(a.split('=')[0] ?? a));
      execArgv = attempt === 0 && kept.length < execArgv.length ? kept : [];
    }
  }
}

/**
 * A worker on the module `entry`. A `.ts` module (this code run from source, through tsx) is
 * loaded through tsx's API: a worker on Node 20 does not inherit the loader of the thread that
 * starts it.
 */
export function startModuleWorker(entry: URL, options: WorkerOptions = {}): Worker {
  if (!entry.pathname.endsWith('.ts')) return startWorker(entry, options);
  const boot = `import('tsx/esm/api').then((api) => { api.register(); return import(${JSON.stringify(entry.href)}); })`;
  return startWorker(boot, { ...options, eval: true });
}

/** The launcher's loader of bundles (bin/bundle.js), from this module's place in src/ or dist/. */
const LOADER = new URL('../../../bin/bundle.js', import.meta.url);

/**
 * A worker on `bundle`, a file the build made of the module `entry` and what it imports
 * (scripts/build-cli.mjs), loaded with its V8 code cache by the launcher's loader: a fraction of
 * the CPU of loading the modules one by one, at a start where every thread wants a core. On the
 * module itself ({@link startModuleWorker}) when run from source or without a bundle.
 */
export function startBundledWorker(entry: URL, bundle: string, options: WorkerOptions = {}): Worker {
  if (!entry.pathname.endsWith('.ts') && existsSync(bundle) && existsSync(fileURLToPath(LOADER))) {
    return startWorker(`import(${JSON.stringify(LOADER.href)}).then((b) => b.loadBundle(${JSON.stringify(bundle)}))`, { ...options, eval: true });
  }
  return startModuleWorker(entry, options);
}
