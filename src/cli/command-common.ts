/** What the `explain` and `check-config` commands share: their result, collaborators, config and key loading. */
import pino from "pino";
import { loadConfigFile } from "../config/load.js";
import type { Config } from "../config/schema.js";
import { ConfigError } from "../errors.js";
import { loadRegistryKeys, type SigningKey } from "../jose/signing-key.js";

/** What a command printed and its exit code. */
export interface CommandResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** Collaborators of the commands (tests freeze the clock). */
export interface CommandDeps {
  /** Clock, epoch milliseconds. */
  now?: () => number;
  /** Environment for `PORT`/`HOST` overrides (default `process.env`). */
  env?: Record<string, string | undefined>;
  /** Reads standard input to its end, for `--token -` (default: the process's standard input). */
  readStdin?: () => Promise<string>;
}

/** A logger that writes nothing (the commands report through their result). */
export const silent = () => pino({ level: "silent" });
/** `problems` as `config error: ...` lines. */
export const errorLines = (problems: readonly string[]) =>
  problems.map((p) => `config error: ${p}\n`).join("");
/** `problems` as `config warning: ...` lines. */
export const warningLines = (problems: readonly string[]) =>
  problems.map((p) => `config warning: ${p}\n`).join("");

/** Loads the config file (or layers), or the exit-2 result listing its problems. */
export function loadConfig(file: string | readonly string[], deps: CommandDeps): Config | CommandResult {
  try {
    return loadConfigFile(file, deps.env ?? process.env);
  } catch (err) {
    if (err instanceof ConfigError) return { stdout: "", stderr: errorLines(err.problems), code: 2 };
    throw err;
  }
}

/**
 * Loads every registry's signing key and published keys; problems go to `problems`, a line per key to
 * `lines`, and files in `missingFiles` (already reported as unreadable) are skipped.
 * @returns the signing keys by registry `service`
 */
export function loadSigningKeys(
  config: Config,
  problems: string[],
  lines?: string[],
  missingFiles: ReadonlySet<string> = new Set(),
): Map<string, SigningKey> {
  const keys = loadRegistryKeys(config.registries, missingFiles, (i, service, kind, key) =>
    lines?.push(`registries[${i}] (${service}): ${kind} key ${key.alg}, kid ${key.kid}\n`),
  );
  problems.push(...keys.problems);
  return keys.signing;
}
