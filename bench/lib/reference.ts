/**
 * The irreducible work of one exchange, for the two references: verify a service-account token with
 * jose (the same options the service uses) and sign a registry token with jose (the same header and
 * claims as `src/token/mint.ts`). No policy, no cache, no logging.
 */
import { createPublicKey, type JsonWebKeyInput, type KeyObject, randomUUID } from "node:crypto";
import { decodeProtectedHeader, jwtVerify, SignJWT } from "jose";
import { loadSigningKey, type SigningKey } from "../../src/jose/signing-key.js";

/** What a reference needs to know, passed to its process as a JSON file. */
export interface ReferenceInput {
  issuerUrl: string;
  audience: string;
  keys: { keyFile: string; certFile: string };
  /** Reference server: listen port on 127.0.0.1. */
  port?: number;
  /** Crypto floor: a file of tokens, one per line, and how many exchanges at what concurrency. */
  tokensFile?: string;
  amount?: number;
  concurrency?: number;
}

/** Loaded verification and signing keys. */
export interface ReferenceKeys {
  verify: Map<string, KeyObject>;
  sign: SigningKey;
  input: ReferenceInput;
}

/** Fetches the issuer's JWKS once (as the service does at start) and loads the signing key. */
export async function loadReferenceKeys(input: ReferenceInput): Promise<ReferenceKeys> {
  const res = await fetch(`${input.issuerUrl}/openid/v1/jwks`);
  const jwks = (await res.json()) as { keys: Array<Record<string, unknown>> };
  const verify = new Map<string, KeyObject>();
  for (const jwk of jwks.keys) {
    verify.set(String(jwk.kid), createPublicKey({ key: jwk, format: "jwk" } as JsonWebKeyInput));
  }
  return { verify, sign: loadSigningKey(input.keys.keyFile, input.keys.certFile, "reference"), input };
}

/**
 * Verifies `token` and signs a registry token granting `repository` exactly `actions`.
 * @throws whatever jose throws for an invalid token
 */
export async function verifyAndSign(
  keys: ReferenceKeys,
  token: string,
  repository: string,
  actions: string[],
): Promise<{ token: string; iat: number; exp: number }> {
  const { kid } = decodeProtectedHeader(token);
  const key = keys.verify.get(String(kid));
  if (!key) throw new Error("unknown kid");
  const { payload } = await jwtVerify(token, key, {
    algorithms: ["RS256", "ES256"],
    issuer: keys.input.issuerUrl,
    audience: [keys.input.audience],
    clockTolerance: 30,
    requiredClaims: ["exp", "iat", "sub", "aud"],
    currentDate: new Date(),
  });
  const iat = Math.floor(Date.now() / 1000);
  const exp = Math.min(iat + 300, payload.exp!);
  const k = keys.sign;
  const signed = await new SignJWT({ access: [{ type: "repository", name: repository, actions }] })
    .setProtectedHeader({ alg: k.alg, typ: "JWT", kid: k.kid, x5c: k.x5c })
    .setIssuer("registry-token-exchange")
    .setSubject(payload.sub!)
    .setAudience(keys.input.audience)
    .setIssuedAt(iat)
    .setNotBefore(iat - 5)
    .setExpirationTime(exp)
    .setJti(randomUUID())
    .sign(k.privateKey);
  return { token: signed, iat, exp };
}
