/**
 * The registry token realm endpoints (distribution docs/spec/auth/token.md and oauth.md; REFERENCE.md §3).
 * - `GET /token?service=S&scope=...` with Basic (password = service-account JWT or exchange credential) or
 *   Bearer auth; answers `{token, access_token, expires_in, issued_at}` (+ `refresh_token` with
 *   `offline_token=true`); errors in distribution's format.
 * - `POST /token` form: `grant_type=password` (what containerd sends), `refresh_token`, RFC 8693
 *   token exchange (see `oauth.ts`); answers `{access_token, token_type, scope, expires_in, issued_at}`
 *   (+ `refresh_token` with `access_type=offline`); errors per RFC 6749 §5.2.
 * Thin adapters: parsing lives in `authn/credentials.ts` and `policy/scope.ts`, the work in `realm/realm.ts`.
 */

import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { requireAuthorization } from "../authn/credentials.js";
import { ExchangeError } from "../errors.js";
import { auditToAccessLog } from "../plugins/access-log.js";
import { parseScopes } from "../policy/scope.js";
import type { IssueResult, TokenRealm } from "../realm/realm.js";
import { runGrant } from "./oauth.js";

/** Parsed query or form parameters (a repeated parameter is an array). */
export type Params = Record<string, string | string[] | undefined>;

/** RFC 3339 without fractional seconds (moby#20970: docker parses `issued_at` as RFC 3339). */
export function rfc3339(epochSeconds: number): string {
  return new Date(epochSeconds * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/**
 * Reads a parameter that must appear at most once.
 * @throws {ExchangeError} `invalid_request` when it is repeated
 */
export function singleParam(params: Params, name: string): string | undefined {
  const v = params[name];
  if (Array.isArray(v))
    throw new ExchangeError("invalid_request", `parameter "${name}" must not be repeated`);
  return v;
}

/** Reads a parameter that may repeat, in order. */
export function repeatedParam(params: Params, name: string): string[] {
  const v = params[name];
  if (v === undefined) return [];
  return Array.isArray(v) ? v : [v];
}

/**
 * The `service` parameter.
 * @throws {ExchangeError} `invalid_request` when absent, empty or repeated
 */
export function requireService(params: Params): string {
  const service = singleParam(params, "service");
  if (service === undefined || service === "")
    throw new ExchangeError("invalid_request", 'parameter "service" is required');
  return service;
}

/** Marks an answer that carries a credential as never to be cached (RFC 6749 §5.1). */
export function noStore(reply: FastifyReply): FastifyReply {
  return reply.header("cache-control", "no-store").header("pragma", "no-cache");
}

/** The media type of a request body: `Content-Type` without its parameters, lower case ("" if absent). */
export function requestMediaType(request: FastifyRequest): string {
  return String(request.headers["content-type"] ?? "")
    .split(";")[0]!
    .trim()
    .toLowerCase();
}

/**
 * Body of a successful GET (distribution token.md "Token Response Fields"); `refresh_token` only when
 * `offline_token=true` was asked.
 */
export function getResponse(r: IssueResult): Record<string, unknown> {
  const body: Record<string, unknown> = {
    token: r.token,
    access_token: r.token,
    expires_in: r.expiresIn,
    issued_at: rfc3339(r.issuedAt),
  };
  if (r.refreshToken !== undefined) body.refresh_token = r.refreshToken;
  return body;
}

/** Body of a successful POST (distribution oauth.md "Token Response Fields"). */
export function postResponse(r: IssueResult): Record<string, unknown> {
  return {
    access_token: r.token,
    token_type: "Bearer",
    scope: r.grantedScope,
    expires_in: r.expiresIn,
    issued_at: rfc3339(r.issuedAt),
  };
}

/**
 * Registers `GET /token` and `POST /token`.
 * @param realm the token realm that authenticates, authorizes and mints
 */
export function registerTokenRoutes(app: FastifyInstance, realm: TokenRealm): void {
  app.get(
    "/token",
    { config: { errorFormat: "docker", basicChallenge: true } },
    async (request: FastifyRequest, reply) => {
      const params = request.query as Params;
      const service = requireService(params);
      const scopes = parseScopes(repeatedParam(params, "scope"));
      const credential = requireAuthorization(request.headers.authorization);
      const result = await realm.issue({
        credential: credential.secret,
        service,
        scopes,
        offline: singleParam(params, "offline_token") === "true",
        clientAddress: request.ip,
        audit: auditToAccessLog(request),
      });
      return noStore(reply).send(getResponse(result));
    },
  );

  app.post("/token", { config: { errorFormat: "oauth" } }, async (request: FastifyRequest, reply) => {
    if (requestMediaType(request) !== "application/x-www-form-urlencoded") {
      throw new ExchangeError(
        "invalid_request",
        "POST /token needs an application/x-www-form-urlencoded body",
      );
    }
    const body = (request.body ?? {}) as Params;
    const grantType = singleParam(body, "grant_type");
    if (grantType === undefined || grantType === "")
      throw new ExchangeError("invalid_request", 'parameter "grant_type" is required');
    // The grants (password, refresh_token, RFC 8693 token exchange) live in oauth.ts.
    return noStore(reply).send(
      await runGrant(grantType, body, {
        realm,
        clientAddress: request.ip,
        audit: auditToAccessLog(request),
      }),
    );
  });
}
