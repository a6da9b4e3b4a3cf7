/**
 * Audit records: what the realm and the routes decided for one request (a token issued, a credential
 * refused), written as the `audit` field of the request's access line (`plugins/access-log.ts`) or, for
 * callers without a request (the CLI, tests), as a line of its own. A plain module, not a fastify plugin:
 * the realm uses it without knowing about HTTP.
 */
import type { Logger } from "pino";

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
