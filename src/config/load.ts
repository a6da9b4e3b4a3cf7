/**
 * Loading the configuration: YAML text -> zod validation -> file paths resolved -> frozen {@link Config}.
 * Nothing else in the service reads `process.env` or the config file.
 */
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { parseDocument } from "yaml";
import { ConfigError } from "../errors.js";
import { checkFiles, resolveFiles } from "./files.js";
import { attributeProblems, mergeConfigLayers } from "./layers.js";
import { issueLines, yamlProblems } from "./problems.js";
import { type Config, configSchema, usesApiServer } from "./schema.js";

export { resolveFiles } from "./files.js";
export { dottedPath, redactLine } from "./problems.js";

/** Where a pod finds its service-account token and the cluster CA (mounted by kubelet). */
export const IN_CLUSTER_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/** The cluster CA bundle mounted next to {@link IN_CLUSTER_TOKEN_FILE}. */
export const IN_CLUSTER_CA_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/**
 * Validates an already-parsed config object (e.g. from YAML) against the schema.
 * @param raw the parsed document
 * @param env environment for `PORT` / `HOST` overrides (defaults to none)
 * @returns the config with defaults applied (paths not yet resolved)
 * @throws {ConfigError} one line per problem, each with its dotted path
 */
export function parseConfig(raw: unknown, env: Record<string, string | undefined> = {}): Config {
  const result = configSchema.safeParse(raw ?? {});
  if (!result.success) throw new ConfigError(issueLines(result.error, raw ?? {}));
  const cfg = result.data;
  if (env.PORT !== undefined && env.PORT !== "") {
    // Decimal digits only: Number() would also take "0x50", "1e3" and " 80 ".
    const port = /^\d{1,5}$/.test(env.PORT) ? Number(env.PORT) : Number.NaN;
    if (!Number.isInteger(port) || port < 0 || port > 65_535) {
      throw new ConfigError([`env PORT: must be an integer from 0 to 65535, got "${env.PORT}"`]);
    }
    cfg.server.port = port;
  }
  if (env.HOST !== undefined && env.HOST !== "") cfg.server.host = env.HOST;
  applyInClusterDefaults(cfg, env);
  return cfg;
}

/**
 * Gives every cluster that talks to its API server (`verification` other than `offline`, or
 * `annotations: fromCluster`) and has no `apiServer` the in-cluster one: `https://$KUBERNETES_SERVICE_HOST:
 * $KUBERNETES_SERVICE_PORT`, the mounted CA and service-account token (what client-go's InClusterConfig uses).
 * @throws {ConfigError} when such a cluster has no `apiServer` and the environment is not a pod's
 */
function applyInClusterDefaults(cfg: Config, env: Record<string, string | undefined>): void {
  const problems: string[] = [];
  cfg.clusters.forEach((c, i) => {
    if (!usesApiServer(c) || c.apiServer !== undefined) return;
    const host = env.KUBERNETES_SERVICE_HOST;
    const port = env.KUBERNETES_SERVICE_PORT;
    if (!host || !port || !/^\d{1,5}$/.test(port)) {
      problems.push(
        `clusters[${i}].apiServer: is required with verification: ${c.verification} / annotations: ${c.annotations} outside a pod (KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not set)`,
      );
      return;
    }
    c.apiServer = {
      url: `https://${host.includes(":") ? `[${host}]` : host}:${port}`,
      caFile: IN_CLUSTER_CA_FILE,
      bearerTokenFile: IN_CLUSTER_TOKEN_FILE,
    };
  });
  if (problems.length > 0) throw new ConfigError(problems);
}

/** Recursively freezes a value so no stage can mutate the shared config. */
export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value as Record<string, unknown>)) deepFreeze(v);
  }
  return value;
}

/**
 * Parses the YAML text of a config file (YAML 1.2, duplicate keys refused).
 * @throws {ConfigError} one line per syntax error, each naming the position and showing the line
 */
function parseYamlConfig(file: string, text: string): unknown {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  // The first syntax error only: the parser's later ones are mostly consequences of it.
  if (doc.errors.length > 0) throw new ConfigError(yamlProblems(file, text, doc.errors.slice(0, 1)));
  return doc.toJS();
}

/** Settings given on the command line that take the place of the file's (`serve --redis-url`). */
export interface ConfigOverrides {
  /** `cache.redisUrl` (a kustomize overlay sets it without replacing the base config file). */
  redisUrl?: string | undefined;
}

function applyOverrides(raw: unknown, overrides: ConfigOverrides): unknown {
  if (overrides.redisUrl === undefined) return raw;
  const doc = (raw ?? {}) as Record<string, unknown>;
  const cache = doc.cache !== null && typeof doc.cache === "object" ? doc.cache : {};
  return { ...doc, cache: { ...cache, redisUrl: overrides.redisUrl } };
}

/** Everything wrong with a config file, found in one pass (see {@link inspectConfigFile}). */
export interface ConfigInspection {
  /** The validated config (paths resolved, frozen), or `undefined` when the file or its schema failed. */
  config: Config | undefined;
  /** Every problem found, one dotted-path line each: syntax, schema, then unreadable files. */
  problems: string[];
  /** Resolved paths of the named files that cannot be read (checks that need them are skipped). */
  missingFiles: ReadonlySet<string>;
}

/**
 * Reads and validates a config file like {@link loadConfigFile}, but collects every problem instead of
 * stopping at the first kind: schema problems and unreadable files are reported together (files are
 * checked as far as the document names them even when the schema fails). A YAML syntax error still
 * ends the inspection: there is no document to check. Several files are merged first, as by
 * {@link loadConfigFile}, and each problem line names the file(s) its value came from.
 * @param file path to the YAML file, or the paths of the layers in order
 * @param env environment for `PORT` / `HOST` overrides
 * @param overrides command-line settings applied after merging, before validation
 */
export function inspectConfigFile(
  file: string | readonly string[],
  env: Record<string, string | undefined> = process.env,
  overrides: ConfigOverrides = {},
): ConfigInspection {
  const files = typeof file === "string" ? [file] : file;
  let raw: unknown;
  let attribute = (problems: string[]) => problems;
  try {
    const layered = readLayers(files);
    raw = applyOverrides(layered.doc, overrides);
    attribute = layered.attribute;
  } catch (err) {
    if (err instanceof ConfigError)
      return { config: undefined, problems: err.problems, missingFiles: new Set() };
    throw err;
  }
  const baseDir = dirname(resolve(files[0]!));
  try {
    const cfg = parseConfig(raw, env);
    const { problems, missing } = checkFiles(cfg, baseDir);
    return { config: deepFreeze(cfg), problems: attribute(problems), missingFiles: missing };
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    let checked: { problems: string[]; missing: Set<string> } = { problems: [], missing: new Set() };
    try {
      // Best effort over the unvalidated document: only string paths in well-formed sections.
      const doc = (raw ?? {}) as Record<string, unknown>;
      const list = (v: unknown) =>
        Array.isArray(v) ? v.filter((x) => x !== null && typeof x === "object") : [];
      const section = (v: unknown) => (v !== null && typeof v === "object" && !Array.isArray(v) ? v : {});
      const shape = {
        clusters: list(doc.clusters),
        registries: list(doc.registries).map((r) => ({
          ...r,
          signingKey: section((r as Record<string, unknown>).signingKey),
          publishedKeys: list((r as Record<string, unknown>).publishedKeys),
        })),
        cache: section(doc.cache),
        server: { ...section(doc.server), tls: undefined },
      } as unknown as Config;
      checked = checkFiles(shape, baseDir);
    } catch {
      // an unexpected shape: the schema problems say enough
    }
    return {
      config: undefined,
      problems: attribute([...err.problems, ...checked.problems]),
      missingFiles: checked.missing,
    };
  }
}

function readConfigText(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    throw new ConfigError([
      `(file) ${file}: cannot read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
    ]);
  }
}

/**
 * Reads every config file and merges them in order (src/config/layers.ts); one file is taken as it is.
 * @returns the merged document and a function that names the file(s) behind each problem line (the
 *   identity for one file)
 * @throws {ConfigError} unreadable files and YAML syntax errors of every file, then merge problems
 */
function readLayers(files: readonly string[]): {
  doc: unknown;
  attribute: (problems: string[]) => string[];
} {
  if (files.length === 0) throw new ConfigError(["(file) no config file given"]);
  const problems: string[] = [];
  const layers = files.map((file) => {
    try {
      return { file, doc: parseYamlConfig(file, readConfigText(file)) };
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      problems.push(...err.problems);
      return { file, doc: undefined };
    }
  });
  if (problems.length > 0) throw new ConfigError(problems);
  if (layers.length === 1) return { doc: layers[0]!.doc, attribute: (p) => p };
  const merged = mergeConfigLayers(layers);
  return { doc: merged.doc, attribute: (p) => attributeProblems(p, merged.sources) };
}

/**
 * Reads, validates and freezes a YAML config file, or several merged in order (`--config` repeated:
 * later files deep-merge into earlier ones by the rules of src/config/layers.ts, and the merged document
 * is validated as one).
 * @param file path to the YAML file, or the paths of the layers in order; relative file paths inside a
 *   file are resolved against that file's folder
 * @param env environment for `PORT` / `HOST` overrides
 * @param overrides command-line settings applied after merging, before validation (the schema's rules
 *   apply to them)
 * @throws {ConfigError} with one dotted-path line per problem (unreadable file, YAML syntax, merge,
 *   schema, files); with several files each line starts with the file(s) its value came from
 */
export function loadConfigFile(
  file: string | readonly string[],
  env: Record<string, string | undefined> = process.env,
  overrides: ConfigOverrides = {},
): Config {
  const files = typeof file === "string" ? [file] : file;
  const layered = readLayers(files);
  const raw = applyOverrides(layered.doc, overrides);
  try {
    const cfg = parseConfig(raw, env);
    resolveFiles(cfg, dirname(resolve(files[0]!)));
    return deepFreeze(cfg);
  } catch (err) {
    if (err instanceof ConfigError) throw new ConfigError(layered.attribute(err.problems));
    throw err;
  }
}
