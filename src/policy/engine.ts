/**
 * The access policy: verified identity + registry service + requested scopes -> granted access.
 *
 * Contract (the rules every caller may rely on):
 * - A rule applies to a request when every `match` pattern matches: `cluster`, `namespace`,
 *   `serviceAccount` (the name), `service` (the registry `service` parameter) and, when the rule lists
 *   `match.annotations`, every listed annotation is present on the identity with a matching value (a rule
 *   with `match.annotations` never applies to an identity without annotations, i.e. to anything but an
 *   exchange credential from `/v1/credential-provider`). Pattern syntax: `glob.ts`.
 * - Default deny: an action is granted only if an `allow` entry of an applying rule covers it.
 * - `deny` wins: an action covered by a `deny` entry of an applying rule is never granted.
 * - An entry whose repository template cannot be filled (an annotation the identity lacks, or a value that
 *   is not exactly one valid repository path component) matches no repository when it is an `allow`
 *   (it grants nothing) and every repository when it is a `deny` (it fails closed).
 * - The granted actions of each scope are a subset of its requested actions; an empty subset is a normal
 *   answer (partial access is not an error, distribution token.md).
 * - The decision depends only on sets: the order of scopes, of actions and of rules never changes it.
 * - `*` in an entry covers every action; a requested `*` is granted only when an applying allow entry
 *   lists `*` and no applying deny entry matches that resource at all.
 * - `registry:catalog:*` is granted only by an explicit `{registry: catalog}` entry.
 *
 * A {@link Policy} is immutable and cheap to build (patterns are compiled once; per-identity template
 * matchers are cached lazily), so a configuration reload can build a new one and swap it.
 */
import { LRUCache } from "lru-cache";
import type { Identity } from "../authn/verify.js";
import type { Action, GrantConfig, RuleConfig } from "../config/schema.js";
import {
  compileNamePattern,
  compileRepositoryPattern,
  fillTemplate,
  type GlobMatcher,
  hasTemplate,
  type PatternPart,
  parseRepositoryPattern,
  type TemplateValues,
  templateValue,
} from "./glob.js";
import { canonicalActions, type Scope } from "./scope.js";

/** The decision for one requested scope. */
export interface ScopeDecision {
  /** The scope as requested. */
  requested: Scope;
  /** Granted actions (subset of `requested.actions`, canonical order, possibly empty). */
  granted: Action[];
  /** Names of rules whose allow entries covered at least one requested action (sorted). */
  allowedBy: string[];
  /** Names of rules whose deny entries cover at least one requested action, whether or not it was allowed (sorted). */
  deniedBy: string[];
}

/** What {@link Policy.evaluate} decided for one scope, without the scope (memoised, frozen). */
type DecisionOutcome = Omit<ScopeDecision, "requested">;

interface CompiledEntry {
  kind: "repository" | "catalog";
  parts: PatternPart[];
  /** The matcher of a pattern without templates (compiled once). */
  static: GlobMatcher | undefined;
  actions: ReadonlySet<Action>;
  cacheKey: string;
}

interface CompiledRule {
  name: string;
  cluster: GlobMatcher;
  namespace: GlobMatcher;
  serviceAccount: GlobMatcher;
  service: GlobMatcher;
  /** `match.annotations` as [key, value pattern] pairs; `undefined` when the rule does not match on them. */
  annotations: ReadonlyArray<readonly [string, GlobMatcher]> | undefined;
  allow: CompiledEntry[];
  deny: CompiledEntry[];
}

/** Most policy decisions kept per policy (see {@link Policy.evaluate}). */
const DECISION_CACHE_MAX_ENTRIES = 5_000;
/**
 * Longest memo key whose decisions are kept, characters (a request for a few scopes): with the entry bound
 * this holds the memo to a few MiB.
 */
const DECISION_CACHE_MAX_KEY_LENGTH = 1024;

function covers(actions: ReadonlySet<Action>, action: Action): boolean {
  return actions.has("*") || actions.has(action);
}

/**
 * A compiled, immutable policy. Build one per config version; evaluation is pure (the only state is a
 * bounded cache of compiled template matchers, which never changes an answer).
 */
export class Policy {
  readonly #rules: readonly CompiledRule[];
  readonly #regexCache = new LRUCache<string, GlobMatcher>({ max: 10_000 });
  /**
   * Decisions already made, by identity names and annotations, service and scopes (see {@link evaluate}):
   * a policy is immutable, so they hold until the next configuration version builds another policy.
   * Bounded in entries, and in bytes through the length of the keys it keeps.
   */
  readonly #decisions = new LRUCache<string, readonly DecisionOutcome[]>({ max: DECISION_CACHE_MAX_ENTRIES });
  /** {@link #identityKey} per frozen identity object (the realm's cached identities are reused objects). */
  readonly #identityKeys = new WeakMap<Identity, string>();

  /**
   * @param rules the `policy.rules` config (validated by the schema; see also `validatePolicy`)
   * @throws {ConfigError} for an invalid repository pattern (unknown template variable, invalid
   *   annotation key), with the entry's dotted path
   */
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
                ? compileRepositoryPattern(parts, { cluster: "", namespace: "", serviceAccount: "" })
                : undefined,
            actions: new Set(g.actions),
            cacheKey: `${i}/${kind}/${j}`,
          };
        };
      const annotations = rule.match.annotations;
      return {
        name: rule.name,
        cluster: compileNamePattern(rule.match.cluster),
        namespace: compileNamePattern(rule.match.namespace),
        serviceAccount: compileNamePattern(rule.match.serviceAccount),
        service: compileNamePattern(rule.match.service),
        annotations:
          annotations === undefined
            ? undefined
            : Object.entries(annotations).map(([k, v]) => [k, compileNamePattern(v)] as const),
        allow: rule.allow.map(entry("allow")),
        deny: rule.deny.map(entry("deny")),
      };
    });
  }

  /**
   * Names of the rules that apply to `identity` at registry `service` (every `match` pattern matches),
   * in config order. Whether they grant anything depends on the requested scopes.
   */
  applicableRules(identity: Identity, service: string): string[] {
    return this.#applicable(identity, service).map((r) => r.name);
  }

  /**
   * Decides, for each requested scope, which of its actions `identity` gets at registry `service`.
   * Decisions are memoised (bounded) by everything they depend on: the identity's cluster, namespace,
   * service account name and annotations, `service` and the scopes; the arrays of a decision are frozen
   * and shared by the requests that got the same answer.
   * @returns one decision per scope, in request order
   */
  evaluate(identity: Identity, service: string, scopes: readonly Scope[]): ScopeDecision[] {
    // JSON never holds a raw NUL, so the parts cannot run into each other: equal keys, equal inputs.
    const key = `${this.#identityKey(identity)}\u0000${JSON.stringify(service)}\u0000${JSON.stringify(scopes)}`;
    let memo = this.#decisions.get(key);
    if (memo === undefined) {
      memo = Object.freeze(
        this.#evaluate(identity, service, scopes).map((d) =>
          Object.freeze({
            granted: Object.freeze(d.granted) as Action[],
            allowedBy: Object.freeze(d.allowedBy) as string[],
            deniedBy: Object.freeze(d.deniedBy) as string[],
          }),
        ),
      );
      if (key.length <= DECISION_CACHE_MAX_KEY_LENGTH) this.#decisions.set(key, memo);
    }
    const outcomes = memo;
    return scopes.map((requested, i) => ({ requested, ...(outcomes[i] as DecisionOutcome) }));
  }

  /**
   * What a decision depends on of `identity` (its names and annotations), as JSON; remembered per object
   * only for an identity that cannot change (frozen with what the key reads: the realm's cached ones).
   */
  #identityKey(identity: Identity): string {
    let key = this.#identityKeys.get(identity);
    if (key !== undefined) return key;
    key = JSON.stringify([
      identity.cluster,
      identity.namespace,
      identity.serviceAccount.name,
      identity.annotations ?? null,
    ]);
    if (
      Object.isFrozen(identity) &&
      Object.isFrozen(identity.serviceAccount) &&
      (identity.annotations === undefined || Object.isFrozen(identity.annotations))
    ) {
      this.#identityKeys.set(identity, key);
    }
    return key;
  }

  #evaluate(identity: Identity, service: string, scopes: readonly Scope[]): ScopeDecision[] {
    const values: TemplateValues = {
      cluster: identity.cluster,
      namespace: identity.namespace,
      serviceAccount: identity.serviceAccount.name,
      annotations: identity.annotations,
    };
    const rules = this.#applicable(identity, service);
    return scopes.map((scope) => {
      const allowedBy = new Set<string>();
      const deniedBy = new Set<string>();
      const allowed = new Set<Action>();
      const denied = new Set<Action>();
      for (const rule of rules) {
        for (const e of rule.allow) {
          if (!this.#entryMatches(e, "allow", scope, values)) continue;
          for (const a of e.actions) allowed.add(a);
          if (scope.actions.some((a) => covers(e.actions, a))) allowedBy.add(rule.name);
        }
        for (const e of rule.deny) {
          if (!this.#entryMatches(e, "deny", scope, values)) continue;
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

  #applicable(identity: Identity, service: string): CompiledRule[] {
    return this.#rules.filter(
      (r) =>
        r.cluster.test(identity.cluster) &&
        r.namespace.test(identity.namespace) &&
        r.serviceAccount.test(identity.serviceAccount.name) &&
        r.service.test(service) &&
        annotationsMatch(r.annotations, identity.annotations),
    );
  }

  #entryMatches(e: CompiledEntry, kind: "allow" | "deny", scope: Scope, values: TemplateValues): boolean {
    if (e.kind === "catalog") return scope.type === "registry" && scope.name === "catalog";
    if (scope.type !== "repository") return false;
    let re = e.static;
    if (!re) {
      const filled = fillTemplate(e.parts, values);
      // An allow that cannot be filled grants nothing; a deny that cannot be filled fails closed.
      if (!filled) return kind === "deny";
      const used = e.parts.flatMap((p) => ("var" in p ? [templateValue(p, values) ?? ""] : []));
      const key = `${e.cacheKey}\u0000${used.join("\u0000")}`;
      re = this.#regexCache.get(key);
      if (!re) {
        re = compileRepositoryPattern(filled, values);
        this.#regexCache.set(key, re);
      }
    }
    return re.test(scope.name);
  }
}

function annotationsMatch(
  wanted: CompiledRule["annotations"],
  have: Readonly<Record<string, string>> | undefined,
): boolean {
  if (wanted === undefined) return true;
  if (have === undefined) return false;
  return wanted.every(([k, re]) => Object.hasOwn(have, k) && re.test(have[k] as string));
}
