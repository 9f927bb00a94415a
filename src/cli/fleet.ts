/**
 * Fleet commands (docs/fleet.md): `drover token create|ls|revoke`, `drover nodes`, and
 * `drover agent --join URL` (a host joining an app's pool). The agent's code is loaded only
 * by `drover agent`.
 */
import { readFileSync } from 'node:fs';
import { InvalidArgumentError, type Command, type Option } from 'commander';
import { CliError, type Client } from './client.js';
import { ago, table } from './format.js';

export interface FleetCliHelpers {
  readonly dataDirOpt: () => Option;
  readonly clientFor: (dataDir: string) => Client;
  readonly out: (s: string) => void;
}

interface TokenJson {
  id: string;
  app: string;
  labels: Record<string, string>;
  uses: number;
  maxUses: number | null;
  expiresAt: string | null;
  revokedAt: string | null;
  createdAt: string;
  state: string;
  /** The cloud instance a token was made for (docs/cloud.md); null for `drover token create`'s. */
  instance?: string | null;
  token?: string;
}

interface NodeJson {
  id: string;
  app: string;
  hostname: string;
  addresses: string[];
  labels: Record<string, string>;
  state: string;
  instance: { id: string; role: string | null; state: string } | null;
  lastSeenAt: string;
}

/** `1h`, `30m`, `45s`, `2d` or a number of seconds. */
export function parseDuration(v: string): number {
  const m = /^(\d+)([smhd]?)$/.exec(v.trim());
  if (!m) throw new InvalidArgumentError('expected a duration like 30s, 15m, 1h or 2d');
  const n = Number(m[1]) * ({ '': 1, s: 1, m: 60, h: 3600, d: 86_400 } as const)[m[2] as '' | 's' | 'm' | 'h' | 'd'];
  if (n < 1 || n > 31_536_000) throw new InvalidArgumentError('expected a duration from 1s to 365d');
  return n;
}

/** `k=v,k2=v2` → labels, checked the way the controller checks them. */
export function parseLabels(v: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of v.split(',').map((x) => x.trim()).filter(Boolean)) {
    const m = /^([A-Za-z0-9_.-]{1,63})=([A-Za-z0-9_.:-]{0,63})$/.exec(part);
    if (!m) throw new InvalidArgumentError(`"${part}": expected key=value (letters, digits, _ . - ; values also :)`);
    out[m[1]!] = m[2]!;
  }
  if (Object.keys(out).length > 16) throw new InvalidArgumentError('at most 16 labels');
  return out;
}

/**
 * The join token: `--token-file`, then env DROVER_JOIN_TOKEN, then `--token` (visible in `ps`
 * for as long as the agent runs: prefer the other two).
 */
export function joinToken(o: { token?: string; tokenFile?: string }, env: NodeJS.ProcessEnv): string {
  let t: string | undefined;
  if (o.tokenFile) {
    try {
      t = readFileSync(o.tokenFile, 'utf8').trim();
    } catch (err) {
      throw new CliError(`--token-file ${o.tokenFile}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, 2);
    }
    if (!t) throw new CliError(`--token-file ${o.tokenFile}: the file is empty`, 2);
  } else t = env.DROVER_JOIN_TOKEN?.trim() || o.token?.trim();
  if (!t) throw new CliError('--join needs a join token: --token-file FILE, env DROVER_JOIN_TOKEN, or --token T (`drover token create` makes one)', 2);
  if (!/^drj\.[0-9a-f]{16}\.[A-Za-z0-9_-]{43}$/.test(t)) throw new CliError(`${o.tokenFile ? '--token-file' : env.DROVER_JOIN_TOKEN ? 'DROVER_JOIN_TOKEN' : '--token'}: not a join token (drj.<id>.<secret>)`, 2);
  return t;
}

export function registerFleetCommands(program: Command, h: FleetCliHelpers): void {
  const { dataDirOpt, clientFor, out } = h;
  const token = program.command('token').description('join tokens: let hosts join an app\'s pool (`drover agent --join`)');
  token
    .command('create')
    .description('make a join token (shown once; the controller keeps only its hash)')
    .requiredOption('--app <name>', 'the app whose pool nodes joining with it enter')
    .option('--ttl <duration>', 'valid for this long (30m, 1h, 2d)', parseDuration)
    .option('--uses <n>', 'at most this many joins', (v) => {
      if (!/^\d+$/.test(v) || Number(v) < 1) throw new InvalidArgumentError('expected a whole number of at least 1');
      return Number(v);
    })
    .option('--labels <k=v,...>', 'labels given to every node that joins with it (role=api: such nodes take only api)', parseLabels)
    .addOption(dataDirOpt())
    .option('--json', 'machine-readable output')
    .action(async (o: { app: string; ttl?: number; uses?: number; labels?: Record<string, string>; dataDir: string; json?: boolean }) => {
      const t = await clientFor(o.dataDir).request<TokenJson>('POST', '/v1/tokens', {
        app: o.app, ...(o.ttl !== undefined ? { ttlSeconds: o.ttl } : {}), ...(o.uses !== undefined ? { uses: o.uses } : {}), ...(o.labels ? { labels: o.labels } : {}),
      });
      if (o.json) return out(JSON.stringify(t, null, 2));
      out(t.token ?? '');
      process.stderr.write(`token ${t.id} for ${t.app}${t.expiresAt ? `, expires ${t.expiresAt}` : ''}${t.maxUses !== null ? `, ${t.maxUses} use(s)` : ''}; shown once. On a host: DROVER_JOIN_TOKEN=… drover agent --join URL\n`);
    });
  token
    .command('ls')
    .description('list join tokens (never their secret)')
    .addOption(dataDirOpt())
    .option('--json', 'machine-readable output')
    .action(async (o: { dataDir: string; json?: boolean }) => {
      const { tokens } = await clientFor(o.dataDir).request<{ tokens: TokenJson[] }>('GET', '/v1/tokens');
      if (o.json) return out(JSON.stringify({ tokens }, null, 2));
      out(table([['ID', 'APP', 'STATE', 'USES', 'EXPIRES', 'INSTANCE', 'LABELS'], ...tokens.map((t) => [
        t.id, t.app, t.state, `${t.uses}/${t.maxUses ?? '∞'}`, t.expiresAt ?? 'never', t.instance ?? '-', Object.entries(t.labels).map(([k, v]) => `${k}=${v}`).join(',') || '-',
      ])]));
    });
  token
    .command('revoke')
    .description('revoke a join token: no node joins with it any more')
    .argument('<id>', 'token id (drover token ls)')
    .addOption(dataDirOpt())
    .action(async (id: string, o: { dataDir: string }) => {
      const t = await clientFor(o.dataDir).request<TokenJson>('DELETE', `/v1/tokens/${encodeURIComponent(id)}`);
      out(`token ${t.id} revoked`);
    });

  program
    .command('nodes')
    .description('hosts that joined an app\'s pool: state, labels, what they run')
    .option('--app <name>', 'only this app\'s nodes')
    .addOption(dataDirOpt())
    .option('--json', 'machine-readable output')
    .action(async (o: { app?: string; dataDir: string; json?: boolean }) => {
      const { nodes } = await clientFor(o.dataDir).request<{ nodes: NodeJson[] }>('GET', `/v1/nodes${o.app ? `?app=${encodeURIComponent(o.app)}` : ''}`);
      if (o.json) return out(JSON.stringify({ nodes }, null, 2));
      out(table([['NODE', 'APP', 'HOST', 'ADDRESS', 'STATE', 'RUNS', 'LABELS', 'SEEN'], ...nodes.map((n) => [
        n.id, n.app, n.hostname, n.addresses[0] ?? '-', n.state, n.instance ? `${n.instance.id} (${n.instance.role ?? 'spare'}, ${n.instance.state})` : '-',
        Object.entries(n.labels).map(([k, v]) => `${k}=${v}`).join(',') || '-', ago(n.lastSeenAt),
      ])]));
    });

  program
    .command('agent')
    .description('run an agent that joins this host to an app\'s pool as a spare: drover agent --join URL (token from --token-file or DROVER_JOIN_TOKEN)')
    .requiredOption('--join <url>', 'the controller, e.g. http://10.0.0.1:7420 (its --listen address)')
    .option('--token <token>', 'the join token (shown by ps while the agent runs: prefer --token-file or env DROVER_JOIN_TOKEN)')
    .option('--token-file <file>', 'a file holding the join token')
    .option('--labels <k=v,...>', 'this node\'s labels (role=api: it takes only api)', parseLabels)
    .option('--address <ip>', 'the address this host\'s instances serve on (default: its first non-loopback address)')
    .option('--name <name>', 'this host\'s name in `drover nodes` and `status` (default: its hostname)')
    .option('--data-dir <dir>', 'folder for instance folders', '.drover-node')
    .action(async (o: { join: string; token?: string; tokenFile?: string; labels?: Record<string, string>; address?: string; name?: string; dataDir: string }) => {
      let url: URL;
      try {
        url = new URL(o.join);
      } catch {
        throw new CliError(`--join: not a URL: ${JSON.stringify(o.join)}`, 2);
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new CliError(`--join: expected http:// or https://, got ${url.protocol}//`, 2);
      const secret = joinToken(o, process.env);
      const [{ pino }, { NodeAgent }, { mkdirSync }] = await Promise.all([import('pino'), import('../agent/index.js'), import('node:fs')]);
      mkdirSync(o.dataDir, { recursive: true, mode: 0o700 });
      const logger = pino({ name: 'drover-node', level: process.env.DROVER_LOG_LEVEL ?? 'info' });
      const agentEnv: Record<string, string> = {};
      for (const [k, v] of Object.entries(process.env)) if (k.startsWith('DROVER_AGENT_') && v !== undefined) agentEnv[k] = v;
      let node: InstanceType<typeof NodeAgent>;
      try {
        node = new NodeAgent({
          url: url.origin, token: secret, labels: o.labels ?? {}, dataDir: o.dataDir, logger, agentEnv,
          ...(o.address ? { addresses: [o.address] } : {}),
          ...(o.name ? { hostname: o.name } : {}),
        });
      } catch (err) {
        throw new CliError(err instanceof Error ? err.message : String(err), 2);
      }
      delete process.env.DROVER_JOIN_TOKEN; // not for the instance agents it starts
      const stop = () => void node.close('signal');
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
      const exit = await node.run();
      if (exit.reason === 'refused') throw new CliError(exit.message, 3);
    });
}

/** What `drover status --by host` needs of an app. */
export interface HostView {
  readonly name: string;
  readonly roles: readonly {
    readonly name: string;
    readonly instances: readonly { id: string; state: string; address: string | null; startedAt: string | null; agent?: { pid: number | null; host: string } }[];
  }[];
}

/** `drover status --by host`: every instance under the host it runs on. */
export function renderByHost(apps: readonly HostView[], now = Date.now()): string {
  const byHost = new Map<string, string[][]>();
  for (const a of apps) {
    for (const r of a.roles) {
      for (const i of r.instances) {
        const host = i.agent?.host ?? (i.address?.split(':')[0] || '-');
        const rows = byHost.get(host) ?? [];
        rows.push([`  ${a.name}/${r.name}`, i.id, i.state, i.address ?? '-', i.agent?.pid ? String(i.agent.pid) : '-', i.startedAt ? ago(i.startedAt, now) : '-']);
        byHost.set(host, rows);
      }
    }
  }
  if (byHost.size === 0) return 'no instances';
  const rows: string[][] = [['HOST / ROLE', 'INSTANCE', 'STATE', 'ADDRESS', 'AGENT PID', 'UP']];
  for (const [host, list] of [...byHost].sort(([x], [y]) => x.localeCompare(y))) rows.push([host, '', '', '', '', `${list.length} instance(s)`], ...list);
  return table(rows);
}
