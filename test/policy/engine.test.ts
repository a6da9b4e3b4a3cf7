// biome-ignore-all lint/suspicious/noTemplateCurlyInString: policy templates such as ${namespace} are data, not JS templates
/**
 * Policy decisions (src/policy/engine.ts), table-driven like docker_auth's acl_test: identity x service x
 * scope x rules -> granted actions, allowedBy, deniedBy. Rules go through the real config schema so that
 * defaults (match `*`, empty allow/deny) are the ones production sees.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Identity } from "../../src/authn/verify.js";
import { parseConfig } from "../../src/config/load.js";
import type { RuleConfig } from "../../src/config/schema.js";
import { ConfigError } from "../../src/errors.js";
import { Policy } from "../../src/policy/engine.js";
import { parseScope, parseScopes, type Scope } from "../../src/policy/scope.js";
import { thrownBy } from "../helpers/errors.js";

/** Validates raw rules through the real schema (defaults applied). */
function compileRules(rules: unknown[]): RuleConfig[] {
  return parseConfig({
    clusters: [{ name: "dev", issuer: "https://dev.example.com", audiences: ["a"] }],
    registries: [{ service: "registry.test", issuer: "i", signingKey: { keyFile: "k", certFile: "c" } }],
    policy: { rules },
  }).policy.rules;
}

function identity(
  namespace: string,
  serviceAccount = "builder",
  cluster = "dev",
  annotations?: Record<string, string>,
): Identity {
  return {
    cluster,
    namespace,
    serviceAccount: { name: serviceAccount, uid: "00000000-0000-4000-a000-000000000000" },
    subject: `system:serviceaccount:${namespace}:${serviceAccount}`,
    audiences: ["registry.test"],
    expiresAt: 2_000_000_000,
    issuedAt: 1_999_996_400,
    ...(annotations ? { annotations } : {}),
  };
}

/** An identity that came through /v1/credential-provider with these service-account annotations. */
function annotated(
  annotations: Record<string, string>,
  namespace = "apps",
  serviceAccount = "runner",
): Identity {
  return identity(namespace, serviceAccount, "dev", annotations);
}

const RULES = [
  {
    name: "team-push",
    match: { namespace: "team-*" },
    allow: [{ repository: "${namespace}/**", actions: ["pull", "push"] }],
  },
  { name: "library-pull", allow: [{ repository: "library/*", actions: ["pull"] }] },
  {
    name: "ci-all",
    match: { namespace: "ci", serviceAccount: "deployer" },
    allow: [{ repository: "**", actions: ["*"] }],
    deny: [{ repository: "secret/**", actions: ["push", "delete"] }],
  },
  {
    name: "ops-catalog",
    match: { cluster: "prod", namespace: "ops" },
    allow: [{ registry: "catalog", actions: ["*"] }],
  },
  {
    name: "no-delete-in-prod",
    match: { cluster: "prod" },
    deny: [{ repository: "**", actions: ["delete"] }],
  },
  {
    name: "sa-scoped",
    allow: [{ repository: "sa/${cluster}/${serviceAccount}/*", actions: ["pull", "push"] }],
  },
  { name: "mirror-pull", match: { service: "mirror.*" }, allow: [{ repository: "**", actions: ["pull"] }] },
  { name: "freeze", match: { namespace: "team-frozen" }, deny: [{ repository: "**", actions: ["push"] }] },
  {
    name: "admins",
    match: { namespace: "admin" },
    allow: [{ repository: "**", actions: ["pull", "push", "delete"] }],
  },
  { name: "quarantine", match: { namespace: "quarantine" }, deny: [{ repository: "**", actions: ["*"] }] },
  {
    name: "team-a-extra",
    match: { namespace: "team-a", serviceAccount: "builder" },
    allow: [{ repository: "shared/**", actions: ["pull", "push"] }],
    deny: [{ repository: "shared/readonly/**", actions: ["push"] }],
  },
  {
    name: "shared-pull",
    match: { namespace: "team-*" },
    allow: [{ repository: "shared/**", actions: ["pull"] }],
  },
  {
    name: "team-by-annotation",
    match: { annotations: { "example.com/team": "*" } },
    allow: [{ repository: "teams/${annotation:example.com/team}/**", actions: ["pull", "push"] }],
  },
  {
    name: "gpu-pool",
    match: { annotations: { "example.com/tier": "gpu-*" } },
    allow: [{ repository: "ml/**", actions: ["pull"] }],
  },
  {
    name: "payments-prod",
    match: { annotations: { "example.com/team": "payments", "example.com/env": "prod" } },
    allow: [{ repository: "payments/release/*", actions: ["pull"] }],
  },
  {
    name: "cache-by-annotation",
    allow: [{ repository: "cache/${namespace}/${annotation:example.com/team}", actions: ["pull"] }],
  },
];

type Row = [
  description: string,
  who: Identity,
  service: string,
  scope: string,
  granted: string[],
  allowedBy: string[],
  deniedBy: string[],
];

const S = "registry.test";
const teamA = identity("team-a");
const rows: Row[] = [
  [
    "own namespace push+pull",
    teamA,
    S,
    "repository:team-a/app:pull,push",
    ["pull", "push"],
    ["team-push"],
    [],
  ],
  ["own namespace, any depth (**)", teamA, S, "repository:team-a/x/y/z:push", ["push"], ["team-push"], []],
  [
    "delete not granted",
    teamA,
    S,
    "repository:team-a/app:pull,push,delete",
    ["pull", "push"],
    ["team-push"],
    [],
  ],
  ["other team's namespace", teamA, S, "repository:team-b/app:pull,push", [], [], []],
  ["template is a literal boundary", teamA, S, "repository:team-ab/app:pull", [], [], []],
  ["`${namespace}/**` does not cover the bare name", teamA, S, "repository:team-a:pull", [], [], []],
  [
    "host:port name is a different repository",
    teamA,
    S,
    "repository:localhost:5000/team-a/app:pull",
    [],
    [],
    [],
  ],
  ["library pull for everyone", teamA, S, "repository:library/ubuntu:pull", ["pull"], ["library-pull"], []],
  ["library push refused", teamA, S, "repository:library/ubuntu:push", [], [], []],
  ["library/* is one component", teamA, S, "repository:library/nested/ubuntu:pull", [], [], []],
  [
    "partial: pull of pull,push",
    teamA,
    S,
    "repository:library/ubuntu:pull,push",
    ["pull"],
    ["library-pull"],
    [],
  ],
  ["* action allowed as *", identity("ci", "deployer"), S, "repository:any/thing:*", ["*"], ["ci-all"], []],
  [
    "* in the allow entry covers every action",
    identity("ci", "deployer"),
    S,
    "repository:any/thing:pull,push,delete",
    ["pull", "push", "delete"],
    ["ci-all"],
    [],
  ],
  [
    "deny wins over * allow",
    identity("ci", "deployer"),
    S,
    "repository:secret/key:pull,push,delete",
    ["pull"],
    ["ci-all"],
    ["ci-all"],
  ],
  [
    "requested * refused when anything is denied for it",
    identity("ci", "deployer"),
    S,
    "repository:secret/key:*",
    [],
    ["ci-all"],
    ["ci-all"],
  ],
  ["match on serviceAccount", identity("ci", "other"), S, "repository:any/thing:pull", [], [], []],
  ["catalog grant", identity("ops", "builder", "prod"), S, "registry:catalog:*", ["*"], ["ops-catalog"], []],
  ["catalog only in prod", identity("ops", "builder", "dev"), S, "registry:catalog:*", [], [], []],
  ["catalog not granted by a repository **", identity("ci", "deployer"), S, "registry:catalog:*", [], [], []],
  [
    "repository named catalog is not the catalog",
    identity("ops", "builder", "prod"),
    S,
    "repository:catalog:pull",
    [],
    [],
    [],
  ],
  [
    "deny of an action that was never allowed still reports deniedBy",
    identity("team-a", "builder", "prod"),
    S,
    "repository:team-a/app:pull,push,delete",
    ["pull", "push"],
    ["team-push"],
    ["no-delete-in-prod"],
  ],
  [
    "deny wins across rules",
    identity("admin", "root", "prod"),
    S,
    "repository:x/y:delete",
    [],
    ["admins"],
    ["no-delete-in-prod"],
  ],
  [
    "same request outside prod",
    identity("admin", "root", "dev"),
    S,
    "repository:x/y:delete",
    ["delete"],
    ["admins"],
    [],
  ],
  ["explicit pull,push,delete is not *", identity("admin", "root", "dev"), S, "repository:x/y:*", [], [], []],
  [
    "* alongside explicit actions",
    identity("admin", "root", "dev"),
    S,
    "repository:x/y:pull,*",
    ["pull"],
    ["admins"],
    [],
  ],
  [
    "${cluster}/${serviceAccount} template",
    identity("x", "builder", "dev"),
    S,
    "repository:sa/dev/builder/app:push",
    ["push"],
    ["sa-scoped"],
    [],
  ],
  [
    "template * stays in one component",
    identity("x", "builder", "dev"),
    S,
    "repository:sa/dev/builder/a/b:push",
    [],
    [],
    [],
  ],
  [
    "template of another cluster",
    identity("x", "builder", "dev"),
    S,
    "repository:sa/prod/builder/app:pull",
    [],
    [],
    [],
  ],
  [
    "template of another service account",
    identity("x", "other", "dev"),
    S,
    "repository:sa/dev/builder/app:pull",
    [],
    [],
    [],
  ],
  [
    "match on service",
    identity("nobody"),
    "mirror.example.com",
    "repository:any/repo:pull,push",
    ["pull"],
    ["mirror-pull"],
    [],
  ],
  ["service pattern does not match", identity("nobody"), S, "repository:any/repo:pull", [], [], []],
  [
    "frozen team keeps pull, loses push",
    identity("team-frozen"),
    S,
    "repository:team-frozen/app:pull,push",
    ["pull"],
    ["team-push"],
    ["freeze"],
  ],
  [
    "deny * removes everything",
    identity("quarantine"),
    S,
    "repository:library/ubuntu:pull",
    [],
    ["library-pull"],
    ["quarantine"],
  ],
  [
    "unions allows of two rules",
    teamA,
    S,
    "repository:shared/lib:pull,push",
    ["pull", "push"],
    ["shared-pull", "team-a-extra"],
    [],
  ],
  [
    "deny inside a rule's own allow",
    teamA,
    S,
    "repository:shared/readonly/lib:pull,push",
    ["pull"],
    ["shared-pull", "team-a-extra"],
    ["team-a-extra"],
  ],
  [
    "other team gets only shared pull",
    identity("team-b"),
    S,
    "repository:shared/lib:pull,push",
    ["pull"],
    ["shared-pull"],
    [],
  ],
  ["nothing matches: default deny", identity("default"), S, "repository:app:pull", [], [], []],
  [
    "annotation template grants the annotated team's repositories",
    annotated({ "example.com/team": "payments" }),
    S,
    "repository:teams/payments/api:push,pull",
    ["pull", "push"],
    ["team-by-annotation"],
    [],
  ],
  [
    "annotation template: another team's repositories",
    annotated({ "example.com/team": "payments" }),
    S,
    "repository:teams/billing/api:pull",
    [],
    [],
    [],
  ],
  [
    "annotation template: ** below the value, any depth",
    annotated({ "example.com/team": "payments" }),
    S,
    "repository:teams/payments/a/b/c:pull",
    ["pull"],
    ["team-by-annotation"],
    [],
  ],
  [
    "annotation value is a literal boundary",
    annotated({ "example.com/team": "pay" }),
    S,
    "repository:teams/payments/api:pull",
    [],
    [],
    [],
  ],
  [
    "no annotations (a plain service-account token): annotation rules never apply",
    identity("apps", "runner"),
    S,
    "repository:teams/payments/api:pull",
    [],
    [],
    [],
  ],
  [
    "empty annotation map: annotation rules never apply",
    annotated({}),
    S,
    "repository:teams/payments/api:pull",
    [],
    [],
    [],
  ],
  [
    "annotation value * cannot widen the template (entry grants nothing)",
    annotated({ "example.com/team": "*" }),
    S,
    "repository:teams/payments/api:pull",
    [],
    [],
    [],
  ],
  [
    "annotation value ** cannot widen the template",
    annotated({ "example.com/team": "**" }),
    S,
    "repository:teams/a/b:pull",
    [],
    [],
    [],
  ],
  [
    "annotation value ../x cannot escape the prefix",
    annotated({ "example.com/team": "../library" }),
    S,
    "repository:library/ubuntu:push",
    [],
    [],
    [],
  ],
  [
    "annotation value spanning components is refused, even where it would match literally",
    annotated({ "example.com/team": "a/b" }),
    S,
    "repository:teams/a/b/app:pull",
    [],
    [],
    [],
  ],
  [
    "upper-case annotation value is not a path component",
    annotated({ "example.com/team": "Payments" }),
    S,
    "repository:teams/payments/api:pull",
    [],
    [],
    [],
  ],
  [
    "match.annotations glob on the value",
    annotated({ "example.com/tier": "gpu-a100" }),
    S,
    "repository:ml/models/llm:pull,push",
    ["pull"],
    ["gpu-pool"],
    [],
  ],
  [
    "match.annotations glob that does not match",
    annotated({ "example.com/tier": "cpu" }),
    S,
    "repository:ml/models/llm:pull",
    [],
    [],
    [],
  ],
  [
    "annotation keys are exact: a key without its prefix is another key",
    annotated({ tier: "gpu-a100" }),
    S,
    "repository:ml/models/llm:pull",
    [],
    [],
    [],
  ],
  [
    "every listed annotation must match",
    annotated({ "example.com/team": "payments" }),
    S,
    "repository:payments/release/api:pull",
    [],
    [],
    [],
  ],
  [
    "all listed annotations match",
    annotated({ "example.com/team": "payments", "example.com/env": "prod" }),
    S,
    "repository:payments/release/api:pull",
    ["pull"],
    ["payments-prod"],
    [],
  ],
  [
    "a wrong value for one listed annotation",
    annotated({ "example.com/team": "payments", "example.com/env": "staging" }),
    S,
    "repository:payments/release/api:pull",
    [],
    [],
    [],
  ],
  [
    "namespace and annotation templates together",
    annotated({ "example.com/team": "payments" }, "apps"),
    S,
    "repository:cache/apps/payments:pull",
    ["pull"],
    ["cache-by-annotation"],
    [],
  ],
  [
    "template in a rule without match.annotations: missing annotation grants nothing",
    identity("apps", "runner"),
    S,
    "repository:cache/apps/payments:pull",
    [],
    [],
    [],
  ],
  [
    "template in a rule without match.annotations: namespace part still literal",
    annotated({ "example.com/team": "payments" }, "other"),
    S,
    "repository:cache/apps/payments:pull",
    [],
    [],
    [],
  ],
  [
    "annotations add to, never replace, the identity's other rules",
    identity("team-a", "builder", "dev", { "example.com/team": "payments" }),
    S,
    "repository:team-a/app:pull,push",
    ["pull", "push"],
    ["team-push"],
    [],
  ],
  [
    "repository catalog scope is not a repository for templates",
    annotated({ "example.com/team": "payments" }),
    S,
    "registry:catalog:*",
    [],
    [],
    [],
  ],
];

describe("Policy.evaluate: table", () => {
  const policy = new Policy(compileRules(RULES));
  it.each(rows)("%s", (_d, who, service, scope, granted, allowedBy, deniedBy) => {
    const requested = parseScope(scope);
    const [decision] = policy.evaluate(who, service, [requested]);
    expect(decision).toEqual({ requested, granted, allowedBy, deniedBy });
  });

  it("granted actions are always a subset of the requested ones", () => {
    for (const [, who, service, scope] of rows) {
      const requested = parseScope(scope);
      const [d] = policy.evaluate(who, service, [requested]);
      for (const a of d!.granted) expect(requested.actions).toContain(a);
    }
  });

  it("answers one decision per scope, in request order (cross-repository mount)", () => {
    const scopes = parseScopes(["repository:team-a/dst:push,pull repository:library/src:pull"]);
    const decisions = policy.evaluate(teamA, S, scopes);
    expect(decisions.map((d) => [d.requested.name, d.granted])).toEqual([
      ["team-a/dst", ["pull", "push"]],
      ["library/src", ["pull"]],
    ]);
  });

  it("an empty request (login) gets no decisions", () => {
    expect(policy.evaluate(teamA, S, [])).toEqual([]);
  });

  it("template regexes are per identity (cache does not leak one identity's values to another)", () => {
    const scope = [parseScope("repository:team-a/app:push")];
    expect(policy.evaluate(teamA, S, scope)[0]!.granted).toEqual(["push"]);
    expect(policy.evaluate(identity("team-b"), S, scope)[0]!.granted).toEqual([]);
    expect(policy.evaluate(teamA, S, scope)[0]!.granted).toEqual(["push"]);
    expect(policy.evaluate(identity("team-a", "other"), S, scope)[0]!.granted).toEqual(["push"]);
  });
});

describe("Policy.evaluate: memoised decisions", () => {
  const policy = new Policy(compileRules(RULES));
  const S = "registry.test";
  const scope = () => [parseScope("repository:teams/payments/app:push")];

  it("a remembered decision is never another identity's: annotations, names and service all count", () => {
    const payments = Object.freeze(annotated({ "example.com/team": "payments" }));
    expect(policy.evaluate(payments, S, scope())[0]!.granted).toEqual(["push"]);
    // Same names, other annotation value; then no annotations at all; then a mutable copy of the first.
    expect(policy.evaluate(annotated({ "example.com/team": "search" }), S, scope())[0]!.granted).toEqual([]);
    expect(policy.evaluate(identity("apps", "runner"), S, scope())[0]!.granted).toEqual([]);
    const copy = annotated({ "example.com/team": "payments" });
    expect(policy.evaluate(copy, S, scope())[0]!.granted).toEqual(["push"]);
    copy.annotations = { "example.com/team": "search" };
    expect(policy.evaluate(copy, S, scope())[0]!.granted).toEqual([]);
    expect(policy.evaluate(payments, "other.test", scope())[0]!.granted).toEqual(["push"]);
    expect(
      policy.evaluate(payments, S, [parseScope("repository:teams/search/app:push")])[0]!.granted,
    ).toEqual([]);
  });

  it("answers with the caller's scope, and shares only frozen arrays", () => {
    const who = identity("team-a");
    const first = policy.evaluate(who, S, [parseScope("repository:team-a/app:pull,push")]);
    const requested = parseScope("repository:team-a/app:pull,push");
    const [again] = policy.evaluate(who, S, [requested]);
    expect(again!.requested).toBe(requested);
    expect(again).toEqual({ ...first[0], requested });
    expect(Object.isFrozen(again!.granted)).toBe(true);
    expect(() => (again!.granted as string[]).push("delete")).toThrow(TypeError);
  });
});

describe("Policy.evaluate: order independence", () => {
  const scopeTexts = [
    "repository:team-a/app:pull,push,delete",
    "repository:shared/readonly/lib:push,pull",
    "repository:library/ubuntu:pull,push",
    "repository:secret/key:delete,pull,*",
    "registry:catalog:*",
    "repository:sa/prod/builder/app:pull,push",
  ];
  const who = [
    teamA,
    identity("ci", "deployer", "prod"),
    identity("ops", "builder", "prod"),
    identity("team-frozen"),
    identity("x", "builder", "prod"),
  ];
  const reference = new Policy(compileRules(RULES));
  const byName = (ds: ReturnType<Policy["evaluate"]>) =>
    Object.fromEntries(ds.map((d) => [`${d.requested.type}:${d.requested.name}`, d]));

  it("shuffling rules, scopes and actions never changes a decision", () => {
    fc.assert(
      fc.property(
        fc.shuffledSubarray(RULES, { minLength: RULES.length, maxLength: RULES.length }),
        fc.shuffledSubarray(scopeTexts, { minLength: scopeTexts.length, maxLength: scopeTexts.length }),
        fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        (rules, texts, seed) => {
          const shuffled = new Policy(compileRules(rules));
          // Reverse or rotate each scope's action list by the seed: a different textual order.
          const scopes = texts.map((t) => {
            const i = t.lastIndexOf(":");
            const actions = t.slice(i + 1).split(",");
            const k = seed % actions.length;
            const reordered = [...actions.slice(k), ...actions.slice(0, k)].reverse();
            return parseScope(`${t.slice(0, i)}:${reordered.join(",")}`);
          });
          for (const w of who) {
            expect(byName(shuffled.evaluate(w, S, scopes))).toEqual(
              byName(reference.evaluate(w, S, parseScopes(scopeTexts))),
            );
          }
        },
      ),
      { numRuns: 60, seed: 4412 },
    );
  });

  it("`push,pull` and `pull,push` get the same decision (docker_auth#275)", () => {
    const a = reference.evaluate(teamA, S, [parseScope("repository:team-a/app:push,pull")]);
    const b = reference.evaluate(teamA, S, [parseScope("repository:team-a/app:pull,push")]);
    expect(a).toEqual(b);
    expect(a[0]!.granted).toEqual(["pull", "push"]);
  });

  it("is not changed by the presence of other scopes in the same request", () => {
    const alone = reference.evaluate(teamA, S, [parseScope("repository:library/ubuntu:pull,push")]);
    const together = reference
      .evaluate(teamA, S, parseScopes(scopeTexts))
      .filter((d) => d.requested.name === "library/ubuntu");
    expect(together).toEqual(alone);
  });
});

describe("Policy construction", () => {
  it("an unknown template variable is a ConfigError with the dotted path of the entry", () => {
    const rules = compileRules([
      { name: "ok", allow: [{ repository: "library/*", actions: ["pull"] }] },
      {
        name: "bad",
        allow: [{ repository: "x/*", actions: ["pull"] }],
        deny: [
          { repository: "y/*", actions: ["push"] },
          { repository: "${team}/**", actions: ["push"] },
        ],
      },
    ]);
    const caught = thrownBy(() => new Policy(rules));
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as ConfigError).problems).toEqual([
      'policy.rules[1].deny[1].repository: unknown template variable "${team}" (known: ${cluster}, ${namespace}, ${serviceAccount}, ${annotation:<key>})',
    ]);
  });

  it("a policy with only deny rules grants nothing", () => {
    const policy = new Policy(compileRules([{ name: "d", deny: [{ repository: "**", actions: ["push"] }] }]));
    const [d] = policy.evaluate(teamA, S, [parseScope("repository:team-a/app:pull,push")]);
    expect(d).toMatchObject({ granted: [], allowedBy: [], deniedBy: ["d"] });
  });

  it("the result does not depend on the regex cache being warm", () => {
    const scopes: Scope[] = [parseScope("repository:team-a/app:pull,push")];
    const cold = new Policy(compileRules(RULES)).evaluate(teamA, S, scopes);
    const warm = new Policy(compileRules(RULES));
    warm.evaluate(identity("team-b"), S, scopes);
    warm.evaluate(teamA, S, scopes);
    expect(warm.evaluate(teamA, S, scopes)).toEqual(cold);
  });
});

describe("Policy: templates that cannot be filled, applicable rules, empty policies", () => {
  it("a deny whose template cannot be filled denies its actions everywhere (fails closed)", () => {
    const policy = new Policy(
      compileRules([
        { name: "all", allow: [{ repository: "**", actions: ["pull", "push"] }] },
        { name: "own-ns-read-only", deny: [{ repository: "${namespace}/**", actions: ["push"] }] },
      ]),
    );
    const scopes = [parseScope("repository:other/app:pull,push")];
    // A well-formed namespace: the deny only covers its own repositories.
    expect(policy.evaluate(identity("team-a"), S, scopes)[0]).toMatchObject({ granted: ["pull", "push"] });
    // A value that is not a path component (no real cluster issues one): the deny applies to everything.
    expect(policy.evaluate(identity("Team_A"), S, scopes)[0]).toMatchObject({
      granted: ["pull"],
      deniedBy: ["own-ns-read-only"],
    });
  });

  it("applicableRules lists the rules whose match applies, in config order", () => {
    const policy = new Policy(compileRules(RULES));
    expect(policy.applicableRules(teamA, S)).toEqual([
      "team-push",
      "library-pull",
      "sa-scoped",
      "team-a-extra",
      "shared-pull",
      "cache-by-annotation",
    ]);
    expect(policy.applicableRules(identity("ops", "builder", "prod"), "mirror.example.com")).toEqual([
      "library-pull",
      "ops-catalog",
      "no-delete-in-prod",
      "sa-scoped",
      "mirror-pull",
      "cache-by-annotation",
    ]);
    expect(policy.applicableRules(annotated({ "example.com/tier": "gpu-1" }), S)).toEqual([
      "library-pull",
      "sa-scoped",
      "gpu-pool",
      "cache-by-annotation",
    ]);
  });

  it("`rules: []` with `defaultDeny: true` is a valid policy that grants nothing", () => {
    const config = parseConfig({
      clusters: [{ name: "dev", issuer: "https://dev.example.com", audiences: ["a"] }],
      registries: [{ service: S, issuer: "i", signingKey: { keyFile: "k", certFile: "c" } }],
      policy: { rules: [], defaultDeny: true },
    });
    const policy = new Policy(config.policy.rules);
    expect(policy.evaluate(teamA, S, parseScopes(["repository:team-a/app:pull registry:catalog:*"]))).toEqual(
      [
        { requested: parseScope("repository:team-a/app:pull"), granted: [], allowedBy: [], deniedBy: [] },
        { requested: parseScope("registry:catalog:*"), granted: [], allowedBy: [], deniedBy: [] },
      ],
    );
    expect(policy.applicableRules(teamA, S)).toEqual([]);
  });
});
