/**
 * `verification: tokenReview|both` and `annotations: fromCluster` against the stand-in kube-apiserver
 * (real v1.36.2 shapes), with the real tokens of test/fixtures/kubernetes-1.36/ and a frozen clock:
 * valid token, wrong audience, deleted pod (for the token and for credentials derived from it, within the
 * documented bound), recreated service account, annotations from the cluster, single-flight, explain.
 * Failure modes of the API server are in tokenreview-failures.test.ts.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { Config } from "../../src/config/schema.js";
import { generateSigningKeyFiles } from "../../src/jose/signing-key.js";
import { dockerError, oauthError } from "../helpers/credential-provider.js";
import { SERVICE, signingKeyFiles } from "../helpers/fixtures.js";
import {
  credentialProvider,
  podUidOf,
  type ReviewEnv,
  ROLE,
  reviewEnv,
  TOKENS,
  TR_REGISTRY_HOST,
  tokenGet,
} from "../helpers/tokenreview.js";

const SA_UID = "eff82084-e00b-4b74-8af8-4873c67f95cb";
const REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews";

let env: ReviewEnv | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
});

async function exchangeCredential(
  e: ReviewEnv,
  token = TOKENS.credentialProvider,
  image?: string,
  annotations?: Record<string, string>,
) {
  const res = await credentialProvider(e.app, token, image, annotations);
  expect(res.statusCode, res.body).toBe(200);
  return res.json().auth[TR_REGISTRY_HOST].password as string;
}

describe("verification: both", () => {
  it("verifies offline, then asks the cluster once: a TokenReview with the token and the accepted audience", async () => {
    env = await reviewEnv();
    const res = await tokenGet(env.app, TOKENS.plain);
    expect(res.statusCode, res.body).toBe(200);
    expect(env.api.reviews()).toBe(1);
    expect(env.api.requests[0]).toEqual({
      method: "POST",
      path: REVIEW_PATH,
      authorization: "Bearer apiserver-bearer-1",
      userAgent: "registry-token-exchange",
      body: {
        apiVersion: "authentication.k8s.io/v1",
        kind: "TokenReview",
        spec: { token: TOKENS.plain, audiences: [SERVICE] },
      },
    });
    // Within the review cache TTL the answer is reused.
    expect((await tokenGet(env.app, TOKENS.plain)).statusCode).toBe(200);
    expect(env.api.reviews()).toBe(1);
  });

  it("re-reads the bearer token file when kubelet rotates it", async () => {
    env = await reviewEnv();
    expect((await tokenGet(env.app, TOKENS.plain)).statusCode).toBe(200);
    writeFileSync(env.bearerFile, "apiserver-bearer-2-rotated\n");
    env.advance(11_000);
    expect((await tokenGet(env.app, TOKENS.plain)).statusCode).toBe(200);
    expect(env.api.requests.map((r) => r.authorization)).toEqual([
      "Bearer apiserver-bearer-1",
      "Bearer apiserver-bearer-2-rotated",
    ]);
  });

  it("a token the JWKS rejects never costs an API call (wrong audience, forged signature)", async () => {
    env = await reviewEnv();
    const wrong = await tokenGet(env.app, TOKENS.otherAudience);
    expect(wrong.statusCode).toBe(401);
    expect(wrong.json().errors[0].detail.reason).toBe("invalid_audience");
    const [h, p, s] = TOKENS.plain.split(".");
    const forged = `${h}.${p}.${s!.slice(0, -4)}AAAA`;
    const bad = await tokenGet(env.app, forged);
    expect(bad.statusCode).toBe(401);
    expect(bad.json().errors[0].detail.reason).toBe("invalid_signature");
    expect(env.api.reviews()).toBe(0);
  });

  it("a burst of concurrent requests with one token costs one review (single-flight)", async () => {
    env = await reviewEnv();
    const e = env;
    const answers = await Promise.all(Array.from({ length: 25 }, () => tokenGet(e.app, TOKENS.podBound)));
    expect(answers.map((r) => r.statusCode)).toEqual(Array(25).fill(200));
    expect(env.api.reviews()).toBe(1);
  });

  it("explain shows which verification ran and what the cluster said", async () => {
    env = await reviewEnv();
    const res = await env.app.inject({
      method: "GET",
      url: `/v1/explain?service=${SERVICE}&scope=repository:team-a/app:pull`,
      headers: { authorization: `Bearer ${TOKENS.podBound}` },
    });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json().identity.review).toEqual({
      verification: "both",
      authenticated: true,
      username: "system:serviceaccount:team-a:builder",
      uid: SA_UID,
      audiences: [SERVICE],
      cached: false,
      derived: false,
    });
    const offline = await reviewEnv({ verification: "offline" });
    try {
      const o = await offline.app.inject({
        method: "GET",
        url: `/v1/explain?service=${SERVICE}`,
        headers: { authorization: `Bearer ${TOKENS.podBound}` },
      });
      expect(o.json().identity.review).toBeUndefined();
      expect(offline.api.reviews()).toBe(0);
    } finally {
      await offline.close();
    }
  });
});

describe("verification: tokenReview", () => {
  it("authenticates through the review alone, and refuses what the cluster refuses (wrong audience)", async () => {
    env = await reviewEnv({ verification: "tokenReview" });
    expect((await tokenGet(env.app, TOKENS.podBound)).statusCode).toBe(200);
    expect(env.api.reviews()).toBe(1);
    // The cluster's own answer for a token reviewed for an audience it does not carry (the captured
    // tokenreview-wrong-audience.json): refused.
    const reviewer = env.app.exchange.realm.reviewer!;
    const identity = await env.app.exchange.realm.authenticateForExchange(
      TOKENS.credentialProvider,
      env.app.exchange.realm.registry(SERVICE),
    );
    await expect(
      reviewer.review(TOKENS.credentialProvider, identity, [SERVICE], false),
    ).rejects.toMatchObject({
      code: "token_review_refused",
      statusCode: 401,
      message:
        'the cluster refused the token: [invalid bearer token, token audiences ["rte-provider"] is invalid for the target audiences ["registry.test"]]',
    });
  });

  it("needs no JWKS: ready and serving with an unreachable discovery document", async () => {
    // No jwksFile: discovery at the issuer (https://127.0.0.1:16443), where nothing listens.
    env = await reviewEnv({ verification: "tokenReview", jwksFile: undefined });
    const ready = await env.app.inject({ url: "/readyz" });
    expect(ready.statusCode).toBe(200);
    // Ready means "can serve": the cluster needs no keys (none are loaded), the API server authenticates.
    expect(ready.json().clusters.kind).toMatchObject({ ready: true, keys: 0 });
    expect((await tokenGet(env.app, TOKENS.podBound)).statusCode).toBe(200);
    // A forged signature is the API server's to refuse (the stand-in checks it like kube-apiserver).
    const [h, p, sig] = TOKENS.plain.split(".");
    const forged = await tokenGet(env.app, `${h}.${p}.${sig!.slice(0, -4)}AAAA`);
    expect(forged.statusCode).toBe(401);
    expect(forged.json().errors[0].detail.reason).toBe("token_review_refused");
  });

  it("refuses a review whose user disagrees with the token's claims", async () => {
    env = await reviewEnv({ verification: "tokenReview" });
    const reviewer = env.app.exchange.realm.reviewer!;
    const identity = await env.app.exchange.realm.authenticateForExchange(
      TOKENS.credentialProvider,
      env.app.exchange.realm.registry(SERVICE),
    );
    for (const [field, wrong] of [
      ["pod", { name: "vector-pod", uid: "00000000-0000-0000-0000-000000000000" }],
      ["node", { name: "other-node", uid: identity.node!.uid }],
      ["serviceAccount", { name: "builder", uid: "00000000-0000-0000-0000-000000000000" }],
      ["subject", "system:serviceaccount:team-a:other"],
      ["tokenId", "another-jti"],
    ] as const) {
      await expect(
        reviewer.review(TOKENS.credentialProvider, { ...identity, [field]: wrong }, ["rte-provider"], false),
        field,
      ).rejects.toMatchObject({ code: "token_review_refused" });
    }
  });
});

describe("a deleted pod stops pulling within review.cacheTtlSeconds (+ review.timeoutMs)", () => {
  it("for the service-account token, its exchange credential and refresh tokens derived from them", async () => {
    env = await reviewEnv();
    const credential = await exchangeCredential(env);
    const pulled = await tokenGet(env.app, credential, "repository:team-a/app:pull", "&offline_token=true");
    expect(pulled.statusCode, pulled.body).toBe(200);
    const refresh = pulled.json().refresh_token as string;
    expect(refresh).toBeTypeOf("string");
    const direct = await tokenGet(
      env.app,
      TOKENS.podBound,
      "repository:team-a/app:pull",
      "&offline_token=true",
    );
    expect(direct.statusCode).toBe(200);
    const directRefresh = direct.json().refresh_token as string;
    // The credential does not show its source token: it is sealed with the service secret.
    const payload = Buffer.from(credential.split(".")[1]!, "base64url").toString();
    expect(payload).not.toContain(TOKENS.credentialProvider.split(".")[1]!);
    expect(JSON.parse(payload).rte.src).toMatch(/^s1\./);

    env.api.deletePod(podUidOf(TOKENS.credentialProvider));
    env.api.deletePod(podUidOf(TOKENS.podBound));

    // Inside the bound, the cached "yes" still answers (that is the documented window).
    env.advance(9_000);
    expect((await tokenGet(env.app, credential)).statusCode).toBe(200);
    // Past it, every one of them is refused by the cluster.
    env.advance(1_001);
    const refused = dockerError(
      "UNAUTHORIZED",
      "token_review_refused",
      "the cluster refused the token: [invalid bearer token, service account token has been invalidated]",
    );
    const viaCredential = await tokenGet(env.app, credential);
    expect(viaCredential.statusCode).toBe(401);
    expect(viaCredential.json()).toEqual(refused);
    const viaToken = await tokenGet(env.app, TOKENS.podBound);
    expect(viaToken.json()).toEqual(refused);
    for (const r of [refresh, directRefresh]) {
      const viaRefresh = await env.app.inject({
        method: "POST",
        url: "/token",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        payload: new URLSearchParams({
          grant_type: "refresh_token",
          refresh_token: r,
          service: SERVICE,
          scope: "repository:team-a/app:pull",
          client_id: "containerd-client",
        }).toString(),
      });
      expect(viaRefresh.statusCode).toBe(401);
      expect(viaRefresh.json()).toEqual(
        oauthError(
          "invalid_grant",
          "the cluster refused the token: [invalid bearer token, service account token has been invalidated]",
        ),
      );
    }
    const again = await credentialProvider(env.app, TOKENS.credentialProvider);
    expect(again.statusCode).toBe(401);
    expect(again.json()).toEqual(refused);
  });

  it("a credential derived before its cluster started reviewing carries no source and is refused", async () => {
    const offline = await reviewEnv({ verification: "offline" });
    let credential: string;
    try {
      credential = await exchangeCredential(offline);
    } finally {
      await offline.close();
    }
    env = await reviewEnv();
    const res = await tokenGet(env.app, credential);
    expect(res.statusCode).toBe(401);
    expect(res.json()).toEqual(
      dockerError(
        "UNAUTHORIZED",
        "token_review_refused",
        "this credential carries no token the cluster can review; request a new one",
      ),
    );
  });
});

describe("a recreated service account (same name, new uid)", () => {
  const NEW_UID = "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d";

  it("is refused by the review", async () => {
    env = await reviewEnv();
    env.api.recreateServiceAccount("team-a", "builder", NEW_UID);
    const res = await tokenGet(env.app, TOKENS.podBound);
    expect(res.statusCode).toBe(401);
    expect(res.json()).toEqual(
      dockerError(
        "UNAUTHORIZED",
        "token_review_refused",
        `the cluster refused the token: [invalid bearer token, service account UID (${NEW_UID}) does not match claim (${SA_UID})]`,
      ),
    );
  });

  it("is refused by the ServiceAccount uid check of annotations: fromCluster (even verified offline)", async () => {
    env = await reviewEnv({ verification: "offline", annotations: "fromCluster" });
    env.api.recreateServiceAccount("team-a", "builder", NEW_UID);
    const res = await credentialProvider(env.app, TOKENS.kubelet);
    expect(res.statusCode).toBe(401);
    expect(res.json()).toEqual(
      dockerError(
        "UNAUTHORIZED",
        "token_review_refused",
        "service account team-a/builder was recreated since the token was issued (its uid differs)",
      ),
    );
    expect(env.api.reviews()).toBe(0);
  });
});

describe("annotations: fromCluster", () => {
  it("uses the ServiceAccount's annotations instead of the request's", async () => {
    env = await reviewEnv({ annotations: "fromCluster" });
    // The caller asserts nothing: the cluster says role=publisher (serviceaccount.json).
    const credential = await exchangeCredential(env, TOKENS.kubelet, `${TR_REGISTRY_HOST}/releases/app`);
    const claims = JSON.parse(Buffer.from(credential.split(".")[1]!, "base64url").toString());
    // Only the annotation keys the policy names (not kubectl's last-applied-configuration).
    expect(claims.rte.annotations).toEqual({ [ROLE]: "publisher" });
    const pulled = await tokenGet(env.app, credential, "repository:releases/app:pull");
    expect(pulled.statusCode).toBe(200);
    expect(pulled.json().scope ?? pulled.json().access_token).toBeDefined();
    const explained = await env.app.inject({
      method: "GET",
      url: `/v1/explain?service=${SERVICE}&scope=repository:releases/app:pull`,
      headers: { authorization: `Bearer ${credential}` },
    });
    expect(explained.json().scopes[0].granted).toEqual(["pull"]);

    // The cluster changes the annotation; the caller keeps asserting the old value: the cluster wins.
    env.api.setAnnotations("team-a", "builder", { [ROLE]: "viewer" });
    env.advance(11_000);
    const denied = await credentialProvider(env.app, TOKENS.kubelet, `${TR_REGISTRY_HOST}/releases/app`, {
      [ROLE]: "publisher",
    });
    expect(denied.statusCode).toBe(403);
    expect(denied.json().errors[0].detail.reason).toBe("access_denied");
    expect(env.api.serviceAccountReads()).toBe(2);
  });

  it("with annotations: fromRequest, the caller's assertion is what policy sees (the risk fromCluster removes)", async () => {
    env = await reviewEnv({ annotations: "fromRequest" });
    env.api.setAnnotations("team-a", "builder", { [ROLE]: "viewer" });
    const res = await credentialProvider(env.app, TOKENS.kubelet, `${TR_REGISTRY_HOST}/releases/app`, {
      [ROLE]: "publisher",
    });
    expect(res.statusCode).toBe(200);
    expect(env.api.serviceAccountReads()).toBe(0);
  });
});

describe("a switch of signing keys (registries[].publishedKeys)", () => {
  it("keeps derived credentials reviewable while the previous key is published with its keyFile", async () => {
    env = await reviewEnv();
    const credential = await exchangeCredential(env);
    const previous = await signingKeyFiles();
    const next = await generateSigningKeyFiles(mkdtempSync(join(tmpdir(), "rte-next-")));
    const rotated = (published: { certFile: string; keyFile?: string }): Config => {
      const c = structuredClone(env!.config);
      c.registries[0]!.signingKey = next;
      c.registries[0]!.publishedKeys = [published];
      return c;
    };
    env.app.exchange.reload(rotated(previous));
    const res = await tokenGet(env.app, credential);
    expect(res.statusCode, res.body).toBe(200);
    // Without the previous private key, the sealed source token cannot be opened: refused, fail closed.
    env.app.exchange.reload(rotated({ certFile: previous.certFile }));
    env.advance(11_000);
    const refused = await tokenGet(env.app, credential);
    expect(refused.statusCode).toBe(401);
    expect(refused.json().errors[0].detail.reason).toBe("token_review_refused");
  });
});
