/**
 * Rendering deploy/kubernetes with the real `kubectl kustomize` (as an operator does; `.ci/run` installs
 * Debian's kubernetes-client when kubectl is missing) and loading the config a rendered Deployment runs
 * with through the service's real loader: every `--config` layer from its mounted ConfigMap, in order,
 * plus `--redis-url`.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, posix } from "node:path";
import { parseAllDocuments } from "yaml";
import { type ConfigInspection, inspectConfigFile } from "../../src/config/load.js";

/** A Kubernetes object, walked dynamically (the assertions are the type checks). */
// biome-ignore lint/suspicious/noExplicitAny: manifests are walked dynamically
export type Obj = Record<string, any>;

/** Whether `kubectl` runs here. */
export const hasKubectl = (() => {
  try {
    execFileSync("kubectl", ["version", "--client"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();

/** The environment of a pod (in-cluster API server defaults). */
const IN_CLUSTER_ENV = { KUBERNETES_SERVICE_HOST: "10.96.0.1", KUBERNETES_SERVICE_PORT: "443" };

/**
 * Renders a kustomization folder with `kubectl kustomize` and parses the documents as Kubernetes does
 * (YAML 1.1).
 * @throws {Error} when kustomize or the YAML fails
 */
export function kustomize(dir: string): Obj[] {
  const text = execFileSync("kubectl", ["kustomize", dir], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
  return parseAllDocuments(text, { version: "1.1" })
    .map((d) => {
      if (d.errors.length > 0) throw new Error(`${dir}: ${d.errors[0]!.message}`);
      return d.toJS() as Obj;
    })
    .filter((d) => d !== null);
}

/** One `--config` layer of a rendered Deployment: its path in the pod and the ConfigMap data behind it. */
export interface MountedLayer {
  /** The path given to `--config`. */
  path: string;
  /** The generated ConfigMap that holds it. */
  configMap: string;
  /** The file's text. */
  text: string;
}

/**
 * The config layers of the service's Deployment, in argument order, each resolved through the container's
 * volume mounts to a projected ConfigMap item of `docs`.
 * @throws {Error} when a `--config` path is not a mounted ConfigMap item
 */
function mountedConfigLayers(docs: readonly Obj[], deployment = "registry-token-exchange"): MountedLayer[] {
  const dep = docs.find((d) => d.kind === "Deployment" && d.metadata.name === deployment);
  if (!dep) throw new Error(`no Deployment ${deployment}`);
  const pod = dep.spec.template.spec;
  const container = pod.containers[0];
  const args = container.args as string[];
  const layers: MountedLayer[] = [];
  args.forEach((arg, i) => {
    if (arg !== "--config") return;
    const path = args[i + 1]!;
    const mount = (container.volumeMounts as Obj[]).find((m) => path.startsWith(`${m.mountPath}/`));
    const volume = mount && (pod.volumes as Obj[]).find((v) => v.name === mount.name);
    const sources: Obj[] =
      volume?.projected?.sources ?? (volume?.configMap ? [{ configMap: volume.configMap }] : []);
    for (const s of sources) {
      const item = (s.configMap?.items as Obj[] | undefined)?.find(
        (it) => posix.join(mount!.mountPath, it.path) === path,
      );
      if (!item) continue;
      const cm = docs.find((d) => d.kind === "ConfigMap" && d.metadata.name === s.configMap.name);
      if (!cm) throw new Error(`${path}: ConfigMap ${s.configMap.name} is not in the manifests`);
      layers.push({ path, configMap: s.configMap.name, text: cm.data[item.key] });
      return;
    }
    throw new Error(`--config ${path} is not a mounted ConfigMap item`);
  });
  return layers;
}

/**
 * Loads the config a rendered Deployment runs with through the real loader (`inspectConfigFile`): every
 * `--config` layer written to a temporary folder under its own file name, merged in argument order, with
 * `--redis-url` applied. The pod's files (keys, CA, tokens) do not exist here: those problems are left out
 * and returned in `missingFiles`.
 * @returns the inspection (config `undefined` when the merged document is invalid) and the layers' texts
 */
export function loadRenderedConfig(
  docs: readonly Obj[],
  env: Record<string, string | undefined> = IN_CLUSTER_ENV,
): ConfigInspection & { layers: MountedLayer[]; files: string[] } {
  const layers = mountedConfigLayers(docs);
  const dep = docs.find((d) => d.kind === "Deployment" && d.metadata.name === "registry-token-exchange")!;
  const args = dep.spec.template.spec.containers[0].args as string[];
  const redisAt = args.indexOf("--redis-url");
  const dir = mkdtempSync(join(tmpdir(), "rte-rendered-config-"));
  try {
    const files = layers.map((l) => {
      const file = join(dir, posix.basename(l.path));
      writeFileSync(file, l.text);
      return file;
    });
    const inspection = inspectConfigFile(files, env, redisAt < 0 ? {} : { redisUrl: args[redisAt + 1] });
    return {
      ...inspection,
      problems: inspection.problems.filter((p) => !/file not found or not readable/.test(p)),
      layers,
      files,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Every leaf of `after` that differs from `before` (including leaves removed, as `undefined`), as
 * `[/json/pointer, value]` pairs sorted by path; a leaf added under a missing parent is one pair.
 */
export function configChanges(before: unknown, after: unknown, path = ""): Array<[string, unknown]> {
  const isObj = (v: unknown): v is Obj => v !== null && typeof v === "object";
  if (isObj(before) && isObj(after)) {
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
    return keys.flatMap((k) => configChanges(before[k], after[k], `${path}/${k}`));
  }
  return JSON.stringify(before) === JSON.stringify(after) ? [] : [[path, after]];
}
