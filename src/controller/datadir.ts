/**
 * The data folder is private: the store (instance keys, join tokens), the API token and the
 * instance folders live there. Everything in it is created 0700/0600 (umask 077), and a
 * controller refuses a folder that another user owns or could write to, since whoever can
 * write there can swap the token, the store or an instance's files.
 */
import { chmodSync, existsSync, mkdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';

/** Why a controller could not start; `message` is meant for a person and says what to do. */
export type StartErrorCode = 'data-dir-unsafe' | 'data-dir-locked' | 'store-unreadable' | 'port-in-use' | 'listen-failed' | 'bad-setting';

export class ControllerStartError extends Error {
  override readonly name = 'ControllerStartError';
  constructor(
    readonly code: StartErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** What a data folder may hold, checked before the controller trusts any of it. */
const CHECKED_CHILDREN = ['db', 'token', 'instances', 'controller.json', 'lock-id'] as const;

const octal = (mode: number) => '0' + (mode & 0o777).toString(8).padStart(3, '0');

function writableBy(mode: number): string | undefined {
  const g = (mode & 0o020) !== 0;
  const o = (mode & 0o002) !== 0;
  return g && o ? 'group and others' : g ? 'group' : o ? 'others' : undefined;
}

/**
 * Makes private what this process creates from now on. Set before the store opens: the store
 * and the agents (which inherit the mask) then create 0600 files and 0700 folders.
 */
export function privateUmask(): void {
  process.umask(0o077);
}

/**
 * Creates the data folder (0700) if needed and checks it and its existing children: refused
 * if owned by another user or writable by group/others. A folder or file that others may only
 * read (made by an older drover) is made private on the spot: nobody else can have changed it.
 * Returns the absolute path.
 */
export function preparePrivateDataDir(dataDir: string): string {
  privateUmask();
  const dir = resolve(dataDir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  checkPrivate(dir, dir, true);
  for (const name of CHECKED_CHILDREN) {
    const p = join(dir, name);
    if (existsSync(p)) checkPrivate(p, dir, false);
  }
  return dir;
}

function checkPrivate(path: string, dataDir: string, isRoot: boolean): void {
  const st = statSync(path);
  const what = isRoot ? `data folder ${path}` : `${path} (in data folder ${dataDir})`;
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw new ControllerStartError(
      'data-dir-unsafe',
      `${what} is owned by uid ${st.uid}, not by this user (uid ${uid}); run the controller as its owner, or use another --data-dir`,
    );
  }
  const w = writableBy(st.mode);
  if (w) {
    throw new ControllerStartError(
      'data-dir-unsafe',
      `${what} is mode ${octal(st.mode)} (writable by ${w}); run chmod ${st.isDirectory() ? '700' : '600'} ${path}`,
    );
  }
  if ((st.mode & 0o077) !== 0) chmodSync(path, st.mode & 0o7700);
}
