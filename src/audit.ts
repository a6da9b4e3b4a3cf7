/**
 * Audit records: what the realm and the routes decided for one request (a token issued, a credential
 * refused), written as the `audit` field of the request's access line (`plugins/access-log.ts`) or, for
 * callers without a request (the CLI, tests), as a line of its own. A plain module, not a fastify plugin:
 * the realm uses it without knowing about HTTP.
 */
import type { Logger } from "pino";
import type { Identity } from "./authn/verify.js";
import type { ScopeDecision } from "./policy/engine.js";

/**
 * Where a component records what it decided for one request: an audit record and its message. Routes
 * pass one that adds the record to the request's access line (`auditToAccessLog` in
 * `plugins/access-log.ts`); without one, the component writes its own line.
 */
export type AuditSink = (record: Record<string, unknown>, msg: string) => void;

/** `sink`, or, without one, an {@link AuditSink} that writes the record as a line of its own on `logger`. */
export function auditSinkOr(sink: AuditSink | undefined, logger: Logger): AuditSink {
  return sink ?? ((record, msg) => logger.info({ audit: record }, msg));
}

/**
 * The rule names of every decision's `field`, each once, in first-seen order. A token request names a
 * few scopes and rules: a linear search beats building a Set on this path (one per request); past 32
 * names, a Set.
 */
function uniqueNames(decisions: readonly ScopeDecision[], field: "allowedBy" | "deniedBy"): string[] {
  const out: string[] = [];
  for (const decision of decisions) {
    for (const name of decision[field]) if (!out.includes(name)) out.push(name);
    // A policy whose rules all match: quadratic no more.
    if (out.length > 32) return [...new Set(decisions.flatMap((d) => d[field]))];
  }
  return out;
}

/**
 * The audit record of an issued registry token (`decision: "issued"`, message "token issued"): who
 * (cluster, namespace, service account, pod, the service-account token's `jti`), what was asked and
 * granted, which policy rules allowed or denied, and the issued token's `jti`. Never a token.
 */
export function issuedRecord(r: {
  /** Time of the decision, epoch milliseconds. */
  nowMs: number;
  identity: Identity;
  service: string;
  /** The requested scopes, formatted. */
  requested: string[];
  /** The granted scopes, formatted and joined by spaces ("" when nothing was granted). */
  grantedScope: string;
  decisions: readonly ScopeDecision[];
  jti: string;
  cacheHit: boolean;
  client: string | undefined;
}): Record<string, unknown> {
  return {
    decision: "issued",
    time: new Date(r.nowMs).toISOString(),
    cluster: r.identity.cluster,
    namespace: r.identity.namespace,
    serviceAccount: r.identity.serviceAccount.name,
    pod: r.identity.pod?.name,
    service: r.service,
    requested: r.requested,
    granted: r.grantedScope === "" ? [] : r.grantedScope.split(" "),
    rules: uniqueNames(r.decisions, "allowedBy"),
    deniedBy: uniqueNames(r.decisions, "deniedBy"),
    jti: r.jti,
    cacheHit: r.cacheHit,
    saTokenId: r.identity.tokenId,
    client: r.client,
  };
}
