/**
 * The agent process: `node dist/agent/main.js`, started by a provider with its settings in the
 * environment and stdout redirected to a log file.
 *
 * Exit codes: 0 role stopped or agent shut down (SIGTERM/SIGINT), 2 bad environment,
 * 3 refused (fenced) by the controller, 1 unexpected error.
 */
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { pino } from 'pino';
import { AmqpAgentTransport } from './amqp-transport.js';
import { Agent, type AgentOptions } from './runtime.js';

/** A variable that is missing or malformed; the message names it. */
export class AgentEnvError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(message);
    this.name = 'AgentEnvError';
  }
}

/** What the provider writes to the agent's stdin. */
export interface AgentSecrets {
  readonly key: string;
  /** The amqp transport's URL with this instance's own broker user and password; absent: embedded. */
  readonly transportUrl?: string;
}

/**
 * Reads the instance key the provider writes to the agent's stdin (one line, then end of file),
 * and, for the amqp transport, a second line: the broker URL with the agent's own user and
 * password. Neither is taken from the environment or argv: a role's processes can read their
 * parent's `/proc/<pid>/environ`, an environment is inherited by whatever the agent starts, and
 * `ps` shows command lines.
 */
export async function readSecrets(input: NodeJS.ReadableStream, timeoutMs = 10_000): Promise<AgentSecrets> {
  const chunks: Buffer[] = [];
  let size = 0;
  const done = new Promise<void>((resolve, reject) => {
    input.on('data', (c: Buffer | string) => {
      const b = typeof c === 'string' ? Buffer.from(c) : c;
      size += b.length;
      if (size > 4096) reject(new AgentEnvError('stdin', 'stdin (the instance key and transport URL) is longer than 4096 bytes'));
      else chunks.push(b);
    });
    input.once('end', () => resolve());
    input.once('error', reject);
  });
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new AgentEnvError('stdin', `no instance key on stdin within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    await Promise.race([done, timeout]);
  } finally {
    clearTimeout(timer);
    (input as { destroy?: () => void }).destroy?.();
  }
  const [first = '', second = '', ...rest] = Buffer.concat(chunks).toString('utf8').trim().split('\n').map((l) => l.trim());
  const key = first;
  if (!/^[A-Za-z0-9_-]{16,512}$/.test(key)) throw new AgentEnvError('stdin', 'stdin does not hold an instance key (16–512 characters of [A-Za-z0-9_-])');
  if (rest.length > 0) throw new AgentEnvError('stdin', 'stdin holds more than an instance key and a transport URL');
  if (!second) return { key };
  let u: URL;
  try {
    u = new URL(second);
  } catch {
    throw new AgentEnvError('stdin', "the second line on stdin is not a transport URL (amqp://user:password@host:port/vhost)");
  }
  if (u.protocol !== 'amqp:' && u.protocol !== 'amqps:') throw new AgentEnvError('stdin', `the transport URL on stdin must be amqp:// or amqps://, got ${u.protocol}//`);
  return { key, transportUrl: second };
}

/** The instance key alone (see {@link readSecrets}). */
export async function readKey(input: NodeJS.ReadableStream, timeoutMs = 10_000): Promise<string> {
  return (await readSecrets(input, timeoutMs)).key;
}

/** Reads the DROVER_* variables the provider sets; throws {@link AgentEnvError} on the first bad one. */
export function agentOptionsFromEnv(env: NodeJS.ProcessEnv): Omit<AgentOptions, 'key'> {
  const text = (name: string): string => {
    const v = env[name]?.trim();
    if (!v) throw new AgentEnvError(name, `${name} is not set`);
    return v;
  };
  const int = (name: string, min: number, max: number): number => {
    const v = text(name);
    const n = Number(v);
    if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new AgentEnvError(name, `${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
    }
    return n;
  };
  const controllerUrl = text('DROVER_CONTROLLER_URL');
  let url: URL;
  try {
    url = new URL(controllerUrl);
  } catch {
    throw new AgentEnvError('DROVER_CONTROLLER_URL', `DROVER_CONTROLLER_URL is not a URL: ${JSON.stringify(controllerUrl)}`);
  }
  if (!['http:', 'https:', 'ws:', 'wss:'].includes(url.protocol)) {
    throw new AgentEnvError('DROVER_CONTROLLER_URL', `DROVER_CONTROLLER_URL must be http(s) or ws(s), got ${url.protocol}`);
  }
  // Optional tunables, for operators and tests that cannot wait for the production timings.
  const tunable = (name: string, min: number, max: number): number | undefined => (env[name]?.trim() ? int(name, min, max) : undefined);
  const restartBackoffMs = tunable('DROVER_AGENT_RESTART_BACKOFF_MS', 1, 3_600_000);
  const maxRestarts = tunable('DROVER_AGENT_MAX_RESTARTS', 0, 1000);
  return {
    ...(restartBackoffMs !== undefined ? { restartBackoffMs } : {}),
    ...(maxRestarts !== undefined ? { maxRestarts } : {}),
    controllerUrl,
    instanceId: text('DROVER_INSTANCE_ID'),
    epoch: int('DROVER_EPOCH', 0, Number.MAX_SAFE_INTEGER),
    workdir: text('DROVER_WORKDIR'),
    ip: env.DROVER_IP?.trim() || '127.0.0.1',
    port: int('DROVER_PORT', 1, 65535),
  };
}

export async function main(env: NodeJS.ProcessEnv = process.env): Promise<number> {
  // Synchronous: the last lines before an exit (or a crash) are the ones worth having.
  const logger = pino({ name: 'drover-agent' }, pino.destination({ sync: true }));
  let options: AgentOptions;
  try {
    const fromEnv = agentOptionsFromEnv(env);
    const secrets = await readSecrets(process.stdin);
    const transportUrl = secrets.transportUrl;
    options = {
      ...fromEnv,
      key: secrets.key,
      logger,
      ...(transportUrl ? { transport: (common) => new AmqpAgentTransport({ ...common, url: transportUrl }) } : {}),
    };
  } catch (err) {
    if (!(err instanceof AgentEnvError)) throw err;
    logger.fatal({ variable: err.variable }, err.message);
    process.stderr.write(`drover agent: ${err.message}\n`);
    return 2;
  }
  const agent = new Agent(options);
  const onSignal = (signal: NodeJS.Signals): void => {
    logger.info({ signal }, 'signal received; stopping the role');
    void agent.shutdown(`agent received ${signal}`);
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  const exit = await agent.run();
  return exit.reason === 'refused' ? 3 : 0;
}

function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return import.meta.url === pathToFileURL(realpathSync(script)).href;
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
