/**
 * Key rotation, both sides (in process; the walk with a real registry is test/e2e/rotation.test.ts).
 *
 * Cluster side: a new key with a new `kid` is accepted after one re-fetch (test/authn/keyset-refresh.test.ts,
 * test/cache/shared.test.ts); here, a REMOVED key: once the key set has refreshed, its tokens are refused,
 * with or without a `kid`, including tokens this service already verified and cached. Likewise a cluster
 * removed by a config reload.
 *
 * Our side: `registries[].publishedKeys` publishes the next and previous signing keys next to the active
 * one in `/.well-known/jwks.json`; only the active one signs; exchange credentials and refresh tokens
 * signed by the previous key stay valid until it is removed; bad published keys are refused at load.
 */
import { generateKeyPairSync, type KeyObject, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FastifyInstance, LightMyRequestResponse } from "fastify";
import { decodeJwt, decodeProtectedHeader, type JWTPayload, SignJWT } from "jose";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { buildApp } from "../../src/app.js";
import { parseConfig, resolveFiles } from "../../src/config/load.js";
import type { Config } from "../../src/config/schema.js";
import { ConfigError } from "../../src/errors.js";
import { libtrustKeyId } from "../../src/jose/kid.js";
import { generateSigningKeyFiles, loadSigningKey } from "../../src/jose/signing-key.js";
import { startLocalIssuerServer } from "../../src/local/issuer.js";
import { NOW } from "../helpers/clock.js";
import { CP_AUDIENCE, cpRequest, REGISTRY_HOST } from "../helpers/credential-provider.js";
import { AUDIENCE, basic, SERVICE, STANDARD_RULES, testConfig } from "../helpers/fixtures.js";
import { expectMatchesSpec } from "../helpers/openapi.js";

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

function tokenRequest(
  app: FastifyInstance,
  credential: string,
  service = SERVICE,
): Promise<LightMyRequestResponse> {
  return app.inject({
    method: "GET",
    url: `/token?service=${service}&scope=repository:team-a/app:pull`,
    headers: { authorization: basic(credential) },
  });
}

function reason(res: LightMyRequestResponse): string {
  return (res.json() as { errors: Array<{ detail: { reason: string } }> }).errors[0]!.detail.reason;
}

describe("cluster side: a key removed from the cluster's JWKS", () => {
  it("refuses its tokens once the key set has refreshed, with or without a kid, cached or not", async () => {
    const issuerServer = await startLocalIssuerServer();
    cleanup.push(() => issuerServer.close());
    const issuer = issuerServer.issuer;
    const oldKey = issuer.keys[0]!;
    issuer.rotate(); // keys: [new, old], both published
    let now = NOW;
    const config = await testConfig(issuerServer.url, {
      clusters: [
        {
          name: "test",
          issuer: issuerServer.url,
          audiences: [AUDIENCE],
          jwks: { minTtlSeconds: 60, maxTtlSeconds: 60 },
        },
      ],
    });
    const app = await buildApp(config, { logger: pino({ level: "silent" }), now: () => now });
    cleanup.push(() => app.close());
    const keySet = app.exchange.keySets[0]!;
    let n = 0;
    const claims = async (): Promise<JWTPayload> =>
      decodeJwt(
        await issuer.mint({
          namespace: "team-a",
          serviceAccount: `sa-${++n}`,
          audiences: [AUDIENCE],
          nowMs: now,
        }),
      );
    const byOld = async (kid: string | undefined) =>
      new SignJWT(await claims())
        .setProtectedHeader(kid === undefined ? { alg: "RS256" } : { alg: "RS256", kid })
        .sign(oldKey);
    const oldKid = issuer.jwks().keys[1]!.kid as string;

    // Both keys verify; these two tokens are now in the identity cache.
    const seenWithKid = await byOld(oldKid);
    const seenWithoutKid = await byOld(undefined);
    expect((await tokenRequest(app, seenWithKid)).statusCode).toBe(200);
    expect((await tokenRequest(app, seenWithoutKid)).statusCode).toBe(200);
    expect(keySet.fetchCount).toBe(1);

    // The cluster drops the old key. Until the cached key set expires, it still verifies (max-age).
    issuer.keys = [issuer.keys[0]!];
    expect((await tokenRequest(app, await byOld(oldKid))).statusCode).toBe(200);

    // Past the TTL the set refreshes; from then on the old key admits nobody.
    now += 61_000;
    await keySet.refresh();
    expect(keySet.status()).toMatchObject({ ready: true, keys: 1, stale: false });
    const cases: Array<[string, string, string]> = [
      ["a new token with the removed kid", await byOld(oldKid), "unknown_key"],
      ["a new kid-less token of the removed key", await byOld(undefined), "invalid_signature"],
      ["an already verified (cached) token with the removed kid", seenWithKid, "unknown_key"],
      ["an already verified (cached) kid-less token", seenWithoutKid, "invalid_signature"],
    ];
    for (const [name, token, why] of cases) {
      const res = await tokenRequest(app, token);
      expect(res.statusCode, name).toBe(401);
      expect(reason(res), name).toBe(why);
    }
    // The current key still works, and so does a token it signed that was verified before.
    const current = await issuer.mint({
      namespace: "team-a",
      serviceAccount: "current",
      audiences: [AUDIENCE],
      nowMs: now,
    });
    expect((await tokenRequest(app, current)).statusCode).toBe(200);
    expect((await tokenRequest(app, current)).statusCode).toBe(200);
  });

  it("refuses, at once, a cached identity of a cluster a config reload removed", async () => {
    const a = await startLocalIssuerServer();
    const b = await startLocalIssuerServer();
    cleanup.push(
      () => a.close(),
      () => b.close(),
    );
    const both = await testConfig(a.url, {
      clusters: [
        { name: "a", issuer: a.url, audiences: [AUDIENCE] },
        { name: "b", issuer: b.url, audiences: [AUDIENCE] },
      ],
    });
    const app = await buildApp(both, { logger: pino({ level: "silent" }) });
    cleanup.push(() => app.close());
    const fromB = await b.issuer.mint({ namespace: "team-a", serviceAccount: "x", audiences: [AUDIENCE] });
    expect((await tokenRequest(app, fromB)).statusCode).toBe(200);
    app.exchange.reload(
      await testConfig(a.url, { clusters: [{ name: "a", issuer: a.url, audiences: [AUDIENCE] }] }),
    );
    const res = await tokenRequest(app, fromB);
    expect(res.statusCode).toBe(401);
    expect(reason(res)).toBe("unknown_issuer");
  });
});

/** Two generated signing keys (ES256 + certificate each). */
async function twoKeys() {
  const dir = mkdtempSync(join(tmpdir(), "rte-rotation-"));
  return {
    a: await generateSigningKeyFiles(join(dir, "a"), "key-a"),
    b: await generateSigningKeyFiles(join(dir, "b"), "key-b"),
  };
}

type KeyFiles = { keyFile: string; certFile: string };

describe("our side: several signing keys per registry (registries[].publishedKeys)", () => {
  async function configWith(
    issuerUrl: string,
    active: KeyFiles,
    published?: Array<Partial<KeyFiles>>,
  ): Promise<Config> {
    return testConfig(issuerUrl, {
      registries: [
        {
          service: SERVICE,
          issuer: "registry-token-exchange",
          signingKey: active,
          hosts: [REGISTRY_HOST],
          ...(published ? { publishedKeys: published } : {}),
        },
      ],
      credentialProvider: { audiences: [CP_AUDIENCE] },
      policy: { rules: STANDARD_RULES },
    });
  }

  it("publishes next, active and previous keys; only the active one signs; what the previous signed stays valid", async () => {
    const issuerServer = await startLocalIssuerServer();
    cleanup.push(() => issuerServer.close());
    const { a, b } = await twoKeys();
    const kidA = libtrustKeyId(loadSigningKey(a.keyFile, a.certFile, "a").publicKey);
    const kidB = libtrustKeyId(loadSigningKey(b.keyFile, b.certFile, "b").publicKey);
    const app = await buildApp(await configWith(issuerServer.url, a), { logger: pino({ level: "silent" }) });
    cleanup.push(() => app.close());
    const sa = () =>
      issuerServer.issuer.mint({ namespace: "team-a", serviceAccount: "builder", audiences: [AUDIENCE] });
    const jwksKids = async () => {
      const res = await app.inject({ method: "GET", url: "/.well-known/jwks.json" });
      const body = expectMatchesSpec("GET", "/.well-known/jwks.json", res) as {
        keys: Array<{ kid: string; x5c: string[] }>;
      };
      expect(body.keys.every((k) => k.x5c.length === 1)).toBe(true);
      return body.keys.map((k) => k.kid);
    };
    const signedBy = async () =>
      decodeProtectedHeader((await tokenRequest(app, await sa())).json().token as string).kid;

    // 1. Only A.
    expect(await jwksKids()).toEqual([kidA]);
    expect(await signedBy()).toBe(kidA);
    // Credentials this service derives under A: an exchange credential and a refresh token.
    const cp = await app.inject({
      method: "POST",
      url: "/v1/credential-provider",
      headers: { "content-type": "application/json" },
      payload: JSON.stringify(
        cpRequest(
          await issuerServer.issuer.mint({
            namespace: "team-a",
            serviceAccount: "builder",
            audiences: [CP_AUDIENCE],
          }),
        ),
      ),
    });
    expect(cp.statusCode, cp.body).toBe(200);
    const exchangeA = Object.values(cp.json().auth as Record<string, { password: string }>)[0]!.password;
    const offline = await app.inject({
      method: "GET",
      url: `/token?service=${SERVICE}&offline_token=true`,
      headers: { authorization: basic(await sa()) },
    });
    const refreshA = offline.json().refresh_token as string;
    expect(decodeProtectedHeader(refreshA).kid).toBe(kidA);

    // 2. Publish B as the next key: both published, A still signs.
    app.exchange.reload(await configWith(issuerServer.url, a, [b]));
    expect(await jwksKids()).toEqual([kidA, kidB]);
    expect(await signedBy()).toBe(kidA);

    // 3. Switch: B active, A published as the previous key (its certificate only).
    app.exchange.reload(await configWith(issuerServer.url, b, [{ certFile: a.certFile }]));
    expect(await jwksKids()).toEqual([kidB, kidA]);
    expect(await signedBy()).toBe(kidB);
    // What A signed is still accepted: kubelet's cached exchange credential, docker's refresh token.
    expect((await tokenRequest(app, exchangeA)).statusCode).toBe(200);
    const refreshed = await app.inject({
      method: "POST",
      url: "/token",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      payload: new URLSearchParams({
        grant_type: "refresh_token",
        service: SERVICE,
        refresh_token: refreshA,
      }).toString(),
    });
    expect(refreshed.statusCode, refreshed.body).toBe(200);
    expect(decodeProtectedHeader(refreshed.json().access_token as string).kid).toBe(kidB);
    expect(refreshed.json().refresh_token).toBe(refreshA);

    // 4. A removed: only B is published, and what A signed is refused.
    app.exchange.reload(await configWith(issuerServer.url, b));
    expect(await jwksKids()).toEqual([kidB]);
    const refused = await tokenRequest(app, exchangeA);
    expect(refused.statusCode).toBe(401);
    expect(refused.json().errors[0]).toEqual({
      code: "UNAUTHORIZED",
      message: "exchange credential signature does not verify with this registry's signing key",
      detail: { reason: "invalid_signature" },
    });
    // A forged credential naming B's kid but signed by another key gets the same answer.
    const stranger = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey as KeyObject;
    const forged = await new SignJWT(decodeJwt(exchangeA))
      .setProtectedHeader({ alg: "ES256", typ: "rte-exchange+jwt", kid: kidB })
      .sign(stranger);
    expect(reason(await tokenRequest(app, forged))).toBe("invalid_signature");
  });

  it("keygen's certificates end with a newline, so `cat a.pem b.pem` is a bundle of both", async () => {
    const { a, b } = await twoKeys();
    const bundle = readFileSync(a.certFile, "utf8") + readFileSync(b.certFile, "utf8");
    expect(bundle).not.toContain("-----END CERTIFICATE----------BEGIN");
    const blocks = bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g) ?? [];
    expect(blocks.map((pem) => new X509Certificate(pem).subject)).toEqual(["CN=key-a", "CN=key-b"]);
  });

  it("refuses a published key whose certificate and key do not match, or whose file is missing", async () => {
    const { a, b } = await twoKeys();
    const mismatch = await configWith("http://127.0.0.1:1", a, [
      { certFile: b.certFile, keyFile: a.keyFile },
    ]);
    await expect(buildApp(mismatch, { logger: pino({ level: "silent" }) })).rejects.toThrow(ConfigError);
    await expect(buildApp(mismatch, { logger: pino({ level: "silent" }) })).rejects.toMatchObject({
      problems: [
        "registries[0].publishedKeys[0].certFile: the certificate's public key does not match keyFile",
      ],
    });
    const notACert = await configWith("http://127.0.0.1:1", a, [{ certFile: a.keyFile }]);
    await expect(buildApp(notACert, { logger: pino({ level: "silent" }) })).rejects.toMatchObject({
      problems: [
        expect.stringMatching(
          /^registries\[0\]\.publishedKeys\[0\]\.certFile: not a readable PEM certificate/,
        ),
      ],
    });
    const raw = {
      clusters: [{ name: "c", issuer: "https://c.example", audiences: ["a"] }],
      registries: [
        { service: "s", issuer: "i", signingKey: a, publishedKeys: [{ certFile: "missing-cert.pem" }] },
      ],
      policy: { rules: [{ name: "r", allow: [{ repository: "*", actions: ["pull"] }] }] },
    };
    const parsed = parseConfig(raw);
    expect(() => resolveFiles(parsed, "/nonexistent")).toThrow(ConfigError);
    try {
      resolveFiles(parseConfig(raw), "/nonexistent");
    } catch (err) {
      expect((err as ConfigError).problems).toEqual([
        "registries[0].publishedKeys[0].certFile: file not found or not readable (/nonexistent/missing-cert.pem)",
      ]);
    }
    expect(() =>
      parseConfig({ ...raw, registries: [{ ...raw.registries[0], publishedKeys: [{ keyFile: "k" }] }] }),
    ).toThrow(/registries\[0\]\.publishedKeys\[0\]\.certFile/);
  });
});
