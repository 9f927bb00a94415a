/**
 * What the controller's jobs share: the adapters, the clock, the live view of agents, the event
 * log and the reconcile queue. Each job (reconcile, execute actions, apply reports, scrape) gets
 * this and holds only its own logic.
 */
import type { Logger } from 'pino';
import type { BalancerStatus, BundleRef, Clock, ImportedMember, TenantReport, Vitals } from '../core/index.js';
import type { EventRecord, NewEvent, Store, StoredApp } from '../adapters/store/index.js';
import type { Provider } from '../adapters/providers/index.js';
import type { ControllerTransport } from '../adapters/transport/index.js';
import type { ControllerMetrics } from './metrics.js';

/** What the controller knows of a connected agent that is not worth storing: when it last spoke, its vitals. */
export interface LiveInfo {
  lastSeenAt: number;
  vitals?: Vitals;
  balancer?: BalancerStatus;
  /** The tenants the agent last reported (level-triggered: each heartbeat carries them all). */
  tenants?: Readonly<Record<string, TenantReport>>;
}

export type EventInput = Omit<NewEvent, 'at' | 'data'> & { data?: NewEvent['data'] };

export interface ControllerContext {
  readonly store: Store;
  readonly provider: Provider;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: ControllerMetrics;
  /** By instance id. */
  readonly live: Map<string, LiveInfo>;
  /** Undefined until the controller starts. */
  transport(): ControllerTransport | undefined;
  /** Where agents reach the controller. */
  controllerUrl(): string;
  /** Stores an event, logs it, and tells listeners (the API's long-polls). */
  record(ev: EventInput): Promise<EventRecord>;
  /** Asks for a reconcile pass of the app soon. */
  enqueue(app: string): void;
  /** What an assign order says of the app bundle (docs/fleet.md): none, one, or why there is none. */
  bundleFor?(app: StoredApp, instanceId: string): Promise<{ bundle?: BundleRef; bundleError?: string }>;
  /** The epoch of the leader lease this controller acts under (0 while it does not lead). */
  leaderEpoch(): number;
}

/** The serving members of every role of an app, with their stored (controller-checked) exports. */
export async function servingMembers(store: Store, app: string): Promise<Record<string, ImportedMember[]>> {
  const out: Record<string, ImportedMember[]> = Object.create(null) as Record<string, ImportedMember[]>;
  for (const i of await store.listInstances({ app })) {
    if (i.role && i.goal === 'run' && i.state === 'serving' && i.exports) (out[i.role] ??= []).push({ instance: i.id, exports: i.exports });
  }
  return out;
}
