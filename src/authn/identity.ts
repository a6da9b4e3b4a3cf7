/** The identity a verified credential establishes, and what a cluster's API server said about it. */

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
