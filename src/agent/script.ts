/**
 * The script plug-in: one lifecycle step (`deploy`, `update`, `stop`, `undeploy`, an exec
 * probe) run to completion by bash in its own process group.
 */
import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { LineTail, type LineSink } from './output.js';
import { terminateGroup } from './procfs.js';

export interface ScriptOptions {
  readonly command: string;
  readonly env: NodeJS.ProcessEnv;
  readonly cwd: string;
  /** Run as this user and group (the agent must be root); the agent's own by default. */
  readonly runAs?: { readonly uid: number; readonly gid: number };
  /** The whole group is ended once this passes. */
  readonly timeoutMs: number;
  /** Aborting ends the whole group, like a timeout. */
  readonly signal?: AbortSignal;
  /** Every output line also goes here, prefixed by `logPrefix`. */
  readonly log?: LineSink;
  readonly logPrefix?: string;
  /** @default 40 */
  readonly tailLines?: number;
  /** Time between SIGTERM and SIGKILL when a timed-out or aborted step is ended. @default 1000 */
  readonly killGraceMs?: number;
}

export interface ScriptResult {
  /** Exit code; null when killed by a signal or when bash could not be started. */
  readonly code: number | null;
  readonly signal: string | null;
  /** Last lines of stdout and stderr, interleaved as they arrived. */
  readonly tail: string[];
  readonly timedOut: boolean;
  readonly aborted: boolean;
}

/**
 * How long to wait for output still in the pipes after bash exits. Not forever: a step that
 * starts a daemon in the background leaves it holding our pipes.
 */
const DRAIN_MS = 100;

export async function runScript(opts: ScriptOptions): Promise<ScriptResult> {
  const tail = new LineTail(opts.tailLines ?? 40, opts.log, opts.logPrefix ?? '');
  if (opts.signal?.aborted) return { code: null, signal: null, tail: [], timedOut: false, aborted: true };

  const child = spawn('bash', ['-c', opts.command], {
    cwd: opts.cwd,
    env: opts.env,
    ...(opts.runAs ?? {}),
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  tail.follow(child.stdout);
  tail.follow(child.stderr);

  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (err) => {
      // No pid means bash never started (missing cwd, no bash): 'exit' will not follow.
      if (child.pid === undefined) {
        tail.note(`could not run bash: ${err.message}`);
        resolve({ code: null, signal: null });
      }
    });
  });

  let timedOut = false;
  let aborted = false;
  let ending: Promise<void> | undefined;
  const end = (): void => {
    if (ending || child.pid === undefined) return;
    ending = terminateGroup(child.pid, opts.killGraceMs ?? 1000);
  };
  const timer = setTimeout(() => {
    timedOut = true;
    end();
  }, opts.timeoutMs);
  const onAbort = (): void => {
    aborted = true;
    end();
  };
  opts.signal?.addEventListener('abort', onAbort, { once: true });

  try {
    const { code, signal } = await exited;
    await Promise.race([
      Promise.all([closed(child.stdout), closed(child.stderr)]),
      sleep(DRAIN_MS),
    ]);
    // Whatever still holds the pipes may keep writing into the role log, but must not keep the
    // agent's event loop alive.
    for (const s of [child.stdout, child.stderr]) (s as { unref?: () => void } | null)?.unref?.();
    if (ending) await ending;
    tail.flushAll();
    if (timedOut) tail.note(`(timed out after ${opts.timeoutMs}ms)`);
    return { code, signal, tail: tail.lines(), timedOut, aborted };
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onAbort);
  }
}

function closed(stream: Readable | null): Promise<void> {
  if (!stream || stream.closed) return Promise.resolve();
  return new Promise((resolve) => stream.once('close', () => resolve()));
}
