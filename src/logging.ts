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
 * Logs method, route and safe query parameters; never headers or bodies. The path is logged as the
 * matched route pattern (`/token`), never as sent: a client may paste a credential into a path, and an
 * unmatched path is logged as `(no route)`.
 */
function serializeRequest(req: FastifyRequest): Record<string, unknown> {
  const url = req.url ?? "";
  const q = url.indexOf("?");
  const out: Record<string, unknown> = {
    method: req.method,
    path: req.routeOptions?.url ?? "(no route)",
    remoteAddress: req.ip,
  };
  if (q >= 0) {
    const params = new URLSearchParams(url.slice(q + 1));
    const safe: Record<string, string[]> = {};
    for (const [k, v] of params) {
      if (!SAFE_QUERY.has(k)) continue;
      const list = safe[k] ?? [];
      list.push(v.slice(0, 300));
      safe[k] = list;
    }
    out.query = safe;
  }
  return out;
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
