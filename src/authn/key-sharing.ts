/**
 * Sharing a cluster's key set between replicas through the shared (Redis) tier: one replica fetches
 * (under a short lock, so a re-fetch is single-flight across replicas), the others adopt its copy, and a
 * `kid` found unknown is remembered for all.
 *
 * Every entry is named after the exact trust source (`trustSource` in `authn/discovery.ts`; names in
 * `cache/keys.ts`) and sealed with the service secret (`cache/seal.ts`) to that name: a copy fetched from
 * another source, or written by someone without the secret, never opens, so a Redis writer can neither
 * plant keys nor mark a real `kid` unknown (which would delay a rotation's new key), and a Redis reader
 * does not learn which `kid`s were tried.
 */
import { keySetFetchLockKey, keySetKey, keySetSourceId, unknownKidKey } from "../cache/keys.js";
import type { CacheSealer } from "../cache/seal.js";
import type { CacheStore } from "../cache/store.js";
import { parseJwks, type VerificationKey } from "./jwk.js";

/** What replicas share per cluster (sealed). */
export interface SharedKeySet {
  /** `trustSource` of the replica that fetched it: adopted only by a replica with the same. */
  source: string;
  /** The JWKS document as fetched (public keys only). */
  jwks: unknown;
  /** When the fetch was sent, epoch ms; absent in sets written by older versions (never proof of a miss). */
  requestedAt?: number;
  /** When the fetch completed, epoch ms. */
  fetchedAt: number;
  /** Until when the set may be used without a re-fetch, epoch ms. */
  expiresAt: number;
}

/** Sealed value of a shared unknown-`kid` marker: this prefix, then its expiry (epoch ms). */
const UNKNOWN_MARKER = "unknown-until:";

/** How long a replica holds the cross-replica fetch lock at most, ms. */
const FETCH_LOCK_MS = 5_000;
/** How often a replica that lost the lock looks for the winner's result, ms. */
const LOCK_POLL_MS = 25;

/** One cluster's entries in the shared tier. */
export class KeySetSharing {
  /** Name of the shared copy (before the store's prefix). */
  readonly name: string;
  readonly #lockName: string;
  readonly #store: CacheStore;
  readonly #sealer: CacheSealer;
  readonly #cluster: string;
  readonly #source: string;

  /**
   * @param cluster the cluster's name
   * @param source its `trustSource`
   */
  constructor(store: CacheStore, sealer: CacheSealer, cluster: string, source: string) {
    this.#store = store;
    this.#sealer = sealer;
    this.#cluster = cluster;
    this.#source = source;
    const id = keySetSourceId(sealer, source);
    this.name = keySetKey(cluster, id);
    this.#lockName = keySetFetchLockKey(cluster, id);
  }

  /**
   * Whether another replica found `kid` unknown at this trust source recently. The marker holds its own
   * expiry inside the sealed value, which bounds it whatever its TTL in the store says: a Redis writer can
   * PERSIST a genuine marker (anyone can cause one by sending a token naming the kid), never prolong it.
   * @param now epoch ms
   */
  async isUnknown(kid: string, now: number): Promise<boolean> {
    const name = unknownKidKey(this.#sealer, this.#cluster, this.#source, kid);
    const value = this.#sealer.open(name, await this.#store.get(name));
    const until = value?.startsWith(UNKNOWN_MARKER) ? Number(value.slice(UNKNOWN_MARKER.length)) : Number.NaN;
    return until > now;
  }

  /**
   * Remembers `kid` as unknown for every replica, for `ttlMs` milliseconds.
   * @param now epoch ms
   */
  async markUnknown(kid: string, ttlMs: number, now: number): Promise<void> {
    const name = unknownKidKey(this.#sealer, this.#cluster, this.#source, kid);
    await this.#store.set(name, this.#sealer.seal(name, `${UNKNOWN_MARKER}${now + ttlMs}`), ttlMs);
  }

  /** The shared copy (as stored) when it opens with the service secret and was fetched from this trust source. */
  async #read(): Promise<SharedKeySet | undefined> {
    const text = this.#sealer.open(this.name, await this.#store.get(this.name));
    if (text === undefined) return undefined;
    let doc: SharedKeySet;
    try {
      doc = JSON.parse(text) as SharedKeySet;
    } catch {
      return undefined;
    }
    if (doc === null || typeof doc !== "object" || doc.source !== this.#source) return undefined;
    return doc;
  }

  /**
   * The shared copy as keys, when it opens, was fetched after `after` (its `fetchedAt`,
   * epoch ms), is still fresh at `now`, (with `since` > 0) was requested at or after `since`, and has at
   * least one usable key.
   */
  async adopt(
    after: number,
    since: number,
    now: number,
  ): Promise<
    | { keys: VerificationKey[]; raw: unknown; requestedAt: number; fetchedAt: number; expiresAt: number }
    | undefined
  > {
    const doc = await this.#read();
    if (doc === undefined) return undefined;
    if (!(doc.fetchedAt > after) || !(doc.expiresAt > now)) return undefined;
    const requestedAt = typeof doc.requestedAt === "number" ? doc.requestedAt : 0;
    if (since > 0 && !(requestedAt >= since)) return undefined;
    let keys: VerificationKey[];
    try {
      keys = parseJwks(doc.jwks);
    } catch {
      return undefined;
    }
    if (keys.length === 0) return undefined;
    return { keys, raw: doc.jwks, requestedAt, fetchedAt: doc.fetchedAt, expiresAt: doc.expiresAt };
  }

  /** Publishes a fetched set, kept `ttlMs` milliseconds. */
  async write(set: Omit<SharedKeySet, "source">, ttlMs: number): Promise<void> {
    const doc: SharedKeySet = { source: this.#source, ...set };
    await this.#store.set(this.name, this.#sealer.seal(this.name, JSON.stringify(doc)), ttlMs);
  }

  /** Takes the fetch lock; false when another replica holds it. */
  lock(): Promise<boolean> {
    return this.#store.setIfAbsent(this.#lockName, String(process.pid), FETCH_LOCK_MS);
  }

  /** Releases the fetch lock. */
  async unlock(): Promise<void> {
    await this.#store.delete(this.#lockName);
  }

  /**
   * While another replica holds the lock: polls `adopt` until it returns a set or `timeoutMs` (wall
   * clock) has passed.
   */
  async waitFor<T>(adopt: () => Promise<T | undefined>, timeoutMs: number): Promise<T | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, LOCK_POLL_MS));
      const theirs = await adopt();
      if (theirs) return theirs;
    }
    return undefined;
  }
}
