/**
 * One controller per data folder. The lock is a Unix socket bound in Linux's abstract
 * namespace: binding is atomic, and the kernel frees the name when the holder dies, kill -9
 * included (no stale lock file to clean up, no pid to trust). libuv opens sockets close-on-exec,
 * so agents spawned by the controller do not inherit it.
 *
 * The name is `\0drover-lock-<sha256 of the folder's real path and a key>`; the key is a random
 * value kept in `<dataDir>/lock-id` (0600), so another local user cannot compute the name and
 * squat it. The holder answers whoever connects with who it is (pid, url, start time), which
 * is how a refused controller and `drover down --force` learn it.
 *
 * Abstract names belong to a network namespace: two controllers in different namespaces do not
 * see each other's lock. Elsewhere than Linux a socket file in the data folder stands in,
 * removed when it is found dead (nobody answers).
 */
import { createHash, randomBytes } from 'node:crypto';
import { linkSync, readFileSync, realpathSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { join } from 'node:path';

export interface LockHolder {
  readonly pid: number;
  /** Empty until the holder listens. */
  readonly url: string;
  readonly startedAt: string;
}

export interface DataDirLock {
  /** What the holder tells whoever asks. */
  setUrl(url: string): void;
  release(): Promise<void>;
}

export class LockHeldError extends Error {
  override readonly name = 'LockHeldError';
  constructor(
    readonly dataDir: string,
    readonly holder: LockHolder | undefined,
  ) {
    super(
      holder
        ? `another controller (pid ${holder.pid}${holder.url ? `, ${holder.url}` : ', starting'}) holds ${dataDir}`
        : `another controller holds ${dataDir}`,
    );
  }
}

const LINUX = process.platform === 'linux';

/** The key that makes the lock's name secret to whoever can read the data folder. */
function lockKey(dataDir: string): string {
  const file = join(dataDir, 'lock-id');
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    // First start: write to a private temporary name, then link (atomic, fails if another
    // controller made it first) so nobody reads a half-written key.
    const tmp = join(dataDir, `.lock-id.${process.pid}.${randomBytes(4).toString('hex')}`);
    writeFileSync(tmp, randomBytes(16).toString('hex') + '\n', { mode: 0o600 });
    try {
      linkSync(tmp, file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    } finally {
      rmSync(tmp, { force: true });
    }
    return readFileSync(file, 'utf8').trim();
  }
}

function lockAddress(dataDir: string, create: boolean): string | undefined {
  const real = realpathSync(dataDir);
  if (!LINUX) return join(real, 'controller.lock');
  let key: string;
  try {
    key = create ? lockKey(real) : readFileSync(join(real, 'lock-id'), 'utf8').trim();
  } catch {
    return undefined; // no key yet: no controller ever locked this folder
  }
  const hash = createHash('sha256').update(real).update('\0').update(key).digest('hex');
  return `\0drover-lock-${hash}`;
}

/** Who holds the lock of `dataDir`, or undefined if nobody does. */
export async function lockHolder(dataDir: string, timeoutMs = 2000): Promise<LockHolder | undefined> {
  const address = lockAddress(dataDir, false);
  if (address === undefined) return undefined;
  return ask(address, timeoutMs).then(
    (h) => h,
    () => undefined,
  );
}

/** Connects to the holder; rejects if nobody listens (the lock is free). */
function ask(address: string, timeoutMs: number): Promise<LockHolder> {
  return new Promise((resolve, reject) => {
    const sock = connect(address);
    let data = '';
    const timer = setTimeout(() => sock.destroy(new Error('the lock holder did not answer')), timeoutMs);
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => (data += d));
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    sock.on('end', () => {
      clearTimeout(timer);
      try {
        const v = JSON.parse(data) as Partial<LockHolder>;
        resolve({ pid: Number(v.pid), url: String(v.url ?? ''), startedAt: String(v.startedAt ?? '') });
      } catch {
        // Held (something listens) but not by a drover that answers: still held.
        resolve({ pid: NaN, url: '', startedAt: '' });
      }
    });
  });
}

function listen(server: Server, address: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    server.listen(address, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/** Takes the data folder's lock, or throws {@link LockHeldError} naming the holder. */
export async function acquireLock(dataDir: string): Promise<DataDirLock> {
  const address = lockAddress(dataDir, true)!;
  const info = { pid: process.pid, url: '', startedAt: new Date().toISOString() };
  const server = createServer((sock) => {
    sock.on('error', () => undefined);
    sock.end(JSON.stringify(info));
  });
  server.on('error', () => undefined);
  try {
    await listen(server, address);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    const holder = await ask(address, 2000).catch(() => undefined);
    if (holder || LINUX) throw new LockHeldError(dataDir, holder && Number.isFinite(holder.pid) ? holder : undefined);
    // A socket file nobody answers on: its controller died. Take it over.
    unlinkSync(address);
    await listen(server, address);
  }
  server.unref();
  let released: Promise<void> | undefined;
  return {
    setUrl: (url) => void (info.url = url),
    release: () =>
      (released ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
      })),
  };
}
