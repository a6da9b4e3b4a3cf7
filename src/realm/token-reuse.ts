/**
 * Reuse of issued registry tokens: a token minted for one service account, registry, granted access and
 * signing key is handed out again while at least half its lifetime remains (`cache.reuseTokens`), which
 * spares a signature per pull in a burst of pods of one service account.
 */
import type { Identity } from "../authn/verify.js";
import type { FrontCache } from "../cache/front.js";
import { issuedTokenKey } from "../cache/keys.js";
import type { CacheSealer } from "../cache/seal.js";
import { type CacheStore, parseCached } from "../cache/store.js";
import type { RegistryConfig } from "../config/schema.js";
import type { SigningKey } from "../jose/signing-key.js";
import { type AccessEntry, mintRegistryToken } from "../token/mint.js";
import type { RealmStats } from "./stats.js";

/** A cached registry token: the token and its timestamps (it is short-lived by construction). */
export interface CachedToken {
  token: string;
  jti: string;
  issuedAt: number;
  expiresAt: number;
}

/**
 * Issued tokens kept for reuse: opened in the realm's front cache (`cache/front.ts`), under a name made of
 * what the token depends on (no secret in it); sealed in the store only when the store is shared (Redis).
 */
export class IssuedTokens {
  readonly #store: CacheStore;
  readonly #sealer: CacheSealer;
  readonly #front: FrontCache<CachedToken>;
  readonly #shared: boolean;
  readonly #reuse: boolean;
  readonly stats: RealmStats;

  /**
   * @param front the realm's front cache of issued tokens
   * @param stats counters to update (`tokenHits`, `tokenMisses`)
   * @param reuse `cache.reuseTokens`: without it every request mints
   */
  constructor(
    store: CacheStore,
    sealer: CacheSealer,
    front: FrontCache<CachedToken>,
    stats: RealmStats,
    reuse: boolean,
  ) {
    this.#store = store;
    this.#sealer = sealer;
    this.#front = front;
    this.#shared = store.kind !== "memory";
    this.stats = stats;
    this.#reuse = reuse;
  }

  /**
   * Reuses an issued token for the same service account, registry and granted access while at least half
   * its lifetime remains and it does not outlive the presented credential; otherwise mints a new one.
   * @param key the registry's active signing key
   * @param nowMs current time, epoch milliseconds
   */
  async mintOrReuse(
    registry: RegistryConfig,
    key: SigningKey,
    identity: Identity,
    access: AccessEntry[],
    nowMs: number,
  ): Promise<CachedToken & { cached: boolean }> {
    const reuse = this.#reuse;
    const now = Math.floor(nowMs / 1000);
    const halfTtl = registry.tokenTtlSeconds / 2;
    let granted: string[] | undefined;
    let frontKey: string | undefined;
    let cacheKey: string | undefined;
    if (reuse) {
      granted = access
        .filter((a) => a.actions.length > 0)
        .map((a) => `${a.type}:${a.name}:${a.actions.join(",")}`)
        .sort();
      // The signing key's kid is part of the key: after a switch of signing keys (a rotation), a token
      // signed by the previous key is never handed out again, so the registry can stop trusting it at once.
      // In process the parts are joined with NUL (none of them can hold one: names, a uid, scopes, a kid).
      frontKey = grantParts(identity, registry, granted.join(" "), key).join("\u0000");
      let hit = this.#front.get(frontKey);
      if (hit === undefined && this.#shared) {
        cacheKey = this.#storeKey(identity, registry, granted, key);
        hit = parseCached<CachedToken>(this.#sealer.open(cacheKey, await this.#store.get(cacheKey)));
        if (hit && typeof hit.token === "string") this.#keep(frontKey, hit, halfTtl);
      }
      if (
        hit &&
        typeof hit.token === "string" &&
        hit.expiresAt - now >= halfTtl &&
        hit.expiresAt <= identity.expiresAt &&
        hit.issuedAt <= now
      ) {
        this.stats.tokenHits++;
        return { ...hit, cached: true };
      }
      this.stats.tokenMisses++;
    }
    const minted = mintRegistryToken(key, {
      issuer: registry.issuer,
      audience: registry.service,
      subject: identity.subject,
      access,
      ttlSeconds: registry.tokenTtlSeconds,
      notAfter: identity.expiresAt,
      nowMs,
    });
    const entry: CachedToken = {
      token: minted.token,
      jti: minted.jti,
      issuedAt: minted.issuedAt,
      expiresAt: minted.expiresAt,
    };
    const reusableMs = (minted.expiresAt - halfTtl) * 1000 - nowMs;
    if (reuse && reusableMs >= 1000 && frontKey !== undefined && granted !== undefined) {
      this.#keep(frontKey, { ...entry }, halfTtl);
      if (this.#shared) {
        cacheKey ??= this.#storeKey(identity, registry, granted, key);
        await this.#store.set(cacheKey, this.#sealer.seal(cacheKey, JSON.stringify(entry)), reusableMs);
      }
    }
    return { ...entry, cached: false };
  }

  /**
   * The token's name in the shared store: an HMAC of everything it depends on (`cache/keys.ts`), so a
   * store reader can neither use the token nor tell whose it is; an entry written without the secret, or
   * moved to another name, is a miss.
   */
  #storeKey(identity: Identity, registry: RegistryConfig, granted: string[], key: SigningKey): string {
    return issuedTokenKey(this.#sealer, JSON.stringify(grantParts(identity, registry, granted, key)));
  }

  /** Puts `token` (frozen) into the front cache until it is no longer reusable (half its lifetime left). */
  #keep(frontKey: string, token: CachedToken, halfTtl: number): void {
    this.#front.set(
      frontKey,
      Object.freeze(token),
      (token.expiresAt - halfTtl) * 1000,
      token.token.length + token.jti.length + 64,
    );
  }
}

/**
 * What an issued token depends on, in key order: the service account (cluster, namespace, name, uid), the
 * registry (service, issuer), the granted access (`granted`, in the caller's form) and the signing key's
 * `kid`. The same parts name the front-cache entry and, through an HMAC, the store entry.
 */
function grantParts<G>(identity: Identity, registry: RegistryConfig, granted: G, key: SigningKey) {
  return [
    identity.cluster,
    identity.namespace,
    identity.serviceAccount.name,
    identity.serviceAccount.uid,
    registry.service,
    registry.issuer,
    granted,
    key.kid,
  ] as const;
}
