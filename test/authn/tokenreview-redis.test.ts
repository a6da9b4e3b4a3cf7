/**
 * The review cache in Redis (shared by replicas) against someone who can read and write that Redis: a
 * reader finds HMAC key names and AES-GCM sealed values, never the token, the identity or a "yes"; a
 * writer can neither forge a "yes" nor keep an expired one alive (editing the tier's expiry prefix and
 * PERSIST-ing the key change nothing), so a deleted pod still stops within the documented bound.
 */
import { randomUUID } from "node:crypto";
import type { FastifyInstance } from "fastify";
import { Redis } from "ioredis";
import pino from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { buildApp } from "../../src/app.js";
import { resolveTestRedis, type TestRedis } from "../helpers/redis.js";
import { podUidOf, type ReviewEnv, reviewEnv, TOKENS, TR_NOW, tokenGet } from "../helpers/tokenreview.js";

let redis: TestRedis;
let client: Redis;
beforeAll(async () => {
  redis = await resolveTestRedis();
  client = new Redis(redis.url);
});
afterAll(async () => {
  client?.disconnect();
  await redis?.stop();
});

let env: ReviewEnv | undefined;
let replica: FastifyInstance | undefined;
afterEach(async () => {
  await replica?.close();
  await env?.close();
  env = undefined;
  replica = undefined;
});

async function healthy(app: FastifyInstance): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!app.exchange.store.healthy()) {
    if (Date.now() > deadline) throw new Error("redis did not connect");
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Two replicas sharing one Redis and one API server; the replica has its own (movable) clock. */
async function replicas(prefix: string) {
  env = await reviewEnv({}, { cache: { redisUrl: redis.url, keyPrefix: prefix, commandTimeoutMs: 500 } });
  let clock = TR_NOW;
  replica = await buildApp(env.config, { logger: pino({ level: "silent" }), now: () => clock });
  await healthy(env.app);
  await healthy(replica);
  return { advanceReplica: (ms: number) => (clock += ms) };
}

describe("review cache in Redis", () => {
  it("is shared by replicas and holds nothing a reader can use", async () => {
    const prefix = `trv-${randomUUID().slice(0, 8)}:`;
    await replicas(prefix);
    expect((await tokenGet(env!.app, TOKENS.podBound)).statusCode).toBe(200);
    expect((await tokenGet(replica!, TOKENS.podBound)).statusCode).toBe(200);
    expect(env!.api.reviews()).toBe(1);
    const keys = await client.keys(`${prefix}rv:*`);
    expect(keys).toHaveLength(1);
    expect(keys[0]).toMatch(new RegExp(`^${prefix}rv:[0-9a-f]{64}$`));
    const value = (await client.get(keys[0]!))!;
    expect(value).toMatch(/^\d+\|s1\.[A-Za-z0-9_-]+$/);
    for (const secret of [TOKENS.podBound.split(".")[1]!, "system:serviceaccount", "team-a", "builder-pod"]) {
      expect(value).not.toContain(secret);
    }
  });

  it("a writer cannot forge a yes, nor keep an expired one alive: the deleted pod is refused", async () => {
    const prefix = `trv-${randomUUID().slice(0, 8)}:`;
    const { advanceReplica } = await replicas(prefix);
    expect((await tokenGet(env!.app, TOKENS.podBound)).statusCode).toBe(200);
    env!.api.deletePod(podUidOf(TOKENS.podBound));
    const [key] = await client.keys(`${prefix}rv:*`);
    const value = (await client.get(key!))!;
    // Keep the sealed "yes" forever: a far expiry in the tier's prefix, and no TTL on the key.
    await client.set(key!, `9999999999999|${value.slice(value.indexOf("|") + 1)}`);
    await client.persist(key!);
    advanceReplica(10_001);
    const res = await tokenGet(replica!, TOKENS.podBound);
    expect(res.statusCode).toBe(401);
    expect(res.json().errors[0].detail.reason).toBe("token_review_refused");
    // A "yes" sealed for another token, copied under this token's key, opens to nothing either.
    expect((await tokenGet(env!.app, TOKENS.plain)).statusCode).toBe(200);
    const plainKey = (await client.keys(`${prefix}rv:*`)).find((k) => k !== key)!;
    const plainValue = (await client.get(plainKey))!;
    await client.set(key!, plainValue);
    advanceReplica(1);
    expect((await tokenGet(replica!, TOKENS.podBound)).statusCode).toBe(401);
    expect(env!.api.reviews()).toBe(4);
  });
});
