import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cacheKeyHash } from "../../src/cache/keys.js";
import { createRedisClient, RedisStore } from "../../src/cache/redis.js";
import { MemoryStore } from "../../src/cache/store.js";
import { TieredStore } from "../../src/cache/tiered.js";
import { parseConfig } from "../../src/config/load.js";
import { resolveTestRedis, type TestRedis } from "../helpers/redis.js";

describe("MemoryStore", () => {
  it("expires entries by TTL on a frozen clock and evicts the least recently used", async () => {
    let now = 1_000_000;
    const store = new MemoryStore({ maxEntries: 100, now: () => now });
    await store.set("a", "1", 1000);
    expect(await store.get("a")).toBe("1");
    now += 999;
    expect(await store.get("a")).toBe("1");
    now += 1;
    expect(await store.get("a")).toBeUndefined();
    for (let i = 0; i < 101; i++) await store.set(`k${i}`, String(i), 60_000);
    expect(await store.get("k0")).toBeUndefined();
    expect(await store.get("k100")).toBe("100");
  });

  it("with maxBytes, evicts least recently used entries once their total size passes the bound", async () => {
    const store = new MemoryStore({ maxEntries: 1000, maxBytes: 10_000 });
    const big = "x".repeat(3_000);
    for (let i = 0; i < 5; i++) await store.set(`k${i}`, big, 60_000);
    expect(await store.get("k0")).toBeUndefined();
    expect(await store.get("k1")).toBeUndefined();
    expect(await store.get("k4")).toBe(big);
    // an entry larger than the whole bound is not kept at all
    await store.set("huge", "y".repeat(20_000), 60_000);
    expect(await store.get("huge")).toBeUndefined();
    expect(await store.get("k4")).toBe(big);
  });

  it("setIfAbsent wins once until the entry expires", async () => {
    let now = 0;
    const store = new MemoryStore({ maxEntries: 100, now: () => now });
    expect(await store.setIfAbsent("l", "a", 100)).toBe(true);
    expect(await store.setIfAbsent("l", "b", 100)).toBe(false);
    now = 100;
    expect(await store.setIfAbsent("l", "c", 100)).toBe(true);
  });

  it("hashes secrets into keys", () => {
    expect(cacheKeyHash("abc")).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  });
});

describe("RedisStore and TieredStore on real Redis", () => {
  let redis: TestRedis;
  let store: RedisStore;
  beforeAll(async () => {
    redis = await resolveTestRedis();
    const config = parseConfig({
      clusters: [{ name: "x", issuer: "https://x", audiences: ["a"] }],
      registries: [{ service: "s", issuer: "i", signingKey: { keyFile: "k", certFile: "c" } }],
      policy: { rules: [{ name: "r", allow: [{ repository: "*", actions: ["pull"] }] }] },
      cache: { redisUrl: redis.url, keyPrefix: `store-test-${process.pid}:`, commandTimeoutMs: 500 },
    });
    store = new RedisStore(
      createRedisClient(config.cache)!,
      config.cache.keyPrefix,
      pino({ level: "silent" }),
    );
    const deadline = Date.now() + 5000;
    while (!store.healthy()) {
      if (Date.now() > deadline) throw new Error("redis did not connect");
      await new Promise((r) => setTimeout(r, 20));
    }
  });
  afterAll(async () => {
    await store?.close();
    await redis?.stop();
  });

  it("gets, sets with a TTL, locks and deletes under its prefix", async () => {
    await store.set("a", "1", 60_000);
    expect(await store.get("a")).toBe("1");
    expect(await store.client.pttl(`store-test-${process.pid}:a`)).toBeGreaterThan(59_000);
    expect(await store.setIfAbsent("lock", "x", 60_000)).toBe(true);
    expect(await store.setIfAbsent("lock", "y", 60_000)).toBe(false);
    await store.delete("lock");
    expect(await store.get("lock")).toBeUndefined();
  });

  it("a tiered read fills the memory tier for the entry's remaining lifetime only", async () => {
    let now = Date.now();
    const memory = new MemoryStore({ maxEntries: 100, now: () => now });
    const tiered = new TieredStore(memory, store, () => now);
    await tiered.set("t", "v", 10_000);
    const otherReplica = new TieredStore(
      new MemoryStore({ maxEntries: 100, now: () => now }),
      store,
      () => now,
    );
    now += 4_000;
    expect(await otherReplica.get("t")).toBe("v");
    now += 6_000;
    expect(await otherReplica.memory.get("t")).toBeUndefined();
  });
});
