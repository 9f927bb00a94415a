/**
 * What a machine costs by the clock: how each provider bills (docs/cloud.md, "Billing"), and
 * how much of a machine's paid time is left — so scale-in can, among equally good victims,
 * end the one whose paid period ends soonest (a machine still inside its minimum is paid for
 * anyway until then).
 *
 * - ec2 (Linux, on-demand or spot): per second, with a 60 s minimum.
 * - openstack: what the operator's billing says; by default per started hour, else what
 *   `DROVER_OPENSTACK_BILLING` on the controller says ({@link parseBilling}).
 * - local, ssh and joined nodes: not billed per machine by Drover's doing (none).
 */
import type { ProviderKind } from './provider-settings.js';

export interface Billing {
  /** The unit time is billed in, in seconds (1: per second, 3600: per started hour). */
  readonly granularitySeconds: number;
  /** Time billed at least, from the machine's start. */
  readonly minimumSeconds: number;
}

export const BILLING: Readonly<Record<ProviderKind, Billing | null>> = {
  local: null,
  ec2: { granularitySeconds: 1, minimumSeconds: 60 },
  openstack: { granularitySeconds: 3600, minimumSeconds: 3600 },
};

/** The billing words an operator gives (`DROVER_OPENSTACK_BILLING`): per started hour or minute, per second, or none. */
export const BILLING_WORDS = {
  hour: { granularitySeconds: 3600, minimumSeconds: 3600 },
  minute: { granularitySeconds: 60, minimumSeconds: 60 },
  second: { granularitySeconds: 1, minimumSeconds: 0 },
  none: null,
} as const satisfies Record<string, Billing | null>;

/** `hour`, `minute`, `second` or `none` → the billing; undefined for anything else. */
export function parseBilling(text: string): Billing | null | undefined {
  const w = text.trim().toLowerCase();
  return Object.hasOwn(BILLING_WORDS, w) ? BILLING_WORDS[w as keyof typeof BILLING_WORDS] : undefined;
}

/** The billing of a provider kind: the controller's setting for it where it has one, else the kind's usual. */
export function billingOf(kind: ProviderKind, overrides: Readonly<Partial<Record<ProviderKind, Billing | null>>> | undefined): Billing | null {
  return overrides && Object.hasOwn(overrides, kind) ? (overrides[kind] ?? null) : BILLING[kind];
}

/**
 * Seconds of already-paid time a machine of this age still has (0: ending it now wastes
 * nothing), or 0 when it is not billed per machine.
 */
export function paidSecondsLeft(billing: Billing | null | undefined, ageMs: number): number {
  if (!billing) return 0;
  const age = Math.max(0, ageMs / 1000);
  if (age < billing.minimumSeconds) return billing.minimumSeconds - age;
  const g = billing.granularitySeconds;
  if (g <= 1) return 0;
  const into = (age - billing.minimumSeconds) % g;
  return into === 0 ? 0 : g - into;
}

/** `4m 10s`, `59s`: how a reason says it. */
export function paidLeftText(seconds: number): string {
  const s = Math.ceil(seconds);
  return s >= 60 ? `${Math.floor(s / 60)}m${s % 60 ? ` ${s % 60}s` : ''}` : `${s}s`;
}
