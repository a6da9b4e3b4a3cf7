/**
 * Lifetimes that match what Kubernetes issues (src/authn/verify.ts `effectiveExpiry`, src/realm/realm.ts,
 * src/realm/credential-provider.ts):
 * - kube-apiserver's extended tokens (`--service-account-extend-token-expiration`, kubernetes
 *   `pkg/serviceaccount/claims.go`) carry `exp` a year out and `kubernetes.io.warnafter` = the end of the
 *   lifetime asked for: `warnafter` is the expiry here, of the token and of everything derived from it
 *   (registry tokens, refresh tokens, exchange credentials, the identity cache), and a token past it is
 *   refused as expired;
 * - refresh tokens never live longer than `registries[].refreshTokenMaxTtlSeconds`, whatever the
 *   credential they come from says, including refresh tokens minted under a longer setting.
 *
 * The tokens are the real kube-apiserver 1.36.2 captures of `test/fixtures/kubernetes-1.36/` (a
 * TokenRequest for audience `registry.test` bound to a pod, and kubelet's credential-provider token;
 * claims byte for byte), re-signed with a test key (the capture's key is not ours) and, where said, with
 * `exp`/`warnafter` of an extended token. The app's clock is frozen.
 */
import { createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import { decodeJwt, SignJWT } from "jose";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { buildApp } from "../../src/app.js";
import { kubernetesKeyId } from "../../src/jose/kid.js";
import { basic, refreshGrantBody, SERVICE, testConfig } from "../helpers/fixtures.js";
import { resolveTestRedis } from "../helpers/redis.js";

const FIXTURES = new URL("../fixtures/kubernetes-1.36/", import.meta.url);
/** Claims of a real pod-bound token (audience `registry.test`, 3600 s) and of a credential-provider token. */
const POD_BOUND = decodeJwt(readFileSync(new URL("sa-token-pod-bound.jwt", FIXTURES), "utf8").trim());
const PROVIDER = decodeJwt(
  readFileSync(new URL("sa-token-credential-provider-audience.jwt", FIXTURES), "utf8").trim(),
);
const ISSUER = POD_BOUND.iss!;
const IAT = POD_BOUND.iat!;
/** What kubelet asks for by default (claims.go: WarnOnlyBoundTokenExpirationSeconds). */
const REQUESTED = 3607;
const WARNAFTER = IAT + REQUESTED;
/** claims.go: ExpirationExtensionSeconds, one year. */
const EXTENDED_EXP = IAT + 24 * 365 * 3600;
const SKEW = 30;

const key: KeyObject = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey;
const dir = mkdtempSync(join(tmpdir(), "rte-lifetimes-"));
const jwksFile = join(dir, "jwks.json");
writeFileSync(
  jwksFile,
  JSON.stringify({
    keys: [
      {
        use: "sig",
        kid: kubernetesKeyId(key),
        alg: "RS256",
        ...createPublicKey(key).export({ format: "jwk" }),
      },
    ],
  }),
);

/** Re-signs `claims` (a real capture, with `over` applied and `kubernetes.io` extended by `k8s`) like kube-apiserver. */
function sign(
  claims: Record<string, unknown>,
  over: Record<string, unknown> = {},
  k8s: Record<string, unknown> = {},
): Promise<string> {
  const payload = {
    ...claims,
    ...over,
    "kubernetes.io": { ...(claims["kubernetes.io"] as object), ...k8s },
  };
  return new SignJWT(payload).setProtectedHeader({ alg: "RS256", kid: kubernetesKeyId(key) }).sign(key);
}

/** An extended token: the pod-bound capture for the API server's own audience, exp a year out, warnafter. */
function extended(k8s: Record<string, unknown> = { warnafter: WARNAFTER }): Promise<string> {
  return sign(POD_BOUND, { aud: [ISSUER], exp: EXTENDED_EXP }, k8s);
}

let clock = IAT * 1000;
const apps: FastifyInstance[] = [];
const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const a of apps.splice(0)) await a.close();
  for (const c of cleanup.splice(0)) await c();
});

async function app(overrides: Record<string, unknown> = {}, registry: Record<string, unknown> = {}) {
  const base = await testConfig(ISSUER);
  const config = await testConfig(ISSUER, {
    clusters: [
      // The API server's own audience (its issuer) is accepted only with this opt-in.
      {
        name: "interop",
        issuer: ISSUER,
        jwksFile,
        audiences: [ISSUER, "registry.test"],
        allowApiServerAudience: true,
      },
    ],
    registries: [{ ...base.registries[0], ...registry }],
    ...overrides,
  });
  const a = await buildApp(config, { logger: pino({ level: "silent" }), now: () => clock });
  apps.push(a);
  return a;
}

/** Waits until the app's Redis connection is up (before it, the cache is skipped). */
async function redisReady(a: FastifyInstance): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!a.exchange.store.healthy()) {
    if (Date.now() > deadline) throw new Error("redis did not connect");
    await new Promise((r) => setTimeout(r, 20));
  }
}

function getToken(a: FastifyInstance, token: string, offline = true) {
  return a.inject({
    method: "GET",
    url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull${offline ? "&offline_token=true" : ""}`,
    headers: { authorization: basic(token) },
  });
}

function refreshGrant(a: FastifyInstance, refreshToken: string) {
  return a.inject({
    method: "POST",
    url: "/token",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    payload: refreshGrantBody(refreshToken, "repository:team-a/app:pull"),
  });
}

const expired = (message: string) => ({
  errors: [{ code: "UNAUTHORIZED", message, detail: { reason: "token_expired" } }],
});

describe("kubernetes.io.warnafter (extended tokens)", () => {
  it("cuts the registry token and the refresh token to warnafter, not to the year-long exp", async () => {
    const a = await app();
    clock = (WARNAFTER - 200) * 1000;
    const res = await getToken(a, await extended());
    expect(res.statusCode, res.body).toBe(200);
    const body = res.json() as { token: string; expires_in: number; refresh_token: string };
    expect(body.expires_in).toBe(200);
    expect(decodeJwt(body.token).exp).toBe(WARNAFTER);
    expect(decodeJwt(body.refresh_token).exp).toBe(WARNAFTER);
  });

  it("refuses the token once warnafter (plus the clock leeway) has passed, even from the identity cache", async () => {
    const a = await app();
    const token = await extended();
    clock = (WARNAFTER - 100) * 1000;
    expect((await getToken(a, token, false)).statusCode).toBe(200); // verified and cached
    clock = (WARNAFTER + SKEW) * 1000;
    const res = await getToken(a, token, false);
    expect({ status: res.statusCode, body: res.json() }).toEqual({
      status: 401,
      body: expired('service-account token has expired ("kubernetes.io.warnafter" has passed)'),
    });
  });

  it("a replica sharing Redis refuses it after warnafter although another replica cached the identity", async () => {
    const redis = await resolveTestRedis();
    cleanup.push(() => redis.stop());
    const cache = { cache: { redisUrl: redis.url, keyPrefix: "warnafter:", commandTimeoutMs: 500 } };
    const first = await app(cache);
    const second = await app(cache);
    for (const a of [first, second]) await redisReady(a);
    // A cached identity counts only while the key that verified it is loaded.
    await second.exchange.keySets[0]!.refresh();
    const token = await extended();
    clock = (WARNAFTER - 100) * 1000;
    expect((await getToken(first, token, false)).statusCode).toBe(200); // cached in Redis
    expect((await getToken(second, token, false)).statusCode).toBe(200);
    expect(second.exchange.realm.stats.identityHits).toBe(1);
    clock = (WARNAFTER + SKEW) * 1000;
    const res = await getToken(second, token, false);
    expect({ status: res.statusCode, body: res.json() }).toEqual({
      status: 401,
      body: expired('service-account token has expired ("kubernetes.io.warnafter" has passed)'),
    });
  });

  it("is refused inside the leeway too: the 60 s floor of /token counts from warnafter", async () => {
    const a = await app();
    clock = (WARNAFTER - 59) * 1000;
    const res = await getToken(a, await extended(), false);
    expect({ status: res.statusCode, body: res.json() }).toEqual({
      status: 401,
      body: expired("the presented credential expires in 59 s; at least 60 s are needed"),
    });
  });

  it("refuses a warnafter that is not a whole number of seconds", async () => {
    const a = await app();
    clock = (IAT + 10) * 1000;
    for (const warnafter of ["1796289358", 1796289358.5, null]) {
      const res = await getToken(a, await extended({ warnafter }), false);
      expect({ status: res.statusCode, body: res.json() }).toEqual({
        status: 401,
        body: {
          errors: [
            {
              code: "UNAUTHORIZED",
              message: '"kubernetes.io.warnafter" claim is not a whole number of seconds',
              detail: { reason: "malformed_token" },
            },
          ],
        },
      });
    }
  });

  it("changes nothing for a token without warnafter (the real 3600 s capture)", async () => {
    const a = await app();
    clock = (IAT + 10) * 1000;
    const res = await getToken(a, await sign(POD_BOUND));
    expect(res.statusCode, res.body).toBe(200);
    expect(decodeJwt((res.json() as { refresh_token: string }).refresh_token).exp).toBe(POD_BOUND.exp);
  });

  it("cuts the exchange credential of /v1/credential-provider, and kubelet's cache duration, to warnafter", async () => {
    const a = await app(
      { credentialProvider: { audiences: ["rte-provider"], credentialTtlSeconds: 3600 } },
      { hosts: ["registry.test"] },
    );
    clock = (IAT + 1000) * 1000;
    const token = await sign(PROVIDER, { exp: EXTENDED_EXP }, { warnafter: IAT + 1600 });
    const res = await a.inject({
      method: "POST",
      url: "/v1/credential-provider",
      payload: {
        apiVersion: "credentialprovider.kubelet.k8s.io/v1",
        kind: "CredentialProviderRequest",
        image: "registry.test/team-a/app",
        serviceAccountToken: token,
      },
    });
    expect(res.statusCode, res.body).toBe(200);
    const body = res.json() as { cacheDuration: string; auth: Record<string, { password: string }> };
    expect(decodeJwt(body.auth["registry.test"]!.password).exp).toBe(IAT + 1600);
    expect(body.cacheDuration).toBe("5m0s"); // half of the 600 s left
  });
});

describe("registries[].refreshTokenMaxTtlSeconds", () => {
  it("caps a refresh token at the default 3600 s whatever the source token says (a 1-day TokenRequest)", async () => {
    const a = await app();
    clock = (IAT + 10) * 1000;
    const res = await getToken(a, await sign(POD_BOUND, { exp: IAT + 86_400 }));
    expect(res.statusCode, res.body).toBe(200);
    expect(decodeJwt((res.json() as { refresh_token: string }).refresh_token).exp).toBe(IAT + 10 + 3600);
  });

  it("caps at the configured maximum, also for refresh tokens minted under a longer one", async () => {
    const long = await app({}, { refreshTokenMaxTtlSeconds: 7200 });
    clock = (IAT + 10) * 1000;
    const minted = await getToken(long, await sign(POD_BOUND, { exp: IAT + 86_400 }));
    const refreshToken = (minted.json() as { refresh_token: string }).refresh_token;
    expect(decodeJwt(refreshToken).exp).toBe(IAT + 10 + 7200);

    const short = await app({}, { refreshTokenMaxTtlSeconds: 600 });
    clock = (IAT + 10 + 500) * 1000;
    const ok = await refreshGrant(short, refreshToken);
    expect(ok.statusCode, ok.body).toBe(200);
    // A registry token from it never outlives the cap either: 600 - 500 s are left.
    expect((ok.json() as { expires_in: number }).expires_in).toBe(100);
    clock = (IAT + 10 + 600) * 1000;
    const refused = await refreshGrant(short, refreshToken);
    expect({ status: refused.statusCode, body: refused.json() }).toEqual({
      status: 401,
      body: {
        error: "invalid_grant",
        error_description: "the presented credential expires in 0 s; at least 60 s are needed",
      },
    });
  });

  it("is at least 120 s", async () => {
    await expect(app({}, { refreshTokenMaxTtlSeconds: 119 })).rejects.toThrow(
      "registries[0].refreshTokenMaxTtlSeconds: must be >= 120 (a refresh token needs 60 s left at /token)",
    );
  });
});
