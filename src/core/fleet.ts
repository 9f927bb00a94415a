/**
 * The node protocol: how a host joins an app's pool with a join token, and how the controller
 * and a joined node talk afterwards (docs/fleet.md).
 *
 * A joining node holds only the controller's URL and a join token `drj.<id>.<secret>`. The
 * controller keeps only `sha256(token)` ({@link tokenHash}); both sides key their proofs with
 * that hash, so neither the token nor its hash crosses the wire:
 *
 * ```
 * node → controller        nodeJoin      { tokenId, nonce a, addresses, labels, hostname }   (plain)
 * controller → node        joinChallenge { nonce c, proof = HMAC(H, "join-controller"|id|a|c) }
 *                          (or `refused`, the same for every reason: unknown, wrong, expired, used up, revoked)
 * node → controller        joinProof     { proof = HMAC(H, "join-node"|id|a|c) }
 * controller → node        joinWelcome   { box = AES-256-GCM(HKDF(H, a|c), { nodeId, key }) }
 * ```
 *
 * The node checks the controller's proof before it proves itself, and the node's key (minted by
 * the controller for this node) travels only inside the box: an eavesdropper, or a fake
 * controller without the token, learns nothing. Afterwards the node reconnects like an agent
 * (core/auth.ts, with the node id for the instance id and epoch 0), and every message is a
 * sealed frame; the instance keys the controller hands a node for the agents it starts travel
 * inside boxes too (HKDF of the node key and the session's nonces), never in the clear.
 */
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import { z } from 'zod';
import { hmac, same } from './auth.js';

const LABEL = 'drover/fleet/1';

/** A join token: `drj.<16 hex id>.<43 base64url secret>`. */
export const JOIN_TOKEN_RE = /^drj\.([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$/;

/** A new join token and its parts (the secret is shown once, then only its hash is kept). */
export function newJoinToken(): { id: string; token: string; hash: string } {
  const id = randomBytes(8).toString('hex');
  const token = `drj.${id}.${randomBytes(32).toString('base64url')}`;
  return { id, token, hash: tokenHash(token) };
}

/** The token's id, or undefined if the text is not a join token. */
export function joinTokenId(token: string): string | undefined {
  return JOIN_TOKEN_RE.exec(token)?.[1];
}

/** sha256 of the whole token, hex: what the controller stores, and the key both sides prove with. */
export function tokenHash(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}


/** One join's view, on both ends. `hash` is {@link tokenHash} of the token (never sent). */
export interface JoinParams {
  readonly hash: string;
  readonly tokenId: string;
  readonly nodeNonce: string;
  readonly controllerNonce: string;
}

export function joinProof(side: 'controller' | 'node', p: JoinParams): string {
  return hmac(p.hash, LABEL, `join-${side}`, p.tokenId, p.nodeNonce, p.controllerNonce).toString('base64url');
}

export function checkJoinProof(side: 'controller' | 'node', p: JoinParams, proof: string): boolean {
  return same(Buffer.from(joinProof(side, p), 'base64url'), Buffer.from(proof, 'base64url'));
}

/** A 32-byte key for {@link boxSeal}, from a secret and both nonces of one session. */
export function boxKey(secret: string, nodeNonce: string, controllerNonce: string, purpose: string): Buffer {
  return Buffer.from(hkdfSync('sha256', Buffer.from(secret), Buffer.from(`${nodeNonce}|${controllerNonce}`), `${LABEL}/${purpose}`, 32));
}

/** AES-256-GCM of a JSON value: base64url(iv | tag | ciphertext); `aad` binds it to its context. */
export function boxSeal(key: Buffer, value: unknown, aad: string): string {
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(Buffer.from(aad));
  const ct = Buffer.concat([c.update(JSON.stringify(value), 'utf8'), c.final()]);
  return Buffer.concat([iv, c.getAuthTag(), ct]).toString('base64url');
}

/** Opens a {@link boxSeal}; undefined if it was not sealed with this key and context. */
export function boxOpen(key: Buffer, box: string, aad: string): unknown {
  try {
    const raw = Buffer.from(box, 'base64url');
    if (raw.length < 29) return undefined;
    const d = createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12));
    d.setAAD(Buffer.from(aad));
    d.setAuthTag(raw.subarray(12, 28));
    return JSON.parse(Buffer.concat([d.update(raw.subarray(28)), d.final()]).toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Messages. Everything a node sends is bounded; the controller's messages are checked too.

const nonce = z.string().regex(/^[A-Za-z0-9_-]{43}$/);
const proof = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/);
const nodeId = z.string().regex(/^n-[A-Za-z0-9_-]{1,40}$/);
const instanceId = z.string().min(1).max(64).regex(/^[A-Za-z0-9_.-]+$/);
/** An IPv4 or IPv6 address, as text. */
export const addressSchema = z.string().min(2).max(45).regex(/^[0-9A-Fa-f:.]+$/);
/** Labels `k=v`: at most 16, names and values short and plain. */
export const labelsSchema = z
  .record(z.string().min(1).max(63).regex(/^[A-Za-z0-9_.-]+$/), z.string().max(63).regex(/^[A-Za-z0-9_.:-]*$/))
  .refine((r) => Object.keys(r).length <= 16, { message: 'more than 16 labels' });
const addresses = z.array(addressSchema).min(1).max(16);
const hostname = z.string().min(1).max(253).regex(/^[A-Za-z0-9_.-]+$/);

export const NODE_PROTOCOL = 1;

/** A node's first message: joining with a token, or coming back with its node id. */
export const nodeHelloSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('nodeJoin'), protocol: z.number().int(), tokenId: z.string().regex(/^[0-9a-f]{16}$/), nonce, addresses, labels: labelsSchema, hostname }),
  z.object({ type: z.literal('nodeHello'), protocol: z.number().int(), nodeId, nonce, addresses }),
]);
export type NodeHello = z.infer<typeof nodeHelloSchema>;

export const joinProofSchema = z.object({ type: z.literal('joinProof'), proof });

/** What the controller sends before the sealed channel. */
export const nodePlainSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('joinChallenge'), nonce, proof }),
  z.object({ type: z.literal('joinWelcome'), box: z.string().max(4096) }),
  z.object({ type: z.literal('challenge'), nonce, proof }),
  z.object({ type: z.literal('refused'), reason: z.string().max(200) }),
]);
export type NodePlainMessage = z.infer<typeof nodePlainSchema>;

/** What the join box holds. */
export const joinBoxSchema = z.object({ nodeId, key: z.string().regex(/^[A-Za-z0-9_-]{43}$/) });

const runningInstance = z.object({ id: instanceId, port: z.number().int().min(1).max(65535), pid: z.number().int().min(1).max(2 ** 31) });

/** What a node sends, sealed. */
export const nodeMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('report'), addresses, instances: z.array(runningInstance).max(64) }),
  z.object({ type: z.literal('started'), instanceId, ip: addressSchema, port: z.number().int().min(1).max(65535), workdir: z.string().max(1024), pid: z.number().int().min(1).max(2 ** 31) }),
  z.object({ type: z.literal('startFailed'), instanceId, reason: z.string().max(1000) }),
  z.object({ type: z.literal('stopped'), instanceId }),
]);
export type NodeMessage = z.infer<typeof nodeMessageSchema>;

/** What the controller sends a node, sealed. `box` holds {@link startBoxSchema}. */
export const nodeOrderSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('welcome'), heartbeatMs: z.number().int().min(1).max(3_600_000) }),
  z.object({ type: z.literal('start'), instanceId, epoch: z.number().int().min(0), controllerUrl: z.string().max(2048), box: z.string().max(8192) }),
  z.object({ type: z.literal('stop'), instanceId }),
  z.object({ type: z.literal('refused'), reason: z.string().max(1000) }),
]);
export type NodeOrder = z.infer<typeof nodeOrderSchema>;

/** The secrets of a `start`: the instance key (and a transport URL, for amqp). */
export const startBoxSchema = z.object({ key: z.string().min(16).max(512), transportUrl: z.string().max(2048).optional() });
