/**
 * Providers make and destroy instances (machines). Each instance runs exactly one agent, which
 * connects back to the controller and proves itself with the instance key it was given.
 *
 * The seam is two-phase, so a machine that takes minutes to make (a cloud VM) never holds up
 * the controller: {@link Provider.request} asks for a machine and answers at once with what
 * identifies it; {@link Provider.describe} and {@link Provider.list} observe it (pending, running,
 * gone). Destroying is asked the same way and observed until the machine is gone.
 *
 * The instance id is the idempotency key: a request repeated with the same id returns the same
 * machine, never a second one (a cloud provider passes it as the client token), and the
 * provider can find a machine by the id alone, without the reference the store may not have
 * kept yet (a controller that crashed between the request and its record).
 */
import type { Billing, ProviderKind, ProviderSettings } from '../../core/index.js';

export interface CreateInstanceRequest {
  /** The instance id: also the idempotency key of the request. */
  readonly instanceId: string;
  readonly epoch: number;
  /**
   * The instance's key (core/auth.ts): the provider hands it to the agent privately — never in
   * an environment variable, a command line or a world-readable file — and forgets it.
   */
  readonly key: string;
  /** Where the agent reaches the controller. */
  readonly controllerUrl: string;
  /**
   * The URL of a transport that needs one (amqp: the agent's own broker user and password): a
   * secret, handed over like {@link key} (the local provider: the second line on stdin).
   */
  readonly transportUrl?: string;
  readonly app: string;
  readonly role: string | null;
  /**
   * The role's (or the app's) `provider:` settings from the app file, validated; absent when
   * the app file names none (the controller's default provider).
   */
  readonly settings?: ProviderSettings;
  /**
   * For a provider that boots a machine from an image (a cloud VM): the cloud-init user data the
   * controller made for this instance. It installs (or finds) the agent and joins with a
   * single-use, short-lived token scoped to this instance id — nothing long-lived is in it.
   */
  readonly userData?: string;
}

/** Where a running machine's agent is. */
export interface CreatedInstance {
  readonly ip: string;
  /** The port reserved for the role (`${port}`). */
  readonly port: number;
  readonly workdir: string;
  /** Whatever the provider needs later to find the instance again (kept in the store). */
  readonly providerRef: Readonly<Record<string, unknown>>;
}

/**
 * What a provider knows of a machine:
 * - `pending`: asked for, not up yet (a VM booting, a node still starting the agent);
 * - `running`: up; its address is known (`ip`, `port`, `workdir`) unless the provider could not tell;
 * - `gone`: nothing of it is left (never made, failed to boot, destroyed); `message` may say why.
 */
export type MachineState = 'pending' | 'running' | 'gone';

export interface Machine {
  /** The instance id (the idempotency key it was requested with). */
  readonly id: string;
  readonly state: MachineState;
  readonly ip?: string;
  readonly port?: number;
  readonly workdir?: string;
  /** Whatever the provider needs later to find the machine again (kept in the store); null if not known yet. */
  readonly providerRef: Readonly<Record<string, unknown>> | null;
  /** Why a machine is gone, when the provider knows. */
  readonly message?: string;
}

export interface InstanceHandle {
  readonly id: string;
  readonly providerRef: Readonly<Record<string, unknown>> | null;
}

export interface ExitInfo {
  readonly code: number | null;
  readonly signal: string | null;
}

export interface Provider {
  readonly name: string;
  /**
   * How long a machine may take from its request until its agent says hello; past it the
   * instance is failed and destroyed. The provider knows: seconds for a process, minutes for a VM.
   */
  readonly provisionTimeoutMs: number;
  /**
   * A provider over several (the router): the timeout of the one that makes machines of this kind
   * (`ec2`, `openstack`; undefined or `local`: the default chain's).
   */
  provisionTimeoutFor?(kind: string | undefined): number;
  /**
   * How its machines are billed, where it knows better than its kind's usual (core/billing.ts):
   * an OpenStack operator's own granularity. Undefined: the usual.
   */
  readonly billing?: Billing | null;
  /** A provider over several (the router): each kind's {@link billing} where one is set. */
  billingOverrides?(): Partial<Record<ProviderKind, Billing | null>>;
  /**
   * Resolves once requests answer at once: a provider that loads its cloud's client library in
   * the background (ec2) is ready when it has. Absent: always ready. Requests made before simply
   * wait for it.
   */
  ready?(): Promise<void>;
  /**
   * Asks for a machine and answers promptly, without waiting for it to boot. Idempotent by
   * `req.instanceId`: asked again (even by another controller process), it answers with the
   * machine it already made. Rejects if the provider refused outright (no capacity, a bad setting).
   */
  request(req: CreateInstanceRequest): Promise<Machine>;
  /** What each machine is now, one answer per handle in the same order (`gone` for one never made or already destroyed). */
  describe(handles: readonly InstanceHandle[]): Promise<Machine[]>;
  /** Every machine this provider made for this controller that is not gone: what finds orphans after a crash. */
  list(): Promise<Machine[]>;
  /**
   * Asks for the machine and everything running on it to end. Idempotent: destroying a gone
   * machine is fine. It may return before the machine is gone: {@link describe} says when.
   */
  destroy(instance: InstanceHandle): Promise<void>;
  /** Called when the provider notices an instance's agent has ended. */
  onExit(listener: (instanceId: string, info: ExitInfo) => void): void;
  /** Stops watching. Instances keep running: the app outlives its controller. */
  close(): Promise<void>;
}
