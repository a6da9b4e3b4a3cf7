/**
 * Logger set-up. Secrets never reach a log line: the request serializer logs the route and only the
 * non-secret query parameters of the token realm, never headers or bodies, and pino `redact` removes
 * Authorization and cookie headers, passwords, tokens and bodies from a line and from the objects a line
 * carries (a request's headers, an error, its detail).
 */
import cluster from "node:cluster";
import type { FastifyRequest } from "fastify";
import pino, { type DestinationStream, type Logger } from "pino";

/** Field names that hold secrets: credentials, tokens, passwords, request bodies and Authorization headers. */
const SECRET_FIELDS = [
  "authorization",
  "cookie",
  '["proxy-authorization"]',
  "password",
  "token",
  "access_token",
  "refresh_token",
  "subject_token",
  "serviceAccountToken",
  "credential",
  "body",
];

/**
 * Objects a log line of this service carries that could hold such a field: the line itself, a request
 * (or its headers), an error and its `detail`.
 */
const CONTAINERS = ["", "headers", "req.headers", "err", "detail"];

/**
 * Paths pino removes from every log object: every secret field name at the top level and inside every
 * container above. Exact paths only: pino 10's redaction (@pinojs/redact) evaluates a wildcard path
 * (`*.token`) against every key of every line, which cost ~7 us per line against ~1 us for these
 * (bench/README.md). Nothing the service logs is built from a raw request: the request serializer keeps
 * only safe fields, and the hostile-input suite checks that no credential reaches a line.
 */
const REDACT_PATHS: readonly string[] = CONTAINERS.flatMap((container) =>
  SECRET_FIELDS.map((field) => {
    if (container === "") return field.replace(/^\["(.*)"\]$/, "$1");
    return field.startsWith("[") ? `${container}${field}` : `${container}.${field}`;
  }),
);

/** Query parameters that are safe to log (everything else is dropped from logged URLs). */
const SAFE_QUERY = new Set(["service", "scope", "client_id", "offline_token", "account"]);

/**
 * The safe query parameters of a request target (`/token?service=...&scope=...`), each cut to 300
 * characters, in order; `undefined` when the target has no query. Decoded as URLSearchParams does
 * (application/x-www-form-urlencoded: `+` is a space, percent-escapes are UTF-8); a pair that
 * `decodeURIComponent` cannot decode is left to URLSearchParams, so the result is the same for any input.
 */
function safeQuery(url: string): Record<string, string[]> | undefined {
  const q = url.indexOf("?");
  if (q < 0) return undefined;
  const safe: Record<string, string[]> = {};
  const query = url.slice(q + 1);
  // URLSearchParams drops one leading "?" of its input.
  let start = query.startsWith("?") ? 1 : 0;
  while (start <= query.length) {
    let end = query.indexOf("&", start);
    if (end < 0) end = query.length;
    if (end > start) {
      const pair = query.slice(start, end);
      const eq = pair.indexOf("=");
      const rawKey = eq < 0 ? pair : pair.slice(0, eq);
      const rawValue = eq < 0 ? "" : pair.slice(eq + 1);
      let key: string;
      let value: string;
      try {
        key = rawKey.indexOf("%") < 0 && rawKey.indexOf("+") < 0 ? rawKey : formDecode(rawKey);
        value = formDecode(rawValue);
      } catch {
        // Malformed percent-escapes: URLSearchParams keeps them as they are.
        const one = new URLSearchParams(`&${pair}`).entries().next().value as [string, string];
        [key, value] = one;
      }
      if (SAFE_QUERY.has(key)) {
        const list = safe[key] ?? [];
        list.push(value.slice(0, 300));
        safe[key] = list;
      }
    }
    start = end + 1;
  }
  return safe;
}

/** One form-encoded name or value, decoded (`+` is a space). @throws {URIError} on a malformed escape */
function formDecode(raw: string): string {
  const spaced = raw.indexOf("+") < 0 ? raw : raw.replaceAll("+", " ");
  return spaced.indexOf("%") < 0 ? spaced : decodeURIComponent(spaced);
}

/**
 * The logger's `req` serializer: logs method, route and safe query parameters; never headers or bodies.
 * The path is logged as the matched route pattern (`/token`), never as sent: a client may paste a
 * credential into a path, and an unmatched path is logged as `(no route)`. Exported so that the access
 * line (`plugins/access-log.ts`) can tell a logger that uses it.
 */
export function serializeRequest(req: FastifyRequest): Record<string, unknown> {
  const out: Record<string, unknown> = {
    method: req.method,
    path: req.routeOptions?.url ?? "(no route)",
    remoteAddress: req.ip,
  };
  const query = safeQuery(req.url ?? "");
  if (query !== undefined) out.query = query;
  return out;
}

/**
 * The `req` field of a request's log line as JSON text: exactly what the logger writes for
 * `{ req: request }` (the {@link serializeRequest} object, then redaction), built without the logger's
 * generic path for the access line (`plugins/access-log.ts`). Redaction has nothing to remove from it:
 * its only paths under `req` are `req.headers.*`, and this object never has headers.
 * @param route the matched route pattern, `undefined` when no route matched
 */
export function requestLogJson(req: FastifyRequest, route: string | undefined): string {
  const ip = req.ip;
  let json = `{"method":${JSON.stringify(req.method)},"path":${JSON.stringify(route ?? "(no route)")}`;
  if (ip !== undefined) json += `,"remoteAddress":${JSON.stringify(ip)}`;
  const query = safeQuery(req.url ?? "");
  if (query !== undefined) json += `,"query":${JSON.stringify(query)}`;
  return `${json}}`;
}

/** The node:cluster worker id of this process under `serve --workers N`, else undefined. */
function workerId(): number | undefined {
  return cluster.isWorker ? cluster.worker?.id : undefined;
}

/**
 * Request ids for fastify's `genReqId`: `req-<n>` in a single process, `req-w<worker>-<n>` in a worker of
 * `serve --workers N`, so ids never repeat across the workers of one service process (node:cluster never
 * reuses a worker id, replacements included).
 * @returns a generator of fresh ids
 */
export function requestIdGenerator(): () => string {
  const worker = workerId();
  const prefix = worker === undefined ? "req-" : `req-w${worker}-`;
  let n = 0;
  return () => `${prefix}${++n}`;
}

/**
 * Creates the service logger. Every line carries `service`, and `worker` (the node:cluster worker id)
 * in a worker of `serve --workers N`.
 * @param level pino level
 * @param destination where lines go (stdout, written synchronously, by default; tests capture them)
 */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      redact: { paths: [...REDACT_PATHS], censor: "[redacted]" },
      serializers: { req: serializeRequest as never },
      base: {
        service: "registry-token-exchange",
        ...(workerId() === undefined ? {} : { worker: workerId() }),
      },
    },
    // Synchronous: pino's default stdout stream writes through the libuv thread pool, which it shares
    // with every WebCrypto verification; under load its unbounded buffer grew by 50 MB and more (peak RSS
    // 587 -> 368 MiB over 300k requests, bench/README.md), and an audit line still buffered is lost on a crash.
    destination ?? pino.destination({ dest: 1, sync: true }),
  );
}
