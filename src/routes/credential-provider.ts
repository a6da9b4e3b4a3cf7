/**
 * `POST /v1/credential-provider`: the exchange endpoint the kubelet credential provider plugins call
 * (`registry-token-exchange credential-provider`, `deploy/kubelet/registry-token-exchange-credential-provider.sh`).
 * Body: a `CredentialProviderRequest` (credentialprovider.kubelet.k8s.io/v1) exactly as kubelet wrote it
 * to the plugin's stdin; answer: the `CredentialProviderResponse` the plugin prints. Errors in the
 * distribution format used by the GET realm (`{"errors":[{code, message, detail:{reason}}]}`).
 * Thin adapter: the work is in `realm/credential-provider.ts`.
 */
import type { FastifyInstance, FastifyRequest } from "fastify";
import { RequestError } from "../errors.js";
import { auditToAccessLog } from "../plugins/access-log.js";
import type { CredentialProviderExchange } from "../realm/credential-provider.js";
import { noStore, requestMediaType } from "./params.js";

/** The endpoint path. */
const CREDENTIAL_PROVIDER_PATH = "/v1/credential-provider";

/**
 * Registers `POST /v1/credential-provider`.
 * @param exchange answers the requests (404 `not_found` when `credentialProvider` is not configured)
 */
export function registerCredentialProviderRoutes(
  app: FastifyInstance,
  exchange: CredentialProviderExchange,
): void {
  app.post(
    CREDENTIAL_PROVIDER_PATH,
    { config: { errorFormat: "docker" } },
    async (request: FastifyRequest, reply) => {
      if (!exchange.enabled) {
        throw new RequestError(
          "not_found",
          "the credential-provider endpoint is not enabled (set credentialProvider in the config)",
        );
      }
      if (requestMediaType(request) !== "application/json") {
        throw new RequestError(
          "unsupported_media_type",
          `POST ${CREDENTIAL_PROVIDER_PATH} needs an application/json CredentialProviderRequest body`,
        );
      }
      const response = await exchange.exchange(request.body, request.ip, auditToAccessLog(request));
      return noStore(reply).send(response);
    },
  );
}
