/**
 * The worker thread that parses and compiles app files for {@link AppFileParser}
 * (app-file-parser.ts). It holds no state between jobs: one message in, one answer out.
 */
import { parentPort } from 'node:worker_threads';
import { compileAppSpec, parseAppFile, SpecError } from '../core/index.js';
import type { ParseAnswer, ParseJob } from './app-file-parser.js';

const port = parentPort;
if (port) {
  port.on('message', (job: ParseJob) => {
    let answer: ParseAnswer;
    try {
      const spec = job.kind === 'yaml' ? parseAppFile(job.text) : compileAppSpec(job.value);
      answer = { id: job.id, ok: true, spec };
    } catch (err) {
      answer =
        err instanceof SpecError
          ? { id: job.id, ok: false, issues: err.issues.map((i) => ({ path: i.path, message: i.message })) }
          : { id: job.id, ok: false, crash: err instanceof Error ? (err.stack ?? err.message) : String(err) };
    }
    port.postMessage(answer);
  });
  port.postMessage({ ready: true });
}
