/** The config keys that name files: resolved against the config file's directory and checked readable. */
import { accessSync, constants } from "node:fs";
import { isAbsolute, resolve } from "node:path";
import { ConfigError } from "../errors.js";
import type { Config } from "./schema.js";

/** Every config key that names a file, with its dotted path; used to resolve and check them. */
function filePaths(
  cfg: Config,
): Array<{ path: string; get: () => string | undefined; set: (v: string) => void }> {
  const out: Array<{ path: string; get: () => string | undefined; set: (v: string) => void }> = [];
  cfg.clusters.forEach((c, i) => {
    for (const key of ["jwksFile", "caFile", "bearerTokenFile"] as const) {
      out.push({ path: `clusters[${i}].${key}`, get: () => c[key], set: (v) => (c[key] = v) });
    }
    const api = c.apiServer;
    if (api) {
      for (const key of ["caFile", "bearerTokenFile"] as const) {
        out.push({
          path: `clusters[${i}].apiServer.${key}`,
          get: () => api[key],
          set: (v) => (api[key] = v),
        });
      }
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
  const problems = checkFiles(cfg, baseDir).problems;
  if (problems.length > 0) throw new ConfigError(problems);
}

/**
 * Resolves every file path in `cfg` against `baseDir` (in place) and lists those that cannot be read.
 * @returns one `path: file not found or not readable (resolved)` line per such file, and their resolved paths
 */
export function checkFiles(cfg: Config, baseDir: string): { problems: string[]; missing: Set<string> } {
  const problems: string[] = [];
  const missing = new Set<string>();
  for (const f of filePaths(cfg)) {
    const value = f.get();
    if (typeof value !== "string") continue;
    const abs = isAbsolute(value) ? value : resolve(baseDir, value);
    f.set(abs);
    try {
      accessSync(abs, constants.R_OK);
    } catch {
      problems.push(`${f.path}: file not found or not readable (${abs})`);
      missing.add(abs);
    }
  }
  return { problems, missing };
}
