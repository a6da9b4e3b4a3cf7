/**
 * Redis failures never take pulls down: each case runs against a real `redis-server` this test starts,
 * kills, restarts and slows down (`DEBUG SLEEP`).
 */
import type { FastifyInstance } from "fastify";
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { buildApp } from "../../src/app.js";
import { startLocalIssuerServer } from "../../src/local/issuer.js";
import { AUDIENCE, basic, capturingLogger, SERVICE, testConfig } from "../helpers/fixtures.js";
import { freePort, SpawnedRedis } from "../helpers/redis.js";

let issuerServer: Awaited<ReturnType<typeof startLocalIssuerServer>>;
const cleanup: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  issuerServer = await startLocalIssuerServer();
});
afterAll(async () => {
  await issuerServer?.close();
});
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function appOn(redisUrl: string) {
  const config = await testConfig(issuerServer.url, {
    cache: { redisUrl, commandTimeoutMs: 50, connectTimeoutMs: 200 },
  });
  const { logger, lines } = capturingLogger("info");
  const app = await buildApp(config, { logger });
  cleanup.push(() => app.close());
  return { app, lines };
}

function mintFor(namespace = "team-a") {
  return issuerServer.issuer.mint({ namespace, serviceAccount: "app", audiences: [AUDIENCE] });
}

async function timedToken(app: FastifyInstance, sa: string) {
  const started = performance.now();
  const res = await app.inject({
    method: "GET",
    url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull`,
    headers: { authorization: basic(sa) },
  });
  return { res, ms: performance.now() - started };
}

async function until(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("condition not reached");
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("Redis down at startup", () => {
  it("starts, serves from memory, reports degraded readiness (200) and logs once", async () => {
    const port = await freePort();
    const { app, lines } = await appOn(`redis://127.0.0.1:${port}`);
    for (let i = 0; i < 5; i++) {
      const { res } = await timedToken(app, await mintFor());
      expect(res.statusCode).toBe(200);
    }
    const ready = await app.inject({ method: "GET", url: "/readyz" });
    expect(ready.statusCode).toBe(200);
    expect(ready.json()).toMatchObject({ status: "degraded", cache: { kind: "redis", state: "degraded" } });
    await new Promise((r) => setTimeout(r, 700)); // several reconnect attempts
    const outageLines = lines.filter((l) => l.includes("redis unavailable"));
    expect(outageLines).toHaveLength(1);
  });
});

describe("Redis killed mid-run, then back", () => {
  it("keeps answering within the bound, then reconnects and shares state again", async () => {
    const redis = await SpawnedRedis.start();
    cleanup.push(() => redis.stop());
    const { app, lines } = await appOn(redis.url);
    await until(() => app.exchange.store.healthy());
    expect((await timedToken(app, await mintFor())).res.statusCode).toBe(200);

    await redis.kill();
    await until(() => !app.exchange.store.healthy());
    for (let i = 0; i < 5; i++) {
      const { res, ms } = await timedToken(app, await mintFor());
      expect(res.statusCode).toBe(200);
      expect(ms).toBeLessThan(1000);
    }
    expect((await app.inject({ method: "GET", url: "/readyz" })).json().cache.state).toBe("degraded");

    await redis.startAgain();
    await until(() => app.exchange.store.healthy(), 15_000);
    const sa = await mintFor();
    expect((await timedToken(app, sa)).res.statusCode).toBe(200);
    const client = new Redis(redis.url);
    cleanup.push(async () => client.disconnect());
    const keys = await client.keys(`rte:id:${app.exchange.sealer.key("identity", sa)}*`);
    expect(keys).toHaveLength(1);
    expect(lines.filter((l) => l.includes("redis connected")).length).toBe(2);
  });
});

describe("Redis slow (DEBUG SLEEP)", () => {
  it("answers within the command-timeout bound instead of waiting for Redis", async () => {
    const redis = await SpawnedRedis.start();
    cleanup.push(() => redis.stop());
    const { app } = await appOn(redis.url);
    await until(() => app.exchange.store.healthy());
    expect((await timedToken(app, await mintFor())).res.statusCode).toBe(200);
    const sleeper = new Redis(redis.url);
    cleanup.push(async () => sleeper.disconnect());
    const sleeping = sleeper.call("DEBUG", "SLEEP", "2").catch(() => undefined);
    await new Promise((r) => setTimeout(r, 50));
    const { res, ms } = await timedToken(app, await mintFor("team-b"));
    expect(res.statusCode).toBe(200);
    expect(ms).toBeLessThan(1500);
    await sleeping;
  });
});

describe("cache errors never grant access", () => {
  it("a corrupt or foreign cache entry is a miss: a bad token is still refused", async () => {
    const redis = await SpawnedRedis.start();
    cleanup.push(() => redis.stop());
    const { app } = await appOn(redis.url);
    await until(() => app.exchange.store.healthy());
    const sa = await mintFor();
    const forged = `${sa.slice(0, -10)}AAAAAAAAAA`;
    const client = new Redis(redis.url);
    cleanup.push(async () => client.disconnect());
    // learn the key suffix (service + trust fingerprint) from a real entry, then put garbage where the
    // forged token's identity would be cached
    const ok = await app.inject({
      method: "GET",
      url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull`,
      headers: { authorization: basic(sa) },
    });
    expect(ok.statusCode).toBe(200);
    const [realKey] = await client.keys(`rte:id:${app.exchange.sealer.key("identity", sa)}:*`);
    const suffix = realKey!.split(":").at(-1);
    await client.set(
      `rte:id:${app.exchange.sealer.key("identity", forged)}:${suffix}`,
      "not json",
      "PX",
      60_000,
    );
    const res = await app.inject({
      method: "GET",
      url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull`,
      headers: { authorization: basic(forged) },
    });
    expect(res.statusCode).toBe(401);
    expect(res.json().errors[0].detail.reason).toBe("invalid_signature");
  });
});
