/**
 * Tenant placement: the pure choice of an instance for each pending tenant, of how many new
 * instances the rest need, and (on request) of which instances could be emptied by moving
 * tenants. Functions of a snapshot and a time; the controller and the simulator call the same
 * code. The store makes each choice safe under concurrency (`reserveSeat` locks the instance
 * and counts its seats again): a plan made on a stale snapshot can lose a seat, never overfill one.
 *
 * @example
 * ```ts
 * const plan = placeTenants({
 *   role: 'web', capacity: 20, max: 5, live: 2, now: clock.now(),
 *   instances: [
 *     { id: 'i-1', role: 'web', state: 'serving', tenants: 18 },
 *     { id: 'i-2', role: 'web', state: 'starting', tenants: 0 },
 *   ],
 *   pending: signUps.map((t) => ({ id: t.id, since: t.createdAt })), // arrival order
 * });
 * // plan.placements: 2 onto i-1 (addable), 20 onto i-2 (reserved: it is still booting)
 * // plan.newInstances: ceil(rest / 20), never beyond max − live
 * // plan.waiting: the rest, each with the reason it waits
 * ```
 *
 * **Why best fit (the fullest instance with room).** Every tenant takes one seat, so best fit
 * fills one instance completely before it touches the next: tenants gather on few instances and
 * the others stay empty or light. An empty instance can be scaled in without moving anybody, and
 * a light one is cheap to empty by consolidation; spreading tenants evenly (worst fit) would
 * leave every instance partly used, so nothing could ever leave without moves. With one seat
 * per tenant, best fit is also optimal: it never opens a new instance while a seat is free.
 */
import type { InstanceState } from './states.js';
import type { TenantState } from './tenants.js';

/** Where a seat can go on an instance: now (`open`), once it has booted (`coming`), or not at all. */
export type SeatAvailability = 'open' | 'coming' | 'closed';

/**
 * An instance made for a role passes through `spare` (its agent said hello, the role is not
 * assigned yet): booting too. A warm spare (no role) is in the same state but matches no role,
 * and callers match roles (placeTenants, the store's reserveSeat).
 */
const BOOTING: ReadonlySet<InstanceState> = new Set<InstanceState>(['provisioning', 'spare', 'assigned', 'deploying', 'waiting', 'starting']);

/**
 * How placement sees an instance of a role. `serving` with goal `run`: open. Still booting
 * (`provisioning` to `starting`, `spare` included) with goal `run`: coming — its seats are
 * capacity on its way. Anything else — draining, stopping, unresponsive, failed, terminated, or
 * an instance the controller is taking away (goal `drain`/`stop`) — takes no tenant.
 */
export function seatAvailability(state: InstanceState, goal: 'run' | 'drain' | 'stop' = 'run'): SeatAvailability {
  if (goal !== 'run') return 'closed';
  if (state === 'serving') return 'open';
  return BOOTING.has(state) ? 'coming' : 'closed';
}

/** An instance as placement sees it. */
export interface PlacementInstance {
  readonly id: string;
  /** Its role; null for a spare. Instances of other roles are ignored. */
  readonly role: string | null;
  readonly state: InstanceState;
  /** What the controller wants of it. @default 'run' */
  readonly goal?: 'run' | 'drain' | 'stop';
  /** Seats taken: tenants placing, ready, moving or removing on it, and moves coming to it (the store's `seatsUsed`). */
  readonly tenants: number;
  /** Its seats. @default the role's `capacity` (a lowered capacity leaves an instance over it with no free seat) */
  readonly capacity?: number;
}

/** A tenant waiting for a seat. Each takes one seat. */
export interface PendingTenant {
  readonly id: string;
  /** When it began to wait (epoch ms); only for the wording of reasons. */
  readonly since?: number;
}

export interface PlacementInput {
  readonly role: string;
  /** Seats of a new instance: the role's `tenants.capacity`. */
  readonly capacity: number;
  /** The role's `max`. */
  readonly max: number;
  /** Instances that count toward the role's size now (provisioning … serving, goal run): what `max` bounds. */
  readonly live: number;
  readonly instances: readonly PlacementInstance[];
  /** Tenants waiting for a seat, in arrival order: the first to come is the first placed. */
  readonly pending: readonly PendingTenant[];
  readonly now: number;
}

/** A tenant put on an instance. */
export interface Placement {
  readonly tenantId: string;
  readonly instanceId: string;
  /**
   * true: the instance serves, `add` may run now. false: the seat is reserved on an instance
   * still booting; `add` waits until it serves (reserve the seat now, so nothing else takes it).
   */
  readonly addable: boolean;
}

/** A tenant left without a seat in this pass, and why (for its status). */
export interface WaitingTenant {
  readonly tenantId: string;
  /** `capacity`: new instances are ordered for it. `max`: the role is at `max`; nothing is ordered for it. */
  readonly cause: 'capacity' | 'max';
  readonly reason: string;
}

export interface PlacementPlan {
  /** In arrival order of the tenants. */
  readonly placements: readonly Placement[];
  /** Instances to create for the tenants still waiting: ⌈(pending − free seats open and on their way) / capacity⌉, at most `max − live`. */
  readonly newInstances: number;
  /** In arrival order. */
  readonly waiting: readonly WaitingTenant[];
  /** Free seats before this pass: on serving instances, and on their way (booting). */
  readonly freeSeats: { readonly open: number; readonly coming: number };
  /** One sentence a person can read: what this pass decided, and why. */
  readonly reason: string;
}

interface Bin {
  readonly id: string;
  free: number;
}

/** Bins with room, fullest first (fewest free seats), then by id so the choice is stable. */
function bins(instances: readonly PlacementInstance[], role: string, capacity: number, kind: SeatAvailability): Bin[] {
  const out: Bin[] = [];
  for (const i of instances) {
    if (i.role !== role || seatAvailability(i.state, i.goal) !== kind) continue;
    const free = (i.capacity ?? capacity) - i.tenants;
    if (free > 0) out.push({ id: i.id, free });
  }
  return out.sort((a, b) => a.free - b.free || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

const plural = (n: number, one: string, many = `${one}s`) => `${n.toLocaleString('en-US')} ${n === 1 ? one : many}`;

function duration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
}

/**
 * Places pending tenants, in arrival order: onto serving instances with room, fullest first;
 * then onto instances still booting (reserved, `addable: false`), fullest first; the rest wait.
 * For those, ⌈rest / capacity⌉ new instances are requested — seats on their way are already
 * counted, so a burst arriving while capacity is being built orders nothing more — and never
 * beyond `max − live`: tenants past that stay pending with the reason. Draining, unresponsive,
 * failed and spare instances receive nobody.
 *
 * Linear after one sort of the instances with room: O(I log I + P).
 */
export function placeTenants(input: PlacementInput): PlacementPlan {
  const { role, max, live, pending, now } = input;
  if (!Number.isInteger(input.capacity) || input.capacity < 1) throw new RangeError(`capacity must be an integer >= 1, got ${input.capacity}`);
  const capacity = input.capacity;
  const open = bins(input.instances, role, capacity, 'open');
  const coming = bins(input.instances, role, capacity, 'coming');
  const freeSeats = { open: sum(open), coming: sum(coming) };

  const placements: Placement[] = [];
  let k = 0;
  // One seat per tenant: filling bins in the order above is best fit, since the bin being
  // filled only gets fuller and so stays the fullest with room until it is full.
  for (const [list, addable] of [[open, true], [coming, false]] as const) {
    for (const bin of list) {
      while (bin.free > 0 && k < pending.length) {
        placements.push({ tenantId: pending[k]!.id, instanceId: bin.id, addable });
        bin.free--;
        k++;
      }
      if (k >= pending.length) break;
    }
  }

  const rest = pending.length - k;
  const headroom = Math.max(0, max - live);
  const needed = Math.ceil(rest / capacity);
  const newInstances = Math.min(needed, headroom);
  const waiting: WaitingTenant[] = [];
  const covered = Math.min(rest, newInstances * capacity);
  const ordered = newInstances > 0 ? `waiting for ${plural(newInstances, 'new instance')} (ordered for ${plural(covered, 'tenant')})` : '';
  const full =
    `max ${max} reached: ${plural(live, 'instance')} × ${capacity} seats full` +
    (newInstances > 0 ? ` and ${plural(newInstances, 'more instance')} ordered` : '');
  for (let j = 0; j < rest; j++) {
    const t = pending[k + j]!;
    const waited = t.since !== undefined && now > t.since ? `; pending for ${duration(now - t.since)}` : '';
    waiting.push(j < covered ? { tenantId: t.id, cause: 'capacity', reason: ordered + waited } : { tenantId: t.id, cause: 'max', reason: full + waited });
  }

  const addable = placements.filter((p) => p.addable).length;
  const parts: string[] = [];
  if (addable > 0) parts.push(`${plural(addable, 'tenant')} placed on serving instances`);
  if (placements.length > addable) parts.push(`${plural(placements.length - addable, 'tenant')} reserved on booting instances`);
  if (newInstances > 0) parts.push(`${plural(newInstances, 'new instance')} for ${plural(covered, 'tenant')} (${capacity} seats each)`);
  if (rest > covered) parts.push(`${plural(rest - covered, 'tenant')} pending: ${full}`);
  const reason =
    pending.length === 0
      ? 'no tenant pending'
      : `${role}: ${parts.join('; ')} (free seats: ${freeSeats.open} open, ${freeSeats.coming} on their way)`;
  return { placements, newInstances, waiting, freeSeats, reason };
}

function sum(list: readonly Bin[]): number {
  let n = 0;
  for (const b of list) n += b.free;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Consolidation

/** A tenant holding a seat, as consolidation sees it. */
export interface ConsolidationTenant {
  readonly id: string;
  readonly instanceId: string;
  /** Only `ready` tenants move; one placing, moving or removing keeps its instance from being emptied in this plan. @default 'ready' */
  readonly state?: TenantState;
}

export interface TenantMove {
  readonly tenantId: string;
  readonly from: string;
  readonly to: string;
}

export interface ConsolidationPlan {
  /** Moves in the order to run them (one instance emptied after the other). */
  readonly moves: readonly TenantMove[];
  /** Instances left with no tenant once the moves are done, in the order they are emptied. */
  readonly emptied: readonly string[];
  /** Serving instances holding tenants, before and after. */
  readonly before: number;
  readonly after: number;
  /** Instances saved: `emptied.length`. */
  readonly saves: number;
  /** The fewest instances that could hold these tenants: ⌈tenants / capacity⌉. */
  readonly minimum: number;
  /** Instances that hold tenants and are not emptied, with the reason (a pinned tenant, no room elsewhere, the move budget). */
  readonly kept: readonly { readonly instanceId: string; readonly reason: string }[];
  /** One sentence a person can read. */
  readonly summary: string;
}

/**
 * Which serving instances of a role could be emptied by moving their tenants onto other serving
 * instances that already hold tenants, and what it saves. Greedy, fewest moves first: instances are tried from the one
 * holding the fewest tenants up; one is emptied only if all its tenants fit elsewhere (each onto
 * the fullest instance with room, never past `capacity`), none of them is pinned or busy, and
 * the moves fit in what is left of `maxMoves`. An instance that receives tenants is not emptied
 * later (a tenant moves at most once). Tenants on instances that are not serving stay put, and
 * no instance that is not serving receives one.
 *
 * @param instances the role's instances (others are ignored through `role`); only serving ones, goal run, take part
 * @param tenants tenants holding seats on them
 * @param capacity seats per instance (the role's `tenants.capacity`)
 * @param pinned ids of tenants that must not move
 * @param maxMoves the most moves the plan may hold
 */
export function consolidationPlan(
  instances: readonly PlacementInstance[],
  tenants: readonly ConsolidationTenant[],
  capacity: number,
  pinned: ReadonlySet<string>,
  maxMoves: number,
): ConsolidationPlan {
  const open = new Map<string, { id: string; used: number; seats: number; ids: string[]; blocked: string | null; received: boolean; emptied: boolean }>();
  for (const i of instances) {
    if (seatAvailability(i.state, i.goal) !== 'open') continue;
    open.set(i.id, { id: i.id, used: 0, seats: Math.min(i.capacity ?? capacity, capacity), ids: [], blocked: null, received: false, emptied: false });
  }
  let total = 0;
  for (const t of tenants) {
    const bin = open.get(t.instanceId);
    if (!bin) continue;
    total++;
    bin.used++;
    bin.ids.push(t.id);
    if (pinned.has(t.id)) bin.blocked ??= `tenant ${t.id} is pinned`;
    else if ((t.state ?? 'ready') !== 'ready') bin.blocked ??= `tenant ${t.id} is ${t.state}`;
  }
  // Seats taken that the tenant list does not show (a move coming in) still count.
  for (const i of instances) {
    const bin = open.get(i.id);
    if (bin && i.tenants > bin.used) bin.used = i.tenants;
  }
  const bins = [...open.values()];
  const holding = bins.filter((b) => b.ids.length > 0);
  const candidates = [...holding].sort((a, b) => a.used - b.used || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));

  const moves: TenantMove[] = [];
  const emptied: string[] = [];
  const kept: { instanceId: string; reason: string }[] = [];
  let budget = Math.max(0, Math.floor(maxMoves));
  for (const src of candidates) {
    if (src.received) {
      kept.push({ instanceId: src.id, reason: 'receives tenants from an emptied instance' });
      continue;
    }
    if (src.blocked) {
      kept.push({ instanceId: src.id, reason: src.blocked });
      continue;
    }
    if (src.used !== src.ids.length) {
      kept.push({ instanceId: src.id, reason: 'a tenant is moving onto it' });
      continue;
    }
    if (src.ids.length > budget) {
      kept.push({ instanceId: src.id, reason: `${plural(src.ids.length, 'move')} needed, ${budget} left of --max-moves ${maxMoves}` });
      continue;
    }
    // Targets: instances that hold tenants already (moving onto an empty one saves nothing),
    // fullest with room first (best fit), never an emptied instance or the source.
    const targets = bins
      .filter((b) => b !== src && !b.emptied && b.used > 0 && b.seats - b.used > 0)
      .sort((a, b) => a.seats - a.used - (b.seats - b.used) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    let room = 0;
    for (const t of targets) room += t.seats - t.used;
    if (room < src.ids.length) {
      kept.push({ instanceId: src.id, reason: `no room elsewhere: ${plural(src.ids.length, 'tenant')}, ${plural(room, 'free seat')} on the other instances` });
      continue;
    }
    let ti = 0;
    for (const id of src.ids) {
      while (targets[ti]!.seats - targets[ti]!.used <= 0) ti++;
      const to = targets[ti]!;
      to.used++;
      to.received = true;
      moves.push({ tenantId: id, from: src.id, to: to.id });
    }
    budget -= src.ids.length;
    src.used = 0;
    src.emptied = true;
    emptied.push(src.id);
  }

  const before = holding.length;
  const after = before - emptied.length;
  const minimum = Math.ceil(total / capacity);
  const summary =
    emptied.length === 0
      ? `nothing to consolidate: ${plural(before, 'instance')} hold ${plural(total, 'tenant')} (fewest possible ${minimum})`
      : `empty ${emptied.join(', ')} by moving ${plural(moves.length, 'tenant')}: ${plural(emptied.length, 'instance')} saved (${before} → ${after}; fewest possible ${minimum})`;
  return { moves, emptied, before, after, saves: emptied.length, minimum, kept, summary };
}

// ---------------------------------------------------------------------------------------------
// Hosts: which host takes a new member of a role (`placement:` in the app file).

/** A host that might take a member of a role: a joined node, or this machine (`local`). */
export interface HostCandidate {
  /** The node's id, or `local` for the controller's own machine. */
  readonly id: string;
  /** The host's name: what `spread: host` spreads over. */
  readonly host: string;
  readonly labels: Readonly<Record<string, string>>;
  /** Why it cannot take an instance now (`busy`, `unreachable`); undefined if it can. */
  readonly unavailable?: string;
}

/** What a role asks of its hosts (core/types.ts `PlacementSpec`), as host placement reads it. */
export interface HostConstraints {
  readonly labels: Readonly<Record<string, string>>;
  readonly spread?: 'host';
  readonly strict: boolean;
}

export interface HostChoiceInput {
  readonly role: string | null;
  readonly constraints?: HostConstraints;
  /** In order of preference when nothing else decides (joined nodes first, this machine last). */
  readonly candidates: readonly HostCandidate[];
  /** Members of the role per host name (instances not yet gone, the new one left out). */
  readonly membersOn: ReadonlyMap<string, number>;
}

export type HostChoice = { readonly ok: true; readonly host: HostCandidate; readonly reason: string } | { readonly ok: false; readonly reason: string };

/** The labels of `want` a host lacks or has with another value, as `k=v (has k=w)`; empty if it has them all. */
export function missingLabels(want: Readonly<Record<string, string>>, have: Readonly<Record<string, string>>): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(want)) {
    if (!Object.hasOwn(have, k)) out.push(`${k}=${v}`);
    else if (have[k] !== v) out.push(`${k}=${v} (has ${k}=${have[k]})`);
  }
  return out;
}

const labelText = (l: Readonly<Record<string, string>>) => Object.entries(l).map(([k, v]) => `${k}=${v}`).join(',');

/** What a role asks, in words: "labels disk=ssd, spread over hosts (strict)". */
export function describeConstraints(c: HostConstraints | undefined): string {
  const parts: string[] = [];
  if (c && Object.keys(c.labels).length) parts.push(`labels ${labelText(c.labels)}`);
  if (c?.spread) parts.push(`spread over hosts${c.strict ? ' (strict)' : ''}`);
  return parts.length ? parts.join(', ') : 'any host';
}

/**
 * The host for a new member of `role`. A host fits when it is available, has every label asked
 * for, and (a joined node labelled `role=x`) is meant for this role. `spread: host` prefers the
 * fitting host with the fewest members of the role, candidates' order breaking ties (Kubernetes'
 * topology spread with `ScheduleAnyway`); `strict` also refuses a host that runs one already
 * (`DoNotSchedule`). When nothing fits, the reason names what was asked and every host seen
 * with why it did not fit (at most 10, then a count).
 */
export function chooseHost(input: HostChoiceInput): HostChoice {
  const c = input.constraints;
  const wants = c?.labels ?? {};
  const why = new Map<HostCandidate, string>();
  const fits: HostCandidate[] = [];
  for (const h of input.candidates) {
    const missing = missingLabels(wants, h.labels);
    if (h.unavailable !== undefined) why.set(h, h.unavailable);
    else if (h.labels.role !== undefined && h.labels.role !== input.role) why.set(h, `kept for role ${h.labels.role}`);
    else if (missing.length) why.set(h, `lacks ${missing.join(', ')}`);
    else fits.push(h);
  }
  const members = (h: HostCandidate) => input.membersOn.get(h.host) ?? 0;
  let pool = fits;
  if (c?.spread === 'host') {
    pool = fits.map((h, i) => ({ h, i })).sort((a, b) => members(a.h) - members(b.h) || a.i - b.i).map((x) => x.h);
    if (c.strict) {
      for (const h of pool) if (members(h) > 0) why.set(h, `runs ${members(h)} member(s) of ${input.role ?? 'the role'} already (strict spread)`);
      pool = pool.filter((h) => members(h) === 0);
    }
  }
  const chosen = pool[0];
  if (chosen) {
    const spread = c?.spread === 'host' ? `; ${members(chosen)} member(s) of the role on it before this one` : '';
    return { ok: true, host: chosen, reason: `host ${chosen.host}${chosen.id !== 'local' ? ` (node ${chosen.id})` : ''} fits ${describeConstraints(c)}${spread}` };
  }
  const seen = input.candidates.map((h) => `${h.id === 'local' ? 'this machine' : `node ${h.id}`} (${h.host}): ${why.get(h) ?? 'unavailable'}`);
  const listed = seen.length > 10 ? [...seen.slice(0, 10), `and ${seen.length - 10} more`] : seen;
  return {
    ok: false,
    reason: `no host fits ${input.role ?? 'the spare'} (wants ${describeConstraints(c)}); hosts seen: ${listed.length ? listed.join('; ') : 'none'}`,
  };
}
