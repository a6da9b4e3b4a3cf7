/**
 * The irreducible work of one exchange, for the references: verify a service-account token and sign a
 * registry token with the same header and claims as `src/token/mint.ts`. No policy, no cache, no logging.
 *
 * - **bare** ({@link bareVerifyAndSign}): node:crypto one-shot `verify`/`sign` on the calling thread,
 *   keys imported once with `createPublicKey`, and only the checks no exchange may skip: the `alg`
 *   allowlist (RS256, ES256, each only with a key of its type), the `kid` lookup, the signature, `iss`,
 *   `aud`, `exp` and `nbf` with 30 s leeway. The issue-16 targets are ratios to this one.
 * - **jose** ({@link verifyAndSign}): jose 6 `jwtVerify` and `SignJWT` (WebCrypto, on the libuv thread
 *   pool), as the service did before it moved to node:crypto; the crypto floor uses it too.
 */
import { createPublicKey, type JsonWebKeyInput, type KeyObject, randomUUID, sign, verify } from "node:crypto";
import { decodeProtectedHeader, jwtVerify, SignJWT } from "jose";
import { loadSigningKey, type SigningKey } from "../../src/jose/signing-key.js";

/** Which reference: node:crypto only, or jose. */
export type ReferenceKind = "bare" | "jose";

/** What a reference needs to know, passed to its process as a JSON file. */
export interface ReferenceInput {
  /** Reference server: which verify + sign it runs (default `jose`). */
  kind?: ReferenceKind;
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

/** The algorithms the bare reference accepts, and the key each needs (RFC 7518 §3.3, §3.4). */
const BARE_ALGORITHMS: Record<string, { keyType: "rsa" | "ec"; curve?: string }> = {
  RS256: { keyType: "rsa" },
  ES256: { keyType: "ec", curve: "prime256v1" },
};

/** Keys of the bare reference: verification keys by `kid`, the signing key and its encoded header. */
export interface BareKeys {
  verify: Map<string, KeyObject>;
  /** base64url of the registry token's protected header `{alg, typ, kid, x5c}`, as `mint.ts` caches it. */
  header: string;
  signKey: KeyObject;
  input: ReferenceInput;
}

/**
 * Loads the bare reference's keys: the issuer's JWKS fetched once and imported with `createPublicKey`,
 * the registry signing key (ES256) and its encoded header.
 * @throws {Error} when the signing key is not ES256
 */
export async function loadBareKeys(input: ReferenceInput): Promise<BareKeys> {
  const { verify: keys, sign: k } = await loadReferenceKeys(input);
  if (k.alg !== "ES256") throw new Error(`the bare reference signs ES256, not ${k.alg}`);
  const header = Buffer.from(JSON.stringify({ alg: k.alg, typ: "JWT", kid: k.kid, x5c: k.x5c })).toString(
    "base64url",
  );
  return { verify: keys, header, signKey: k.privateKey, input };
}

/** Leeway for `exp` and `nbf`, seconds (the service's default `clockSkewSeconds`). */
const LEEWAY_SECONDS = 30;

function jsonPart(part: string): Record<string, unknown> {
  const value: unknown = JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw new Error("not an object");
  return value as Record<string, unknown>;
}

/**
 * Verifies `token` with node:crypto (alg allowlist, `kid`, key type, signature, `iss`, `aud`, `exp` and
 * `nbf` with {@link LEEWAY_SECONDS}) and signs an ES256 registry token granting `repository` exactly
 * `actions`, with the header and claims of `mintRegistryToken` (`src/token/mint.ts`). Synchronous.
 * @throws {Error} for any invalid token
 */
export function bareVerifyAndSign(
  keys: BareKeys,
  token: string,
  repository: string,
  actions: string[],
): { token: string; iat: number; exp: number } {
  const parts = token.split(".");
  if (parts.length !== 3) throw new Error("not a compact JWS");
  const header = jsonPart(parts[0]!);
  const spec = typeof header.alg === "string" ? BARE_ALGORITHMS[header.alg] : undefined;
  if (!spec) throw new Error("algorithm not allowed");
  const key = keys.verify.get(String(header.kid));
  if (!key) throw new Error("unknown kid");
  if (
    key.asymmetricKeyType !== spec.keyType ||
    (spec.curve !== undefined && key.asymmetricKeyDetails?.namedCurve !== spec.curve)
  ) {
    throw new Error("key does not fit the algorithm");
  }
  const signature = Buffer.from(parts[2]!, "base64url");
  const input = Buffer.from(`${parts[0]}.${parts[1]}`);
  const ok = verify(
    "sha256",
    input,
    spec.keyType === "ec" ? { key, dsaEncoding: "ieee-p1363" } : key,
    signature,
  );
  if (!ok) throw new Error("bad signature");
  const claims = jsonPart(parts[1]!);
  const now = Math.floor(Date.now() / 1000);
  if (claims.iss !== keys.input.issuerUrl) throw new Error("iss");
  const aud = claims.aud;
  const audience = keys.input.audience;
  if (!(aud === audience || (Array.isArray(aud) && aud.includes(audience)))) throw new Error("aud");
  if (typeof claims.exp !== "number" || claims.exp <= now - LEEWAY_SECONDS) throw new Error("exp");
  if (claims.nbf !== undefined && (typeof claims.nbf !== "number" || claims.nbf > now + LEEWAY_SECONDS)) {
    throw new Error("nbf");
  }
  if (typeof claims.sub !== "string") throw new Error("sub");
  const iat = now;
  const exp = Math.min(iat + 300, claims.exp);
  const payload = Buffer.from(
    JSON.stringify({
      access: [{ type: "repository", name: repository, actions }],
      iss: "registry-token-exchange",
      sub: claims.sub,
      aud: audience,
      iat,
      nbf: iat - 5,
      exp,
      jti: randomUUID(),
    }),
  ).toString("base64url");
  const signingInput = `${keys.header}.${payload}`;
  const sig = sign("sha256", Buffer.from(signingInput), { key: keys.signKey, dsaEncoding: "ieee-p1363" });
  return { token: `${signingInput}.${sig.toString("base64url")}`, iat, exp };
}
