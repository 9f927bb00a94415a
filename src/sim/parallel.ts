/**
 * Comparisons on worker threads: each run (a policy on a trace) is independent and
 * single-threaded, so N cores make a comparison about N times faster. Reports are the same as
 * on one thread: every run draws from its own seeded streams.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { assembleComparison, comparisonRuns, prepareComparison, type ComparisonOptions, type ComparisonReport } from './compare.js';
import type { Report } from './engine.js';
import type { RunJob } from './worker.js';

type Reply = { id: number; report: Report; error?: undefined } | { id: number; error: string; report?: undefined };

/**
 * The worker: worker.js once compiled; under tsx (tests, benches) worker.ts, loaded through
 * tsx's API since the loader hooks of the main thread do not reach worker threads on Node 20.
 */
function startWorker(): Worker {
  if (!import.meta.url.endsWith('.ts')) return new Worker(new URL('./worker.js', import.meta.url));
  const url = new URL('./worker.ts', import.meta.url).href;
  const boot = `import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(url)}); }).catch((e) => { throw e; });`;
  return new Worker(boot, { eval: true });
}

export function defaultThreads(): number {
  return Math.max(1, Math.min(8, availableParallelism()));
}

/**
 * Runs many (options, run name) jobs on `threads` workers; results in the order of `jobs`.
 * Options are sent to workers as plain data: pass prepared ones (see prepareComparison).
 */
export async function runJobs(jobs: readonly { options: ComparisonOptions; name: string }[], threads = defaultThreads()): Promise<Report[]> {
  const results: Report[] = new Array<Report>(jobs.length);
  let next = 0;
  const count = Math.max(1, Math.min(threads, jobs.length));
  const one = () =>
    new Promise<void>((resolve, reject) => {
      const w = startWorker();
      const send = () => {
        if (next >= jobs.length) {
          void w.terminate().then(() => resolve());
          return;
        }
        const id = next++;
        const job = jobs[id];
        if (job) w.postMessage({ id, options: job.options, name: job.name } satisfies RunJob);
      };
      w.on('message', (m: Reply) => {
        if (m.error !== undefined) {
          void w.terminate();
          reject(new Error(`run ${jobs[m.id]?.name ?? m.id} failed in a worker: ${m.error}`));
          return;
        }
        results[m.id] = m.report;
        send();
      });
      w.once('error', reject);
      send();
    });
  await Promise.all(Array.from({ length: count }, one));
  return results;
}

/** {@link runComparison} with its runs spread over worker threads. */
export async function runComparisonParallel(options: ComparisonOptions, threads = defaultThreads()): Promise<ComparisonReport> {
  const prepared = prepareComparison(options);
  const reports = await runJobs(comparisonRuns(prepared).map((name) => ({ options: prepared, name })), threads);
  return assembleComparison(prepared, reports);
}
