/**
 * Key IDs, both SHA-256 over the DER SubjectPublicKeyInfo of the public key:
 * - Kubernetes' `kid` for service-account signing keys (kubernetes `pkg/serviceaccount/jwt.go`
 *   keyIDFromPublicKey): base64url without padding;
 * - the libtrust key ID that distribution v2.8 uses to find a token's signing key among the certificates
 *   of its `rootcertbundle` (docker/libtrust `util.go` keyIDFromCryptoKey): the first 240 bits (30
 *   bytes), RFC 4648 base32 without padding, in 12 groups of 4 characters joined by `:`. An RFC 7638
 *   thumbprint is NOT accepted by v2.8 ("token signed by untrusted key").
 */
import { createHash, createPublicKey, type KeyObject } from "node:crypto";
import { base32 } from "rfc4648";

/**
 * Computes the `kid` kube-apiserver puts in service-account tokens and its JWKS.
 * @param key a public or private key (the public half is used)
 * @returns 43-character base64url string
 */
export function kubernetesKeyId(key: KeyObject): string {
  return createHash("sha256").update(spki(key)).digest("base64url");
}

/**
 * Computes the libtrust key ID of a key.
 * @param key a public or private key (the public half is used)
 * @returns e.g. `MPYS:7FJ3:H6IZ:...` (59 characters)
 */
export function libtrustKeyId(key: KeyObject): string {
  const digest = createHash("sha256").update(spki(key)).digest().subarray(0, 30);
  const b32 = base32.stringify(digest, { pad: false });
  return b32.match(/.{4}/g)!.join(":");
}

function spki(key: KeyObject): Buffer {
  const pub = key.type === "private" ? createPublicKey(key) : key;
  return pub.export({ type: "spki", format: "der" });
}
