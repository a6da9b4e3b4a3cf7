/**
 * Building the cache from config: memory only when no Redis is configured; otherwise memory + Redis
 * ({@link TieredStore}), with the Redis tier also exposed on its own for state that must be read fresh
 * across replicas (JWKS documents, fetch locks, rate-limit counters).
 */
import type { Logger } from "pino";
import type { Config } from "../config/schema.js";
import { createRedisClient, type RedisClient, RedisStore } from "./redis.js";
import { type CacheStore, MemoryStore } from "./store.js";
import { TieredStore } from "./tiered.js";

/** The stores a service instance uses. */
export interface CacheStores {
  /** Identity and token caches: memory first, then Redis if configured. */
  store: CacheStore;
  /** The Redis tier alone (shared, read-through-free), if Redis is configured. */
  shared?: RedisStore | undefined;
  /** The raw ioredis client, for the rate limiter. */
  redis?: RedisClient | undefined;
}

/**
 * Creates the stores for `config.cache`. Never throws for an unreachable Redis: it connects in the
 * background and the service runs degraded until it answers.
 */
export function createCacheStores(config: Config, logger: Logger, now: () => number = Date.now): CacheStores {
  const memory = new MemoryStore({
    maxEntries: config.cache.memory.maxEntries,
    maxBytes: config.cache.memory.maxBytes,
    now,
  });
  const client = createRedisClient(config.cache);
  if (!client) return { store: memory };
  const shared = new RedisStore(client, config.cache.keyPrefix, logger.child({ component: "redis" }));
  return { store: new TieredStore(memory, shared, now), shared, redis: client };
}
