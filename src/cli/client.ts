/**
 * A small client of the controller's REST API, and how the CLI finds the controller: DROVER_URL
 * and DROVER_TOKEN if set, else `controller.json` and `token` in the data folder.
 */
import { randomBytes } from 'node:crypto';
import http, { type IncomingMessage } from 'node:http';
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
        const res = await send(`${this.target.url}/v1/identity?challenge=${challenge}`, 'GET', {}, undefined, timeoutMs);
        const text = await readAll(res);
        proof = res.statusCode === 200 ? (JSON.parse(text) as { proof?: unknown }).proof : undefined;
      } catch (err) {
        throw new CliError(`cannot reach the controller at ${this.target.url}: ${reason(err)}`);
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
   * controller ends the answer (or `signal` aborts), rejects if the connection breaks.
   */
  async stream(path: string, onItem: (item: unknown) => void, signal?: AbortSignal): Promise<void> {
    await this.verifyController();
    let res: IncomingMessage;
    try {
      res = await send(this.target.url + path, 'GET', { authorization: `Bearer ${this.target.token}` }, undefined, undefined, signal);
    } catch (err) {
      if (signal?.aborted) return;
      throw new CliError(`cannot reach the controller at ${this.target.url}: ${reason(err)}`);
    }
    if (res.statusCode !== 200) {
      const text = await readAll(res);
      let e: ApiErrorBody['error'];
      try {
        e = (JSON.parse(text) as ApiErrorBody).error;
      } catch {
        e = undefined;
      }
      throw new HttpError(res.statusCode ?? 0, e?.code ?? String(res.statusCode), `${e?.code ?? res.statusCode}: ${e?.message ?? text}`);
    }
    res.setEncoding('utf8');
    let rest = '';
    try {
      for await (const chunk of res) {
        rest += chunk as string;
        const parts = rest.split('\n');
        rest = parts.pop() ?? '';
        for (const p of parts) if (p.trim()) onItem(JSON.parse(p));
      }
    } catch (err) {
      if (signal?.aborted) return;
      throw new CliError(`the connection to the controller broke: ${reason(err)}`);
    }
    if (!res.complete && !signal?.aborted) throw new CliError('the connection to the controller broke before the answer ended');
  }

  async request<T>(method: string, path: string, body?: unknown, timeoutMs = 30_000, headers?: Readonly<Record<string, string>>): Promise<T> {
    await this.verifyController(Math.min(timeoutMs, 10_000));
    let status: number;
    let text: string;
    try {
      const payload = body !== undefined ? JSON.stringify(body) : undefined;
      const res = await send(
        this.target.url + path,
        method,
        { ...headers, authorization: `Bearer ${this.target.token}`, ...(payload !== undefined ? { 'content-type': 'application/json' } : {}) },
        payload,
        timeoutMs,
      );
      status = res.statusCode ?? 0;
      text = await readAll(res);
    } catch (err) {
      throw new CliError(`cannot reach the controller at ${this.target.url}: ${reason(err)}`);
    }
    let data: unknown;
    try {
      data = text ? JSON.parse(text) : undefined;
    } catch {
      data = undefined;
    }
    if (status < 200 || status > 299) {
      const e = (data as ApiErrorBody | undefined)?.error;
      const details = e?.details?.length ? '\n' + e.details.map((d) => (d.path ? `  ${d.path}: ${d.message}` : `  ${d.message}`)).join('\n') : '';
      const msg = e?.details?.length ? `${e.code ?? status}:${details}` : `${e?.code ?? status}: ${e?.message ?? text}`;
      throw new HttpError(status, e?.code ?? String(status), msg);
    }
    return data as T;
  }
}

function reason(err: unknown): string {
  return err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err);
}

/**
 * One HTTP request with node:http (node:https for an https URL): `fetch` would load undici, a
 * tenth of a second of every command. The connection is not kept: the CLI exits right after.
 * `timeoutMs` bounds the whole exchange up to the answer's headers and its body.
 */
async function send(url: string, method: string, headers: Record<string, string>, body: string | undefined, timeoutMs?: number, signal?: AbortSignal): Promise<IncomingMessage> {
  const u = new URL(url);
  const lib = u.protocol === 'https:' ? await import('node:https') : http;
  return new Promise((resolve, reject) => {
    const req = lib.request(
      u,
      { method, agent: false, headers: { ...headers, ...(body !== undefined ? { 'content-length': Buffer.byteLength(body) } : {}) }, ...(signal ? { signal } : {}) },
      (res) => {
        if (timer) res.once('end', () => clearTimeout(timer));
        resolve(res);
      },
    );
    const timer = timeoutMs !== undefined ? setTimeout(() => req.destroy(new Error(`no answer within ${Math.round(timeoutMs / 1000)}s`)), timeoutMs) : undefined;
    req.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.end(body);
  });
}

async function readAll(res: IncomingMessage): Promise<string> {
  res.setEncoding('utf8');
  let text = '';
  for await (const chunk of res) text += chunk as string;
  return text;
}
