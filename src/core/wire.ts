/**
 * Strict checks of what crosses the wire, shared by every transport and by both sides: what an
 * agent sends (the controller drops a message that does not match, and closes the connection)
 * and what the controller sends (the agent drops and logs it, never crashes on it). Every string
 * and array an agent sends is bounded ({@link WIRE_LIMITS}); numbers must be finite; nothing is
 * coerced.
 */
import { z } from 'zod';
import { ALL_STATES, type InstanceState } from './states.js';
import { SHA256_HEX } from './bundle.js';
import { WIRE_LIMITS as L, type AgentMessage, type HelloMessage, type PlainControllerMessage, type SealedControllerMessage } from './protocol.js';

const id = z.string().min(1).max(L.idChars);
const line = z.string().max(L.lineChars + 100);
const num = z.number().finite();
const nonneg = num.min(0);
const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const state = z.enum(ALL_STATES as [InstanceState, ...InstanceState[]]);
/** A record whose keys are checked as own, plain names (no `__proto__` games). */
const record = <T extends z.ZodType>(value: T, max: number) =>
  z.record(z.string().min(1).max(L.idChars).regex(/^[A-Za-z_][A-Za-z0-9_.-]*$/), value).refine((r) => Object.keys(r).length <= max, {
    message: `more than ${max} entries`,
  });

const lastExit = z.object({
  code: z.number().int().min(-1024).max(1024).nullable(),
  signal: z.string().max(32).nullable(),
  tail: z.array(line).max(L.lines),
});

const balancer = z.object({
  driver: z.string().max(32),
  listen: z.string().max(L.idChars),
  members: z
    .array(
      z.object({
        id: z.string().max(L.idChars),
        address: z.string().max(L.idChars),
        state: z.string().max(32),
        removing: z.boolean(),
        activeConnections: count,
        totalRequests: count,
        failures: count,
        ejected: z.boolean(),
      }),
    )
    .max(L.balancerMembers),
});

const tenantReport = z.object({
  phase: z.enum(['adding', 'ready', 'failed', 'removing', 'removed']),
  attempts: count,
  reason: z.string().max(L.messageChars + 100).optional(),
  tail: z.array(line).max(L.tenantTail + 1).optional(),
});

export const agentStatusSchema = z.object({
  state,
  role: id.optional(),
  exports: record(z.string().max(L.exportChars), L.exportKeys).optional(),
  importsVersion: id.optional(),
  restarts: count,
  lastExit: lastExit.optional(),
  message: z.string().max(L.messageChars + 100).optional(),
  servingSince: nonneg.optional(),
  balancer: balancer.optional(),
  tenants: record(tenantReport, L.tenants).optional(),
  ports: record(z.number().int().min(1).max(65535), 16).optional(),
});

const vitals = z.object({
  at: nonneg,
  loadavg: z.tuple([nonneg, nonneg, nonneg]),
  cpu: nonneg,
  memUsedBytes: nonneg,
  memTotalBytes: nonneg,
  role: z
    .object({ cpu: nonneg, rssBytes: nonneg, pids: count, connections: count.optional() })
    .optional(),
  metrics: record(num, L.metrics).optional(),
});

export const agentMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('join'), pid: z.number().int().min(1).max(2 ** 31), status: agentStatusSchema, applied: z.array(id).max(L.applied) }),
  z.object({ type: z.literal('ack'), orderId: id }),
  z.object({ type: z.literal('status'), status: agentStatusSchema, vitals: vitals.optional() }),
  z.object({ type: z.literal('log'), lines: z.array(line).max(L.lines) }),
]);

export const helloSchema = z.object({
  type: z.literal('hello'),
  protocol: z.number().int(),
  instanceId: z.string().min(1).max(64).regex(/^[A-Za-z0-9_.-]+$/),
  epoch: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  nonce: z.string().regex(/^[A-Za-z0-9_-]{43}$/),
});

// What the controller sends. The controller has proved itself by then, so these checks guard
// against a confused peer or a bug (the agent must not act on half an order), not an attacker;
// the role spec inside an assignment was compiled and checked by the controller and is only
// checked here for the fields the agent reads before anything else.
const text = z.string();
const importsSchema = z.record(
  z.string(),
  z.array(z.object({ instance: z.string(), exports: z.record(z.string(), z.string()) }).loose()),
);
const tenantRef = z.object({ id: z.string().min(1), name: z.string(), host: z.string().nullable() });
const orderId = z.string().min(1).max(L.idChars);
const roleSpecShape = z
  .object({
    name: z.string().min(1),
    imports: z.array(z.unknown()),
    env: z.record(z.string(), z.string()),
    exports: z.record(z.string(), z.string()),
  })
  .loose();

const bundleRef = z.object({ sha256: z.string().regex(SHA256_HEX), size: z.number().int().min(1).max(2 ** 40), unpackedBytes: z.number().int().min(0).max(2 ** 40) });

export const orderSchema = z.discriminatedUnion('kind', [
  z.object({
    id: orderId,
    kind: z.literal('assign'),
    assignment: z.object({ app: text, appDir: text, role: roleSpecShape, imports: importsSchema, importsVersion: text, slot: z.number().int().min(0).max(100_000).optional(), bundle: bundleRef.optional(), bundleError: z.string().max(4096).optional() }),
  }),
  z.object({ id: orderId, kind: z.literal('imports'), imports: importsSchema, importsVersion: text }),
  z.object({ id: orderId, kind: z.literal('stop'), reason: text }),
  z.object({ id: orderId, kind: z.literal('drain'), reason: text, timeoutMs: nonneg }),
  z.object({ id: orderId, kind: z.literal('undrain'), reason: text }),
  z.object({ id: orderId, kind: z.literal('tenantAdd'), tenant: tenantRef, fromInstance: z.string().optional() }),
  z.object({ id: orderId, kind: z.literal('tenantRemove'), tenant: tenantRef }),
]);

/** The sender's leader epoch (0: a controller that has not led yet). */
const leaderEpoch = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

export const controllerMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('welcome'), heartbeatMs: z.number().int().min(1).max(3_600_000), leader: leaderEpoch }),
  z.object({ type: z.literal('refused'), reason: text, leader: leaderEpoch }),
  z.object({ type: z.literal('order'), order: orderSchema, leader: leaderEpoch }),
]);

/** The controller's messages before the sealed channel: a challenge, or a refusal it cannot prove. */
export const plainControllerMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('challenge'), nonce: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/), proof: z.string().max(64) }),
  z.object({ type: z.literal('refused'), reason: z.string() }),
]);

/** A controller message (inside a sealed frame), or why it is refused. */
export function parseControllerMessage(m: unknown): { ok: true; message: SealedControllerMessage } | { ok: false; reason: string } {
  const r = controllerMessageSchema.safeParse(m);
  return r.success ? { ok: true, message: r.data as SealedControllerMessage } : { ok: false, reason: firstIssue(r.error) };
}

/** A controller message sent in the clear (before the handshake), or why it is refused. */
export function parsePlainControllerMessage(m: unknown): { ok: true; message: PlainControllerMessage } | { ok: false; reason: string } {
  const r = plainControllerMessageSchema.safeParse(m);
  return r.success ? { ok: true, message: r.data } : { ok: false, reason: firstIssue(r.error) };
}

/**
 * Names on a RabbitMQ broker (the amqp transport), known to both sides. The controller declares
 * them; an agent's broker user may read only its own queue and publish only under its own
 * routing key (docs/rabbitmq.md).
 */
export const AMQP_NAMES = {
  /** Topic exchange agents publish their frames to, routing key `<instance>.<kind>`. */
  agentsExchange: 'drover.agents',
  /** The controller's queue: every agent's frames, bound to {@link AMQP_NAMES.agentsExchange} with `#`. */
  controllerQueue: 'drover.controller',
  /** One durable queue per instance: the controller's frames to that agent. */
  agentQueue: (instanceId: string): string => `drover.agent.${instanceId}`,
  /** An agent's broker user. */
  agentUser: (instanceId: string): string => `drover-agent-${instanceId}`,
  /** Routing key of an agent's frame: its hello (`hello`) or a sealed frame (`frame`). */
  agentKey: (instanceId: string, kind: 'hello' | 'frame'): string => `${instanceId}.${kind}`,
} as const;

/** The message, or why it is refused (for a log line; never sent back verbatim). */
export function parseAgentMessage(m: unknown): { ok: true; message: AgentMessage } | { ok: false; reason: string } {
  const r = agentMessageSchema.safeParse(m);
  return r.success ? { ok: true, message: r.data as AgentMessage } : { ok: false, reason: firstIssue(r.error) };
}

export function parseHello(m: unknown): { ok: true; message: HelloMessage } | { ok: false; reason: string } {
  const r = helloSchema.safeParse(m);
  return r.success ? { ok: true, message: r.data } : { ok: false, reason: firstIssue(r.error) };
}

function firstIssue(e: z.ZodError): string {
  const i = e.issues[0];
  return i ? `${i.path.join('.') || '(message)'}: ${i.message}` : 'invalid';
}

/** Cuts `text` to `max` characters with a marker saying how much went. */
export function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}…[${text.length - max} more characters cut]`;
}

/** The last `maxLines` lines, each cut to the line limit, with a marker line if some were left out. */
export function fitLines(lines: readonly string[], maxLines: number = L.lines): string[] {
  const kept = lines.length > maxLines ? [`…[${lines.length - maxLines + 1} earlier lines cut]`, ...lines.slice(-(maxLines - 1))] : [...lines];
  return kept.map((l) => truncate(l, L.lineChars));
}
