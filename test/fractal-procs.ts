/** The fractals programs as plain child processes, for the suites that test them without drover. */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../src/adapters/providers/index.js';
import { until } from './helpers.js';

export { freePort };

export const FRACTALS_DIR = fileURLToPath(new URL('../examples/fractals/', import.meta.url));

export interface Proc {
  readonly name: string;
  readonly child: ChildProcess;
  readonly url: string;
  output: string;
}

/** Processes of the running test, all stopped by its t.after. */
export class Procs {
  readonly list: Proc[] = [];

  async start(script: string, name: string, env: Record<string, string>, port?: number): Promise<Proc> {
    const p = port ?? (await freePort());
    const child = spawn(process.execPath, [join(FRACTALS_DIR, script)], {
      env: { ...process.env, ...env, PORT: String(p), DROVER_INSTANCE: name },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const proc: Proc = { name, child, url: `http://127.0.0.1:${p}`, output: '' };
    // Kept so a failure can say what the program printed.
    child.stdout?.on('data', (c: Buffer) => (proc.output += c.toString()));
    child.stderr?.on('data', (c: Buffer) => (proc.output += c.toString()));
    this.list.push(proc);
    await until(
      `${name} to answer /health`,
      async () => {
        if (child.exitCode !== null) throw new Error(`${name} exited ${child.exitCode}:\n${proc.output}`);
        const res = await fetch(`${proc.url}/health`, { signal: AbortSignal.timeout(1000) });
        return res.status === 200 ? true : undefined;
      },
      10_000,
      50,
    );
    return proc;
  }

  /** Output of every process, for a failed assertion's message. */
  dump(): string {
    return this.list.map((p) => `--- ${p.name}\n${p.output}`).join('\n');
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.list.map((p) => stopProc(p)));
  }
}

/** Signals a process (SIGKILL after 5 s) and resolves with its exit code. */
export async function stopProc(p: Proc, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return p.child.exitCode;
  const exited = once(p.child, 'exit');
  p.child.kill(signal);
  const timer = setTimeout(() => p.child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
  return p.child.exitCode;
}
