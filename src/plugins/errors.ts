/**
 * The one error serializer. Every error leaves in the wire format of the endpoint that raised it:
 * - `docker` (default; the GET token realm and every other route): distribution-style
 *   `{"errors":[{"code","message","detail":{"reason"}}]}` (distribution registry/api/errcode), which
 *   docker, containerd and containers/image print as `<code>: <message>`;
 * - `oauth` (`POST /token`): RFC 6749 §5.2 `{"error","error_description"}`.
 * Status >= 500 answers a generic message; the detail goes to the log only. No stack trace, no token.
 */

import { STATUS_CODES } from "node:http";
import type { Socket } from "node:net";
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { type ErrorCode, RequestError } from "../errors.js";
import { annotateAccessLog } from "./access-log.js";
import { NODE_MAX_HEADER_SIZE } from "./request-limits.js";

/** Which wire format a route's errors use; set per route as `config: { errorFormat }`. */
export type ErrorFormat = "docker" | "oauth";

declare module "fastify" {
  interface FastifyContextConfig {
    /** Wire format of this route's errors (default `docker`). */
    errorFormat?: ErrorFormat;
    /** Send `WWW-Authenticate: Basic` with 401 answers (token realm GET). */
    basicChallenge?: boolean;
  }
}

/** distribution errcode values by HTTP status. */
function dockerCode(status: number): string {
  if (status === 401) return "UNAUTHORIZED";
  if (status === 403) return "DENIED";
  if (status === 429) return "TOOMANYREQUESTS";
  if (status === 503) return "UNAVAILABLE";
  if (status >= 500) return "UNKNOWN";
  return "UNSUPPORTED";
}

/** RFC 6749 §5.2 / RFC 8693 §2.2.2 error values by our code. */
function oauthError(code: ErrorCode, status: number): string {
  switch (code) {
    case "invalid_scope":
      return "invalid_scope";
    case "unsupported_grant_type":
      return "unsupported_grant_type";
    case "invalid_target":
      return "invalid_target";
    case "access_denied":
      return "access_denied";
    // RFC 6749 §5.2: a missing required parameter (the password) is invalid_request, not invalid_grant.
    case "missing_credentials":
    case "invalid_request":
    case "unknown_service":
    case "unsupported_media_type":
    case "payload_too_large":
      return "invalid_request";
    case "keys_unavailable":
    case "token_review_unavailable":
    case "rate_limited":
    case "overloaded":
      return "temporarily_unavailable";
    case "internal":
    case "not_found":
      return status >= 500 ? "server_error" : "invalid_request";
    default:
      return "invalid_grant";
  }
}

/** Converts anything thrown into an {@link RequestError} safe to render. */
export function toRequestError(err: unknown): RequestError {
  if (err instanceof RequestError) return err;
  const fe = err as Partial<FastifyError> & { status?: number };
  const status = fe.statusCode ?? fe.status;
  if (typeof status === "number" && status >= 400 && status < 500) {
    if (status === 413) return new RequestError("payload_too_large", "request body is too large");
    if (status === 415) {
      return new RequestError("unsupported_media_type", "unsupported Content-Type for this endpoint", {
        statusCode: 415,
      });
    }
    if (status === 429)
      return new RequestError("rate_limited", "too many requests", { retryAfterSeconds: 1 });
    if (status === 404) return new RequestError("not_found", "not found");
    return new RequestError("invalid_request", "malformed request", {
      statusCode: 400,
      logDetail: { fastifyCode: fe.code, message: fe.message },
    });
  }
  return new RequestError("internal", "internal error", { cause: err });
}

/**
 * Renders `err` on `reply` in the route's format.
 * @param format wire format; `docker` when the route does not say
 */
export function sendError(
  reply: FastifyReply,
  err: RequestError,
  format: ErrorFormat,
  basicChallenge: boolean,
): FastifyReply {
  const status = err.statusCode;
  const message = status >= 500 && err.code === "internal" ? "internal error" : err.message;
  if (err.retryAfterSeconds !== undefined && (status === 429 || status === 503)) {
    reply.header("retry-after", String(err.retryAfterSeconds));
  }
  if (status === 401 && basicChallenge)
    reply.header("www-authenticate", 'Basic realm="registry-token-exchange"');
  reply.header("cache-control", "no-store");
  reply.code(status).type("application/json; charset=utf-8");
  if (format === "oauth") {
    return reply.send({ error: oauthError(err.code, status), error_description: message });
  }
  return reply.send({ errors: [{ code: dockerCode(status), message, detail: { reason: err.code } }] });
}

/**
 * fastify's `clientErrorHandler`: answers a request Node's parser refused (request line and headers over
 * {@link NODE_MAX_HEADER_SIZE}, a malformed request, headers too slow) in the distribution format, then
 * closes the connection. It logs the parser's error code only: the error object carries the raw request
 * bytes (`rawPacket`), Authorization header included, which fastify's default handler logs at trace level.
 */
export function handleClientError(
  this: FastifyInstance,
  err: Error & { code?: string },
  socket: Socket,
): void {
  if (err.code === "ECONNRESET" || socket.destroyed) return;
  let status = 400;
  let message = "malformed HTTP request";
  if (err.code === "HPE_HEADER_OVERFLOW") {
    status = 431;
    message = `request line and headers are larger than ${NODE_MAX_HEADER_SIZE} bytes`;
  } else if (err.code === "ERR_HTTP_REQUEST_TIMEOUT") {
    status = 408;
    message = "the request was not received in time";
  }
  this.log.debug({ code: err.code, status }, "client error");
  const body = JSON.stringify({
    errors: [{ code: dockerCode(status), message, detail: { reason: "invalid_request" } }],
  });
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

/**
 * Registers the error and not-found handlers on `app`.
 * Client errors are logged at info with their code; server errors at error with the cause, except
 * `overloaded` (load shedding), which gets one warn line without a stack.
 */
export function registerErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((error: unknown, request: FastifyRequest, reply: FastifyReply) => {
    const err = toRequestError(error);
    const cfg = request.routeOptions.config;
    if (err.code === "overloaded") {
      // Expected under load and not a fault of this request: one line, no stack.
      request.log.warn(
        { code: err.code, detail: err.logDetail },
        "request shed: too many requests in progress",
      );
      annotateAccessLog(request, { code: err.code }, "request shed");
    } else if (err.statusCode >= 500) {
      request.log.error({ err: error, code: err.code, detail: err.logDetail }, "request failed");
      annotateAccessLog(request, { code: err.code }, "request failed");
    } else {
      annotateAccessLog(request, { code: err.code, detail: err.logDetail }, "request rejected");
    }
    return sendError(reply, err, cfg?.errorFormat ?? "docker", cfg?.basicChallenge ?? false);
  });
  app.setNotFoundHandler((request: FastifyRequest, reply: FastifyReply) => {
    // The path is not echoed: a client may have put a credential in it.
    const err = new RequestError("not_found", `no such endpoint for ${request.method}`);
    annotateAccessLog(request, { code: err.code }, "request rejected");
    return sendError(reply, err, "docker", false);
  });
}
