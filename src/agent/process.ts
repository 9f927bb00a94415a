/**
 * The process plug-in: supervises a role's long-running `start` command. The command runs as
 * `bash -c` in its own process group so that stopping it ends everything it started. An exit
 * nobody asked for is restarted with exponential backoff; too many in a row and it gives up.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import type { LastExit } from '../core/index.js';
import { LineTail, type LineSink } from './output.js';
import { killGroup, terminateGroup, waitGroupGone } from './procfs.js';

export interface ProcessOptions {
  readonly command: string;
  readonly env: NodeJS.ProcessEnv;
  readonly cwd: string;
  /** Run as this user and group (the agent must be root); the agent's own by default. */
  readonly runAs?: { readonly uid: number; readonly gid: number };
  /** Output lines go here as well as into the tail (the agent passes the role log). */
  readonly log?: LineSink;
  /** Lines of output kept for {@link LastExit.tail}. @default 40 */
  readonly tailLines?: number;
  /** Delay before the first restart; doubles with every consecutive failure. @default 1000 */
  readonly restartBackoffMs?: number;
  /** @default 30000 */
  readonly restartBackoffMaxMs?: number;
  /** A run that stayed up this long resets the backoff and the failure count. @default 60000 */
  readonly stableAfterMs?: number;
  /**
   * Restarts allowed in a row; the failure after the last one gives up (state `failed`).
   * So at most `maxRestarts + 1` consecutive runs. @default 5
   */
  readonly maxRestarts?: number;
  /** Time between SIGTERM and SIGKILL when stopping. @default 10000 */
  readonly stopTimeoutMs?: number;
  /** Told about every spawn, exit and give-up, synchronously. */
  readonly onEvent?: (event: ProcessEvent) => void;
}

export type ProcessEvent =
  | { readonly type: 'spawned'; readonly pid: number }
  /** An exit nobody asked for; the command runs again after `restartInMs`. */
  | { readonly type: 'exited'; readonly exit: LastExit; readonly restartInMs: number; readonly failures: number }
  /** Too many failures in a row: no more restarts. */
  | { readonly type: 'failed'; readonly exit: LastExit; readonly failures: number }
  /** Exited after {@link ProcessSupervisor.stop}. */
  | { readonly type: 'stopped'; readonly exit?: LastExit };

export const ProcessState = {
  /** Created, not started yet. */
  idle: 'idle',
  running: 'running',
  /** Exited unexpectedly; a restart is scheduled. */
  backoff: 'backoff',
  /** Gave up after too many consecutive failures. */
  failed: 'failed',
  /** stop() was called and has not finished. */
  stopping: 'stopping',
  stopped: 'stopped',
} as const;
export type ProcessState = (typeof ProcessState)[keyof typeof ProcessState];

interface Run {
  readonly child: ChildProcess;
  readonly pgid: number;
  readonly startedAt: number;
  readonly tail: LineTail;
  /** Resolves once the run's exit has been fully handled. */
  readonly done: Promise<void>;
}

export class ProcessSupervisor {
  readonly #o: Required<Omit<ProcessOptions, 'log' | 'onEvent' | 'runAs'>> & Pick<ProcessOptions, 'log' | 'onEvent' | 'runAs'>;
  #command: string;
  #env: NodeJS.ProcessEnv;
  #state: ProcessState = 'idle';
  #run?: Run;
  #timer?: NodeJS.Timeout;
  #failures = 0;
  #restarts = 0;
  #lastExit?: LastExit;
  /** Why the current run is being killed on purpose (liveness), noted in its tail. */
  #killReason?: string;
  #stopping?: Promise<void>;

  constructor(opts: ProcessOptions) {
    this.#o = {
      tailLines: 40,
      restartBackoffMs: 1000,
      restartBackoffMaxMs: 30_000,
      stableAfterMs: 60_000,
      maxRestarts: 5,
      stopTimeoutMs: 10_000,
      ...opts,
    };
    this.#command = opts.command;
    this.#env = opts.env;
  }

  get state(): ProcessState {
    return this.#state;
  }
  /** Pid of the current run's bash, which is also its process group id. */
  get pid(): number | undefined {
    return this.#run?.pgid;
  }
  /** Restarts since start(), whatever the cause. */
  get restarts(): number {
    return this.#restarts;
  }
  /** Consecutive failures counted toward giving up. */
  get failures(): number {
    return this.#failures;
  }
  get lastExit(): LastExit | undefined {
    return this.#lastExit;
  }
  /** When the current run was spawned (ms epoch). */
  get startedAt(): number | undefined {
    return this.#run?.startedAt;
  }
  /** Last output lines of the current (or last) run. */
  tail(): string[] {
    return this.#run?.tail.lines() ?? [...(this.#lastExit?.tail ?? [])];
  }

  /** Command and environment for the next spawn (new imports); the current run keeps its own. */
  reconfigure(command: string, env: NodeJS.ProcessEnv): void {
    this.#command = command;
    this.#env = env;
  }

  start(): void {
    if (this.#state !== 'idle') return;
    this.#spawn();
  }

  /**
   * Ends the current run as a failure (a liveness check gave up on it): SIGTERM, SIGKILL after
   * the stop timeout, then the usual backoff, which may mean giving up.
   */
  restart(reason: string): void {
    const run = this.#run;
    if (this.#state !== 'running' || !run || this.#killReason !== undefined) return;
    this.#killReason = reason;
    void terminateGroup(run.pgid, this.#o.stopTimeoutMs);
  }

  /**
   * Stops for good: no more restarts. `beforeSignal` (the role's `stop` script) runs first and
   * may end the process itself; whatever is left gets SIGTERM, then SIGKILL after `timeoutMs`.
   * Resolves once every process of the group has exited.
   */
  stop(timeoutMs = this.#o.stopTimeoutMs, beforeSignal?: () => Promise<unknown>): Promise<void> {
    this.#stopping ??= this.#stop(timeoutMs, beforeSignal);
    return this.#stopping;
  }

  /**
   * Ends everything now, even in the middle of a graceful stop() that is waiting on its
   * `beforeSignal` or its timeout: SIGTERM, SIGKILL after `graceMs`.
   */
  async kill(graceMs: number): Promise<void> {
    const run = this.#run;
    if (this.#stopping && run) await terminateGroup(run.pgid, graceMs);
    await this.stop(graceMs);
  }

  async #stop(timeoutMs: number, beforeSignal?: () => Promise<unknown>): Promise<void> {
    clearTimeout(this.#timer);
    const run = this.#run;
    this.#state = 'stopping';
    // The role's own way of stopping runs even between restarts: it may clean up more than the process.
    if (beforeSignal) await beforeSignal().catch(() => undefined);
    if (run) {
      await terminateGroup(run.pgid, timeoutMs);
      await run.done;
    }
    this.#state = 'stopped';
    this.#o.onEvent?.({ type: 'stopped', exit: this.#lastExit });
  }

  #spawn(): void {
    const child = spawn('bash', ['-c', this.#command], {
      cwd: this.#o.cwd,
      env: this.#env,
      ...(this.#o.runAs ?? {}),
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const tail = new LineTail(this.#o.tailLines, this.#o.log);
    tail.follow(child.stdout);
    tail.follow(child.stderr);
    this.#killReason = undefined;

    if (child.pid === undefined) {
      // bash could not be started at all (cwd gone, no bash): count it as a failed run.
      child.once('error', (err) => {
        tail.note(`could not run bash: ${err.message}`);
        this.#afterExit(Date.now(), tail, null, null);
      });
      return;
    }
    child.on('error', () => undefined);
    const startedAt = Date.now();
    let finish!: () => void;
    const done = new Promise<void>((r) => (finish = r));
    const run: Run = { child, pgid: child.pid, startedAt, tail, done };
    this.#run = run;
    this.#state = 'running';
    child.once('exit', (code, signal) => {
      void this.#onExit(run, code, signal).finally(finish);
    });
    this.#o.onEvent?.({ type: 'spawned', pid: child.pid });
  }

  async #onExit(run: Run, code: number | null, signal: string | null): Promise<void> {
    // bash is gone, but what it started may live on as orphans in its group: a restart must not
    // find the old tree still holding the port, so clear it now.
    if (this.#state !== 'stopping') {
      killGroup(run.pgid, 'SIGKILL');
      await waitGroupGone(run.pgid, 2000);
    }
    // Let the last lines arrive before reading the tail.
    await Promise.race([Promise.all([closed(run.child.stdout), closed(run.child.stderr)]), sleep(200)]);
    run.child.stdout?.destroy();
    run.child.stderr?.destroy();
    run.tail.flushAll();
    if (this.#killReason !== undefined) run.tail.note(`(killed: ${this.#killReason})`);
    if (this.#run === run) this.#run = undefined;
    this.#afterExit(run.startedAt, run.tail, code, signal);
  }

  #afterExit(startedAt: number, tail: LineTail, code: number | null, signal: string | null): void {
    const exit: LastExit = { code, signal, tail: tail.lines() };
    this.#lastExit = exit;
    if (this.#state === 'stopping' || this.#state === 'stopped') return;

    if (Date.now() - startedAt >= this.#o.stableAfterMs) this.#failures = 0;
    this.#failures += 1;
    if (this.#failures > this.#o.maxRestarts) {
      this.#state = 'failed';
      this.#o.onEvent?.({ type: 'failed', exit, failures: this.#failures });
      return;
    }
    const delay = Math.min(this.#o.restartBackoffMs * 2 ** (this.#failures - 1), this.#o.restartBackoffMaxMs);
    this.#state = 'backoff';
    this.#timer = setTimeout(() => {
      if (this.#state !== 'backoff') return;
      this.#restarts += 1;
      this.#spawn();
    }, delay);
    this.#o.onEvent?.({ type: 'exited', exit, restartInMs: delay, failures: this.#failures });
  }
}

function closed(stream: NodeJS.ReadableStream | null): Promise<void> {
  if (!stream || (stream as { closed?: boolean }).closed) return Promise.resolve();
  return new Promise((resolve) => stream.once('close', () => resolve()));
}
