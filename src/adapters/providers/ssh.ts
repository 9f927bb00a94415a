/**
 * The ssh provider: instances on a fixed list of hosts reached over ssh (address, user, key file,
 * pinned host key). Asked for an instance, it takes a host with a free slot and, in the
 * background, connects (refusing a host whose key is not the pinned one, naming both
 * fingerprints), installs or updates the agent bundle over sftp into a private folder there
 * (`<dir>/agent-<hash>/`, 0700), and starts the agent detached, its key on stdin. Destroying ends
 * the agent and everything of its instance on that host and removes its folder.
 *
 * On the host, the bundle's `ssh-remote.js` does the work with the local provider (ssh-remote.ts):
 * every request travels as JSON on the ssh channel's stdin, never in the command line, which is
 * fixed text built only from checked paths.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import ssh2, { type Client as SshClient, type SFTPWrapper } from 'ssh2';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import type { RemoteRequest } from './ssh-remote.js';
import type { CreateInstanceRequest, ExitInfo, InstanceHandle, Machine, Provider } from './types.js';

// A CommonJS package: its named exports are not all seen by node's ESM loader.
const { Client, utils } = ssh2;

/** A path on a host that may appear in the fixed command text: no shell metacharacters at all. */
const SAFE_PATH = /^[A-Za-z0-9_./-]+$/;

const hostSchema = z.object({
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, 'letters, digits, _ . - (at most 63)').optional(),
  address: z.string().min(1).max(253).regex(/^[A-Za-z0-9_.:-]+$/, 'a host name or an IP address'),
  port: z.number().int().min(1).max(65535).default(22),
  user: z.string().regex(/^[a-z_][a-z0-9_.-]{0,31}$/, 'a user name'),
  keyFile: z.string().min(1).max(4096),
  hostKey: z.string().regex(/^SHA256:[A-Za-z0-9+/]{43}$/, 'the host key\'s SHA256 fingerprint, as `ssh-keygen -lf` prints it (SHA256:…, 43 characters)'),
  /** The node.js on the host (20 or later). */
  node: z.string().max(1024).regex(SAFE_PATH, 'a path without spaces or shell characters').default('node'),
  /** Drover's folder on the host, absolute or under the user's home. */
  dir: z.string().max(1024).regex(SAFE_PATH, 'a path without spaces or shell characters').default('.drover-ssh'),
  /** Instances at once on the host. */
  slots: z.number().int().min(1).max(64).default(1),
});
const hostsFileSchema = z.object({ hosts: z.array(hostSchema).min(1).max(1000) }).strict();

export interface SshHost {
  readonly name: string;
  readonly address: string;
  readonly port: number;
  readonly user: string;
  readonly keyFile: string;
  readonly hostKey: string;
  readonly node: string;
  readonly dir: string;
  readonly slots: number;
}

export class SshConfigError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SshConfigError';
  }
}

/**
 * Reads and checks a hosts file (YAML or JSON: `hosts: [{ address, user, keyFile, hostKey, … }]`).
 * Refused whole, with the field named, if anything is wrong: a key file that is missing, not
 * a private key, or readable by others than its owner; two hosts with one name.
 */
export function loadSshHosts(file: string): SshHost[] {
  let raw: unknown;
  try {
    raw = parseYaml(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new SshConfigError(`ssh hosts file ${file}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const parsed = hostsFileSchema.safeParse(raw);
  if (!parsed.success) {
    const i = parsed.error.issues[0]!;
    throw new SshConfigError(`ssh hosts file ${file}: ${i.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('').replace(/^\./, '')}: ${i.message}`);
  }
  const names = new Set<string>();
  return parsed.data.hosts.map((h, k) => {
    const name = h.name ?? h.address;
    const at = `ssh hosts file ${file}: hosts[${k}]`;
    if (names.has(name)) throw new SshConfigError(`${at}.name: ${name} is named twice`);
    names.add(name);
    let st;
    try {
      st = statSync(h.keyFile);
    } catch {
      throw new SshConfigError(`${at}.keyFile: ${h.keyFile} cannot be read`);
    }
    if ((st.mode & 0o077) !== 0) throw new SshConfigError(`${at}.keyFile: ${h.keyFile} is readable by others than its owner (chmod 600 it)`);
    const key = utils.parseKey(readFileSync(h.keyFile));
    if (key instanceof Error || !key.isPrivateKey()) throw new SshConfigError(`${at}.keyFile: ${h.keyFile} is not an unencrypted private key${key instanceof Error ? ` (${key.message})` : ''}`);
    return { ...h, name };
  });
}

/** A host key's fingerprint as OpenSSH prints it: `SHA256:` and unpadded base64. */
export function hostKeyFingerprint(key: Buffer): string {
  return `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`;
}

export class HostKeyMismatchError extends Error {
  constructor(
    readonly host: string,
    readonly expected: string,
    readonly presented: string,
  ) {
    super(`host ${host} presented host key ${presented}, not the pinned ${expected}: refusing to connect (if the host was re-installed, pin its new key in the ssh hosts file)`);
    this.name = 'HostKeyMismatchError';
  }
}

/** The agent bundle to install: `dist/ssh-bundle/` (built by `npm run build`). */
function defaultBundleDir(): string {
  return fileURLToPath(new URL('../../../dist/ssh-bundle/', import.meta.url));
}

interface Bundle {
  readonly dir: string;
  /** Relative paths of its files. */
  readonly files: readonly string[];
  readonly hash: string;
}

function readBundle(dir: string): Bundle {
  const files: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name));
      else if (e.isFile()) files.push(relative(dir, join(d, e.name)));
    }
  };
  try {
    walk(dir);
  } catch {
    // missing: told below
  }
  if (!files.includes('adapters/providers/ssh-remote.js') || !files.includes('agent/main.js')) {
    throw new Error(`the agent bundle for ssh hosts is not built in ${dir} (npm run build)`);
  }
  files.sort();
  const h = createHash('sha256');
  for (const f of files) h.update(f).update('\0').update(readFileSync(join(dir, f))).update('\0');
  return { dir, files, hash: h.digest('hex').slice(0, 12) };
}

export interface SshProviderOptions {
  readonly hosts: readonly SshHost[];
  /** How long an instance may take to say hello (connect, install, boot). @default 120000 */
  readonly provisionTimeoutMs?: number;
  /** The agent bundle. @default dist/ssh-bundle */
  readonly bundleDir?: string;
  /** Connecting gives up after this long. @default 20000 */
  readonly connectTimeoutMs?: number;
}

/** A start in the background: pending until the host answers. */
interface Start {
  readonly host: SshHost;
  made?: Machine;
  error?: string;
  settled?: Promise<void>;
}

const errorText = (err: unknown) => (err instanceof Error ? err.message : String(err));
const quote = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;

export class SshProvider implements Provider {
  readonly name = 'ssh';
  readonly provisionTimeoutMs: number;
  private readonly hosts: ReadonlyMap<string, SshHost>;
  /** Where each instance went, by instance id. */
  private readonly starts = new Map<string, Start>();
  /** Requests in flight, by instance id: a repeated request joins the first. */
  private readonly requests = new Map<string, Promise<Machine>>();
  /** Instances each host runs or is starting, as far as this controller knows. */
  private readonly occupied = new Map<string, Set<string>>();
  /** The bundle's folder on each host, once installed there by this controller. */
  private readonly installed = new Map<string, Promise<string>>();
  private bundle?: Bundle;

  constructor(private readonly opts: SshProviderOptions) {
    this.provisionTimeoutMs = opts.provisionTimeoutMs ?? 120_000;
    this.hosts = new Map(opts.hosts.map((h) => [h.name, h]));
    for (const h of opts.hosts) this.occupied.set(h.name, new Set());
  }

  /** Takes a host with a free slot and starts the agent there in the background: `pending` until it runs. */
  request(req: CreateInstanceRequest): Promise<Machine> {
    let p = this.requests.get(req.instanceId);
    if (!p) {
      p = this.route(req).finally(() => this.requests.delete(req.instanceId));
      this.requests.set(req.instanceId, p);
    }
    return p;
  }

  private async route(req: CreateInstanceRequest): Promise<Machine> {
    const id = req.instanceId;
    const known = this.starts.get(id);
    if (known) return this.machineOf(id, known);
    const host = [...this.hosts.values()].find((h) => this.occupied.get(h.name)!.size < h.slots);
    if (!host) throw new Error(`every ssh host is in use (${this.hosts.size} host(s), ${[...this.hosts.values()].reduce((n, h) => n + h.slots, 0)} slot(s))`);
    this.occupied.get(host.name)!.add(id);
    const start: Start = { host };
    this.starts.set(id, start);
    start.settled = this.startOn(host, req).then(
      (m) => {
        start.made = m;
      },
      (err: unknown) => {
        start.error = errorText(err);
        this.occupied.get(host.name)!.delete(id);
      },
    );
    return this.machineOf(id, start);
  }

  private machineOf(id: string, s: Start): Machine {
    if (s.made) return s.made;
    if (s.error !== undefined) return { id, state: 'gone', providerRef: { host: s.host.name }, message: s.error };
    return { id, state: 'pending', providerRef: { host: s.host.name } };
  }

  private async startOn(host: SshHost, req: CreateInstanceRequest): Promise<Machine> {
    const answer = await this.remote(host, (dir) => ({
      op: 'request', dir, ip: host.address,
      req: { instanceId: req.instanceId, epoch: req.epoch, key: req.key, controllerUrl: req.controllerUrl, app: req.app, role: req.role, ...(req.transportUrl ? { transportUrl: req.transportUrl } : {}) },
    }));
    return this.fromHost(host, answer as Machine);
  }

  /** A machine as the host's local provider told it, with the host in its reference. */
  private fromHost(host: SshHost, m: Machine): Machine {
    return { ...m, providerRef: { ...(m.providerRef ?? {}), host: host.name } };
  }

  private hostOf(h: InstanceHandle): SshHost | undefined {
    const started = this.starts.get(h.id);
    if (started) return started.host;
    const name = h.providerRef?.host;
    return typeof name === 'string' ? this.hosts.get(name) : undefined;
  }

  async describe(handles: readonly InstanceHandle[]): Promise<Machine[]> {
    const out = new Map<string, Machine>();
    const ask = new Map<SshHost, string[]>();
    for (const h of handles) {
      const s = this.starts.get(h.id);
      if (s && !s.made) out.set(h.id, this.machineOf(h.id, s));
      else {
        const host = this.hostOf(h);
        if (host) ask.set(host, [...(ask.get(host) ?? []), h.id]);
        else out.set(h.id, { id: h.id, state: 'gone', providerRef: h.providerRef, message: 'not on any host of the ssh hosts file' });
      }
    }
    await Promise.all([...ask].map(async ([host, ids]) => {
      const seen = (await this.remote(host, (dir) => ({ op: 'describe', dir, ip: host.address, ids }))) as Machine[];
      for (const m of seen) out.set(m.id, this.fromHost(host, m));
    }));
    return handles.map((h) => out.get(h.id) ?? { id: h.id, state: 'gone', providerRef: h.providerRef });
  }

  /** What every host runs (a host out of reach is left out, and logged by the caller's error). */
  async list(): Promise<Machine[]> {
    // Starts on their way now: one may finish while the hosts are asked, after its host answered.
    const out = new Map<string, Machine>();
    for (const [id, s] of this.starts) if (!s.made && s.error === undefined) out.set(id, this.machineOf(id, s));
    const errors: string[] = [];
    await Promise.all([...this.hosts.values()].map(async (host) => {
      try {
        for (const m of (await this.remote(host, (dir) => ({ op: 'list', dir, ip: host.address }))) as Machine[]) {
          out.set(m.id, this.fromHost(host, m));
          this.occupied.get(host.name)!.add(m.id);
        }
      } catch (err) {
        errors.push(`${host.name}: ${errorText(err)}`);
      }
    }));
    if (errors.length > 0 && out.size === 0) throw new Error(`could not list the ssh hosts: ${errors.join('; ')}`);
    return [...out.values()];
  }

  async destroy(h: InstanceHandle): Promise<void> {
    const start = this.starts.get(h.id);
    await start?.settled;
    // Not known where: every host is told (it is idempotent).
    const hosts = this.hostOf(h) ? [this.hostOf(h)!] : [...this.hosts.values()];
    await Promise.all(hosts.map((host) => this.remote(host, (dir) => ({ op: 'destroy', dir, ip: host.address, id: h.id }))));
    this.starts.delete(h.id);
    for (const host of hosts) this.occupied.get(host.name)!.delete(h.id);
  }

  onExit(_listener: (instanceId: string, info: ExitInfo) => void): void {
    // An agent on another host is heard of by its missed heartbeats.
  }

  async close(): Promise<void> {
    this.starts.clear();
  }

  // --- the ssh side ---------------------------------------------------------------------------

  private connect(host: SshHost): Promise<SshClient> {
    return new Promise((resolve, reject) => {
      const c = new Client();
      let presented: string | undefined;
      c.once('ready', () => resolve(c));
      c.once('error', (err) => {
        c.end();
        reject(presented !== undefined && presented !== host.hostKey ? new HostKeyMismatchError(host.name, host.hostKey, presented) : new Error(`ssh to ${host.user}@${host.address}:${host.port}: ${err.message}`));
      });
      c.connect({
        host: host.address, port: host.port, username: host.user, privateKey: readFileSync(host.keyFile),
        readyTimeout: this.opts.connectTimeoutMs ?? 20_000,
        hostVerifier: (key: Buffer) => {
          presented = hostKeyFingerprint(key);
          return presented === host.hostKey;
        },
      });
    });
  }

  /** Connects, installs the bundle if this controller has not yet, runs one request over `ssh-remote.js`. */
  private async remote(host: SshHost, request: (dir: string) => RemoteRequest): Promise<unknown> {
    const c = await this.connect(host);
    try {
      let where = this.installed.get(host.name);
      if (!where) {
        where = this.install(c, host);
        this.installed.set(host.name, where);
        where.catch(() => this.installed.delete(host.name));
      }
      const { base, bundle } = JSON.parse(await where) as { base: string; bundle: string };
      const command = `${quote(host.node)} ${quote(`${bundle}/adapters/providers/ssh-remote.js`)}`;
      try {
        return JSON.parse(await this.exec(c, command, JSON.stringify(request(base))));
      } catch (err) {
        // The host may have lost the bundle (re-imaged, cleaned): the next call looks again.
        this.installed.delete(host.name);
        throw err;
      }
    } finally {
      c.end();
    }
  }

  private exec(c: SshClient, command: string, input: string): Promise<string> {
    const LIMIT = 4 * 1024 * 1024;
    return new Promise((resolve, reject) => {
      c.exec(command, (err, stream) => {
        if (err) return reject(err);
        let out = '';
        let errOut = '';
        stream.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.length > LIMIT) stream.close();
        });
        stream.stderr.on('data', (d: Buffer) => {
          errOut = (errOut + d.toString()).slice(-2000);
        });
        stream.on('close', (code: number | null) => {
          if (code === 0 && out.length <= LIMIT) resolve(out);
          else reject(new Error(`on the host: ${errOut.trim() || `exit ${code}`}`));
        });
        stream.end(input);
      });
    });
  }

  /**
   * Puts the agent bundle in `<dir>/agent-<hash>/` unless it is there (a private folder, files
   * 0600), by way of a temporary folder renamed into place; older bundles are removed. Answers
   * the absolute folders as JSON.
   */
  private async install(c: SshClient, host: SshHost): Promise<string> {
    this.bundle ??= readBundle(this.opts.bundleDir ?? defaultBundleDir());
    const bundle = this.bundle;
    const sftp = await new Promise<SFTPWrapper>((resolve, reject) => c.sftp((err, s) => (err ? reject(err) : resolve(s))));
    const call = <T>(fn: (cb: (err: Error | undefined | null, v?: T) => void) => void) =>
      new Promise<T | undefined>((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v))));
    const exists = (p: string) => call<unknown>((cb) => sftp.stat(p, cb)).then(() => true, () => false);
    try {
      const home = (await call<string>((cb) => sftp.realpath('.', cb)))!;
      const base = host.dir.startsWith('/') ? host.dir : `${home}/${host.dir}`;
      const target = `${base}/agent-${bundle.hash}`;
      if (!(await exists(base))) await call((cb) => sftp.mkdir(base, { mode: 0o700 }, cb));
      if (!(await exists(`${target}/ok`))) {
        const tmp = `${target}.tmp-${process.pid}-${Date.now()}`;
        const dirs = new Set<string>();
        for (const f of bundle.files) for (let d = f; d.includes('/'); ) dirs.add((d = d.slice(0, d.lastIndexOf('/'))));
        await call((cb) => sftp.mkdir(tmp, { mode: 0o700 }, cb));
        for (const d of [...dirs].sort()) await call((cb) => sftp.mkdir(`${tmp}/${d}`, { mode: 0o700 }, cb));
        for (const f of bundle.files) await call((cb) => sftp.fastPut(join(bundle.dir, f), `${tmp}/${f}`, { mode: 0o600 }, cb));
        await call((cb) => sftp.writeFile(`${tmp}/ok`, bundle.hash, { mode: 0o600 }, cb));
        await call((cb) => sftp.rename(tmp, target, cb)).catch(async (err: unknown) => {
          // Another controller (or an earlier try) put it there first: fine if it is whole.
          await this.removeTree(sftp, tmp);
          if (!(await exists(`${target}/ok`))) throw err;
        });
      }
      // Older bundles go (a running agent keeps the files it has open).
      const entries = (await call<{ filename: string }[]>((cb) => sftp.readdir(base, cb))) ?? [];
      for (const e of entries) if (/^agent-[0-9a-f]{12}(\.tmp-.*)?$/.test(e.filename) && e.filename !== `agent-${bundle.hash}`) await this.removeTree(sftp, `${base}/${e.filename}`).catch(() => undefined);
      return JSON.stringify({ base, bundle: target });
    } finally {
      sftp.end();
    }
  }

  private async removeTree(sftp: SFTPWrapper, path: string): Promise<void> {
    const list = await new Promise<{ filename: string; longname: string }[]>((resolve, reject) => sftp.readdir(path, (err, l) => (err ? reject(err) : resolve(l))));
    for (const e of list) {
      const p = `${path}/${e.filename}`;
      if (e.longname.startsWith('d')) await this.removeTree(sftp, p);
      else await new Promise<void>((resolve, reject) => sftp.unlink(p, (err) => (err ? reject(err) : resolve())));
    }
    await new Promise<void>((resolve, reject) => sftp.rmdir(path, (err) => (err ? reject(err) : resolve())));
  }
}
