/**
 * Attack: an unauthenticated peer against a cluster with `verification: tokenReview`, where no signature
 * is checked before the cluster's TokenReview (docs/tokenreview.md). It knows the cluster's issuer (issuers
 * are public: OIDC discovery) and sends forged, unsigned tokens whose claims look right.
 *
 * Promises held to account (docs/security.md "An unauthenticated network peer": nothing can be planted in
 * the cache, entries are written only after a successful verification; docs/security-availability.md
 * promise 4: an error body names nothing of the configuration):
 * - a forged token that the cluster refuses leaves no identity entry in Redis (otherwise every forged
 *   token is a ~1 KiB entry kept up to 10 minutes: a peer fills the shared Redis at its rate limit);
 * - the refusal names no cluster, on GET and POST /token and at /v1/credential-provider.
 */
import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { SERVICE } from "../helpers/fixtures.js";
import { resolveTestRedis, type TestRedis } from "../helpers/redis.js";
import { credentialProvider, type ReviewEnv, reviewEnv, TOKENS, tokenGet } from "../helpers/tokenreview.js";

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
afterEach(async () => {
  await env?.close();
  env = undefined;
});

/** `token` with claims changed and its signature replaced by garbage (no key signed it). */
function forged(token: string, change: (claims: Record<string, unknown>) => void): string {
  const [header, payload] = token.split(".");
  const claims = JSON.parse(Buffer.from(payload!, "base64url").toString()) as Record<string, unknown>;
  change(claims);
  return `${header}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.${Buffer.from(randomUUID()).toString("base64url")}`;
}

async function healthy(e: ReviewEnv): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!e.app.exchange.store.healthy()) {
    if (Date.now() > deadline) throw new Error("redis did not connect");
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("forged tokens of a tokenReview-only cluster (unauthenticated peer)", () => {
  it("leave no identity entry in the cache: only what the cluster authenticated is stored", async () => {
    const prefix = `atk-${randomUUID().slice(0, 8)}:`;
    env = await reviewEnv(
      { verification: "tokenReview" },
      { cache: { redisUrl: redis.url, keyPrefix: prefix, commandTimeoutMs: 500 } },
    );
    await healthy(env);
    for (let i = 0; i < 20; i++) {
      const token = forged(TOKENS.podBound, (c) => {
        c.jti = randomUUID();
      });
      const res = await tokenGet(env.app, token);
      expect(res.statusCode).toBe(401);
      expect(res.json().errors[0].detail.reason).toBe("token_review_refused");
    }
    expect(env.api.reviews()).toBe(20);
    expect(await client.keys(`${prefix}id:*`)).toEqual([]);
    // A token the cluster authenticates is served; its review is cached (one API call for two requests).
    expect((await tokenGet(env.app, TOKENS.podBound)).statusCode).toBe(200);
    expect((await tokenGet(env.app, TOKENS.podBound)).statusCode).toBe(200);
    expect(env.api.reviews()).toBe(21);
  });

  it("a forged token naming a service account never counts against that account's rate limit", async () => {
    env = await reviewEnv(
      { verification: "tokenReview" },
      { rateLimit: { maxPerServiceAccount: 3, maxPerAddress: 1000 } },
    );
    const token = forged(TOKENS.podBound, (c) => {
      c.jti = randomUUID();
    });
    for (let i = 0; i < 6; i++) {
      const res = await env.app.inject({
        method: "GET",
        url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull`,
        headers: { authorization: `Basic ${Buffer.from(`x:${token}`).toString("base64")}` },
        remoteAddress: "127.0.0.9",
      });
      expect(res.statusCode).toBe(401);
    }
    // The account the forged token named still gets its tokens, from its own address.
    const res = await env.app.inject({
      method: "GET",
      url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull`,
      headers: { authorization: `Basic ${Buffer.from(`x:${TOKENS.podBound}`).toString("base64")}` },
      remoteAddress: "127.0.0.10",
    });
    expect(res.statusCode, res.body).toBe(200);
  });

  it("the refusal names no cluster, on GET and POST /token and at /v1/credential-provider", async () => {
    env = await reviewEnv({ verification: "tokenReview" });
    const token = forged(TOKENS.podBound, (c) => {
      c.jti = randomUUID();
    });
    const get = await tokenGet(env.app, token);
    expect(get.statusCode).toBe(401);
    expect(get.json().errors[0].detail.reason).toBe("token_review_refused");
    const post = await env.app.inject({
      method: "POST",
      url: "/token",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      payload: new URLSearchParams({ grant_type: "password", service: SERVICE, password: token }).toString(),
    });
    expect(post.statusCode).toBe(401);
    const cp = await credentialProvider(
      env.app,
      forged(TOKENS.credentialProvider, (c) => {
        c.jti = randomUUID();
      }),
    );
    expect(cp.statusCode).toBe(401);
    for (const body of [get.body, post.body, cp.body]) expect(body).not.toMatch(/\bkind\b/);
    expect(get.json().errors[0].message).toMatch(/^the cluster refused the token: \[invalid bearer token/);
    // The operator still sees which cluster on the access line.
    expect(
      env.lines.some((l) => l.includes('"token review refused"') && l.includes('"cluster":"kind"')),
    ).toBe(true);
  });

  it("an API server that cannot answer is not named either", async () => {
    env = await reviewEnv({ verification: "tokenReview" });
    env.api.fail = { status: 403 };
    const res = await tokenGet(env.app, TOKENS.podBound);
    expect(res.statusCode).toBe(401);
    expect(res.json().errors[0].detail.reason).toBe("token_review_unavailable");
    expect(res.body).not.toMatch(/\bkind\b/);
    expect(res.json().errors[0].message).toBe("the API server cannot review the token right now (forbidden)");
  });
});
