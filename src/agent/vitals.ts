/**
 * Vitals: what the host and the role's process tree use. CPU figures are rates between two
 * samples, so the first sample of anything reports 0 for it.
 */
import os from 'node:os';
import type { Vitals } from '../core/index.js';
import { groupMembers, readEstablished, readRssPages } from './procfs.js';

export interface VitalsOptions {
  /** @default '/proc' */
  readonly procRoot?: string;
  /** Bytes per page of /proc/<pid>/statm. @default 4096 */
  readonly pageSize?: number;
  /** Clock ticks per second of /proc/<pid>/stat times (USER_HZ, 100 on Linux). @default 100 */
  readonly clockTicks?: number;
  /** @default Date.now */
  readonly now?: () => number;
  /**
   * Samples closer together than this return the previous sample: CPU time comes in 10ms ticks,
   * so a rate over a few milliseconds would be noise (one tick in 1ms reads as 10 cores).
   * @default 1000
   */
  readonly minIntervalMs?: number;
}

interface CpuTimes {
  readonly busy: number;
  readonly total: number;
}

export class VitalsSampler {
  readonly #procRoot: string;
  readonly #pageSize: number;
  readonly #hz: number;
  readonly #now: () => number;
  readonly #minIntervalMs: number;
  #last?: { readonly vitals: Vitals; readonly pgid: number | undefined };
  #host?: CpuTimes;
  #role?: { readonly pgid: number; readonly at: number; readonly ticks: Map<string, number> };

  constructor(opts: VitalsOptions = {}) {
    this.#procRoot = opts.procRoot ?? '/proc';
    this.#pageSize = opts.pageSize ?? 4096;
    this.#hz = opts.clockTicks ?? 100;
    this.#now = opts.now ?? Date.now;
    this.#minIntervalMs = opts.minIntervalMs ?? 1000;
  }

  /**
   * Samples the host, and the process group `rolePgid` if given and /proc can be read; with
   * `rolePort`, also the connections established to that port.
   */
  sample(rolePgid?: number, rolePort?: number): Vitals {
    const at = this.#now();
    const last = this.#last;
    if (last && last.pgid === rolePgid && at - last.vitals.at < this.#minIntervalMs) return last.vitals;
    const [l1 = 0, l5 = 0, l15 = 0] = os.loadavg();
    const total = os.totalmem();
    const vitals: Vitals = {
      at,
      loadavg: [l1, l5, l15],
      cpu: this.#hostCpu(),
      memUsedBytes: total - os.freemem(),
      memTotalBytes: total,
    };
    const usage = rolePgid === undefined ? undefined : this.#roleUsage(rolePgid, at);
    const connections = usage && rolePort !== undefined ? readEstablished(rolePort, this.#procRoot) : undefined;
    const role = usage && connections !== undefined ? { ...usage, connections } : usage;
    const out = role ? { ...vitals, role } : vitals;
    this.#last = { vitals: out, pgid: rolePgid };
    return out;
  }

  #hostCpu(): number {
    let busy = 0;
    let total = 0;
    for (const { times } of os.cpus()) {
      const t = times.user + times.nice + times.sys + times.idle + times.irq;
      total += t;
      busy += t - times.idle;
    }
    const prev = this.#host;
    this.#host = { busy, total };
    if (!prev || total <= prev.total) return 0;
    return clamp01((busy - prev.busy) / (total - prev.total));
  }

  #roleUsage(pgid: number, at: number): Vitals['role'] {
    const members = groupMembers(pgid, this.#procRoot);
    if (!members) return undefined;
    const prev = this.#role?.pgid === pgid ? this.#role : undefined;
    const ticks = new Map<string, number>();
    let deltaTicks = 0;
    let rssPages = 0;
    for (const p of members) {
      // pid + start time: a reused pid is a different process.
      const key = `${p.pid}:${p.startTime}`;
      ticks.set(key, p.cpuTicks);
      // A process born since the last sample spent all its ticks within the interval.
      deltaTicks += p.cpuTicks - (prev?.ticks.get(key) ?? 0);
      rssPages += readRssPages(p.pid, this.#procRoot) ?? 0;
    }
    this.#role = { pgid, at, ticks };
    const seconds = prev ? (at - prev.at) / 1000 : 0;
    const cpu = seconds > 0 ? Math.max(0, deltaTicks / this.#hz / seconds) : 0;
    return { cpu, rssBytes: rssPages * this.#pageSize, pids: members.length };
  }
}

function clamp01(x: number): number {
  return Math.min(1, Math.max(0, x));
}
