/**
 * Verification of Kubernetes service-account JWTs (bound / projected tokens).
 * Claim layout: kubernetes `pkg/serviceaccount/claims.go` (and `legacy.go` for the Secret-based tokens refused here).
 *
 * Order of checks: shape and size -> unverified `iss` picks the cluster (legacy Secret-based tokens are
 * refused here) -> `alg` against the cluster's allowlist -> key by `kid` (or every key fitting `alg` when
 * `kid` is empty or absent) -> signature (node:crypto, `jose/jws.ts`) -> `iss`, `aud`, `iat`, `exp`, `nbf`
 * with leeway -> `iat` not in the future -> `sub` and the `kubernetes.io` claim agree
 * (`authn/service-account-claims.ts`).
 */
import { apiServerAudiences, type ClusterConfig } from "../config/schema.js";
import { safeEcho } from "../errors.js";
import {
  checkClaims,
  type DecodedJws,
  decodeCompactJws,
  isJwsAlgorithm,
  JwsFormatError,
  verifyJwsSignature,
} from "../jose/jws.js";
import { kubernetesKeyId } from "../jose/kid.js";
import type { Identity } from "./identity.js";
import type { VerificationKey } from "./jwk.js";
import type { ClusterKeySet } from "./jwks.js";
import { claimError, fail, REQUIRED_CLAIMS, toIdentity } from "./service-account-claims.js";

export type { ClusterReviewSummary, Identity } from "./identity.js";

/** Prefix of {@link Identity.verificationKey} for credentials signed by this service's own keys. */
export const OWN_KEY_PREFIX = "rte:";

/**
 * Longest accepted service-account token, characters (real ones are ~1-2 KiB). Kept well under Node's
 * 16 KiB header limit so that a too-long token, even base64-encoded in a Basic header, still reaches
 * the handler and gets a JSON error instead of Node's bare 431.
 */
export const MAX_TOKEN_LENGTH = 8 * 1024;

/** Longest accepted `kid`, characters (Kubernetes' are 43; RFC 7638 thumbprints 43; libtrust 59). */
export const MAX_KID_LENGTH = 256;

/** Options of one {@link ServiceAccountVerifier.verify} call. */
export interface VerifyOptions {
  /**
   * The caller has the token reviewed by the cluster's TokenReview API next (`authn/review.ts`): for a
   * cluster with `verification: tokenReview` the JWKS signature check is then skipped (the review
   * authenticates the token; the claims are still checked and must agree with the review). Without this
   * flag every token's signature is checked, whatever the cluster's mode.
   */
  reviewFollows?: boolean;
}

/** Options of {@link ServiceAccountVerifier}. */
export interface VerifierOptions {
  /** Clock in epoch milliseconds (frozen in tests). */
  now?: () => number;
}

/**
 * What the verifier needs of a cluster's key set ({@link ClusterKeySet}, or the CLI's offline stand-in
 * that offers one key and never fetches).
 */
export type VerificationKeySource = Pick<
  ClusterKeySet,
  "cluster" | "candidates" | "refreshAfterMiss" | "hasKey" | "trustsKey" | "close"
>;

/**
 * Verifies service-account JWTs against the trusted clusters.
 * The audience check uses the cluster's configured `audiences` unless the caller passes its own list
 * (the credential-provider path and per-registry audiences do).
 */
export class ServiceAccountVerifier {
  readonly #byIssuer = new Map<string, VerificationKeySource>();
  readonly #byName = new Map<string, VerificationKeySource>();
  /**
   * Per cluster, the audiences its API server accepts ({@link apiServerAudiences}): derived from the
   * config once per verifier (one per config version), not per token.
   */
  readonly #apiServerAudiences = new Map<ClusterConfig, ReadonlySet<string>>();
  readonly #now: () => number;

  /**
   * @param keySets one key set per trusted cluster
   * @param options clock
   */
  constructor(keySets: readonly VerificationKeySource[], options: VerifierOptions = {}) {
    for (const ks of keySets) {
      this.#byIssuer.set(ks.cluster.issuer, ks);
      this.#byName.set(ks.cluster.name, ks);
      this.#apiServerAudiences.set(ks.cluster, new Set(apiServerAudiences(ks.cluster.issuer)));
    }
    this.#now = options.now ?? Date.now;
  }

  /**
   * Whether an identity verified earlier (and cached) may still be used: its cluster is still trusted
   * and the cluster key that vouched for it ({@link Identity.clusterKey}) is in the cluster's key set now
   * loaded and current (see `ClusterKeySet.invalidate`). A key removed from the cluster's JWKS or
   * `jwksFile` (a rotation, a compromised key) thus stops admitting tokens already seen and credentials
   * derived from them, as soon as a refresh or reload has loaded the new set. An identity that names no
   * cluster key is trusted only for a cluster with `verification: tokenReview`, where no cluster key
   * verifies tokens and the TokenReview that follows every use decides (`authn/review.ts`). Never
   * fetches: a `false` is a cache miss, and the caller verifies afresh.
   */
  stillTrusted(identity: Identity): boolean {
    const keySet = this.#byName.get(identity.cluster);
    if (keySet === undefined) return false;
    const key = identity.clusterKey;
    return key === undefined ? keySet.cluster.verification === "tokenReview" : keySet.hasKey(key);
  }

  /**
   * Whether the cluster key a derived credential names ({@link Identity.clusterKey}) is trusted now,
   * loading the cluster's key set when none is current (unlike {@link stillTrusted}). A credential that
   * names none passes only for a cluster with `verification: tokenReview` (its sealed source token is
   * reviewed next).
   * @throws {RequestError} `keys_unavailable` when the cluster's keys cannot be loaded
   */
  async trustsClusterKey(identity: Identity): Promise<boolean> {
    const keySet = this.#byName.get(identity.cluster);
    if (keySet === undefined) return false;
    const key = identity.clusterKey;
    return key === undefined ? keySet.cluster.verification === "tokenReview" : keySet.trustsKey(key);
  }

  /**
   * Verifies `token` and returns the workload identity.
   * @param token the compact JWS as presented
   * @param audiences overrides the cluster's accepted audiences (the token's `aud` must contain one)
   * @param options see {@link VerifyOptions}
   * @throws {RequestError} with a credential code (`malformed_token`, `unknown_issuer`, `legacy_token`,
   *   `unsupported_algorithm`, `unknown_key`, `invalid_signature`, `invalid_issuer`, `invalid_audience`,
   *   `token_expired`, `token_not_yet_valid`, `missing_claim`, `invalid_subject`) or `keys_unavailable`
   */
  async verify(token: string, audiences?: readonly string[], options: VerifyOptions = {}): Promise<Identity> {
    if (token.length > MAX_TOKEN_LENGTH) {
      throw fail("malformed_token", `service-account token is longer than ${MAX_TOKEN_LENGTH} characters`);
    }
    let jws: DecodedJws;
    try {
      jws = decodeCompactJws(token);
    } catch (err) {
      if (err instanceof JwsFormatError && err.reason === "shape")
        throw fail("malformed_token", "credential is not a JWT (expected header.payload.signature)");
      if (err instanceof JwsFormatError && err.reason === "crit")
        throw fail("malformed_token", "credential is not a valid JWT");
      throw fail("malformed_token", "credential is not a JWT (header or payload is not base64url JSON)");
    }
    const { header, payload } = jws;
    if (typeof payload.iss !== "string")
      throw fail("missing_claim", 'service-account token has no "iss" claim');
    const iss = payload.iss;
    if ("kubernetes.io/serviceaccount/namespace" in payload && !("kubernetes.io" in payload)) {
      throw fail(
        "legacy_token",
        "legacy Secret-based service-account tokens never expire and are not accepted; use a projected (bound) token",
      );
    }
    const keySet = this.#byIssuer.get(iss);
    if (!keySet) {
      const near = [...this.#byIssuer.keys()].find((i) => i.replace(/\/+$/, "") === iss.replace(/\/+$/, ""));
      throw near
        ? fail("invalid_issuer", '"iss" claim differs from a trusted issuer by a trailing slash', {
            detail: `trusted issuer "${near}" (cluster "${this.#byIssuer.get(near)?.cluster.name}")`,
          })
        : fail("unknown_issuer", `"iss" claim "${safeEcho(iss)}" is not a trusted cluster issuer`);
    }
    const cluster = keySet.cluster;
    const alg = header.alg;
    if (!isJwsAlgorithm(alg) || !(cluster.algorithms as readonly string[]).includes(alg)) {
      throw fail("unsupported_algorithm", `"alg" ${safeEcho(alg)} is not allowed for this issuer`, {
        detail: `cluster "${cluster.name}" allows ${cluster.algorithms.join(", ")}`,
      });
    }
    if (options.reviewFollows === true && cluster.verification === "tokenReview") {
      return this.#checkClaims(payload, cluster, audiences);
    }
    const kid = typeof header.kid === "string" ? header.kid : undefined;
    // Kubernetes key IDs are 43 characters; a huge kid is garbage and must not be remembered as such.
    if (kid !== undefined && kid.length > MAX_KID_LENGTH) {
      throw fail("malformed_token", `"kid" is longer than ${MAX_KID_LENGTH} characters`);
    }
    const candidates = await keySet.candidates(kid, alg);
    if (candidates.length === 0) {
      throw fail(
        "unknown_key",
        kid
          ? `token signed by unknown key with ID "${safeEcho(kid, 64)}"`
          : `no trusted key fits "alg" ${alg}`,
        { detail: `cluster "${cluster.name}"` },
      );
    }
    let key = candidates.find((c) => verifyJwsSignature(jws, alg, c.key));
    // Without a kid a rotated key cannot be recognised as unknown: when every key failed the signature,
    // re-fetch within the same budget as unknown kids and try the new set once.
    if (!key && !kid && (await keySet.refreshAfterMiss())) {
      key = (await keySet.candidates(kid, alg)).find((c) => verifyJwsSignature(jws, alg, c.key));
    }
    if (!key) {
      throw fail("invalid_signature", "token signature does not verify", {
        detail: `cluster "${cluster.name}"`,
      });
    }
    const identity = this.#checkClaims(payload, cluster, audiences);
    identity.verificationKey = keyFingerprint(key);
    identity.clusterKey = identity.verificationKey;
    return identity;
  }

  #checkClaims(
    payload: Record<string, unknown>,
    cluster: ClusterConfig,
    audiences: readonly string[] | undefined,
  ): Identity {
    const accepted = audiences ?? cluster.audiences;
    const nowMs = this.#now();
    const failure = checkClaims(payload, {
      required: REQUIRED_CLAIMS,
      issuer: cluster.issuer,
      audiences: accepted,
      clockToleranceSeconds: cluster.clockSkewSeconds,
      nowSeconds: Math.floor(nowMs / 1000),
    });
    if (failure) throw claimError(failure, cluster, accepted);
    // A token that the API server also accepts would make this service a place to steal API credentials:
    // refused like an API-server audience in the config (config/schema.ts), unless the cluster opts in.
    if (!cluster.allowApiServerAudience) {
      const api = this.#apiServerAudiences.get(cluster) ?? new Set(apiServerAudiences(cluster.issuer));
      const aud = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
      if (aud.some((a) => typeof a === "string" && api.has(a.replace(/\/+$/, "").toLowerCase()))) {
        throw fail(
          "invalid_audience",
          `"aud" claim also contains an audience of the Kubernetes API server: request a token for this service's audience only`,
          { detail: `cluster "${cluster.name}" (clusters[].allowApiServerAudience is false)` },
        );
      }
    }
    return toIdentity(payload, cluster, nowMs);
  }
}

/** The fingerprint of a cluster key ({@link VerificationKey.fingerprint}), computed when absent. */
function keyFingerprint(key: VerificationKey): string {
  return key.fingerprint ?? kubernetesKeyId(key.key);
}
