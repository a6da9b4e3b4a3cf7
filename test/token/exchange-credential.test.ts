/**
 * Derived credentials (exchange credentials and refresh tokens, `src/token/derived.ts` and `src/authn/derived.ts`): minting, the
 * verifier's exact checks, and routing by `typ` that trusts nothing else of an unverified token.
 */
import { generateKeyPairSync } from "node:crypto";
import { decodeJwt, decodeProtectedHeader, SignJWT } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import {
  DERIVED_CLOCK_SKEW_SECONDS,
  derivedAudience,
  derivedIssuer,
  derivedKindOf,
  verifyDerived,
} from "../../src/authn/derived.js";
import type { Identity } from "../../src/authn/verify.js";
import type { RegistryConfig } from "../../src/config/schema.js";
import { loadSigningKey, type SigningKey } from "../../src/jose/signing-key.js";
import { mintDerived } from "../../src/token/derived.js";
import { NOW, NOW_S } from "../helpers/clock.js";
import { signingKeyFiles } from "../helpers/fixtures.js";

const CLUSTERS = new Set(["prod"]);
/** Fingerprint of the cluster key that verified the source token (a Kubernetes key ID). */
const CLUSTER_KEY = "Qm9ndXMgY2x1c3RlciBrZXkgZmluZ2VycHJpbnQgMDAx";

let key: SigningKey;
let registry: RegistryConfig;
let other: RegistryConfig;

const identity: Identity = {
  cluster: "prod",
  namespace: "team-a",
  serviceAccount: { name: "builder", uid: "0b0e7c5e-0000-4000-a000-000000000001" },
  pod: { name: "builder-7d9f", uid: "0b0e7c5e-0000-4000-a000-000000000002" },
  node: { name: "node-1", uid: "0b0e7c5e-0000-4000-a000-000000000003" },
  subject: "system:serviceaccount:team-a:builder",
  audiences: ["registry-token-exchange"],
  expiresAt: NOW_S + 3600,
  issuedAt: NOW_S,
  tokenId: "5a8e2b56-0000-4000-a000-00000000000a",
  annotations: { "example.com/team": "a" },
  verificationKey: CLUSTER_KEY,
  clusterKey: CLUSTER_KEY,
};

beforeAll(async () => {
  const files = await signingKeyFiles();
  key = loadSigningKey(files.keyFile, files.certFile, "test");
  registry = {
    service: "registry.example.com",
    issuer: "registry-token-exchange",
    tokenTtlSeconds: 300,
    refreshTokenMaxTtlSeconds: 3600,
    signingKey: files,
  };
  other = { ...registry, service: "other.example.com" };
});

/** Signs arbitrary claims with the registry key as an exchange credential (forgery/shape tests). */
function sign(claims: Record<string, unknown>, header: Record<string, unknown> = {}) {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: key.alg, typ: "rte-exchange+jwt", kid: key.kid, ...header })
    .sign(key.privateKey);
}

function validClaims(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    iss: derivedIssuer("exchange", registry),
    aud: derivedAudience("exchange", registry),
    sub: identity.subject,
    iat: NOW_S,
    nbf: NOW_S - 5,
    exp: NOW_S + 600,
    jti: "7f1c2d3e-0000-4000-a000-000000000000",
    rte: {
      cluster: "prod",
      namespace: "team-a",
      serviceAccount: identity.serviceAccount,
      source: { aud: ["registry-token-exchange"], iat: NOW_S, exp: NOW_S + 600, key: CLUSTER_KEY },
    },
    ...over,
  };
}

describe("iss and aud of derived credentials", () => {
  it("are URNs in this service's namespace, never the registry's issuer or service", () => {
    expect(derivedIssuer("exchange", registry)).toBe(
      "urn:registry-token-exchange:exchange-credential:registry-token-exchange",
    );
    expect(derivedAudience("exchange", registry)).toBe(
      "urn:registry-token-exchange:exchange-credential:registry.example.com",
    );
    expect(derivedIssuer("refresh", registry)).toBe(
      "urn:registry-token-exchange:refresh-token:registry-token-exchange",
    );
    expect(derivedAudience("refresh", registry)).toBe(
      "urn:registry-token-exchange:refresh-token:registry.example.com",
    );
  });
});

describe("mintDerived", () => {
  it("signs with the registry key, its own typ, and exp cut to the source credential", async () => {
    const c = await mintDerived("exchange", key, registry, identity, NOW_S + 99_999, NOW);
    expect(decodeProtectedHeader(c.token)).toEqual({ alg: "ES256", typ: "rte-exchange+jwt", kid: key.kid });
    expect(c).toMatchObject({ issuedAt: NOW_S, expiresAt: identity.expiresAt });
    expect(decodeJwt(c.token).exp).toBe(identity.expiresAt);
    const shorter = await mintDerived("refresh", key, registry, identity, NOW_S + 120, NOW);
    expect(shorter.expiresAt).toBe(NOW_S + 120);
    expect(decodeProtectedHeader(shorter.token).typ).toBe("rte-refresh+jwt");
  });

  it("records the cluster key that vouched for the source token, and refuses an identity that names none", async () => {
    const c = await mintDerived("refresh", key, registry, identity, NOW_S + 600, NOW);
    expect((decodeJwt(c.token).rte as { source: { key: string } }).source.key).toBe(CLUSTER_KEY);
    await expect(
      mintDerived("exchange", key, registry, { ...identity, clusterKey: undefined }, NOW_S + 600, NOW),
    ).rejects.toMatchObject({
      code: "unknown_key",
      message: "the credential names no cluster key, so no exchange credential can be derived from it",
    });
  });

  it("refuses to derive from an expired credential", async () => {
    await expect(
      mintDerived("exchange", key, registry, { ...identity, expiresAt: NOW_S }, NOW_S + 60, NOW),
    ).rejects.toMatchObject({
      code: "token_expired",
    });
  });
});

describe("verifyDerived", () => {
  it("round-trips the identity; times and jti describe the derived credential", async () => {
    const c = await mintDerived("exchange", key, registry, identity, NOW_S + 1800, NOW);
    const got = await verifyDerived("exchange", key, registry, c.token, CLUSTERS, NOW + 1000);
    expect(got).toEqual({
      ...identity,
      expiresAt: NOW_S + 1800,
      issuedAt: NOW_S,
      tokenId: c.jti,
      // Which of the registry's keys verified it (a cached identity is dropped once that key is unpublished).
      verificationKey: `rte:${key.kid}`,
    });
  });

  it("omits absent pod, node and annotations", async () => {
    const bare: Identity = {
      ...identity,
      pod: undefined,
      node: undefined,
      annotations: undefined,
      tokenId: undefined,
    };
    const c = await mintDerived("exchange", key, registry, bare, NOW_S + 600, NOW);
    expect(Object.keys(decodeJwt(c.token).rte as object).sort()).toEqual([
      "cluster",
      "namespace",
      "serviceAccount",
      "source",
    ]);
    const got = await verifyDerived("exchange", key, registry, c.token, CLUSTERS, NOW);
    expect(got).toMatchObject({ pod: undefined, node: undefined, annotations: undefined });
  });

  it.each([
    [
      "expired (past exp + leeway)",
      async () => (await mintDerived("exchange", key, registry, identity, NOW_S + 60, NOW)).token,
      NOW + (61 + DERIVED_CLOCK_SKEW_SECONDS) * 1000,
      "token_expired",
      "exchange credential has expired",
    ],
    [
      "not yet valid",
      () => sign(validClaims({ nbf: NOW_S + 600 })),
      NOW,
      "token_not_yet_valid",
      'exchange credential is not valid yet ("nbf" is in the future)',
    ],
    [
      "iat in the future",
      () => sign(validClaims({ iat: NOW_S + 600, nbf: NOW_S })),
      NOW,
      "token_not_yet_valid",
      'exchange credential is not valid yet ("iat" is in the future)',
    ],
    [
      "the registry's own issuer",
      () => sign(validClaims({ iss: "registry-token-exchange" })),
      NOW,
      "invalid_issuer",
      'exchange credential was not issued for this registry ("iss" differs)',
    ],
    [
      "the bare service as audience",
      () => sign(validClaims({ aud: "registry.example.com" })),
      NOW,
      "invalid_audience",
      "exchange credential was issued for another registry service",
    ],
    [
      "a refresh token's typ",
      () => sign(validClaims(), { typ: "rte-refresh+jwt" }),
      NOW,
      "malformed_token",
      'exchange credential has the wrong "typ" header (want "rte-exchange+jwt")',
    ],
    [
      "typ JWT (a registry token)",
      () => sign(validClaims(), { typ: "JWT" }),
      NOW,
      "malformed_token",
      'exchange credential has the wrong "typ" header (want "rte-exchange+jwt")',
    ],
    [
      "no jti",
      () => sign(validClaims({ jti: undefined })),
      NOW,
      "missing_claim",
      'exchange credential has no "jti" claim',
    ],
    [
      "no identity claim",
      () => sign(validClaims({ rte: undefined })),
      NOW,
      "missing_claim",
      'exchange credential has no valid "rte" identity claim',
    ],
    [
      "no cluster key that vouched for the source token (minted before it was recorded)",
      () =>
        sign(
          validClaims({
            rte: {
              ...(validClaims().rte as object),
              source: { aud: ["registry-token-exchange"], iat: NOW_S, exp: NOW_S + 600 },
            },
          }),
        ),
      NOW,
      "missing_claim",
      'exchange credential has no valid "rte" identity claim',
    ],
    [
      "sub disagrees with the identity",
      () => sign(validClaims({ sub: "system:serviceaccount:team-b:builder" })),
      NOW,
      "invalid_subject",
      'exchange credential "sub" does not agree with its identity claim',
    ],
    [
      "a cluster no longer trusted",
      () => sign(validClaims({ rte: { ...(validClaims().rte as object), cluster: "gone" } })),
      NOW,
      "unknown_issuer",
      'exchange credential names cluster "gone", which is no longer trusted',
    ],
    [
      "not a JWS",
      async () => "not-a-jws",
      NOW,
      "malformed_token",
      "exchange credential is not a compact JWS",
    ],
  ] as Array<[string, () => Promise<string>, number, string, string]>)(
    "%s -> %s",
    async (_name, make, at, code, message) => {
      const token = await make();
      await expect(verifyDerived("exchange", key, registry, token, CLUSTERS, at)).rejects.toMatchObject({
        code,
        message,
      });
    },
  );

  it("accepts only the key's own algorithm (HS256 with any secret is refused)", async () => {
    const hs = await new SignJWT(validClaims())
      .setProtectedHeader({ alg: "HS256", typ: "rte-exchange+jwt" })
      .sign(new TextEncoder().encode("a-shared-secret-that-means-nothing"));
    await expect(verifyDerived("exchange", key, registry, hs, CLUSTERS, NOW)).rejects.toMatchObject({
      code: "unsupported_algorithm",
    });
  });

  it.each([
    ["no alg", { typ: "rte-exchange+jwt" }, "malformed_token", "exchange credential is not a valid JWS"],
    [
      "alg none",
      { alg: "none", typ: "rte-exchange+jwt" },
      "unsupported_algorithm",
      'exchange credential "alg" is not allowed',
    ],
    [
      "alg a number",
      { alg: 1, typ: "rte-exchange+jwt" },
      "malformed_token",
      "exchange credential is not a valid JWS",
    ],
  ])("a header with %s is refused before any signature check", async (_name, header, code, message) => {
    const real = (await mintDerived("exchange", key, registry, identity, NOW_S + 600, NOW)).token;
    const [, payload, signature] = real.split(".");
    const forged = `${Buffer.from(JSON.stringify(header)).toString("base64url")}.${payload}.${signature}`;
    await expect(verifyDerived("exchange", key, registry, forged, CLUSTERS, NOW)).rejects.toMatchObject({
      code,
      message,
    });
  });

  it("a credential signed by another key is refused", async () => {
    const stranger = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
    const forged = await new SignJWT(validClaims())
      .setProtectedHeader({ alg: "ES256", typ: "rte-exchange+jwt", kid: key.kid })
      .sign(stranger);
    await expect(verifyDerived("exchange", key, registry, forged, CLUSTERS, NOW)).rejects.toMatchObject({
      code: "invalid_signature",
    });
  });

  it("is bound to one service: another registry with the same key and issuer refuses it", async () => {
    const c = await mintDerived("exchange", key, registry, identity, NOW_S + 600, NOW);
    await expect(verifyDerived("exchange", key, other, c.token, CLUSTERS, NOW)).rejects.toMatchObject({
      code: "invalid_audience",
    });
  });
});

describe("derivedKindOf: the unverified typ only picks a verifier", () => {
  it("routes by typ and nothing else", async () => {
    const exchange = await mintDerived("exchange", key, registry, identity, NOW_S + 600, NOW);
    const refresh = await mintDerived("refresh", key, registry, identity, NOW_S + 600, NOW);
    expect(derivedKindOf(exchange.token)).toBe("exchange");
    expect(derivedKindOf(refresh.token)).toBe("refresh");
    const saLike = await new SignJWT({ sub: "x" })
      .setProtectedHeader({ alg: "ES256", kid: "k" })
      .sign(key.privateKey);
    expect(derivedKindOf(saLike)).toBeUndefined();
    expect(derivedKindOf("garbage")).toBeUndefined();
    expect(derivedKindOf("e30.e30.")).toBeUndefined();
    expect(derivedKindOf("!!!.e30.c2ln")).toBeUndefined();
  });

  it("a forged typ sends a token to a verifier that refuses it", async () => {
    const stranger = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
    const forged = await new SignJWT(validClaims())
      .setProtectedHeader({ alg: "ES256", typ: "rte-exchange+jwt" })
      .sign(stranger);
    expect(derivedKindOf(forged)).toBe("exchange");
    await expect(verifyDerived("exchange", key, registry, forged, CLUSTERS, NOW)).rejects.toMatchObject({
      code: "invalid_signature",
    });
  });
});
