/**
 * `/metrics`: Prometheus text from a registry per app, covering requests, tokens, denials, JWKS fetches
 * and age, cache lookups, Redis state and rate limiting, without ever showing a credential.
 */
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildApp } from "../../src/app.js";
import { startLocalIssuerServer } from "../../src/local/issuer.js";
import { AUDIENCE, basic, SERVICE, type TestEnv, testConfig, testEnv } from "../helpers/fixtures.js";
import { freePort, resolveTestRedis, type TestRedis } from "../helpers/redis.js";

/** The value of the sample `name{labels}` in exposition text, or undefined when absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries(
      [...(m[3] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1], l[2]]),
    );
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[4]);
  }
  return undefined;
}

async function scrape(env: { app: TestEnv["app"] }): Promise<string> {
  const res = await env.app.inject({ method: "GET", url: "/metrics" });
  expect(res.statusCode).toBe(200);
  expect(res.headers["content-type"]).toMatch(/^text\/plain; version=0\.0\.4/);
  return res.body;
}

describe("/metrics", () => {
  let env: TestEnv;
  let other: TestEnv;
  let sa: string;
  let minted: string;
  beforeAll(async () => {
    env = await testEnv({ rateLimit: { maxPerAddress: 4, maxPerServiceAccount: 100 } });
    other = await testEnv();
    sa = await env.issuer.mint({ namespace: "team-a", serviceAccount: "builder", audiences: [AUDIENCE] });
    const url = `/token?service=${SERVICE}&scope=repository:team-a/app:pull`;
    const first = await env.app.inject({ method: "GET", url, headers: { authorization: basic(sa) } });
    expect(first.statusCode).toBe(200);
    minted = first.json().token;
    const second = await env.app.inject({ method: "GET", url, headers: { authorization: basic(sa) } });
    expect(second.json().token).toBe(minted); // reused from the token cache
    const expired = await env.issuer.mint({
      namespace: "team-a",
      serviceAccount: "builder",
      audiences: [AUDIENCE],
      nowMs: Date.now() - 3600_000,
      ttlSeconds: 600,
    });
    for (let i = 0; i < 4; i++) {
      // unverified requests count against the address (the first valid one did too): the 4th is limited
      await env.app.inject({ method: "GET", url, headers: { authorization: basic(expired) } });
    }
    await env.app.inject({ method: "GET", url: "/nope" });
  });
  afterAll(async () => {
    await env.close();
    await other.close();
  });

  it("counts tokens issued and reused by service", async () => {
    const text = await scrape(env);
    expect(sample(text, "rte_tokens_issued_total", { service: SERVICE, outcome: "issued" })).toBe(1);
    expect(sample(text, "rte_tokens_issued_total", { service: SERVICE, outcome: "reused" })).toBe(1);
  });

  it("counts denials by reason and rate-limited requests", async () => {
    const text = await scrape(env);
    expect(sample(text, "rte_denials_total", { reason: "token_expired" })).toBe(3);
    expect(sample(text, "rte_denials_total", { reason: "rate_limited" })).toBe(1);
    expect(sample(text, "rte_rate_limited_total", { route: "/token" })).toBe(1);
  });

  it("times requests by route pattern and status", async () => {
    const text = await scrape(env);
    const labels = (status: string, route = "/token") => ({ method: "GET", route, status_code: status });
    expect(sample(text, "rte_http_request_duration_seconds_count", labels("200"))).toBe(2);
    expect(sample(text, "rte_http_request_duration_seconds_count", labels("401"))).toBe(3);
    expect(sample(text, "rte_http_request_duration_seconds_count", labels("429"))).toBe(1);
    expect(sample(text, "rte_http_request_duration_seconds_count", labels("404", "(unmatched)"))).toBe(1);
    expect(sample(text, "rte_http_request_duration_seconds_bucket", { ...labels("200"), le: "+Inf" })).toBe(
      2,
    );
  });

  it("reports JWKS fetches, key-set age and readiness per cluster", async () => {
    const text = await scrape(env);
    expect(sample(text, "rte_jwks_fetches_total", { cluster: "test", outcome: "ok" })).toBe(1);
    const age = sample(text, "rte_jwks_age_seconds", { cluster: "test" });
    expect(age).toBeGreaterThanOrEqual(0);
    expect(age).toBeLessThan(60);
    expect(sample(text, "rte_jwks_keys", { cluster: "test" })).toBe(1);
    expect(sample(text, "rte_jwks_ready", { cluster: "test" })).toBe(1);
    expect(sample(text, "rte_jwks_stale", { cluster: "test" })).toBe(0);
  });

  it("reports cache hits and misses by kind", async () => {
    const text = await scrape(env);
    expect(sample(text, "rte_cache_lookups_total", { kind: "identity", result: "hit" })).toBe(1);
    expect(
      sample(text, "rte_cache_lookups_total", { kind: "identity", result: "miss" }),
    ).toBeGreaterThanOrEqual(2);
    expect(sample(text, "rte_cache_lookups_total", { kind: "token", result: "hit" })).toBe(1);
    expect(sample(text, "rte_cache_lookups_total", { kind: "token", result: "miss" })).toBe(1);
  });

  it("reports the signing certificate's remaining lifetime and process metrics", async () => {
    const text = await scrape(env);
    expect(sample(text, "rte_signing_certificate_expiry_seconds", { service: SERVICE })).toBeGreaterThan(
      86_400,
    );
    expect(sample(text, "process_cpu_user_seconds_total")).toBeGreaterThan(0);
    expect(sample(text, "rte_redis_up")).toBeUndefined(); // no Redis configured
  });

  it("keeps a registry per app", async () => {
    const text = await scrape(other);
    expect(sample(text, "rte_tokens_issued_total", { service: SERVICE, outcome: "issued" })).toBeUndefined();
    expect(sample(text, "rte_denials_total", { reason: "token_expired" })).toBeUndefined();
  });

  it("never shows a credential and is never rate limited", async () => {
    for (let i = 0; i < 10; i++) {
      const text = await scrape(env);
      expect(text).not.toContain(sa);
      expect(text).not.toContain(minted);
      expect(text).not.toContain(sa.split(".")[2]!);
    }
  });
});

describe("/metrics: JWKS fetch failures", () => {
  it("counts failed fetches by cluster", async () => {
    const server = await startLocalIssuerServer();
    const config = await testConfig(server.url);
    const sa = await server.issuer.mint({ namespace: "team-a", serviceAccount: "b", audiences: [AUDIENCE] });
    await server.close();
    const app = await buildApp(config, { logger: pino({ level: "silent" }) });
    try {
      const res = await app.inject({
        method: "GET",
        url: `/token?service=${SERVICE}`,
        headers: { authorization: basic(sa) },
      });
      expect(res.statusCode).toBe(503);
      const text = await scrape({ app });
      expect(sample(text, "rte_jwks_fetches_total", { cluster: "test", outcome: "error" })).toBe(1);
      expect(sample(text, "rte_jwks_fetches_total", { cluster: "test", outcome: "ok" })).toBeUndefined();
      expect(sample(text, "rte_jwks_age_seconds", { cluster: "test" })).toBeUndefined();
      expect(sample(text, "rte_jwks_ready", { cluster: "test" })).toBe(0);
      expect(sample(text, "rte_denials_total", { reason: "keys_unavailable" })).toBe(1);
    } finally {
      await app.close();
    }
  });
});

describe("/metrics: Redis", () => {
  let redis: TestRedis;
  beforeAll(async () => {
    redis = await resolveTestRedis();
  });
  afterAll(async () => redis.stop());

  it("reports a connected Redis as up", async () => {
    const env = await testEnv({ cache: { redisUrl: redis.url } });
    try {
      let up: number | undefined;
      for (let i = 0; i < 100 && up !== 1; i++) {
        up = sample(await scrape(env), "rte_redis_up");
        if (up !== 1) await new Promise((r) => setTimeout(r, 50));
      }
      expect(up).toBe(1);
    } finally {
      await env.close();
    }
  });

  it("reports an unreachable Redis as down and counts its errors", async () => {
    const env = await testEnv({ cache: { redisUrl: `redis://127.0.0.1:${await freePort()}` } });
    try {
      let errors = 0;
      for (let i = 0; i < 100 && errors === 0; i++) {
        errors = sample(await scrape(env), "rte_redis_errors_total") ?? 0;
        if (errors === 0) await new Promise((r) => setTimeout(r, 50));
      }
      expect(errors).toBeGreaterThan(0);
      expect(sample(await scrape(env), "rte_redis_up")).toBe(0);
    } finally {
      await env.close();
    }
  });
});
