// biome-ignore-all lint/suspicious/noTemplateCurlyInString: policy templates such as ${annotation:...} are data, not JS templates
/**
 * `check-config` warnings about caller-asserted annotations (src/policy/validate.ts) stop for rules that
 * only match clusters with `annotations: fromCluster` (the service reads the ServiceAccount itself) and
 * stay for every rule that can match a cluster where the caller asserts them.
 */
import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config/load.js";
import { validatePolicy } from "../../src/policy/validate.js";

const KEY = { keyFile: "k", certFile: "c" };
const ROLE = "example.com/role";

function config(rules: unknown[]) {
  return parseConfig({
    clusters: [
      {
        name: "prod",
        issuer: "https://prod.example.com",
        audiences: ["registry.example.com"],
        annotations: "fromCluster",
        apiServer: { url: "https://prod.example.com:6443" },
      },
      { name: "dev", issuer: "https://dev.example.com", audiences: ["registry.example.com"] },
    ],
    registries: [{ service: "registry.example.com", issuer: "rte", signingKey: KEY }],
    policy: { rules },
  });
}

/** A rule that draws all three annotation warnings when the caller asserts annotations. */
const rule = (cluster: string) => ({
  name: `publishers on ${cluster}`,
  match: { cluster, namespace: "*", annotations: { [ROLE]: "publisher" } },
  allow: [
    { repository: "releases/**", actions: ["pull"] },
    { repository: `\${annotation:${ROLE}}/**`, actions: ["pull"] },
  ],
  deny: [{ repository: "releases/secret", actions: ["pull"] }],
});

describe("annotation warnings and annotations: fromCluster", () => {
  it("no annotation warning for a rule that matches only fromCluster clusters", () => {
    expect(validatePolicy(config([rule("prod")]))).toEqual({ errors: [], warnings: [] });
  });

  it("all three warnings for a rule that can match a cluster where the caller asserts annotations", () => {
    for (const cluster of ["dev", "*"]) {
      const { errors, warnings } = validatePolicy(config([rule(cluster)]));
      expect(errors).toEqual([]);
      expect(warnings).toEqual([
        `policy.rules[0].allow[1].repository: uses \${annotation:...} but no \${cluster}, \${namespace} or \${serviceAccount}: annotations are asserted by the caller, so any matching workload can claim a value and be granted the repository it names; bind the pattern to the signed identity too`,
        'policy.rules[0].match.annotations: with the wildcard namespace "*" and an allow entry not bound to ${namespace}, ${serviceAccount} or ${cluster}: annotations are asserted by the caller, so any workload in a matching namespace can claim them and get that grant; narrow match.namespace or bind the pattern to the identity',
        "policy.rules[0].deny: this rule matches on annotations, which the caller asserts: a caller that leaves them out escapes these deny entries (put them in a rule without match.annotations)",
      ]);
    }
  });
});
