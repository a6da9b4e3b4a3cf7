/**
 * The registry token realm endpoints (distribution docs/spec/auth/token.md and oauth.md).
 * - `GET /token?service=S&scope=...` with Basic (password = service-account JWT or exchange credential) or
 *   Bearer auth; answers `{token, access_token, expires_in, issued_at}` (+ `refresh_token` with
 *   `offline_token=true`); errors in distribution's format.
 * - `POST /token` form: `grant_type=password` (what containerd sends), `refresh_token`, RFC 8693
 *   token exchange (see `oauth.ts`); answers `{access_token, token_type, scope, expires_in, issued_at}`
 *   (+ `refresh_token` with `access_type=offline`); errors per RFC 6749 §5.2.
 * Thin adapters: parsing lives in `authn/credentials.ts` and `policy/scope.ts`, the work in `realm/realm.ts`.
 */

import type { FastifyInstance, FastifyRequest } from "fastify";
import { requireAuthorization } from "../authn/credentials.js";
import { RequestError } from "../errors.js";
import { auditToAccessLog } from "../plugins/access-log.js";
import { parseScopes } from "../policy/scope.js";
import type { TokenRealm } from "../realm/realm.js";
import { runGrant } from "./oauth.js";
import {
  getResponseJson,
  JSON_TYPE,
  noStore,
  type Params,
  repeatedParam,
  requestMediaType,
  requireService,
  singleParam,
} from "./params.js";

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
      // Pre-serialized with its media type: fastify sends the text as it is.
      return noStore(reply).type(JSON_TYPE).send(getResponseJson(result));
    },
  );

  app.post("/token", { config: { errorFormat: "oauth" } }, async (request: FastifyRequest, reply) => {
    if (requestMediaType(request) !== "application/x-www-form-urlencoded") {
      throw new RequestError(
        "invalid_request",
        "POST /token needs an application/x-www-form-urlencoded body",
      );
    }
    const body = (request.body ?? {}) as Params;
    const grantType = singleParam(body, "grant_type");
    if (grantType === undefined || grantType === "")
      throw new RequestError("invalid_request", 'parameter "grant_type" is required');
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
