/**
 * The ec2 provider: instances are Amazon EC2 virtual machines (docs/cloud.md).
 *
 * - **request**: `RunInstances` with `ClientToken` = the instance id (a request repeated after a
 *   crash gets the machine already made, never a second), one machine, the role's settings
 *   (image, type, subnet, security groups, key pair, IAM profile), the user data the controller
 *   made (controller/bootstrap.ts), IMDSv2 required, shutdown = terminate, and tags naming the
 *   app, role, instance id and this controller (`drover:*`) plus the role's own tags.
 * - **describe / list**: `DescribeInstances` by EC2 id (the reference), or by the `drover:instance`
 *   tag when the reference is not known (a crash between request and record); `list` is every
 *   machine tagged with this controller's id in the regions it knows. pending/running are
 *   themselves; shutting-down, terminated, stopping and stopped are gone, with EC2's reason.
 * - **destroy**: `TerminateInstances`; an id EC2 does not know is fine (idempotent).
 *
 * Credentials come from the AWS SDK's default chain only (environment, shared files, SSO, the
 * instance or task role) — never from an app file. One client per region, cached. Throttling is
 * retried by the SDK's standard retry strategy within `maxAttempts`; what is left (capacity,
 * limits, auth, a bad AMI or subnet) is rejected as an {@link Ec2Error} naming EC2's code, and
 * the controller's provisioning turns it into an event and retries with backoff.
 */
import { createHash } from 'node:crypto';
import type { EC2Client, Filter, Instance, RunInstancesCommandInput } from '@aws-sdk/client-ec2';
import { RESERVED_TAG_PREFIX, type Ec2ProviderSettings } from '../../core/index.js';
import { CloudSettingError, type CloudProviderContext } from './router-factories.js';
import type { CreateInstanceRequest, ExitInfo, InstanceHandle, Machine, Provider } from './types.js';

/** The AWS SDK, loaded when an EC2 provider is made: a controller without one never pays for loading it. */
type Sdk = typeof import('@aws-sdk/client-ec2');
let sdkLoading: Promise<Sdk> | undefined;
const sdk = (): Promise<Sdk> =>
  (sdkLoading ??= import('@aws-sdk/client-ec2').catch((err: unknown) => {
    sdkLoading = undefined; // tried again by the next call
    throw err;
  }));

/** @default 10 minutes: an EC2 machine boots in about a minute; Node and the agent take one or two more on a bare image. */
export const EC2_PROVISION_TIMEOUT_MS = 10 * 60_000;
/** The tags Drover writes on every machine. */
export const EC2_TAGS = { app: `${RESERVED_TAG_PREFIX}app`, role: `${RESERVED_TAG_PREFIX}role`, instance: `${RESERVED_TAG_PREFIX}instance`, controller: `${RESERVED_TAG_PREFIX}controller` } as const;

/** EC2 error codes that will not change by asking again soon: told as such (the backoff still retries). */
const LASTING = /^(UnauthorizedOperation|AuthFailure|InvalidAMIID\.|InvalidSubnetID\.|InvalidGroup\.|InvalidKeyPair\.|InvalidParameter|InstanceLimitExceeded|VcpuLimitExceeded|InvalidClientTokenId|OptInRequired|Blocked)/;

export class Ec2Error extends Error {
  override readonly name = 'Ec2Error';
  constructor(
    readonly code: string,
    message: string,
    /** Whether asking again later may work (capacity, throttling) rather than needing a change (auth, a bad setting, a limit). */
    readonly retryable: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface Ec2ProviderOptions {
  /** This controller's id, written as `drover:controller` on every machine; `list` sees only these. */
  readonly controllerId: string;
  /** @default {@link EC2_PROVISION_TIMEOUT_MS} */
  readonly provisionTimeoutMs?: number;
  /** An EC2 endpoint other than AWS's (a test's fake): env DROVER_EC2_ENDPOINT or AWS_ENDPOINT_URL_EC2. */
  readonly endpoint?: string;
  /** Attempts per call by the SDK's standard retry strategy (throttling, 5xx). @default 4 */
  readonly maxAttempts?: number;
  /** Regions looked in by `list` besides those asked for since the start (orphans after a crash). */
  readonly regions?: readonly string[];
  /** The port reserved for the role on a machine (each machine has its own address). @default 8080 */
  readonly port?: number;
}

/** Where a machine's agent keeps instance folders (the node's `--data-dir`). */
const WORKDIR = '/var/lib/drover/instances';

type Ref = { region: string; ec2Id: string };

function refOf(h: InstanceHandle): Ref | undefined {
  const r = h.providerRef;
  return r && typeof r.region === 'string' && typeof r.ec2Id === 'string' ? { region: r.region, ec2Id: r.ec2Id } : undefined;
}

/** EC2 takes client tokens of at most 64 ASCII characters: a longer instance id is hashed. */
export function clientToken(instanceId: string): string {
  return /^[\x21-\x7e]{1,64}$/.test(instanceId) ? instanceId : `drover-${createHash('sha256').update(instanceId).digest('hex').slice(0, 56)}`;
}

export class Ec2Provider implements Provider {
  readonly name = 'ec2';
  readonly provisionTimeoutMs: number;
  private readonly clients = new Map<string, EC2Client>();
  private readonly regions: Set<string>;
  private readonly requests = new Map<string, Promise<Machine>>();

  constructor(private readonly o: Ec2ProviderOptions) {
    this.provisionTimeoutMs = o.provisionTimeoutMs ?? EC2_PROVISION_TIMEOUT_MS;
    this.regions = new Set(o.regions ?? []);
    // Loaded now, in the background, so a first request does not wait for it; a failure is the first call's to report.
    sdk().catch(() => undefined);
  }

  async ready(): Promise<void> {
    await sdk();
  }

  private async client(region: string): Promise<EC2Client> {
    let c = this.clients.get(region);
    if (!c) {
      const { EC2Client } = await sdk();
      // Another call may have made it while the SDK loaded.
      c = this.clients.get(region) ?? new EC2Client({ region, maxAttempts: this.o.maxAttempts ?? 4, retryMode: 'standard', ...(this.o.endpoint ? { endpoint: this.o.endpoint } : {}) });
      this.clients.set(region, c);
    }
    this.regions.add(region);
    return c;
  }

  /** A call to EC2; its failure becomes an {@link Ec2Error} that names EC2's code and what was asked. */
  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw ec2Error(what, err);
    }
  }

  request(req: CreateInstanceRequest): Promise<Machine> {
    let p = this.requests.get(req.instanceId);
    if (!p) {
      p = this.run(req).finally(() => this.requests.delete(req.instanceId));
      this.requests.set(req.instanceId, p);
    }
    return p;
  }

  private async run(req: CreateInstanceRequest): Promise<Machine> {
    const s = req.settings;
    if (!s || s.kind !== 'ec2') throw new Ec2Error('InvalidSettings', `instance ${req.instanceId}: the ec2 provider needs a provider: block of kind ec2`, false);
    if (!req.userData) throw new Ec2Error('InvalidSettings', `instance ${req.instanceId}: no user data to boot it with`, false);
    const input = runInput(req, s, this.o.controllerId);
    const out = await this.call(`RunInstances in ${s.region} (${s.instanceType}, ${s.image})`, async () => (await this.client(s.region)).send(new (await sdk()).RunInstancesCommand(input)));
    const inst = out.Instances?.[0];
    if (!inst?.InstanceId) throw new Ec2Error('InvalidResponse', `RunInstances in ${s.region} answered without an instance`, true);
    return this.machine(req.instanceId, s.region, inst);
  }

  async describe(handles: readonly InstanceHandle[]): Promise<Machine[]> {
    const out = new Map<number, Machine>();
    // By EC2 id, per region; without a reference, by tag in every region known.
    const byRegion = new Map<string, { k: number; ref: Ref }[]>();
    const unknown: number[] = [];
    for (const [k, h] of handles.entries()) {
      const ref = refOf(h);
      if (ref) byRegion.set(ref.region, [...(byRegion.get(ref.region) ?? []), { k, ref }]);
      else unknown.push(k);
    }
    for (const [region, items] of byRegion) {
      const found = await this.find(region, [{ Name: 'instance-id', Values: items.map((i) => i.ref.ec2Id) }]);
      for (const { k, ref } of items) {
        const inst = found.find((i) => i.InstanceId === ref.ec2Id);
        out.set(k, inst ? this.machine(handles[k]!.id, region, inst) : { id: handles[k]!.id, state: 'gone', providerRef: handles[k]!.providerRef, message: 'EC2 does not know it' });
      }
    }
    if (unknown.length > 0) {
      const ids = unknown.map((k) => handles[k]!.id);
      for (const region of this.regions) {
        const found = await this.find(region, [{ Name: `tag:${EC2_TAGS.instance}`, Values: ids }, { Name: `tag:${EC2_TAGS.controller}`, Values: [this.o.controllerId] }]);
        for (const k of unknown) {
          if (out.get(k)?.state === 'pending' || out.get(k)?.state === 'running') continue;
          const mine = found.filter((i) => tagOf(i, EC2_TAGS.instance) === handles[k]!.id).map((i) => this.machine(handles[k]!.id, region, i));
          const best = mine.find((m) => m.state !== 'gone') ?? mine[0];
          if (best) out.set(k, best);
        }
      }
    }
    return handles.map((h, k) => out.get(k) ?? { id: h.id, state: 'gone', providerRef: h.providerRef });
  }

  async list(): Promise<Machine[]> {
    const out: Machine[] = [];
    for (const region of this.regions) {
      const found = await this.find(region, [
        { Name: `tag:${EC2_TAGS.controller}`, Values: [this.o.controllerId] },
        { Name: 'instance-state-name', Values: ['pending', 'running'] },
      ]);
      for (const i of found) {
        const id = tagOf(i, EC2_TAGS.instance);
        if (id) out.push(this.machine(id, region, i));
      }
    }
    return out.filter((m) => m.state !== 'gone');
  }

  async destroy(h: InstanceHandle): Promise<void> {
    let ref = refOf(h);
    if (!ref) {
      const [m] = await this.describe([{ id: h.id, providerRef: null }]);
      if (!m || m.state === 'gone' || !m.providerRef) return;
      ref = refOf({ id: h.id, providerRef: m.providerRef });
      if (!ref) return;
    }
    const { region, ec2Id } = ref;
    try {
      await (await this.client(region)).send(new (await sdk()).TerminateInstancesCommand({ InstanceIds: [ec2Id] }));
    } catch (err) {
      if (isServiceError(err) && err.name.startsWith('InvalidInstanceID.')) return; // never made, or long gone: fine
      throw ec2Error(`TerminateInstances ${ec2Id} in ${region}`, err);
    }
  }

  onExit(_listener: (instanceId: string, info: ExitInfo) => void): void {
    // EC2 tells nothing when an agent ends: the controller's heartbeats notice.
  }

  async close(): Promise<void> {
    for (const c of this.clients.values()) c.destroy();
    this.clients.clear();
  }

  /** Every instance matching the filters, page by page. */
  private async find(region: string, filters: Filter[]): Promise<Instance[]> {
    const out: Instance[] = [];
    let token: string | undefined;
    do {
      const page = await this.call(`DescribeInstances in ${region}`, async () =>
        (await this.client(region)).send(new (await sdk()).DescribeInstancesCommand({ Filters: filters, MaxResults: 1000, ...(token ? { NextToken: token } : {}) })),
      );
      for (const r of page.Reservations ?? []) out.push(...(r.Instances ?? []));
      token = page.NextToken;
    } while (token);
    return out;
  }

  private machine(id: string, region: string, i: Instance): Machine {
    const providerRef = {
      region, ec2Id: i.InstanceId ?? '', instanceType: i.InstanceType ?? null,
      launchedAt: i.LaunchTime ? i.LaunchTime.getTime() : null,
    };
    const state = i.State?.Name;
    if (state === 'pending') return { id, state: 'pending', providerRef };
    if (state === 'running') {
      const ip = i.PrivateIpAddress;
      return { id, state: 'running', ...(ip ? { ip, port: this.o.port ?? 8080, workdir: `${WORKDIR}/${id}` } : {}), providerRef };
    }
    const why = i.StateReason?.Message ?? i.StateTransitionReason;
    return { id, state: 'gone', providerRef, message: `EC2 says ${state ?? 'unknown'}${why ? `: ${why}` : ''}` };
  }
}

/** The RunInstances call for one instance (exported for the tests that check it). */
export function runInput(req: CreateInstanceRequest, s: Ec2ProviderSettings, controllerId: string): RunInstancesCommandInput {
  const tags = [
    ...Object.entries(s.tags ?? {}).map(([Key, Value]) => ({ Key, Value })),
    { Key: EC2_TAGS.app, Value: req.app },
    { Key: EC2_TAGS.role, Value: req.role ?? '' },
    { Key: EC2_TAGS.instance, Value: req.instanceId },
    { Key: EC2_TAGS.controller, Value: controllerId },
    // The console's name column, unless the role names its machines itself.
    ...(s.tags && Object.hasOwn(s.tags, 'Name') ? [] : [{ Key: 'Name', Value: `drover-${req.app}-${req.role ?? 'spare'}-${req.instanceId}`.slice(0, 255) }]),
  ];
  return {
    ClientToken: clientToken(req.instanceId),
    MinCount: 1,
    MaxCount: 1,
    ImageId: s.image,
    InstanceType: s.instanceType as RunInstancesCommandInput['InstanceType'],
    SubnetId: s.subnet,
    SecurityGroupIds: [...s.securityGroups],
    ...(s.keyName ? { KeyName: s.keyName } : {}),
    ...(s.iamProfile ? { IamInstanceProfile: s.iamProfile.startsWith('arn:') ? { Arn: s.iamProfile } : { Name: s.iamProfile } } : {}),
    UserData: Buffer.from(req.userData ?? '', 'utf8').toString('base64'),
    // The role's own processes must not read the machine's credentials without a token (IMDSv2).
    MetadataOptions: { HttpTokens: 'required', HttpEndpoint: 'enabled' },
    // A machine that shuts itself down is gone, not a stopped one still billed for its disk.
    InstanceInitiatedShutdownBehavior: 'terminate',
    TagSpecifications: [{ ResourceType: 'instance', Tags: tags }],
  };
}

function tagOf(i: Instance, key: string): string | undefined {
  return i.Tags?.find((t) => t.Key === key)?.Value;
}

/** An answer of EC2 itself (the SDK's service exceptions carry the request's `$metadata`), not a network failure. */
function isServiceError(err: unknown): err is Error {
  return err instanceof Error && typeof (err as { $metadata?: unknown }).$metadata === 'object';
}

/** An SDK failure as an {@link Ec2Error}: EC2's code and message, what was asked, whether it may pass. */
export function ec2Error(what: string, err: unknown): Ec2Error {
  if (err instanceof Ec2Error) return err;
  if (isServiceError(err)) {
    const e = err as Error & { $retryable?: unknown; $fault?: string };
    const code = e.name;
    const lasting = LASTING.test(code);
    const hint =
      code === 'UnauthorizedOperation' || code === 'AuthFailure' ? ' (check the controller\'s AWS credentials and their IAM policy: ec2:RunInstances, DescribeInstances, TerminateInstances, CreateTags, iam:PassRole for an instance profile)'
      : code === 'InsufficientInstanceCapacity' ? ' (EC2 has no capacity of this type there now; Drover asks again later, or choose another type or subnet)'
      : code === 'InstanceLimitExceeded' || code === 'VcpuLimitExceeded' ? ' (an account limit; raise it in Service Quotas)'
      : code === 'RequestLimitExceeded' ? ' (throttled: retried by the SDK and still refused)'
      : '';
    return new Ec2Error(code, `${what}: ${code}: ${e.message}${hint}`, !lasting, { cause: err });
  }
  const msg = err instanceof Error ? err.message : String(err);
  return new Ec2Error('NetworkError', `${what}: ${msg}`, true, { cause: err });
}

/** DROVER_EC2_PROVISION_TIMEOUT (seconds, 60 to 3600), checked. */
function timeoutFromEnv(env: NodeJS.ProcessEnv): number | undefined {
  const text = env.DROVER_EC2_PROVISION_TIMEOUT?.trim();
  if (!text) return undefined;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < 60 || n > 3600) throw new CloudSettingError(`DROVER_EC2_PROVISION_TIMEOUT=${text}: expected whole seconds from 60 to 3600`);
  return n * 1000;
}

/** `--provider ec2`: settings from the controller's environment (credentials: the SDK's chain). */
export function ec2Factory(ctx: CloudProviderContext): Ec2Provider {
  const env = ctx.env;
  const endpoint = env.DROVER_EC2_ENDPOINT?.trim() || env.AWS_ENDPOINT_URL_EC2?.trim() || undefined;
  if (endpoint) {
    try {
      new URL(endpoint);
    } catch {
      throw new CloudSettingError(`DROVER_EC2_ENDPOINT (or AWS_ENDPOINT_URL_EC2)=${endpoint}: not a URL`);
    }
  }
  const regionRe = /^[a-z]{2}(-[a-z0-9]+){1,3}-\d{1,2}$/;
  const regions = [env.DROVER_EC2_REGIONS, env.AWS_REGION, env.AWS_DEFAULT_REGION].flatMap((v) => (v ?? '').split(',')).map((r) => r.trim()).filter(Boolean);
  const bad = regions.find((r) => !regionRe.test(r));
  if (bad) throw new CloudSettingError(`DROVER_EC2_REGIONS: ${JSON.stringify(bad)} is not an AWS region such as eu-west-1`);
  const timeout = timeoutFromEnv(env);
  return new Ec2Provider({ controllerId: ctx.controllerId, regions: [...new Set(regions)], ...(endpoint ? { endpoint } : {}), ...(timeout !== undefined ? { provisionTimeoutMs: timeout } : {}) });
}
