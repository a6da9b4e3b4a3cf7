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
import {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  LogController,
} from "fastify";
import pino, { type Logger } from "pino";
import type { AuditSink } from "../audit.js";
import { requestLogJson, serializeRequest } from "../logging.js";

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

/** pino's level number of `info`. */
const INFO = 30;

/**
 * The pino logger internals this module reads, by their `pino.symbols` names (exported by pino for this
 * kind of use; `msgPrefixSym` is missing from its type declarations).
 */
const SYM = pino.symbols as unknown as Record<
  | "chindingsSym"
  | "endSym"
  | "formattersSym"
  | "hooksSym"
  | "lsCacheSym"
  | "messageKeySym"
  | "mixinSym"
  | "msgPrefixSym"
  | "needsMetadataGsym"
  | "nestedKeySym"
  | "serializersSym"
  | "streamSym"
  | "stringifiersSym"
  | "stringifySafeSym"
  | "stringifySym"
  | "timeSym",
  symbol
>;

/** A pino logger seen through its symbols (see {@link directLine}); every value is checked before use. */
type PinoInternals = Record<symbol, unknown>;
/** The destination stream of a pino logger. */
type Destination = { write: (line: string) => unknown } & Record<symbol, unknown>;
/** A serializer or stringifier of pino, per field name. */
type FieldFunctions = Record<string, ((value: unknown) => unknown) | undefined>;

/**
 * Whether `log` is a plain pino logger whose line this module can build itself, byte for byte as
 * `log.info(obj, msg)` would: this service's `req` serializer (`logging.ts`), no mixin, log formatter, hooks, message prefix, nested key or custom
 * message key, and a destination that does not ask for line metadata (pino's multistream). Any other
 * logger gets the line through `log.info`.
 */
function isPlainPino(log: PinoInternals): boolean {
  const stream = log[SYM.streamSym] as Destination | undefined;
  const hooks = log[SYM.hooksSym] as { logMethod?: unknown; streamWrite?: unknown } | undefined;
  const formatters = log[SYM.formattersSym] as { log?: unknown } | undefined;
  const serializers = log[SYM.serializersSym] as FieldFunctions | undefined;
  const stringifiers = log[SYM.stringifiersSym] as FieldFunctions | undefined;
  return (
    // `req` is written by hand: only for this service's serializer.
    serializers?.req === serializeRequest &&
    stringifiers !== undefined &&
    typeof stream?.write === "function" &&
    stream[SYM.needsMetadataGsym] !== true &&
    typeof log[SYM.timeSym] === "function" &&
    typeof (log[SYM.lsCacheSym] as Record<number, unknown> | undefined)?.[INFO] === "string" &&
    typeof log[SYM.chindingsSym] === "string" &&
    typeof log[SYM.endSym] === "string" &&
    log[SYM.messageKeySym] === "msg" &&
    !log[SYM.mixinSym] &&
    !log[SYM.msgPrefixSym] &&
    !log[SYM.nestedKeySym] &&
    !formatters?.log &&
    !hooks?.logMethod &&
    !hooks?.streamWrite
  );
}

/**
 * One field of a line (`,"key":value`) exactly as pino's `asJson` writes it: the key's serializer, then
 * its stringifier (which is where redaction happens: `logging.ts` REDACT_PATHS), else pino's stringify;
 * "" when the value is dropped (undefined, a function).
 */
function pinoField(log: PinoInternals, key: string, value: unknown): string {
  if (value === undefined) return "";
  const serializer = (log[SYM.serializersSym] as FieldFunctions)[key];
  let v = serializer ? serializer(value) : value;
  const stringifier = (log[SYM.stringifiersSym] as FieldFunctions)[key];
  switch (typeof v) {
    case "undefined":
    case "function":
      return "";
    case "number":
      if (!Number.isFinite(v)) v = null;
      if (stringifier) v = stringifier(v);
      break;
    case "boolean":
      if (stringifier) v = stringifier(v);
      break;
    case "string":
      v = stringifier ? stringifier(v) : JSON.stringify(v);
      break;
    default: {
      const stringify = log[SYM.stringifySym] as (value: unknown, safe: unknown) => string | undefined;
      v = stringifier ? stringifier(v) : stringify(v, log[SYM.stringifySafeSym]);
    }
  }
  return v === undefined ? "" : `,${JSON.stringify(key)}:${v as string}`;
}

/**
 * The access line of a request built without pino's generic path (per-field serializer lookups, the
 * redaction clone of `req`, the line's intermediate object): the same line, field for field and in the
 * same order, as `log.info({ req, res, responseTime, ...fields }, msg)` writes, written to the same
 * destination. `req` comes from {@link requestLogJson} (what this service's `req` serializer gives, with
 * nothing to redact); every other field goes through pino's own serializers and redacting stringifiers
 * ({@link pinoField}). Returns false, writing nothing, for a logger it cannot imitate exactly
 * ({@link isPlainPino}).
 */
function directLine(
  request: FastifyRequest,
  route: string | undefined,
  reply: FastifyReply | undefined,
  entry: AccessLogEntry,
): boolean {
  const log = request.log as unknown as PinoInternals;
  if (!isPlainPino(log)) return false;
  const levelAndTime = `${(log[SYM.lsCacheSym] as Record<number, string>)[INFO]}${(log[SYM.timeSym] as () => string)()}`;
  let line = `${levelAndTime}${log[SYM.chindingsSym] as string},"req":${requestLogJson(request, route)}`;
  // Through pino's serializers like any other field (fastify adds a `res` serializer to its logger).
  line += reply
    ? pinoField(log, "res", { statusCode: reply.statusCode }) +
      pinoField(log, "responseTime", Math.round(reply.elapsedTime * 100) / 100)
    : pinoField(log, "aborted", true);
  const fields = entry.fields;
  for (const key in fields) line += pinoField(log, key, fields[key]);
  const end = log[SYM.endSym] as string;
  (log[SYM.streamSym] as Destination).write(`${line},"msg":${JSON.stringify(entry.msg)}${end}`);
  return true;
}

/**
 * Writes the request's access line (once).
 * @param route the matched route pattern (`request.routeOptions.url`), `undefined` when none matched
 * @param reply the reply, or `undefined` when the client went away first
 */
function write(request: FastifyRequest, route: string | undefined, reply: FastifyReply | undefined): void {
  const entry = entryOf(request);
  if (entry.written) return;
  entry.written = true;
  const log: FastifyBaseLogger = request.log;
  const pinoLog = log as Partial<Pick<Logger, "isLevelEnabled">>;
  if (typeof pinoLog.isLevelEnabled === "function") {
    if (!pinoLog.isLevelEnabled("info")) return;
    if (directLine(request, route, reply, entry)) return;
  }
  log.info(
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
 * Something else to do once a response has been sent, in the same hook as the access line (one hook
 * instead of two; e.g. the request metrics of `plugins/metrics.ts`).
 * @param route the matched route pattern, `undefined` when no route matched
 */
export type OnResponse = (request: FastifyRequest, reply: FastifyReply, route: string | undefined) => void;

/**
 * Registers the access line. fastify must be built with its own request logging off
 * ({@link accessLogController}).
 * `responseTime` is in milliseconds, from the start of the request to the end of the response; a request
 * whose client disconnected first is logged at once with `aborted: true` instead of `res` and
 * `responseTime`.
 * @param also run after the access line of every answered request (not of aborted ones)
 */
export function registerAccessLog(app: FastifyInstance, also?: OnResponse): void {
  app.decorateRequest("accessLog", null);
  app.addHook("onResponse", (request, reply, done) => {
    // One read of routeOptions (a getter that builds an object) for the line and `also`.
    const route = request.routeOptions.url;
    write(request, route, reply);
    also?.(request, reply, route);
    done();
  });
  app.addHook("onRequestAbort", (request, done) => {
    write(request, request.routeOptions.url, undefined);
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
