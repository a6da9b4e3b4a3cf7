/**
 * Which verifier a presented credential goes to, at `/token`: as a `password`, an exchange credential
 * of this registry (chosen by its `typ` header, see `authn/derived.ts`), else a service-account token
 * (the registry's `audiences` if set, else the cluster's); as a `refresh_token`, only a refresh token of
 * this registry.
 */
import { DERIVED_KINDS, type DerivedKind, derivedKindOf, verifyDerived } from "../authn/derived.js";
import type { Identity, ServiceAccountVerifier } from "../authn/verify.js";
import { type Config, credentialProviderAudiencesFor, type RegistryConfig } from "../config/schema.js";
import { RequestError } from "../errors.js";
import type { PublishedKey } from "../jose/signing-key.js";

/**
 * How a credential was presented: as a password (Basic, Bearer, `grant_type=password`, RFC 8693
 * `subject_token`), which takes a service-account token or an exchange credential, or as the
 * `refresh_token` of `grant_type=refresh_token`, which takes only a refresh token.
 */
export type CredentialUse = "password" | "refresh";

/** What {@link verifyCredential} needs from the realm. */
export interface CredentialDeps {
  config: Config;
  verifier: ServiceAccountVerifier;
  /** The registry's active signing key, or every key it accepts (active first, then published ones). */
  ownKeys: PublishedKey | readonly PublishedKey[];
  /** Names of the clusters currently trusted. */
  clusters: ReadonlySet<string>;
  /** Whether a TokenReview follows a service-account token's verification (see `authn/verify.ts`). */
  reviewFollows: boolean;
  /** Current time, epoch milliseconds. */
  nowMs: number;
}

/**
 * Verifies `credential` for use at `registry`: routes it to its verifier; the unverified `typ` header only chooses which one. A derived
 * credential is accepted only while the cluster key that vouched for its source token is still in the
 * cluster's trusted key set (checked on every use; the realm checks a cache hit too).
 */
export async function verifyCredential(
  credential: string,
  registry: RegistryConfig,
  use: CredentialUse,
  deps: CredentialDeps,
): Promise<Identity> {
  const kind: DerivedKind | undefined = derivedKindOf(credential);
  const derived = async (k: DerivedKind) => {
    const identity = await verifyDerived(k, deps.ownKeys, registry, credential, deps.clusters, deps.nowMs);
    if (!(await deps.verifier.trustsClusterKey(identity))) {
      throw new RequestError(
        "unknown_key",
        `${DERIVED_KINDS[k].label} was derived from a token signed by a key that cluster "${identity.cluster}" no longer trusts`,
      );
    }
    return identity;
  };
  if (use === "refresh") {
    if (kind !== "refresh") {
      throw new RequestError(
        "malformed_token",
        "refresh_token is not a refresh token issued by this service",
      );
    }
    const identity = await derived("refresh");
    // Re-checked on every use, as for exchange credentials: the audience its source token was accepted
    // for (a service-account token's, or an exchange credential's provider audience) must still be.
    const cluster = deps.config.clusters.find((c) => c.name === identity.cluster);
    const accepted = [
      ...(registry.audiences ?? cluster?.audiences ?? []),
      ...credentialProviderAudiencesFor(deps.config, registry),
    ];
    if (!identity.audiences.some((a) => accepted.includes(a))) {
      throw new RequestError(
        "invalid_audience",
        "refresh token was derived from a token whose audience this registry does not accept",
      );
    }
    // The cap holds for refresh tokens minted under an earlier, longer setting too.
    return {
      ...identity,
      expiresAt: Math.min(identity.expiresAt, identity.issuedAt + registry.refreshTokenMaxTtlSeconds),
    };
  }
  if (kind === "exchange") {
    const identity = await derived("exchange");
    // Re-checked on every use: a registry that restricts its audiences (or a config that stopped
    // serving it through the credential provider) refuses credentials minted under other audiences.
    const accepted = credentialProviderAudiencesFor(deps.config, registry);
    if (!identity.audiences.some((a) => accepted.includes(a))) {
      throw new RequestError(
        "invalid_audience",
        "exchange credential was derived from a token whose audience this registry does not accept",
      );
    }
    return identity;
  }
  if (kind === "refresh") {
    throw new RequestError(
      "malformed_credentials",
      "a refresh token is accepted only as refresh_token with grant_type=refresh_token",
    );
  }
  return deps.verifier.verify(credential, registry.audiences, { reviewFollows: deps.reviewFollows });
}
