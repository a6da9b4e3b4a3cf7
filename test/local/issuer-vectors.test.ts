/**
 * The local issuer (src/local/issuer.ts) against what a real kube-apiserver v1.36.2 served
 * (test/fixtures/kubernetes-1.36/): the discovery document byte for byte; the JWKS and the token header
 * and claims with the same fields in the same order (values differ: other keys, uids, times), so that
 * what passes against the local issuer passes against a real cluster.
 */
import { createPublicKey, type JsonWebKey } from "node:crypto";
import { describe, expect, it } from "vitest";
import { kubernetesKeyId } from "../../src/jose/kid.js";
import { LocalIssuer } from "../../src/local/issuer.js";
import { K8S_ISSUER, k8sFixture, k8sJson } from "../helpers/apiserver.js";

/** `shape` with every leaf value replaced by the value at the same path in `values` (keys keep `shape`'s order). */
function withValues(shape: unknown, values: unknown): unknown {
  if (Array.isArray(shape))
    return (shape as unknown[]).map((v, i) => withValues(v, (values as unknown[])[i]));
  if (shape !== null && typeof shape === "object") {
    return Object.fromEntries(
      Object.entries(shape as Record<string, unknown>).map(([k, v]) => [
        k,
        withValues(v, (values as Record<string, unknown>)?.[k]),
      ]),
    );
  }
  return values;
}

const part = (jwt: string, i: number) => Buffer.from(jwt.split(".")[i]!, "base64url").toString("utf8");

describe("local issuer vs kube-apiserver v1.36.2", () => {
  const local = new LocalIssuer(K8S_ISSUER);

  it("serves the discovery document byte for byte", () => {
    expect(JSON.stringify(local.discovery())).toBe(k8sFixture("discovery.json").trim());
  });

  it("serves JWKS keys with the same fields in the same order, kid = base64url(SHA-256(DER SPKI))", () => {
    const real = k8sJson<{ keys: JsonWebKey[] }>("jwks.json");
    expect(JSON.stringify(withValues(local.jwks(), real))).toBe(k8sFixture("jwks.json").trim());
    const realKey = real.keys[0]!;
    expect(kubernetesKeyId(createPublicKey({ key: realKey, format: "jwk" }))).toBe(realKey.kid);
  });

  for (const [file, request] of [
    ["sa-token-pod-bound.jwt", { podName: "builder-pod", nodeName: "interop-node-1" }],
    ["sa-token-registry-audience.jwt", { podName: null }],
    ["sa-token-credential-provider-audience.jwt", { podName: "vector-pod", nodeName: "interop-node-1" }],
  ] as const) {
    it(`mints tokens laid out like ${file} (header and claims, same order), exp - iat = 3600, nbf = iat`, async () => {
      const realToken = k8sFixture(file).trim();
      const realClaims = JSON.parse(part(realToken, 1)) as { iat: number; aud: string[] };
      const token = await local.mint({
        namespace: "team-a",
        serviceAccount: "builder",
        audiences: realClaims.aud,
        nowMs: realClaims.iat * 1000,
        ...request,
      });
      expect(JSON.stringify(withValues(JSON.parse(part(token, 0)), JSON.parse(part(realToken, 0))))).toBe(
        part(realToken, 0),
      );
      expect(JSON.stringify(withValues(JSON.parse(part(token, 1)), realClaims))).toBe(part(realToken, 1));
      const claims = JSON.parse(part(token, 1)) as { iat: number; exp: number; nbf: number };
      expect([claims.exp - claims.iat, claims.nbf]).toEqual([3600, claims.iat]);
    });
  }
});
