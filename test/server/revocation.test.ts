/**
 * Removing a cluster key revokes everything it vouched for, within one reload (SIGHUP on a running
 * `serve` process), with and without Redis: new tokens it signed, tokens it signed that were verified and
 * cached before, and exchange credentials and refresh tokens derived from such tokens are refused; tokens
 * signed by the remaining key keep working. Likewise, without any reload, one refresh of a remote JWKS
 * that no longer lists the key. A reload while the issuer cannot be reached refuses rather than trusting
 * the keys loaded before it. (The runbook is docs/runbook-leaked-cluster-key.md.)
 */

import { generateKeyPairSync, type KeyObject } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { InjectOptions } from "fastify";
import { decodeProtectedHeader } from "jose";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { buildApp } from "../../src/app.js";
import { LocalIssuer, startLocalIssuerServer } from "../../src/local/issuer.js";
import {
  CP_AUDIENCE,
  cpRequest,
  credentialProviderOverrides,
  dockerError,
  oauthError,
  REGISTRY_HOST,
} from "../helpers/credential-provider.js";
import { AUDIENCE, basic, refreshGrantBody, SERVICE, testConfig } from "../helpers/fixtures.js";
import { freePort, SpawnedRedis } from "../helpers/redis.js";
import { spawnServe } from "../helpers/serve-process.js";
import { writeConfigFile } from "./helpers.js";

/** A non-URL issuer: old clusters whose keys come only from a `jwksFile`. */
const ISSUER = "kubernetes/serviceaccount";

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c().catch(() => {});
});

function rsaKey(): KeyObject {
  return generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey;
}

/** A running `serve --config` child with its stdout collected. */
function serve(file: string) {
  return spawnServe(["serve", "--config", file], { stderr: false, cleanup });
}

describe.each([
  ["without Redis", false],
  ["with Redis", true],
])("a key removed from a jwksFile, then SIGHUP (%s)", (_label, withRedis) => {
  it("refuses new and cached tokens it signed and every credential derived from them; the other key keeps working", async () => {
    const removed = rsaKey();
    const kept = rsaKey();
    const byRemoved = new LocalIssuer(ISSUER, [removed, kept]);
    const byKept = new LocalIssuer(ISSUER, [kept, removed]);
    const dir = mkdtempSync(join(tmpdir(), "rte-revocation-"));
    const jwksFile = join(dir, "jwks.json");
    writeFileSync(jwksFile, JSON.stringify(byRemoved.jwks()));

    const extra: Record<string, unknown> = {
      ...(await credentialProviderOverrides()),
      clusters: [{ name: "test", issuer: ISSUER, audiences: [AUDIENCE], jwksFile }],
    };
    if (withRedis) {
      const redis = await SpawnedRedis.start();
      cleanup.push(() => redis.stop());
      extra.cache = { redisUrl: redis.url, keyPrefix: "revocation:" };
    }
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const file = await writeConfigFile("unused", { host: "127.0.0.1", port }, extra);
    const { child, waitFor } = serve(file);
    await waitFor("Server listening");

    const tokenWith = (credential: string) =>
      fetch(`${base}/token?service=${SERVICE}&scope=repository:team-a/app:pull`, {
        headers: { authorization: basic(credential) },
      });
    const refreshWith = (refreshToken: string) =>
      fetch(`${base}/token`, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: refreshGrantBody(refreshToken, "repository:team-a/app:pull"),
      });
    const offline = async (credential: string) => {
      const res = await fetch(`${base}/token?service=${SERVICE}&offline_token=true&client_id=test`, {
        headers: { authorization: basic(credential) },
      });
      expect(res.status).toBe(200);
      return ((await res.json()) as { refresh_token: string }).refresh_token;
    };
    const credentialProvider = (token: string) =>
      fetch(`${base}/v1/credential-provider`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(cpRequest(token)),
      });

    const sa = (issuer: LocalIssuer, serviceAccount: string, audiences = [AUDIENCE]) =>
      issuer.mint({ namespace: "team-a", serviceAccount, audiences });
    const seen = await sa(byRemoved, "seen");
    const unseen = await sa(byRemoved, "unseen");
    const other = await sa(byKept, "other");
    const podToken = await sa(byRemoved, "puller", [CP_AUDIENCE]);

    // Before: everything signed by (or derived from a token signed by) either key works, and is cached.
    expect((await tokenWith(seen)).status).toBe(200);
    const refresh = await offline(seen);
    const cp = await credentialProvider(podToken);
    expect(cp.status).toBe(200);
    const exchangeCredential = ((await cp.json()) as { auth: Record<string, { password: string }> }).auth[
      REGISTRY_HOST
    ]!.password;
    const refreshFromExchange = await offline(exchangeCredential);
    expect((await tokenWith(exchangeCredential)).status).toBe(200);
    expect((await refreshWith(refresh)).status).toBe(200);
    expect((await refreshWith(refreshFromExchange)).status).toBe(200);
    expect((await tokenWith(other)).status).toBe(200);

    writeFileSync(jwksFile, JSON.stringify(new LocalIssuer(ISSUER, [kept]).jwks()));
    child.kill("SIGHUP");
    await waitFor('"msg":"config reloaded"');

    const removedKid = decodeProtectedHeader(seen).kid!;
    const unknownKey = dockerError(
      "UNAUTHORIZED",
      "unknown_key",
      `token signed by unknown key with ID "${removedKid}"`,
    );
    for (const token of [unseen, seen]) {
      const res = await tokenWith(token);
      expect(res.status).toBe(401);
      expect(await res.json()).toEqual(unknownKey);
    }
    const derived = await tokenWith(exchangeCredential);
    expect(derived.status).toBe(401);
    expect(await derived.json()).toEqual(
      dockerError(
        "UNAUTHORIZED",
        "unknown_key",
        'exchange credential was derived from a token signed by a key that cluster "test" no longer trusts',
      ),
    );
    for (const token of [refresh, refreshFromExchange]) {
      const res = await refreshWith(token);
      expect(res.status).toBe(401);
      expect(await res.json()).toEqual(
        oauthError(
          "invalid_grant",
          'refresh token was derived from a token signed by a key that cluster "test" no longer trusts',
        ),
      );
    }
    expect((await credentialProvider(podToken)).status).toBe(401);
    const still = await tokenWith(other);
    expect(still.status).toBe(200);
    expect(child.exitCode).toBeNull();
  });
});

describe.each([
  ["without Redis", false],
  ["with Redis", true],
])("a key the issuer's JWKS stops listing, after one refresh, no reload (%s)", (_label, withRedis) => {
  it("refuses new and cached tokens it signed and every credential derived from them; the other key keeps working", async () => {
    const server = await startLocalIssuerServer();
    cleanup.push(() => server.close());
    const removed = server.issuer.keys[0]!;
    const kept = rsaKey();
    server.issuer.keys = [removed, kept];
    let nowMs = Date.now();
    const extra: Record<string, unknown> = {
      ...(await credentialProviderOverrides()),
      clusters: [
        {
          name: "test",
          issuer: server.url,
          audiences: [AUDIENCE],
          jwks: { minTtlSeconds: 60, maxTtlSeconds: 60 },
        },
      ],
    };
    if (withRedis) {
      const redis = await SpawnedRedis.start();
      cleanup.push(() => redis.stop());
      extra.cache = { redisUrl: redis.url, keyPrefix: "revocation:" };
    }
    const app = await buildApp(await testConfig(server.url, extra), {
      logger: pino({ level: "silent" }),
      now: () => nowMs,
    });
    cleanup.push(() => app.close());
    while (withRedis && !app.exchange.store.healthy()) await new Promise((r) => setTimeout(r, 20));

    const inject = (req: InjectOptions) => app.inject(req);
    const tokenWith = (credential: string) =>
      inject({
        method: "GET",
        url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull`,
        headers: { authorization: basic(credential) },
      });
    const refreshWith = (refreshToken: string) =>
      inject({
        method: "POST",
        url: "/token",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        payload: refreshGrantBody(refreshToken),
      });
    const offline = async (credential: string) => {
      const res = await inject({
        method: "GET",
        url: `/token?service=${SERVICE}&offline_token=true&client_id=test`,
        headers: { authorization: basic(credential) },
      });
      expect(res.statusCode).toBe(200);
      return res.json().refresh_token as string;
    };
    const mint = (signer: KeyObject, serviceAccount: string, audiences = [AUDIENCE]) =>
      new LocalIssuer(server.url, [signer]).mint({
        namespace: "team-a",
        serviceAccount,
        audiences,
        nowMs,
        ttlSeconds: 7200,
      });
    const seen = await mint(removed, "seen");
    const unseen = await mint(removed, "unseen");
    const other = await mint(kept, "other");
    const podToken = await mint(removed, "puller", [CP_AUDIENCE]);

    expect((await tokenWith(seen)).statusCode).toBe(200);
    const refresh = await offline(seen);
    const cp = await inject({
      method: "POST",
      url: "/v1/credential-provider",
      headers: { "content-type": "application/json" },
      payload: JSON.stringify(cpRequest(podToken)),
    });
    expect(cp.statusCode).toBe(200);
    const exchangeCredential: string = cp.json().auth[REGISTRY_HOST].password;
    expect((await tokenWith(exchangeCredential)).statusCode).toBe(200);
    expect((await refreshWith(refresh)).statusCode).toBe(200);
    expect((await tokenWith(other)).statusCode).toBe(200);

    // The issuer drops the key; one refresh after the set's TTL (60 s) loads the new JWKS.
    server.issuer.keys = [kept];
    nowMs += 61_000;
    await app.exchange.keySets[0]!.refresh();

    for (const token of [unseen, seen]) {
      const res = await tokenWith(token);
      expect(res.statusCode).toBe(401);
      expect(res.json().errors[0].detail.reason).toBe("unknown_key");
    }
    const derived = await tokenWith(exchangeCredential);
    expect(derived.statusCode).toBe(401);
    expect(derived.json()).toEqual(
      dockerError(
        "UNAUTHORIZED",
        "unknown_key",
        'exchange credential was derived from a token signed by a key that cluster "test" no longer trusts',
      ),
    );
    const refreshed = await refreshWith(refresh);
    expect(refreshed.statusCode).toBe(401);
    expect(refreshed.json()).toEqual(
      oauthError(
        "invalid_grant",
        'refresh token was derived from a token signed by a key that cluster "test" no longer trusts',
      ),
    );
    expect((await tokenWith(other)).statusCode).toBe(200);
  });
});

describe("a reload while the issuer cannot be reached", () => {
  it("refuses (503 keys_unavailable) rather than trusting the keys loaded before it, and serves again once a fetch succeeds", async () => {
    const first = await startLocalIssuerServer();
    const port = Number(new URL(first.url).port);
    const keys = first.issuer.keys;
    const config = await testConfig(first.url);
    let nowMs = Date.now();
    const app = await buildApp(config, { logger: pino({ level: "silent" }), now: () => nowMs });
    cleanup.push(() => app.close());
    const token = await first.issuer.mint({
      namespace: "team-a",
      serviceAccount: "app",
      audiences: [AUDIENCE],
      nowMs,
    });
    expect((await tokenWith(app, token)).statusCode).toBe(200);

    await first.close();
    app.exchange.reload(config);
    const refused = await tokenWith(app, token);
    expect(refused.statusCode).toBe(503);
    expect(refused.json()).toEqual({
      errors: [
        {
          code: "UNAVAILABLE",
          message: "the cluster's signing keys are not available right now",
          detail: { reason: "keys_unavailable" },
        },
      ],
    });

    const again = await startLocalIssuerServer(port);
    cleanup.push(() => again.close());
    again.issuer.keys = keys;
    // Past the retry back-off after the failed fetch (2 s), the next request fetches.
    nowMs += 2_001;
    expect((await tokenWith(app, token)).statusCode).toBe(200);
  });
});

function tokenWith(app: Awaited<ReturnType<typeof buildApp>>, credential: string) {
  return app.inject({
    method: "GET",
    url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull`,
    headers: { authorization: basic(credential) },
  });
}
