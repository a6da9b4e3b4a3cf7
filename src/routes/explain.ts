/**
 * `GET /v1/explain?service=S&scope=...`: what `GET /token` would decide for the presented credential,
 * without minting anything, for operators debugging with curl.
 *
 * Same credentials as `GET /token` (Basic password or Bearer: a service-account token or an exchange
 * credential), authenticated and authorized by the same `TokenRealm.authorize` path, so it refuses exactly
 * what `/token` refuses, with the same distribution-style errors (`{"errors":[{code, message, detail:
 * {reason}}]}`, `WWW-Authenticate: Basic` on 401). Answers the verified identity (never the token) and,
 * per requested scope, the granted actions and the names of the rules that allowed or denied them
 * (`policy/explain.ts`). Rate limited with `/token` (the limiter covers `/v1/`).
 */

import type { FastifyInstance, FastifyRequest } from "fastify";
import { requireAuthorization } from "../authn/credentials.js";
import { annotateAccessLog } from "../plugins/access-log.js";
import { credentialKind, explain } from "../policy/explain.js";
import { parseScopes } from "../policy/scope.js";
import type { TokenRealm } from "../realm/realm.js";
import { noStore, type Params, repeatedParam, requireService } from "./params.js";

/** The endpoint path. */
const EXPLAIN_PATH = "/v1/explain";

/**
 * Registers `GET /v1/explain`.
 * @param realm authenticates and evaluates the policy (the same path as `/token`)
 * @param now clock, epoch milliseconds (for `identity.expiresIn`)
 */
export function registerExplainRoutes(
  app: FastifyInstance,
  realm: TokenRealm,
  now: () => number = Date.now,
): void {
  app.get(
    EXPLAIN_PATH,
    { config: { errorFormat: "docker", basicChallenge: true } },
    async (request: FastifyRequest, reply) => {
      const params = request.query as Params;
      const service = requireService(params);
      const scopes = parseScopes(repeatedParam(params, "scope"));
      const credential = requireAuthorization(request.headers.authorization);
      const result = await realm.authorize({ credential: credential.secret, service, scopes });
      const body = explain(result, credentialKind(credential.secret), now());
      annotateAccessLog(
        request,
        {
          explain: {
            cluster: body.identity.cluster,
            namespace: body.identity.namespace,
            serviceAccount: body.identity.serviceAccount.name,
            service: body.service,
            requested: body.scopes.map((s) => s.scope),
            granted: body.scopes
              .filter((s) => s.granted.length > 0)
              .map((s) => `${s.type}:${s.name}:${s.granted.join(",")}`),
          },
        },
        "policy explained",
      );
      return noStore(reply).send(body);
    },
  );
}
