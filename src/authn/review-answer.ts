/**
 * Reading a TokenReview answer (authentication.k8s.io/v1): the `user.extra`
 * `authentication.kubernetes.io/*` values the API server reports for a bound service-account token
 * (kubernetes `pkg/serviceaccount/claims.go`), and whether the answer fits the token and the identity
 * this service verified.
 */
import { RequestError } from "../errors.js";
import { decodeCompactJws } from "../jose/jws.js";
import type { Identity } from "./verify.js";

const EXTRA = "authentication.kubernetes.io/";

/** What a cached positive review holds (sealed). */
export interface CachedReview {
  /** The audiences asked for (sorted, `\u0000`-joined): a hit for other audiences is a miss. */
  asked: string;
  username: string;
  uid: string;
  audiences: string[];
  /** `user.extra` `authentication.kubernetes.io/<name>` values (`pod-name`, ..., `credential-id`). */
  extra: Record<string, string>;
  /**
   * Epoch ms after which the entry is stale, whatever the store says: a cache writer can extend or remove
   * a key's TTL (PEXPIRE, PERSIST, the tiered store's plain expiry prefix), never this.
   */
  until: number;
}

/** A `token_review_refused` error with a log-only detail. */
export function refused(message: string, logDetail: Record<string, unknown>): RequestError {
  return new RequestError("token_review_refused", message, { logDetail });
}

/** The single value of `user.extra[authentication.kubernetes.io/<name>]`, if exactly one. */
export function extraOf(extra: Record<string, string[]> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!extra || typeof extra !== "object") return out;
  for (const name of ["pod-name", "pod-uid", "node-name", "node-uid", "credential-id"]) {
    const v = extra[EXTRA + name];
    if (v === undefined) continue;
    // Several values for one of these can only be a confused (or hostile) answer: keep it, refuse below.
    out[name] = Array.isArray(v) && v.length === 1 && typeof v[0] === "string" ? v[0] : "\u0000invalid";
  }
  return out;
}

/** The `jti` of a token (at most 64 characters), read without verification, for the log. */
export function jtiOf(token: string): string | undefined {
  try {
    const jti = decodeCompactJws(token).payload.jti;
    return typeof jti === "string" ? jti.slice(0, 64) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Why a review answer does not fit the token and identity, or `undefined` when it does. For a derived
 * credential, `identity` is what the credential carries (copied from the source at minting).
 * @param tokenJti the `jti` of the reviewed token: the identity's own for a service-account token, the
 *   source token's for a derived credential (the review is about the token sent)
 */
export function disagrees(
  answer: CachedReview,
  identity: Identity,
  tokenJti: string | undefined,
): string | undefined {
  if (answer.username !== identity.subject) return "user.username differs from sub";
  if (answer.uid !== identity.serviceAccount.uid) return "user.uid differs from the service account uid";
  const extra = answer.extra ?? {};
  const pairs: Array<[string, string | undefined]> = [
    ["pod-name", identity.pod?.name],
    ["pod-uid", identity.pod?.uid],
    ["node-name", identity.node?.name],
    ["node-uid", identity.node?.uid],
    ["credential-id", `JTI=${tokenJti}`],
  ];
  // An older API server may leave a field out; one it sends must match.
  for (const [name, want] of pairs) {
    const got = extra[name];
    if (got !== undefined && got !== want) return `user.extra ${EXTRA}${name} differs from the token`;
  }
  return undefined;
}
