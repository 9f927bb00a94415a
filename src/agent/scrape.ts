/**
 * Instance-scope metrics: numbers the role exposes about itself (queue depth, requests per
 * second), scraped from its own port on the interval the app file gives and sent to the
 * controller with each heartbeat, next to the built-in vitals.
 */
import http from 'node:http';
import type { Logger } from 'pino';
import { parsePrometheusText, pickJson, pickPrometheus, type MetricSource, type RoleSpec } from '../core/index.js';
import { trackAgentSocket } from './procfs.js';

export type InstanceMetricSource = Extract<MetricSource, { readonly scope: 'instance' }>;

/** The role's metrics the agent scrapes itself; role-scope ones are the controller's. */
export function instanceMetricSources(role: RoleSpec): InstanceMetricSource[] {
  // An older controller may send a role without `metrics`.
  const all: readonly MetricSource[] = Array.isArray(role.metrics) ? role.metrics : [];
  return all.filter((m): m is InstanceMetricSource => m.scope === 'instance' && typeof m.http === 'string');
}

export interface ScraperOptions {
  readonly sources: readonly InstanceMetricSource[];
  /** The role's port. */
  readonly port: number;
  /** The instance's address (`${ip}`), where the role is scraped, as it is probed. @default 127.0.0.1 */
  readonly host?: string;
  readonly logger: Logger;
  /** A body larger than this fails the scrape. @default 4 MiB */
  readonly maxBytes?: number;
  /** @default Date.now */
  readonly now?: () => number;
}

/** A value older than this many intervals is left out: the scrapes behind it stopped succeeding. */
const STALE_INTERVALS = 3;
const DEFAULT_INTERVAL_MS = 5000;
const DEFAULT_TIMEOUT_MS = 2000;

interface Reading {
  readonly value: number;
  readonly at: number;
  readonly intervalMs: number;
}

/** Scrapes every source on its own interval, one scrape per source at a time, until stopped. */
export class MetricScraper {
  readonly #o: ScraperOptions;
  readonly #now: () => number;
  readonly #last = new Map<string, Reading>();
  readonly #timers = new Set<NodeJS.Timeout>();
  readonly #abort = new AbortController();

  constructor(opts: ScraperOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
  }

  start(): void {
    for (const source of this.#o.sources) this.#schedule(source, 0);
  }

  stop(): void {
    this.#abort.abort();
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    this.#last.clear();
  }

  /** The last good value of each metric, or undefined when there is none. */
  values(): Record<string, number> | undefined {
    const now = this.#now();
    const out: Record<string, number> = {};
    let any = false;
    for (const [name, r] of this.#last) {
      if (now - r.at > STALE_INTERVALS * r.intervalMs) continue;
      out[name] = r.value;
      any = true;
    }
    return any ? out : undefined;
  }

  #schedule(source: InstanceMetricSource, ms: number): void {
    if (this.#abort.signal.aborted) return;
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      void this.#tick(source);
    }, ms);
    this.#timers.add(timer);
  }

  async #tick(source: InstanceMetricSource): Promise<void> {
    const intervalMs = positive(source.intervalMs, DEFAULT_INTERVAL_MS);
    const started = this.#now();
    try {
      const value = await scrapeMetric(this.#o.port, source, {
        timeoutMs: positive(source.timeoutMs, DEFAULT_TIMEOUT_MS),
        maxBytes: this.#o.maxBytes,
        signal: this.#abort.signal,
        ...(this.#o.host !== undefined ? { host: this.#o.host } : {}),
      });
      if (this.#abort.signal.aborted) return;
      this.#last.set(source.name, { value, at: this.#now(), intervalMs });
    } catch (err) {
      if (this.#abort.signal.aborted) return;
      // A policy reading "no data" is the honest outcome; a stale number would mislead it.
      this.#last.delete(source.name);
      this.#o.logger.debug({ metric: source.name, err: errorText(err) }, 'metric scrape failed');
    }
    this.#schedule(source, Math.max(0, intervalMs - (this.#now() - started)));
  }
}

export interface ScrapeOptions {
  readonly timeoutMs: number;
  /** @default 4 MiB */
  readonly maxBytes?: number;
  readonly signal?: AbortSignal;
  /** @default 127.0.0.1 */
  readonly host?: string;
}

/** GETs the source from host:port (127.0.0.1 by default) and picks its value; rejects with the reason it could not. */
export async function scrapeMetric(port: number, source: InstanceMetricSource, opts: ScrapeOptions): Promise<number> {
  const path = source.http.startsWith('/') ? source.http : `/${source.http}`;
  const accept = source.format === 'json' ? 'application/json' : 'text/plain;version=0.0.4;q=1,*/*;q=0.1';
  const body = await getText(port, path, accept, opts);
  let value: number | undefined;
  if (source.format === 'json') {
    let doc: unknown;
    try {
      doc = JSON.parse(body);
    } catch {
      throw new Error(`GET ${path} did not answer JSON`);
    }
    value = pickJson(doc, source.select);
  } else {
    value = pickPrometheus(parsePrometheusText(body), source.select);
  }
  if (value === undefined) throw new Error(`GET ${path} has nothing matching ${source.select}`);
  // JSON carries no NaN or Infinity: the heartbeat would turn it into null.
  if (!Number.isFinite(value)) throw new Error(`${source.select} is ${value}`);
  return value;
}

function getText(port: number, path: string, accept: string, opts: ScrapeOptions): Promise<string> {
  const maxBytes = opts.maxBytes ?? 4 * 1024 * 1024;
  return new Promise((resolve, reject) => {
    // agent: false closes the connection after the answer: a pooled keep-alive socket to the
    // role's port would count as in-flight work and hold up a drain.
    const req = http.get({ host: opts.host ?? '127.0.0.1', port, path, agent: false, headers: { accept }, signal: opts.signal }, (res) => {
      const code = res.statusCode ?? 0;
      if (code < 200 || code >= 300) {
        res.resume();
        reject(new Error(`GET ${path} answered HTTP ${code}`));
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size <= maxBytes) {
          chunks.push(c);
          return;
        }
        // Rejected before destroying: the cut-short response may still report an 'end'.
        reject(new Error(`GET ${path} answered more than ${maxBytes} bytes`));
        req.destroy();
      });
      res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      res.on('error', reject);
    });
    req.on('socket', trackAgentSocket);
    // The whole exchange, not just socket idleness: a role trickling bytes must not stall the loop.
    const timer = setTimeout(() => req.destroy(new Error(`GET ${path} timed out after ${opts.timeoutMs}ms`)), opts.timeoutMs);
    req.on('error', reject);
    req.on('close', () => clearTimeout(timer));
  });
}

function positive(x: number, fallback: number): number {
  return Number.isFinite(x) && x > 0 ? x : fallback;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
