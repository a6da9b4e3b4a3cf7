/**
 * Attack: someone who can write the Redis that replicas share, against the unknown-`kid` markers
 * (docs/security.md "A Redis writer": cannot "mark a real `kid` as unknown to delay a rotation").
 *
 * The marker a replica writes after a fresh JWKS fetch lacked a `kid` is sealed and named by an HMAC, so
 * it cannot be forged; but anyone can make the service write a genuine one (send a token whose header
 * names the `kid`, e.g. a key about to be re-published or a predictable `kid`), and a writer can then keep
 * it for ever (an edited expiry prefix, PERSIST). The marker must carry its own expiry inside the sealed
 * value, so that once `jwks.unknownKidRefillSeconds` has passed, a token signed by that key is picked up
 * by every replica (a re-fetch), whatever the store says.
 */
import { generateKeyPairSync } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { FastifyInstance } from "fastify";
import { Redis } from "ioredis";
import pino from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { buildApp } from "../../src/app.js";
import type { Config } from "../../src/config/schema.js";
import { LocalIssuer, startLocalIssuerServer } from "../../src/local/issuer.js";
import { AUDIENCE, basic, SERVICE, testConfig } from "../helpers/fixtures.js";
import { resolveTestRedis, type TestRedis } from "../helpers/redis.js";

let redis: TestRedis;
let client: Redis;
const closers: Array<() => Promise<unknown>> = [];
beforeAll(async () => {
  redis = await resolveTestRedis();
  client = new Redis(redis.url);
});
afterAll(async () => {
  client?.disconnect();
  await redis?.stop();
});
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

async function instance(config: Config): Promise<FastifyInstance> {
  const app = await buildApp(config, { logger: pino({ level: "silent" }) });
  closers.push(() => app.close());
  const deadline = Date.now() + 5000;
  while (!app.exchange.store.healthy()) {
    if (Date.now() > deadline) throw new Error("redis did not connect");
    await sleep(20);
  }
  return app;
}

function tokenRequest(app: FastifyInstance, credential: string) {
  return app.inject({
    method: "GET",
    url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull`,
    headers: { authorization: basic(credential) },
  });
}

/** A token with header `kid` and a signature nobody made (what any peer can send). */
function withKid(token: string, kid: string): string {
  const [, payload, signature] = token.split(".");
  return `${Buffer.from(JSON.stringify({ alg: "RS256", kid })).toString("base64url")}.${payload}.${signature}`;
}

describe("a Redis writer and the unknown-kid markers", () => {
  it("cannot keep a genuine marker alive past unknownKidRefillSeconds: the key is picked up once published", async () => {
    const server = await startLocalIssuerServer();
    closers.push(() => server.close());
    const prefix = `atk-kid-${process.pid}-${Date.now()}:`;
    const config = await testConfig(server.url, {
      cache: { redisUrl: redis.url, keyPrefix: prefix, commandTimeoutMs: 500 },
      rateLimit: { enabled: false },
    });
    const cluster = config.clusters[0]!;
    const tuned: Config = {
      ...config,
      clusters: [{ ...cluster, jwks: { ...cluster.jwks, unknownKidRefillSeconds: 1, unknownKidBurst: 5 } }],
    };
    const first = await instance(tuned);
    const second = await instance(tuned);
    const mint = () =>
      server.issuer.mint({ namespace: "team-a", serviceAccount: "app", audiences: [AUDIENCE] });
    const current = await mint();
    expect((await tokenRequest(first, current)).statusCode).toBe(200);
    expect((await tokenRequest(second, current)).statusCode).toBe(200);

    // The key the issuer will publish next; a peer names its kid before it is published.
    const next = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey;
    const nextKid = new LocalIssuer(server.url, [next]).kid;
    const early = await tokenRequest(first, withKid(current, nextKid));
    expect(early.json().errors[0].detail.reason).toBe("unknown_key");
    const markers = await client.keys(`${prefix}jwks-unknown:*`);
    expect(markers).toHaveLength(1);
    // The writer keeps the genuine marker for ever: no TTL, and a far expiry if the value carries one.
    const value = (await client.get(markers[0]!))!;
    if (/^\d+\|/.test(value))
      await client.set(markers[0]!, `9999999999999|${value.slice(value.indexOf("|") + 1)}`);
    await client.persist(markers[0]!);

    await sleep(1_500);
    server.issuer.keys = [next, ...server.issuer.keys];
    const rotated = await mint();
    const res = await tokenRequest(second, rotated);
    expect(res.statusCode, res.body).toBe(200);
  });
});
