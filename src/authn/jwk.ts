/**
 * JWK import (RFC 7517) for service-account verification keys: which keys of a JWKS are usable (RSA of
 * at least 2048 bits or EC, public, for signatures) and which algorithm each may verify (RFC 7518 §3.1).
 */
import { createPublicKey, type JsonWebKeyInput, type KeyObject } from "node:crypto";
import { kubernetesKeyId } from "../jose/kid.js";

/** A usable verification key from a JWKS. */
export interface VerificationKey {
  /** The JWK `kid` (may be empty when the JWKS has none). */
  kid: string;
  /** `RSA` or `EC`. */
  kty: "RSA" | "EC";
  /** EC curve (`P-256`, `P-384`, `P-521`) for EC keys. */
  crv?: string | undefined;
  /** The JWK `alg` if the JWKS declared one. */
  alg?: string | undefined;
  /** The imported public key. */
  key: KeyObject;
  /**
   * base64url SHA-256 of the key's DER SubjectPublicKeyInfo (what Kubernetes uses as the `kid`): names
   * the key independently of the JWKS's `kid`, so a cached identity can be tied to the key that verified it.
   */
  fingerprint?: string | undefined;
}

const CURVE_FOR_ALG: Record<string, string> = { ES256: "P-256", ES384: "P-384", ES512: "P-521" };

/**
 * True when the JWK `key` can verify a JWS with algorithm `alg` (RFC 7518 §3.1): by its declared `alg`,
 * `kty` and `crv`. (`keyFitsAlgorithm` in `jose/jws.ts` checks an imported key object instead.)
 */
export function jwkFitsAlgorithm(key: VerificationKey, alg: string): boolean {
  if (key.alg !== undefined && key.alg !== alg) return false;
  if (alg.startsWith("RS") || alg.startsWith("PS")) return key.kty === "RSA";
  if (alg.startsWith("ES")) return key.kty === "EC" && key.crv === CURVE_FOR_ALG[alg];
  return false;
}

/**
 * Parses a JWKS document into usable keys. Keys that are malformed, private, symmetric, or not for
 * signatures are skipped (reported through `onSkip`) rather than poisoning the set.
 * @throws {Error} when the document is not `{ keys: [...] }`
 */
export function parseJwks(
  doc: unknown,
  onSkip: (index: number, reason: string) => void = () => {},
): VerificationKey[] {
  if (doc === null || typeof doc !== "object" || !Array.isArray((doc as { keys?: unknown }).keys)) {
    throw new Error('JWKS is not an object with a "keys" array');
  }
  const out: VerificationKey[] = [];
  for (const [i, jwk] of (doc as { keys: unknown[] }).keys.entries()) {
    const result = importJwk(jwk);
    if (typeof result === "string") onSkip(i, result);
    else out.push(result);
  }
  return out;
}

/** Imports one JWK, or returns why it is unusable. */
function importJwk(jwk: unknown): VerificationKey | string {
  if (jwk === null || typeof jwk !== "object") return "not an object";
  const k = jwk as Record<string, unknown>;
  if (k.kty !== "RSA" && k.kty !== "EC") return `unsupported kty ${JSON.stringify(k.kty)}`;
  if (k.use !== undefined && k.use !== "sig") return `use is ${JSON.stringify(k.use)}, not "sig"`;
  if (k.d !== undefined) return "contains private key material";
  if (k.kid !== undefined && typeof k.kid !== "string") return "kid is not a string";
  if (k.alg !== undefined && typeof k.alg !== "string") return "alg is not a string";
  let key: KeyObject;
  try {
    key = createPublicKey({ key: k, format: "jwk" } as JsonWebKeyInput);
  } catch (err) {
    return `cannot import: ${(err as Error).message}`;
  }
  if (k.kty === "RSA" && (key.asymmetricKeyDetails?.modulusLength ?? 0) < 2048)
    return "RSA key shorter than 2048 bits";
  return {
    kid: (k.kid as string | undefined) ?? "",
    kty: k.kty,
    crv: typeof k.crv === "string" ? k.crv : undefined,
    alg: k.alg as string | undefined,
    key,
    fingerprint: kubernetesKeyId(key),
  };
}
