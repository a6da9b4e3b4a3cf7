/**
 * Policy checks that need the whole configuration (the schema checks each key alone): run by
 * `check-config` and at start-up (`loadPolicy`), where errors refuse to start and warnings are logged.
 * Every problem is one line `dotted.path: message`, like `ConfigError` lines.
 *
 * Errors (the configuration cannot mean what its author wanted):
 * - a repository pattern with an unknown template variable or an invalid annotation key;
 * - `${annotation:...}` in a deny entry (annotations are asserted by the caller, who could change them);
 * - `${...}` in a `match` pattern (templates are expanded only in repository patterns);
 * - a literal (wildcard-free) `match.cluster` / `match.service` that names no configured cluster / registry.
 * Warnings (probably a mistake, but the policy is well defined):
 * - a `match.cluster` / `match.service` glob that matches no configured cluster / registry;
 * - two rules with the same name (explanations and audit lines could not tell them apart);
 * - deny entries in a rule that matches on annotations (a caller that leaves them out escapes them);
 * - annotations trusted too widely: a rule matching on annotations with a wildcard namespace, or bound
 *   only to a literal namespace (any service account, an allow entry without `${serviceAccount}`), or an
 *   allow pattern whose only template is `${annotation:...}` (the caller asserts annotations, KEP-4412);
 *   these annotation warnings are not given for rules that match only clusters with
 *   `annotations: fromCluster` (the service reads the ServiceAccount itself, docs/tokenreview.md);
 * - an allow entry that grants nothing because deny entries of its own rule, or of rules that apply to
 *   every request it applies to, cancel every action it allows on every repository it matches;
 * - a registry audience that a token meant for another registry also carries;
 * - a registry with `audiences` but no `credentialProviderAudiences` while `credentialProvider` is set
 *   (`/v1/credential-provider` refuses that registry).
 * `rules: []` without `defaultDeny: true` and unknown keys are refused by the schema already.
 */
import type { Config, GrantConfig, RuleConfig } from "../config/schema.js";
import { ConfigError } from "../errors.js";
import { globIncludes, nameTokens, repositoryTokens } from "./cover.js";
import { Policy } from "./engine.js";
import { compileNamePattern, type PatternPart, parseRepositoryPattern, usesAnnotations } from "./glob.js";

/** The outcome of {@link validatePolicy}: `path: message` lines. */
export interface PolicyValidation {
  /** Problems that refuse the configuration. */
  errors: string[];
  /** Problems worth a log line (`check-config --strict` refuses them too). */
  warnings: string[];
}

type Action = GrantConfig["actions"][number];
const CONCRETE: readonly Action[] = ["pull", "push", "delete"];

function expand(actions: readonly Action[]): Set<Action> {
  return new Set(actions.includes("*") ? CONCRETE : actions);
}

const quoteList = (names: readonly string[]) => names.map((n) => `"${n}"`).join(", ");

interface ParsedEntry {
  path: string;
  grant: GrantConfig;
  /** Parsed repository pattern; `undefined` for a catalog entry or an invalid pattern. */
  parts: PatternPart[] | undefined;
}

const MATCH_KEYS = ["cluster", "namespace", "serviceAccount", "service"] as const;

/**
 * Checks the policy of a schema-valid configuration against itself and the configured clusters and
 * registries. Pure: reads nothing, contacts nothing.
 * @returns errors and warnings, each `dotted.path: message`, in config order
 */
export function validatePolicy(config: Config): PolicyValidation {
  const errors: string[] = [];
  const warnings: string[] = [];
  const rules = config.policy.rules;
  const clusters = config.clusters.map((c) => c.name);
  const services = config.registries.map((r) => r.service);
  const firstByName = new Map<string, number>();
  const parsed: Array<{ allow: ParsedEntry[]; deny: ParsedEntry[] }> = [];

  // Clusters whose annotations come from the ServiceAccount object (`annotations: fromCluster`): the
  // caller cannot assert or leave out annotations there, so the warnings about caller-asserted
  // annotations do not apply to rules that only match such clusters.
  const fromCluster = new Set(
    config.clusters.filter((c) => c.annotations === "fromCluster").map((c) => c.name),
  );
  const annotationsAsserted = (rule: RuleConfig) => {
    const re = compileNamePattern(rule.match.cluster);
    return clusters.some((c) => re.test(c) && !fromCluster.has(c));
  };

  rules.forEach((rule, i) => {
    const at = `policy.rules[${i}]`;
    const asserted = annotationsAsserted(rule);
    const first = firstByName.get(rule.name);
    if (first !== undefined) {
      warnings.push(
        `${at}.name: "${rule.name}" is also the name of policy.rules[${first}]: explanations and audit logs cannot tell the two apart`,
      );
    } else firstByName.set(rule.name, i);

    for (const k of MATCH_KEYS) {
      const pattern = rule.match[k];
      if (/\$\{[^}]*\}/.test(pattern)) {
        errors.push(
          `${at}.match.${k}: "${pattern}" would be matched literally: templates are expanded only in allow/deny repository patterns`,
        );
        continue;
      }
      if (k !== "cluster" && k !== "service") continue;
      const known = k === "cluster" ? clusters : services;
      const re = compileNamePattern(pattern);
      if (known.some((n) => re.test(n))) continue;
      const configured =
        k === "cluster" ? `clusters: ${quoteList(known)}` : `registries: ${quoteList(known)}`;
      if (!pattern.includes("*")) {
        errors.push(
          k === "cluster"
            ? `${at}.match.cluster: no cluster is named "${pattern}" (${configured})`
            : `${at}.match.service: no registry has service "${pattern}" (${configured})`,
        );
      } else {
        warnings.push(
          `${at}.match.${k}: "${pattern}" matches no configured ${k === "cluster" ? "cluster" : "registry service"} (${configured})`,
        );
      }
    }

    const entries = (kind: "allow" | "deny") =>
      rule[kind].map((grant, j): ParsedEntry => {
        const path = `${at}.${kind}[${j}]`;
        if (grant.repository === undefined) return { path, grant, parts: undefined };
        try {
          const parts = parseRepositoryPattern(grant.repository, `${path}.repository`);
          if (kind === "deny" && usesAnnotations(parts)) {
            errors.push(
              `${path}.repository: \${annotation:...} is not allowed in deny entries: annotations are asserted by the caller, who could leave them out or change them to escape the deny`,
            );
          }
          if (
            kind === "allow" &&
            asserted &&
            usesAnnotations(parts) &&
            !parts.some((p) => "var" in p && p.var !== "annotation")
          ) {
            warnings.push(
              `${path}.repository: uses \${annotation:...} but no \${cluster}, \${namespace} or \${serviceAccount}: annotations are asserted by the caller, so any matching workload can claim a value and be granted the repository it names; bind the pattern to the signed identity too`,
            );
          }
          return { path, grant, parts };
        } catch (err) {
          if (!(err instanceof ConfigError)) throw err;
          errors.push(...err.problems);
          return { path, grant, parts: undefined };
        }
      });
    parsed.push({ allow: entries("allow"), deny: entries("deny") });

    const boundToIdentity = (g: GrantConfig) =>
      g.repository !== undefined && /\$\{(cluster|namespace|serviceAccount)\}/.test(g.repository);
    if (
      asserted &&
      rule.match.annotations !== undefined &&
      rule.match.namespace.includes("*") &&
      rule.allow.some((g) => !boundToIdentity(g))
    ) {
      warnings.push(
        `${at}.match.annotations: with the wildcard namespace "${rule.match.namespace}" and an allow entry not bound to \${namespace}, \${serviceAccount} or \${cluster}: annotations are asserted by the caller, so any workload in a matching namespace can claim them and get that grant; narrow match.namespace or bind the pattern to the identity`,
      );
    }
    // A literal namespace with any service account still trusts every workload of that namespace: any
    // of them can present a token with the credential-provider audience and claim these annotations.
    if (
      asserted &&
      rule.match.annotations !== undefined &&
      !rule.match.namespace.includes("*") &&
      rule.match.serviceAccount.includes("*") &&
      rule.allow.some((g) => g.repository === undefined || !g.repository.includes("${serviceAccount}"))
    ) {
      warnings.push(
        `${at}.match.annotations: bound only to the namespace "${rule.match.namespace}" (match.serviceAccount "${rule.match.serviceAccount}", an allow entry not bound to \${serviceAccount}): annotations are asserted by the caller, so any service account in that namespace can claim them and get that grant; narrow match.serviceAccount or bind the pattern to \${serviceAccount}`,
      );
    }
    if (asserted && rule.match.annotations !== undefined && rule.deny.length > 0) {
      warnings.push(
        `${at}.deny: this rule matches on annotations, which the caller asserts: a caller that leaves them out escapes these deny entries (put them in a rule without match.annotations)`,
      );
    }
  });

  rules.forEach((rule, i) => {
    parsed[i]?.allow.forEach((a) => {
      const covering = coveringDenies(a, rule, rules, parsed);
      if (covering.length > 0) {
        warnings.push(
          `${a.path}: grants nothing: every action it allows is denied on every repository it matches by ${covering.join(", ")}`,
        );
      }
    });
  });

  warnings.push(...audienceWarnings(config));
  return { errors, warnings };
}

/**
 * The deny entries (their paths, in config order) that together cancel every action of allow entry `a`
 * on every repository it matches, or `[]` when some action survives somewhere.
 */
function coveringDenies(
  a: ParsedEntry,
  rule: RuleConfig,
  rules: readonly RuleConfig[],
  parsed: ReadonlyArray<{ deny: ParsedEntry[] }>,
): string[] {
  if (a.grant.repository !== undefined && a.parts === undefined) return [];
  const wanted = expand(a.grant.actions);
  const denied = new Set<Action>();
  const by: string[] = [];
  rules.forEach((other, k) => {
    if (other !== rule && !ruleCovers(other, rule)) return;
    for (const d of parsed[k]?.deny ?? []) {
      if (!patternCovers(d, a)) continue;
      const actions = [...expand(d.grant.actions)].filter((x) => wanted.has(x));
      if (actions.length === 0) continue;
      for (const x of actions) denied.add(x);
      by.push(d.path);
    }
  });
  return [...wanted].every((x) => denied.has(x)) ? by : [];
}

function patternCovers(d: ParsedEntry, a: ParsedEntry): boolean {
  if (a.grant.registry !== undefined) return d.grant.registry !== undefined;
  if (d.parts === undefined || a.parts === undefined || d.grant.repository === undefined) return false;
  return globIncludes(repositoryTokens(d.parts), repositoryTokens(a.parts));
}

const nameIncludes = (outer: string, inner: string) => globIncludes(nameTokens(outer), nameTokens(inner));

/** True when `outer` applies to every request `inner` applies to. */
function ruleCovers(outer: RuleConfig, inner: RuleConfig): boolean {
  if (!MATCH_KEYS.every((k) => nameIncludes(outer.match[k], inner.match[k]))) return false;
  const want = outer.match.annotations;
  if (want === undefined) return true;
  const have = inner.match.annotations;
  if (have === undefined) return false;
  return Object.entries(want).every(([k, p]) => {
    const q = have[k];
    return q !== undefined && nameIncludes(p, q);
  });
}

/**
 * A token carrying the audience of one registry must get nothing at another: warn when two registries'
 * explicit audiences overlap, or when a registry without `audiences` (so accepting the clusters') would
 * accept another registry's explicit audience.
 */
function audienceWarnings(config: Config): string[] {
  const out: string[] = [];
  const clusterAudiences = new Set(config.clusters.flatMap((c) => c.audiences));
  config.registries.forEach((r, i) => {
    config.registries.forEach((other, k) => {
      if (k === i || other.audiences === undefined) return;
      if (r.audiences !== undefined) {
        if (k > i) return;
        r.audiences.forEach((aud, j) => {
          if (other.audiences?.includes(aud)) {
            out.push(
              `registries[${i}].audiences[${j}]: "${aud}" is also an audience of registries[${k}]: a token meant for one of these registries is accepted at the other`,
            );
          }
        });
        return;
      }
      const shared = other.audiences.find((aud) => clusterAudiences.has(aud));
      if (shared !== undefined) {
        out.push(
          `registries[${i}].audiences: not set, so this registry accepts the clusters' audiences, which include "${shared}", the audience of registries[${k}]: a token meant for registries[${k}] is accepted here too; set registries[${i}].audiences`,
        );
      }
    });
    if (
      config.credentialProvider &&
      r.audiences !== undefined &&
      r.credentialProviderAudiences === undefined
    ) {
      out.push(
        `registries[${i}].credentialProviderAudiences: not set while registries[${i}].audiences restricts this registry, so /v1/credential-provider refuses it; list the audience its kubelet credential provider requests to serve it there`,
      );
    }
  });
  return out;
}

/**
 * Validates the policy of `config` and compiles it: what start-up (and a reload) should call.
 * @param onWarning receives each warning line (log it)
 * @returns the compiled policy
 * @throws {ConfigError} with every error line when there is any
 */
export function loadPolicy(config: Config, onWarning: (line: string) => void): Policy {
  const { errors, warnings } = validatePolicy(config);
  if (errors.length > 0) throw new ConfigError(errors);
  for (const w of warnings) onWarning(w);
  return new Policy(config.policy.rules);
}
