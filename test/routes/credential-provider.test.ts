/**
 * `POST /v1/credential-provider` through `app.inject()`: exact answers kubelet's strict decoder accepts,
 * the exchange credential's binding and lifetime, `/token` accepting it back (GET Basic and POST
 * password) for its registry only under the same policy, and every error with its exact body.
 */
import { decodeJwt, decodeProtectedHeader, jwtVerify } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NOW, NOW_S } from "../helpers/clock.js";
import {
  CP_API_VERSION,
  CP_AUDIENCE,
  cpRequest,
  credentialProviderOverrides,
  dockerError,
  kubeletKeyMatches,
  OTHER_SERVICE,
  REGISTRY_HOST,
  type SaClaims,
} from "../helpers/credential-provider.js";
import { AUDIENCE, basic, capturingLogger, SERVICE, type TestEnv, testEnv } from "../helpers/fixtures.js";

/** Frozen "now": 2026-11-30T12:00:00Z. */

let accounts = 0;

/** A pod-bound token with the credential-provider audience, for a fresh service account unless given. */
function podToken(
  env: TestEnv,
  req: Partial<Parameters<TestEnv["issuer"]["mint"]>[0]> = {},
): Promise<string> {
  accounts += 1;
  return env.issuer.mint({
    namespace: "team-a",
    serviceAccount: `puller-${accounts}`,
    audiences: [CP_AUDIENCE],
    nowMs: NOW,
    ...req,
  });
}

function exchange(env: TestEnv, body: unknown, contentType = "application/json") {
  return env.app.inject({
    method: "POST",
    url: "/v1/credential-provider",
    headers: { "content-type": contentType },
    payload: typeof body === "string" ? body : JSON.stringify(body),
  });
}

async function credentialFor(
  env: TestEnv,
  token: string,
  image?: string,
  annotations?: Record<string, string>,
) {
  const res = await exchange(env, cpRequest(token, image, annotations));
  expect(res.statusCode, res.body).toBe(200);
  const host = Object.keys(res.json().auth)[0]!;
  return res.json().auth[host].password as string;
}

describe("POST /v1/credential-provider: the answer", () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await testEnv(await credentialProviderOverrides(), { now: () => NOW });
  });
  afterAll(async () => env.close());

  it("answers exactly apiVersion, kind, cacheKeyType, cacheDuration, auth{host:{username,password}}", async () => {
    const token = await podToken(env);
    const res = await exchange(env, cpRequest(token));
    expect(res.statusCode).toBe(200);
    expect(res.headers["cache-control"]).toBe("no-store");
    expect(res.headers["content-type"]).toMatch(/^application\/json/);
    const body = res.json();
    // The SA token lives 3600 s; the credential as long (credentialTtlSeconds 3600); kubelet caches half.
    expect(body).toEqual({
      apiVersion: CP_API_VERSION,
      kind: "CredentialProviderResponse",
      cacheKeyType: "Registry",
      cacheDuration: "30m0s",
      auth: {
        [REGISTRY_HOST]: { username: "registry-token-exchange", password: body.auth[REGISTRY_HOST].password },
      },
    });
    // Key order as kubelet documents the type; no other field (kubelet decodes strictly).
    expect(Object.keys(body)).toEqual(["apiVersion", "kind", "cacheKeyType", "cacheDuration", "auth"]);
    expect(Object.keys(body.auth[REGISTRY_HOST])).toEqual(["username", "password"]);
  });

  it("never echoes the service-account token: the password is an exchange credential bound to the identity", async () => {
    const token = await podToken(env, { nodeName: "node-1" });
    const password = await credentialFor(env, token, undefined, { "example.com/team": "a" });
    expect(password).not.toBe(token);
    expect(decodeProtectedHeader(password)).toEqual({
      alg: "ES256",
      typ: "rte-exchange+jwt",
      kid: env.app.exchange.signingKeys.get(SERVICE)!.kid,
    });
    const sa = decodeJwt(token) as unknown as SaClaims;
    const claims = decodeJwt(password);
    expect(claims).toEqual({
      iss: "urn:registry-token-exchange:exchange-credential:registry-token-exchange",
      aud: `urn:registry-token-exchange:exchange-credential:${SERVICE}`,
      sub: sa.sub,
      iat: NOW_S,
      nbf: NOW_S - 5,
      exp: sa.exp,
      jti: expect.stringMatching(/^[0-9a-f-]{36}$/),
      rte: {
        cluster: "test",
        namespace: "team-a",
        serviceAccount: sa["kubernetes.io"].serviceaccount,
        pod: sa["kubernetes.io"].pod,
        node: sa["kubernetes.io"].node,
        annotations: { "example.com/team": "a" },
        // The cluster key that verified the token: its fingerprint is the Kubernetes key ID in its header.
        source: {
          jti: sa.jti,
          aud: [CP_AUDIENCE],
          iat: NOW_S,
          exp: sa.exp,
          key: decodeProtectedHeader(token).kid,
        },
      },
    });
  });

  it("the registry's own checks refuse the credential as a bearer token (iss and aud are not the registry's)", async () => {
    const password = await credentialFor(env, await podToken(env));
    const key = env.app.exchange.signingKeys.get(SERVICE)!;
    // distribution verifies the signature with the trusted key, then iss == auth.token.issuer and aud ∋ service.
    await expect(
      jwtVerify(password, key.publicKey, { issuer: "registry-token-exchange", audience: SERVICE }),
    ).rejects.toMatchObject({ code: "ERR_JWT_CLAIM_VALIDATION_FAILED", claim: "iss" });
    await expect(jwtVerify(password, key.publicKey, { audience: SERVICE })).rejects.toMatchObject({
      claim: "aud",
    });
    expect(decodeJwt(password).access).toBeUndefined();
    expect(decodeProtectedHeader(password).x5c).toBeUndefined();
  });

  it("cacheDuration is half the remaining lifetime, cut by the token's exp and credentialTtlSeconds", async () => {
    // min(half, remaining - 60 s that /token needs - 10 s margin), never negative.
    const cases: Array<[number, string]> = [
      [600, "5m0s"],
      [7201, "30m0s"], // capped by credentialTtlSeconds (3600)
      [3661, "30m0s"],
      [125, "55s"],
      [75, "5s"],
      [70, "0s"],
      [60, "0s"],
    ];
    for (const [ttlSeconds, want] of cases) {
      const res = await exchange(env, cpRequest(await podToken(env, { ttlSeconds })));
      expect(res.statusCode).toBe(200);
      expect([ttlSeconds, res.json().cacheDuration]).toEqual([ttlSeconds, want]);
      const exp = decodeJwt(res.json().auth[REGISTRY_HOST].password).exp;
      expect(exp).toBe(NOW_S + Math.min(ttlSeconds, 3600));
    }
  });

  it("a credential kubelet still holds at the end of cacheDuration is accepted by /token", async () => {
    const res = await exchange(env, cpRequest(await podToken(env, { ttlSeconds: 200 })));
    const { cacheDuration, auth } = res.json();
    expect(cacheDuration).toBe("1m40s");
    const later = await testEnv(await credentialProviderOverrides(), { now: () => NOW + 100_000 });
    // The same cluster, still trusting the key that signed the token the credential was derived from.
    later.issuer.keys = [...env.issuer.keys];
    try {
      const used = await later.app.inject({
        method: "GET",
        url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull`,
        headers: { authorization: basic(auth[REGISTRY_HOST].password) },
      });
      expect(used.statusCode, used.body).toBe(200);
      expect(used.json().expires_in).toBe(100);
    } finally {
      await later.close();
    }
  });

  it("the auth key is the image's host[:port] and matches the image by kubelet's rules", async () => {
    const images = [
      `${REGISTRY_HOST}/team-a/app:v1`,
      `${REGISTRY_HOST}/team-a/app@sha256:${"a".repeat(64)}`,
      "registry.test/team-a/nested/app",
      "REGISTRY.test/team-a/app:1.0",
    ];
    for (const image of images) {
      const res = await exchange(env, cpRequest(await podToken(env), image));
      expect(res.statusCode, res.body).toBe(200);
      const keys = Object.keys(res.json().auth);
      expect(keys).toEqual([image.slice(0, image.indexOf("/"))]);
      expect(kubeletKeyMatches(keys[0]!, image)).toBe(true);
    }
  });
});

describe("/token accepts the exchange credential like a service-account token, for its registry only", () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await testEnv(await credentialProviderOverrides(), { now: () => NOW });
  });
  afterAll(async () => env.close());

  it("GET with Basic: the same policy as the service-account token (partial access, not an error)", async () => {
    const password = await credentialFor(env, await podToken(env));
    const res = await env.app.inject({
      method: "GET",
      url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull,push&scope=repository:team-b/app:pull`,
      headers: { authorization: basic(password, "registry-token-exchange") },
    });
    expect(res.statusCode).toBe(200);
    const claims = decodeJwt(res.json().token);
    expect(claims.access).toEqual([
      { type: "repository", name: "team-a/app", actions: ["pull", "push"] },
      { type: "repository", name: "team-b/app", actions: [] },
    ]);
    expect(claims.iss).toBe("registry-token-exchange");
    expect(claims.aud).toBe(SERVICE);
    expect(claims.sub).toMatch(/^system:serviceaccount:team-a:puller-\d+$/);
  });

  it("POST password grant (containerd): scope and expiry never past the credential", async () => {
    // A 200 s service-account token: the registry token (300 s TTL) is cut to the credential's exp.
    const password = await credentialFor(env, await podToken(env, { ttlSeconds: 200 }));
    const res = await env.app.inject({
      method: "POST",
      url: "/token",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      payload: new URLSearchParams({
        grant_type: "password",
        client_id: "containerd-client",
        username: "registry-token-exchange",
        password,
        service: SERVICE,
        scope: "repository:team-a/app:pull repository:library/busybox:pull",
      }).toString(),
    });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toEqual({
      access_token: res.json().access_token,
      token_type: "Bearer",
      scope: "repository:team-a/app:pull repository:library/busybox:pull",
      expires_in: 200,
      issued_at: "2026-11-30T12:00:00Z",
    });
    expect(decodeJwt(res.json().access_token).exp).toBe(NOW_S + 200);
  });

  it("is refused at another registry (its aud names one service) with 401", async () => {
    const password = await credentialFor(env, await podToken(env));
    const res = await env.app.inject({
      method: "GET",
      url: `/token?service=${OTHER_SERVICE}&scope=repository:team-a/app:pull`,
      headers: { authorization: basic(password) },
    });
    expect(res.statusCode).toBe(401);
    expect(res.headers["www-authenticate"]).toBe('Basic realm="registry-token-exchange"');
    expect(res.json()).toEqual(
      dockerError(
        "UNAUTHORIZED",
        "invalid_audience",
        "exchange credential was issued for another registry service",
      ),
    );
  });

  it("a tampered or expired credential is refused", async () => {
    const password = await credentialFor(env, await podToken(env, { ttlSeconds: 100 }));
    const [h, p, s] = password.split(".");
    const claims = JSON.parse(Buffer.from(p!, "base64url").toString());
    claims.rte.namespace = "team-b";
    const tampered = `${h}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.${s}`;
    const bad = await env.app.inject({
      method: "GET",
      url: `/token?service=${SERVICE}`,
      headers: { authorization: basic(tampered) },
    });
    expect(bad.json()).toEqual(
      dockerError(
        "UNAUTHORIZED",
        "invalid_signature",
        "exchange credential signature does not verify with this registry's signing key",
      ),
    );
    const later = await testEnv(await credentialProviderOverrides(), { now: () => NOW + 200_000 });
    try {
      const expired = await later.app.inject({
        method: "GET",
        url: `/token?service=${SERVICE}`,
        headers: { authorization: basic(password) },
      });
      expect(expired.statusCode).toBe(401);
      expect(expired.json()).toEqual(
        dockerError("UNAUTHORIZED", "token_expired", "exchange credential has expired"),
      );
    } finally {
      await later.close();
    }
  });

  it("a token kubelet requested for the credential provider is not a registry credential (and vice versa)", async () => {
    const cpToken = await podToken(env);
    // Used at the exchange endpoint first (its identity is cached there), then presented at /token.
    expect((await exchange(env, cpRequest(cpToken))).statusCode).toBe(200);
    const atRealm = await env.app.inject({
      method: "GET",
      url: `/token?service=${SERVICE}`,
      headers: { authorization: basic(cpToken) },
    });
    expect(atRealm.statusCode).toBe(401);
    expect(atRealm.json().errors[0].detail.reason).toBe("invalid_audience");
    const registryToken = await podToken(env, { audiences: [AUDIENCE] });
    const atExchange = await exchange(env, cpRequest(registryToken));
    expect(atExchange.statusCode).toBe(401);
    expect(atExchange.json()).toEqual(
      dockerError(
        "UNAUTHORIZED",
        "invalid_audience",
        `"aud" claim does not contain an audience accepted here`,
      ),
    );
  });

  it("an exchange credential cannot buy another one", async () => {
    const password = await credentialFor(env, await podToken(env));
    const res = await exchange(env, cpRequest(password));
    expect(res.statusCode).toBe(401);
    expect(res.json().errors[0].detail.reason).toBe("unknown_issuer");
  });
});

describe("POST /v1/credential-provider: errors", () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await testEnv(await credentialProviderOverrides(), { now: () => NOW });
  });
  afterAll(async () => env.close());

  const bad = (message: string) => dockerError("UNSUPPORTED", "invalid_request", message);

  it.each([
    [
      "wrong apiVersion",
      (t: string) => ({ ...cpRequest(t), apiVersion: "credentialprovider.kubelet.k8s.io/v1beta1" }),
      "apiVersion credentialprovider.kubelet.k8s.io/v1beta1 is not supported: use credentialprovider.kubelet.k8s.io/v1 (set apiVersion in the kubelet CredentialProviderConfig; only v1 carries a service-account token)",
    ],
    [
      "missing apiVersion",
      (t: string) => ({ ...cpRequest(t), apiVersion: undefined }),
      "apiVersion (missing) is not supported: use credentialprovider.kubelet.k8s.io/v1 (set apiVersion in the kubelet CredentialProviderConfig; only v1 carries a service-account token)",
    ],
    [
      "wrong kind",
      (t: string) => ({ ...cpRequest(t), kind: "CredentialProviderResponse" }),
      "kind CredentialProviderResponse is not CredentialProviderRequest",
    ],
    [
      "missing token",
      (t: string) => ({ ...cpRequest(t), serviceAccountToken: undefined }),
      '"serviceAccountToken" is missing: set tokenAttributes.serviceAccountTokenAudience and requireServiceAccount: true in the kubelet CredentialProviderConfig',
    ],
    [
      "empty token",
      (t: string) => ({ ...cpRequest(t), serviceAccountToken: "" }),
      '"serviceAccountToken" is missing: set tokenAttributes.serviceAccountTokenAudience and requireServiceAccount: true in the kubelet CredentialProviderConfig',
    ],
    [
      "token not a string",
      (t: string) => ({ ...cpRequest(t), serviceAccountToken: 42 }),
      '"serviceAccountToken" must be a string',
    ],
    [
      "missing image",
      (t: string) => ({ ...cpRequest(t), image: undefined }),
      '"image" is required and must be a string',
    ],
    [
      "bad image (upper-case path)",
      (t: string) => cpRequest(t, `${REGISTRY_HOST}/Team-A/app`),
      `image "${REGISTRY_HOST}/Team-A/app" is not a valid image reference: the repository path must be lower-case components separated by '/'`,
    ],
    [
      "bad image (scheme)",
      (t: string) => cpRequest(t, `https://${REGISTRY_HOST}/team-a/app`),
      `image "https://${REGISTRY_HOST}/team-a/app" is not a valid image reference: no scheme, spaces or control characters allowed`,
    ],
    [
      "bad image (tag)",
      (t: string) => cpRequest(t, `${REGISTRY_HOST}/team-a/app:-x`),
      `image "${REGISTRY_HOST}/team-a/app:-x" is not a valid image reference: the tag is not valid`,
    ],
    [
      "annotations not an object",
      (t: string) => ({ ...cpRequest(t), serviceAccountAnnotations: ["a"] }),
      '"serviceAccountAnnotations" must be an object',
    ],
    [
      "annotation value not a string",
      (t: string) => cpRequest(t, undefined, { "example.com/x": 1 as unknown as string }),
      'serviceAccountAnnotations["example.com/x"] must be a string',
    ],
    [
      "annotation key invalid",
      (t: string) => cpRequest(t, undefined, { "not a key": "x" }),
      'serviceAccountAnnotations key "not a key" is not a Kubernetes annotation key',
    ],
    ["body not an object", () => [1, 2], "the body must be a CredentialProviderRequest JSON object"],
  ])("%s -> 400", async (_name, build, message) => {
    const res = await exchange(env, build(await podToken(env)));
    expect(res.statusCode).toBe(400);
    expect(res.json()).toEqual(bad(message));
  });

  it("an image on a registry host this realm does not serve -> 400 unknown_service", async () => {
    const res = await exchange(env, cpRequest(await podToken(env), "ghcr.io/team-a/app:v1"));
    expect(res.statusCode).toBe(400);
    expect(res.json()).toEqual(
      dockerError(
        "UNSUPPORTED",
        "unknown_service",
        'image registry "ghcr.io" is not served by this token realm (add it to registries[].hosts)',
      ),
    );
  });

  it("a repository outside the policy -> 403 DENIED", async () => {
    const res = await exchange(
      env,
      cpRequest(await podToken(env, { serviceAccount: "builder" }), `${REGISTRY_HOST}/team-b/app`),
    );
    expect(res.statusCode).toBe(403);
    expect(res.json()).toEqual(
      dockerError(
        "DENIED",
        "access_denied",
        `service account team-a/builder of cluster "test" may not pull "team-b/app" from "${SERVICE}"`,
      ),
    );
  });

  it("a token that is not pod-bound -> 401 (kubelet's always are)", async () => {
    const res = await exchange(env, cpRequest(await podToken(env, { podName: null })));
    expect(res.statusCode).toBe(401);
    expect(res.json()).toEqual(
      dockerError(
        "UNAUTHORIZED",
        "missing_claim",
        "service-account token is not bound to a pod (kubelet requests pod-bound tokens for credential providers)",
      ),
    );
  });

  it("a token with less than 60 s left -> 401 token_expired (the credential would be refused at /token)", async () => {
    const res = await exchange(env, cpRequest(await podToken(env, { ttlSeconds: 59 })));
    expect(res.statusCode).toBe(401);
    expect(res.json()).toEqual(
      dockerError(
        "UNAUTHORIZED",
        "token_expired",
        "service-account token expires in 59 s; at least 60 s are needed",
      ),
    );
  });

  it("an expired token -> 401 token_expired", async () => {
    const res = await exchange(env, cpRequest(await podToken(env, { nowMs: NOW - 7200_000 })));
    expect(res.statusCode).toBe(401);
    expect(res.json()).toEqual(
      dockerError("UNAUTHORIZED", "token_expired", "service-account token has expired"),
    );
  });

  it("a form body -> 415, malformed JSON -> 400", async () => {
    const form = await exchange(env, "image=x", "application/x-www-form-urlencoded");
    expect(form.statusCode).toBe(415);
    expect(form.json()).toEqual(
      dockerError(
        "UNSUPPORTED",
        "unsupported_media_type",
        "POST /v1/credential-provider needs an application/json CredentialProviderRequest body",
      ),
    );
    const broken = await exchange(env, "{");
    expect(broken.statusCode).toBe(400);
    expect(broken.json().errors[0].detail.reason).toBe("invalid_request");
  });

  it("a GET -> 404 in the docker format", async () => {
    const res = await env.app.inject({ method: "GET", url: "/v1/credential-provider" });
    expect(res.statusCode).toBe(404);
    expect(res.json().errors[0].detail.reason).toBe("not_found");
  });
});

describe("POST /v1/credential-provider: not configured, rate limited, and logs", () => {
  it("answers 404 when credentialProvider is not configured", async () => {
    const env = await testEnv({}, { now: () => NOW });
    try {
      const res = await exchange(env, cpRequest("x"));
      expect(res.statusCode).toBe(404);
      expect(res.json()).toEqual(
        dockerError(
          "UNSUPPORTED",
          "not_found",
          "the credential-provider endpoint is not enabled (set credentialProvider in the config)",
        ),
      );
    } finally {
      await env.close();
    }
  });

  it("shares the /v1/ rate limit: 429 with Retry-After in the docker format", async () => {
    const env = await testEnv(
      { ...(await credentialProviderOverrides()), rateLimit: { maxPerAddress: 1, maxPerServiceAccount: 1 } },
      { now: () => NOW },
    );
    try {
      const token = await podToken(env);
      const codes: number[] = [];
      let last: Awaited<ReturnType<typeof exchange>> | undefined;
      for (let i = 0; i < 3; i++) {
        last = await exchange(env, cpRequest(token));
        codes.push(last.statusCode);
      }
      expect(codes).toEqual([200, 200, 429]);
      expect(Number(last!.headers["retry-after"])).toBeGreaterThan(0);
      expect(last!.json().errors[0]).toMatchObject({
        code: "TOOMANYREQUESTS",
        detail: { reason: "rate_limited" },
      });
    } finally {
      await env.close();
    }
  });

  it("never logs the service-account token or the exchange credential", async () => {
    const { logger, lines } = capturingLogger("debug");
    const env = await testEnv(await credentialProviderOverrides(), { now: () => NOW, logger });
    try {
      const token = await podToken(env);
      const password = await credentialFor(env, token, undefined, { "example.com/team": "secret-looking" });
      await env.app.inject({
        method: "GET",
        url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull`,
        headers: { authorization: basic(password) },
      });
      await exchange(env, cpRequest(token, `${REGISTRY_HOST}/team-b/app`));
      const log = lines.join("");
      for (const secret of [token, password, token.split(".")[2]!, password.split(".")[2]!]) {
        expect(log).not.toContain(secret);
      }
      const audits = lines.map((l) => JSON.parse(l)).filter((l) => l.audit?.kind === "exchange-credential");
      expect(audits.map((a) => a.audit.decision)).toEqual(["issued", "denied"]);
      expect(audits[0].audit).toMatchObject({
        namespace: "team-a",
        service: SERVICE,
        repository: "team-a/app",
        annotationKeys: ["example.com/team"],
        jti: decodeJwt(password).jti,
      });
    } finally {
      await env.close();
    }
  });
});
