/**
 * Providers make and destroy instances. Each instance runs exactly one agent, which connects
 * back to the controller and proves itself with the instance key it was given.
 */
export interface CreateInstanceRequest {
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
}

export interface CreatedInstance {
  readonly ip: string;
  /** The port reserved for the role (`${port}`). */
  readonly port: number;
  readonly workdir: string;
  /** Whatever the provider needs later to find the instance again (kept in the store). */
  readonly providerRef: Readonly<Record<string, unknown>>;
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
  createInstance(req: CreateInstanceRequest): Promise<CreatedInstance>;
  /** Ends the instance and everything running on it. Idempotent: destroying a gone instance is fine. */
  destroyInstance(instance: InstanceHandle): Promise<void>;
  /** Whether the instance still exists (its agent may still be starting). */
  isAlive(instance: InstanceHandle): Promise<boolean>;
  /** Called when the provider notices an instance's agent has ended. */
  onExit(listener: (instanceId: string, info: ExitInfo) => void): void;
  /** Stops watching. Instances keep running: the app outlives its controller. */
  close(): Promise<void>;
}
