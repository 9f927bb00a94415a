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
