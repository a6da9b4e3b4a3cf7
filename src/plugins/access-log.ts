/**
 * One access line per request. fastify's own request logging (an "incoming request" and a "request
 * completed" line) is turned off; instead, when the response has been sent (or the client went away),
 * exactly one line is written at `info`:
 *
 *   {"reqId":"req-1","req":{"method":"GET","path":"/token",...},"res":{"statusCode":200},
 *    "responseTime":1.9,"audit":{"decision":"issued",...},"msg":"token issued"}
 *
 * What a handler learns on the way (the audit record of an issued or refused token, the code of a
 * rejected request) is added to that line with {@link annotateAccessLog} instead of being written as a
 * line of its own, and the line takes the most specific message given ("token issued", "credential
 * denied", "request rejected"; else "request completed"). One line per request instead of three or four
 * keeps an operator's request and its decision together and costs one redaction and one write instead of
 * several (bench/README.md).
 *
 * Server errors (5xx) still get their own `error` line with the cause, when they happen.
 */
import { type FastifyInstance, type FastifyReply, type FastifyRequest, LogController } from "fastify";
import type { AuditSink } from "../audit.js";

/** Fields and message of the access line being built for one request. */
interface AccessLogEntry {
  msg: string;
  /** 0: default message; 1: set by {@link annotateAccessLog}; 2: set by an audit record (wins). */
  msgRank: number;
  fields: Record<string, unknown>;
  written: boolean;
}

declare module "fastify" {
  interface FastifyRequest {
    /** The access line of this request (see `plugins/access-log.ts`), created on first use. */
    accessLog: AccessLogEntry | null;
  }
}

/** Message of a request whose handlers added no message of their own. */
const DEFAULT_ACCESS_MESSAGE = "request completed";

function entryOf(request: FastifyRequest): AccessLogEntry {
  request.accessLog ??= { msg: DEFAULT_ACCESS_MESSAGE, msgRank: 0, fields: {}, written: false };
  return request.accessLog;
}

function annotate(
  request: FastifyRequest,
  fields: Record<string, unknown>,
  msg: string | undefined,
  rank: number,
) {
  const entry = entryOf(request);
  if (entry.written) {
    // The client went away and its line is written; what the handler decided afterwards (a token it
    // still issued) gets a line of its own rather than being lost.
    request.log.info({ req: request, aborted: true, ...fields }, msg ?? DEFAULT_ACCESS_MESSAGE);
    return;
  }
  Object.assign(entry.fields, fields);
  if (msg !== undefined && rank >= entry.msgRank) {
    entry.msg = msg;
    entry.msgRank = rank;
  }
}

/**
 * Adds `fields` to the request's access line (later fields of the same name replace earlier ones) and,
 * when given, makes `msg` its message unless an audit record has set one.
 */
export function annotateAccessLog(
  request: FastifyRequest,
  fields: Record<string, unknown>,
  msg?: string,
): void {
  annotate(request, fields, msg, 1);
}

/**
 * Puts an audit record under `audit` on the request's access line, with its message (`"token issued"`,
 * `"credential denied"`, ...), which wins over any other.
 */
export function auditAccessLog(request: FastifyRequest, record: Record<string, unknown>, msg: string): void {
  annotate(request, { audit: record }, msg, 2);
}

/** An {@link AuditSink} that puts the record on the request's access line ({@link auditAccessLog}). */
export function auditToAccessLog(request: FastifyRequest): AuditSink {
  return (record, msg) => auditAccessLog(request, record, msg);
}

function write(request: FastifyRequest, reply: FastifyReply | undefined): void {
  const entry = entryOf(request);
  if (entry.written) return;
  entry.written = true;
  request.log.info(
    reply
      ? {
          req: request,
          res: { statusCode: reply.statusCode },
          responseTime: Math.round(reply.elapsedTime * 100) / 100,
          ...entry.fields,
        }
      : { req: request, aborted: true, ...entry.fields },
    entry.msg,
  );
}

/**
 * Registers the access line. fastify must be built with its own request logging off
 * ({@link accessLogController}).
 * `responseTime` is in milliseconds, from the start of the request to the end of the response; a request
 * whose client disconnected first is logged at once with `aborted: true` instead of `res` and
 * `responseTime`.
 */
export function registerAccessLog(app: FastifyInstance): void {
  app.decorateRequest("accessLog", null);
  app.addHook("onResponse", (request, reply, done) => {
    write(request, reply);
    done();
  });
  app.addHook("onRequestAbort", (request, done) => {
    write(request, undefined);
    done();
  });
}

/**
 * fastify's log controller with its per-request lines ("incoming request", "request completed") turned
 * off: {@link registerAccessLog} writes the one line instead. fastify's other lines (a 503 while closing,
 * serializer failures) stay.
 */
export function accessLogController(): LogController {
  return new LogController({ disableRequestLogging: true });
}
