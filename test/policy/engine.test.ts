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

/** Validates raw rules through the real schema (defaults applied). */
function compileRules(rules: unknown[]): RuleConfig[] {
  return parseConfig({
    clusters: [{ name: "dev", issuer: "https://dev.example.com", audiences: ["a"] }],
    registries: [{ service: "registry.test", issuer: "i", signingKey: { keyFile: "k", certFile: "c" } }],
    policy: { rules },
  }).policy.rules;
}

function identity(namespace: string, serviceAccount = "builder", cluster = "dev"): Identity {
  return {
    cluster,
    namespace,
    serviceAccount: { name: serviceAccount, uid: "00000000-0000-4000-a000-000000000000" },
    subject: `system:serviceaccount:${namespace}:${serviceAccount}`,
    audiences: ["registry.test"],
    expiresAt: 2_000_000_000,
    issuedAt: 1_999_996_400,
  };
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
    let caught: unknown;
    try {
      new Policy(rules);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as ConfigError).problems).toEqual([
      'policy.rules[1].deny[1].repository: unknown template variable "${team}" (known: ${cluster}, ${namespace}, ${serviceAccount})',
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
