/** A worker thread of runComparisonParallel: simulates the runs it is sent, one at a time. */
import { parentPort } from 'node:worker_threads';
import { runComparisonRun, type ComparisonOptions } from './compare.js';

export interface RunJob {
  readonly id: number;
  readonly options: ComparisonOptions;
  readonly name: string;
}

parentPort?.on('message', (job: RunJob) => {
  try {
    parentPort?.postMessage({ id: job.id, report: runComparisonRun(job.options, job.name) });
  } catch (e) {
    parentPort?.postMessage({ id: job.id, error: e instanceof Error ? (e.stack ?? e.message) : String(e) });
  }
});
