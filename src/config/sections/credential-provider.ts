/** `credentialProvider`: the KEP-4412 exchange endpoint `/v1/credential-provider`. */
import { z } from "zod";
import { nonEmpty } from "./common.js";

/** The exchange endpoint for kubelet credential provider plugins (KEP-4412). */
export const credentialProviderSchema = z
  .object({
    /** Audiences a service-account token must carry at `/v1/credential-provider` (one must match). */
    audiences: z.array(nonEmpty).min(1, "must list at least one audience"),
    /** Lifetime of exchange credentials, seconds; always cut to the service-account token's `exp`. */
    credentialTtlSeconds: z
      .number()
      .int()
      .min(120, "must be >= 120 (kubelet caches half of it; /token needs 60 s left)")
      .max(86_400)
      .default(3600),
  })
  .strict();
