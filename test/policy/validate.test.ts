// biome-ignore-all lint/suspicious/noTemplateCurlyInString: policy templates such as ${namespace} are data, not JS templates
/**
 * Policy validation at load (src/policy/validate.ts, plus the policy checks of the schema): every
 * message, exactly, with its dotted path; errors and warnings kept apart; `loadPolicy` refuses errors and
 * reports warnings.
 */
import { describe, expect, it, vi } from "vitest";
import { buildApp } from "../../src/app.js";
import { parseConfig } from "../../src/config/load.js";
import type { Config } from "../../src/config/schema.js";
import { ConfigError } from "../../src/errors.js";
import { Policy } from "../../src/policy/engine.js";
import { loadPolicy, validatePolicy } from "../../src/policy/validate.js";
import { thrownBy } from "../helpers/errors.js";
import { capturingLogger, testConfig } from "../helpers/fixtures.js";

const KEY = { keyFile: "k", certFile: "c" };

/** A config with two clusters and two registries with their own audiences, and `policy`. */
function config(
  policy: Record<string, unknown>,
  edit: (raw: Record<string, unknown>) => void = () => {},
): Config {
  const raw: Record<string, unknown> = {
    clusters: [
      { name: "prod", issuer: "https://prod.example.com", audiences: ["registry.example.com"] },
      { name: "dev", issuer: "https://dev.example.com", audiences: ["registry.example.com"] },
    ],
    registries: [
      { service: "registry.example.com", issuer: "rte", signingKey: KEY },
      { service: "mirror.example.com", issuer: "rte", signingKey: KEY, audiences: ["mirror.example.com"] },
    ],
    policy,
  };
  edit(raw);
  return parseConfig(raw);
}

const pull = (repository: string) => ({ repository, actions: ["pull"] });

type Case = [description: string, rules: unknown[], errors: string[], warnings: string[]];

const cases: Case[] = [
  [
    "a clean policy",
    [
      {
        name: "teams",
        match: { namespace: "team-*" },
        allow: [{ repository: "${namespace}/**", actions: ["pull", "push"] }],
      },
      { name: "base", allow: [pull("library/**")], deny: [{ repository: "library/**", actions: ["push"] }] },
      { name: "prod", match: { cluster: "prod", service: "registry.*" }, allow: [pull("**")] },
    ],
    [],
    [],
  ],
  [
    "unknown template variable",
    [{ name: "r", allow: [pull("${team}/**")] }],
    [
      'policy.rules[0].allow[0].repository: unknown template variable "${team}" (known: ${cluster}, ${namespace}, ${serviceAccount}, ${annotation:<key>})',
    ],
    [],
  ],
  [
    "invalid annotation key in a template",
    [{ name: "r", allow: [pull("teams/${annotation:Team Name}/**")] }],
    [
      'policy.rules[0].allow[0].repository: "${annotation:Team Name}" does not name a valid annotation key (a Kubernetes annotation key: [prefix/]name)',
    ],
    [],
  ],
  [
    "annotation template in a deny entry",
    [
      { name: "all", allow: [pull("**")] },
      { name: "r", deny: [{ repository: "${annotation:frozen}/**", actions: ["push"] }] },
    ],
    [
      "policy.rules[1].deny[0].repository: ${annotation:...} is not allowed in deny entries: annotations are asserted by the caller, who could leave them out or change them to escape the deny",
    ],
    [],
  ],
  [
    "template in match patterns",
    [{ name: "r", match: { namespace: "${namespace}", cluster: "${cluster}" }, allow: [pull("x")] }],
    [
      'policy.rules[0].match.cluster: "${cluster}" would be matched literally: templates are expanded only in allow/deny repository patterns',
      'policy.rules[0].match.namespace: "${namespace}" would be matched literally: templates are expanded only in allow/deny repository patterns',
    ],
    [],
  ],
  [
    "literal cluster that is not configured",
    [{ name: "r", match: { cluster: "prdo" }, allow: [pull("x")] }],
    ['policy.rules[0].match.cluster: no cluster is named "prdo" (clusters: "prod", "dev")'],
    [],
  ],
  [
    "cluster glob that matches no cluster",
    [{ name: "r", match: { cluster: "stag*" }, allow: [pull("x")] }],
    [],
    ['policy.rules[0].match.cluster: "stag*" matches no configured cluster (clusters: "prod", "dev")'],
  ],
  [
    "literal service that is not configured",
    [{ name: "r", match: { service: "registry.example.org" }, allow: [pull("x")] }],
    [
      'policy.rules[0].match.service: no registry has service "registry.example.org" (registries: "registry.example.com", "mirror.example.com")',
    ],
    [],
  ],
  [
    "service glob that matches no registry",
    [{ name: "r", match: { service: "*.example.org" }, allow: [pull("x")] }],
    [],
    [
      'policy.rules[0].match.service: "*.example.org" matches no configured registry service (registries: "registry.example.com", "mirror.example.com")',
    ],
  ],
  [
    "two rules with the same name",
    [
      { name: "teams", allow: [pull("a/**")] },
      { name: "other", allow: [pull("b/**")] },
      { name: "teams", allow: [pull("c/**")] },
    ],
    [],
    [
      'policy.rules[2].name: "teams" is also the name of policy.rules[0]: explanations and audit logs cannot tell the two apart',
    ],
  ],
  [
    "deny entries in a rule that matches on annotations",
    [
      { name: "all", allow: [pull("**")] },
      {
        name: "frozen",
        match: { annotations: { "example.com/frozen": "true" } },
        deny: [{ repository: "**", actions: ["push"] }],
      },
    ],
    [],
    [
      "policy.rules[1].deny: this rule matches on annotations, which the caller asserts: a caller that leaves them out escapes these deny entries (put them in a rule without match.annotations)",
    ],
  ],
  [
    "annotation rule bound only to a literal namespace",
    [
      {
        name: "payments by annotation",
        match: { namespace: "payments", annotations: { "example.com/team": "checkout" } },
        allow: [pull("payments/checkout/**"), pull("sa/${serviceAccount}/**")],
      },
      // Not warned: the service account is narrowed, or every allow entry is bound to it.
      {
        name: "one service account",
        match: { namespace: "payments", serviceAccount: "builder", annotations: { "example.com/team": "a" } },
        allow: [pull("payments/a/**")],
      },
      {
        name: "bound to the service account",
        match: { namespace: "payments", annotations: { "example.com/team": "b" } },
        allow: [pull("payments/${serviceAccount}/**")],
      },
    ],
    [],
    [
      'policy.rules[0].match.annotations: bound only to the namespace "payments" (match.serviceAccount "*", an allow entry not bound to ${serviceAccount}): annotations are asserted by the caller, so any service account in that namespace can claim them and get that grant; narrow match.serviceAccount or bind the pattern to ${serviceAccount}',
    ],
  ],
  [
    "allow cancelled by a deny of the same rule",
    [
      {
        name: "r",
        allow: [pull("team-a/**"), { repository: "team-a/app", actions: ["pull", "push"] }],
        deny: [{ repository: "team-a/*", actions: ["pull", "push", "delete"] }],
      },
    ],
    [],
    [
      "policy.rules[0].allow[1]: grants nothing: every action it allows is denied on every repository it matches by policy.rules[0].deny[0]",
    ],
  ],
  [
    "allow cancelled by a deny of a rule that applies to a superset",
    [
      {
        name: "ci",
        match: { cluster: "prod", namespace: "ci", serviceAccount: "deployer" },
        allow: [{ repository: "prod/**", actions: ["delete"] }],
      },
      {
        name: "no-delete-in-prod",
        match: { cluster: "prod" },
        deny: [{ repository: "**", actions: ["delete"] }],
      },
    ],
    [],
    [
      "policy.rules[0].allow[0]: grants nothing: every action it allows is denied on every repository it matches by policy.rules[1].deny[0]",
    ],
  ],
  [
    "a deny of a narrower rule does not cancel the allow",
    [
      { name: "teams", match: { namespace: "team-*" }, allow: [pull("shared/**")] },
      { name: "team-a", match: { namespace: "team-a" }, deny: [{ repository: "**", actions: ["pull"] }] },
    ],
    [],
    [],
  ],
  [
    "a deny of a narrower pattern does not cancel the allow",
    [
      {
        name: "r",
        allow: [pull("team-a/**")],
        deny: [{ repository: "team-a/secret/**", actions: ["pull"] }],
      },
    ],
    [],
    [],
  ],
  [
    "a deny of other actions does not cancel the allow",
    [
      {
        name: "r",
        allow: [{ repository: "x/**", actions: ["pull", "push"] }],
        deny: [{ repository: "**", actions: ["push"] }],
      },
    ],
    [],
    [],
  ],
  [
    "two denies together cancel the allow",
    [
      {
        name: "r",
        allow: [{ repository: "x/*", actions: ["pull", "push"] }],
        deny: [{ repository: "x/**", actions: ["push"] }],
      },
      { name: "s", deny: [{ repository: "*/*", actions: ["pull"] }] },
    ],
    [],
    [
      "policy.rules[0].allow[0]: grants nothing: every action it allows is denied on every repository it matches by policy.rules[0].deny[0], policy.rules[1].deny[0]",
    ],
  ],
  [
    "allow * cancelled by a deny of pull, push and delete",
    [
      {
        name: "r",
        allow: [{ repository: "x/**", actions: ["*"] }],
        deny: [{ repository: "**", actions: ["pull", "push", "delete"] }],
      },
    ],
    [],
    [
      "policy.rules[0].allow[0]: grants nothing: every action it allows is denied on every repository it matches by policy.rules[0].deny[0]",
    ],
  ],
  [
    "catalog allow cancelled by a catalog deny",
    [
      { name: "ops", match: { namespace: "ops" }, allow: [{ registry: "catalog", actions: ["*"] }] },
      { name: "no-catalog", deny: [{ registry: "catalog", actions: ["*"] }] },
    ],
    [],
    [
      "policy.rules[0].allow[0]: grants nothing: every action it allows is denied on every repository it matches by policy.rules[1].deny[0]",
    ],
  ],
  [
    "templates: the same variable is covered, another is not",
    [
      {
        name: "r",
        allow: [pull("${namespace}/app"), pull("${cluster}/app")],
        deny: [{ repository: "${namespace}/**", actions: ["pull"] }],
      },
    ],
    [],
    [
      "policy.rules[0].allow[0]: grants nothing: every action it allows is denied on every repository it matches by policy.rules[0].deny[0]",
    ],
  ],
  [
    "annotation rules: a deny without annotations covers them, not the other way round",
    [
      { name: "teams", match: { annotations: { team: "*" } }, allow: [pull("teams/${annotation:team}/**")] },
      { name: "no-teams", match: { namespace: "*" }, deny: [{ repository: "teams/**", actions: ["pull"] }] },
      { name: "all", allow: [pull("x/**")] },
      {
        name: "frozen",
        match: { annotations: { frozen: "yes" } },
        deny: [{ repository: "**", actions: ["pull"] }],
      },
    ],
    [],
    [
      "policy.rules[0].allow[0].repository: uses ${annotation:...} but no ${cluster}, ${namespace} or ${serviceAccount}: annotations are asserted by the caller, so any matching workload can claim a value and be granted the repository it names; bind the pattern to the signed identity too",
      'policy.rules[0].match.annotations: with the wildcard namespace "*" and an allow entry not bound to ${namespace}, ${serviceAccount} or ${cluster}: annotations are asserted by the caller, so any workload in a matching namespace can claim them and get that grant; narrow match.namespace or bind the pattern to the identity',
      "policy.rules[3].deny: this rule matches on annotations, which the caller asserts: a caller that leaves them out escapes these deny entries (put them in a rule without match.annotations)",
      "policy.rules[0].allow[0]: grants nothing: every action it allows is denied on every repository it matches by policy.rules[1].deny[0]",
    ],
  ],
  [
    "several problems at once, in config order, errors and warnings apart",
    [
      { name: "a", match: { cluster: "nope" }, allow: [pull("${pod}/**")] },
      {
        name: "a",
        match: { service: "*.org" },
        allow: [pull("x")],
        deny: [{ repository: "x", actions: ["pull"] }],
      },
    ],
    [
      'policy.rules[0].match.cluster: no cluster is named "nope" (clusters: "prod", "dev")',
      'policy.rules[0].allow[0].repository: unknown template variable "${pod}" (known: ${cluster}, ${namespace}, ${serviceAccount}, ${annotation:<key>})',
    ],
    [
      'policy.rules[1].name: "a" is also the name of policy.rules[0]: explanations and audit logs cannot tell the two apart',
      'policy.rules[1].match.service: "*.org" matches no configured registry service (registries: "registry.example.com", "mirror.example.com")',
      "policy.rules[1].allow[0]: grants nothing: every action it allows is denied on every repository it matches by policy.rules[1].deny[0]",
    ],
  ],
];

describe("validatePolicy", () => {
  it.each(cases)("%s", (_d, rules, errors, warnings) => {
    expect(validatePolicy(config({ rules }))).toEqual({ errors, warnings });
  });

  it("`rules: []` acknowledged with `defaultDeny: true` is valid and quiet", () => {
    expect(validatePolicy(config({ rules: [], defaultDeny: true }))).toEqual({ errors: [], warnings: [] });
  });
});

describe("registry audiences (a token meant for one registry gets nothing at another)", () => {
  const rules = [{ name: "r", allow: [pull("**")] }];

  it("two registries sharing an explicit audience", () => {
    const cfg = config({ rules }, (raw) => {
      (raw.registries as Array<Record<string, unknown>>)[0]!.audiences = ["shared", "registry.example.com"];
      (raw.registries as Array<Record<string, unknown>>)[1]!.audiences = ["mirror.example.com", "shared"];
    });
    expect(validatePolicy(cfg)).toEqual({
      errors: [],
      warnings: [
        'registries[1].audiences[1]: "shared" is also an audience of registries[0]: a token meant for one of these registries is accepted at the other',
      ],
    });
  });

  it("a registry without audiences accepts the clusters', which include another registry's", () => {
    const cfg = config({ rules }, (raw) => {
      (raw.registries as Array<Record<string, unknown>>)[1]!.audiences = ["registry.example.com"];
    });
    expect(validatePolicy(cfg)).toEqual({
      errors: [],
      warnings: [
        'registries[0].audiences: not set, so this registry accepts the clusters\' audiences, which include "registry.example.com", the audience of registries[1]: a token meant for registries[1] is accepted here too; set registries[0].audiences',
      ],
    });
  });

  it("separate audiences are quiet", () => {
    const cfg = config({ rules }, (raw) => {
      (raw.registries as Array<Record<string, unknown>>)[0]!.audiences = ["registry.example.com"];
    });
    expect(validatePolicy(cfg)).toEqual({ errors: [], warnings: [] });
  });
});

describe("policy checks of the schema (refused by parseConfig)", () => {
  const refused = (policy: Record<string, unknown>): string[] => {
    try {
      config(policy);
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      return (err as ConfigError).problems;
    }
    throw new Error("accepted");
  };

  it.each([
    [
      "an empty rule list without defaultDeny",
      { rules: [] },
      [
        "policy.rules: no rules: every request would be denied (default deny); add at least one rule, or set policy.defaultDeny: true to deny everything on purpose",
      ],
    ],
    [
      "an empty rule list with defaultDeny: false",
      { rules: [], defaultDeny: false },
      [
        "policy.rules: no rules: every request would be denied (default deny); add at least one rule, or set policy.defaultDeny: true to deny everything on purpose",
      ],
    ],
    [
      "defaultDeny that is not a boolean",
      { rules: [], defaultDeny: "yes" },
      ["policy.defaultDeny: Invalid input: expected boolean, received string"],
    ],
    [
      "an unknown key in a rule's match",
      { rules: [{ name: "r", match: { namespaces: "x" }, allow: [pull("x")] }] },
      // the key that was probably meant is suggested (check-config's "did you mean")
      ['policy.rules[0].match: unknown key "namespaces" (did you mean "namespace"?)'],
    ],
    [
      "an unknown policy key",
      { rules: [{ name: "r", allow: [pull("x")] }], default: "deny" },
      ['policy: unknown key "default"'],
    ],
    [
      "an empty match.annotations",
      { rules: [{ name: "r", match: { annotations: {} }, allow: [pull("x")] }] },
      ["policy.rules[0].match.annotations: must list at least one annotation (or leave annotations out)"],
    ],
    [
      "an invalid annotation key in match.annotations",
      { rules: [{ name: "r", match: { annotations: { "Team Name": "*" } }, allow: [pull("x")] }] },
      ['policy.rules[0].match.annotations: "Team Name" is not a Kubernetes annotation key ([prefix/]name)'],
    ],
  ])("%s", (_d, policy, problems) => {
    expect(refused(policy)).toEqual(problems);
  });
});

describe("loadPolicy (start-up)", () => {
  it("refuses errors with every error line", () => {
    const caught = thrownBy(() => {
      loadPolicy(
        config({ rules: [{ name: "r", match: { cluster: "nope", service: "nope" }, allow: [pull("x")] }] }),
        () => {},
      );
    });
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as ConfigError).problems).toEqual([
      'policy.rules[0].match.cluster: no cluster is named "nope" (clusters: "prod", "dev")',
      'policy.rules[0].match.service: no registry has service "nope" (registries: "registry.example.com", "mirror.example.com")',
    ]);
  });

  it("reports each warning and returns the compiled policy", () => {
    const onWarning = vi.fn();
    const policy = loadPolicy(
      config({
        rules: [
          { name: "r", match: { cluster: "stag*" }, allow: [pull("x")] },
          { name: "s", allow: [pull("y")] },
        ],
      }),
      onWarning,
    );
    expect(policy).toBeInstanceOf(Policy);
    expect(onWarning.mock.calls).toEqual([
      ['policy.rules[0].match.cluster: "stag*" matches no configured cluster (clusters: "prod", "dev")'],
    ]);
  });
});

describe("start-up (buildApp) runs the validation", () => {
  it("logs each warning and refuses errors", async () => {
    const warned = await testConfig("https://issuer.example.com", {
      policy: { rules: [{ name: "r", match: { cluster: "stag*" }, allow: [pull("x")] }] },
    });
    const { logger, lines } = capturingLogger("info");
    const app = await buildApp(warned, { logger });
    await app.close();
    const warnings = lines
      .map((l) => JSON.parse(l) as { level: number; msg: string })
      .filter((l) => l.level === 40);
    expect(warnings.map((l) => l.msg)).toEqual([
      'config warning: policy.rules[0].match.cluster: "stag*" matches no configured cluster (clusters: "test")',
    ]);
    const broken = await testConfig("https://issuer.example.com", {
      policy: { rules: [{ name: "r", match: { cluster: "staging" }, allow: [pull("x")] }] },
    });
    await expect(buildApp(broken, { logger })).rejects.toThrow(
      new ConfigError(['policy.rules[0].match.cluster: no cluster is named "staging" (clusters: "test")']),
    );
  });
});
