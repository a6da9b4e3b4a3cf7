/**
 * deploy/kubernetes: `kubectl kustomize` renders the base and every overlay (the real kustomize, as an
 * operator runs it: `.ci/run` installs Debian's kubernetes-client when kubectl is missing), and on each
 * rendering the cross-references hold: names, labels and selectors; Service, probe and NetworkPolicy
 * ports; volume mounts, the generated ConfigMap and the Secret template; RBAC subjects; and the config
 * is valid for the service's own schema and consistent with the mounts. An edit of the base config.yaml
 * survives every overlay, and a change of it renames the ConfigMap the Deployment mounts (so applying it
 * rolls the Deployment).
 */
import { execFileSync } from "node:child_process";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, posix } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import type { Config } from "../../src/config/schema.js";
import { configChanges, loadRenderedConfig } from "../helpers/kustomize.js";

// biome-ignore lint/suspicious/noExplicitAny: manifests are walked dynamically; the assertions are the type checks
type Obj = Record<string, any>;

const root = new URL("../..", import.meta.url).pathname;
const k8s = join(root, "deploy/kubernetes");
const NAMESPACE = "registry-token-exchange";

/** Parses a multi-document YAML text the way Kubernetes does (YAML 1.1). */
function parseDocs(text: string, where: string): Obj[] {
  return parseAllDocuments(text, { version: "1.1" })
    .map((d) => {
      expect(d.errors, where).toEqual([]);
      return d.toJS() as Obj;
    })
    .filter((d) => d !== null);
}

/** Parses a multi-document YAML file the way Kubernetes does (YAML 1.1). */
function readDocs(file: string): Obj[] {
  return parseDocs(readFileSync(file, "utf8"), file);
}

const kubectl = (() => {
  try {
    execFileSync("kubectl", ["version", "--client"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();

/** Renders a kustomization folder with `kubectl kustomize`. */
function kustomize(dir: string): Obj[] {
  return parseDocs(
    execFileSync("kubectl", ["kustomize", dir], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }),
    dir,
  );
}

/** The overlays under deploy/kubernetes/overlays. */
const overlays = readdirSync(join(k8s, "overlays")).map((d) => `overlays/${d}`);

const secretTemplate = readDocs(join(k8s, "base/signing-key-secret.template.yaml"))[0]!;
const dockerCmd = JSON.parse(
  readFileSync(join(root, "Dockerfile"), "utf8").match(/^CMD (\[.*\])$/m)![1]!,
) as string[];

const matches = (selector: Obj | undefined, labels: Obj | undefined) =>
  selector !== undefined &&
  Object.keys(selector).length > 0 &&
  Object.entries(selector).every(([k, v]) => labels?.[k] === v);

/** Everything that must hold for a set of rendered manifests. */
function checkManifests(docs: Obj[], where: string): Config {
  const find = (kind: string, name: string) => docs.find((d) => d.kind === kind && d.metadata?.name === name);
  const all = (kind: string) => docs.filter((d) => d.kind === kind);

  // Names are unique per kind; namespaced objects live in the service's namespace.
  const keys = docs.map((d) => `${d.kind}/${d.metadata.name}`);
  expect(new Set(keys).size, `${where}: duplicates in ${keys.join(", ")}`).toBe(keys.length);
  for (const d of docs) {
    if (!["Namespace", "ClusterRoleBinding", "ClusterRole"].includes(d.kind)) {
      expect(d.metadata.namespace, `${where}: ${d.kind}/${d.metadata.name}`).toBe(NAMESPACE);
    }
  }
  expect(find("Namespace", NAMESPACE)).toBeDefined();

  const deployments = all("Deployment");
  const main = find("Deployment", "registry-token-exchange")!;
  expect(main, where).toBeDefined();
  for (const dep of deployments) {
    const name = dep.metadata.name;
    const pod = dep.spec.template;
    expect(matches(dep.spec.selector.matchLabels, pod.metadata.labels), `${where}: ${name} selector`).toBe(
      true,
    );
    const podSec = pod.spec.securityContext ?? {};
    expect(podSec.runAsNonRoot, `${where}: ${name}`).toBe(true);
    expect(podSec.seccompProfile?.type).toBe("RuntimeDefault");
    const volumes = new Map<string, Obj>((pod.spec.volumes ?? []).map((v: Obj) => [v.name, v]));
    for (const c of pod.spec.containers as Obj[]) {
      const sec = c.securityContext ?? {};
      expect(sec.readOnlyRootFilesystem, `${where}: ${name}/${c.name}`).toBe(true);
      expect(sec.allowPrivilegeEscalation).toBe(false);
      expect(sec.capabilities?.drop).toEqual(["ALL"]);
      expect(sec.runAsNonRoot ?? podSec.runAsNonRoot).toBe(true);
      expect((sec.seccompProfile ?? podSec.seccompProfile)?.type).toBe("RuntimeDefault");
      expect(c.resources?.requests?.cpu).toBeDefined();
      expect(c.resources?.requests?.memory).toBeDefined();
      expect(c.resources?.limits?.memory).toBeDefined();
      for (const m of c.volumeMounts ?? []) {
        expect(volumes.has(m.name), `${where}: ${name}/${c.name} mounts missing volume ${m.name}`).toBe(true);
      }
      // Probe ports name a declared container port.
      const portNames = new Set((c.ports ?? []).flatMap((p: Obj) => [p.name, p.containerPort]));
      for (const probe of ["readinessProbe", "livenessProbe", "startupProbe"]) {
        const port = c[probe]?.httpGet?.port ?? c[probe]?.tcpSocket?.port;
        if (port !== undefined)
          expect(portNames.has(port), `${where}: ${name} ${probe} port ${port}`).toBe(true);
      }
    }
    // Volumes reference ConfigMaps in the manifests and the Secret of the template, with existing keys.
    for (const v of volumes.values()) {
      const sources: Obj[] = v.projected?.sources ?? [
        ...(v.configMap ? [{ configMap: v.configMap }] : []),
        ...(v.secret ? [{ secret: { ...v.secret, name: v.secret.secretName } }] : []),
      ];
      for (const s of sources) {
        if (s.configMap) {
          const cm = find("ConfigMap", s.configMap.name);
          expect(cm, `${where}: ConfigMap ${s.configMap.name}`).toBeDefined();
          for (const item of s.configMap.items ?? []) expect(Object.keys(cm!.data)).toContain(item.key);
        }
        if (s.secret) {
          const secret =
            find("Secret", s.secret.name) ??
            (s.secret.name === secretTemplate.metadata.name ? secretTemplate : undefined);
          expect(secret, `${where}: Secret ${s.secret.name}`).toBeDefined();
          for (const item of s.secret.items ?? []) {
            expect(Object.keys(secret!.stringData ?? secret!.data)).toContain(item.key);
          }
        }
      }
    }
  }

  // The service itself: replicas, spreading, probes, service account, arguments.
  expect(main.spec.replicas).toBeGreaterThanOrEqual(2);
  const pod = main.spec.template;
  const labels = pod.metadata.labels;
  const anti = pod.spec.affinity?.podAntiAffinity;
  const terms = [
    ...(anti?.requiredDuringSchedulingIgnoredDuringExecution ?? []),
    ...(anti?.preferredDuringSchedulingIgnoredDuringExecution ?? []).map((t: Obj) => t.podAffinityTerm),
  ];
  expect(terms.some((t: Obj) => matches(t.labelSelector?.matchLabels, labels))).toBe(true);
  const container = pod.spec.containers[0];
  expect(container.readinessProbe.httpGet.path).toBe("/readyz");
  expect(container.livenessProbe.httpGet.path).toBe("/healthz");
  expect(find("ServiceAccount", pod.spec.serviceAccountName), `${where}: service account`).toBeDefined();
  // The image's command, plus only options an overlay appends (never a different config file).
  expect(container.args.slice(0, dockerCmd.length)).toEqual(dockerCmd);

  // The config: every --config layer is mounted from a ConfigMap of these manifests, the layers merged by
  // the service's own loader are valid, and every file the config names is mounted.
  const configPaths = (container.args as string[]).flatMap((a, i) =>
    a === "--config" ? [container.args[i + 1] as string] : [],
  );
  expect(configPaths.length, `${where}: --config`).toBeGreaterThan(0);
  const mountedFiles = new Map<string, Obj>();
  for (const configPath of configPaths) {
    const mount = (container.volumeMounts as Obj[]).find((m) => configPath.startsWith(`${m.mountPath}/`))!;
    expect(mount, `${where}: ${configPath} is mounted`).toBeDefined();
    const projected = pod.spec.volumes.find((v: Obj) => v.name === mount.name).projected.sources as Obj[];
    for (const s of projected) {
      const src = s.configMap ?? s.secret;
      for (const item of src.items) mountedFiles.set(posix.join(mount.mountPath, item.path), { ...s, item });
    }
    const configSource = mountedFiles.get(configPath);
    expect(configSource?.configMap, `${where}: ${configPath} comes from a ConfigMap`).toBeDefined();
    expect(find("ConfigMap", configSource!.configMap.name), `${where}: ${configPath}`).toBeDefined();
  }
  const loaded = loadRenderedConfig(docs);
  expect(loaded.problems, where).toEqual([]);
  const config = loaded.config!;
  for (const r of config.registries) {
    for (const f of [r.signingKey.keyFile, r.signingKey.certFile]) {
      expect(mountedFiles.get(f)?.secret, `${where}: ${f} comes from the signing Secret`).toBeDefined();
    }
  }
  for (const c of config.clusters) {
    for (const f of [c.caFile, c.bearerTokenFile].filter((x): x is string => x !== undefined)) {
      // The service account token volume Kubernetes mounts (automountServiceAccountToken).
      expect(dirname(f)).toBe("/var/run/secrets/kubernetes.io/serviceaccount");
      expect(find("ServiceAccount", pod.spec.serviceAccountName)!.automountServiceAccountToken).not.toBe(
        false,
      );
      expect(pod.spec.automountServiceAccountToken).not.toBe(false);
    }
  }
  const httpPort = (container.ports as Obj[]).find((p) => p.name === "http")!;
  expect(config.server.port).toBe(httpPort.containerPort);

  // Services select pods of a Deployment and target a port those pods declare.
  for (const svc of all("Service")) {
    const dep = deployments.find((d) => matches(svc.spec.selector, d.spec.template.metadata.labels));
    expect(dep, `${where}: Service ${svc.metadata.name} selects a Deployment`).toBeDefined();
    const declared = dep!.spec.template.spec.containers.flatMap((c: Obj) =>
      (c.ports ?? []).flatMap((p: Obj) => [p.name, p.containerPort]),
    );
    for (const p of svc.spec.ports)
      expect(declared, `${where}: ${svc.metadata.name}`).toContain(p.targetPort);
  }
  const mainService = all("Service").find((s) => matches(s.spec.selector, labels))!;
  expect(mainService).toBeDefined();

  // PDB and HPA point at the service's pods and Deployment.
  const pdb = all("PodDisruptionBudget")[0]!;
  expect(matches(pdb.spec.selector.matchLabels, labels)).toBe(true);
  expect(pdb.spec.minAvailable).toBeLessThan(main.spec.replicas);
  const hpa = all("HorizontalPodAutoscaler")[0]!;
  expect(hpa.spec.scaleTargetRef).toMatchObject({
    apiVersion: "apps/v1",
    kind: "Deployment",
    name: main.metadata.name,
  });
  expect(hpa.spec.minReplicas).toBeGreaterThanOrEqual(main.spec.replicas);

  // RBAC: issuer discovery for the pods' service account.
  const crb = all("ClusterRoleBinding").find(
    (b) => b.roleRef.name === "system:service-account-issuer-discovery",
  );
  expect(crb, `${where}: issuer discovery binding`).toBeDefined();
  expect(crb!.roleRef.kind).toBe("ClusterRole");
  expect(crb!.subjects).toContainEqual({
    kind: "ServiceAccount",
    name: pod.spec.serviceAccountName,
    namespace: NAMESPACE,
  });

  // NetworkPolicies select existing pods, and their named ports exist on the pods they concern.
  for (const np of all("NetworkPolicy")) {
    const selected = deployments.filter((d) =>
      matches(np.spec.podSelector.matchLabels, d.spec.template.metadata.labels),
    );
    expect(selected.length, `${where}: NetworkPolicy ${np.metadata.name} selects pods`).toBeGreaterThan(0);
    for (const rule of np.spec.ingress ?? []) {
      for (const p of rule.ports ?? []) {
        if (typeof p.port !== "string") continue;
        const names = selected.flatMap((d) =>
          d.spec.template.spec.containers.flatMap((c: Obj) => (c.ports ?? []).map((x: Obj) => x.name)),
        );
        expect(names, `${where}: ${np.metadata.name} port ${p.port}`).toContain(p.port);
      }
      for (const from of rule.from ?? []) {
        if (!from.podSelector) continue;
        const peers = deployments.filter((d) =>
          matches(from.podSelector.matchLabels, d.spec.template.metadata.labels),
        );
        expect(peers.length, `${where}: ${np.metadata.name} ingress peers exist`).toBeGreaterThan(0);
      }
    }
  }
  const mainPolicy = all("NetworkPolicy").find((np) => matches(np.spec.podSelector.matchLabels, labels));
  expect(mainPolicy?.spec.policyTypes).toEqual(expect.arrayContaining(["Ingress", "Egress"]));

  // Redis, when configured, is a Service of these manifests, reachable through a NetworkPolicy.
  if (config.cache.redisUrl) {
    const url = new URL(config.cache.redisUrl);
    const svc = find("Service", url.hostname);
    expect(svc, `${where}: Redis Service ${url.hostname}`).toBeDefined();
    expect(svc!.spec.ports.map((p: Obj) => p.port)).toContain(Number(url.port || 6379));
    const egress = all("NetworkPolicy")
      .filter((np) => matches(np.spec.podSelector.matchLabels, labels))
      .flatMap((np) => np.spec.egress ?? []);
    expect(
      egress.some(
        (r: Obj) =>
          (r.ports ?? []).some((p: Obj) => p.port === Number(url.port || 6379)) &&
          (r.to ?? []).some((t: Obj) =>
            matches(
              t.podSelector?.matchLabels,
              deployments.find((d) => matches(svc!.spec.selector, d.spec.template.metadata.labels))?.spec
                .template.metadata.labels,
            ),
          ),
      ),
      `${where}: egress to Redis`,
    ).toBe(true);
  }
  return config;
}

describe.skipIf(!kubectl && !process.env.CI)(
  "deploy/kubernetes (kubectl kustomize; skipped without kubectl outside CI)",
  () => {
    const base = kustomize(join(k8s, "base"));
    const baseKustomization = readDocs(join(k8s, "base/kustomization.yaml"))[0]!;
    const work = mkdtempSync(join(tmpdir(), "rte-kustomize-"));
    afterAll(() => rmSync(work, { recursive: true, force: true }));

    it("base: cross-references hold, the config is valid and turns the credential provider on", () => {
      const config = checkManifests(base, "base");
      expect(config.cache.redisUrl).toBeUndefined();
      expect(config.credentialProvider?.audiences).toEqual(["registry-token-exchange"]);
      expect(baseKustomization.resources).not.toContain("signing-key-secret.template.yaml");
      // The image the kustomization rewrites is the container's, at a version tag.
      const image = base.find((d) => d.kind === "Deployment")!.spec.template.spec.containers[0].image;
      expect(image).toMatch(/^ghcr\.io\/example\/registry-token-exchange:\d+\.\d+\.\d+$/);
    });

    it("overlays/redis: adds Redis and points the service at it, changing nothing else", () => {
      const overlay = kustomize(join(k8s, "overlays/redis"));
      const baseConfig = checkManifests(base, "base");
      const config = checkManifests(overlay, "overlays/redis");
      expect(config.cache.redisUrl).toBe("redis://registry-token-exchange-redis:6379/0");
      const { cache: _a, ...restBase } = baseConfig;
      const { cache: _b, ...restOverlay } = config;
      expect(restOverlay).toEqual(restBase);
      const cm = (docs: readonly Obj[]) => docs.find((d) => d.kind === "ConfigMap")!;
      expect(cm(overlay)).toEqual(cm(base));
      const redis = overlay.find(
        (d) => d.kind === "Deployment" && d.metadata.name === "registry-token-exchange-redis",
      );
      // A version tag, never a floating one (redis:7-alpine).
      expect(redis!.spec.template.spec.containers[0].image).toMatch(/^redis:\d+\.\d+\.\d+-alpine$/);
    });

    it("an edit of the base config.yaml survives every overlay and renames the ConfigMap (rolls the Deployment)", () => {
      const copy = join(work, "kubernetes");
      cpSync(k8s, copy, { recursive: true });
      const file = join(copy, "base/config.yaml");
      writeFileSync(
        file,
        readFileSync(file, "utf8")
          .replaceAll("registry.example.com", "registry.corp.example")
          .replace("- name: local", "- name: edited-cluster")
          .replace("match: { cluster: local,", "match: { cluster: edited-cluster,"),
      );
      const mounted = (docs: readonly Obj[]) =>
        docs
          .find((d) => d.kind === "Deployment" && d.metadata.name === "registry-token-exchange")!
          .spec.template.spec.volumes.find((v: Obj) => v.name === "config")
          .projected.sources.find((s: Obj) => s.configMap).configMap.name as string;
      // A config layer of an overlay changes the base's cluster by its name: renamed in the base, it must
      // be renamed there too, and until it is the loader says which file adds an incomplete cluster.
      const tokenreviewLayer = join(copy, "overlays/tokenreview/tokenreview.yaml");
      const stale = loadRenderedConfig(kustomize(join(copy, "overlays/tokenreview")));
      expect(stale.config).toBeUndefined();
      expect(stale.problems).toEqual([
        `${stale.files[1]}: clusters[1].issuer: is required`,
        `${stale.files[1]}: clusters[1].audiences: is required`,
      ]);
      writeFileSync(
        tokenreviewLayer,
        readFileSync(tokenreviewLayer, "utf8").replace("- name: local", "- name: edited-cluster"),
      );
      let baseConfigs: { original: Config; edited: Config } | undefined;
      for (const dir of ["base", ...overlays]) {
        const original = dir === "base" ? base : kustomize(join(k8s, dir));
        const edited = kustomize(join(copy, dir));
        const config = checkManifests(edited, `edited ${dir}`);
        expect(config.registries[0]!.service, dir).toBe("registry.corp.example");
        expect(
          config.clusters.map((c) => c.name),
          dir,
        ).toEqual(["edited-cluster"]);
        expect(mounted(edited), dir).toMatch(/^registry-token-exchange-config-[a-z0-9]+$/);
        expect(mounted(edited), dir).not.toBe(mounted(original));
        // What an overlay changes in the config, it changes on the edited base as on the original one.
        const before = loadRenderedConfig(original).config!;
        if (dir === "base") {
          baseConfigs = { original: before, edited: config };
        } else {
          const change = configChanges(baseConfigs!.edited, config);
          expect(change, dir).toEqual(configChanges(baseConfigs!.original, before));
          expect(change.length, `${dir} changes the config`).toBeGreaterThan(0);
        }
      }
    });

    it("ships a Secret template whose keys the Deployment mounts", () => {
      expect(secretTemplate).toMatchObject({ kind: "Secret", type: "kubernetes.io/tls" });
      expect(Object.keys(secretTemplate.stringData).sort()).toEqual(["tls.crt", "tls.key"]);
    });

    it("the kustomization's instructions name the files keygen writes", () => {
      const text = readFileSync(join(k8s, "base/kustomization.yaml"), "utf8");
      expect(text).toContain("--cert=signing/signing-cert.pem --key=signing/signing-key.pem");
      expect(text).not.toMatch(/signing\/(cert|key)\.pem/);
    });
  },
);
