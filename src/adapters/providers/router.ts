/**
 * The provider router: one {@link Provider} over the controller's default chain (joined hosts,
 * then this machine or its ssh hosts) and the cloud providers it was started with
 * (`--provider ec2 --provider openstack`). A request goes to the provider its role's `provider:`
 * block names (none, or `kind: local`: the default chain); describe and destroy go to the
 * provider recorded in the machine's reference (`providerRef.provider`), which the router writes
 * into every reference it hands out; list is the union.
 *
 * A reference without `provider` (a record from before the router, or none at all after a crash
 * between request and record) belongs to the default chain — and, for a handle with no reference,
 * to whichever provider has a machine of that id (each is asked: the id is every provider's key).
 */
import type { Billing, ProviderKind, ProviderSettings } from '../../core/index.js';
import type { CreateInstanceRequest, ExitInfo, InstanceHandle, Machine, Provider } from './types.js';

/** The kinds a controller may be started with (`local` is always there: the default chain). */
export type CloudKind = Exclude<ProviderKind, 'local'>;

/** The name written into the references of the default chain's machines. */
export const DEFAULT_PROVIDER = 'local';

/** A role asked for a provider this controller does not run. */
export class ProviderNotConfiguredError extends Error {
  override readonly name = 'ProviderNotConfiguredError';
  constructor(readonly kind: string) {
    super(`the controller runs no ${kind} provider (start it with --provider ${kind})`);
  }
}

export interface ProviderRouterOptions {
  /** The default chain: what runs an instance without a `provider:` block (or with `kind: local`). */
  readonly fallback: Provider;
  /** The cloud providers this controller runs, by kind. */
  readonly clouds?: Partial<Record<CloudKind, Provider>>;
}

const kindOf = (settings: ProviderSettings | undefined): string => (settings === undefined || settings.kind === 'local' ? DEFAULT_PROVIDER : settings.kind);

export class ProviderRouter implements Provider {
  private readonly fallback: Provider;
  private readonly clouds: ReadonlyMap<string, Provider>;

  constructor(o: ProviderRouterOptions) {
    this.fallback = o.fallback;
    this.clouds = new Map(Object.entries(o.clouds ?? {}).filter((e): e is [string, Provider] => e[1] !== undefined));
  }

  get name(): string {
    return this.clouds.size === 0 ? this.fallback.name : [this.fallback.name, ...this.clouds.keys()].join('+');
  }

  /** The default chain's: what the planner waits for an instance without a cloud. */
  get provisionTimeoutMs(): number {
    return this.fallback.provisionTimeoutMs;
  }

  /** The kinds a role may ask for: `local` and the clouds this controller runs. */
  kinds(): string[] {
    return [DEFAULT_PROVIDER, ...this.clouds.keys()];
  }

  /** Whether a role with these settings can be served here. */
  serves(settings: ProviderSettings | undefined): boolean {
    const k = kindOf(settings);
    return k === DEFAULT_PROVIDER || this.clouds.has(k);
  }

  /** How long the provider of this kind lets a machine take to come up (the default chain's for an unknown kind). */
  provisionTimeoutFor(kind: string | undefined): number {
    return (kind === undefined ? undefined : this.byName(kind))?.provisionTimeoutMs ?? this.fallback.provisionTimeoutMs;
  }

  /** Each cloud's billing where its provider sets one (the planner's `billing`). */
  billingOverrides(): Partial<Record<ProviderKind, Billing | null>> {
    const out: Partial<Record<ProviderKind, Billing | null>> = {};
    for (const [k, p] of this.clouds) if (p.billing !== undefined) out[k as ProviderKind] = p.billing;
    return out;
  }

  /** Each kind's provisioning timeout, for the planner. */
  provisionTimeouts(): Record<string, number> {
    return Object.fromEntries(this.all().map(([k, p]) => [k, p.provisionTimeoutMs]));
  }

  /** The provider that makes machines with these settings; undefined if this controller runs none. */
  providerFor(settings: ProviderSettings | undefined): Provider | undefined {
    const k = kindOf(settings);
    return k === DEFAULT_PROVIDER ? this.fallback : this.clouds.get(k);
  }

  async request(req: CreateInstanceRequest): Promise<Machine> {
    const kind = kindOf(req.settings);
    const p = kind === DEFAULT_PROVIDER ? this.fallback : this.clouds.get(kind);
    if (!p) throw new ProviderNotConfiguredError(kind);
    return tag(await p.request(req), kind);
  }

  async describe(handles: readonly InstanceHandle[]): Promise<Machine[]> {
    const out: (Machine | undefined)[] = handles.map(() => undefined);
    const groups = new Map<string, number[]>();
    const unknown: number[] = [];
    for (const [k, h] of handles.entries()) {
      const kind = recordedKind(h);
      if (kind === undefined) unknown.push(k);
      else groups.set(kind, [...(groups.get(kind) ?? []), k]);
    }
    await Promise.all(
      [...groups].map(async ([kind, at]) => {
        const p = this.byName(kind);
        if (!p) {
          // A machine of a provider this controller no longer runs: it cannot be seen; say so rather than call it gone.
          for (const k of at) out[k] = { id: handles[k]!.id, state: 'pending', providerRef: handles[k]!.providerRef, message: `the controller runs no ${kind} provider now` };
          return;
        }
        const seen = await p.describe(at.map((k) => handles[k]!));
        for (const [j, k] of at.entries()) out[k] = tag(seen[j] ?? gone(handles[k]!), kind);
      }),
    );
    if (unknown.length > 0) {
      // No reference: the default chain's (records from before the router), unless a cloud has a machine of that id.
      const hs = unknown.map((k) => handles[k]!);
      const answers = await Promise.all(this.all().map(async ([kind, p]) => ({ kind, seen: await p.describe(hs) })));
      for (const [j, k] of unknown.entries()) {
        const found = answers.find((a) => a.seen[j] && a.seen[j].state !== 'gone');
        out[k] = found ? tag(found.seen[j]!, found.kind) : tag(answers[0]?.seen[j] ?? gone(hs[j]!), DEFAULT_PROVIDER);
      }
    }
    return out.map((m, k) => m ?? gone(handles[k]!));
  }

  async list(): Promise<Machine[]> {
    const lists = await Promise.all(this.all().map(async ([kind, p]) => (await p.list()).map((m) => tag(m, kind))));
    return lists.flat();
  }

  async destroy(instance: InstanceHandle): Promise<void> {
    const kind = recordedKind(instance);
    if (kind !== undefined) {
      const p = this.byName(kind);
      if (!p) throw new ProviderNotConfiguredError(kind);
      return p.destroy(instance);
    }
    // Not known where it is: every provider ends whatever it has of that id (destroy is idempotent).
    await Promise.all(this.all().map(([, p]) => p.destroy(instance)));
  }

  onExit(listener: (instanceId: string, info: ExitInfo) => void): void {
    for (const [, p] of this.all()) p.onExit(listener);
  }

  async ready(): Promise<void> {
    await Promise.all(this.all().map(async ([, p]) => p.ready?.()));
  }

  async close(): Promise<void> {
    await Promise.all(this.all().map(([, p]) => p.close()));
  }

  private all(): [string, Provider][] {
    return [[DEFAULT_PROVIDER, this.fallback], ...this.clouds];
  }

  private byName(kind: string): Provider | undefined {
    return kind === DEFAULT_PROVIDER ? this.fallback : this.clouds.get(kind);
  }
}

function recordedKind(h: InstanceHandle): string | undefined {
  if (h.providerRef === null) return undefined;
  const k = h.providerRef.provider;
  return typeof k === 'string' ? k : DEFAULT_PROVIDER;
}

function gone(h: InstanceHandle): Machine {
  return { id: h.id, state: 'gone', providerRef: h.providerRef };
}

/** The machine with `provider: kind` in its reference (a reference not known yet stays null). */
function tag(m: Machine, kind: string): Machine {
  if (m.providerRef === null || m.providerRef.provider === kind) return m;
  return { ...m, providerRef: { ...m.providerRef, provider: kind } };
}
