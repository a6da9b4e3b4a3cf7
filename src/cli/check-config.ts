/**
 * `check-config --config FILE [--fetch-keys] [--strict]` validates the file (schema, files, signing keys,
 * `validatePolicy`, `jwksFile` key sets) and contacts nothing unless `--fetch-keys` is given, which loads
 * every other cluster's keys through discovery/JWKS as the service would.
 *
 * Exit codes: 0 ok (warnings are printed but pass); 2 configuration errors, and with `--strict` warnings
 * too; 1 a cluster's keys could not be fetched (`--fetch-keys`).
 */
import { readFileSync } from "node:fs";
import { parseJwks } from "../authn/jwk.js";
import { ClusterKeySet } from "../authn/jwks.js";
import { classifyTlsFailure, tlsAdvice } from "../authn/tls-advice.js";
import { inspectConfigFile } from "../config/load.js";
import { RequestError } from "../errors.js";
import { validatePolicy } from "../policy/validate.js";
import {
  type CommandDeps,
  type CommandResult,
  errorLines,
  loadSigningKeys,
  silent,
  warningLines,
} from "./command-common.js";

/** Options of {@link checkConfigCommand}. */
export interface CheckConfigOptions {
  /** The config file, or the layers merged in order (`--config` repeated). */
  config: string | readonly string[];
  fetchKeys?: boolean | undefined;
  strict?: boolean | undefined;
}

/**
 * `registry-token-exchange check-config`: validates a config file and loads its keys.
 * @returns a line per registry and cluster key set and an `ok:` line on stdout, warnings (and errors) on
 *   stderr; exit code 0, 2 (errors, or warnings with `strict`), or 1 (`fetchKeys` failed)
 */
export async function checkConfigCommand(
  opts: CheckConfigOptions,
  deps: CommandDeps = {},
): Promise<CommandResult> {
  const now = deps.now ?? Date.now;
  // Every problem in one run: schema and unreadable files together, then keys and policy.
  const inspection = inspectConfigFile(opts.config, deps.env ?? process.env);
  if (inspection.config === undefined)
    return { stdout: "", stderr: errorLines(inspection.problems), code: 2 };
  const config = inspection.config;
  const missing = inspection.missingFiles;
  const lines: string[] = [];
  const errors: string[] = [...inspection.problems];
  const failures: string[] = [];
  loadSigningKeys(config, errors, lines, missing);
  const validation = validatePolicy(config);
  errors.push(...validation.errors);
  const warnings = [...validation.warnings];
  for (const [i, c] of config.clusters.entries()) {
    const at = `clusters[${i}] (${c.name})`;
    if (c.verification === "tokenReview") {
      // Its tokens are authenticated by the API server's TokenReview: no key of its is ever used.
      lines.push(`${at}: verification: tokenReview (no keys used; the API server reviews every token)\n`);
    } else if (c.jwksFile !== undefined) {
      if (missing.has(c.jwksFile)) continue;
      const keys = readJwksFile(c.jwksFile, `clusters[${i}].jwksFile`, errors, warnings);
      if (keys !== undefined) lines.push(`${at}: ${keys} key(s) from ${c.jwksFile}\n`);
    } else if (opts.fetchKeys) {
      const ks = new ClusterKeySet(c, { logger: silent(), now });
      try {
        const set = await ks.refresh();
        lines.push(`${at}: ${set.keys.length} key(s) fetched\n`);
      } catch (err) {
        const reason =
          err instanceof RequestError ? String(err.logDetail?.reason ?? err.message) : String(err);
        // A certificate that is not trusted: say which key fixes it.
        const tls = classifyTlsFailure(reason);
        const advice = tls ? tlsAdvice(tls, "the cluster's certificate", `clusters[${i}].caFile`) : reason;
        failures.push(`${at}: keys could not be fetched: ${advice}`);
      } finally {
        await ks.close();
      }
    } else {
      lines.push(`${at}: keys not fetched (offline; --fetch-keys fetches them)\n`);
    }
  }
  let stderr = warningLines(warnings);
  if (errors.length > 0) return { stdout: lines.join(""), stderr: stderr + errorLines(errors), code: 2 };
  if (opts.strict && warnings.length > 0) {
    stderr += errorLines([`--strict: ${warnings.length} warning(s) treated as errors`]);
    return { stdout: lines.join(""), stderr, code: 2 };
  }
  if (failures.length > 0) {
    stderr += failures.map((f) => `error: ${f}\n`).join("");
    return { stdout: lines.join(""), stderr, code: 1 };
  }
  const n = config.registries.length;
  const summary = `ok: ${config.clusters.length} cluster(s), ${n} registr${n === 1 ? "y" : "ies"}, ${config.policy.rules.length} rule(s)${warnings.length > 0 ? `, ${warnings.length} warning(s)` : ""}\n`;
  return { stdout: lines.join("") + summary, stderr, code: 0 };
}

/** Reads and parses a static JWKS file; problems go to `errors`/`warnings`. @returns the usable key count */
function readJwksFile(file: string, path: string, errors: string[], warnings: string[]): number | undefined {
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    errors.push(`${path}: cannot read the JWKS: ${(err as Error).message.split("\n")[0]}`);
    return undefined;
  }
  try {
    const keys = parseJwks(doc, (k, reason) => warnings.push(`${path}: key [${k}] skipped: ${reason}`));
    if (keys.length === 0) {
      errors.push(`${path}: the JWKS has no usable key`);
      return undefined;
    }
    return keys.length;
  } catch (err) {
    errors.push(`${path}: ${(err as Error).message}`);
    return undefined;
  }
}
