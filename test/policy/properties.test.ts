// biome-ignore-all lint/suspicious/noTemplateCurlyInString: policy templates such as ${namespace} are data, not JS templates
/**
 * Property-based tests of the policy engine (fast-check): for any generated policy, identity and request,
 * - the granted actions are a subset of the requested ones, and of what the applying allow entries list;
 * - the decision equals the one of a small, independently written reference model of the rules docs/policy.md states;
 * - shuffling rules, scopes and actions never changes a decision;
 * - adding a deny never grants more, adding an allow never grants less;
 * - a substituted annotation value never widens a pattern, whatever characters it holds.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Identity } from "../../src/authn/verify.js";
import { parseConfig } from "../../src/config/load.js";
import type { Action } from "../../src/config/schema.js";
import { Policy, type ScopeDecision } from "../../src/policy/engine.js";
import { parseScope, type Scope } from "../../src/policy/scope.js";

const RUNS = { numRuns: 500, seed: 4412 };

interface RawGrant {
  repository?: string;
  registry?: "catalog";
  actions: Action[];
}
interface RawRule {
  name: string;
  match: {
    cluster: string;
    namespace: string;
    serviceAccount: string;
    service: string;
    annotations?: Record<string, string>;
  };
  allow: RawGrant[];
  deny: RawGrant[];
}

const CLUSTERS = ["dev", "prod"];
const NAMESPACES = ["team-a", "team-b", "ci"];
const ACCOUNTS = ["builder", "deployer"];
const SERVICES = ["registry.test", "mirror.test"];
const TEAMS = ["payments", "billing", "*", "../x", "a/b", "", "Payments"];
const COMPONENTS = ["team-a", "app", "x", "lib1", "dev", "builder", "payments"];

/** Name globs biased towards matching: wildcards, exact values, prefixes. */
const nameGlob = (values: readonly string[]) =>
  fc.oneof(
    { weight: 4, arbitrary: fc.constant("*") },
    { weight: 1, arbitrary: fc.constant("**") },
    { weight: 3, arbitrary: fc.constantFrom(...values) },
    { weight: 1, arbitrary: fc.constantFrom(...values).map((v) => `${v.slice(0, 2)}*`) },
  );
const actionsArb = fc.subarray(["pull", "push", "delete", "*"] as Action[], { minLength: 1 });
const repoSegment = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom("team-a", "app", "x", "lib*") },
  { weight: 3, arbitrary: fc.constantFrom("*", "**") },
  {
    weight: 2,
    arbitrary: fc.constantFrom("${namespace}", "${cluster}", "${serviceAccount}", "${annotation:team}"),
  },
);
const grantArb: fc.Arbitrary<RawGrant> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      repository: fc.array(repoSegment, { minLength: 1, maxLength: 2 }).map((s) => s.join("/")),
      actions: actionsArb,
    }),
  },
  { weight: 1, arbitrary: fc.record({ registry: fc.constant("catalog" as const), actions: actionsArb }) },
);
const ruleArb: fc.Arbitrary<RawRule> = fc
  .record({
    match: fc.record({
      cluster: nameGlob(CLUSTERS),
      namespace: nameGlob(NAMESPACES),
      serviceAccount: nameGlob(ACCOUNTS),
      service: nameGlob(SERVICES),
      annotations: fc.option(fc.record({ team: fc.constantFrom("*", "payments", "pay*") }), {
        nil: undefined,
      }),
    }),
    allow: fc.array(grantArb, { maxLength: 3 }),
    deny: fc.array(grantArb, { maxLength: 2 }),
  })
  .filter((r) => r.allow.length + r.deny.length > 0)
  .map((r) => {
    const { annotations, ...match } = r.match;
    return { name: "", ...r, match: annotations ? { ...match, annotations } : match };
  });
const rulesArb = fc
  .array(ruleArb, { minLength: 1, maxLength: 6 })
  .map((rules) => rules.map((r, i) => ({ ...r, name: `r${i}` })));

const identityArb: fc.Arbitrary<Identity> = fc
  .record({
    cluster: fc.constantFrom(...CLUSTERS),
    namespace: fc.constantFrom(...NAMESPACES),
    sa: fc.constantFrom(...ACCOUNTS),
    team: fc.option(fc.constantFrom(...TEAMS), { nil: undefined }),
  })
  .map(({ cluster, namespace, sa, team }) => ({
    cluster,
    namespace,
    serviceAccount: { name: sa, uid: "u" },
    subject: `system:serviceaccount:${namespace}:${sa}`,
    audiences: ["registry.test"],
    expiresAt: 2_000_000_000,
    issuedAt: 1_999_996_400,
    ...(team === undefined ? {} : { annotations: { team } }),
  }));

const scopeArb: fc.Arbitrary<Scope> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc
      .record({
        name: fc.array(fc.constantFrom(...COMPONENTS), { minLength: 1, maxLength: 2 }),
        actions: actionsArb,
      })
      .map(({ name, actions }) => parseScope(`repository:${name.join("/")}:${actions.join(",")}`)),
  },
  { weight: 1, arbitrary: actionsArb.map((a) => parseScope(`registry:catalog:${a.join(",")}`)) },
);
const scopesArb = fc
  .uniqueArray(scopeArb, { minLength: 1, maxLength: 5, selector: (s) => `${s.type}:${s.name}` })
  .map((scopes) => scopes);

function compile(rules: readonly RawRule[]): Policy {
  return new Policy(
    parseConfig({
      clusters: [{ name: "dev", issuer: "https://dev.example.com", audiences: ["a"] }],
      registries: [{ service: "registry.test", issuer: "i", signingKey: { keyFile: "k", certFile: "c" } }],
      policy: { rules, defaultDeny: true },
    }).policy.rules,
  );
}

// ---------------------------------------------------------------------------------------------------
// Reference model: the rules docs/policy.md states, written without regexes, the LRU or the engine's data structures.

/** Whole-string glob match; `oneComponent` makes a single `*` stop at `/`. */
function globMatch(pattern: string, text: string, oneComponent: boolean): boolean {
  if (pattern === "") return text === "";
  if (pattern.startsWith("*")) {
    let stars = 0;
    while (pattern[stars] === "*") stars++;
    const rest = pattern.slice(stars);
    const crossesSlash = !oneComponent || stars >= 2;
    for (let i = 0; i <= text.length; i++) {
      if (globMatch(rest, text.slice(i), oneComponent)) return true;
      if (!crossesSlash && text[i] === "/") return false;
    }
    return false;
  }
  return (
    text.length > 0 && text[0] === pattern[0] && globMatch(pattern.slice(1), text.slice(1), oneComponent)
  );
}

/** One distribution path component: alphanumerics joined by `.`, `_`, `__` or runs of `-`. */
function isComponent(v: string): boolean {
  if (v === "") return false;
  const pieces = v.split(/(\.|__|_|-+)/);
  return pieces.every((p, i) => (i % 2 === 0 ? /^[a-z0-9]+$/.test(p) : true));
}

/** Fills templates; `null` when a value is missing or not one component. */
function fill(pattern: string, who: Identity): string | null {
  let ok = true;
  const out = pattern.replace(/\$\{([^}]*)\}/g, (_m, name: string) => {
    const v =
      name === "cluster"
        ? who.cluster
        : name === "namespace"
          ? who.namespace
          : name === "serviceAccount"
            ? who.serviceAccount.name
            : who.annotations?.[name.slice("annotation:".length)];
    if (v === undefined || !isComponent(v)) {
      ok = false;
      return "";
    }
    // Glob characters cannot occur in a component, so the value is literal as it stands.
    return v;
  });
  return ok ? out : null;
}

function applies(rule: RawRule, who: Identity, service: string): boolean {
  const m = rule.match;
  const names: Array<[string, string]> = [
    [m.cluster, who.cluster],
    [m.namespace, who.namespace],
    [m.serviceAccount, who.serviceAccount.name],
    [m.service, service],
  ];
  if (!names.every(([p, v]) => globMatch(p, v, false))) return false;
  if (m.annotations === undefined) return true;
  const have = who.annotations;
  if (have === undefined) return false;
  return Object.entries(m.annotations).every(
    ([k, p]) => have[k] !== undefined && globMatch(p, have[k], false),
  );
}

function entryMatches(g: RawGrant, kind: "allow" | "deny", scope: Scope, who: Identity): boolean {
  if (g.registry === "catalog") return scope.type === "registry";
  if (scope.type !== "repository") return false;
  const filled = fill(g.repository as string, who);
  if (filled === null) return kind === "deny";
  return globMatch(filled, scope.name, true);
}

function reference(rules: readonly RawRule[], who: Identity, service: string, scope: Scope): ScopeDecision {
  const allowed = new Set<Action>();
  const denied = new Set<Action>();
  const allowedBy = new Set<string>();
  const deniedBy = new Set<string>();
  const covers = (set: readonly Action[], a: Action) => set.includes("*") || set.includes(a);
  for (const rule of rules) {
    if (!applies(rule, who, service)) continue;
    for (const g of rule.allow) {
      if (!entryMatches(g, "allow", scope, who)) continue;
      for (const a of g.actions) allowed.add(a);
      if (scope.actions.some((a) => covers(g.actions, a))) allowedBy.add(rule.name);
    }
    for (const g of rule.deny) {
      if (!entryMatches(g, "deny", scope, who)) continue;
      for (const a of g.actions) denied.add(a);
      if (scope.actions.some((a) => a === "*" || covers(g.actions, a))) deniedBy.add(rule.name);
    }
  }
  const granted = scope.actions.filter((a) =>
    a === "*"
      ? allowed.has("*") && denied.size === 0
      : (allowed.has(a) || allowed.has("*")) && !denied.has(a) && !denied.has("*"),
  );
  return { requested: scope, granted, allowedBy: [...allowedBy].sort(), deniedBy: [...deniedBy].sort() };
}

// ---------------------------------------------------------------------------------------------------

const serviceArb = fc.constantFrom(...SERVICES);
const byResource = (ds: ScopeDecision[]) =>
  Object.fromEntries(ds.map((d) => [`${d.requested.type}:${d.requested.name}`, d]));

describe("policy properties (fast-check)", () => {
  it("the generators produce interesting cases (grants, denials, both on one scope)", () => {
    const cases = fc.sample(fc.tuple(rulesArb, identityArb, serviceArb, scopesArb), {
      numRuns: 500,
      seed: 4412,
    });
    let granted = 0;
    let denied = 0;
    let both = 0;
    for (const [rules, who, service, scopes] of cases) {
      for (const d of compile(rules).evaluate(who, service, scopes)) {
        if (d.granted.length > 0) granted++;
        if (d.deniedBy.length > 0) denied++;
        if (d.allowedBy.length > 0 && d.deniedBy.length > 0) both++;
      }
    }
    // Fixed seed: these are floors against a generator that drifts into trivia (all-empty decisions).
    expect(granted).toBeGreaterThan(90);
    expect(denied).toBeGreaterThan(90);
    expect(both).toBeGreaterThan(25);
  });

  it("granted ⊆ requested, and granted ⊆ what applying allow entries list", () => {
    fc.assert(
      fc.property(rulesArb, identityArb, serviceArb, scopesArb, (rules, who, service, scopes) => {
        const decisions = compile(rules).evaluate(who, service, scopes);
        expect(decisions).toHaveLength(scopes.length);
        decisions.forEach((d, i) => {
          expect(d.requested).toBe(scopes[i]);
          for (const a of d.granted) {
            expect(d.requested.actions).toContain(a);
            const listing = rules.filter(
              (r) =>
                applies(r, who, service) &&
                r.allow.some(
                  (g) =>
                    entryMatches(g, "allow", d.requested, who) &&
                    (g.actions.includes(a) || g.actions.includes("*")),
                ),
            );
            expect(listing.length).toBeGreaterThan(0);
            expect(d.allowedBy).toEqual(expect.arrayContaining(listing.map((r) => r.name)));
          }
        });
      }),
      RUNS,
    );
  });

  it("equals the reference model (granted, allowedBy, deniedBy)", () => {
    fc.assert(
      fc.property(rulesArb, identityArb, serviceArb, scopesArb, (rules, who, service, scopes) => {
        const decisions = compile(rules).evaluate(who, service, scopes);
        expect(decisions).toEqual(scopes.map((s) => reference(rules, who, service, s)));
      }),
      RUNS,
    );
  });

  it("shuffling rules, scopes and actions never changes a decision", () => {
    fc.assert(
      fc.property(
        rulesArb.chain((rules) =>
          fc.tuple(
            fc.constant(rules),
            fc.shuffledSubarray(rules, { minLength: rules.length, maxLength: rules.length }),
          ),
        ),
        identityArb,
        serviceArb,
        scopesArb.chain((scopes) =>
          fc.tuple(
            fc.constant(scopes),
            fc.shuffledSubarray(scopes, { minLength: scopes.length, maxLength: scopes.length }),
          ),
        ),
        fc.boolean(),
        ([rules, shuffledRules], who, service, [scopes, shuffledScopes], reverse) => {
          const reordered = shuffledScopes.map((s) => {
            const actions = reverse ? [...s.actions].reverse() : s.actions;
            return parseScope(`${s.type}:${s.name}:${actions.join(",")}`);
          });
          expect(byResource(compile(shuffledRules).evaluate(who, service, reordered))).toEqual(
            byResource(compile(rules).evaluate(who, service, scopes)),
          );
        },
      ),
      RUNS,
    );
  });

  it("is deterministic: a fresh policy and a warm one answer the same", () => {
    fc.assert(
      fc.property(
        rulesArb,
        fc.array(identityArb, { minLength: 2, maxLength: 4 }),
        serviceArb,
        scopesArb,
        (rules, people, service, scopes) => {
          const warm = compile(rules);
          for (const who of people) warm.evaluate(who, service, scopes);
          for (const who of people)
            expect(warm.evaluate(who, service, scopes)).toEqual(
              compile(rules).evaluate(who, service, scopes),
            );
        },
      ),
      { numRuns: 100, seed: 4412 },
    );
  });

  it("adding a deny never grants more; adding an allow never grants less", () => {
    fc.assert(
      fc.property(
        rulesArb,
        grantArb,
        grantArb,
        identityArb,
        serviceArb,
        scopesArb,
        (rules, deny, allow, who, service, scopes) => {
          const base = compile(rules).evaluate(who, service, scopes);
          const match = { cluster: "*", namespace: "*", serviceAccount: "*", service: "*" };
          const denied = compile([...rules, { name: "extra-deny", match, allow: [], deny: [deny] }]).evaluate(
            who,
            service,
            scopes,
          );
          const allowed = compile([
            ...rules,
            { name: "extra-allow", match, allow: [allow], deny: [] },
          ]).evaluate(who, service, scopes);
          base.forEach((d, i) => {
            for (const a of denied[i]!.granted) expect(d.granted).toContain(a);
            for (const a of d.granted) expect(allowed[i]!.granted).toContain(a);
          });
        },
      ),
      RUNS,
    );
  });

  it("an annotation value never widens a template, whatever it holds", () => {
    const policy = compile([
      {
        name: "team",
        match: {
          cluster: "*",
          namespace: "*",
          serviceAccount: "*",
          service: "*",
          annotations: { team: "*" },
        },
        allow: [{ repository: "teams/${annotation:team}/**", actions: ["pull"] }],
        deny: [],
      },
    ]);
    const hostile = fc.oneof(
      fc.string(),
      fc.string({
        unit: fc.constantFrom(
          "*",
          "/",
          ".",
          "-",
          "_",
          "a",
          "b",
          "$",
          "{",
          "}",
          "\\",
          "(",
          ")",
          "|",
          "+",
          "?",
        ),
      }),
      fc.constantFrom("*", "**", ".*", "../a", "a/b", "a|b", "a+", "[a-z]+", "${namespace}"),
      fc.constantFrom(...COMPONENTS),
    );
    const names = fc.array(fc.constantFrom("teams", "a", "b", "a.b", "a-b", "app", "x"), {
      minLength: 1,
      maxLength: 4,
    });
    fc.assert(
      fc.property(hostile, names, (value, parts) => {
        const who: Identity = {
          cluster: "dev",
          namespace: "ns",
          serviceAccount: { name: "sa", uid: "u" },
          subject: "system:serviceaccount:ns:sa",
          audiences: [],
          expiresAt: 2_000_000_000,
          issuedAt: 1_999_996_400,
          annotations: { team: value },
        };
        const name = parts.join("/");
        const [d] = policy.evaluate(who, "registry.test", [parseScope(`repository:${name}:pull`)]);
        const want = isComponent(value) && name.startsWith(`teams/${value}/`);
        expect(d!.granted).toEqual(want ? ["pull"] : []);
      }),
      { numRuns: 1000, seed: 4412 },
    );
  });
});
