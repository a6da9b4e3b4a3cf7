/**
 * The Redis store (ioredis): single node, Sentinel or Cluster.
 *
 * A request never waits on Redis longer than `cache.commandTimeoutMs`: ioredis' `commandTimeout` bounds
 * each command, the offline queue is disabled (a command sent while disconnected fails at once instead of
 * queuing without bound), and ioredis keeps reconnecting in the background with capped back-off.
 * Every failure is a miss (see the {@link CacheStore} contract); state changes are logged once each,
 * never per request.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import type { Cluster, Redis, RedisOptions } from "ioredis";
import type { Logger } from "pino";
import type { Config } from "../config/schema.js";
import type { CacheStore } from "./store.js";

/** A Redis connection of any topology. */
export type RedisClient = Redis | Cluster;

/** After a failed or timed-out command, Redis is bypassed for this long, ms (a simple circuit breaker). */
const REDIS_PAUSE_MS = 1_000;

const pausedUntil = new WeakMap<RedisClient, number>();

/**
 * Whether `client` may be used now: connected, and not paused after a recent failure. One request can
 * issue several cache commands; the pause keeps a slow Redis from costing each of them a full
 * `commandTimeoutMs`.
 */
export function redisUsable(client: RedisClient): boolean {
  return client.status === "ready" && (pausedUntil.get(client) ?? 0) <= Date.now();
}

/** Records a failed or timed-out command: `client` is bypassed for {@link REDIS_PAUSE_MS}. */
export function pauseRedis(client: RedisClient): void {
  pausedUntil.set(client, Date.now() + REDIS_PAUSE_MS);
}

/** Whether `cache` configures a Redis (a URL, Sentinel or Cluster): without one the service runs on memory. */
export function redisConfigured(cache: Config["cache"]): boolean {
  return Boolean(cache.redisUrl || cache.redisSentinel || cache.redisCluster);
}

/**
 * Creates the ioredis client for `cache` config, or `undefined` when no Redis is configured.
 * Connection starts in the background; the client is usable once `status === "ready"`.
 */
export function createRedisClient(cache: Config["cache"]): RedisClient | undefined {
  if (!redisConfigured(cache)) return undefined;
  // Loaded only when Redis is configured: ioredis adds ~9 MiB to the RSS of a process that never uses it.
  const { Cluster, Redis } = createRequire(import.meta.url)("ioredis") as typeof import("ioredis");
  const password = cache.redisPasswordFile ? readFileSync(cache.redisPasswordFile, "utf8").trim() : undefined;
  const common: RedisOptions = {
    commandTimeout: cache.commandTimeoutMs,
    connectTimeout: cache.connectTimeoutMs,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    // Reconnect forever with capped back-off; requests never wait for it.
    retryStrategy: (times: number) => Math.min(100 * 2 ** Math.min(times, 5), 2_000),
    ...(password ? { password } : {}),
  };
  if (cache.redisUrl) return new Redis(cache.redisUrl, common);
  if (cache.redisSentinel) {
    return new Redis({
      ...common,
      sentinels: cache.redisSentinel.sentinels,
      name: cache.redisSentinel.name,
      db: cache.redisSentinel.db,
      ...(password ? { sentinelPassword: password } : {}),
    });
  }
  if (cache.redisCluster) {
    return new Cluster(cache.redisCluster.nodes, {
      enableOfflineQueue: false,
      clusterRetryStrategy: (times: number) => Math.min(100 * 2 ** Math.min(times, 5), 2_000),
      redisOptions: common,
      slotsRefreshTimeout: cache.connectTimeoutMs,
    });
  }
  return undefined;
}

/** {@link CacheStore} on Redis. Keys get the configured prefix. */
export class RedisStore implements CacheStore {
  readonly kind = "redis" as const;
  readonly client: RedisClient;
  readonly #prefix: string;
  readonly #logger: Logger;
  #up: boolean | undefined;

  /**
   * @param client an ioredis client (see {@link createRedisClient})
   * @param prefix key prefix, e.g. `rte:`
   * @param logger receives one line per state change
   */
  constructor(client: RedisClient, prefix: string, logger: Logger) {
    this.client = client;
    this.#prefix = prefix;
    this.#logger = logger;
    client.on("ready", () => this.#state(true));
    client.on("error", (err: Error) => this.#state(false, err));
    client.on("end", () => this.#state(false));
    client.on("close", () => this.#state(false));
  }

  #state(up: boolean, err?: Error): void {
    if (this.#up === up) return;
    const first = this.#up === undefined;
    this.#up = up;
    if (up) this.#logger.info("redis connected: sharing cache and rate limits");
    else if (!first || err) {
      this.#logger.warn({ reason: err?.message }, "redis unavailable: serving from the in-process cache");
    }
  }

  healthy(): boolean {
    return redisUsable(this.client);
  }

  async get(key: string): Promise<string | undefined> {
    if (!this.healthy()) return undefined;
    try {
      return (await this.client.get(this.#prefix + key)) ?? undefined;
    } catch {
      pauseRedis(this.client);
      return undefined;
    }
  }

  async set(key: string, value: string, ttlMs: number): Promise<void> {
    if (!this.healthy() || ttlMs < 1) return;
    try {
      await this.client.set(this.#prefix + key, value, "PX", Math.ceil(ttlMs));
    } catch {
      pauseRedis(this.client);
      // a miss next time; see the CacheStore contract
    }
  }

  async setIfAbsent(key: string, value: string, ttlMs: number): Promise<boolean> {
    if (!this.healthy()) return true;
    try {
      return (await this.client.set(this.#prefix + key, value, "PX", Math.ceil(ttlMs), "NX")) === "OK";
    } catch {
      pauseRedis(this.client);
      return true;
    }
  }

  async delete(key: string): Promise<void> {
    if (!this.healthy()) return;
    try {
      await this.client.del(this.#prefix + key);
    } catch {
      pauseRedis(this.client);
      // ignored
    }
  }

  async close(): Promise<void> {
    this.client.removeAllListeners();
    // keep one listener: ioredis reports "Unhandled error event" for errors raised while closing
    this.client.on("error", () => {});
    this.client.disconnect();
  }
}
