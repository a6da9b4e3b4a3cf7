/**
 * The access policy: verified identity + registry service + requested scopes -> granted access.
 *
 * Contract (the rules every caller may rely on):
 * - Default deny: an action is granted only if some matching rule's `allow` entry covers it.
 * - `deny` wins: an action covered by a matching rule's `deny` entry is never granted.
 * - The granted actions of each scope are a subset of its requested actions; an empty subset is a normal
 *   answer (partial access is not an error, distribution token.md).
 * - The decision depends only on sets: the order of scopes, of actions and of rules never changes it.
 * - `*` in an entry covers every action; a requested `*` is granted only when allowed as `*` and nothing
 *   is denied for that resource.
 */
import { LRUCache } from "lru-cache";
import type { Identity } from "../authn/verify.js";
import type { Action, GrantConfig, RuleConfig } from "../config/schema.js";
import {
  compileNamePattern,
  compileRepositoryPattern,
  hasTemplate,
  type PatternPart,
  parseRepositoryPattern,
  type TemplateValues,
} from "./glob.js";
import { canonicalActions, type Scope } from "./scope.js";

/** The decision for one requested scope. */
export interface ScopeDecision {
  /** The scope as requested. */
  requested: Scope;
  /** Granted actions (subset of `requested.actions`, canonical order, possibly empty). */
  granted: Action[];
  /** Names of rules whose allow entries covered at least one requested action. */
  allowedBy: string[];
  /** Names of rules whose deny entries removed at least one requested action. */
  deniedBy: string[];
}

interface CompiledEntry {
  kind: "repository" | "catalog";
  parts: PatternPart[];
  static: RegExp | undefined;
  actions: ReadonlySet<Action>;
  cacheKey: string;
}

interface CompiledRule {
  name: string;
  cluster: RegExp;
  namespace: RegExp;
  serviceAccount: RegExp;
  service: RegExp;
  allow: CompiledEntry[];
  deny: CompiledEntry[];
}

function covers(actions: ReadonlySet<Action>, action: Action): boolean {
  return actions.has("*") || actions.has(action);
}

/**
 * A compiled, immutable policy. Build one per config version; evaluation is pure.
 * @throws {ConfigError} from the constructor for an invalid pattern (unknown template variable)
 */
export class Policy {
  readonly #rules: CompiledRule[];
  readonly #regexCache = new LRUCache<string, RegExp>({ max: 10_000 });

  /** @param rules the `policy.rules` config */
  constructor(rules: readonly RuleConfig[]) {
    this.#rules = rules.map((rule, i) => {
      const entry =
        (kind: "allow" | "deny") =>
        (g: GrantConfig, j: number): CompiledEntry => {
          const parts =
            g.repository !== undefined
              ? parseRepositoryPattern(g.repository, `policy.rules[${i}].${kind}[${j}].repository`)
              : [];
          return {
            kind: g.repository !== undefined ? "repository" : "catalog",
            parts,
            static:
              g.repository !== undefined && !hasTemplate(parts)
                ? compileRepositoryPattern(parts, {} as TemplateValues)
                : undefined,
            actions: new Set(g.actions),
            cacheKey: `${i}/${kind}/${j}`,
          };
        };
      return {
        name: rule.name,
        cluster: compileNamePattern(rule.match.cluster),
        namespace: compileNamePattern(rule.match.namespace),
        serviceAccount: compileNamePattern(rule.match.serviceAccount),
        service: compileNamePattern(rule.match.service),
        allow: rule.allow.map(entry("allow")),
        deny: rule.deny.map(entry("deny")),
      };
    });
  }

  /**
   * Decides, for each requested scope, which of its actions `identity` gets at registry `service`.
   * @returns one decision per scope, in request order
   */
  evaluate(identity: Identity, service: string, scopes: readonly Scope[]): ScopeDecision[] {
    const values: TemplateValues = {
      cluster: identity.cluster,
      namespace: identity.namespace,
      serviceAccount: identity.serviceAccount.name,
    };
    const rules = this.#rules.filter(
      (r) =>
        r.cluster.test(identity.cluster) &&
        r.namespace.test(identity.namespace) &&
        r.serviceAccount.test(identity.serviceAccount.name) &&
        r.service.test(service),
    );
    return scopes.map((scope) => {
      const allowedBy = new Set<string>();
      const deniedBy = new Set<string>();
      const allowed = new Set<Action>();
      const denied = new Set<Action>();
      for (const rule of rules) {
        for (const e of rule.allow) {
          if (!this.#entryMatches(e, scope, values)) continue;
          for (const a of e.actions) allowed.add(a);
          if (scope.actions.some((a) => covers(e.actions, a))) allowedBy.add(rule.name);
        }
        for (const e of rule.deny) {
          if (!this.#entryMatches(e, scope, values)) continue;
          for (const a of e.actions) denied.add(a);
          if (scope.actions.some((a) => covers(e.actions, a) || a === "*")) deniedBy.add(rule.name);
        }
      }
      const granted = scope.actions.filter((a) =>
        a === "*" ? allowed.has("*") && denied.size === 0 : covers(allowed, a) && !covers(denied, a),
      );
      return {
        requested: scope,
        granted: canonicalActions(granted),
        allowedBy: [...allowedBy].sort(),
        deniedBy: [...deniedBy].sort(),
      };
    });
  }

  #entryMatches(e: CompiledEntry, scope: Scope, values: TemplateValues): boolean {
    if (e.kind === "catalog") return scope.type === "registry" && scope.name === "catalog";
    if (scope.type !== "repository") return false;
    let re = e.static;
    if (!re) {
      const key = `${e.cacheKey}\u0000${values.cluster}\u0000${values.namespace}\u0000${values.serviceAccount}`;
      re = this.#regexCache.get(key);
      if (!re) {
        re = compileRepositoryPattern(e.parts, values);
        this.#regexCache.set(key, re);
      }
    }
    return re.test(scope.name);
  }
}
