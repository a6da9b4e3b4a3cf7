/**
 * The verified-identity cache of the realm. Entries are named by an HMAC of the credential (`cache/keys.ts`)
 * and sealed to it (`cache/seal.ts`): only a caller presenting the credential can read one, and a forged
 * or altered entry is a miss. Every entry name also carries a fingerprint of the trust configuration, so a
 * reload that changes what a verification depended on (a cluster removed, an issuer or audience changed)
 * makes every cached identity a miss. Also remembers, per verified credential, its rate-limit subject.
 *
 * Opened identities are kept in the realm's front cache (`cache/front.ts`) under the same entry name, so a
 * repeated credential costs one HMAC and a lookup; every hit, from the front cache or the store, is checked
 * again (expiry, which includes `warnafter`, and `stillTrusted`: the cluster key that vouched for it is
 * still trusted). Sealed entries are written to the store only when it is shared (Redis): with the memory
 * store the front cache is the one copy.
 */
import { LRUCache } from "lru-cache";
import type { Identity } from "../authn/verify.js";
import type { FrontCache } from "../cache/front.js";
import { cacheKeyHash, credentialName, identityKey, serviceAccountSubject } from "../cache/keys.js";
import type { CacheSealer } from "../cache/seal.js";
import { type CacheStore, parseCached } from "../cache/store.js";
import type { Config } from "../config/schema.js";
import type { RealmStats } from "./stats.js";

/** Identity cache entries are kept at most this long even for long-lived tokens, ms. */
const IDENTITY_CACHE_MAX_MS = 10 * 60 * 1000;

/** Verified identities by credential; see the module doc. */
export class IdentityCache {
  readonly #store: CacheStore;
  readonly #sealer: CacheSealer;
  readonly #now: () => number;
  /** Fingerprint of the trust configuration, part of every entry name. */
  readonly #trust: string;
  /** Opened identities by entry name (the realm's front cache); the only copy when the store is memory. */
  readonly #front: FrontCache<Identity>;
  /** Whether sealed entries go to the store: only a shared store (Redis) has anyone to share them with. */
  readonly #shared: boolean;
  /** Rate-limit subjects by {@link CacheSealer.key} of the credential (never the credential itself). */
  readonly #subjects = new LRUCache<string, string>({ max: 50_000 });
  /** Entry-name suffix per verification scope (a few: one per registry and use). */
  readonly #scopeKeys = new Map<string, string>();
  /**
   * The last credential {@link knownSubject} named and its name, so that the identity lookup of the same
   * request (the rate limiter asks first) reuses the HMAC: one slot, emptied by the lookup that uses it.
   */
  #pending: { credential: string; name: string } | undefined;
  readonly stats: RealmStats;

  /**
   * @param front the realm's front cache of opened identities
   * @param stats counters to update (`identityHits`, `identityMisses`)
   * @param now clock, epoch milliseconds
   */
  constructor(
    config: Config,
    store: CacheStore,
    sealer: CacheSealer,
    front: FrontCache<Identity>,
    stats: RealmStats,
    now: () => number,
  ) {
    this.#store = store;
    this.#sealer = sealer;
    this.#front = front;
    this.#shared = store.kind !== "memory";
    this.stats = stats;
    this.#now = now;
    // Everything a verification depended on: a reload that changes any of it (a cluster removed, an issuer
    // or audience changed) makes every cached identity a miss, so it is verified again under the new trust.
    const cfg = config;
    this.#trust = cacheKeyHash(
      JSON.stringify([
        cfg.clusters.map((c) => [c.name, c.issuer, c.audiences, c.algorithms]),
        cfg.registries.map((r) => [
          r.service,
          r.issuer,
          r.audiences ?? null,
          r.credentialProviderAudiences ?? null,
          r.refreshTokenMaxTtlSeconds,
        ]),
        cfg.credentialProvider?.audiences ?? null,
      ]),
    ).slice(0, 16);
  }

  /**
   * The identity `verify` returns for `credential`, from the cache when an entry for it and `scope`
   * opens, has not expired and `stillTrusted` accepts it; else verified and cached (at most until the
   * credential expires, and never longer than 10 minutes). Cached identities are frozen: callers copy.
   * @param scope what the verification depended on besides the credential (registry and use)
   * @throws what `verify` throws
   */
  async get(
    credential: string,
    scope: string,
    verify: () => Promise<Identity>,
    stillTrusted: (cached: Identity) => boolean,
  ): Promise<Identity> {
    const name = this.#credentialName(credential);
    let scopeKey = this.#scopeKeys.get(scope);
    if (scopeKey === undefined) {
      scopeKey = cacheKeyHash(`${scope}\u0000${this.#trust}`).slice(0, 16);
      if (this.#scopeKeys.size < 1_000) this.#scopeKeys.set(scope, scopeKey);
    }
    // Named by an HMAC of the credential and sealed to it: a store reader learns nothing usable, and an
    // entry written without the service secret (or for another credential) opens as a miss.
    const key = identityKey(name, scopeKey);
    const nowMs = this.#now();
    let cached = this.#front.get(key);
    if (cached === undefined && this.#shared) {
      cached = parseCached<Identity>(this.#sealer.open(key, await this.#store.get(key), credential));
      if (cached) this.#keep(key, cached, nowMs);
    }
    if (
      cached &&
      typeof cached.expiresAt === "number" &&
      cached.expiresAt * 1000 > nowMs &&
      cached.serviceAccount &&
      // Its cluster may have been removed by a reload, or the key that verified it (from the cluster's
      // JWKS, or from this registry's published keys).
      stillTrusted(cached)
    ) {
      this.stats.identityHits++;
      if (!this.#subjects.has(name)) {
        this.#subjects.set(name, subjectKey(cached), {
          ttl: cached.expiresAt * 1000 - nowMs,
        });
      }
      return cached;
    }
    if (cached) this.#front.delete(key);
    this.stats.identityMisses++;
    const identity = await verify();
    // A token of a `verification: tokenReview` cluster has only had its claims read (no key verified it:
    // `verificationKey` is unset) and is authenticated by the review that follows: never stored, nor used
    // to key rate limits, so a forged token neither fills the cache nor counts against the account it names.
    if (identity.verificationKey === undefined) return identity;
    const ttl = Math.min(identity.expiresAt * 1000 - nowMs, IDENTITY_CACHE_MAX_MS);
    if (ttl > 0) {
      this.#keep(key, identity, nowMs);
      if (this.#shared) {
        await this.#store.set(key, this.#sealer.seal(key, JSON.stringify(identity), credential), ttl);
      }
    }
    this.#subjects.set(name, subjectKey(identity), { ttl: Math.max(1, ttl) });
    return identity;
  }

  /**
   * The rate-limit subject of an already verified credential (`sa:<cluster>/<namespace>/<name>`), or
   * `undefined` when this instance has not verified it yet. Never verifies; never throws.
   */
  knownSubject(credential: string): string | undefined {
    const name = credentialName(this.#sealer, credential);
    this.#pending = { credential, name };
    return this.#subjects.get(name);
  }

  /** {@link CacheSealer.key} of `credential` for identity entries, from {@link #pending} when it matches. */
  #credentialName(credential: string): string {
    const pending = this.#pending;
    this.#pending = undefined;
    if (pending !== undefined && pending.credential === credential) return pending.name;
    return credentialName(this.#sealer, credential);
  }

  /** Puts `identity` (frozen: it is shared by every request that hits it) into the front cache. */
  #keep(key: string, identity: Identity, nowMs: number): void {
    const until = Math.min(identity.expiresAt * 1000, nowMs + IDENTITY_CACHE_MAX_MS);
    this.#front.set(key, deepFreeze(identity), until, identityBytes(identity));
  }
}

function subjectKey(identity: Identity): string {
  return serviceAccountSubject(identity.cluster, identity.namespace, identity.serviceAccount.name);
}

/** Freezes `value` and every object it holds (identities are small trees of plain objects and arrays). */
function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/** What an identity holds, bytes, roughly: its strings, twice over for the objects around them. */
function identityBytes(identity: Identity): number {
  let n = 0;
  const count = (v: unknown): void => {
    if (typeof v === "string") n += v.length + 16;
    else if (v !== null && typeof v === "object") for (const x of Object.values(v)) count(x);
    else n += 8;
  };
  count(identity);
  return 2 * n;
}
