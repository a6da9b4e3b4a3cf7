/**
 * Credentials this service derives from a verified identity and later accepts back at `/token`:
 * - **exchange credentials**: the password `/v1/credential-provider` hands to kubelet (KEP-4412: kubelet
 *   refuses a plugin that echoes the service-account token, unless its cache type is `Token`);
 * - **refresh tokens**: what `offline_token=true` / `access_type=offline` return (distribution
 *   docs/spec/auth/oauth.md; docker stores it as its `identitytoken`).
 *
 * Both are compact JWS signed with the registry's own signing key, bound to one identity (cluster,
 * namespace, service account and its uid, pod, node, annotations) and one registry `service`, and never
 * valid past the credential they were derived from. For a cluster whose tokens are reviewed, they also
 * carry the source token sealed with the service secret (claim `rte.src`, see `authn/review.ts`), so each
 * use is reviewed again. What keeps them apart from registry bearer tokens,
 * and from each other:
 * - a distinct `typ` header per kind (RFC 8725 §3.11 explicit typing), checked exactly on verification;
 * - `iss` = `urn:registry-token-exchange:<kind>:<registry issuer>` and `aud` =
 *   `urn:registry-token-exchange:<kind>:<service>`, never the registry's `auth.token.issuer` or its
 *   `service`, so distribution (which checks both, registry/auth/token/token.go) refuses them as bearer
 *   tokens even though it trusts the key; the config refuses `service`/`issuer` values in that namespace;
 * - no `access` claim and no `x5c`.
 *
 * Verification: explicit algorithm allowlist (the key's own algorithm), exact `typ`, `iss`, `aud`,
 * required `exp`/`nbf`/`iat`/`sub`/`jti`, a small clock leeway, then the identity claim is re-validated
 * (its cluster must still be configured, `sub` must agree, and it must name the cluster key that vouched
 * for the source token: `rte.source.key`). The caller (the realm) then requires that cluster key to be in
 * the cluster's trusted key set on every use, so removing a cluster key revokes what it vouched for.
 */

import { RESERVED_URN_PREFIX, type RegistryConfig } from "../config/schema.js";
import { type ErrorCode, RequestError } from "../errors.js";
import {
  type ClaimFailure,
  checkClaims,
  type DecodedJws,
  decodeCompactJws,
  verifyJwsSignature,
} from "../jose/jws.js";
import type { PublishedKey } from "../jose/signing-key.js";
import { type Identity, OWN_KEY_PREFIX } from "./verify.js";

/** The two kinds of derived credential. */
export type DerivedKind = "exchange" | "refresh";

interface KindSpec {
  /** JWS `typ` header. */
  typ: string;
  /** Middle part of the `iss`/`aud` URNs. */
  urn: string;
  /** Human name for error messages. */
  label: string;
}

/** Per-kind constants (`typ` values are private media types of this service). */
export const DERIVED_KINDS: Readonly<Record<DerivedKind, KindSpec>> = {
  exchange: { typ: "rte-exchange+jwt", urn: "exchange-credential", label: "exchange credential" },
  refresh: { typ: "rte-refresh+jwt", urn: "refresh-token", label: "refresh token" },
};

/** Longest accepted derived credential, characters (annotations are capped well below this). */
const MAX_DERIVED_LENGTH = 16 * 1024;

/** Leeway for `exp`/`nbf`/`iat` between replicas of this service, seconds. */
export const DERIVED_CLOCK_SKEW_SECONDS = 30;

/** The private claim that carries the identity. */
export const CLAIM = "rte";

const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

/** `iss` of a derived credential of `kind` for `registry` (never equal to `registry.issuer`). */
export function derivedIssuer(kind: DerivedKind, registry: RegistryConfig): string {
  return `${RESERVED_URN_PREFIX}${DERIVED_KINDS[kind].urn}:${registry.issuer}`;
}

/** `aud` of a derived credential of `kind` for `registry` (never equal to `registry.service`). */
export function derivedAudience(kind: DerivedKind, registry: RegistryConfig): string {
  return `${RESERVED_URN_PREFIX}${DERIVED_KINDS[kind].urn}:${registry.service}`;
}

/**
 * Which verifier a presented credential is meant for, read from its unverified `typ` header. The answer
 * only picks a verifier: every verifier checks everything itself, so a forged `typ` can at worst send a
 * credential to a verifier that rejects it.
 * @returns the derived kind, or `undefined` for anything else (a service-account token, garbage)
 */
export function derivedKindOf(credential: string): DerivedKind | undefined {
  // Only the header is read: the whole credential's shape is checked by the verifier it goes to.
  const dot = credential.indexOf(".");
  if (credential.length > MAX_DERIVED_LENGTH || dot < 1) return undefined;
  let header: unknown;
  try {
    header = JSON.parse(Buffer.from(credential.slice(0, dot), "base64url").toString());
  } catch {
    return undefined;
  }
  const typ = header !== null && typeof header === "object" ? (header as { typ?: unknown }).typ : undefined;
  if (typ === DERIVED_KINDS.exchange.typ) return "exchange";
  if (typ === DERIVED_KINDS.refresh.typ) return "refresh";
  return undefined;
}

/** The identity claim as stored in a derived credential. */
export interface IdentityClaim {
  cluster: string;
  namespace: string;
  serviceAccount: { name: string; uid: string };
  pod?: { name: string; uid: string };
  node?: { name: string; uid: string };
  annotations?: Record<string, string>;
  /** For a reviewed cluster: the source token, sealed ({@link Identity.reviewSource}). */
  src?: string;
  /**
   * The credential it was derived from: its `jti` (if any), audiences, lifetime, and `key`, the
   * fingerprint of the cluster key that verified it ({@link Identity.clusterKey}); `key` is absent only
   * for a cluster with `verification: tokenReview`, whose tokens no cluster key verifies: `src` is then
   * reviewed again on every use instead.
   */
  source: { jti?: string; aud: string[]; iat: number; exp: number; key?: string };
}

function fail(kind: DerivedKind, code: ErrorCode, what: string): RequestError {
  return new RequestError(code, `${DERIVED_KINDS[kind].label} ${what}`);
}

function isRef(v: unknown): v is { name: string; uid: string } {
  const r = v as { name?: unknown; uid?: unknown } | null;
  return typeof r === "object" && r !== null && typeof r.name === "string" && typeof r.uid === "string";
}

function isStringRecord(v: unknown): v is Record<string, string> {
  return (
    typeof v === "object" &&
    v !== null &&
    !Array.isArray(v) &&
    Object.values(v as Record<string, unknown>).every((x) => typeof x === "string")
  );
}

/**
 * Verifies a derived credential of `kind` for `registry` and returns the identity it carries.
 * `expiresAt`/`issuedAt`/`tokenId` of the result describe the derived credential itself, so anything
 * minted from it (registry tokens, refresh tokens) is cut to its `exp`.
 * @param keys the registry's active signing key, or every key it accepts (active first, then the
 *   `publishedKeys` of a rotation): the one whose `kid` the credential names verifies it, so what the
 *   previous key signed stays valid until it expires
 * @param clusters names of the clusters currently trusted (a credential of a removed cluster is refused)
 * @throws {RequestError} `malformed_token`, `unsupported_algorithm`, `invalid_signature`, `invalid_issuer`,
 *   `invalid_audience`, `token_expired`, `token_not_yet_valid`, `missing_claim`, `invalid_subject`,
 *   `unknown_issuer`
 */
export async function verifyDerived(
  kind: DerivedKind,
  keys: PublishedKey | readonly PublishedKey[],
  registry: RegistryConfig,
  token: string,
  clusters: ReadonlySet<string>,
  nowMs: number,
): Promise<Identity> {
  if (token.length > MAX_DERIVED_LENGTH || !JWT_SHAPE.test(token)) {
    throw fail(kind, "malformed_token", "is not a compact JWS");
  }
  const accepted = Array.isArray(keys) ? (keys as readonly PublishedKey[]) : [keys as PublishedKey];
  let jws: DecodedJws;
  try {
    jws = decodeCompactJws(token);
  } catch {
    throw fail(kind, "malformed_token", "is not a valid JWS");
  }
  // An unknown kid is checked against the active key, so that it fails exactly as a forgery does.
  const key = accepted.find((k) => k.kid === jws.header.kid) ?? accepted[0]!;
  const alg = jws.header.alg;
  if (typeof alg !== "string" || alg === "") throw fail(kind, "malformed_token", "is not a valid JWS");
  if (alg !== key.alg) throw fail(kind, "unsupported_algorithm", '"alg" is not allowed');
  if (!verifyJwsSignature(jws, key.alg, key.publicKey)) {
    throw fail(kind, "invalid_signature", "signature does not verify with this registry's signing key");
  }
  const typ = jws.header.typ;
  if (typeof typ !== "string" || typ.toLowerCase() !== DERIVED_KINDS[kind].typ) {
    throw fail(kind, "malformed_token", `has the wrong "typ" header (want "${DERIVED_KINDS[kind].typ}")`);
  }
  const payload = jws.payload;
  const nowSeconds = Math.floor(nowMs / 1000);
  const failure = checkClaims(payload, {
    required: DERIVED_REQUIRED_CLAIMS,
    issuer: derivedIssuer(kind, registry),
    audiences: [derivedAudience(kind, registry)],
    clockToleranceSeconds: DERIVED_CLOCK_SKEW_SECONDS,
    nowSeconds,
  });
  if (failure) throw claimError(kind, failure);
  const iat = payload.iat as number;
  if (iat > nowSeconds + DERIVED_CLOCK_SKEW_SECONDS) {
    throw fail(kind, "token_not_yet_valid", 'is not valid yet ("iat" is in the future)');
  }
  const c = payload[CLAIM] as Partial<IdentityClaim> | undefined;
  if (
    !c ||
    typeof c !== "object" ||
    typeof c.cluster !== "string" ||
    typeof c.namespace !== "string" ||
    !isRef(c.serviceAccount) ||
    (c.pod !== undefined && !isRef(c.pod)) ||
    (c.node !== undefined && !isRef(c.node)) ||
    (c.annotations !== undefined && !isStringRecord(c.annotations)) ||
    (c.src !== undefined && typeof c.src !== "string") ||
    typeof c.source !== "object" ||
    c.source === null ||
    !Array.isArray(c.source.aud) ||
    (c.source.key === undefined
      ? c.src === undefined
      : typeof c.source.key !== "string" || c.source.key === "")
  ) {
    throw fail(kind, "missing_claim", `has no valid "${CLAIM}" identity claim`);
  }
  if (!clusters.has(c.cluster)) {
    throw fail(
      kind,
      "unknown_issuer",
      `names cluster "${c.cluster.slice(0, 63)}", which is no longer trusted`,
    );
  }
  const subject = `system:serviceaccount:${c.namespace}:${c.serviceAccount.name}`;
  if (payload.sub !== subject)
    throw fail(kind, "invalid_subject", '"sub" does not agree with its identity claim');
  return {
    cluster: c.cluster,
    namespace: c.namespace,
    serviceAccount: { name: c.serviceAccount.name, uid: c.serviceAccount.uid },
    pod: c.pod ? { name: c.pod.name, uid: c.pod.uid } : undefined,
    node: c.node ? { name: c.node.name, uid: c.node.uid } : undefined,
    subject,
    audiences: c.source.aud.filter((a): a is string => typeof a === "string"),
    expiresAt: payload.exp as number,
    issuedAt: iat,
    tokenId: typeof payload.jti === "string" ? payload.jti : undefined,
    annotations: c.annotations,
    reviewSource: c.src,
    verificationKey: `${OWN_KEY_PREFIX}${key.kid}`,
    clusterKey: c.source.key,
  };
}

/** Claims a derived credential must carry, in the order their absence is reported. */
const DERIVED_REQUIRED_CLAIMS = ["iss", "aud", "jti", "sub", "iat", "nbf", "exp"] as const;

function claimError(kind: DerivedKind, { claim, reason }: ClaimFailure): RequestError {
  switch (reason) {
    case "missing":
      return fail(kind, "missing_claim", `has no "${claim}" claim`);
    case "expired":
      return fail(kind, "token_expired", "has expired");
    case "not_yet_valid":
      return fail(kind, "token_not_yet_valid", 'is not valid yet ("nbf" is in the future)');
    case "mismatch":
      return claim === "iss"
        ? fail(kind, "invalid_issuer", 'was not issued for this registry ("iss" differs)')
        : fail(kind, "invalid_audience", "was issued for another registry service");
    default:
      return fail(kind, "malformed_token", `has an invalid "${claim}" claim`);
  }
}
