/**
 * deploy/kubernetes/overlays/tokenreview: the RBAC it grants the service's service account is exactly what
 * its config needs (src/authn/review.ts `requiredApiPermissions`): create on tokenreviews, get on
 * serviceaccounts, nothing more and no wildcards; the base grants neither and needs neither. The overlay's
 * config is the base config plus verification/annotations/review and a credential provider.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseAllDocuments, parse as parseYaml } from "yaml";
import { type ApiPermission, requiredApiPermissions } from "../../src/authn/review.js";
import { parseConfig } from "../../src/config/load.js";

// biome-ignore lint/suspicious/noExplicitAny: manifests are walked dynamically; the assertions are the type checks
type Obj = Record<string, any>;

const k8s = new URL("../../deploy/kubernetes", import.meta.url).pathname;
const SA = { kind: "ServiceAccount", name: "registry-token-exchange", namespace: "registry-token-exchange" };
const IN_CLUSTER = { KUBERNETES_SERVICE_HOST: "10.96.0.1", KUBERNETES_SERVICE_PORT: "443" };

function readDocs(file: string): Obj[] {
  return parseAllDocuments(readFileSync(file, "utf8"), { version: "1.1" })
    .map((d) => d.toJS() as Obj)
    .filter((d) => d !== null);
}

/** resources (files or directories) then patches replacing whole objects' fields (what these patches touch). */
function render(dir: string): Obj[] {
  const k = readDocs(join(dir, "kustomization.yaml"))[0]!;
  const docs: Obj[] = [];
  for (const r of k.resources as string[])
    docs.push(...(r.endsWith(".yaml") ? readDocs(join(dir, r)) : render(join(dir, r))));
  for (const p of (k.patches ?? []) as Array<{ path: string }>) {
    for (const patch of readDocs(join(dir, p.path))) {
      const i = docs.findIndex((d) => d.kind === patch.kind && d.metadata.name === patch.metadata.name);
      expect(i).toBeGreaterThanOrEqual(0);
      docs[i] = { ...docs[i], ...patch, metadata: { ...docs[i]!.metadata, ...patch.metadata } };
    }
  }
  return docs;
}

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

function configOf(docs: Obj[]) {
  const cm = docs.find(
    (d) => d.kind === "ConfigMap" && d.metadata.name === "registry-token-exchange-config",
  )!;
  return {
    raw: parseYaml(cm.data["config.yaml"]) as Obj,
    config: parseConfig(parseYaml(cm.data["config.yaml"]), IN_CLUSTER),
  };
}

const sort = (p: ApiPermission[]) =>
  [...p].sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));

describe("RBAC for TokenReview and ServiceAccount reads", () => {
  it("overlays/tokenreview grants exactly create tokenreviews and get serviceaccounts, as its config needs", () => {
    const docs = render(join(k8s, "overlays/tokenreview"));
    const { config } = configOf(docs);
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
    const docs = render(join(k8s, "base"));
    expect(granted(docs)).toEqual([]);
    expect(requiredApiPermissions(configOf(docs).config)).toEqual([]);
  });

  it("the overlay's config is the base config plus verification, annotations, review and credentialProvider", () => {
    const base = configOf(render(join(k8s, "base"))).raw;
    const overlay = configOf(render(join(k8s, "overlays/tokenreview"))).raw;
    const { verification, annotations, review, ...cluster } = overlay.clusters[0];
    expect({ verification, annotations, review }).toEqual({
      verification: "both",
      annotations: "fromCluster",
      review: { cacheTtlSeconds: 10, timeoutMs: 2000 },
    });
    const { credentialProvider, ...rest } = overlay;
    expect(credentialProvider).toEqual({ audiences: ["registry-token-exchange-provider"] });
    expect({ ...rest, clusters: [cluster] }).toEqual(base);
  });

  it("requiredApiPermissions: tokenReview alone needs only tokenreviews; fromCluster alone only serviceaccounts", () => {
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
