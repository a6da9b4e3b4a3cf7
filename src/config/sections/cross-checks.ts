/**
 * Checks across configuration sections: audiences shared between the registry path and the credential
 * provider, audiences the Kubernetes API server itself accepts, image hosts claimed twice, and values
 * inside the URN namespace of derived credentials.
 */
import type { z } from "zod";
import type { clusterSchema } from "./clusters.js";
import type { credentialProviderSchema } from "./credential-provider.js";
import { RESERVED_URN_PREFIX, type registrySchema } from "./registries.js";

/** The sections the cross-section checks read. */
interface CheckedConfig {
  clusters: z.infer<typeof clusterSchema>[];
  registries: z.infer<typeof registrySchema>[];
  credentialProvider?: z.infer<typeof credentialProviderSchema> | undefined;
}

/**
 * Refuses credential-provider settings that are probably mistakes: an audience shared with the registry
 * path (a token kubelet requested for the exchange endpoint would then also work at `/token`, and the
 * other way round), an image host claimed by two registries, and `service`/`issuer` values inside the
 * URN namespace of derived credentials (which would blur the line between them and registry tokens).
 */
export function checkCredentialProvider(cfg: CheckedConfig, ctx: z.RefinementCtx<CheckedConfig>): void {
  const hostOwner = new Map<string, number>();
  cfg.registries.forEach((r, i) => {
    for (const key of ["service", "issuer"] as const) {
      if (r[key].startsWith(RESERVED_URN_PREFIX)) {
        ctx.addIssue({
          code: "custom",
          message: `must not start with "${RESERVED_URN_PREFIX}" (reserved for credentials this service derives)`,
          path: ["registries", i, key],
        });
      }
    }
    r.hosts?.forEach((h, j) => {
      const owner = hostOwner.get(h);
      if (owner !== undefined) {
        ctx.addIssue({
          code: "custom",
          message: `host "${h}" is already listed by registries[${owner}]`,
          path: ["registries", i, "hosts", j],
        });
      } else hostOwner.set(h, i);
    });
  });
  const cp = cfg.credentialProvider;
  if (!cp) {
    cfg.registries.forEach((r, i) => {
      if (r.credentialProviderAudiences !== undefined) {
        ctx.addIssue({
          code: "custom",
          message: "is only used by /v1/credential-provider: set credentialProvider too",
          path: ["registries", i, "credentialProviderAudiences"],
        });
      }
    });
    return;
  }
  const registryAudiences = new Map<string, string>();
  cfg.clusters.forEach((c, i) => {
    for (const a of c.audiences)
      if (!registryAudiences.has(a)) registryAudiences.set(a, `clusters[${i}].audiences`);
  });
  cfg.registries.forEach((r, i) => {
    for (const a of r.audiences ?? [])
      if (!registryAudiences.has(a)) registryAudiences.set(a, `registries[${i}].audiences`);
  });
  const providerAudiences: Array<{ list: readonly string[]; path: (string | number)[] }> = [
    { list: cp.audiences, path: ["credentialProvider", "audiences"] },
    ...cfg.registries.map((r, i) => ({
      list: r.credentialProviderAudiences ?? [],
      path: ["registries", i, "credentialProviderAudiences"],
    })),
  ];
  for (const { list, path } of providerAudiences) {
    list.forEach((a, i) => {
      const where = registryAudiences.get(a);
      if (where) {
        ctx.addIssue({
          code: "custom",
          message: `audience "${a}" is also accepted at the registry (${where}): use a separate audience so a token kubelet requests for the credential provider cannot be presented at /token directly`,
          path: [...path, i],
        });
      }
    });
  }
}

/** Hosts the in-cluster `kubernetes` Service answers to (the API server's usual `--api-audiences`). */
const API_SERVER_HOSTS = [
  "kubernetes",
  "kubernetes.default",
  "kubernetes.default.svc",
  "kubernetes.default.svc.cluster.local",
];

/**
 * Audiences kube-apiserver accepts for its own API: `--api-audiences`, which defaults to the
 * service-account issuer when unset (kubernetes `pkg/kubeapiserver/options/authentication.go`, the flag's
 * help text), and the in-cluster names of the `kubernetes` Service that clusters commonly set it to
 * (`https://kubernetes.default.svc`, `https://kubernetes.default.svc.cluster.local`). Compared without a
 * trailing slash and case-insensitively.
 * An API server configured with other `--api-audiences` is not detected: never list those either.
 * @param issuer the cluster's `issuer`
 * @returns normalized audiences (no trailing slash, lower case)
 */
export function apiServerAudiences(issuer: string): string[] {
  return [
    normalizeAudience(issuer),
    ...API_SERVER_HOSTS.flatMap((h) => [`https://${h}`, `https://${h}:443`, h]),
  ];
}

function normalizeAudience(a: string): string {
  return a.replace(/\/+$/, "").toLowerCase();
}

/**
 * Refuses an accepted audience that the API server of a trusted cluster also accepts, unless that cluster
 * sets `allowApiServerAudience`: every workload's default token carries it (so any pod would authenticate
 * here without asking for a token), and a token sent here could be replayed against the API server.
 * Cluster audiences are checked against their own cluster; registry and credential-provider audiences,
 * which apply to tokens of every cluster, against every cluster.
 */
export function checkApiServerAudiences(cfg: CheckedConfig, ctx: z.RefinementCtx<CheckedConfig>): void {
  const why =
    "a workload's default service-account token would be accepted here, and any token sent here could be replayed to the Kubernetes API server";
  const check = (audiences: readonly string[], clusters: readonly number[], path: (string | number)[]) => {
    audiences.forEach((a, j) => {
      for (const i of clusters) {
        const c = cfg.clusters[i]!;
        if (c.allowApiServerAudience || !apiServerAudiences(c.issuer).includes(normalizeAudience(a)))
          continue;
        ctx.addIssue({
          code: "custom",
          message: `"${a}" is an audience the API server of cluster "${c.name}" accepts: ${why}; use an audience of its own, or set clusters[${i}].allowApiServerAudience: true to accept this on purpose`,
          path: [...path, j],
        });
        return;
      }
    });
  };
  const all = cfg.clusters.map((_, i) => i);
  cfg.clusters.forEach((c, i) => {
    check(c.audiences, [i], ["clusters", i, "audiences"]);
  });
  cfg.registries.forEach((r, i) => {
    check(r.audiences ?? [], all, ["registries", i, "audiences"]);
    check(r.credentialProviderAudiences ?? [], all, ["registries", i, "credentialProviderAudiences"]);
  });
  if (cfg.credentialProvider)
    check(cfg.credentialProvider.audiences, all, ["credentialProvider", "audiences"]);
}
