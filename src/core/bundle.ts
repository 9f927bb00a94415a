/**
 * App bundles, the words both ends share: how a bundle is named and how an agent proves, when it
 * fetches one, that it is an instance of the bundle's app (docs/fleet.md, "App bundles").
 *
 * The controller packs the folder of the app file into a gzipped tar, names it by its sha256 and
 * serves it at `GET /v1/bundles/{app}/{sha256}` to agents only: the request carries the agent's
 * instance id, a time, a nonce and an HMAC with the instance's key over all of them and the
 * bundle's name. The controller checks the HMAC against the instance it knows, that the
 * instance is not gone, that it belongs to that app, and that the nonce was not seen before.
 *
 * ```ts
 * const headers = bundleRequestHeaders({ key, instanceId, app: 'shop', sha256, at: Date.now(), nonce });
 * ```
 */
import { hmac, same } from './auth.js';

/** A bundle as an assignment names it. */
export interface BundleRef {
  /** sha256 of the gzipped tar, lowercase hex: the bundle's name. */
  readonly sha256: string;
  /** Its size in bytes (what the agent will accept, and no more). */
  readonly size: number;
  /** Bytes of its files once unpacked (bounded by the controller's limit). */
  readonly unpackedBytes: number;
}

export const SHA256_HEX = /^[0-9a-f]{64}$/;

/** Headers of a bundle request. */
export const BUNDLE_HEADERS = {
  instance: 'x-drover-instance',
  at: 'x-drover-time',
  nonce: 'x-drover-nonce',
  proof: 'x-drover-proof',
} as const;

/** How far a request's time may be from the controller's. */
export const BUNDLE_CLOCK_SKEW_MS = 5 * 60_000;

export interface BundleProofParams {
  readonly key: string;
  readonly instanceId: string;
  readonly app: string;
  readonly sha256: string;
  /** Epoch ms when the request was made. */
  readonly at: number;
  readonly nonce: string;
}

/** The HMAC an agent sends with a bundle request (base64url). */
export function bundleProof(p: BundleProofParams): string {
  return hmac(p.key, 'drover/bundle/1', p.instanceId, p.app, p.sha256, p.at, p.nonce).toString('base64url');
}

export function checkBundleProof(p: BundleProofParams, proof: string): boolean {
  return same(Buffer.from(bundleProof(p), 'base64url'), Buffer.from(proof, 'base64url'));
}

/** The headers an agent sends to fetch a bundle. */
export function bundleRequestHeaders(p: BundleProofParams): Record<string, string> {
  return {
    [BUNDLE_HEADERS.instance]: p.instanceId,
    [BUNDLE_HEADERS.at]: String(p.at),
    [BUNDLE_HEADERS.nonce]: p.nonce,
    [BUNDLE_HEADERS.proof]: bundleProof(p),
  };
}
