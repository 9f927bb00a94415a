/**
 * Starting a controller for real: data folder, token, embedded store, local provider, HTTP
 * server, and the file (`controller.json`) through which the CLI finds it.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { pino, type Logger } from 'pino';
import { systemClock, type Clock, type PlannerOptions } from '../core/index.js';
import { openPgliteStore, type Store } from '../adapters/store/index.js';
import { LocalProvider, type Provider } from '../adapters/providers/index.js';
import { EmbeddedTransport } from '../adapters/transport/index.js';
import { buildApi } from './api.js';
import { Controller } from './controller.js';
import { VERSION } from './version.js';

export interface ServerOptions {
  /** @default './.drover' */
  readonly dataDir?: string;
  /** @default '127.0.0.1' */
  readonly host?: string;
  /** 0 picks a free port. @default 7420 */
  readonly port?: number;
  /** Overrides the token kept in the data folder (env DROVER_TOKEN). */
  readonly token?: string;
  readonly logger?: Logger;
  readonly clock?: Clock;
  /** An in-memory store for tests; the default is PGlite in `<dataDir>/db`. */
  readonly store?: Store;
  readonly provider?: Provider;
  readonly heartbeatMs?: number;
  /** How often scaling policies run. @default 500 */
  readonly evaluateMs?: number;
  readonly planner?: Partial<PlannerOptions>;
  /** Environment for agents made by the local provider. */
  readonly agentEnv?: Readonly<Record<string, string>>;
  readonly onShutdown?: () => void;
}

export interface RunningController {
  readonly url: string;
  readonly token: string;
  readonly dataDir: string;
  readonly controller: Controller;
  readonly http: FastifyInstance;
  /** Stops the controller. Instances keep running (the app outlives its controller). */
  close(): Promise<void>;
}

export interface ControllerInfo {
  readonly url: string;
  readonly pid: number;
  readonly startedAt: string;
}

export const DEFAULT_PORT = 7420;

/** The token in the data folder, made on first start (0600). */
export function loadOrCreateToken(dataDir: string): string {
  const file = join(dataDir, 'token');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const t = randomBytes(24).toString('base64url');
  writeFileSync(file, t + '\n', { mode: 0o600 });
  return t;
}

export async function startServer(opts: ServerOptions = {}): Promise<RunningController> {
  const dataDir = resolve(opts.dataDir ?? '.drover');
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const logger = opts.logger ?? pino({ level: process.env.DROVER_LOG_LEVEL ?? 'info' });
  const token = opts.token ?? loadOrCreateToken(dataDir);
  const store = opts.store ?? (await openPgliteStore(join(dataDir, 'db')));
  const provider = opts.provider ?? new LocalProvider({ baseDir: join(dataDir, 'instances'), ...(opts.agentEnv ? { env: opts.agentEnv } : {}) });
  const controller = new Controller({
    store, provider, clock: opts.clock ?? systemClock, logger,
    ...(opts.heartbeatMs !== undefined ? { heartbeatMs: opts.heartbeatMs } : {}),
    ...(opts.evaluateMs !== undefined ? { evaluateMs: opts.evaluateMs } : {}),
    ...(opts.planner ? { planner: opts.planner } : {}),
  });
  const transport = new EmbeddedTransport(controller.handlers, controller.heartbeatMs);
  let closing: Promise<void> | undefined;
  const http = await buildApi({
    controller, token, logger, defaultAppDir: process.cwd(), version: VERSION, transport,
    onShutdown: () => opts.onShutdown?.(),
  });
  await http.listen({ host: opts.host ?? '127.0.0.1', port: opts.port ?? DEFAULT_PORT });
  const addr = http.server.address();
  const port = addr && typeof addr === 'object' ? addr.port : (opts.port ?? DEFAULT_PORT);
  const host = opts.host ?? '127.0.0.1';
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  await controller.start(transport, url);
  const infoFile = join(dataDir, 'controller.json');
  const info: ControllerInfo = { url, pid: process.pid, startedAt: new Date().toISOString() };
  writeFileSync(infoFile, JSON.stringify(info, null, 2) + '\n');
  logger.info({ url, dataDir }, 'controller listening');
  return {
    url, token, dataDir, controller, http,
    close: () =>
      (closing ??= (async () => {
        await controller.stop();
        await transport.close();
        await http.close();
        await store.close();
        try {
          const cur = JSON.parse(readFileSync(infoFile, 'utf8')) as ControllerInfo;
          if (cur.pid === process.pid) rmSync(infoFile, { force: true });
        } catch {
          // already gone
        }
      })()),
  };
}
