/**
 * Redis never carries trust (issue 12 §2), against a real Redis: what a Redis writer plants (an identity
 * for any credential, a key set with an attacker's key, an unknown-`kid` marker for a real key) is a
 * miss; a key set is adopted only by a replica with the same trust source; and of two replicas on one
 * Redis, the one that reloads never re-adopts the older shared copy, while the other stops trusting a
 * removed key at its next refresh. The reader side (nothing usable in Redis) is in shared.test.ts.
 */
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import { Redis } from "ioredis";
import { decodeProtectedHeader } from "jose";
import pino from "pino";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { buildApp } from "../../src/app.js";
import { cacheKeyHash } from "../../src/cache/keys.js";
import { CacheSealer } from "../../src/cache/seal.js";
import type { Config } from "../../src/config/schema.js";
import { LocalIssuer, startLocalIssuerServer } from "../../src/local/issuer.js";
import { AUDIENCE, basic, SERVICE, testConfig } from "../helpers/fixtures.js";
import { resolveTestRedis, type TestRedis } from "../helpers/redis.js";

let redis: TestRedis;
let client: Redis;
const servers: Array<{ close: () => Promise<unknown> }> = [];
const apps: FastifyInstance[] = [];
let prefix: string;
let counter = 0;

beforeAll(async () => {
  redis = await resolveTestRedis();
  client = new Redis(redis.url);
});
afterAll(async () => {
  client?.disconnect();
  await redis?.stop();
});
beforeEach(() => {
  prefix = `trust-${process.pid}-${Date.now()}-${counter++}:`;
});
afterEach(async () => {
  await Promise.all(apps.splice(0).map((a) => a.close()));
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function issuerServer() {
  const server = await startLocalIssuerServer();
  servers.push(server);
  return server;
}

async function instance(config: Config): Promise<FastifyInstance> {
  const app = await buildApp(config, { logger: pino({ level: "silent" }) });
  apps.push(app);
  const deadline = Date.now() + 5000;
  while (!app.exchange.store.healthy()) {
    if (Date.now() > deadline) throw new Error("redis did not connect");
    await new Promise((r) => setTimeout(r, 20));
  }
  return app;
}

function redisConfig(issuerUrl: string, extra: Record<string, unknown> = {}): Promise<Config> {
  return testConfig(issuerUrl, {
    cache: { redisUrl: redis.url, keyPrefix: prefix, commandTimeoutMs: 500 },
    rateLimit: { enabled: false },
    ...extra,
  });
}

function tokenRequest(app: FastifyInstance, credential: string) {
  return app.inject({
    method: "GET",
    url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull`,
    headers: { authorization: basic(credential) },
  });
}

function teamA(issuer: LocalIssuer, serviceAccount = "app"): Promise<string> {
  return issuer.mint({ namespace: "team-a", serviceAccount, audiences: [AUDIENCE] });
}

const unknownKey = (kid: string) => ({
  errors: [
    {
      code: "UNAUTHORIZED",
      message: `token signed by unknown key with ID "${kid}"`,
      detail: { reason: "unknown_key" },
    },
  ],
});

describe("a Redis writer", () => {
  it("cannot make a credential authenticate by writing an identity entry for it", async () => {
    const server = await issuerServer();
    const app = await instance(await redisConfig(server.url));
    const sa = await teamA(server.issuer);
    expect((await tokenRequest(app, sa)).statusCode).toBe(200);
    const identity = await app.exchange.realm.authenticate(sa, app.exchange.realm.registry(SERVICE));
    const [real] = await client.keys(`${prefix}id:*`);
    const suffix = real!.split(":").at(-1)!;
    const realValue = (await client.get(real!))!;
    // Not signed by the cluster: its identity can only come from the cache.
    const forged = `${sa.slice(0, -10)}AAAAAAAAAA`;
    const until = Date.now() + 60_000;
    const plain = `${until}|${JSON.stringify(identity)}`;
    const attempts: Array<() => [string, string]> = [
      // the name an unkeyed hash gives, with the identity in the clear
      () => [`id:${cacheKeyHash(forged)}:${suffix}`, plain],
      // the exact name, with the identity in the clear
      () => [exactName(), plain],
      // a real sealed entry copied under the forged credential's name
      () => [exactName(), realValue],
      // sealed, but with a secret other than the service's
      () => [
        exactName(),
        `${until}|${CacheSealer.ephemeral().seal(exactName(), JSON.stringify(identity), forged)}`,
      ],
    ];
    const exactName = () => `id:${app.exchange.sealer.key("identity", forged)}:${suffix}`;
    for (const attempt of attempts) {
      const [name, value] = attempt();
      await client.set(`${prefix}${name}`, value, "PX", 60_000);
      const res = await tokenRequest(app, forged);
      expect(res.statusCode, name).toBe(401);
      expect(res.json().errors[0].detail.reason).toBe("invalid_signature");
    }
  });

  it("cannot inject a key through the shared key set, under its exact name or the cluster's", async () => {
    const server = await issuerServer();
    const attacker = new LocalIssuer(server.url, [
      generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey,
    ]);
    const forged = await teamA(attacker);
    const plants: Array<(name: string | undefined, doc: string) => [string, string]> = [
      (_name, doc) => ["jwks:test", doc],
      (name, doc) => [name!, doc],
      (name, doc) => [name!, CacheSealer.ephemeral().seal(name!, doc)],
    ];
    for (const plant of plants) {
      // A fresh replica, which has no key set yet and looks in Redis first.
      const app = await instance(await redisConfig(server.url));
      const keySet = app.exchange.keySets[0]!;
      const now = Date.now();
      const doc = JSON.stringify({
        source: keySet.source,
        jwks: attacker.jwks(),
        requestedAt: now + 1000,
        fetchedAt: now + 1000,
        expiresAt: now + 3_600_000,
      });
      const [name, value] = plant(keySet.sharedName, doc);
      await client.set(`${prefix}${name}`, value, "PX", 60_000);
      const res = await tokenRequest(app, forged);
      expect(res.statusCode, name).toBe(401);
      expect(res.json()).toEqual(unknownKey(attacker.kid));
      expect((await tokenRequest(app, await teamA(server.issuer))).statusCode).toBe(200);
      // The planted entry was replaced by the sealed set fetched from the issuer.
      expect((await client.get(`${prefix}${keySet.sharedName}`))!.startsWith("s1.")).toBe(true);
      await client.del(`${prefix}jwks:test`);
    }
  });

  it("cannot mark a real kid unknown (a rotation's new key is still picked up)", async () => {
    const server = await issuerServer();
    const app = await instance(await redisConfig(server.url));
    expect((await tokenRequest(app, await teamA(server.issuer))).statusCode).toBe(200);
    const markers: Array<(kid: string) => [string, string]> = [
      // the name an unkeyed hash gives
      (kid) => [`jwks-unknown:test:${cacheKeyHash(kid).slice(0, 32)}`, "1"],
      // the exact name, unsealed
      (kid) => [
        `jwks-unknown:test:${app.exchange.sealer.key("jwks-unknown", `${app.exchange.keySets[0]!.source}\u0000${kid}`)}`,
        "unknown",
      ],
    ];
    for (const [i, marker] of markers.entries()) {
      server.issuer.rotate();
      const rotated = await teamA(server.issuer, `rotated-${i}`);
      const [name, value] = marker(decodeProtectedHeader(rotated).kid!);
      await client.set(`${prefix}${name}`, value, "PX", 60_000);
      expect((await tokenRequest(app, rotated)).statusCode, name).toBe(200);
    }
  });
});

describe("shared key sets are bound to their trust source", () => {
  it.each([
    ["another jwksUri", "uri"],
    ["a jwksFile", "file"],
  ])(
    "a cluster of the same name and issuer reading %s never adopts the set another replica fetched",
    async (_label, kind) => {
      const served = await issuerServer();
      const other = await issuerServer();
      const a = await instance(
        await redisConfig(served.url, {
          clusters: [
            {
              name: "test",
              issuer: served.url,
              audiences: [AUDIENCE],
              jwksUri: `${served.url}/openid/v1/jwks`,
            },
          ],
        }),
      );
      let source: Record<string, string>;
      if (kind === "uri") {
        source = { jwksUri: `${other.url}/openid/v1/jwks` };
      } else {
        const file = join(mkdtempSync(join(tmpdir(), "rte-trust-")), "jwks.json");
        writeFileSync(file, JSON.stringify(other.issuer.jwks()));
        source = { jwksFile: file };
      }
      const b = await instance(
        await redisConfig(served.url, {
          clusters: [{ name: "test", issuer: served.url, audiences: [AUDIENCE], ...source }],
        }),
      );
      const token = await teamA(served.issuer);
      expect((await tokenRequest(a, token)).statusCode).toBe(200);
      const res = await tokenRequest(b, token);
      expect(res.statusCode).toBe(401);
      expect(res.json()).toEqual(unknownKey(served.issuer.kid));
    },
  );
});

describe("two replicas on one Redis, a key removed from the issuer's JWKS", () => {
  it("the replica that reloads does not re-adopt the older shared copy; the other stops trusting the key at its next refresh", async () => {
    const server = await issuerServer();
    const kept = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey;
    const removed = server.issuer.keys[0]!;
    server.issuer.keys = [removed, kept];
    const config = await redisConfig(server.url);
    const a = await instance(config);
    const b = await instance(config);
    const byRemoved = await teamA(server.issuer);
    const byKept = await teamA(new LocalIssuer(server.url, [kept]), "kept");
    for (const app of [a, b]) expect((await tokenRequest(app, byRemoved)).statusCode).toBe(200);
    expect(server.issuer.served.jwks).toBe(1);
    // b fetches again (its copy gone from Redis): the shared copy is now newer than a's own set, but
    // still lists the key that is about to be removed.
    await client.del(`${prefix}${b.exchange.keySets[0]!.sharedName}`);
    await new Promise((r) => setTimeout(r, 5));
    await b.exchange.keySets[0]!.refresh();
    expect(server.issuer.served.jwks).toBe(2);

    server.issuer.keys = [kept];
    a.exchange.reload(config);
    const refused = await tokenRequest(a, byRemoved);
    expect(refused.statusCode).toBe(401);
    expect(refused.json()).toEqual(unknownKey(decodeProtectedHeader(byRemoved).kid!));
    expect((await tokenRequest(a, byKept)).statusCode).toBe(200);
    // a fetched after its reload (and once more for the kid it no longer found, within its budget).
    const fetched = server.issuer.served.jwks;
    expect(fetched).toBeGreaterThanOrEqual(3);

    // b has not refreshed yet: it still trusts the key until its set's TTL (jwks.minTtlSeconds ..
    // maxTtlSeconds, the issuer's max-age) runs out, or it is reloaded itself.
    expect((await tokenRequest(b, byRemoved)).statusCode).toBe(200);
    // Its next refresh adopts the newer copy a fetched after its reload (no fetch of its own).
    await b.exchange.keySets[0]!.refresh();
    expect(server.issuer.served.jwks).toBe(fetched);
    expect((await tokenRequest(b, byRemoved)).statusCode).toBe(401);
    expect((await tokenRequest(b, byKept)).statusCode).toBe(200);
  });
});
