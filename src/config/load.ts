/**
 * Loading the configuration: YAML text -> zod validation -> file paths resolved -> frozen {@link Config}.
 * Nothing else in the service reads `process.env` or the config file.
 */
import { accessSync, constants, readFileSync } from "node:fs";
import { dirname, isAbsolute, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import type { z } from "zod";
import { ConfigError } from "../errors.js";
import { type Config, configSchema } from "./schema.js";

/** Formats a zod issue path as a dotted path with indices: `registries[0].signingKey.keyFile`. */
export function dottedPath(path: ReadonlyArray<PropertyKey>): string {
  let out = "";
  for (const seg of path) {
    if (typeof seg === "number") out += `[${seg}]`;
    else out += out === "" ? String(seg) : `.${String(seg)}`;
  }
  return out === "" ? "(root)" : out;
}

function issueLines(error: z.ZodError): string[] {
  return error.issues.map((issue) => {
    const path = [...issue.path];
    let message = issue.message;
    if (issue.code === "unrecognized_keys") {
      message = `unknown key${issue.keys.length > 1 ? "s" : ""} ${issue.keys.map((k) => `"${k}"`).join(", ")}`;
    } else if (issue.code === "invalid_type" && /received undefined/.test(issue.message)) {
      message = "is required";
    }
    return `${dottedPath(path)}: ${message}`;
  });
}

/**
 * Validates an already-parsed config object (e.g. from YAML) against the schema.
 * @param raw the parsed document
 * @param env environment for `PORT` / `HOST` overrides (defaults to none)
 * @returns the config with defaults applied (paths not yet resolved)
 * @throws {ConfigError} one line per problem, each with its dotted path
 */
export function parseConfig(raw: unknown, env: Record<string, string | undefined> = {}): Config {
  const result = configSchema.safeParse(raw ?? {});
  if (!result.success) throw new ConfigError(issueLines(result.error));
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
  return cfg;
}

/** Every config key that names a file, with its dotted path; used to resolve and check them. */
function filePaths(
  cfg: Config,
): Array<{ path: string; get: () => string | undefined; set: (v: string) => void }> {
  const out: Array<{ path: string; get: () => string | undefined; set: (v: string) => void }> = [];
  cfg.clusters.forEach((c, i) => {
    for (const key of ["jwksFile", "caFile", "bearerTokenFile"] as const) {
      out.push({ path: `clusters[${i}].${key}`, get: () => c[key], set: (v) => (c[key] = v) });
    }
  });
  cfg.registries.forEach((r, i) => {
    for (const key of ["keyFile", "certFile"] as const) {
      out.push({
        path: `registries[${i}].signingKey.${key}`,
        get: () => r.signingKey[key],
        set: (v) => (r.signingKey[key] = v),
      });
    }
    r.publishedKeys?.forEach((p, j) => {
      for (const key of ["keyFile", "certFile"] as const) {
        out.push({
          path: `registries[${i}].publishedKeys[${j}].${key}`,
          get: () => p[key],
          set: (v) => (p[key] = v),
        });
      }
    });
  });
  if (cfg.cache.redisPasswordFile !== undefined) {
    const cache = cfg.cache;
    out.push({
      path: "cache.redisPasswordFile",
      get: () => cache.redisPasswordFile,
      set: (v) => (cache.redisPasswordFile = v),
    });
  }
  if (cfg.server.tls) {
    const tls = cfg.server.tls;
    out.push({ path: "server.tls.certFile", get: () => tls.certFile, set: (v) => (tls.certFile = v) });
    out.push({ path: "server.tls.keyFile", get: () => tls.keyFile, set: (v) => (tls.keyFile = v) });
  }
  return out;
}

/**
 * Resolves every file path in `cfg` against `baseDir` and checks each is readable.
 * @throws {ConfigError} `path: file not found (resolved)` for each missing or unreadable file
 */
export function resolveFiles(cfg: Config, baseDir: string): void {
  const problems: string[] = [];
  for (const f of filePaths(cfg)) {
    const value = f.get();
    if (value === undefined) continue;
    const abs = isAbsolute(value) ? value : resolve(baseDir, value);
    f.set(abs);
    try {
      accessSync(abs, constants.R_OK);
    } catch {
      problems.push(`${f.path}: file not found or not readable (${abs})`);
    }
  }
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

/** Settings given on the command line that take the place of the file's (`serve --redis-url`). */
export interface ConfigOverrides {
  /** `cache.redisUrl` (a kustomize overlay sets it without replacing the base config file). */
  redisUrl?: string | undefined;
}

/**
 * Reads, validates and freezes a YAML config file.
 * @param file path to the YAML file; relative file paths inside it are resolved against its folder
 * @param env environment for `PORT` / `HOST` overrides
 * @param overrides command-line settings applied before validation (the schema's rules apply to them)
 * @throws {ConfigError} with one dotted-path line per problem (unreadable file, YAML syntax, schema, files)
 */
export function loadConfigFile(
  file: string,
  env: Record<string, string | undefined> = process.env,
  overrides: ConfigOverrides = {},
): Config {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new ConfigError([
      `(file) ${file}: cannot read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
    ]);
  }
  let raw: unknown;
  try {
    raw = parseYaml(text, { prettyErrors: true, uniqueKeys: true });
  } catch (err) {
    throw new ConfigError([`(yaml) ${file}: ${(err as Error).message.split("\n")[0]}`]);
  }
  if (overrides.redisUrl !== undefined) {
    const doc = (raw ?? {}) as Record<string, unknown>;
    const cache = doc.cache !== null && typeof doc.cache === "object" ? doc.cache : {};
    raw = { ...doc, cache: { ...cache, redisUrl: overrides.redisUrl } };
  }
  const cfg = parseConfig(raw, env);
  resolveFiles(cfg, dirname(resolve(file)));
  return deepFreeze(cfg);
}
