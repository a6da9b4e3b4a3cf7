import { LRUCache } from "lru-cache";

/** A key-value store with per-entry TTLs. */
export interface CacheStore {
  /** `memory` or `redis`. */
  readonly kind: "memory" | "redis";
  /**
   * Reads a value.
   * @returns the value, or `undefined` on a miss, an expired entry, or any store error
   */
  get(key: string): Promise<string | undefined>;
  /**
   * Writes a value with a TTL in milliseconds (>= 1). Errors are swallowed (logged by the store).
   */
  set(key: string, value: string, ttlMs: number): Promise<void>;
  /**
   * Sets `key` only if absent, with a TTL (a short lock). Resolves `true` when this caller won; `false`
   * when the key existed; on a store error resolves `true` (in-process single-flight still applies).
   */
  setIfAbsent(key: string, value: string, ttlMs: number): Promise<boolean>;
  /** Deletes a key (errors swallowed). */
  delete(key: string): Promise<void>;
  /** Whether the store is currently usable (Redis connected); memory is always healthy. */
  healthy(): boolean;
  /** Releases connections. */
  close(): Promise<void>;
}

/** Options of {@link MemoryStore}. */
export interface MemoryStoreOptions {
  /** Most entries kept; least recently used are evicted first. */
  maxEntries: number;
  /**
   * Most bytes of keys and values kept (string lengths plus {@link ENTRY_OVERHEAD_BYTES} per entry),
   * whichever bound is reached first; least recently used are evicted first. Default: no byte bound.
   */
  maxBytes?: number | undefined;
  /** Clock in epoch ms (frozen in tests). */
  now?: () => number;
}

/** What an entry costs beyond its key and value strings (LRU slots, the entry object), bytes, roughly. */
const ENTRY_OVERHEAD_BYTES = 64;

/** In-process store on a bounded LRU (lru-cache), with per-entry TTLs. */
export class MemoryStore implements CacheStore {
  readonly kind = "memory" as const;
  readonly #lru: LRUCache<string, { value: string; until: number }>;
  readonly #now: () => number;

  /** @param options size bound and clock */
  constructor(options: MemoryStoreOptions) {
    // Bounded in bytes as well as in count: entries range from ~0.5 KB (an identity) to several KB (a
    // registry token carries its x5c certificate), so a count alone let 100,000 entries hold ~150 MB.
    this.#lru = new LRUCache<string, { value: string; until: number }>({
      max: options.maxEntries,
      ...(options.maxBytes
        ? {
            maxSize: options.maxBytes,
            sizeCalculation: (entry, key) => key.length + entry.value.length + ENTRY_OVERHEAD_BYTES,
          }
        : {}),
    });
    this.#now = options.now ?? Date.now;
  }

  async get(key: string): Promise<string | undefined> {
    const e = this.#lru.get(key);
    if (!e) return undefined;
    if (e.until <= this.#now()) {
      this.#lru.delete(key);
      return undefined;
    }
    return e.value;
  }

  async set(key: string, value: string, ttlMs: number): Promise<void> {
    if (ttlMs < 1) return;
    this.#lru.set(key, { value, until: this.#now() + ttlMs });
  }

  async setIfAbsent(key: string, value: string, ttlMs: number): Promise<boolean> {
    if ((await this.get(key)) !== undefined) return false;
    await this.set(key, value, ttlMs);
    return true;
  }

  async delete(key: string): Promise<void> {
    this.#lru.delete(key);
  }

  healthy(): boolean {
    return true;
  }

  async close(): Promise<void> {
    this.#lru.clear();
  }
}

/** Parses a cached JSON object; a corrupt entry (or anything but an object) is a miss, never an error. */
export function parseCached<T>(text: string | undefined): T | undefined {
  if (text === undefined) return undefined;
  try {
    const v = JSON.parse(text) as unknown;
    return v !== null && typeof v === "object" ? (v as T) : undefined;
  } catch {
    return undefined;
  }
}
