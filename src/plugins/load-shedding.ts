/**
 * Bounds on concurrent work for the token endpoints (`/token`, `/v1/*`), so that no peer can take the
 * realm down by holding requests open:
 *
 * - **Concurrency slots** (`server.maxConcurrentRequests`): a request takes a slot when its handler starts,
 *   that is once its body is complete and the rate limit has counted it, and gives it back when the
 *   handler has finished, even when the client went away meanwhile (the work still runs, so it still
 *   counts). One more is refused at once with 503 `overloaded` and `Retry-After: 1`, in the endpoint's own
 *   error format. Why: when a dependency is slow (a JWKS fetch waiting for its timeout, Redis at its
 *   command timeout) requests pile up, each holding memory; refusing the excess quickly keeps memory
 *   bounded and the answers fast, and clients retry. A request whose body is still arriving holds no slot,
 *   so a peer that never finishes its bodies cannot starve anyone else of slots.
 * - **Stalled requests per address** (`server.maxStalledRequestsPerAddress`): a request whose body is
 *   still incomplete {@link STALL_GRACE_MS} after its headers counts against its client address
 *   (`request.ip`, see `server.trustProxy`) until the body is complete or the response closed; while an
 *   address has that many, its next request with a body is refused at once, before the body is read,
 *   with 429 `rate_limited` and `Retry-After: 1`. A peer with hundreds of stalled bodies only blocks
 *   itself.
 * - **Body timeout** (`server.bodyTimeoutMs`): a body not complete that long after the headers arrived is
 *   answered 408 `invalid_request` and the connection is closed, long before Node's `requestTimeout`.
 *
 * The counts are per process (each `--workers` worker and each replica has its own).
 */
import type {
  FastifyInstance,
  FastifyReply,
  FastifyRequest,
  HookHandlerDoneFunction,
  RouteHandlerMethod,
} from "fastify";
import { RequestError } from "../errors.js";
import { annotateAccessLog } from "./access-log.js";
import { sendError } from "./errors.js";
import { LIMITED } from "./rate-limit.js";

/** Limits of {@link registerLoadShedding} (the `server` config section). */
export interface LoadSheddingLimits {
  /** Most token-endpoint handlers running at once. */
  maxConcurrentRequests: number;
  /** Most token-endpoint requests one client address may have stalled (see {@link STALL_GRACE_MS}). */
  maxStalledRequestsPerAddress: number;
  /** The longest a request body may take to arrive after the headers, ms. */
  bodyTimeoutMs: number;
}

/**
 * A request with a body whose body is still incomplete this long after its headers counts as stalled
 * against its address, ms. Real clients send a token request's few hundred bytes of form with the
 * headers, so only a peer that holds its bodies back is counted, never a burst of ordinary requests.
 */
export const STALL_GRACE_MS = 1_000;

/** `hooks` (a route's hook option: absent, one or several) with `hook` added last. */
function withHook<H>(hooks: H | H[] | undefined, hook: H): H[] {
  if (hooks === undefined) return [hook];
  return Array.isArray(hooks) ? [...hooks, hook] : [hooks, hook];
}

/** Ends a request's body wait (idempotent): once its body is complete or its response closed. */
const bodyDone = new WeakMap<FastifyRequest, () => void>();

/** Whether a request announces a body (RFC 9112 §6.3: Content-Length or Transfer-Encoding). */
function hasBody(request: FastifyRequest): boolean {
  const length = request.headers["content-length"];
  return request.headers["transfer-encoding"] !== undefined || (length !== undefined && length !== "0");
}

/**
 * Answers 408 on a request whose body is late and closes its connection. The answer is sent through
 * the normal reply (access line, error format); `Connection: close` makes Node close the socket after it,
 * which ends the body read as well.
 */
function timeOutBody(request: FastifyRequest, reply: FastifyReply, ms: number): void {
  if (reply.sent || reply.raw.headersSent) return;
  const err = new RequestError("invalid_request", `the request body was not received within ${ms} ms`, {
    statusCode: 408,
  });
  const cfg = request.routeOptions.config;
  annotateAccessLog(request, { code: err.code, detail: { bodyTimeoutMs: ms } }, "request rejected");
  reply.header("connection", "close");
  sendError(reply, err, cfg?.errorFormat ?? "docker", false);
}

/**
 * Registers the limits. Must be called before the token routes are registered (it wraps their handlers).
 * @param limits the `server` config section's limits
 * @returns a function that tells how many token-endpoint handlers are running now (for tests and
 *   diagnostics)
 */
export function registerLoadShedding(app: FastifyInstance, limits: LoadSheddingLimits): () => number {
  const max = limits.maxConcurrentRequests;
  let inFlight = 0;
  /** Stalled requests per client address. */
  const stalled = new Map<string, number>();
  /**
   * Starts the stall and body timers of a request that announces a body; refuses it at once when its
   * address already has too many stalled requests.
   */
  const watchBody = (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) => {
    if (!hasBody(request)) {
      done();
      return;
    }
    const address = request.ip;
    const count = stalled.get(address) ?? 0;
    if (count >= limits.maxStalledRequestsPerAddress) {
      done(
        new RequestError(
          "rate_limited",
          "too many unfinished requests from this address: finish or close them first",
          { retryAfterSeconds: 1, logDetail: { stalled: count, max: limits.maxStalledRequestsPerAddress } },
        ),
      );
      return;
    }
    let counted = false;
    const stallTimer = setTimeout(() => {
      counted = true;
      stalled.set(address, (stalled.get(address) ?? 0) + 1);
    }, STALL_GRACE_MS);
    const bodyTimer = setTimeout(
      () => timeOutBody(request, reply, limits.bodyTimeoutMs),
      limits.bodyTimeoutMs,
    );
    stallTimer.unref();
    bodyTimer.unref();
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      clearTimeout(stallTimer);
      clearTimeout(bodyTimer);
      if (!counted) return;
      const left = (stalled.get(address) ?? 1) - 1;
      if (left <= 0) stalled.delete(address);
      else stalled.set(address, left);
    };
    bodyDone.set(request, release);
    reply.raw.once("close", release);
    done();
  };
  // preValidation runs once the body has been read and parsed.
  const bodyRead = (request: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction) => {
    bodyDone.get(request)?.();
    done();
  };
  // Everything is attached to the token-endpoint routes themselves (decided once per route, here), so
  // other routes (`/healthz`, `/metrics`) run none of it. Route-level hooks run after the app's own
  // (request-limits.ts first).
  app.addHook("onRoute", (route) => {
    if (!LIMITED.test(route.url)) return;
    route.onRequest = withHook(route.onRequest, watchBody);
    route.preValidation = withHook(route.preValidation, bodyRead);
    const handler = route.handler as RouteHandlerMethod;
    // Not an async function around the (async) handler: its promise is passed on with the slot
    // released when it settles, one promise less per request than `return await`.
    route.handler = function limited(this: FastifyInstance, request, reply) {
      if (inFlight >= max) {
        return Promise.reject(
          new RequestError(
            "overloaded",
            "the service is busy: too many requests in progress, retry shortly",
            {
              retryAfterSeconds: 1,
              logDetail: { inFlight, max },
            },
          ),
        );
      }
      inFlight++;
      let result: unknown;
      try {
        result = handler.call(this, request, reply);
      } catch (err) {
        inFlight--;
        return Promise.reject(err);
      }
      if (!(result instanceof Promise)) {
        inFlight--;
        return Promise.resolve(result);
      }
      return result.then(
        (value: unknown) => {
          inFlight--;
          return value;
        },
        (err: unknown) => {
          inFlight--;
          throw err;
        },
      );
    };
  });
  return () => inFlight;
}
