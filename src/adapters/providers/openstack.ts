/**
 * The openstack provider: an instance is a Nova server booted from an image, its agent started
 * by cloud-init from the user data the controller made (it joins by itself with a single-use
 * token). It speaks Keystone v3, Nova and Neutron (and Glance to find an image by name) through
 * the small client in openstack-client.ts; credentials come only from the controller's OS_*
 * variables, never from the app file.
 *
 * Idempotency: Nova has no client token. The server is named `drover-<instance id>` and carries
 * the instance id in its metadata (`drover:instance`, with `drover:app`, `drover:role` and
 * `drover:controller`); before creating, and after a create whose answer was lost (a timeout, a
 * reset, a 5xx), the provider looks for that server and answers with it if it exists. What
 * remains: two creates racing for one id (two controllers, or a create still queued in Nova's
 * API when the look-up after a lost answer ran) can make two servers. Whichever look-up sees both
 * next (describe, list, destroy, a repeated request) keeps the oldest and deletes the other, so a
 * duplicate lives for one poll at most.
 *
 * States: BUILD → pending; ACTIVE → running at its fixed IPv4 address (pending until it has one;
 * the port and folder are the agent's, told when it joins);
 * ERROR, DELETED, SOFT_DELETED, SHELVED, SHELVED_OFFLOADED, or a delete under way → gone, with
 * Nova's fault message; a server Nova does not know → gone. Other states (SHUTOFF, REBOOT,
 * MIGRATING…) are the machine's business: it counts as running, and its agent's heartbeats say
 * whether it serves.
 */
import { z } from 'zod';
import { BILLING_WORDS, parseBilling, type Billing, type OpenStackProviderSettings } from '../../core/index.js';
import { CloudSettingError, type CloudProviderContext } from './router-factories.js';
import { credentialsFromEnv, OpenStackClient, OpenStackError, type OpenStackClientOptions, type OpenStackCredentials } from './openstack-client.js';
import type { CreateInstanceRequest, ExitInfo, InstanceHandle, Machine, Provider } from './types.js';

export { OpenStackClient, OpenStackError, credentialsFromEnv, type OpenStackCredentials, type OpenStackErrorKind, type OpenStackClientOptions } from './openstack-client.js';

export interface OpenStackProviderOptions {
  readonly credentials: OpenStackCredentials;
  /**
   * This controller's identity, written as `drover:controller` on its servers: `list` sees only
   * these (another controller's servers in the same project are not orphans of this one).
   */
  readonly controllerId: string;
  /** From the request until the agent says hello: a VM boots and installs in minutes. @default 900000 (15 min) */
  readonly provisionTimeoutMs?: number;
  /** How the operator bills servers, when not per started hour (DROVER_OPENSTACK_BILLING). */
  readonly billing?: Billing | null;
  /** Regions `list` looks in besides the default one and those asked for since the start. */
  readonly regions?: readonly string[];
  /** Servers per page of a listing. @default 100 */
  readonly pageSize?: number;
  readonly client?: OpenStackClientOptions;
}

/** Nova's limit on `user_data` (the base64 text). */
const MAX_USER_DATA = 65_535;
const NAME_PREFIX = 'drover-';
const META = { app: 'drover:app', role: 'drover:role', instance: 'drover:instance', controller: 'drover:controller' } as const;
const UUID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;
/** Servers whose machine is gone for Drover (nothing to wait for); some still hold quota until deleted. */
const GONE_STATES = new Set(['ERROR', 'DELETED', 'SOFT_DELETED', 'SHELVED', 'SHELVED_OFFLOADED']);

// --- what Nova, Neutron and Glance answer (only the fields read) ------------------------------

const id = z.string().min(1).max(255);
const serverSchema = z.object({
  id,
  name: z.string().max(255),
  status: z.string().max(64),
  metadata: z
    .record(z.string().max(255), z.string().max(255))
    .refine((m) => Object.keys(m).length <= 1000, { error: 'at most 1000 metadata items' })
    .default({}),
  addresses: z
    .record(z.string().max(255), z.array(z.object({ addr: z.string().max(64), version: z.number().int().optional(), 'OS-EXT-IPS:type': z.string().max(32).optional() })).max(64))
    .refine((a) => Object.keys(a).length <= 64, { error: 'at most 64 networks' })
    .default({}),
  fault: z.object({ message: z.string().max(65_535), code: z.number().int().optional() }).nullish(),
  created: z.string().max(64).optional(),
  /** `id` before microversion 2.47, `original_name` from it on. */
  flavor: z.object({ id: z.string().max(255).optional(), original_name: z.string().max(255).optional() }).optional(),
  'OS-EXT-STS:task_state': z.string().max(64).nullish(),
});
type Server = z.output<typeof serverSchema>;

const oneServer = z.object({ server: serverSchema });
const serverPage = z.object({ servers: z.array(serverSchema).max(10_000) });
const created = z.object({ server: z.object({ id }) });
const flavorPage = z.object({ flavors: z.array(z.object({ id, name: z.string().max(255) })).max(10_000) });
const imageList = z.object({ images: z.array(z.object({ id, name: z.string().max(255).nullish(), status: z.string().max(64).optional() })).max(10_000) });
const networkList = z.object({ networks: z.array(z.object({ id, name: z.string().max(255) })).max(10_000) });
const oneNetwork = z.object({ network: z.object({ id, name: z.string().max(255) }) });

/** What the store keeps to find a server again. */
const refSchema = z.object({ serverId: id, region: z.string().max(255).optional() });

interface Resolved {
  readonly flavorId: string;
  /** Its name, as `drover status` shows the machine's type (providerRef.flavor). */
  readonly flavorName: string;
  readonly imageId: string;
  readonly networkId: string;
}

const settingsError = (field: string, why: string) => new OpenStackError('bad_request', `openstack: provider.${field}: ${why}`, { retryable: false });
const regionText = (region: string | undefined) => (region !== undefined ? ` in region ${region}` : '');

export class OpenStackProvider implements Provider {
  readonly name = 'openstack';
  readonly provisionTimeoutMs: number;
  readonly billing?: Billing | null;
  readonly client: OpenStackClient;
  private readonly pageSize: number;
  /** Requests in flight, by instance id: a repeated request joins the first. */
  private readonly requests = new Map<string, Promise<Machine>>();
  /** Names resolved to ids, by region and settings (a failure is forgotten, so asked again). */
  private readonly resolved = new Map<string, Promise<Resolved>>();
  /** Each region's flavors (id and name), listed once; listed again when a name is not in it. */
  private readonly flavorLists = new Map<string, Promise<{ id: string; name: string }[]>>();
  /** Regions `list` looks in (undefined: the default one). */
  private readonly regions = new Set<string | undefined>();

  constructor(private readonly opts: OpenStackProviderOptions) {
    if (!/^[\x21-\x7e]{1,255}$/.test(opts.controllerId)) throw new OpenStackError('config', `openstack: controllerId ${JSON.stringify(opts.controllerId)}: expected 1 to 255 printable characters without spaces`, { retryable: false });
    this.provisionTimeoutMs = opts.provisionTimeoutMs ?? 15 * 60_000;
    if (opts.billing !== undefined) this.billing = opts.billing;
    this.pageSize = Math.max(1, Math.min(opts.pageSize ?? 100, 1000));
    this.client = new OpenStackClient(opts.credentials, opts.client);
    this.regions.add(opts.credentials.region);
    for (const r of opts.regions ?? []) this.regions.add(r);
  }

  request(req: CreateInstanceRequest): Promise<Machine> {
    let p = this.requests.get(req.instanceId);
    if (!p) {
      p = this.create(req).finally(() => this.requests.delete(req.instanceId));
      this.requests.set(req.instanceId, p);
    }
    return p;
  }

  private async create(req: CreateInstanceRequest): Promise<Machine> {
    const s = req.settings;
    if (s?.kind !== 'openstack') {
      throw new OpenStackError('config', `openstack: ${req.instanceId} (${req.role ?? 'spare'}) has no openstack provider settings (provider: kind: openstack, flavor, image, network)`, { retryable: false });
    }
    const region = s.region ?? this.opts.credentials.region;
    this.regions.add(region);
    // Made already (a request repeated after a crash, or by another controller process)?
    const existing = await this.find(req.instanceId, region);
    if (existing) return await this.machineOf(req.instanceId, existing, region);

    const userData = req.userData ? Buffer.from(req.userData, 'utf8').toString('base64') : undefined;
    if (userData !== undefined && userData.length > MAX_USER_DATA) {
      throw new OpenStackError('bad_request', `openstack: ${req.instanceId}: the user data is ${userData.length} bytes in base64, above Nova's limit of ${MAX_USER_DATA}`, { retryable: false });
    }
    const r = await this.resolve(s, region);
    const body = {
      server: {
        name: `${NAME_PREFIX}${req.instanceId}`,
        flavorRef: r.flavorId,
        imageRef: r.imageId,
        networks: [{ uuid: r.networkId }],
        ...(s.keyPair !== undefined ? { key_name: s.keyPair } : {}),
        ...(s.securityGroups !== undefined ? { security_groups: s.securityGroups.map((name) => ({ name })) } : {}),
        ...(s.availabilityZone !== undefined ? { availability_zone: s.availabilityZone } : {}),
        metadata: {
          ...s.metadata,
          [META.app]: req.app,
          [META.role]: req.role ?? '',
          [META.instance]: req.instanceId,
          [META.controller]: this.opts.controllerId,
        },
        ...(userData !== undefined ? { user_data: userData } : {}),
      },
    };
    let serverId: string;
    try {
      const answer = await this.client.call('compute', 'POST', '/servers', { region, body, schema: created, what: `create server ${NAME_PREFIX}${req.instanceId}` });
      if (!answer) throw new OpenStackError('malformed', `openstack: create server ${NAME_PREFIX}${req.instanceId}: an empty answer`, { retryable: true });
      serverId = answer.server.id;
    } catch (err) {
      // The answer was lost, not the request: Nova may have made the server. Look before failing.
      if (err instanceof OpenStackError && (err.kind === 'network' || err.kind === 'server' || err.kind === 'malformed')) {
        const made = await this.find(req.instanceId, region).catch(() => undefined);
        if (made) return await this.machineOf(req.instanceId, made, region);
      }
      throw err;
    }
    return { id: req.instanceId, state: 'pending', providerRef: this.refOf(serverId, region, r.flavorName) };
  }

  async describe(handles: readonly InstanceHandle[]): Promise<Machine[]> {
    const out: Machine[] = [];
    // A few at a time: describe is usually asked of one machine, inventory of many.
    for (let k = 0; k < handles.length; k += 8) out.push(...(await Promise.all(handles.slice(k, k + 8).map((h) => this.describeOne(h)))));
    return out;
  }

  private async describeOne(h: InstanceHandle): Promise<Machine> {
    const ref = refSchema.safeParse(h.providerRef);
    const region = ref.success ? ref.data.region : this.opts.credentials.region;
    if (ref.success) {
      const got = await this.client.call('compute', 'GET', `/servers/${encodeURIComponent(ref.data.serverId)}`, { region, schema: oneServer, notFoundOk: true, what: `look at server ${ref.data.serverId}` });
      if (got && this.ours(got.server, h.id)) return await this.machineOf(h.id, got.server, region);
    }
    // No reference (a controller that stopped before recording it), or it no longer names this instance's server.
    const found = await this.find(h.id, region);
    if (found) return await this.machineOf(h.id, found, region);
    return { id: h.id, state: 'gone', providerRef: h.providerRef, message: 'Nova has no server for it' };
  }

  /**
   * This controller's servers in every region it knows of. Servers in ERROR or shelved are
   * listed too, as gone: they hold quota until deleted, and the controller deletes what it does
   * not know. A server being deleted is not listed.
   */
  async list(): Promise<Machine[]> {
    const out: Machine[] = [];
    for (const region of this.regions) {
      const servers = await this.servers(region, `^${NAME_PREFIX}`);
      const byInstance = new Map<string, Server[]>();
      for (const s of servers) {
        const inst = s.metadata[META.instance];
        if (inst === undefined || !this.ours(s, inst)) continue;
        byInstance.set(inst, [...(byInstance.get(inst) ?? []), s]);
      }
      for (const [inst, list] of byInstance) {
        // A server being deleted is on its way out: neither listed nor counted as the one to keep.
        const s = await this.keepOldest(list.filter((x) => x['OS-EXT-STS:task_state'] !== 'deleting'), region);
        if (s) out.push(await this.machineOf(inst, s, region));
      }
    }
    return out;
  }

  async destroy(h: InstanceHandle): Promise<void> {
    // A request on its way is let finish: its server is the one to delete.
    await this.requests.get(h.id)?.catch(() => undefined);
    const ref = refSchema.safeParse(h.providerRef);
    const region = ref.success ? ref.data.region : this.opts.credentials.region;
    const ids = new Set<string>();
    if (ref.success) {
      const got = await this.client.call('compute', 'GET', `/servers/${encodeURIComponent(ref.data.serverId)}`, { region, schema: oneServer, notFoundOk: true, what: `look at server ${ref.data.serverId}` });
      if (got && this.ours(got.server, h.id)) ids.add(got.server.id);
    }
    for (const s of await this.named(h.id, region)) ids.add(s.id);
    for (const serverId of ids) await this.deleteServer(serverId, region);
  }

  onExit(_listener: (instanceId: string, info: ExitInfo) => void): void {
    // An agent on a server is heard of by its missed heartbeats.
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.requests.values()]);
  }

  // --- Nova ------------------------------------------------------------------------------------

  /** Whether a server is this controller's for that instance (its name and metadata agree). */
  private ours(s: Server, instanceId: string): boolean {
    return s.name === `${NAME_PREFIX}${instanceId}` && s.metadata[META.instance] === instanceId && s.metadata[META.controller] === this.opts.controllerId;
  }

  /** Every server of this controller for an instance (Nova's name filter is a regular expression, so anchored, and checked again). */
  private async named(instanceId: string, region: string | undefined): Promise<Server[]> {
    const servers = await this.servers(region, `^${NAME_PREFIX}${instanceId.replace(/[.]/g, '\\.')}$`);
    return servers.filter((s) => this.ours(s, instanceId));
  }

  /** The instance's server, if any; duplicates (see the module's comment) are deleted, the oldest kept. */
  private async find(instanceId: string, region: string | undefined): Promise<Server | undefined> {
    const list = (await this.named(instanceId, region)).filter((s) => s['OS-EXT-STS:task_state'] !== 'deleting');
    return this.keepOldest(list, region);
  }

  private async keepOldest(list: Server[], region: string | undefined): Promise<Server | undefined> {
    if (list.length <= 1) return list[0];
    const sorted = [...list].sort((a, b) => (a.created ?? '').localeCompare(b.created ?? '') || a.id.localeCompare(b.id));
    for (const dup of sorted.slice(1)) await this.deleteServer(dup.id, region);
    return sorted[0];
  }

  /** `GET /servers/detail` filtered by name, every page (by marker: a `next` link may name an internal host). */
  private async servers(region: string | undefined, nameRegex: string): Promise<Server[]> {
    const all: Server[] = [];
    let marker: string | undefined;
    for (let page = 0; page < 1000; page++) {
      const q = new URLSearchParams({ name: nameRegex, limit: String(this.pageSize), ...(marker !== undefined ? { marker } : {}) });
      const got = await this.client.call('compute', 'GET', `/servers/detail?${q.toString()}`, { region, schema: serverPage, what: 'list servers' });
      const servers = got?.servers ?? [];
      all.push(...servers);
      if (servers.length < this.pageSize) return all;
      marker = servers[servers.length - 1]!.id;
    }
    throw new OpenStackError('malformed', 'openstack: list servers: more than 1000 pages', { retryable: true });
  }

  private async deleteServer(serverId: string, region: string | undefined): Promise<void> {
    await this.client.call('compute', 'DELETE', `/servers/${encodeURIComponent(serverId)}`, { region, notFoundOk: true, what: `delete server ${serverId}` });
  }

  private refOf(serverId: string, region: string | undefined, flavor: string | undefined): Record<string, unknown> {
    return { serverId, ...(region !== undefined ? { region } : {}), ...(flavor !== undefined ? { flavor } : {}) };
  }

  private async machineOf(instanceId: string, s: Server, region: string | undefined): Promise<Machine> {
    const flavor = s.flavor?.original_name ?? (s.flavor?.id !== undefined ? await this.flavorName(s.flavor.id, region) : undefined);
    const providerRef = this.refOf(s.id, region, flavor);
    if (s['OS-EXT-STS:task_state'] === 'deleting') return { id: instanceId, state: 'gone', providerRef, message: `server ${s.id} is being deleted` };
    if (GONE_STATES.has(s.status)) {
      const fault = s.fault?.message ? `: ${s.fault.message.slice(0, 500)}` : '';
      return { id: instanceId, state: 'gone', providerRef, message: `server ${s.id} is ${s.status}${fault}` };
    }
    const ip = s.status === 'BUILD' || s.status === 'REBUILD' ? undefined : addressOf(s);
    if (ip === undefined) return { id: instanceId, state: 'pending', providerRef };
    // The port and folder are the agent's on the server: it tells them when it joins and starts the instance.
    return { id: instanceId, state: 'running', ip, providerRef };
  }

  // --- names to ids ----------------------------------------------------------------------------

  private resolve(s: OpenStackProviderSettings, region: string | undefined): Promise<Resolved> {
    const key = JSON.stringify([region ?? null, s.flavor, s.image, s.network]);
    let p = this.resolved.get(key);
    if (!p) {
      p = (async () => {
        const flavor = await this.flavorOf(s.flavor, region);
        return { flavorId: flavor.id, flavorName: flavor.name, imageId: await this.imageId(s.image, region), networkId: await this.networkId(s.network, region) };
      })();
      this.resolved.set(key, p);
      p.catch(() => this.resolved.delete(key));
    }
    return p;
  }

  /** The region's flavors, every page; `fresh` lists them again (one made since). */
  private flavors(region: string | undefined, fresh = false): Promise<{ id: string; name: string }[]> {
    const key = region ?? '';
    let p = this.flavorLists.get(key);
    if (!p || fresh) {
      p = (async () => {
        const all: { id: string; name: string }[] = [];
        let marker: string | undefined;
        for (let page = 0; page < 100; page++) {
          const q = new URLSearchParams({ limit: '1000', ...(marker !== undefined ? { marker } : {}) });
          const got = await this.client.call('compute', 'GET', `/flavors?${q.toString()}`, { region, schema: flavorPage, what: 'list flavors' });
          const flavors = got?.flavors ?? [];
          all.push(...flavors);
          if (flavors.length < 1000) break;
          marker = flavors[flavors.length - 1]!.id;
        }
        return all;
      })();
      this.flavorLists.set(key, p);
      p.catch(() => this.flavorLists.delete(key));
    }
    return p;
  }

  /** A flavor's name for a server's flavor id (the id itself if it cannot be told now). */
  private async flavorName(flavorId: string, region: string | undefined): Promise<string> {
    const list = await this.flavors(region).catch(() => []);
    return list.find((f) => f.id === flavorId)?.name ?? flavorId;
  }

  private async flavorOf(want: string, region: string | undefined): Promise<{ id: string; name: string }> {
    let flavors = await this.flavors(region);
    if (!flavors.some((f) => f.id === want || f.name === want)) flavors = await this.flavors(region, true);
    const byId = flavors.find((f) => f.id === want);
    if (byId) return byId;
    const matches = flavors.filter((f) => f.name === want);
    if (matches.length === 1) return matches[0]!;
    if (matches.length > 1) throw settingsError('flavor', `${matches.length} flavors are named ${JSON.stringify(want)}${regionText(region)} (${matches.map((f) => f.id).join(', ')}): give the id`);
    throw settingsError('flavor', `no flavor ${JSON.stringify(want)}${regionText(region)}`);
  }

  private async imageId(want: string, region: string | undefined): Promise<string> {
    // An id is Nova's to check: one call fewer per new setting.
    if (UUID.test(want)) return want;
    const got = await this.client.call('image', 'GET', `/v2/images?${new URLSearchParams({ name: want, limit: '100' }).toString()}`, { region, schema: imageList, what: `find image ${want}` });
    const images = (got?.images ?? []).filter((i) => i.name === want && (i.status === undefined || i.status === 'active'));
    if (images.length === 1) return images[0]!.id;
    if (images.length > 1) throw settingsError('image', `${images.length} active images are named ${JSON.stringify(want)}${regionText(region)} (${images.map((i) => i.id).join(', ')}): give the id`);
    throw settingsError('image', `no active image ${JSON.stringify(want)}${regionText(region)}`);
  }

  private async networkId(want: string, region: string | undefined): Promise<string> {
    if (UUID.test(want)) {
      const got = await this.client.call('network', 'GET', `/v2.0/networks/${encodeURIComponent(want)}`, { region, schema: oneNetwork, notFoundOk: true, what: `look at network ${want}` });
      if (got) return got.network.id;
    }
    const got = await this.client.call('network', 'GET', `/v2.0/networks?${new URLSearchParams({ name: want }).toString()}`, { region, schema: networkList, what: `find network ${want}` });
    const nets = (got?.networks ?? []).filter((n) => n.name === want);
    if (nets.length === 1) return nets[0]!.id;
    if (nets.length > 1) throw settingsError('network', `${nets.length} networks are named ${JSON.stringify(want)}${regionText(region)} (${nets.map((n) => n.id).join(', ')}): give the id`);
    throw settingsError('network', `no network ${JSON.stringify(want)}${regionText(region)} that this project can see`);
  }
}

/**
 * The server's fixed IPv4 address (what the controller and the other roles reach it at, on the
 * network it was made on: Drover attaches exactly one); a floating address only if it has no
 * fixed one. Networks are taken in name order, so the choice is stable.
 */
function addressOf(s: Server): string | undefined {
  const all = Object.keys(s.addresses)
    .sort()
    .flatMap((net) => s.addresses[net] ?? [])
    .filter((a) => (a.version ?? (a.addr.includes(':') ? 6 : 4)) === 4 && /^\d{1,3}(\.\d{1,3}){3}$/.test(a.addr));
  return (all.find((a) => a['OS-EXT-IPS:type'] !== 'floating') ?? all[0])?.addr;
}

/**
 * The provider as the controller makes it: credentials from OS_* in `env`. Throws an
 * {@link OpenStackError} of kind `config` naming a missing or wrong variable.
 */
export function openStackProviderFromEnv(env: NodeJS.ProcessEnv, opts: Omit<OpenStackProviderOptions, 'credentials'>): OpenStackProvider {
  return new OpenStackProvider({ ...opts, credentials: credentialsFromEnv(env) });
}

/**
 * The controller's factory (router-factories.ts, `--provider openstack`): credentials from the
 * OS_* variables; DROVER_OPENSTACK_PROVISION_TIMEOUT (seconds, default 900) for how long a server
 * may take until its agent says hello; DROVER_OPENSTACK_BILLING (hour, minute, second or none;
 * default hour) for how the operator bills a server. A missing or wrong setting stops the controller's start
 * with the variable named.
 */
export function openStackFactory(ctx: CloudProviderContext): OpenStackProvider {
  const raw = ctx.env.DROVER_OPENSTACK_PROVISION_TIMEOUT?.trim();
  const seconds = raw ? Number(raw) : 900;
  if (!Number.isInteger(seconds) || seconds < 60 || seconds > 86_400) {
    throw new CloudSettingError(`DROVER_OPENSTACK_PROVISION_TIMEOUT=${raw}: expected whole seconds from 60 to 86400`);
  }
  const billingText = ctx.env.DROVER_OPENSTACK_BILLING?.trim();
  const billing = billingText ? parseBilling(billingText) : undefined;
  if (billingText && billing === undefined) {
    throw new CloudSettingError(`DROVER_OPENSTACK_BILLING=${billingText}: expected ${Object.keys(BILLING_WORDS).join(', ')} (how the cloud's operator bills a server)`);
  }
  try {
    return openStackProviderFromEnv(ctx.env, { controllerId: ctx.controllerId, provisionTimeoutMs: seconds * 1000, ...(billing !== undefined ? { billing } : {}) });
  } catch (err) {
    if (err instanceof OpenStackError && err.kind === 'config') throw new CloudSettingError(err.message.replace(/^openstack: /, ''), { cause: err });
    throw err;
  }
}
