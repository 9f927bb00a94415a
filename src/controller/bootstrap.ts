/**
 * Booting cloud machines (docs/cloud.md, "Bootstrap"): the controller makes each VM's cloud-init
 * user data, and turns the node that joins with it into that very instance.
 *
 * The user data installs Node.js 20 (unless the image has it) and the agent bundle — fetched
 * from this controller (`GET /v1/agent-bundle/<sha256>`) and checked against the sha256 written
 * in the user data — and starts the node (`agent/cloud/node.js`) with a join token that is
 * **made for that instance only**: single use, valid for the provider's provisioning timeout,
 * kept hashed like every join token, its file 0600 and removed by the node once read. The node
 * that joins with it runs that instance (NodeRegistry.startBound): the instance's key (and the
 * broker URL of an amqp transport) reach it sealed, over the channel the join set up.
 *
 * Nothing long-lived is in user data: no API token, no instance key, no broker password. What
 * is in it — the controller's URL, the bundle's hash and the single-use token — is worth nothing
 * once the machine joined (the token is used up) or the timeout passed (it expired); a machine
 * that reads another's user data before it boots can join only as that instance, and the real
 * one is then refused and replaced.
 *
 * The token is derived from the instance key (an HMAC), not drawn at random, so a request
 * repeated with the same instance id — after a controller crash — carries the same user data:
 * a cloud's idempotency (EC2's ClientToken) sees the same parameters and answers with the
 * machine it made, never IdempotentParameterMismatch.
 */
import { createHmac } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { parse } from 'yaml';
import { tokenHash, type Clock } from '../core/index.js';
import type { CreateInstanceRequest, ExitInfo, InstanceHandle, Machine, Provider } from '../adapters/providers/index.js';
import type { Store } from '../adapters/store/index.js';
import { packFolder } from './bundle.js';
import type { EventInput } from './context.js';
import { ApiError } from './errors.js';

const SHA256 = /^[0-9a-f]{64}$/;
const INSTANCE = /^i-[A-Za-z0-9_-]{1,64}$/;
/** Where the boot files live on the machine (root's, 0600/0700). */
export const BOOT_PATHS = {
  token: '/etc/drover/join-token',
  controller: '/etc/drover/controller-url',
  sha256: '/etc/drover/agent-sha256',
  instance: '/etc/drover/instance',
  boot: '/usr/local/lib/drover/boot.sh',
  node: '/usr/local/lib/drover/node.sh',
  unit: '/etc/systemd/system/drover-node.service',
} as const;

/** The agent bundle cloud machines fetch: dist/ssh-bundle (the agent and the node), packed deterministically. */
export interface AgentBundle {
  readonly sha256: string;
  readonly data: Buffer;
}

/** `dist/ssh-bundle/` beside this module, in src/ (tsx) and dist/ alike. */
export function defaultAgentBundleDir(): string {
  return fileURLToPath(new URL('../../dist/ssh-bundle/', import.meta.url));
}

/** Packs the agent bundle once (the same bytes, so the same hash, at every start of the same build). */
export function agentBundleLoader(dir = defaultAgentBundleDir()): () => Promise<AgentBundle> {
  let packed: Promise<AgentBundle> | undefined;
  return () =>
    (packed ??= packFolder(dir, { maxBytes: 256 * 1024 * 1024 }).then(
      (b) => ({ sha256: b.sha256, data: b.data }),
      (err: unknown) => {
        packed = undefined;
        throw new Error(`the agent bundle for cloud machines is not built in ${dir} (npm run build): ${err instanceof Error ? err.message : String(err)}`);
      },
    ));
}

/** `GET /v1/agent-bundle/<sha256>`: public code, no secret in it; the user data carries its hash, which the machine checks. */
export function registerAgentBundleRoute(app: FastifyInstance, bundle: () => Promise<AgentBundle>, errors: (...codes: number[]) => Record<number, unknown>): void {
  app.get<{ Params: { sha256: string } }>(
    '/v1/agent-bundle/:sha256',
    {
      schema: {
        tags: ['fleet'],
        summary: 'The agent bundle cloud machines install at boot (no token needed: it holds no secret; its sha256 is in their user data)',
        security: [],
        params: { type: 'object', properties: { sha256: { type: 'string', pattern: SHA256.source } }, required: ['sha256'] },
        response: { ...errors(400, 404) },
      },
    },
    async (req, reply) => {
      const b = await bundle().catch(() => undefined);
      if (!b || b.sha256 !== req.params.sha256) throw new ApiError('not_found', `no agent bundle ${req.params.sha256} here${b ? ` (this controller serves ${b.sha256})` : ''}`);
      return reply.header('content-type', 'application/gzip').header('cache-control', 'no-store').send(b.data);
    },
  );
}

/** The join token made for one instance: derived from its key, so the same at every request of that id. */
export function instanceJoinToken(key: string, instanceId: string): { id: string; token: string; hash: string } {
  const mac = (what: string) => createHmac('sha256', key).update(`drover-boot|${what}|${instanceId}`).digest();
  const id = mac('id').subarray(0, 8).toString('hex');
  const token = `drj.${id}.${mac('secret').toString('base64url')}`;
  return { id, token, hash: tokenHash(token) };
}

export interface UserDataInput {
  /** Where the machine reaches the controller (http or https; no credentials, no query). */
  readonly controllerUrl: string;
  readonly instanceId: string;
  /** The single-use join token made for the instance. */
  readonly token: string;
  /** sha256 of the agent bundle the machine fetches. */
  readonly agentSha256: string;
}

/** What the boot script does, static text: every value it uses is read from a file, never spliced into it. */
const BOOT_SCRIPT = `#!/bin/bash
# Drover: installs Node.js 20 (unless this image has it) and the agent bundle, checked against
# its sha256, then starts the node, which joins the controller once with its single-use token.
set -euo pipefail
umask 077
url=$(cat ${BOOT_PATHS.controller})
sha=$(cat ${BOOT_PATHS.sha256})
[[ $sha =~ ^[0-9a-f]{64}$ ]] || { echo "drover: bad agent sha256" >&2; exit 1; }
major=0
if command -v node >/dev/null; then major=$(node -p 'process.versions.node.split(".")[0]'); fi
if (( major < 20 )); then
  case "$(uname -m)" in x86_64) arch=x64 ;; aarch64) arch=arm64 ;; *) echo "drover: no Node.js build for $(uname -m)" >&2; exit 1 ;; esac
  tmp=$(mktemp -d)
  base=https://nodejs.org/dist/latest-v20.x
  curl -fsSL --retry 5 "$base/SHASUMS256.txt" -o "$tmp/SHASUMS256.txt"
  file=$(grep -oE "node-v20\\.[0-9]+\\.[0-9]+-linux-$arch\\.tar\\.xz" "$tmp/SHASUMS256.txt" | head -n 1)
  curl -fsSL --retry 5 "$base/$file" -o "$tmp/$file"
  (cd "$tmp" && grep " $file\\$" SHASUMS256.txt | sha256sum -c -)
  tar -xJf "$tmp/$file" -C /usr/local --strip-components=1 --no-same-owner
  rm -rf "$tmp"
fi
dir=/opt/drover/agent-$sha
if [[ ! -f $dir/agent/cloud/node.js ]]; then
  tmp=$(mktemp -d)
  curl -fsS --retry 10 --retry-connrefused "$url/v1/agent-bundle/$sha" -o "$tmp/agent.tgz"
  echo "$sha  $tmp/agent.tgz" | sha256sum -c -
  mkdir -p "$dir"
  tar -xzf "$tmp/agent.tgz" -C "$dir" --no-same-owner
  rm -rf "$tmp"
fi
systemctl daemon-reload
systemctl start drover-node.service
`;

const NODE_SCRIPT = `#!/bin/bash
# Drover: the node of this machine (started by drover-node.service). It reads the join token
# from its file and removes the file at once.
set -euo pipefail
sha=$(cat ${BOOT_PATHS.sha256})
exec node "/opt/drover/agent-$sha/agent/cloud/node.js" --join "$(cat ${BOOT_PATHS.controller})" --token-file ${BOOT_PATHS.token} --data-dir /var/lib/drover
`;

const UNIT = `[Unit]
Description=Drover node (joins the controller once; runs this machine's instance)
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=${BOOT_PATHS.node}
# A node that stops is not started again: its token is used up; the controller replaces the machine.
Restart=no
KillMode=mixed

[Install]
WantedBy=multi-user.target
`;

/** Refuses a value that could not be written into user data safely (each is checked before it is used). */
function checkInput(i: UserDataInput): void {
  let u: URL;
  try {
    u = new URL(i.controllerUrl);
  } catch {
    throw new Error(`the controller URL for cloud machines is not a URL: ${JSON.stringify(i.controllerUrl)}`);
  }
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || u.username || u.password || u.search || u.hash || (u.pathname !== '/' && u.pathname !== '')) {
    throw new Error(`the controller URL for cloud machines must be http(s)://host:port, no credentials, path or query: ${JSON.stringify(i.controllerUrl)}`);
  }
  if (['0.0.0.0', '[::]', 'localhost'].includes(u.hostname)) {
    throw new Error(`cloud machines cannot reach the controller at ${u.origin}: set DROVER_CLOUD_URL (the controller's address as the cloud's network sees it)`);
  }
  if (!INSTANCE.test(i.instanceId)) throw new Error(`instance id ${JSON.stringify(i.instanceId)} cannot be written into user data`);
  if (!/^drj\.[0-9a-f]{16}\.[A-Za-z0-9_-]{43}$/.test(i.token)) throw new Error('the join token is not one');
  if (!SHA256.test(i.agentSha256)) throw new Error('the agent bundle hash is not a sha256');
}

/**
 * The `#cloud-config` user data of one instance. Values go into files (`write_files`), read by a
 * static script; nothing is templated into shell text.
 */
export function cloudInitUserData(i: UserDataInput): string {
  checkInput(i);
  const origin = new URL(i.controllerUrl).origin;
  const file = (path: string, permissions: string, content: string) => ({ path, owner: 'root:root', permissions, content });
  const doc = {
    write_files: [
      file(BOOT_PATHS.controller, '0644', `${origin}\n`),
      file(BOOT_PATHS.sha256, '0644', `${i.agentSha256}\n`),
      file(BOOT_PATHS.instance, '0644', `${i.instanceId}\n`),
      file(BOOT_PATHS.token, '0600', `${i.token}\n`),
      file(BOOT_PATHS.boot, '0700', BOOT_SCRIPT),
      file(BOOT_PATHS.node, '0700', NODE_SCRIPT),
      file(BOOT_PATHS.unit, '0644', UNIT),
    ],
    runcmd: [[BOOT_PATHS.boot]],
  };
  // JSON is YAML: one line per value, no YAML library needed to write it, any to read it.
  return `#cloud-config\n# Drover instance ${i.instanceId}: installs the agent, joins ${origin} once with a single-use token made for this instance.\n${JSON.stringify(doc, null, 1)}\n`;
}

/** What a machine booted from {@link cloudInitUserData} does, read back from the user data (the test clouds' boot hook; never run as shell). */
export interface BootPlan {
  readonly controllerUrl: string;
  readonly instanceId: string;
  readonly token: string;
  readonly agentSha256: string;
}

/** Reads a Drover user data back; throws, naming what is wrong, if it is not one. */
export function readBootPlan(userData: string): BootPlan {
  if (!userData.startsWith('#cloud-config\n')) throw new Error('user data: not #cloud-config');
  const doc = parse(userData) as { write_files?: { path?: unknown; content?: unknown; permissions?: unknown }[]; runcmd?: unknown };
  const files = new Map((doc.write_files ?? []).map((f) => [String(f.path), f]));
  const text = (path: string, mode: string) => {
    const f = files.get(path);
    if (!f || typeof f.content !== 'string') throw new Error(`user data: no ${path}`);
    if (f.permissions !== mode) throw new Error(`user data: ${path} is ${String(f.permissions)}, expected ${mode}`);
    return f.content.trim();
  };
  if (JSON.stringify(doc.runcmd) !== JSON.stringify([[BOOT_PATHS.boot]])) throw new Error('user data: runcmd is not the Drover boot script');
  if (text(BOOT_PATHS.boot, '0700') !== BOOT_SCRIPT.trim()) throw new Error('user data: the boot script is not Drover\'s');
  const plan = { controllerUrl: text(BOOT_PATHS.controller, '0644'), instanceId: text(BOOT_PATHS.instance, '0644'), token: text(BOOT_PATHS.token, '0600'), agentSha256: text(BOOT_PATHS.sha256, '0644') };
  checkInput(plan);
  return plan;
}

// ---------------------------------------------------------------------------------------------

/** What the bootstrap needs of the node registry. */
export interface BoundNodes {
  startBound(nodeId: string, req: CreateInstanceRequest): Promise<{ ip: string; port: number; workdir: string; providerRef: Readonly<Record<string, unknown>> }>;
  forget(nodeId: string): Promise<void>;
}

export interface BootstrapOptions {
  readonly store: Store;
  readonly clock: Clock;
  readonly log: Logger;
  readonly nodes: BoundNodes;
  /** Where cloud machines reach the controller (DROVER_CLOUD_URL, else the controller's own URL). */
  readonly controllerUrl: () => string;
  readonly agentBundle: () => Promise<AgentBundle>;
  /** The broker URL of an instance whose request this controller did not see (it restarted since): made again. */
  readonly transportUrlFor?: (instanceId: string) => Promise<string | undefined>;
  readonly record: (ev: EventInput) => Promise<unknown>;
}

/** The instance's start on its node: under way, done, or failed. */
interface BoundStart {
  readonly node: string;
  made?: { ip: string; port: number; workdir: string; providerRef: Readonly<Record<string, unknown>> };
  error?: string;
}

/**
 * Cloud providers wrapped with the bootstrap: a request gets its user data (and never the
 * instance key, which reaches the node sealed after it joined); a machine is `running` once its
 * node joined and started the instance's agent, `pending` before, whatever the cloud says.
 */
export class Bootstrap {
  /** Requests seen by this controller process: what the node is given when it joins. */
  readonly #requests = new Map<string, CreateInstanceRequest>();
  readonly #starts = new Map<string, BoundStart>();
  #loopbackTold = false;

  constructor(private readonly o: BootstrapOptions) {}

  /** A node joined with the token made for `instanceId`: it runs that instance now. */
  bound(nodeId: string, instanceId: string): void {
    if (this.#starts.has(instanceId)) return;
    const start: BoundStart = { node: nodeId };
    this.#starts.set(instanceId, start);
    void this.#start(nodeId, instanceId).then(
      (made) => {
        start.made = made;
      },
      async (err: unknown) => {
        start.error = err instanceof Error ? err.message : String(err);
        this.o.log.warn({ instance: instanceId, node: nodeId, err: start.error }, 'the node of a cloud machine could not start its instance');
      },
    );
  }

  async #start(nodeId: string, instanceId: string) {
    let req = this.#requests.get(instanceId);
    if (!req) {
      const inst = await this.o.store.getInstance(instanceId);
      if (!inst || inst.destroyedAt !== null) throw new Error(`instance ${instanceId} is gone`);
      const transportUrl = await this.o.transportUrlFor?.(instanceId);
      req = { instanceId, epoch: inst.epoch, key: inst.joinToken, controllerUrl: this.o.controllerUrl(), app: inst.app, role: inst.role, ...(transportUrl ? { transportUrl } : {}) };
    }
    return this.o.nodes.startBound(nodeId, req);
  }

  /** The cloud provider of `kind`, booting its machines with user data made here. */
  wrap(cloud: Provider): Provider {
    const request = async (req: CreateInstanceRequest): Promise<Machine> => {
      const userData = await this.#userData(req, cloud.provisionTimeoutMs);
      this.#requests.set(req.instanceId, req);
      // The cloud never sees the key or the broker URL: the node gets them sealed once it joined.
      const { transportUrl: _t, ...rest } = req;
      try {
        return this.#view(await cloud.request({ ...rest, key: '', userData }), undefined);
      } catch (err) {
        this.#requests.delete(req.instanceId);
        throw err;
      }
    };
    const destroy = async (h: InstanceHandle): Promise<void> => {
      await cloud.destroy(h);
      const node = typeof h.providerRef?.node === 'string' ? h.providerRef.node : this.#starts.get(h.id)?.node;
      if (node !== undefined) await this.o.nodes.forget(node).catch((err: unknown) => this.o.log.warn({ err, node }, "could not mark a cloud machine's node gone"));
      this.#requests.delete(h.id);
      this.#starts.delete(h.id);
    };
    return {
      get name() {
        return cloud.name;
      },
      get provisionTimeoutMs() {
        return cloud.provisionTimeoutMs;
      },
      request,
      describe: async (handles: readonly InstanceHandle[]) => (await cloud.describe(handles)).map((m, k) => this.#view(m, handles[k])),
      list: async () => (await cloud.list()).map((m) => this.#view(m, undefined)),
      destroy,
      onExit: (listener: (instanceId: string, info: ExitInfo) => void) => cloud.onExit(listener),
      close: () => cloud.close(),
    };
  }

  async #userData(req: CreateInstanceRequest, ttlMs: number): Promise<string> {
    const t = instanceJoinToken(req.key, req.instanceId);
    const bundle = await this.o.agentBundle();
    const controllerUrl = this.o.controllerUrl();
    const userData = cloudInitUserData({ controllerUrl, instanceId: req.instanceId, token: t.token, agentSha256: bundle.sha256 });
    if (!this.#loopbackTold && /^(127\.|\[::1\])/.test(new URL(controllerUrl).hostname)) {
      // Right for a test cloud on this machine; a real VM never reaches it (and fails after the provider's timeout).
      this.#loopbackTold = true;
      this.o.log.warn({ controllerUrl }, 'cloud machines are told to reach the controller on a loopback address: set DROVER_CLOUD_URL (or --listen on an address the cloud reaches)');
    }
    if (!(await this.o.store.getJoinToken(t.id))) {
      const now = this.o.clock.now();
      try {
        await this.o.store.createJoinToken({ id: t.id, hash: t.hash, app: req.app, labels: null, maxUses: 1, expiresAt: now + ttlMs, createdAt: now, instanceId: req.instanceId });
      } catch (err) {
        // Made meanwhile by a request of the same id: the same token.
        if (!(await this.o.store.getJoinToken(t.id))) throw err;
      }
    }
    return userData;
  }

  /** A cloud machine as the controller sees it: running once its node runs the instance. */
  #view(m: Machine, h: InstanceHandle | undefined): Machine {
    if (m.state === 'gone') return m;
    const start = this.#starts.get(m.id);
    if (start?.made) {
      const { ip, port, workdir, providerRef } = start.made;
      return { id: m.id, state: 'running', ip, port, workdir, providerRef: { ...m.providerRef, node: start.node, ...pick(providerRef, ['host', 'pid']), port } };
    }
    if (start?.error !== undefined) return { id: m.id, state: 'gone', providerRef: m.providerRef, message: `its node could not start it: ${start.error}` };
    // Started before this controller did: its record has the node (and the address).
    const recorded = h?.providerRef;
    if (recorded && typeof recorded.node === 'string') {
      return { id: m.id, state: 'running', providerRef: { ...m.providerRef, ...pick(recorded, ['node', 'host', 'pid', 'port']) } };
    }
    const { ip: _ip, port: _port, workdir: _w, ...rest } = m;
    return { ...rest, state: 'pending', ...(m.state === 'running' ? { message: 'booted; its node has not joined yet' } : {}) };
  }
}

function pick(o: Readonly<Record<string, unknown>>, keys: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of keys) if (o[k] !== undefined) out[k] = o[k];
  return out;
}
