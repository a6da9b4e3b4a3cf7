/**
 * Kubernetes' key ID for service-account signing keys.
 * Source: kubernetes `pkg/serviceaccount/jwt.go` keyIDFromPublicKey: base64url (no padding) of SHA-256
 * over the DER-encoded SubjectPublicKeyInfo of the public key.
 */
import { createHash, createPublicKey, type KeyObject } from "node:crypto";

/**
 * Computes the `kid` kube-apiserver puts in service-account tokens and its JWKS.
 * @param key a public or private key (the public half is used)
 * @returns 43-character base64url string
 */
export function kubernetesKeyId(key: KeyObject): string {
  const pub = key.type === "private" ? createPublicKey(key) : key;
  const der = pub.export({ type: "spki", format: "der" });
  return createHash("sha256").update(der).digest("base64url");
}
