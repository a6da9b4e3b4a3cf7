/**
 * Explanations of policy decisions, for operators debugging with curl (`GET /v1/explain`) or offline
 * (`registry-token-exchange explain`): who the credential says it is, which rules apply to it at the
 * registry, and per requested scope the granted actions and the rules that allowed or denied them.
 * Never the credential itself: only claims that are safe to show (names, uids, audiences, times).
 */

import { type DerivedKind, derivedKindOf } from "../authn/derived.js";
import type { ClusterReviewSummary, Identity } from "../authn/verify.js";
import type { Action } from "../config/schema.js";
import type { Policy, ScopeDecision } from "./engine.js";
import { formatScope } from "./scope.js";

/** What kind of credential was presented. */
export type CredentialKind = "service-account token" | "exchange credential" | "refresh token";

/**
 * The verified (or, offline, claimed) identity, as shown to the operator: the fields of {@link Identity}
 * that name the workload, with its times in RFC 3339 and the credential's kind. `annotations` only for
 * exchange credentials from `/v1/credential-provider`.
 */
type ExplainedIdentity = Pick<
  Identity,
  "cluster" | "namespace" | "serviceAccount" | "pod" | "node" | "subject" | "audiences" | "annotations"
> & {
  credential: CredentialKind;
  /** RFC 3339. */
  issuedAt: string;
  /** RFC 3339. */
  expiresAt: string;
  /** Seconds left when explained. */
  expiresIn: number;
  /**
   * Present when the cluster was asked (`verification: tokenReview|both`): the mode and what its
   * TokenReview said (and, with `annotations: fromCluster`, the ServiceAccount uid checked). Absent:
   * verified offline only.
   */
  review?: ClusterReviewSummary;
};

/** The decision for one requested scope. */
interface ExplainedScope {
  /** The scope as requested (canonical action order). */
  scope: string;
  type: "repository" | "registry";
  name: string;
  requested: Action[];
  granted: Action[];
  /** Rules whose allow entries cover at least one requested action. */
  allowedBy: string[];
  /** Rules whose deny entries cover at least one requested action. */
  deniedBy: string[];
}

/** The body of `GET /v1/explain`. */
export interface Explanation {
  /** The registry `service`. */
  service: string;
  identity: ExplainedIdentity;
  /** Names of the rules that apply to this identity at this registry, in config order. */
  rules: string[];
  /** One entry per requested scope, in request order (none for a login). */
  scopes: ExplainedScope[];
}

/** RFC 3339 without fractional seconds. */
function rfc3339(epochSeconds: number): string {
  return new Date(epochSeconds * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
}

const KIND_NAMES: Record<DerivedKind, CredentialKind> = {
  exchange: "exchange credential",
  refresh: "refresh token",
};

/** The kind of a presented credential, from its (unverified) `typ` header; only for display. */
export function credentialKind(credential: string): CredentialKind {
  const kind = derivedKindOf(credential);
  return kind === undefined ? "service-account token" : KIND_NAMES[kind];
}

/**
 * Builds the explanation of an authorization (`TokenRealm.authorize`).
 * @param nowMs current time, epoch milliseconds (for `expiresIn`)
 */
export function explain(
  result: { identity: Identity; decisions: ScopeDecision[]; policy: Policy; registry: { service: string } },
  kind: CredentialKind,
  nowMs: number,
): Explanation {
  const id = result.identity;
  const identity: ExplainedIdentity = {
    credential: kind,
    cluster: id.cluster,
    namespace: id.namespace,
    serviceAccount: { name: id.serviceAccount.name, uid: id.serviceAccount.uid },
    ...(id.pod ? { pod: { name: id.pod.name, uid: id.pod.uid } } : {}),
    ...(id.node ? { node: { name: id.node.name, uid: id.node.uid } } : {}),
    subject: id.subject,
    audiences: [...id.audiences],
    issuedAt: rfc3339(id.issuedAt),
    expiresAt: rfc3339(id.expiresAt),
    expiresIn: Math.max(0, id.expiresAt - Math.floor(nowMs / 1000)),
    ...(id.annotations && Object.keys(id.annotations).length > 0
      ? { annotations: { ...id.annotations } }
      : {}),
    ...(id.review ? { review: { ...id.review, audiences: [...id.review.audiences] } } : {}),
  };
  return {
    service: result.registry.service,
    identity,
    rules: result.policy.applicableRules(id, result.registry.service),
    scopes: result.decisions.map((d) => ({
      scope: formatScope(d.requested),
      type: d.requested.type,
      name: d.requested.name,
      requested: [...d.requested.actions],
      granted: [...d.granted],
      allowedBy: [...d.allowedBy],
      deniedBy: [...d.deniedBy],
    })),
  };
}

const names = (list: readonly string[]) =>
  list.length === 0 ? "(none)" : list.map((n) => JSON.stringify(n)).join(", ");
const ref = (r: { name: string; uid: string }) => `${r.name} (uid ${r.uid})`;

/**
 * Renders an explanation as aligned text lines (the `explain` command's output), each ending in `\n`.
 * Rule names are JSON-quoted so that commas or spaces in them stay unambiguous.
 */
export function formatExplanation(e: Explanation): string {
  const id = e.identity;
  const lines: Array<[string, string]> = [
    ["credential", id.credential],
    ["cluster", id.cluster],
    ["namespace", id.namespace],
    ["service account", ref(id.serviceAccount)],
  ];
  if (id.pod) lines.push(["pod", ref(id.pod)]);
  if (id.node) lines.push(["node", ref(id.node)]);
  lines.push(["audiences", id.audiences.join(", ")]);
  if (id.annotations) {
    lines.push([
      "annotations",
      Object.entries(id.annotations)
        .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
        .join(", "),
    ]);
  }
  if (id.review) {
    const r = id.review;
    lines.push([
      "verification",
      `${r.verification}: TokenReview authenticated ${r.username} (uid ${r.uid})${r.derived ? " for the source token" : ""}${r.cached ? ", cached answer" : ""}${r.serviceAccountUid ? `; ServiceAccount uid ${r.serviceAccountUid} checked` : ""}`,
    ]);
  }
  lines.push(["expires", `${id.expiresAt} (in ${id.expiresIn} s)`]);
  lines.push(["service", e.service]);
  lines.push(["rules applying", names(e.rules)]);
  if (e.scopes.length === 0) lines.push(["scopes", "(none: a login)"]);
  let out = lines.map(([k, v]) => `${`${k}:`.padEnd(17)}${v}\n`).join("");
  for (const s of e.scopes) {
    out += `${s.scope}\n`;
    out += `  granted:    ${s.granted.length === 0 ? "(nothing)" : s.granted.join(",")}\n`;
    out += `  allowed by: ${names(s.allowedBy)}\n`;
    out += `  denied by:  ${names(s.deniedBy)}\n`;
  }
  return out;
}
