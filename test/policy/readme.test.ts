// biome-ignore-all lint/suspicious/noTemplateCurlyInString: policy templates such as ${namespace} are data, not JS templates
/**
 * The policy documentation (docs/policy.md) stays true: the worked example's YAML is a valid, warning-free
 * configuration, and its decision table is what the engine decides for it, row by row (granted actions
 * and every rule named in the row). The annotation snippet is checked too.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import type { Identity } from "../../src/authn/verify.js";
import { parseConfig } from "../../src/config/load.js";
import { Policy } from "../../src/policy/engine.js";
import { parseScope } from "../../src/policy/scope.js";
import { validatePolicy } from "../../src/policy/validate.js";

const doc = readFileSync(new URL("../../docs/policy.md", import.meta.url), "utf8");
const start = doc.indexOf("\n## Worked example\n");
const end = doc.indexOf("\n## ", start + 1);
const section = doc.slice(start, end === -1 ? undefined : end);
const yamlBlocks = [...section.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]!);
const table = section
  .slice(section.indexOf("What it decides"))
  .split("\n")
  .filter((l) => /^\| [a-z]+ \/ [a-z-]+ \/ [a-z-]+ \| `/.test(l))
  .map((l) => l.split("|").map((c) => c.trim()));

function who(text: string, annotations?: Record<string, string>): Identity {
  const [cluster, namespace, name] = text.split(" / ") as [string, string, string];
  return {
    cluster,
    namespace,
    serviceAccount: { name, uid: "u" },
    subject: `system:serviceaccount:${namespace}:${name}`,
    audiences: ["registry.example.com"],
    expiresAt: 2_000_000_000,
    issuedAt: 1_999_996_400,
    ...(annotations ? { annotations } : {}),
  };
}

describe("docs/policy.md worked example", () => {
  const config = parseConfig(parseYaml(yamlBlocks[0] ?? ""));
  const policy = new Policy(config.policy.rules);

  it("is a valid configuration without warnings", () => {
    expect(yamlBlocks.length).toBe(2);
    expect(validatePolicy(config)).toEqual({ errors: [], warnings: [] });
    expect(table.length).toBeGreaterThanOrEqual(12);
  });

  it.each(table.map((cells) => [cells[1]!, cells[2]!, cells[3]!, cells[4]!] as const))(
    "%s asks %s -> %s",
    (identity, scope, granted, why) => {
      const [d] = policy.evaluate(who(identity), "registry.example.com", [
        parseScope(scope.replaceAll("`", "")),
      ]);
      expect(d!.granted.join(",")).toBe(granted === "none" ? "" : granted.replaceAll("`", ""));
      const named = [...why.matchAll(/"([^"]+)"/g)].map((m) => m[1]!).sort();
      expect([...new Set([...d!.allowedBy, ...d!.deniedBy])].sort()).toEqual(named);
    },
  );

  it("the annotation snippet is a valid rule that does what the text says", () => {
    const rule = parseYaml(yamlBlocks[1] ?? "") as unknown[];
    const cfg = parseConfig({ ...parseYaml(yamlBlocks[0] ?? ""), policy: { rules: rule } });
    expect(validatePolicy(cfg)).toEqual({ errors: [], warnings: [] });
    const p = new Policy(cfg.policy.rules);
    const scope = [parseScope("repository:tenant-1/teams/payments/app:pull")];
    const grant = (id: Identity) => p.evaluate(id, "registry.example.com", scope)[0]!.granted;
    expect(grant(who("prod / tenant-1 / runner", { "example.com/team": "payments" }))).toEqual(["pull"]);
    expect(grant(who("prod / tenant-1 / runner", { "example.com/team": "billing" }))).toEqual([]);
    expect(grant(who("prod / tenant-1 / runner"))).toEqual([]);
    expect(grant(who("prod / team-a / runner", { "example.com/team": "payments" }))).toEqual([]);
    // a workload of another tenant claiming the annotation only reaches its own namespace tree
    expect(grant(who("prod / tenant-2 / runner", { "example.com/team": "payments" }))).toEqual([]);
  });
});
