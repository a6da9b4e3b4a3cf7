/** The RBAC the service's own service account needs for TokenReview and ServiceAccount reads. */
import type { Config } from "../config/schema.js";

/** One RBAC permission (rbac.authorization.k8s.io/v1 PolicyRule, one verb on one resource). */
export interface ApiPermission {
  apiGroup: string;
  resource: string;
  verb: string;
}

/**
 * The RBAC the service's own service account needs in the cluster(s) of `config`: `create` on
 * `tokenreviews` (authentication.k8s.io) when a cluster reviews tokens, `get` on `serviceaccounts` when
 * one reads annotations from the cluster; nothing for offline clusters. deploy/kubernetes/overlays/
 * tokenreview grants exactly this (a test compares them).
 */
export function requiredApiPermissions(config: Pick<Config, "clusters">): ApiPermission[] {
  const out: ApiPermission[] = [];
  if (config.clusters.some((c) => c.verification !== "offline")) {
    out.push({ apiGroup: "authentication.k8s.io", resource: "tokenreviews", verb: "create" });
  }
  if (config.clusters.some((c) => c.annotations === "fromCluster")) {
    out.push({ apiGroup: "", resource: "serviceaccounts", verb: "get" });
  }
  return out;
}
