/**
 * `GET /v1/instances/{id}/logs`: an instance's output, read where its agent wrote it.
 *
 * The role's output (every step and the start command, `[step] `-prefixed, each line stamped by
 * the agent) is `role.log` in the instance's folder; the agent's own log (JSON lines) is
 * `agent.log`. With the local provider that folder is on the controller's machine; once the
 * instance is destroyed its logs move to `<data-dir>/logs/<id>/` (kept for the newest 200
 * instances), so the logs of a failed instance can still be read. Otherwise, or past that, the last lines the agent sent when its role stopped (kept in the `instance.log` event)
 * are what is left, and the answer says so (`from: "events"`).
 *
 * Bounded: at most {@link MAX_LOG_LINES} lines and {@link MAX_TAIL_BYTES} read from the end of a
 * file per request; at most {@link LogOptions.maxFollowers} followers at once (`503 busy` past
 * it). A follower gets new lines as NDJSON as they are written (the file is polled), a `{}`
 * every 15 s to keep the connection alive, and `{"end": reason}` once the instance is gone and
 * its file has been read to the end.
 */
import { constants, type FileHandle, open } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Controller, InstanceView } from './controller.js';
import { ApiError } from './errors.js';

/** Most lines one request returns. */
export const MAX_LOG_LINES = 10_000;
/** Most bytes read back from the end of a log file for one request. */
export const MAX_TAIL_BYTES = 8 << 20;
/** Longest line sent whole (the agent cuts lines at 16 KiB already; this guards old files). */
const MAX_LINE = 32 * 1024;

export type LogSource = 'role' | 'agent';

export interface LogLine {
  /** When the line was written (ISO 8601); null when the file does not say. */
  readonly at: string | null;
  readonly text: string;
}

export interface LogOptions {
  /** How often a followed file is looked at. @default 250 */
  readonly pollMs: number;
  /** At most this many followers at once. @default 64 */
  readonly maxFollowers: number;
  /** A follower with more than this unsent is dropped. @default 4 MiB */
  readonly maxBufferedBytes: number;
}

export const DEFAULT_LOG_OPTIONS: LogOptions = { pollMs: 250, maxFollowers: 64, maxBufferedBytes: 4 << 20 };

const STAMP = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (.*)$/s;
const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const AGENT_SKIP = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'name']);

/** A line of `role.log` (`<ISO time> <text>`), or of `agent.log` (pino's JSON), as shown. */
export function parseLogLine(raw: string, source: LogSource): { atMs: number | null; line: LogLine } {
  const cut = raw.length > MAX_LINE ? `${raw.slice(0, MAX_LINE)}…[cut]` : raw;
  if (source === 'role') {
    const m = STAMP.exec(cut);
    if (!m) return { atMs: null, line: { at: null, text: cut } };
    return { atMs: Date.parse(m[1]!), line: { at: m[1]!, text: m[2]! } };
  }
  try {
    const o = JSON.parse(raw) as Record<string, unknown>;
    const atMs = typeof o.time === 'number' ? o.time : null;
    const extra = Object.entries(o)
      .filter(([k]) => !AGENT_SKIP.has(k))
      .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
      .join(' ');
    const text = `${LEVELS[o.level as number] ?? String(o.level)} ${typeof o.msg === 'string' ? o.msg : ''}${extra ? ` ${extra}` : ''}`;
    return { atMs, line: { at: atMs !== null ? new Date(atMs).toISOString() : null, text: text.length > MAX_LINE ? `${text.slice(0, MAX_LINE)}…[cut]` : text } };
  } catch {
    return { atMs: null, line: { at: null, text: cut } };
  }
}

/** Opens a log file for reading, refusing a symbolic link or anything but a regular file. */
async function openLog(path: string): Promise<FileHandle | undefined> {
  let fh: FileHandle;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  if (!(await fh.stat()).isFile()) {
    await fh.close();
    return undefined;
  }
  return fh;
}

/**
 * The last `lines` whole lines of a file written at or after `sinceMs`, read back from its end
 * (at most {@link MAX_TAIL_BYTES}); `end` is where a follower goes on from.
 */
async function readTail(fh: FileHandle, source: LogSource, lines: number, sinceMs: number | undefined): Promise<{ lines: LogLine[]; end: number; truncated: boolean }> {
  const size = (await fh.stat()).size;
  const chunk = 64 * 1024;
  let pos = size;
  let text = '';
  let count = 0;
  let older = false;
  // Back from the end until enough lines (or lines older than `since`) are in hand.
  while (pos > 0 && size - pos < MAX_TAIL_BYTES && count <= lines && !older) {
    const n = Math.min(chunk, pos, MAX_TAIL_BYTES - (size - pos));
    pos -= n;
    const buf = Buffer.alloc(n);
    await fh.read(buf, 0, n, pos);
    text = buf.toString('utf8') + text;
    count = text.split('\n').length - 1;
    if (sinceMs !== undefined) {
      // The first whole line read so far (the very first may be cut by the read).
      const first = text.split('\n')[pos > 0 ? 1 : 0];
      const t = first !== undefined ? parseLogLine(first, source).atMs : null;
      older = t !== null && t < sinceMs;
    }
  }
  const raw = text.split('\n');
  raw.pop(); // an unfinished last line waits for its newline (a follower gets it then)
  const end = size - Buffer.byteLength(text.slice(text.lastIndexOf('\n') + 1), 'utf8');
  if (pos > 0) raw.shift(); // the first one may be cut by the read
  let parsed = raw.map((r) => parseLogLine(r, source));
  if (sinceMs !== undefined) parsed = parsed.filter((p) => p.atMs === null || p.atMs >= sinceMs);
  const truncated = parsed.length > lines || (pos > 0 && !older);
  return { lines: parsed.slice(-lines).map((p) => p.line), end: Math.max(0, end), truncated };
}

/** The last lines the agent sent when the role stopped, from the instance's `instance.log` events. */
async function linesFromEvents(c: Controller, inst: InstanceView, lines: number): Promise<LogLine[]> {
  const out: LogLine[] = [];
  for (const e of await c.listEvents({ app: inst.app, limit: 1000 })) {
    if (e.kind !== 'instance.log' || e.instance !== inst.id) continue;
    const at = new Date(e.at).toISOString();
    const ls = Array.isArray(e.data?.lines) ? (e.data.lines as unknown[]) : [];
    for (const l of ls) if (typeof l === 'string') out.push({ at, text: l });
  }
  return out.slice(-lines);
}

/**
 * Where an instance's log file may be, when the controller can read it (local provider): its
 * folder while it lives, then `<data-dir>/logs/<id>/`, where the provider moves the logs of a
 * destroyed instance (the newest 200 instances' are kept).
 */
function logPaths(c: Controller, inst: InstanceView, source: LogSource): string[] {
  if (c.providerName !== 'local' || !inst.workdir) return [];
  const file = source === 'role' ? 'role.log' : 'agent.log';
  return [join(inst.workdir, file), join(dirname(dirname(inst.workdir)), 'logs', inst.id, file)];
}

async function openFirst(paths: readonly string[]): Promise<FileHandle | undefined> {
  for (const p of paths) {
    const fh = await openLog(p);
    if (fh) return fh;
  }
  return undefined;
}

/** Registers the logs route; followers are counted against `maxFollowers`. */
export function registerLogRoutes(app: FastifyInstance, c: Controller, opts: Partial<LogOptions> = {}): void {
  const o = { ...DEFAULT_LOG_OPTIONS, ...opts };
  let followers = 0;
  const following = new Set<() => void>();
  app.addHook('preClose', async () => {
    for (const stop of [...following]) stop();
  });
  app.get<{ Params: { id: string }; Querystring: { lines?: string; since?: string; source?: LogSource; follow?: 'true' | 'false' } }>(
    '/v1/instances/:id/logs',
    {
      schema: {
        tags: ['instances'],
        summary: "An instance's output: the role's (every step and the start command) or its agent's; the last lines, or followed as NDJSON",
        params: { type: 'object', properties: { id: { type: 'string', pattern: '^i-[0-9a-f]{1,32}$' } }, required: ['id'] },
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            lines: { type: 'string', pattern: '^[0-9]{1,15}$', description: `how many of the last lines, from 1 to ${MAX_LOG_LINES}; default 100` },
            since: { type: 'string', pattern: '^[0-9]{1,15}$', description: 'only lines written at or after this time (epoch milliseconds)' },
            source: { type: 'string', enum: ['role', 'agent'], description: 'role (default): the role\'s output; agent: the agent\'s own log' },
            follow: { type: 'string', enum: ['true', 'false'], description: 'keep the answer open and send new lines as NDJSON' },
          },
        },
      },
    },
    async (req, reply) => {
      const q = req.query;
      const lines = q.lines === undefined ? 100 : Number(q.lines);
      if (!(lines >= 1 && lines <= MAX_LOG_LINES)) throw new ApiError('invalid_request', `querystring.lines: expected a whole number from 1 to ${MAX_LOG_LINES}`);
      const sinceMs = q.since === undefined ? undefined : Number(q.since);
      const source: LogSource = q.source ?? 'role';
      const inst = await c.getInstance(req.params.id);
      if (!inst) throw new ApiError('not_found', `no instance "${req.params.id}"`);
      const opened = await openFirst(logPaths(c, inst, source));
      const follow = q.follow === 'true';
      if (!opened) {
        if (source === 'agent') throw new ApiError('not_found', `no agent log of ${inst.id} on the controller's machine`);
        if (follow && inst.destroyedAt === null) throw new ApiError('not_found', `no role log of ${inst.id} on the controller's machine to follow`);
        const kept = await linesFromEvents(c, inst, lines);
        const filtered = sinceMs === undefined ? kept : kept.filter((l) => l.at === null || Date.parse(l.at) >= sinceMs);
        if (!follow) return { instance: inst.id, source, from: 'events', truncated: false, lines: filtered };
        reply.hijack();
        reply.raw.writeHead(200, { 'content-type': 'application/x-ndjson; charset=utf-8', 'cache-control': 'no-store' });
        reply.raw.end([...filtered, { end: `instance ${inst.id} is gone (${inst.state}); these are the last lines it sent` }].map((x) => JSON.stringify(x) + '\n').join(''));
        return reply;
      }
      const fh = opened;
      let tail: Awaited<ReturnType<typeof readTail>>;
      try {
        tail = await readTail(fh, source, lines, sinceMs);
      } catch (err) {
        await fh.close();
        throw err;
      }
      if (!follow) {
        await fh.close();
        return { instance: inst.id, source, from: 'file', truncated: tail.truncated, lines: tail.lines };
      }
      if (followers >= o.maxFollowers) {
        await fh.close();
        throw new ApiError('busy', `logs: ${o.maxFollowers} followers are open already; try again shortly`);
      }
      followers++;
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'application/x-ndjson; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
      let stopped = false;
      const send = (x: object) => {
        if (stopped || res.destroyed) return;
        const text = JSON.stringify(x) + '\n';
        // A reader that does not keep up is dropped rather than buffered for.
        if (res.writableLength + text.length > o.maxBufferedBytes) {
          stop();
          res.destroy();
          return;
        }
        res.write(text);
      };
      let pos = tail.end;
      let partial = '';
      let busy = false;
      let lastCheck = Date.now();
      const poll = async () => {
        if (busy || stopped) return;
        busy = true;
        try {
          const size = (await fh.stat()).size;
          if (size < pos) pos = 0; // truncated or replaced in place: start again
          while (size > pos && !stopped) {
            const n = Math.min(256 * 1024, size - pos);
            const buf = Buffer.alloc(n);
            const { bytesRead } = await fh.read(buf, 0, n, pos);
            if (bytesRead === 0) break;
            pos += bytesRead;
            const text = partial + buf.subarray(0, bytesRead).toString('utf8');
            const parts = text.split('\n');
            partial = parts.pop() ?? '';
            if (partial.length > MAX_LINE) {
              parts.push(partial);
              partial = '';
            }
            for (const p of parts) {
              const { atMs, line } = parseLogLine(p, source);
              if (sinceMs === undefined || atMs === null || atMs >= sinceMs) send(line);
            }
          }
          if (size === pos && Date.now() - lastCheck > 2000) {
            lastCheck = Date.now();
            const now = await c.getInstance(inst.id);
            if (!now || now.destroyedAt !== null) {
              if (partial) send(parseLogLine(partial, source).line);
              send({ end: `instance ${inst.id} is gone (${now?.state ?? 'forgotten'})` });
              stop();
              res.end();
            }
          }
        } catch (err) {
          req.log.warn({ err }, 'following a log failed');
          stop();
          res.end();
        } finally {
          busy = false;
        }
      };
      const timer = setInterval(() => void poll(), o.pollMs);
      const ping = setInterval(() => send({}), 15_000);
      function stop(): void {
        if (stopped) return;
        stopped = true;
        followers--;
        clearInterval(timer);
        clearInterval(ping);
        following.delete(stopAndEnd);
        void fh.close().catch(() => undefined);
      }
      function stopAndEnd(): void {
        stop();
        res.end();
      }
      following.add(stopAndEnd);
      res.on('close', stop);
      for (const l of tail.lines) send(l);
      return reply;
    },
  );
}
