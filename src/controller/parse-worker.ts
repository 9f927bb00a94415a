/**
 * The worker thread that parses and compiles app files for {@link AppFileParser}
 * (app-file-parser.ts). It holds no state between jobs: one message in, one answer out.
 */
import { parentPort } from 'node:worker_threads';
import { compileAppSpec, parseAppFile, SpecError } from '../core/index.js';
import type { ParseAnswer, ParseJob } from './app-file-parser.js';

/** For the build, which makes the bundle's code cache after parsing it. */
export { WARM_UP_FILE } from './app-file-parser.js';

/** One job's answer: the compiled spec, the issues of an app file that cannot be used, or the crash. */
export function handle(job: ParseJob): ParseAnswer {
  try {
    const spec = job.kind === 'yaml' ? parseAppFile(job.text) : compileAppSpec(job.value);
    return { id: job.id, ok: true, spec };
  } catch (err) {
    return err instanceof SpecError
      ? { id: job.id, ok: false, issues: err.issues.map((i) => ({ path: i.path, message: i.message })) }
      : { id: job.id, ok: false, crash: err instanceof Error ? (err.stack ?? err.message) : String(err) };
  }
}

const port = parentPort;
if (port) {
  port.on('message', (job: ParseJob) => port.postMessage(handle(job)));
  port.postMessage({ ready: true });
}
