/**
 * Logger set-up. Secrets never reach a log line: pino `redact` removes Authorization and cookie headers,
 * passwords and tokens wherever they appear in a logged object, and the request serializer logs the
 * path and only the non-secret query parameters of the token realm.
 */
import type { FastifyRequest } from "fastify";
import pino, { type DestinationStream, type Logger } from "pino";

/** Paths pino removes from every log object. */
export const REDACT_PATHS = [
  "req.headers.authorization",
  "req.headers.cookie",
  "req.headers['proxy-authorization']",
  "headers.authorization",
  "headers.cookie",
  "authorization",
  "password",
  "token",
  "access_token",
  "refresh_token",
  "subject_token",
  "serviceAccountToken",
  "credential",
  "*.password",
  "*.token",
  "*.access_token",
  "*.refresh_token",
  "*.subject_token",
  "*.serviceAccountToken",
  "*.credential",
  "body",
  "*.body",
];

/** Query parameters that are safe to log (everything else is dropped from logged URLs). */
const SAFE_QUERY = new Set(["service", "scope", "client_id", "offline_token", "account"]);

/**
 * Logs method, route and safe query parameters; never headers or bodies. The path is logged as the
 * matched route pattern (`/token`), never as sent: a client may paste a credential into a path, and an
 * unmatched path is logged as `(no route)`.
 */
export function serializeRequest(req: FastifyRequest): Record<string, unknown> {
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

/**
 * Creates the service logger.
 * @param level pino level
 * @param destination where lines go (stdout, written synchronously, by default; tests capture them)
 */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      redact: { paths: REDACT_PATHS, censor: "[redacted]" },
      serializers: { req: serializeRequest as never },
      base: { service: "registry-token-exchange" },
    },
    // Synchronous: pino's default stdout stream writes through the libuv thread pool, which it shares
    // with every WebCrypto verification; under load its unbounded buffer grew by 50 MB and more (peak RSS
    // 587 -> 368 MiB over 300k requests, bench/README.md), and an audit line still buffered is lost on a crash.
    destination ?? pino.destination({ dest: 1, sync: true }),
  );
}
