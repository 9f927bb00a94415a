/**
 * An agent's link to the port keeper of one `listen:` port (port-keeper.ts): finds the keeper by
 * its Unix socket, spawns it when none runs, joins it with the member's own port, and says when
 * the member is in rotation. If the keeper goes away, the link reconnects (spawning it again).
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

export interface PortLinkOptions {
  /** Folder of the host's keepers (`<data-dir>/ports`), 0700. */
  readonly dir: string;
  readonly ip: string;
  /** The fixed port. */
  readonly port: number;
  readonly app: string;
  readonly role: string;
  readonly instance: string;
  /** `ip:port` of this member's own port. */
  readonly backend: string;
  readonly log: (msg: string) => void;
  /** The keeper's settings when this link spawns it. */
  readonly idleExitMs?: number;
  readonly holdMs?: number;
  /** Give up opening after this long. @default 10000 */
  readonly openTimeoutMs?: number;
}

/** Refused by the keeper, or the port is held by another program: the role cannot listen. */
export class PortLinkError extends Error {
  override readonly name = 'PortLinkError';
}

function keeperCommand(): { file: string; execArgv: string[] } {
  const here = fileURLToPath(import.meta.url);
  const ext = here.endsWith('.ts') ? '.ts' : '.js';
  return { file: fileURLToPath(new URL(`./port-keeper-main${ext}`, import.meta.url)), execArgv: ext === '.ts' ? ['--import', import.meta.resolve('tsx')] : [] };
}

export class PortLink {
  readonly #o: PortLinkOptions;
  #socket?: Socket;
  #serving = false;
  #closed = false;
  #reopening?: Promise<void>;

  constructor(options: PortLinkOptions) {
    this.#o = options;
  }

  get socketPath(): string {
    return join(this.#o.dir, `${this.#o.port}.sock`);
  }

  /** Joins the keeper (spawning it if needed). Throws {@link PortLinkError} when it cannot. */
  async open(): Promise<void> {
    const deadline = Date.now() + (this.#o.openTimeoutMs ?? 10_000);
    let spawned: { code: number | null; takenAt?: number } | undefined;
    for (;;) {
      if (this.#closed) return;
      const s = await this.#connect();
      if (s) {
        await this.#join(s);
        return;
      }
      // Taken: by another program, or by a keeper another agent started at the same moment, whose
      // socket appears shortly.
      if (spawned?.code === 3) {
        spawned.takenAt ??= Date.now();
        if (Date.now() - spawned.takenAt > 1000) throw new PortLinkError(`port ${this.#o.port} on ${this.#o.ip} is in use by another program`);
        await sleep(50);
        continue;
      }
      if (spawned?.code !== undefined && spawned.code !== null && spawned.code !== 0) {
        throw new PortLinkError(`the port keeper of ${this.#o.port} exited with code ${spawned.code} (see ${join(this.#o.dir, `${this.#o.port}.log`)})`);
      }
      if (!spawned || spawned.code === 0) spawned = this.#spawn();
      if (Date.now() > deadline) throw new PortLinkError(`no port keeper answered on ${this.socketPath} within ${this.#o.openTimeoutMs ?? 10_000} ms`);
      await sleep(50);
    }
  }

  /** In rotation (true) or not; re-sent after a reconnect. */
  setServing(serving: boolean): void {
    if (serving === this.#serving) return;
    this.#serving = serving;
    this.#socket?.write(`${JSON.stringify({ serving })}\n`);
  }

  close(): void {
    this.#closed = true;
    this.#socket?.end();
    this.#socket = undefined;
  }

  #connect(): Promise<Socket | undefined> {
    return new Promise((resolve) => {
      const s = connect(this.socketPath);
      s.once('connect', () => resolve(s));
      s.once('error', () => resolve(undefined));
    });
  }

  #spawn(): { code: number | null } {
    mkdirSync(this.#o.dir, { recursive: true, mode: 0o700 });
    const { file, execArgv } = keeperCommand();
    const log = openSync(join(this.#o.dir, `${this.#o.port}.log`), 'a', 0o600);
    const state: { code: number | null } = { code: null };
    try {
      // Its own session, no instance marker, nothing of the agent's environment but PATH: it
      // belongs to the host, not to the member that happened to start it.
      const child = spawn(
        process.execPath,
        [...execArgv, file, this.#o.ip, String(this.#o.port), this.socketPath, String(this.#o.idleExitMs ?? 5000), String(this.#o.holdMs ?? 10_000)],
        { detached: true, stdio: ['ignore', log, log], cwd: this.#o.dir, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } },
      );
      child.once('exit', (code) => (state.code = code ?? -1));
      child.once('error', () => (state.code = -1));
      child.unref();
      this.#o.log(`started the port keeper of ${this.#o.ip}:${this.#o.port} (pid ${child.pid})`);
    } finally {
      closeSync(log);
    }
    return state;
  }

  async #join(s: Socket): Promise<void> {
    const answer = await new Promise<{ ok: boolean; error?: string }>((resolve) => {
      let buf = '';
      s.setEncoding('utf8');
      const onData = (chunk: string) => {
        buf += chunk;
        const nl = buf.indexOf('\n');
        if (nl < 0) return;
        s.off('data', onData);
        try {
          resolve(JSON.parse(buf.slice(0, nl)) as { ok: boolean; error?: string });
        } catch {
          resolve({ ok: false, error: 'the port keeper answered something else than JSON' });
        }
      };
      s.on('data', onData);
      s.once('close', () => resolve({ ok: false, error: 'the port keeper closed the connection' }));
      s.write(`${JSON.stringify({ app: this.#o.app, role: this.#o.role, instance: this.#o.instance, backend: this.#o.backend })}\n`);
    });
    if (!answer.ok) {
      s.destroy();
      throw new PortLinkError(answer.error ?? 'refused by the port keeper');
    }
    this.#socket = s;
    if (this.#serving) s.write(`${JSON.stringify({ serving: true })}\n`);
    s.on('error', () => undefined);
    s.once('close', () => {
      if (this.#socket === s) this.#socket = undefined;
      if (!this.#closed) this.#reopen();
    });
  }

  /** The keeper went away (killed, crashed): join a new one, with the same rotation state. */
  #reopen(): void {
    if (this.#reopening) return;
    this.#reopening = (async () => {
      while (!this.#closed && !this.#socket) {
        try {
          await this.open();
        } catch (err) {
          this.#o.log(`port keeper of ${this.#o.port} unreachable: ${err instanceof Error ? err.message : String(err)}; retrying`);
          await sleep(1000);
        }
      }
    })().finally(() => (this.#reopening = undefined));
  }
}
