/**
 * Fixed caps on the size of a request, checked first (onRequest, before the body is read), so that an
 * oversized request is refused in the endpoint's own JSON error format and costs no work:
 * - the request target (path and query) at most {@link MAX_URL_BYTES}: 414 `invalid_request`;
 * - the header section (names and values) at most {@link MAX_HEADER_BYTES}: 431 `invalid_request`.
 *
 * Node's own limit on the request line plus headers ({@link NODE_MAX_HEADER_SIZE}, raised from Node's
 * 16 KiB default in `app.ts`) sits above both, so a request up to that size gets these JSON answers;
 * past it Node itself answers a bare `431` without a body and closes the connection, before any of this
 * service's code runs. The other caps: the body (`server.bodyLimitBytes`, 413), the Authorization header
 * (`authn/credentials.ts`, 401) and the service-account token (`authn/verify.ts`, 401).
 */
import type { FastifyInstance } from "fastify";
import { RequestError } from "../errors.js";

/** Longest accepted request target (path and query), bytes. */
const MAX_URL_BYTES = 8 * 1024;
/** Largest accepted header section (every name and value, plus their separators), bytes. */
export const MAX_HEADER_BYTES = 16 * 1024;
/**
 * Node's `maxHeaderSize` for the listener (request line plus headers), bytes: above both caps so that
 * they, not Node's bare 431, answer. Node's default is 16 KiB, which would refuse a request whose
 * Authorization header alone exceeds it before this service could answer in JSON.
 */
export const NODE_MAX_HEADER_SIZE = 32 * 1024;

/** Registers the size checks on every route (and on unknown paths). */
export function registerRequestLimits(app: FastifyInstance): void {
  app.addHook("onRequest", (request, _reply, done) => {
    // Node decodes the request line and headers as latin1: one character per byte.
    const url = request.raw.url ?? "";
    if (url.length > MAX_URL_BYTES) {
      done(
        new RequestError("invalid_request", `request URL is longer than ${MAX_URL_BYTES} bytes`, {
          statusCode: 414,
        }),
      );
      return;
    }
    const raw = request.raw.rawHeaders ?? [];
    let size = 0;
    // name + ": " + value + CRLF
    for (let i = 0; i < raw.length; i++) size += raw[i]!.length + 2;
    if (size > MAX_HEADER_BYTES) {
      done(
        new RequestError("invalid_request", `request headers are larger than ${MAX_HEADER_BYTES} bytes`, {
          statusCode: 431,
        }),
      );
      return;
    }
    done();
  });
}
