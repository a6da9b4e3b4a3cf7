/**
 * Minting of the credentials this service derives from a verified identity (exchange credentials and
 * refresh tokens). What they are, what keeps them apart from registry bearer tokens and how they are
 * verified when presented back: `authn/derived.ts`.
 */
import { randomUUID } from "node:crypto";
import {
  CLAIM,
  DERIVED_KINDS,
  type DerivedKind,
  derivedAudience,
  derivedIssuer,
  type IdentityClaim,
} from "../authn/derived.js";
import type { Identity } from "../authn/verify.js";
import type { RegistryConfig } from "../config/schema.js";
import { RequestError } from "../errors.js";
import { base64urlJson, signCompactJws } from "../jose/sign.js";
import type { SigningKey } from "../jose/signing-key.js";
import { timeClaims } from "./mint.js";

/** A minted derived credential. */
export interface DerivedCredential {
  /** The compact JWS. Never log it. */
  token: string;
  /** `jti` (safe to log). */
  jti: string;
  /** `iat`, epoch seconds. */
  issuedAt: number;
  /** `exp`, epoch seconds. */
  expiresAt: number;
}

/**
 * Signs a derived credential of `kind` for `registry` and `identity`.
 * @param expiresAt wanted `exp`, epoch seconds; cut to `identity.expiresAt` (never outlives its source)
 * @param nowMs current time, epoch milliseconds
 * @throws {RequestError} `token_expired` when the source credential has (practically) expired;
 *   `unknown_key` when `identity` names neither a cluster key ({@link Identity.clusterKey}) nor a sealed
 *   source token to review ({@link Identity.reviewSource})
 */
export async function mintDerived(
  kind: DerivedKind,
  key: SigningKey,
  registry: RegistryConfig,
  identity: Identity,
  expiresAt: number,
  nowMs: number,
): Promise<DerivedCredential> {
  const iat = Math.floor(nowMs / 1000);
  const exp = Math.min(expiresAt, identity.expiresAt);
  if (identity.clusterKey === undefined && identity.reviewSource === undefined) {
    throw new RequestError(
      "unknown_key",
      `the credential names no cluster key, so no ${DERIVED_KINDS[kind].label} can be derived from it`,
    );
  }
  if (exp <= iat) {
    throw new RequestError(
      "token_expired",
      `the presented credential expires too soon to derive a ${DERIVED_KINDS[kind].label}`,
    );
  }
  const claim: IdentityClaim = {
    cluster: identity.cluster,
    namespace: identity.namespace,
    serviceAccount: identity.serviceAccount,
    ...(identity.pod ? { pod: identity.pod } : {}),
    ...(identity.node ? { node: identity.node } : {}),
    ...(identity.annotations && Object.keys(identity.annotations).length > 0
      ? { annotations: identity.annotations }
      : {}),
    ...(identity.reviewSource ? { src: identity.reviewSource } : {}),
    source: {
      ...(identity.tokenId ? { jti: identity.tokenId } : {}),
      aud: identity.audiences,
      iat: identity.issuedAt,
      exp: identity.expiresAt,
      ...(identity.clusterKey !== undefined ? { key: identity.clusterKey } : {}),
    },
  };
  const jti = randomUUID();
  const header = base64urlJson({ alg: key.alg, typ: DERIVED_KINDS[kind].typ, kid: key.kid });
  const token = signCompactJws(
    header,
    {
      [CLAIM]: claim,
      iss: derivedIssuer(kind, registry),
      aud: derivedAudience(kind, registry),
      sub: identity.subject,
      ...timeClaims(iat, exp),
      jti,
    },
    key.alg,
    key.privateKey,
  );
  return { token, jti, issuedAt: iat, expiresAt: exp };
}
