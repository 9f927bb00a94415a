/**
 * Health checks of a role's process: one probe (`probe`) and the loop that turns probe results
 * into "healthy" / "failed N times" (`HealthWatcher`).
 */
import http from 'node:http';
import net from 'node:net';
import type { HealthSpec } from '../core/index.js';
import { trackAgentSocket } from './procfs.js';
import { runScript } from './script.js';

export interface ProbeTarget {
  /**
   * The instance's address (`${ip}`: where the others reach it), probed like Kubernetes probes
   * a pod's IP: a role that only listens on another address is not healthy. @default 127.0.0.1
   */
  readonly host?: string;
  /** The role's port. */
  readonly port: number;
  /** Environment and working directory of `exec` probes (the role's own). */
  readonly env: NodeJS.ProcessEnv;
  readonly cwd: string;
  /** Exec probes run as the role's user. */
  readonly runAs?: { readonly uid: number; readonly gid: number };
}

export type ProbeResult = { readonly ok: true } | { readonly ok: false; readonly reason: string };

const OK: ProbeResult = { ok: true };

/** Runs the check of `spec` once; never rejects. */
export function probe(spec: HealthSpec, target: ProbeTarget, signal?: AbortSignal): Promise<ProbeResult> {
  if (spec.http !== undefined) return probeHttp(target.port, spec.http, spec.timeoutMs, target.host);
  if (spec.exec !== undefined) return probeExec(spec.exec, target, spec.timeoutMs, signal);
  if (spec.tcp) return probeTcp(target.port, spec.timeoutMs, target.host);
  return Promise.resolve({ ok: false, reason: 'health check has no http, tcp or exec' });
}

/** GET http://host:port/path; 2xx and 3xx are healthy. */
export function probeHttp(port: number, path: string, timeoutMs: number, host = '127.0.0.1'): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const p = path.startsWith('/') ? path : `/${path}`;
    // agent: false: a pooled keep-alive socket would outlive the check and could hide a server
    // that no longer accepts connections.
    const req = http.get({ host, port, path: p, agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      const code = res.statusCode ?? 0;
      resolve(code >= 200 && code < 400 ? OK : { ok: false, reason: `GET ${p} answered HTTP ${code}` });
    });
    req.on('socket', trackAgentSocket);
    req.on('timeout', () => {
      req.destroy();
      resolve({ ok: false, reason: `GET ${p} timed out after ${timeoutMs}ms` });
    });
    req.on('error', (err) => resolve({ ok: false, reason: `GET ${p}: ${errorText(err)}` }));
  });
}

/** Connects to host:port. */
export function probeTcp(port: number, timeoutMs: number, host = '127.0.0.1'): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    trackAgentSocket(sock);
    const timer = setTimeout(() => {
      sock.destroy();
      resolve({ ok: false, reason: `tcp connect to port ${port} timed out after ${timeoutMs}ms` });
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.destroy();
      resolve(OK);
    });
    sock.once('error', (err) => {
      clearTimeout(timer);
      resolve({ ok: false, reason: `tcp connect to port ${port}: ${errorText(err)}` });
    });
  });
}

/** Runs `command` with bash; exit 0 is healthy. */
export async function probeExec(
  command: string,
  target: ProbeTarget,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<ProbeResult> {
  const r = await runScript({ command, env: target.env, cwd: target.cwd, ...(target.runAs ? { runAs: target.runAs } : {}), timeoutMs, signal, tailLines: 3, killGraceMs: 0 });
  if (r.code === 0) return OK;
  if (r.timedOut) return { ok: false, reason: `\`${command}\` timed out after ${timeoutMs}ms` };
  const what = r.signal ? `was killed by ${r.signal}` : `exited with code ${r.code}`;
  const last = r.tail.at(-1);
  return { ok: false, reason: `\`${command}\` ${what}${last ? `: ${last}` : ''}` };
}

function errorText(err: Error): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ECONNREFUSED') return 'connection refused';
  return code ? `${code} ${err.message}` : err.message;
}

export type HealthEvent =
  /** Healthy for the first time, or again after failures that did not reach the threshold. */
  | { readonly type: 'passed' }
  /** Not healthy yet; the check keeps going. */
  | { readonly type: 'pending'; readonly reason: string }
  /** Was healthy, then failed `failures` times in a row (the threshold). */
  | { readonly type: 'failed'; readonly failures: number; readonly reason: string };

export interface HealthWatcherOptions {
  readonly spec: HealthSpec;
  readonly target: ProbeTarget;
  readonly onEvent: (event: HealthEvent) => void;
  /**
   * Probe interval until the first success. A process usually comes up well within the
   * steady-state interval, and serving a second earlier matters more than one extra probe.
   * @default min(spec.intervalMs, 500)
   */
  readonly startupIntervalMs?: number;
}

/**
 * Probes on an interval, one probe at a time. Before the first success it reports `pending`
 * and never gives up (a slow start is not a failure); afterwards `failureThreshold`
 * consecutive failures report `failed` once, after which it stays quiet until it passes again.
 */
export class HealthWatcher {
  readonly #o: HealthWatcherOptions;
  readonly #abort = new AbortController();
  #timer?: NodeJS.Timeout;
  #healthy = false;
  #failures = 0;

  constructor(opts: HealthWatcherOptions) {
    this.#o = opts;
  }

  get healthy(): boolean {
    return this.#healthy;
  }

  start(): void {
    this.#schedule(0);
  }

  stop(): void {
    clearTimeout(this.#timer);
    this.#abort.abort();
  }

  #schedule(ms: number): void {
    if (this.#abort.signal.aborted) return;
    this.#timer = setTimeout(() => void this.#tick(), ms);
  }

  async #tick(): Promise<void> {
    const { spec, target, onEvent } = this.#o;
    const r = await probe(spec, target, this.#abort.signal);
    if (this.#abort.signal.aborted) return;
    if (r.ok) {
      this.#failures = 0;
      if (!this.#healthy) {
        this.#healthy = true;
        onEvent({ type: 'passed' });
      }
    } else {
      this.#failures += 1;
      if (!this.#healthy) {
        onEvent({ type: 'pending', reason: r.reason });
      } else if (this.#failures >= spec.failureThreshold) {
        this.#healthy = false;
        onEvent({ type: 'failed', failures: this.#failures, reason: r.reason });
        this.#failures = 0;
      }
    }
    const startup = this.#o.startupIntervalMs ?? Math.min(spec.intervalMs, 500);
    this.#schedule(this.#healthy ? spec.intervalMs : startup);
  }
}
