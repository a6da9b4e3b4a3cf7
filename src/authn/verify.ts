/**
 * Verification of Kubernetes service-account JWTs (bound / projected tokens).
 * Claim layout: kubernetes `pkg/serviceaccount/claims.go` (and `legacy.go` for the Secret-based tokens refused here).
 *
 * Order of checks: shape and size -> unverified `iss` picks the cluster (legacy Secret-based tokens are
 * refused here) -> `alg` against the cluster's allowlist -> key by `kid` (or every key fitting `alg` when
 * `kid` is empty or absent) -> signature (node:crypto, `jose/jws.ts`) -> `iss`, `aud`, `iat`, `exp`, `nbf`
 * with leeway -> `iat` not in the future -> `sub` and the `kubernetes.io` claim agree.
 */
import { apiServerAudiences, type ClusterConfig } from "../config/schema.js";
import { RequestError, safeEcho } from "../errors.js";
import {
  type ClaimFailure,
  checkClaims,
  type DecodedJws,
  decodeCompactJws,
  isJwsAlgorithm,
  JwsFormatError,
  verifyJwsSignature,
} from "../jose/jws.js";
import { kubernetesKeyId } from "../jose/kid.js";
import type { VerificationKey } from "./jwk.js";
import type { ClusterKeySet } from "./jwks.js";

/** A verified Kubernetes workload identity. */
export interface Identity {
  /** Name of the trusted cluster (config `clusters[].name`) whose issuer signed the token. */
  cluster: string;
  /** Service account namespace. */
  namespace: string;
  /** Service account name and uid. */
  serviceAccount: { name: string; uid: string };
  /** The pod the token is bound to, if any. */
  pod?: { name: string; uid: string } | undefined;
  /** The node the token was issued for, if present (recent clusters, pod-bound tokens). */
  node?: { name: string; uid: string } | undefined;
  /** `system:serviceaccount:<namespace>:<name>`. */
  subject: string;
  /** The token's audiences. */
  audiences: string[];
  /**
   * When the token stops being accepted here, epoch seconds: its `exp`, or its `kubernetes.io.warnafter`
   * when that is earlier (see {@link effectiveExpiry}). Everything derived from the identity (registry
   * tokens, refresh tokens, exchange credentials, cache entries) is cut to it.
   */
  expiresAt: number;
  /** The token's `iat`, epoch seconds. */
  issuedAt: number;
  /** The token's `jti`, if any (safe to log). */
  tokenId?: string | undefined;
  /**
   * Which key verified the credential, so a cached identity is dropped once that key is no longer
   * trusted: the cluster key's fingerprint ({@link VerificationKey.fingerprint}; see
   * {@link ServiceAccountVerifier.stillTrusted}), or {@link OWN_KEY_PREFIX} + `kid` for the registry key
   * that signed an exchange credential or refresh token (checked by the realm).
   */
  verificationKey?: string | undefined;
  /**
   * The cluster key that vouched for the service-account token this identity comes from, directly or
   * through an exchange credential or refresh token: its fingerprint ({@link VerificationKey.fingerprint},
   * base64url SHA-256 of the DER SubjectPublicKeyInfo). Every use of the identity, cached or derived,
   * requires this key to be in the cluster's trusted key set ({@link ServiceAccountVerifier.stillTrusted}).
   */
  clusterKey?: string | undefined;
  /**
   * Service-account annotations passed through by kubelet (`CredentialProviderRequest.
   * serviceAccountAnnotations`, KEP-4412), carried by exchange credentials. Asserted by the caller of
   * `/v1/credential-provider`, not signed by the cluster: anyone holding a token with the
   * credential-provider audience can claim any values.
   */
  annotations?: Record<string, string> | undefined;
  /**
   * For a cluster whose tokens are reviewed (`verification: tokenReview|both`): the source service-account
   * token and the audiences it was reviewed for, sealed with the service secret (`cache/seal.ts`, opaque to
   * everyone else), so credentials derived from it are reviewed again on every use (see `authn/review.ts`).
   */
  reviewSource?: string | undefined;
  /**
   * What the cluster said about this credential in this request (absent for `verification: offline`);
   * never cached with the identity.
   */
  review?: ClusterReviewSummary | undefined;
}

/** What a cluster's API server said about a credential, for `explain` and audit (no secrets). */
export interface ClusterReviewSummary {
  /** The cluster's `verification` mode. */
  verification: "tokenReview" | "both";
  /** `status.authenticated` of the TokenReview (always true here: a refusal throws). */
  authenticated: boolean;
  /** `status.user.username` and `status.user.uid`. */
  username: string;
  uid: string;
  /** `status.audiences`. */
  audiences: string[];
  /** Whether the answer came from the review cache (at most `review.cacheTtlSeconds` old). */
  cached: boolean;
  /** The reviewed token was the source of a derived credential (exchange credential, refresh token). */
  derived: boolean;
  /** With `annotations: fromCluster`: the ServiceAccount's `metadata.uid` that was checked. */
  serviceAccountUid?: string | undefined;
}

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

const SUBJECT = /^system:serviceaccount:([^:]+):([^:]+)$/;

/**
 * A credential error. `message` is what any caller sees, authenticated or not: it names nothing of the
 * configuration (no trusted issuer, cluster, algorithm list or accepted audience), only the presented
 * credential's own values. What an operator needs to see why (`logDetail.detail`, one line) goes to the
 * access log and to the offline `explain` command only.
 */
function fail(
  code: ConstructorParameters<typeof RequestError>[0],
  message: string,
  logDetail?: { detail: string },
) {
  return new RequestError(code, message, logDetail ? { logDetail } : {});
}

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
  readonly #now: () => number;

  /**
   * @param keySets one key set per trusted cluster
   * @param options clock
   */
  constructor(keySets: readonly VerificationKeySource[], options: VerifierOptions = {}) {
    for (const ks of keySets) {
      this.#byIssuer.set(ks.cluster.issuer, ks);
      this.#byName.set(ks.cluster.name, ks);
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
      const api = apiServerAudiences(cluster.issuer);
      const aud = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
      if (aud.some((a) => typeof a === "string" && api.includes(a.replace(/\/+$/, "").toLowerCase()))) {
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

/**
 * Claims a service-account token must carry, in the order their absence is reported (`iss` is checked
 * before: it chose the cluster).
 */
const REQUIRED_CLAIMS = ["aud", "sub", "iat", "exp"] as const;

function claimError(
  failure: ClaimFailure,
  cluster: ClusterConfig,
  audiences: readonly string[],
): RequestError {
  const { claim, reason } = failure;
  switch (reason) {
    case "missing":
      return fail("missing_claim", `service-account token has no "${claim}" claim`);
    case "expired":
      return fail("token_expired", "service-account token has expired");
    case "not_yet_valid":
      return fail("token_not_yet_valid", 'service-account token is not valid yet ("nbf" is in the future)');
    case "mismatch":
      return claim === "iss"
        ? fail("invalid_issuer", '"iss" claim does not match the trusted issuer', {
            detail: `cluster "${cluster.name}"`,
          })
        : fail("invalid_audience", '"aud" claim does not contain an audience accepted here', {
            detail: `accepted: ${audiences.map((a) => safeEcho(a, 80)).join(", ")}`,
          });
    default:
      return fail("malformed_token", `"${claim}" claim is invalid`);
  }
}

interface KubernetesClaim {
  namespace?: unknown;
  warnafter?: unknown;
  serviceaccount?: { name?: unknown; uid?: unknown };
  pod?: { name?: unknown; uid?: unknown };
  node?: { name?: unknown; uid?: unknown };
}

function ref(v: { name?: unknown; uid?: unknown } | undefined): { name: string; uid: string } | undefined {
  if (v && typeof v === "object" && typeof v.name === "string" && typeof v.uid === "string") {
    return { name: v.name, uid: v.uid };
  }
  return undefined;
}

/**
 * The expiry this service enforces for a service-account token, epoch seconds: `exp`, or
 * `kubernetes.io.warnafter` when present and earlier. kube-apiserver's extended tokens
 * (`--service-account-extend-token-expiration`, on by default; kubernetes `pkg/serviceaccount/claims.go`)
 * stretch `exp` of the tokens kubelet projects for the API server's own audience to a year and record the
 * lifetime actually requested, as a NumericDate, in `warnafter`; kubelet rotates the token at 80 % of that
 * requested lifetime, so a token past `warnafter` is held by a workload that kept an old copy and is
 * refused here as expired.
 * @param exp the token's `exp`, epoch seconds
 * @param warnafter the `kubernetes.io.warnafter` value, if any (anything but a whole number is refused)
 * @throws {RequestError} `malformed_token` when `warnafter` is present but not a whole number of seconds
 */
function effectiveExpiry(exp: number, warnafter: unknown): number {
  if (warnafter === undefined) return exp;
  if (!Number.isSafeInteger(warnafter)) {
    throw fail("malformed_token", '"kubernetes.io.warnafter" claim is not a whole number of seconds');
  }
  return Math.min(exp, warnafter as number);
}

function toIdentity(payload: Record<string, unknown>, cluster: ClusterConfig, nowMs: number): Identity {
  const now = Math.floor(nowMs / 1000);
  // RFC 7519 NumericDate may be fractional, but Kubernetes always writes whole seconds, and what we mint
  // from these values must be integers (distribution parses exp/nbf/iat as int64).
  for (const claim of ["exp", "iat", "nbf"] as const) {
    const v = payload[claim];
    if (v !== undefined && !Number.isSafeInteger(v)) {
      throw fail("malformed_token", `"${claim}" claim is not a whole number of seconds`);
    }
  }
  // checkClaims has established that these are present and numbers.
  const iat = payload.iat as number;
  const exp = payload.exp as number;
  if (iat > now + cluster.clockSkewSeconds) {
    throw fail("token_not_yet_valid", 'service-account token is not valid yet ("iat" is in the future)');
  }
  const sub = typeof payload.sub === "string" ? payload.sub : "";
  const m = SUBJECT.exec(sub);
  if (!m) {
    throw fail(
      "invalid_subject",
      `"sub" claim "${safeEcho(payload.sub)}" is not system:serviceaccount:<namespace>:<name>`,
    );
  }
  const k8s = payload["kubernetes.io"] as KubernetesClaim | undefined;
  if (!k8s || typeof k8s !== "object")
    throw fail("missing_claim", 'service-account token has no "kubernetes.io" claim');
  const expiresAt = effectiveExpiry(exp, k8s.warnafter);
  if (expiresAt <= now - cluster.clockSkewSeconds) {
    throw fail("token_expired", 'service-account token has expired ("kubernetes.io.warnafter" has passed)');
  }
  const sa = ref(k8s.serviceaccount);
  if (typeof k8s.namespace !== "string" || !sa) {
    throw fail("missing_claim", '"kubernetes.io" claim lacks namespace or serviceaccount name/uid');
  }
  if (k8s.namespace !== m[1] || sa.name !== m[2]) {
    throw fail("invalid_subject", '"sub" claim does not agree with the "kubernetes.io" claim');
  }
  return {
    cluster: cluster.name,
    namespace: k8s.namespace,
    serviceAccount: sa,
    pod: ref(k8s.pod),
    node: ref(k8s.node),
    subject: sub,
    audiences: (Array.isArray(payload.aud) ? payload.aud : [payload.aud]).filter(
      (a): a is string => typeof a === "string",
    ),
    expiresAt,
    issuedAt: iat,
    tokenId: typeof payload.jti === "string" ? payload.jti.slice(0, 64) : undefined,
  };
}
