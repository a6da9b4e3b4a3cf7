/**
 * A rotation that lands while a JWKS fetch is already in flight (real clock, a JWKS server that answers
 * with the keys it had when the request arrived, 300 ms later). The fetch in flight cannot show the new
 * key, so a token signed with it must not be refused on its strength, nor the new kid remembered as
 * unknown, on one replica or (through Redis) on the others. Found by review after the two-worker storm.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Redis } from "ioredis";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ClusterKeySet } from "../../src/authn/jwks.js";
import { ServiceAccountVerifier } from "../../src/authn/verify.js";
import { RedisStore } from "../../src/cache/redis.js";
import { CacheSealer } from "../../src/cache/seal.js";
import { LocalIssuer } from "../../src/local/issuer.js";
import { AUDIENCE, testConfig } from "../helpers/fixtures.js";
import { resolveTestRedis, type TestRedis } from "../helpers/redis.js";

const DELAY_MS = 300;
const logger = pino({ level: "silent" });

/** An issuer whose JWKS endpoint snapshots the keys on arrival and answers `DELAY_MS` later. */
async function slowIssuer() {
  let served = 0;
  let issuer!: LocalIssuer;
  const server: Server = createServer((_req, res) => {
    served++;
    const doc = JSON.stringify(issuer.jwks());
    setTimeout(() => {
      res.writeHead(200, { "content-type": "application/json", "cache-control": "max-age=3600" }).end(doc);
    }, DELAY_MS);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  issuer = new LocalIssuer(url);
  const config = await testConfig(url, {
    clusters: [{ name: "test", issuer: url, jwksUri: `${url}/jwks`, audiences: [AUDIENCE] }],
  });
  return {
    issuer,
    cluster: config.clusters[0]!,
    served: () => served,
    mint: () => issuer.mint({ namespace: "team-a", serviceAccount: "app", audiences: [AUDIENCE] }),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** A token with the payload and signature of `token` and a `kid` nobody has. */
function withGarbageKid(token: string): string {
  const [, payload, signature] = token.split(".");
  const header = Buffer.from(JSON.stringify({ alg: "RS256", kid: "garbage-kid" })).toString("base64url");
  return `${header}.${payload}.${signature}`;
}

const outcome = (p: Promise<unknown>) =>
  p.then(
    () => "ok",
    (e: { code?: string }) => e.code ?? "error",
  );

describe("a rotation while a JWKS fetch is in flight", () => {
  it("the new kid is verified by a fetch of its own, not refused on the answer of the earlier one", async () => {
    const s = await slowIssuer();
    const keySet = new ClusterKeySet(s.cluster, { logger });
    const verifier = new ServiceAccountVerifier([keySet]);
    try {
      expect(await outcome(verifier.verify(await s.mint()))).toBe("ok");
      // An unknown kid sends a fetch; the cluster rotates while it is in flight.
      const garbage = outcome(verifier.verify(withGarbageKid(await s.mint())));
      await new Promise((r) => setTimeout(r, 50));
      s.issuer.rotate();
      const rotated = await s.mint();
      expect(await outcome(verifier.verify(rotated))).toBe("ok");
      expect(await garbage).toBe("unknown_key");
      // Still accepted later, with no fetch more: the new kid was never remembered as unknown.
      const fetches = s.served();
      expect(fetches).toBe(3);
      expect(await outcome(verifier.verify(rotated))).toBe("ok");
      expect(s.served()).toBe(fetches);
    } finally {
      await keySet.close();
      await s.close();
    }
  });

  describe("two replicas on one Redis", () => {
    let redis: TestRedis;
    beforeAll(async () => {
      redis = await resolveTestRedis();
    });
    afterAll(async () => {
      await redis?.stop();
    });

    it("neither remembers the new kid as unknown for the other", async () => {
      const s = await slowIssuer();
      const prefix = `race-${process.pid}-${Date.now()}:`;
      const clients = [new Redis(redis.url), new Redis(redis.url)];
      // Replicas share the cache sealer's secret (in the service: derived from the signing keys).
      const sealer = CacheSealer.ephemeral();
      const [a, b] = clients.map(
        (client) =>
          new ClusterKeySet(s.cluster, { logger, shared: new RedisStore(client, prefix, logger), sealer }),
      ) as [ClusterKeySet, ClusterKeySet];
      const va = new ServiceAccountVerifier([a]);
      const vb = new ServiceAccountVerifier([b]);
      try {
        const good = await s.mint();
        expect(await outcome(va.verify(good))).toBe("ok");
        expect(await outcome(vb.verify(good))).toBe("ok");
        expect(s.served()).toBe(1);
        const garbage = outcome(va.verify(withGarbageKid(good)));
        await new Promise((r) => setTimeout(r, 50));
        s.issuer.rotate();
        const rotated = await s.mint();
        expect(await outcome(va.verify(rotated))).toBe("ok");
        expect(await garbage).toBe("unknown_key");
        expect(await outcome(vb.verify(rotated))).toBe("ok");
        // No more than one fetch per replica for the rotation (b cannot know a's set saw the new key).
        expect(s.served()).toBeLessThanOrEqual(4);
      } finally {
        for (const client of clients) {
          const keys = await client.keys(`${prefix}*`);
          if (keys.length > 0) await client.del(...keys);
          client.disconnect();
        }
        await a.close();
        await b.close();
        await s.close();
      }
    });
  });
});
