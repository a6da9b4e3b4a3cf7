/**
 * Compact JWS (RFC 7515 §7.1) signing with node:crypto's one-shot `sign`, for the tokens this service
 * issues (registry tokens, exchange credentials, refresh tokens). ES signatures are `r || s` (RFC 7518
 * §3.4). Runs on the calling thread; see `jose/jws.ts` for why node:crypto and not jose.
 */
import { type KeyObject, sign } from "node:crypto";
import { ALGORITHMS, type JwsAlgorithm } from "./jws.js";

/** base64url of the JSON of `value`. */
export function base64urlJson(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString("base64url");
}

/**
 * Signs a compact JWS with node:crypto (synchronous).
 * @param encodedHeader the protected header, already base64url JSON (callers cache it per key); its
 *   `alg` must be `alg`
 * @param payload the claims, serialised here
 * @param privateKey a key of the type (and curve) `alg` needs
 * @throws {Error} from node:crypto when the key does not fit `alg`
 */
export function signCompactJws(
  encodedHeader: string,
  payload: Record<string, unknown>,
  alg: JwsAlgorithm,
  privateKey: KeyObject,
): string {
  const spec = ALGORITHMS[alg];
  const input = `${encodedHeader}.${base64urlJson(payload)}`;
  const signature = sign(
    spec.hash,
    Buffer.from(input),
    spec.keyType === "ec" ? { key: privateKey, dsaEncoding: "ieee-p1363" } : privateKey,
  );
  return `${input}.${signature.toString("base64url")}`;
}
