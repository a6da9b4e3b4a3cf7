/**
 * What this build is: the package version (package.json), the Node.js runtime and platform. Shown by
 * `--version`, logged at start-up and exported as the `rte_build_info` metric.
 */
import { readFileSync } from "node:fs";

/** The build's identity. */
export interface BuildInfo {
  /** Package version (semver, package.json `version`), `0.0.0` when package.json is unreadable. */
  version: string;
  /** Node.js version, e.g. `v24.11.0`. */
  node: string;
  /** `platform/arch`, e.g. `linux/x64`. */
  platform: string;
}

function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
      version?: unknown;
    };
    return typeof pkg.version === "string" ? pkg.version : "0.0.0";
  } catch {
    return "0.0.0";
  }
}

/** This process's build information (read once). */
export const BUILD_INFO: Readonly<BuildInfo> = Object.freeze({
  version: packageVersion(),
  node: process.version,
  platform: `${process.platform}/${process.arch}`,
});

/** One line for `--version`: `registry-token-exchange 0.1.0 (node v24.11.0, linux/x64)`. */
export function versionLine(info: BuildInfo = BUILD_INFO): string {
  return `registry-token-exchange ${info.version} (node ${info.node}, ${info.platform})`;
}
