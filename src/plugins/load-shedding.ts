/**
 * A bound on concurrent work: at most `server.maxConcurrentRequests` requests to the token endpoints
 * (`/token`, `/v1/*`) are processed at once. One more is refused at once, before its body is read, with
 * 503 `overloaded` and `Retry-After: 1`, in the endpoint's own error format. Why: when a dependency is
 * slow (a JWKS fetch waiting for its timeout, Redis at its command timeout) requests pile up, each holding
 * memory; refusing the excess quickly keeps memory bounded and the answers fast, and clients retry.
 *
 * A slot is taken when the request arrives and given back when its handler has finished, even when the
 * client went away meanwhile (the work still runs, so it still counts); a request that never reaches its
 * handler (rate limited, body too large, client gone while sending) gives it back when its response is
 * closed. The count is per process (each `--workers` worker and each replica has its own).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteHandlerMethod } from "fastify";
import { ExchangeError } from "../errors.js";
import { LIMITED } from "./rate-limit.js";

/** How a request holds its slot. */
interface Slot {
  /** Gives the slot back (idempotent). */
  release: () => void;
  /** Set once the route handler runs: from then on only the handler's end releases it. */
  handlerStarted: boolean;
}

const slots = new WeakMap<FastifyRequest, Slot>();

/**
 * Registers the limiter. Must be called before the token routes are registered (it wraps their handlers).
 * @param max most token-endpoint requests in flight at once
 * @returns a function that tells how many are in flight now (for tests and diagnostics)
 */
export function registerLoadShedding(app: FastifyInstance, max: number): () => number {
  let inFlight = 0;
  app.addHook("onRoute", (route) => {
    if (!LIMITED.test(route.url)) return;
    const handler = route.handler as RouteHandlerMethod;
    route.handler = async function limited(this: FastifyInstance, request, reply) {
      const slot = slots.get(request);
      if (slot) slot.handlerStarted = true;
      try {
        return await handler.call(this, request, reply);
      } finally {
        slot?.release();
      }
    };
  });
  app.addHook("onRequest", (request: FastifyRequest, reply: FastifyReply, done) => {
    const route = request.routeOptions.url;
    if (route === undefined || !LIMITED.test(route)) {
      done();
      return;
    }
    if (inFlight >= max) {
      done(
        new ExchangeError("overloaded", "the service is busy: too many requests in progress, retry shortly", {
          retryAfterSeconds: 1,
          logDetail: { inFlight, max },
        }),
      );
      return;
    }
    inFlight++;
    let released = false;
    const slot: Slot = {
      handlerStarted: false,
      release: () => {
        if (released) return;
        released = true;
        inFlight--;
      },
    };
    slots.set(request, slot);
    reply.raw.once("close", () => {
      if (!slot.handlerStarted) slot.release();
    });
    done();
  });
  return () => inFlight;
}
