/**
 * A small client of the controller's REST API, and how the CLI finds the controller: DROVER_URL
 * and DROVER_TOKEN if set, else `controller.json` and `token` in the data folder.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { checkApiProof } from '../core/index.js';
import { join, resolve } from 'node:path';

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

export interface Target {
  readonly url: string;
  readonly token: string;
}

export function findTarget(dataDir: string, env: NodeJS.ProcessEnv = process.env): Target {
  const dir = resolve(dataDir);
  let url = env.DROVER_URL;
  let token = env.DROVER_TOKEN;
  if (!url) {
    const info = join(dir, 'controller.json');
    if (!existsSync(info)) {
      throw new CliError(`no controller found: ${info} does not exist. Start one with \`drover up\`, or set DROVER_URL and DROVER_TOKEN.`);
    }
    url = (JSON.parse(readFileSync(info, 'utf8')) as { url: string }).url;
  }
  if (!token) {
    const file = join(dir, 'token');
    if (!existsSync(file)) throw new CliError(`no token: set DROVER_TOKEN, or run from the folder holding ${file}.`);
    token = readFileSync(file, 'utf8').trim();
  }
  return { url: url.replace(/\/+$/, ''), token };
}

export interface ApiErrorBody {
  error?: { code?: string; message?: string; details?: { path: string; message: string }[] };
}

export class HttpError extends CliError {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export class Client {
  #verified?: Promise<void>;

  constructor(readonly target: Target) {}

  /**
   * Before the token leaves this process: the peer at the URL must prove it holds the same token
   * (an HMAC of a fresh challenge). Whatever took the controller's port while it was down gets a
   * request without credentials, and the CLI stops there.
   */
  verifyController(timeoutMs = 10_000): Promise<void> {
    this.#verified ??= (async () => {
      const challenge = randomBytes(24).toString('base64url');
      let proof: unknown;
      try {
        const res = await fetch(`${this.target.url}/v1/identity?challenge=${challenge}`, { signal: AbortSignal.timeout(timeoutMs) });
        proof = res.ok ? ((await res.json()) as { proof?: unknown }).proof : undefined;
      } catch (err) {
        const why = err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err);
        throw new CliError(`cannot reach the controller at ${this.target.url}: ${why}`);
      }
      if (typeof proof !== 'string' || !checkApiProof(this.target.token, challenge, proof)) {
        throw new CliError(
          `the process answering at ${this.target.url} could not prove it is the controller holding this token; the token was not sent. ` +
            'Is another program using the controller\'s port, or is the token (DROVER_TOKEN or the data folder\'s token file) for another controller?',
        );
      }
    })();
    this.#verified.catch(() => (this.#verified = undefined));
    return this.#verified;
  }

  /**
   * GETs an NDJSON answer and hands each object to `onItem` as it arrives; resolves when the
   * controller ends the answer, rejects if the connection breaks.
   */
  async stream(path: string, onItem: (item: unknown) => void, signal?: AbortSignal): Promise<void> {
    await this.verifyController();
    let res: Response;
    try {
      res = await fetch(this.target.url + path, { headers: { authorization: `Bearer ${this.target.token}` }, ...(signal ? { signal } : {}) });
    } catch (err) {
      const why = err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err);
      throw new CliError(`cannot reach the controller at ${this.target.url}: ${why}`);
    }
    if (!res.ok || !res.body) {
      const text = await res.text();
      let e: ApiErrorBody['error'];
      try {
        e = (JSON.parse(text) as ApiErrorBody).error;
      } catch {
        e = undefined;
      }
      throw new HttpError(res.status, e?.code ?? String(res.status), `${e?.code ?? res.status}: ${e?.message ?? text}`);
    }
    const decoder = new TextDecoder();
    let rest = '';
    try {
      for await (const chunk of res.body) {
        rest += decoder.decode(chunk as Uint8Array, { stream: true });
        const parts = rest.split('\n');
        rest = parts.pop() ?? '';
        for (const p of parts) if (p.trim()) onItem(JSON.parse(p));
      }
    } catch (err) {
      if (signal?.aborted) return;
      const why = err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err);
      throw new CliError(`the connection to the controller broke: ${why}`);
    }
  }

  async request<T>(method: string, path: string, body?: unknown, timeoutMs = 30_000, headers?: Readonly<Record<string, string>>): Promise<T> {
    await this.verifyController(Math.min(timeoutMs, 10_000));
    let res: Response;
    try {
      res = await fetch(this.target.url + path, {
        method,
        headers: {
          ...headers,
          authorization: `Bearer ${this.target.token}`,
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      const why = err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err);
      throw new CliError(`cannot reach the controller at ${this.target.url}: ${why}`);
    }
    const text = await res.text();
    let data: unknown;
    try {
      data = text ? JSON.parse(text) : undefined;
    } catch {
      data = undefined;
    }
    if (!res.ok) {
      const e = (data as ApiErrorBody | undefined)?.error;
      const details = e?.details?.length ? '\n' + e.details.map((d) => (d.path ? `  ${d.path}: ${d.message}` : `  ${d.message}`)).join('\n') : '';
      const msg = e?.details?.length ? `${e.code ?? res.status}:${details}` : `${e?.code ?? res.status}: ${e?.message ?? text}`;
      throw new HttpError(res.status, e?.code ?? String(res.status), msg);
    }
    return data as T;
  }
}
