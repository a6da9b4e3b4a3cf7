/**
 * The source token of a credential derived from a reviewed service-account token, sealed inside it
 * (AES-256-GCM with the service secret, src/cache/seal.ts): readable only by this service, so neither the
 * credential's holder nor a thief can extract the token, and reviewed again on every use of the credential.
 */
import type { CacheSealer } from "../cache/seal.js";
import { parseCached } from "../cache/store.js";

/** A reviewed token's sealed form inside a derived credential. */
export interface SealedSource {
  /** The service-account token. */
  t: string;
  /** The audiences it is reviewed for. */
  a: string[];
}

/** The `seal` name (additional data) of review sources inside derived credentials. */
const SOURCE_NAME = "derived-source";

/** The sealed form of `token`, reviewed for `audiences`. */
export function sealSource(sealer: CacheSealer, token: string, audiences: readonly string[]): string {
  const value: SealedSource = { t: token, a: [...audiences] };
  return sealer.seal(SOURCE_NAME, JSON.stringify(value));
}

/**
 * Opens a sealed source with the first of `sealers` that can (the current service secret, then those before
 * a switch of signing keys).
 * @returns the source, or `undefined` when `sealed` is absent, does not open, or is not a source
 */
export function openSource(
  sealers: readonly CacheSealer[],
  sealed: string | undefined,
): SealedSource | undefined {
  if (sealed === undefined) return undefined;
  let text: string | undefined;
  for (const sealer of sealers) {
    text = sealer.open(SOURCE_NAME, sealed);
    if (text !== undefined) break;
  }
  const v = parseCached<SealedSource>(text);
  return v && typeof v.t === "string" && Array.isArray(v.a) ? v : undefined;
}
