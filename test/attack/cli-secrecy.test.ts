/**
 * Attack (on the operator's terminal and CI logs): a service-account token pasted where a file path is
 * expected. `explain --token` already refuses to print one; the config file options of `serve`,
 * `check-config` and `explain` echoed the path in `config error: (file) <path>: cannot read`, i.e. the
 * token whole. Rule (CHANGELOG "No CLI error echoes a credential"): every CLI error masks token-shaped
 * text, config errors included.
 */
import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { REPO_ROOT } from "../helpers/plugin.js";

const TOKEN =
  "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6dGVhbS1hOmFwcCJ9.c2lnbmF0dXJlLW5vdC1yZWFs";

function cli(args: string[]) {
  return spawnSync(process.execPath, ["--import", "tsx", "src/bin.ts", ...args], {
    cwd: REPO_ROOT,
    encoding: "utf8",
    input: "",
    timeout: 30_000,
  });
}

describe("a token passed as the config file path is not echoed", () => {
  it.each([
    ["check-config --config <token>", ["check-config", "--config", TOKEN]],
    ["serve --config <token>", ["serve", "--config", TOKEN]],
    ["explain --config <token> --token -", ["explain", "--config", TOKEN, "--token", "-"]],
  ])("%s: exit 2, the path masked", (_label, args) => {
    const res = cli(args);
    expect(res.status).toBe(2);
    expect(res.stderr).toBe("config error: (file) ***: cannot read: ENOENT\n");
    for (const part of TOKEN.split(".")) expect(`${res.stdout}${res.stderr}`).not.toContain(part);
  });
});
