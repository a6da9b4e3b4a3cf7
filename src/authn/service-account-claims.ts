/**
 * The claims of a Kubernetes service-account token, after its signature and registered claims are checked:
 * the `kubernetes.io` claim (namespace, service account, pod, node, `warnafter`) and `sub` must agree, and
 * become the {@link Identity}. Claim layout: kubernetes `pkg/serviceaccount/claims.go`.
 */
import type { ClusterConfig } from "../config/schema.js";
import { RequestError, safeEcho } from "../errors.js";
import type { ClaimFailure } from "../jose/jws.js";
import type { Identity } from "./identity.js";

/** `sub` of a service-account token: `system:serviceaccount:<namespace>:<name>`. */
const SUBJECT = /^system:serviceaccount:([^:]+):([^:]+)$/;

/**
 * A credential error. `message` is what any caller sees, authenticated or not: it names nothing of the
 * configuration (no trusted issuer, cluster, algorithm list or accepted audience), only the presented
 * credential's own values. What an operator needs to see why (`logDetail.detail`, one line) goes to the
 * access log and to the offline `explain` command only.
 */
export function fail(
  code: ConstructorParameters<typeof RequestError>[0],
  message: string,
  logDetail?: { detail: string },
) {
  return new RequestError(code, message, logDetail ? { logDetail } : {});
}

/**
 * Claims a service-account token must carry, in the order their absence is reported (`iss` is checked
 * before: it chose the cluster).
 */
export const REQUIRED_CLAIMS = ["aud", "sub", "iat", "exp"] as const;

/** The refusal for a failed registered-claim check (`jose/jws.ts` `checkClaims`); see {@link fail}. */
export function claimError(
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

/** The `kubernetes.io` claim, unchecked. */
interface KubernetesClaim {
  namespace?: unknown;
  warnafter?: unknown;
  serviceaccount?: { name?: unknown; uid?: unknown };
  pod?: { name?: unknown; uid?: unknown };
  node?: { name?: unknown; uid?: unknown };
}

/** A `{name, uid}` reference when both are strings. */
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

/**
 * The identity a service-account token's claims establish, after `checkClaims` found `aud`, `sub`, `iat`,
 * `exp` present and valid.
 * @param nowMs clock, epoch milliseconds
 * @throws {RequestError} `malformed_token`, `token_not_yet_valid` (`iat` in the future), `invalid_subject`,
 *   `missing_claim` (no `kubernetes.io` claim or parts of it), `token_expired` (`warnafter` has passed)
 */
export function toIdentity(
  payload: Record<string, unknown>,
  cluster: ClusterConfig,
  nowMs: number,
): Identity {
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
