/**
 * ClusterKeySet refresh rules on a frozen clock against a real issuer server: TTL from Cache-Control,
 * unknown-kid budget (burst, refill, negative memo), no cooldown that would delay a real rotation, and
 * stale keys serving within max staleness when the issuer goes down.
 */
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { ClusterKeySet } from "../../src/authn/jwks.js";
import { ServiceAccountVerifier } from "../../src/authn/verify.js";
import { parseConfig } from "../../src/config/load.js";
import { RequestError } from "../../src/errors.js";
import { startLocalIssuerServer } from "../../src/local/issuer.js";

const servers: Array<{ close: () => Promise<void> }> = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close().catch(() => {});
});

async function setup(jwks: Record<string, number> = {}) {
  const server = await startLocalIssuerServer();
  servers.push(server);
  const config = parseConfig({
    clusters: [{ name: "c", issuer: server.url, audiences: ["a"], jwks, fetch: { timeoutMs: 1000 } }],
    registries: [{ service: "s", issuer: "i", signingKey: { keyFile: "k", certFile: "c" } }],
    policy: { rules: [{ name: "r", allow: [{ repository: "*", actions: ["pull"] }] }] },
  });
  let now = 1_800_000_000_000;
  const clock = {
    now: () => now,
    advance: (ms: number) => {
      now += ms;
    },
  };
  const ks = new ClusterKeySet(config.clusters[0]!, { logger: pino({ level: "silent" }), now: clock.now });
  return { server, ks, clock };
}

describe("ClusterKeySet", () => {
  it("keeps keys for the Cache-Control max-age clamped to maxTtlSeconds, then refreshes", async () => {
    const { server, ks, clock } = await setup({ maxTtlSeconds: 120 });
    expect(await ks.candidates(server.issuer.kid, "RS256")).toHaveLength(1);
    expect(ks.fetchCount).toBe(1);
    clock.advance(119_000);
    await ks.candidates(server.issuer.kid, "RS256");
    expect(ks.fetchCount).toBe(1);
    clock.advance(2_000);
    await ks.candidates(server.issuer.kid, "RS256"); // serves the old set, refreshes in the background
    await ks.refresh();
    expect(ks.fetchCount).toBeGreaterThanOrEqual(2);
  });

  it("spends a burst of 3 re-fetches on unknown kids, then one per refill period, and remembers unknown kids", async () => {
    const { server, ks, clock } = await setup({ unknownKidBurst: 3, unknownKidRefillSeconds: 10 });
    await ks.candidates(server.issuer.kid, "RS256");
    expect(ks.fetchCount).toBe(1);
    for (let i = 0; i < 10; i++) expect(await ks.candidates(`garbage-${i}`, "RS256")).toEqual([]);
    expect(ks.fetchCount).toBe(4);
    expect(server.issuer.served.jwks).toBe(4);
    // budget spent: no fetch until the refill period has passed
    clock.advance(9_000);
    expect(await ks.candidates("garbage-0", "RS256")).toEqual([]);
    expect(ks.fetchCount).toBe(4);
    clock.advance(1_000);
    expect(await ks.candidates("garbage-new", "RS256")).toEqual([]);
    expect(ks.fetchCount).toBe(5);
    // a kid still unknown after a fresh fetch is remembered: asking again costs nothing
    clock.advance(10_000);
    expect(await ks.candidates("garbage-again", "RS256")).toEqual([]);
    expect(ks.fetchCount).toBe(6);
    expect(await ks.candidates("garbage-again", "RS256")).toEqual([]);
    expect(ks.fetchCount).toBe(6);
  });

  it("picks up a real rotation one second after a fetch (no fixed cooldown)", async () => {
    const { server, ks, clock } = await setup();
    await ks.candidates(server.issuer.kid, "RS256");
    clock.advance(1_000);
    server.issuer.rotate();
    expect(await ks.candidates(server.issuer.kid, "RS256")).toHaveLength(1);
    expect(ks.fetchCount).toBe(2);
  });

  it("serves cached keys while the issuer is down, up to maxStaleSeconds, then answers keys_unavailable", async () => {
    const { server, ks, clock } = await setup({ minTtlSeconds: 60, maxTtlSeconds: 60, maxStaleSeconds: 600 });
    const kid = server.issuer.kid;
    await ks.candidates(kid, "RS256");
    await server.close();
    clock.advance(61_000);
    expect(await ks.candidates(kid, "RS256")).toHaveLength(1);
    await ks.refresh().catch(() => {});
    expect(ks.status()).toMatchObject({ ready: true, stale: true, keys: 1 });
    expect(ks.status().lastError).toMatch(/ECONNREFUSED|request failed/);
    clock.advance(600_000);
    expect(ks.status().ready).toBe(false);
    const err = await ks.candidates(kid, "RS256").then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(RequestError);
    expect((err as RequestError).code).toBe("keys_unavailable");
    expect((err as RequestError).statusCode).toBe(503);
  });

  it("notices a rotated key for tokens without a kid: one budgeted re-fetch, then the new key verifies", async () => {
    const { server, ks, clock } = await setup();
    const verifier = new ServiceAccountVerifier([ks], { now: clock.now });
    const mint = () =>
      server.issuer.mint({
        namespace: "ns",
        serviceAccount: "sa",
        audiences: ["a"],
        nowMs: clock.now(),
        header: { kid: "" },
      });
    expect((await verifier.verify(await mint())).namespace).toBe("ns");
    expect(ks.fetchCount).toBe(1);
    server.issuer.rotate();
    server.issuer.keys = server.issuer.keys.slice(0, 1); // the old key is gone from the JWKS
    expect((await verifier.verify(await mint())).namespace).toBe("ns");
    expect(ks.fetchCount).toBe(2);
    // a forged kid-less token costs at most the budget, then no more fetches
    const forged = `${(await mint()).slice(0, -8)}AAAAAAAA`;
    for (let i = 0; i < 5; i++)
      await expect(verifier.verify(forged)).rejects.toMatchObject({ code: "invalid_signature" });
    expect(ks.fetchCount).toBe(4);
  });
});
