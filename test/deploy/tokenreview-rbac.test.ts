/**
 * deploy/kubernetes/overlays/tokenreview, rendered with the real `kubectl kustomize`: the RBAC it grants the
 * service's service account is exactly what its config needs (src/authn/review.ts `requiredApiPermissions`):
 * create on tokenreviews, get on serviceaccounts, nothing more and no wildcards; the base grants neither
 * and needs neither. The overlay's config, its two `--config` layers loaded through the service's real
 * loader, is the base config plus verification/annotations/review for the base's cluster.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { type ApiPermission, requiredApiPermissions } from "../../src/authn/api-permissions.js";
import type { Config } from "../../src/config/schema.js";
import { configChanges, hasKubectl, kustomize, loadRenderedConfig, type Obj } from "../helpers/kustomize.js";

const k8s = new URL("../../deploy/kubernetes", import.meta.url).pathname;
const SA = { kind: "ServiceAccount", name: "registry-token-exchange", namespace: "registry-token-exchange" };

/** Every (apiGroup, resource, verb) granted to the service's service account by roles defined here. */
function granted(docs: Obj[]): ApiPermission[] {
  const out: ApiPermission[] = [];
  for (const b of docs.filter((d) => d.kind === "ClusterRoleBinding" || d.kind === "RoleBinding")) {
    if (
      !(b.subjects as Obj[]).some(
        (s) => s.kind === SA.kind && s.name === SA.name && s.namespace === SA.namespace,
      )
    )
      continue;
    const role = docs.find((d) => d.kind === b.roleRef.kind && d.metadata.name === b.roleRef.name);
    // Roles not defined here are Kubernetes' own (system:service-account-issuer-discovery: nonResourceURLs only).
    if (!role) {
      expect(b.roleRef.name).toBe("system:service-account-issuer-discovery");
      continue;
    }
    for (const rule of role.rules as Obj[]) {
      for (const g of rule.apiGroups)
        for (const r of rule.resources)
          for (const v of rule.verbs) out.push({ apiGroup: g, resource: r, verb: v });
    }
  }
  return out;
}

/** The config the rendered Deployment runs with (every --config layer, through the real loader). */
function configOf(docs: Obj[]): Config {
  const loaded = loadRenderedConfig(docs);
  expect(loaded.problems).toEqual([]);
  return loaded.config!;
}

const sort = (p: ApiPermission[]) =>
  [...p].sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));

describe.skipIf(!hasKubectl && !process.env.CI)(
  "RBAC for TokenReview and ServiceAccount reads (kubectl kustomize; skipped without kubectl outside CI)",
  () => {
    it("overlays/tokenreview grants exactly create tokenreviews and get serviceaccounts, as its config needs", () => {
      const docs = kustomize(join(k8s, "overlays/tokenreview"));
      const config = configOf(docs);
      expect(config.clusters[0]).toMatchObject({ verification: "both", annotations: "fromCluster" });
      expect(config.clusters[0]!.apiServer).toEqual({
        url: "https://10.96.0.1:443",
        caFile: "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
        bearerTokenFile: "/var/run/secrets/kubernetes.io/serviceaccount/token",
      });
      expect(sort(granted(docs))).toEqual(
        sort([
          { apiGroup: "authentication.k8s.io", resource: "tokenreviews", verb: "create" },
          { apiGroup: "", resource: "serviceaccounts", verb: "get" },
        ]),
      );
      expect(sort(granted(docs))).toEqual(sort(requiredApiPermissions(config)));
      expect(JSON.stringify(granted(docs))).not.toContain("*");
    });

    it("the base grants none of it, and its config needs none", () => {
      const docs = kustomize(join(k8s, "base"));
      expect(granted(docs)).toEqual([]);
      expect(requiredApiPermissions(configOf(docs))).toEqual([]);
    });

    it("the overlay runs the base config.yaml unchanged plus its layer, which sets verification, annotations and review of the base's cluster", () => {
      const baseDocs = kustomize(join(k8s, "base"));
      const overlayDocs = kustomize(join(k8s, "overlays/tokenreview"));
      const layers = loadRenderedConfig(overlayDocs).layers;
      expect(layers.map((l) => l.path)).toEqual([
        "/etc/registry-token-exchange/config.yaml",
        "/etc/registry-token-exchange/tokenreview.yaml",
      ]);
      // The first layer is the base's own generated ConfigMap, byte for byte; the second holds only the
      // cluster settings.
      expect(layers[0]!.text).toBe(readFileSync(join(k8s, "base/config.yaml"), "utf8"));
      expect(layers[0]!.configMap).toBe(loadRenderedConfig(baseDocs).layers[0]!.configMap);
      expect(parseYaml(layers[1]!.text)).toEqual({
        clusters: [
          {
            name: "local",
            verification: "both",
            annotations: "fromCluster",
            review: { cacheTtlSeconds: 10, timeoutMs: 2000 },
          },
        ],
      });
      // The effective config: the base's, plus exactly these settings (and the in-cluster API server they
      // default to); review states the defaults explicitly, so it changes nothing.
      expect(configChanges(configOf(baseDocs), configOf(overlayDocs))).toEqual([
        ["/clusters/0/annotations", "fromCluster"],
        [
          "/clusters/0/apiServer",
          {
            url: "https://10.96.0.1:443",
            caFile: "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
            bearerTokenFile: "/var/run/secrets/kubernetes.io/serviceaccount/token",
          },
        ],
        ["/clusters/0/verification", "both"],
      ]);
    });
  },
);

describe("requiredApiPermissions", () => {
  it("tokenReview alone needs only tokenreviews; fromCluster alone only serviceaccounts", () => {
    const c = (verification: string, annotations: string) =>
      ({ clusters: [{ verification, annotations }] }) as unknown as Parameters<
        typeof requiredApiPermissions
      >[0];
    expect(requiredApiPermissions(c("tokenReview", "fromRequest"))).toEqual([
      { apiGroup: "authentication.k8s.io", resource: "tokenreviews", verb: "create" },
    ]);
    expect(requiredApiPermissions(c("offline", "fromCluster"))).toEqual([
      { apiGroup: "", resource: "serviceaccounts", verb: "get" },
    ]);
    expect(requiredApiPermissions(c("offline", "fromRequest"))).toEqual([]);
  });
});
