/**
 * Pure parts of the haproxy driver: the version check, the base configuration and the server
 * arguments. Members and the host map never appear in the file: they change at run time
 * through the runtime API, so the file is written once per HAProxy process.
 */
import type { CompiledLbOptions, ParsedAddress } from './types.js';

/**
 * 2.6 is the first long-term-supported release where dynamic servers (`add server`/`del
 * server`) are out of experimental mode and take health-check keywords; 2.4's need
 * experimental mode and have no checks, and 2.5 is a short-lived branch.
 */
export const HAPROXY_MIN_VERSION = { major: 2, minor: 6 } as const;

export interface HaproxyVersion {
  readonly major: number;
  readonly minor: number;
  readonly patch: number;
  /** As printed, e.g. `2.6.12-1+deb12u4`. */
  readonly text: string;
}

/** Reads the version from `haproxy -v` output ("HAProxy version 2.6.12-1 …", or "HA-Proxy version 1.8.19 …" before 1.9). */
export function parseHaproxyVersion(output: string): HaproxyVersion | undefined {
  const m = /HA-?Proxy version (\d+)\.(\d+)(?:\.(\d+))?(\S*)/i.exec(output);
  if (!m) return undefined;
  return { major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3] ?? 0), text: `${m[1]}.${m[2]}${m[3] !== undefined ? `.${m[3]}` : ''}${m[4] ?? ''}` };
}

export function isSupportedVersion(v: HaproxyVersion): boolean {
  return v.major > HAPROXY_MIN_VERSION.major || (v.major === HAPROXY_MIN_VERSION.major && v.minor >= HAPROXY_MIN_VERSION.minor);
}

export const BACKEND = 'members';

export interface ConfigPaths {
  readonly socket: string;
  readonly mapFile: string;
}

function bindAddress(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

export function renderConfig(opts: CompiledLbOptions, port: number, paths: ConfigPaths): string {
  const hostKey = `req.hdr(host),host_only,map(${paths.mapFile})`;
  const lines = [
    '# Written by drover (haproxy load-balancer driver). Members and the host map change at run',
    '# time through the runtime API on the socket below; editing this file changes nothing.',
    'global',
    `  stats socket ${paths.socket} mode 600 level admin`,
    '  stats timeout 30s',
    '  maxconn 4096',
    '',
    'defaults',
    '  mode http',
    `  timeout connect ${opts.connectTimeoutMs}ms`,
    '  timeout client 60s',
    '  timeout server 60s',
    '  timeout http-keep-alive 10s',
    '  timeout tunnel 1h',
    '  timeout queue 5s',
    // A refused connection is retried on another member at once, not on the same one.
    '  retries 3',
    '  option redispatch 1',
    '  retry-on conn-failure empty-response',
    '',
    'frontend drover',
    `  bind ${bindAddress(opts.listen.host, port)}`,
    '  option forwardfor',
    // Ours to set: a client's own values would let it forge where a request came from.
    '  http-request set-header X-Forwarded-Proto http',
    '  http-request del-header X-Forwarded-Host',
    '  http-request set-header X-Forwarded-Host %[req.hdr(host)] if { req.hdr(host) -m found }',
    `  default_backend ${BACKEND}`,
    '',
    `backend ${BACKEND}`,
    `  balance ${opts.balance}`,
    // A member that received the request may have acted on it: replay only what is safe to repeat.
    '  http-request disable-l7-retry unless { method GET HEAD OPTIONS PUT DELETE TRACE }',
    // The map holds server names of ready members only (the driver filters it): use-server would
    // otherwise still send to a draining server, which HAProxy counts as up.
    `  use-server %[${hostKey}] if { ${hostKey} -m found }`,
  ];
  if (opts.healthCheck?.path !== undefined) {
    lines.push(`  option httpchk GET ${opts.healthCheck.path}`, '  http-check expect status 200-399');
  }
  if (opts.healthCheck) lines.push(`  timeout check ${opts.healthCheck.timeoutMs}ms`);
  return lines.join('\n') + '\n';
}

export function serverAddress(a: ParsedAddress): string {
  return a.family === 6 ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/**
 * Health keywords of every member. Passive health is `observe layer4` + `on-error mark-down`,
 * which HAProxy allows only with `check`; the probe then brings an ejected member back: it runs
 * every `downinter` (= ejectForMs) while the member is down, and one pass (`rise 1`) restores it.
 * Without configured health checks the probe is a TCP connect at the same slow pace.
 */
export function serverArgs(opts: CompiledLbOptions): string {
  const hc = opts.healthCheck;
  const inter = hc?.intervalMs ?? opts.ejectForMs;
  const fall = hc?.failureThreshold ?? 3;
  return [
    'check',
    `inter ${inter}ms`,
    `downinter ${opts.ejectForMs}ms`,
    'rise 1',
    `fall ${fall}`,
    'observe layer4',
    `error-limit ${opts.ejectAfterFailures}`,
    'on-error mark-down',
  ].join(' ');
}

/** HAProxy server names allow letters, digits, `-`, `_`, `.` and `:`. */
export function serverNameFor(id: string, taken: (name: string) => boolean): string {
  const base = id.replace(/[^A-Za-z0-9_.:-]/g, '_').slice(0, 60) || 'member';
  if (!taken(base)) return base;
  for (let n = 2; ; n++) {
    const name = `${base}_${n}`;
    if (!taken(name)) return name;
  }
}

/** One server row of `show stat` (CSV), by column name. */
export interface ServerStatRow {
  readonly name: string;
  readonly status: string;
  readonly scur: number;
  readonly qcur: number;
  readonly stot: number;
  readonly failures: number;
}

export function parseShowStat(csv: string, backend: string): ServerStatRow[] {
  const lines = csv.split('\n').filter((l) => l.length > 0);
  const header = lines.shift()?.replace(/^# /, '').split(',');
  if (!header) return [];
  const col = (name: string) => header.indexOf(name);
  const [px, sv, st, scur, qcur, stot, econ, eresp, wretr, wredis] = ['pxname', 'svname', 'status', 'scur', 'qcur', 'stot', 'econ', 'eresp', 'wretr', 'wredis'].map(col) as [
    number, number, number, number, number, number, number, number, number, number,
  ];
  const num = (cells: string[], i: number) => Number(cells[i] || 0);
  const out: ServerStatRow[] = [];
  for (const line of lines) {
    const c = line.split(',');
    if (c[px] !== backend || c[sv] === 'BACKEND' || c[sv] === 'FRONTEND') continue;
    out.push({
      name: c[sv]!,
      status: c[st] ?? '',
      scur: num(c, scur),
      qcur: num(c, qcur),
      stot: num(c, stot),
      // A refused connection shows as a retry or redispatch when another member took the request.
      failures: num(c, econ) + num(c, eresp) + num(c, wretr) + num(c, wredis),
    });
  }
  return out;
}
