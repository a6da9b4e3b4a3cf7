/**
 * Compact JWS (RFC 7515 §7.1) verification with node:crypto, for the JWTs this service verifies on every
 * request (service-account tokens, its own exchange credentials and refresh tokens). Signing is in
 * `jose/sign.ts`.
 *
 * Why not jose here: jose 6 signs and verifies only through WebCrypto, which hands every operation to the
 * libuv thread pool and back; node:crypto's one-shot `sign`/`verify` run on the calling thread and cost
 * about half the CPU (RS256 verify 21 vs 40 us, ES256 sign 25 vs 61 us; bench/README.md). Everything
 * else about a token (which key, which claims) is decided by the callers; this module only does what
 * RFC 7515 / 7518 / 7519 fix:
 * - the algorithms are RS256/384/512 (RSASSA-PKCS1-v1_5, RFC 7518 §3.3) and ES256/384/512 (ECDSA over
 *   P-256/P-384/P-521 with `r || s` signatures, §3.4), each only with a key of its own type and curve;
 * - header and payload must be base64url JSON objects, and a `crit` header is refused (RFC 7515 §4.1.11:
 *   this implementation understands no extension);
 * - registered claims are checked as RFC 7519 §4.1 says, with a clock tolerance in seconds:
 *   `exp` <= now - tolerance is expired, `nbf` > now + tolerance is not yet valid.
 */
import { type KeyObject, verify } from "node:crypto";

/** The JWS algorithms this service signs and verifies. */
export type JwsAlgorithm = "RS256" | "RS384" | "RS512" | "ES256" | "ES384" | "ES512";

/** How an algorithm signs: hash, key type and (EC) curve and signature length. */
export interface AlgorithmSpec {
  hash: string;
  keyType: "rsa" | "ec";
  /** OpenSSL name of the curve (`KeyObject.asymmetricKeyDetails.namedCurve`), EC only. */
  curve?: string;
  /** Length of an `r || s` signature, bytes (EC only). */
  signatureLength?: number;
}

/** The algorithms of {@link JwsAlgorithm} (RFC 7518 §3.3, §3.4). */
export const ALGORITHMS: Readonly<Record<JwsAlgorithm, AlgorithmSpec>> = {
  RS256: { hash: "sha256", keyType: "rsa" },
  RS384: { hash: "sha384", keyType: "rsa" },
  RS512: { hash: "sha512", keyType: "rsa" },
  ES256: { hash: "sha256", keyType: "ec", curve: "prime256v1", signatureLength: 64 },
  ES384: { hash: "sha384", keyType: "ec", curve: "secp384r1", signatureLength: 96 },
  ES512: { hash: "sha512", keyType: "ec", curve: "secp521r1", signatureLength: 132 },
};

/** True when `alg` is one of {@link JwsAlgorithm}. */
export function isJwsAlgorithm(alg: unknown): alg is JwsAlgorithm {
  return typeof alg === "string" && Object.hasOwn(ALGORITHMS, alg);
}

/** Why a string is not a usable compact JWS: the caller words the error in its own protocol's terms. */
export class JwsFormatError extends Error {
  /**
   * @param reason `shape`: not three base64url parts; `json`: header or payload is not a JSON object;
   *   `crit`: the header has `crit`
   */
  constructor(
    readonly reason: "shape" | "json" | "crit",
    message: string,
  ) {
    super(message);
  }
}

/** A compact JWS split and decoded, not yet verified. */
export interface DecodedJws {
  /** The protected header (a JSON object). */
  header: Record<string, unknown>;
  /** The payload, a JWT claims set (a JSON object). */
  payload: Record<string, unknown>;
  /** `BASE64URL(header) || '.' || BASE64URL(payload)`: what the signature covers. */
  signingInput: string;
  /** The decoded signature. */
  signature: Buffer;
}

const COMPACT = /^([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]*)$/;

function jsonObject(part: string, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
  } catch {
    throw new JwsFormatError("json", `${what} is not base64url JSON`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new JwsFormatError("json", `${what} is not a JSON object`);
  }
  return value as Record<string, unknown>;
}

/**
 * Splits and decodes a compact JWS. Verifies nothing.
 * @throws {JwsFormatError} when it is not three base64url parts, when header or payload is not a JSON
 *   object, or when the header has `crit`
 */
export function decodeCompactJws(token: string): DecodedJws {
  const m = COMPACT.exec(token);
  if (!m) throw new JwsFormatError("shape", "not a compact JWS (expected header.payload.signature)");
  const header = jsonObject(m[1]!, "header");
  if (header.crit !== undefined) {
    throw new JwsFormatError("crit", 'header has "crit" (no extension is supported)');
  }
  return {
    header,
    payload: jsonObject(m[2]!, "payload"),
    signingInput: `${m[1]}.${m[2]}`,
    signature: Buffer.from(m[3]!, "base64url"),
  };
}

/** True when `key` is of the type (and, for EC, the curve) that `alg` needs. */
export function keyFitsAlgorithm(key: KeyObject, alg: JwsAlgorithm): boolean {
  const spec = ALGORITHMS[alg];
  if (key.asymmetricKeyType !== spec.keyType) return false;
  return spec.curve === undefined || key.asymmetricKeyDetails?.namedCurve === spec.curve;
}

/**
 * Whether `jws`'s signature verifies under `alg` with the public `key`. False (never an exception) for a
 * key of the wrong type or curve, a signature of the wrong length, or any error from node:crypto.
 * Synchronous: runs on the calling thread.
 */
export function verifyJwsSignature(jws: DecodedJws, alg: JwsAlgorithm, key: KeyObject): boolean {
  const spec = ALGORITHMS[alg];
  if (!keyFitsAlgorithm(key, alg)) return false;
  if (spec.signatureLength !== undefined && jws.signature.length !== spec.signatureLength) return false;
  try {
    return verify(
      spec.hash,
      Buffer.from(jws.signingInput),
      spec.keyType === "ec" ? { key, dsaEncoding: "ieee-p1363" } : key,
      jws.signature,
    );
  } catch {
    return false;
  }
}

/** What {@link checkClaims} requires of a claims set. */
export interface ClaimRules {
  /** Claims that must be present, checked in this order (the first missing one is reported). */
  required: readonly string[];
  /** The exact `iss` expected. */
  issuer: string;
  /** `aud` (a string or an array) must contain at least one of these. */
  audiences: readonly string[];
  /** Clock tolerance for `exp` and `nbf`, seconds. */
  clockToleranceSeconds: number;
  /** Now, epoch seconds (whole). */
  nowSeconds: number;
}

/** The first claim that failed, and how. */
export interface ClaimFailure {
  /** The claim's name (`exp`, `aud`, ...). */
  claim: string;
  /**
   * `missing`: absent; `mismatch`: `iss` or `aud` is not an expected value; `invalid`: `exp`/`nbf`/`iat`
   * is not a number; `expired`: `exp` passed; `not_yet_valid`: `nbf` in the future.
   */
  reason: "missing" | "mismatch" | "invalid" | "expired" | "not_yet_valid";
}

/**
 * Checks the registered claims of a verified payload (RFC 7519 §4.1): presence in the order given, then
 * `iss`, `aud`, the types of `iat`/`nbf`/`exp`, `nbf` and `exp` against the clock with the tolerance.
 * @returns the first failure, or `undefined` when every check passes
 */
export function checkClaims(payload: Record<string, unknown>, rules: ClaimRules): ClaimFailure | undefined {
  for (const claim of rules.required) {
    if (!(claim in payload)) return { claim, reason: "missing" };
  }
  if (payload.iss !== rules.issuer) return { claim: "iss", reason: "mismatch" };
  const aud = payload.aud;
  const audOk =
    typeof aud === "string"
      ? rules.audiences.includes(aud)
      : Array.isArray(aud) && aud.some((a) => typeof a === "string" && rules.audiences.includes(a));
  if (!audOk) return { claim: "aud", reason: "mismatch" };
  const now = rules.nowSeconds;
  const tolerance = rules.clockToleranceSeconds;
  if (payload.iat !== undefined && typeof payload.iat !== "number")
    return { claim: "iat", reason: "invalid" };
  if (payload.nbf !== undefined) {
    if (typeof payload.nbf !== "number") return { claim: "nbf", reason: "invalid" };
    if (payload.nbf > now + tolerance) return { claim: "nbf", reason: "not_yet_valid" };
  }
  if (payload.exp !== undefined) {
    if (typeof payload.exp !== "number") return { claim: "exp", reason: "invalid" };
    if (payload.exp <= now - tolerance) return { claim: "exp", reason: "expired" };
  }
  return undefined;
}
