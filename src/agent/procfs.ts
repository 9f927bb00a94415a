/**
 * Process groups, seen through Linux /proc. A role's command runs in its own process group
 * (pgid = the pid of its `bash`), so "the role's process tree" is "every live process of that
 * group", even after bash itself has exited and its children were re-parented.
 */
import { readdirSync, readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export interface ProcStat {
  readonly pid: number;
  /** One letter: R, S, D, Z, T, ... */
  readonly state: string;
  readonly pgrp: number;
  /** utime + stime, in clock ticks. */
  readonly cpuTicks: number;
  /** Start time after boot in clock ticks; with pid, tells a process from a reused pid. */
  readonly startTime: number;
}

/** Parses /proc/<pid>/stat text; undefined if it does not look like one. */
export function parseStat(text: string): ProcStat | undefined {
  // The command name is in parentheses and may itself contain spaces and parentheses.
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return undefined;
  const pid = Number(text.slice(0, open).trim());
  // Fields after the name start at field 3 (state); field n is at index n - 3.
  const f = text.slice(close + 2).split(' ');
  const state = f[0];
  const pgrp = Number(f[2]);
  const utime = Number(f[11]);
  const stime = Number(f[12]);
  const startTime = Number(f[19]);
  if (!state || ![pid, pgrp, utime, stime, startTime].every(Number.isFinite)) return undefined;
  return { pid, state, pgrp, cpuTicks: utime + stime, startTime };
}

export function readStat(pid: number, procRoot = '/proc'): ProcStat | undefined {
  try {
    return parseStat(readFileSync(`${procRoot}/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}

/** Resident set size in pages, from /proc/<pid>/statm. */
export function readRssPages(pid: number, procRoot = '/proc'): number | undefined {
  try {
    const pages = Number(readFileSync(`${procRoot}/${pid}/statm`, 'utf8').split(' ')[1]);
    return Number.isFinite(pages) ? pages : undefined;
  } catch {
    return undefined;
  }
}

/** The environment a process was started with, as `NAME=value` strings (own user's processes only). */
export function readEnviron(pid: number, procRoot = '/proc'): string[] | undefined {
  try {
    return readFileSync(`${procRoot}/${pid}/environ`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return undefined;
  }
}

/** Whether /proc is there to read at all (not on macOS, not in some sandboxes). */
export function hasProcfs(procRoot = '/proc'): boolean {
  return readStat(process.pid, procRoot) !== undefined;
}

/**
 * Live members of process group `pgid`. Zombies are left out: here PID 1 may not reap orphans,
 * and a zombie holds no resources the role cares about. Undefined when /proc is unavailable.
 */
export function groupMembers(pgid: number, procRoot = '/proc'): ProcStat[] | undefined {
  let names: string[];
  try {
    names = readdirSync(procRoot);
  } catch {
    return undefined;
  }
  const out: ProcStat[] = [];
  for (const name of names) {
    const c = name.charCodeAt(0);
    if (c < 48 || c > 57) continue;
    const st = readStat(Number(name), procRoot);
    if (st && st.pgrp === pgid && st.state !== 'Z' && st.state !== 'X') out.push(st);
  }
  return out;
}

/** Whether any live process remains in group `pgid`. */
export function groupAlive(pgid: number): boolean {
  const members = groupMembers(pgid);
  if (members) return members.length > 0;
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Sends `signal` to every process of group `pgid`; false if the group is already gone. */
export function killGroup(pgid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch {
    return false;
  }
}

/** Polls until group `pgid` has no live member or `timeoutMs` passes; true if it is gone. */
export async function waitGroupGone(pgid: number, timeoutMs: number, pollMs = 25): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!groupAlive(pgid)) return true;
    if (Date.now() >= deadline) return false;
    await sleep(pollMs);
  }
}

/**
 * Ends group `pgid`: SIGTERM, then SIGKILL if anything is still alive after `graceMs`.
 * Resolves once the group is gone (or, if even SIGKILL did not clear it, after a last wait).
 */
export async function terminateGroup(pgid: number, graceMs: number): Promise<void> {
  if (graceMs > 0 && killGroup(pgid, 'SIGTERM') && (await waitGroupGone(pgid, graceMs))) return;
  killGroup(pgid, 'SIGKILL');
  await waitGroupGone(pgid, 2000);
}

/** The `st` column of /proc/net/tcp for an established connection. */
const TCP_ESTABLISHED = '01';

/**
 * Local ports of the agent's own open connections to its role (health probes, metric scrapes).
 * They are not the role's in-flight work: counted, they would hold up a drain and inflate the
 * role's `connections`. One set per process: ephemeral ports are unique across it.
 */
const agentClientPorts = new Set<number>();

/** Leaves `socket`, a connection the agent itself opens to its role, out of the established count. */
export function trackAgentSocket(socket: Socket): void {
  // net.connect to an IP address calls connect(2), which picks the local port, on the next tick;
  // its 'connect' event comes only when the loop next polls, by which time the role's side is
  // already established and could be counted. A tick of our own is in time: nothing that counts
  // connections runs between the two.
  process.nextTick(() => {
    const port = socket.localPort;
    if (port === undefined || socket.destroyed) return;
    agentClientPorts.add(port);
    socket.once('close', () => agentClientPorts.delete(port));
  });
}

/**
 * Counts the established connections whose local port is `port` in the text of /proc/net/tcp
 * or /proc/net/tcp6: the server side of every connection to a role listening on that port
 * (the client side of a loopback connection has the port as its remote end, so it is not
 * counted twice). Connections from a remote port in `ignore` are left out.
 */
export function countEstablished(text: string, port: number, ignore: ReadonlySet<number> = new Set()): number {
  let n = 0;
  for (const line of text.split('\n')) {
    // "  0: 0100007F:1F90 0100007F:C350 01 ..." — IPv6 addresses are 32 hex digits, same shape.
    const f = line.trim().split(/\s+/);
    if (f[3] !== TCP_ESTABLISHED) continue;
    const local = hexPort(f[1]);
    if (local === port && !ignore.has(hexPort(f[2]) ?? -1)) n += 1;
  }
  return n;
}

function hexPort(address: string | undefined): number | undefined {
  const hex = address?.slice(address.lastIndexOf(':') + 1);
  return hex && /^[0-9A-Fa-f]{4}$/.test(hex) ? parseInt(hex, 16) : undefined;
}

/**
 * Established TCP connections to local port `port`, IPv4 and IPv6 (a dual-stack listener's
 * IPv4 clients show up in tcp6), leaving out the agent's own ({@link trackAgentSocket}).
 * Undefined when neither table can be read: no way to tell.
 */
export function readEstablished(port: number, procRoot = '/proc'): number | undefined {
  let seen = false;
  let n = 0;
  for (const table of ['tcp', 'tcp6']) {
    try {
      n += countEstablished(readFileSync(`${procRoot}/net/${table}`, 'utf8'), port, agentClientPorts);
      seen = true;
    } catch {
      // A kernel without IPv6 has no tcp6; the other table still counts.
    }
  }
  return seen ? n : undefined;
}
