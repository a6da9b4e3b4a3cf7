/**
 * The realm's front cache of opened identities and issued tokens (`src/cache/front.ts`): a hit is checked
 * exactly like a store hit. Removing the cluster key that verified a cached identity refuses the next
 * use, from the front cache too (no reload: one refresh of the issuer's JWKS); expiry and the credential
 * lifetime floor apply on every hit; with the memory store no sealed copy is written.
 */
import type { KeyObject } from "node:crypto";
import { generateKeyPairSync } from "node:crypto";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { buildApp } from "../../src/app.js";
import { type CacheStore, MemoryStore } from "../../src/cache/store.js";
import { LocalIssuer, startLocalIssuerServer } from "../../src/local/issuer.js";
import { AUDIENCE, SERVICE, testConfig } from "../helpers/fixtures.js";

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c().catch(() => {});
});

/** A store that records every write, so a test can tell what reached it. */
function recording(store: CacheStore, written: string[]): CacheStore {
  return new Proxy(store, {
    get(target, prop, receiver) {
      if (prop === "set") {
        return (key: string, value: string, ttlMs: number) => {
          written.push(key);
          return target.set(key, value, ttlMs);
        };
      }
      const v = Reflect.get(target, prop, receiver);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

async function setUp() {
  const server = await startLocalIssuerServer();
  cleanup.push(() => server.close());
  const removed = server.issuer.keys[0]!;
  const kept = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey;
  server.issuer.keys = [removed, kept];
  const clock = { nowMs: Date.now() };
  const app = await buildApp(
    await testConfig(server.url, {
      rateLimit: { enabled: false },
      clusters: [
        {
          name: "test",
          issuer: server.url,
          audiences: [AUDIENCE],
          jwks: { minTtlSeconds: 60, maxTtlSeconds: 60 },
        },
      ],
    }),
    { logger: pino({ level: "silent" }), now: () => clock.nowMs },
  );
  cleanup.push(() => app.close());
  const mint = (signer: KeyObject, serviceAccount: string, ttlSeconds = 7200) =>
    new LocalIssuer(server.url, [signer]).mint({
      namespace: "team-a",
      serviceAccount,
      audiences: [AUDIENCE],
      nowMs: clock.nowMs,
      ttlSeconds,
    });
  const realm = app.exchange.realm;
  const issue = (credential: string) =>
    realm.issue({
      credential,
      service: SERVICE,
      scopes: [{ type: "repository", name: "team-a/app", actions: ["pull"] }],
    });
  return { app, server, realm, removed, kept, clock, mint, issue };
}

describe("the realm's front cache", () => {
  it("refuses a cached identity once its cluster key is gone (one JWKS refresh, no reload)", async () => {
    const { app, server, realm, removed, kept, clock, mint, issue } = await setUp();
    const seen = await mint(removed, "seen");
    const other = await mint(kept, "other");
    expect((await issue(seen)).cached).toBe(false);
    const second = await issue(seen);
    expect(second.cached).toBe(true); // the identity and the token both came from the front cache
    expect(realm.stats.identityHits).toBe(1);
    expect((await issue(other)).identity.serviceAccount.name).toBe("other");

    server.issuer.keys = [kept];
    clock.nowMs += 61_000;
    await app.exchange.keySets[0]!.refresh();

    const hits = realm.stats.identityHits;
    await expect(issue(seen)).rejects.toMatchObject({ code: "unknown_key" });
    expect(realm.stats.identityHits).toBe(hits);
    // The other key's identity is still served from the front cache.
    expect((await issue(other)).identity.serviceAccount.name).toBe("other");
    expect(realm.stats.identityHits).toBe(hits + 1);
  });

  it("applies expiry and the credential lifetime floor on every hit", async () => {
    const { realm, removed, clock, mint, issue } = await setUp();
    const token = await mint(removed, "short", 600);
    await issue(token);
    await issue(token);
    expect(realm.stats.identityHits).toBe(1);
    clock.nowMs += 550_000; // 50 s left: under the 60 s floor
    await expect(issue(token)).rejects.toMatchObject({ code: "token_expired" });
    expect(realm.stats.identityHits).toBe(2);
    clock.nowMs += 60_000; // past exp: a miss, and verification refuses it
    await expect(issue(token)).rejects.toMatchObject({ code: "token_expired" });
    expect(realm.stats.identityHits).toBe(2);
  });

  it("hands out cached identities that cannot be changed by a caller", async () => {
    const { realm, removed, mint } = await setUp();
    const token = await mint(removed, "frozen");
    const registry = realm.registry(SERVICE);
    await realm.authenticate(token, registry);
    const cached = await realm.authenticate(token, registry);
    expect(Object.isFrozen(cached)).toBe(true);
    expect(() => {
      (cached.serviceAccount as { name: string }).name = "admin";
    }).toThrow(TypeError);
    expect((await realm.authenticate(token, registry)).serviceAccount.name).toBe("frozen");
  });
});

describe("with the memory store", () => {
  it("writes no identity or token entry to it (the front cache is the one copy)", async () => {
    const server = await startLocalIssuerServer();
    cleanup.push(() => server.close());
    const written: string[] = [];
    const config = await testConfig(server.url, { rateLimit: { enabled: false } });
    const app = await buildApp(config, {
      logger: pino({ level: "silent" }),
      store: recording(new MemoryStore({ maxEntries: 1000 }), written),
    });
    cleanup.push(() => app.close());
    const token = await server.issuer.mint({
      namespace: "team-a",
      serviceAccount: "app",
      audiences: [AUDIENCE],
    });
    const scopes = [{ type: "repository" as const, name: "team-a/app", actions: ["pull" as const] }];
    await app.exchange.realm.issue({ credential: token, service: SERVICE, scopes });
    expect((await app.exchange.realm.issue({ credential: token, service: SERVICE, scopes })).cached).toBe(
      true,
    );
    expect(written.filter((k) => k.startsWith("id:") || k.startsWith("tok:"))).toEqual([]);
  });
});
