/**
 * The configuration schema (one YAML file, validated with zod at startup). Every key is documented in
 * the README's configuration reference; a test checks that the README names every key of this schema.
 */
import { z } from "zod";
import { clusterSchema } from "./sections/clusters.js";
import { credentialProviderSchema } from "./sections/credential-provider.js";
import { checkApiServerAudiences, checkCredentialProvider } from "./sections/cross-checks.js";
import { ruleSchema } from "./sections/policy.js";
import { registrySchema } from "./sections/registries.js";
import { cacheSchema, rateLimitSchema, serverSchema } from "./sections/server.js";

export { SERVICE_ACCOUNT_ALGORITHMS } from "./sections/clusters.js";
export { apiServerAudiences } from "./sections/cross-checks.js";
export { ACTIONS, type Action } from "./sections/policy.js";
export { RESERVED_URN_PREFIX } from "./sections/registries.js";

/** The whole configuration file. */
export const configSchema = z
  .object({
    server: serverSchema.prefault({}),
    logging: z
      .object({
        level: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
      })
      .strict()
      .prefault({}),
    clusters: z.array(clusterSchema).min(1, "must list at least one cluster"),
    registries: z.array(registrySchema).min(1, "must list at least one registry"),
    policy: z
      .object({
        rules: z.array(ruleSchema),
        /** Acknowledges `rules: []`: deny every request on purpose (default deny applies anyway). */
        defaultDeny: z.boolean().default(false),
      })
      .strict(),
    cache: cacheSchema.prefault({}),
    rateLimit: rateLimitSchema.prefault({}),
    credentialProvider: credentialProviderSchema.optional(),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    const dup = <T>(items: T[], key: (t: T) => string, path: string, field: string) => {
      const seen = new Set<string>();
      items.forEach((item, i) => {
        const k = key(item);
        if (seen.has(k))
          ctx.addIssue({ code: "custom", message: `duplicate ${field} "${k}"`, path: [path, i, field] });
        seen.add(k);
      });
    };
    dup(cfg.clusters, (c) => c.name, "clusters", "name");
    dup(cfg.clusters, (c) => c.issuer, "clusters", "issuer");
    dup(cfg.registries, (r) => r.service, "registries", "service");
    checkCredentialProvider(cfg, ctx);
    checkApiServerAudiences(cfg, ctx);
    if (cfg.policy.rules.length === 0 && !cfg.policy.defaultDeny) {
      ctx.addIssue({
        code: "custom",
        message:
          "no rules: every request would be denied (default deny); add at least one rule, or set policy.defaultDeny: true to deny everything on purpose",
        path: ["policy", "rules"],
      });
    }
  });
/**
 * The audiences a service-account token must carry at `/v1/credential-provider` to get an exchange
 * credential for `registry`, which `/token` checks again on every use of that credential:
 * `registry.credentialProviderAudiences`, else `credentialProvider.audiences` for a registry without
 * `audiences`; none (the registry is not served through the credential provider) for a registry that
 * restricts `audiences` without naming provider audiences of its own, or when `credentialProvider` is off.
 */
export function credentialProviderAudiencesFor(config: Config, registry: RegistryConfig): readonly string[] {
  if (!config.credentialProvider) return [];
  if (registry.credentialProviderAudiences) return registry.credentialProviderAudiences;
  return registry.audiences ? [] : config.credentialProvider.audiences;
}

/** The validated configuration, with defaults applied and file paths resolved against the config file. */
export type Config = z.infer<typeof configSchema>;
/** One trusted cluster (see {@link Config}). */
export type ClusterConfig = Config["clusters"][number];

/** Whether `cluster` talks to its API server (TokenReview, or ServiceAccount reads for annotations). */
export function usesApiServer(cluster: Pick<ClusterConfig, "verification" | "annotations">): boolean {
  return cluster.verification !== "offline" || cluster.annotations === "fromCluster";
}
/** One registry (see {@link Config}). */
export type RegistryConfig = Config["registries"][number];
/** One policy rule (see {@link Config}). */
export type RuleConfig = Config["policy"]["rules"][number];
/** One allow/deny entry of a rule. */
export type GrantConfig = RuleConfig["allow"][number];
