/**
 * Separate hosts on this machine for the fleet tests: Linux network namespaces, each with its
 * own address on a private test range (10.231.X.0/24), joined by veth pairs to a bridge in the
 * root namespace, which holds `.1` (where a controller listens). Needs root and iproute2.
 *
 * Names carry the test process's pid (`drv<pid>-…`), so a sweep at start removes what an earlier,
 * killed run left; `t.after` removes everything (the processes still inside a namespace killed
 * first), also when the test fails. A test with a controller in its own process closes it before
 * this clean-up runs (registers its own `t.after` first): connections to a namespace already
 * removed make the controller's close wait 30 s. Where namespaces
 * cannot be made, {@link netnsUnavailable} says why: a suite fails with it under CI=true and
 * skips otherwise.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import type { TestContext } from 'node:test';

export interface Host {
  readonly name: string;
  /** The namespace's address on the bridge. */
  readonly ip: string;
  /** The veth end inside the namespace (link down = the host is cut off). */
  readonly dev: string;
  /** Runs argv inside the namespace (no shell). */
  spawn(argv: readonly string[], opts?: { env?: NodeJS.ProcessEnv; cwd?: string }): ChildProcess;
  /** Cuts the host off the network (its link down) or heals it. */
  partition(): void;
  heal(): void;
}

export interface Network {
  readonly bridgeIp: string;
  readonly hosts: readonly Host[];
}

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Why namespaces cannot be made here, or undefined when they can. */
export function netnsUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'network namespaces need root (ip netns add)';
  try {
    ip('-V');
  } catch {
    return 'iproute2 (`ip`) is not installed';
  }
  return undefined;
}

/** Prefix of every name a test process makes. */
const prefix = (pid: number) => `drv${pid}`;

/** Kills every process inside namespace `ns` and waits (up to 2 s) until they are gone. */
function killInside(ns: string): void {
  let pids: number[] = [];
  try {
    pids = ip('netns', 'pids', ns).split('\n').filter(Boolean).map(Number);
  } catch {
    return;
  }
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  const deadline = Date.now() + 2000;
  while (Date.now() < deadline && pids.some((pid) => existsSync(`/proc/${pid}`) && !zombie(pid))) execFileSync('sleep', ['0.05']);
}

function zombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
  } catch {
    return true;
  }
}

/** This prefix's namespaces. */
function namespaces(pfx: string): string[] {
  return ip('netns', 'list').split('\n').map((line) => line.split(' ')[0] ?? '').filter((name) => name.startsWith(pfx));
}

/**
 * Removes namespaces and links with this prefix (leftovers of a killed run of the same pid, or of
 * ours). The processes still inside a namespace are killed first: `ip netns del` only removes
 * the name, and they would live on in a namespace nobody can name.
 */
export function sweep(pfx: string): void {
  for (const name of namespaces(pfx)) {
    killInside(name);
    try {
      ip('netns', 'del', name);
    } catch {
      // already gone
    }
  }
  for (const line of ip('-o', 'link', 'show').split('\n')) {
    const name = /^\d+: ([^:@]+)/.exec(line)?.[1];
    if (name?.startsWith(pfx)) {
      try {
        ip('link', 'del', name);
      } catch {
        // went with its peer
      }
    }
  }
}

/** Removes what killed runs left (any `drv<pid>` whose process is gone). */
function sweepDead(): void {
  const pids = new Set<number>();
  for (const line of [...ip('netns', 'list').split('\n'), ...ip('-o', 'link', 'show').split('\n').map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1] ?? '')]) {
    const m = /^drv(\d+)/.exec(line.split(' ')[0] ?? '');
    if (m) pids.add(Number(m[1]));
  }
  for (const pid of pids) {
    let alive = true;
    try {
      process.kill(pid, 0);
    } catch {
      alive = false;
    }
    if (!alive || pid === process.pid) sweep(prefix(pid));
  }
}

/** A /24 of 10.231.0.0/16 that no interface uses. */
function freeSubnet(): number {
  const used = ip('-o', 'addr', 'show');
  for (let k = 0; k < 250; k++) {
    const x = ((process.pid + k) % 230) + 20;
    if (!used.includes(`10.231.${x}.`)) return x;
  }
  throw new Error('no free /24 in 10.231.0.0/16');
}

/** Makes `n` hosts and the bridge between them; all removed after the test. */
export function makeNetwork(t: TestContext, n: number): Network {
  sweepDead();
  const pfx = prefix(process.pid);
  const x = freeSubnet();
  const bridge = `${pfx}b`;
  const bridgeIp = `10.231.${x}.1`;
  t.after(() => sweep(pfx));
  ip('link', 'add', bridge, 'type', 'bridge');
  ip('addr', 'add', `${bridgeIp}/24`, 'dev', bridge);
  ip('link', 'set', bridge, 'up');
  const hosts: Host[] = [];
  for (let i = 0; i < n; i++) {
    const ns = `${pfx}-h${i}`;
    const outer = `${pfx}r${i}`;
    const inner = `${pfx}n${i}`;
    const addr = `10.231.${x}.${i + 2}`;
    ip('netns', 'add', ns);
    ip('link', 'add', outer, 'type', 'veth', 'peer', 'name', inner);
    ip('link', 'set', inner, 'netns', ns);
    ip('link', 'set', outer, 'master', bridge, 'up');
    ip('-n', ns, 'addr', 'add', `${addr}/24`, 'dev', inner);
    ip('-n', ns, 'link', 'set', inner, 'up');
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    hosts.push({
      name: ns, ip: addr, dev: inner,
      spawn: (argv, opts = {}) => spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'], detached: true, ...opts }),
      partition: () => void ip('-n', ns, 'link', 'set', inner, 'down'),
      heal: () => {
        ip('-n', ns, 'link', 'set', inner, 'up');
      },
    });
  }
  return { bridgeIp, hosts };
}
