/**
 * Minting Docker registry bearer tokens (distribution docs/spec/auth/jwt.md, registry/auth/token/token.go).
 *
 * Header `{alg, typ: "JWT", kid, x5c}`; claims `iss`, `sub`, `aud` (a STRING: v2.8 rejects an array),
 * `exp`, `nbf`, `iat` (integer seconds), `jti`, `access: [{type, name, actions}]`.
 * `nbf` is set a few seconds in the past against clock skew between us and the registry (docker_auth#41).
 */
import { randomUUID } from "node:crypto";
import type { Action } from "../config/schema.js";
import { base64urlJson, signCompactJws } from "../jose/sign.js";
import type { SigningKey } from "../jose/signing-key.js";

/** One entry of the `access` claim. */
export interface AccessEntry {
  /** `repository` or `registry`. */
  type: string;
  /** Resource name, exactly as requested. */
  name: string;
  /** Granted actions, possibly empty. */
  actions: Action[];
}

/** What to mint. */
export interface MintRequest {
  /** `iss` claim: the registry's `auth.token.issuer`. */
  issuer: string;
  /** `aud` claim: the registry `service`. */
  audience: string;
  /** `sub` claim. */
  subject: string;
  /** The `access` claim. */
  access: AccessEntry[];
  /** Wanted lifetime, seconds. */
  ttlSeconds: number;
  /** Hard upper bound for `exp` (the presented credential's own `exp`), epoch seconds. */
  notAfter: number;
  /** Current time, epoch milliseconds. */
  nowMs: number;
}

/** A minted registry token. */
export interface MintedToken {
  /** The compact JWS. */
  token: string;
  /** `jti` (safe to log). */
  jti: string;
  /** `iat`, epoch seconds. */
  issuedAt: number;
  /** `exp`, epoch seconds. */
  expiresAt: number;
}

/** Seconds `nbf` is set before `iat`. */
export const NOT_BEFORE_SKEW_SECONDS = 5;

/**
 * The time claims of every token this service signs, epoch seconds: `iat`, `nbf`
 * ({@link NOT_BEFORE_SKEW_SECONDS} before `iat`, against clock skew at the verifier) and `exp`.
 */
export function timeClaims(iat: number, exp: number): { iat: number; nbf: number; exp: number } {
  return { iat, nbf: iat - NOT_BEFORE_SKEW_SECONDS, exp };
}

/** The encoded protected header of each key: the same for every token it signs. */
const encodedHeaders = new WeakMap<SigningKey, string>();

/**
 * Signs a registry token with `key`. The lifetime is `ttlSeconds`, cut to `notAfter`.
 * @returns the token and its timestamps (`expiresAt - issuedAt` is the lifetime to report as `expires_in`)
 */
export function mintRegistryToken(key: SigningKey, req: MintRequest): MintedToken {
  const iat = Math.floor(req.nowMs / 1000);
  const exp = Math.floor(Math.min(iat + req.ttlSeconds, req.notAfter));
  const jti = randomUUID();
  // Signed with node:crypto (jose/sign.ts): jose 6 signs through WebCrypto, which hands each signature to
  // the libuv thread pool and costs 2.4x the CPU (bench/README.md).
  let header = encodedHeaders.get(key);
  if (header === undefined) {
    header = base64urlJson({ alg: key.alg, typ: "JWT", kid: key.kid, x5c: key.x5c });
    encodedHeaders.set(key, header);
  }
  const token = signCompactJws(
    header,
    {
      access: req.access,
      iss: req.issuer,
      sub: req.subject,
      aud: req.audience,
      ...timeClaims(iat, exp),
      jti,
    },
    key.alg,
    key.privateKey,
  );
  return { token, jti, issuedAt: iat, expiresAt: exp };
}
