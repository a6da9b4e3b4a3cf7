/**
 * Two tiers: the in-process LRU first, then Redis. Reads fill the memory tier from Redis with the entry's
 * remaining lifetime; writes go to both. When Redis is down the service keeps working on the memory tier
 * alone (degraded mode), and shares state again as soon as Redis is back.
 *
 * Values in Redis carry their absolute expiry (`<epoch ms>|<value>`) so a replica that reads an entry
 * caches it in memory for exactly as long as it remains valid.
 */
import type { RedisStore } from "./redis.js";
import type { CacheStore, MemoryStore } from "./store.js";

/** {@link CacheStore} over a memory tier and a Redis tier. */
export class TieredStore implements CacheStore {
  readonly kind = "redis" as const;
  readonly memory: MemoryStore;
  readonly redis: RedisStore;
  readonly #now: () => number;

  /**
   * @param memory the in-process tier
   * @param redis the shared tier
   * @param now clock, epoch ms
   */
  constructor(memory: MemoryStore, redis: RedisStore, now: () => number = Date.now) {
    this.memory = memory;
    this.redis = redis;
    this.#now = now;
  }

  async get(key: string): Promise<string | undefined> {
    const local = await this.memory.get(key);
    if (local !== undefined) return local;
    const raw = await this.redis.get(key);
    if (raw === undefined) return undefined;
    const bar = raw.indexOf("|");
    const until = Number(raw.slice(0, bar));
    const value = raw.slice(bar + 1);
    const ttl = until - this.#now();
    if (bar < 0 || !Number.isFinite(until) || ttl <= 0) return undefined;
    await this.memory.set(key, value, ttl);
    return value;
  }

  async set(key: string, value: string, ttlMs: number): Promise<void> {
    if (ttlMs < 1) return;
    await this.memory.set(key, value, ttlMs);
    await this.redis.set(key, `${Math.round(this.#now() + ttlMs)}|${value}`, ttlMs);
  }

  async setIfAbsent(key: string, value: string, ttlMs: number): Promise<boolean> {
    if (this.redis.healthy())
      return this.redis.setIfAbsent(key, `${Math.round(this.#now() + ttlMs)}|${value}`, ttlMs);
    return this.memory.setIfAbsent(key, value, ttlMs);
  }

  async delete(key: string): Promise<void> {
    await this.memory.delete(key);
    await this.redis.delete(key);
  }

  healthy(): boolean {
    return this.redis.healthy();
  }

  async close(): Promise<void> {
    await this.redis.close();
    await this.memory.close();
  }
}
