/**
 * The in-process front cache of the realm: identities and issued tokens already opened and parsed, so a
 * repeated request costs one HMAC of its credential and a map lookup instead of a store read, an
 * AES-GCM open and a JSON parse. It holds what the realm would parse anyway (never a raw credential as a
 * key: identity entries are named like their store entry, by an HMAC of the credential, `keys.ts`), is
 * bounded in entries and in bytes like the memory store (`cache.memory.maxEntries`, `cache.memory.maxBytes`),
 * and lives in one realm instance, so a configuration reload starts an empty one.
 *
 * An entry is only a faster way to read what the store would have answered: its reader applies every
 * check of a store hit (expiry, trusted keys, lifetimes) on each use.
 */
import { LRUCache } from "lru-cache";

/** What a front cache entry costs beyond its key and its own {@link FrontCache.set} size, bytes, roughly. */
const ENTRY_OVERHEAD_BYTES = 96;

/** Bounds of a {@link FrontCache}. */
export interface FrontCacheOptions {
  /** Most entries kept; least recently used are evicted first. */
  maxEntries: number;
  /** Most bytes kept (key lengths plus each entry's declared size plus a fixed overhead), whichever bound is reached first. */
  maxBytes: number;
  /** Clock, epoch milliseconds (frozen in tests). */
  now: () => number;
}

/** A bounded map of parsed values with absolute expiries; see the module doc. */
export class FrontCache<V extends object> {
  readonly #lru: LRUCache<string, { value: V; until: number; bytes: number }>;
  readonly #now: () => number;

  /** @param options entry and byte bounds, clock */
  constructor(options: FrontCacheOptions) {
    this.#lru = new LRUCache<string, { value: V; until: number; bytes: number }>({
      max: options.maxEntries,
      maxSize: options.maxBytes,
      sizeCalculation: (entry, key) => key.length + entry.bytes + ENTRY_OVERHEAD_BYTES,
    });
    this.#now = options.now;
  }

  /** The value under `key`, or `undefined` when absent or past its expiry (then dropped). */
  get(key: string): V | undefined {
    const e = this.#lru.get(key);
    if (e === undefined) return undefined;
    if (e.until <= this.#now()) {
      this.#lru.delete(key);
      return undefined;
    }
    return e.value;
  }

  /**
   * Keeps `value` under `key` until `untilMs` (epoch milliseconds; a time already past keeps nothing).
   * @param bytes what the value holds, roughly (its strings' lengths), for the byte bound
   */
  set(key: string, value: V, untilMs: number, bytes: number): void {
    if (untilMs <= this.#now()) return;
    this.#lru.set(key, { value, until: untilMs, bytes });
  }

  /** Drops the entry under `key`, if any. */
  delete(key: string): void {
    this.#lru.delete(key);
  }
}
