/**
 * The audit record of refused credentials. Issued tokens are audited by the realm (`"token issued"`,
 * `audit.decision: "issued"`); this hook adds a record to the access line (plugins/access-log.ts) of every
 * request whose credential was refused (every 401), so an operator sees who was turned away, from where
 * and why:
 *
 *   {"req":{...},"res":{"statusCode":401},"audit":{"decision":"denied","time":"...",
 *    "reason":"token_expired","status":401,"route":"/token","service":"registry.example.com",
 *    "requested":["repository:team-a/app:pull"],"client":"10.0.0.7"},"msg":"credential denied"}
 *
 * Only request fields that are never secret are logged: the reason code, the route, the `service` and
 * `scope` parameters (cut and stripped of control characters) and the client address. Never the token,
 * nothing decoded from it (an unverified claim is attacker-controlled), never a header.
 */

import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { safeEcho } from "../errors.js";
import { auditAccessLog } from "./access-log.js";
import { toRequestError } from "./errors.js";

/** Most requested scopes echoed into one audit line. */
const MAX_SCOPES = 20;

function params(request: FastifyRequest): Record<string, unknown> {
  const body = request.body;
  if (body !== null && typeof body === "object") return body as Record<string, unknown>;
  const query = request.query;
  return query !== null && typeof query === "object" ? (query as Record<string, unknown>) : {};
}

function asList(value: unknown): string[] {
  if (typeof value === "string") return [value];
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === "string") : [];
}

/**
 * Registers the denied-credential audit record.
 * @param now clock, epoch milliseconds (the line's `time`)
 */
export function registerDeniedAudit(app: FastifyInstance, now: () => number = Date.now): void {
  app.addHook("onError", (request: FastifyRequest, _reply: FastifyReply, error: unknown, done) => {
    const err = toRequestError(error);
    if (err.statusCode !== 401) {
      done();
      return;
    }
    const p = params(request);
    const service = asList(p.service)[0];
    const requested = asList(p.scope)
      .flatMap((s) => s.split(" "))
      .filter((s) => s !== "")
      .slice(0, MAX_SCOPES)
      .map((s) => safeEcho(s, 200));
    auditAccessLog(
      request,
      {
        decision: "denied",
        time: new Date(now()).toISOString(),
        reason: err.code,
        status: err.statusCode,
        method: request.method,
        route: request.routeOptions.url,
        service: service === undefined ? undefined : safeEcho(service, 100),
        requested,
        client: request.ip,
      },
      "credential denied",
    );
    done();
  });
}
