/**
 * Kubernetes' service-account key ID (src/jose/kid.ts) against the published vectors of kubernetes
 * `pkg/serviceaccount/jwt_test.go` (rsaPublicKey/rsaKeyID, ecdsaPublicKey/ecdsaKeyID, and the EC private
 * key whose public half is ecdsaPublicKey): base64url(SHA-256(DER SPKI)), no padding.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync } from "node:crypto";
import { calculateJwkThumbprint, type JWK } from "jose";
import { describe, expect, it } from "vitest";
import { kubernetesKeyId } from "../../src/jose/kid.js";
import { LocalIssuer } from "../../src/local/issuer.js";

// kubernetes/kubernetes pkg/serviceaccount/jwt_test.go: rsaPublicKey, rsaKeyID.
const K8S_RSA_PUBLIC = `-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA249XwEo9k4tM8fMxV7zx
OhcrP+WvXn917koM5Qr2ZXs4vo26e4ytdlrV0bQ9SlcLpQVSYjIxNfhTZdDt+ecI
zshKuv1gKIxbbLQMOuK1eA/4HALyEkFgmS/tleLJrhc65tKPMGD+pKQ/xhmzRuCG
51RoiMgbQxaCyYxGfNLpLAZK9L0Tctv9a0mJmGIYnIOQM4kC1A1I1n3EsXMWmeJU
j7OTh/AjjCnMnkgvKT2tpKxYQ59PgDgU8Ssc7RDSmSkLxnrv+OrN80j6xrw0OjEi
B4Ycr0PqfzZcvy8efTtFQ/Jnc4Bp1zUtFXt7+QeevePtQ2EcyELXE0i63T1CujRM
WwIDAQAB
-----END PUBLIC KEY-----
`;
const K8S_RSA_KID = "JHJehTTTZlsspKHT-GaJxK7Kd1NQgZJu3fyK6K_QDYU";

// kubernetes/kubernetes pkg/serviceaccount/jwt_test.go: ecdsaPrivateKey (a published test key),
// ecdsaPublicKey, ecdsaKeyID.
const K8S_EC_PRIVATE = `-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIEZmTmUhuanLjPA2CLquXivuwBDHTt5XYwgIr/kA1LtRoAoGCCqGSM49
AwEHoUQDQgAEH6cuzP8XuD5wal6wf9M6xDljTOPLX2i8uIp/C/ASqiIGUeeKQtX0
/IR3qCXyThP/dbCiHrF3v1cuhBOHY8CLVg==
-----END EC PRIVATE KEY-----`;
const K8S_EC_PUBLIC = `-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEH6cuzP8XuD5wal6wf9M6xDljTOPL
X2i8uIp/C/ASqiIGUeeKQtX0/IR3qCXyThP/dbCiHrF3v1cuhBOHY8CLVg==
-----END PUBLIC KEY-----`;
const K8S_EC_KID = "SoABiieYuNx4UdqYvZRVeuC6SihxgLrhLy9peHMHpTc";

describe("kubernetesKeyId: published vectors", () => {
  it.each([
    ["RSA 2048 public key", K8S_RSA_PUBLIC, K8S_RSA_KID],
    ["ECDSA P-256 public key", K8S_EC_PUBLIC, K8S_EC_KID],
  ])("%s", (_name, pem, kid) => {
    expect(kubernetesKeyId(createPublicKey(pem))).toBe(kid);
  });

  it("a private key gives the kid of its public half", () => {
    expect(kubernetesKeyId(createPrivateKey(K8S_EC_PRIVATE))).toBe(K8S_EC_KID);
  });

  it("the same key imported from its JWK gives the same kid", () => {
    const jwk = createPublicKey(K8S_RSA_PUBLIC).export({ format: "jwk" });
    expect(kubernetesKeyId(createPublicKey({ key: jwk, format: "jwk" }))).toBe(K8S_RSA_KID);
  });

  it("is 43 base64url characters without padding", () => {
    const kid = kubernetesKeyId(generateKeyPairSync("ec", { namedCurve: "P-384" }).publicKey);
    expect(kid).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it("is not the RFC 7638 thumbprint (a different hash input)", async () => {
    const jwk = createPublicKey(K8S_RSA_PUBLIC).export({ format: "jwk" }) as JWK;
    expect(await calculateJwkThumbprint(jwk, "sha256")).not.toBe(K8S_RSA_KID);
  });

  it("distinct P-256 keys get distinct kids (distribution#4683)", () => {
    const a = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey;
    const b = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey;
    expect(kubernetesKeyId(a)).not.toBe(kubernetesKeyId(b));
  });
});

describe("LocalIssuer publishes Kubernetes kids", () => {
  it("JWKS kid, token header kid and kubernetesKeyId agree, for every published key", async () => {
    const issuer = new LocalIssuer("https://issuer.test");
    issuer.rotate();
    const jwks = issuer.jwks();
    expect(jwks.keys).toHaveLength(2);
    expect(jwks.keys.map((k) => k.kid)).toEqual(issuer.keys.map((k) => kubernetesKeyId(k)));
    expect(jwks.keys[0]).toMatchObject({ use: "sig", kty: "RSA", alg: "RS256", kid: issuer.kid });
  });
});
