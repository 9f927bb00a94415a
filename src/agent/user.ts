/**
 * `user:` of a role: the Unix account its commands run as. The agent must run as root to switch;
 * a role may always run as the agent's own user.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';

export interface RunAs {
  readonly user: string;
  readonly uid: number;
  readonly gid: number;
}

/** Looks a user up (a name in the passwd database, or a numeric uid); throws with a sentence naming the problem. */
export function resolveUser(user: string): RunAs {
  let line: string;
  try {
    // No shell: the name is an argument, never shell text.
    line = execFileSync('getent', ['passwd', user], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] }).split('\n')[0] ?? '';
  } catch {
    if (/^\d+$/.test(user)) return { user, uid: Number(user), gid: Number(user) };
    throw new Error(`user "${user}" does not exist on this host`);
  }
  const f = line.split(':');
  const uid = Number(f[2]);
  const gid = Number(f[3]);
  if (!Number.isSafeInteger(uid) || !Number.isSafeInteger(gid)) throw new Error(`user "${user}" has a malformed passwd entry`);
  return { user: f[0] ?? user, uid, gid };
}

/** Whether this process can run commands as `to`. */
export function canSwitchTo(to: RunAs): boolean {
  const me = process.getuid?.();
  return me === 0 || me === to.uid;
}

/**
 * Makes the role's own folder, private to its user. The folders above it stay the agent's, and
 * become traversable by others (`x`, never `r`: nothing in them can be listed, and their files
 * stay 0600) so the role's user can reach its folder.
 */
export function makeRoleHome(dir: string, as: RunAs): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chownSync(dir, as.uid, as.gid);
  const me = process.getuid?.();
  for (let d = dirname(dir); d !== dirname(d); d = dirname(d)) {
    const st = statSync(d);
    if ((st.mode & 0o001) !== 0) break;
    if (st.uid !== me) break;
    chmodSync(d, (st.mode & 0o7777) | 0o001);
  }
}
