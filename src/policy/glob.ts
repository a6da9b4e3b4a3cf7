/**
 * Glob patterns of the policy language. Every pattern matches a whole string (anchored at both ends),
 * case-sensitively.
 *
 * - Name patterns (`match.cluster`, `match.namespace`, `match.serviceAccount`, `match.service` and the
 *   values of `match.annotations`): `*` matches any run of characters, including none and including `/`,
 *   `.` and `:`; `**` means the same as `*`. Every other character is literal.
 * - Repository patterns (`allow[].repository`, `deny[].repository`), matched against the requested
 *   repository name byte for byte (a `host:port/` prefix included):
 *   - `*` matches any run of characters except `/` (possibly empty): it stays inside one path component;
 *   - `**` matches any run of characters including `/` (possibly empty): it crosses components; three or
 *     more `*` in a row mean the same as `**`;
 *   - a `/` next to a wildcard is literal: `team-a/**` does not match `team-a`, and a `**` between two
 *     `/` leaves at least the two slashes to match;
 *   - everything else is literal.
 * - Templates in repository patterns: `${cluster}`, `${namespace}`, `${serviceAccount}` and
 *   `${annotation:<key>}` (a service-account annotation, credential-provider path only). A substituted
 *   value is literal text (escaped, so it can never widen a pattern), and it must be exactly one valid
 *   repository path component (distribution's grammar: `[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*`):
 *   see {@link fillTemplate}. An unterminated `${` is literal text.
 *
 * Matching never backtracks: a compiled pattern is a {@link GlobMatcher} that runs the pattern as a
 * set of positions over the input (Thompson's NFA simulation), so its cost is at most proportional to
 * pattern length times input length, whatever the pattern. (Compiled to a backtracking RegExp, a pattern
 * such as `*a*a*a*a*a*a*b` takes time exponential in its number of stars on an input of `a`s.)
 */
import { ConfigError } from "../errors.js";

/** Identity template variables a repository pattern may use, besides `${annotation:<key>}`. */
const TEMPLATE_VARIABLES = ["cluster", "namespace", "serviceAccount"] as const;

/** One identity template variable. */
export type TemplateVariable = (typeof TEMPLATE_VARIABLES)[number];

/** Prefix of the annotation template variable: `${annotation:<key>}`. */
const ANNOTATION_PREFIX = "annotation:";

/** Every template form, as shown in error messages. */
const TEMPLATE_FORMS = [...TEMPLATE_VARIABLES.map((v) => `\${${v}}`), "${annotation:<key>}"].join(", ");

/**
 * A Kubernetes annotation key (qualified name): an optional DNS-subdomain prefix and `/`, then a name of
 * at most 63 characters (alphanumerics, `-`, `_`, `.`; alphanumeric at both ends).
 */
const ANNOTATION_KEY =
  /^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

/** One path component of a repository name (distribution reference grammar, `path-component`). */
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;

/** Values for template substitution: the identity's names and, if it has any, its annotations. */
export interface TemplateValues {
  cluster: string;
  namespace: string;
  serviceAccount: string;
  /** Service-account annotations (credential-provider path only); absent for a plain token. */
  annotations?: Readonly<Record<string, string>> | undefined;
}

/** A repository pattern split into literal, wildcard and template parts. */
export type PatternPart =
  | { lit: string }
  | { star: 1 | 2 }
  | { var: TemplateVariable }
  | { var: "annotation"; key: string };

const TEMPLATE = /\$\{([^}]*)\}/g;

/** A compiled glob: `test` tells whether a whole string matches (same contract as `RegExp.test`). */
export interface GlobMatcher {
  /** True when `value` matches the whole pattern. */
  test(value: string): boolean;
}

/** Token codes of a compiled pattern besides UTF-16 code units (>= 0): the two wildcards. */
const ANY_BUT_SLASH = -1;
const ANY = -2;
const SLASH = 0x2f;

/**
 * A pattern as a sequence of tokens (code units, {@link ANY_BUT_SLASH}, {@link ANY}) matched by
 * simulating all positions at once: per input character each live position advances at most once, so a
 * match costs O(tokens x input length) and never backtracks.
 */
class WildcardMatcher implements GlobMatcher {
  readonly #tokens: Int32Array;
  /** The whole pattern when it has no wildcard (compared directly). */
  readonly #literal: string | undefined;
  /**
   * The commonest shape, a literal prefix and one trailing wildcard (`team-*`, `library/**`,
   * `team-a/*`): the prefix, and the wildcard; such a pattern is tested with `startsWith` (and, for
   * `*` in a repository pattern, no `/` after the prefix), which is what the simulation would answer.
   */
  readonly #prefix: { text: string; wildcard: number } | undefined;

  constructor(tokens: readonly number[]) {
    this.#tokens = Int32Array.from(tokens);
    this.#literal = tokens.every((t) => t >= 0) ? String.fromCharCode(...tokens) : undefined;
    const last = tokens.length - 1;
    this.#prefix =
      last >= 0 && tokens[last]! < 0 && tokens.slice(0, last).every((t) => t >= 0)
        ? { text: String.fromCharCode(...tokens.slice(0, last)), wildcard: tokens[last]! }
        : undefined;
  }

  test(value: string): boolean {
    if (this.#literal !== undefined) return value === this.#literal;
    const prefix = this.#prefix;
    if (prefix !== undefined) {
      if (!value.startsWith(prefix.text)) return false;
      return prefix.wildcard === ANY || value.indexOf("/", prefix.text.length) === -1;
    }
    const tokens = this.#tokens;
    const end = tokens.length;
    // `seen[i] === stamp` marks position i as already in the set being built (one stamp per step).
    const seen = new Uint32Array(end + 1);
    let stamp = 1;
    let current: number[] = [];
    let next: number[] = [];
    const add = (list: number[], from: number) => {
      // A wildcard may match nothing: reaching it also reaches every position after a run of them.
      for (let i = from; i <= end; i++) {
        if (seen[i] === stamp) return;
        seen[i] = stamp;
        list.push(i);
        if (i === end || tokens[i]! >= 0) return;
      }
    };
    add(current, 0);
    for (let k = 0; k < value.length && current.length > 0; k++) {
      const c = value.charCodeAt(k);
      stamp++;
      next.length = 0;
      for (const i of current) {
        if (i === end) continue;
        const t = tokens[i]!;
        if (t === ANY || (t === ANY_BUT_SLASH && c !== SLASH)) add(next, i);
        else if (t === c) add(next, i + 1);
      }
      [current, next] = [next, current];
    }
    return current.includes(end);
  }
}

function literalTokens(text: string, out: number[]): void {
  for (let i = 0; i < text.length; i++) out.push(text.charCodeAt(i));
}

/** True when `value` is exactly one valid repository path component (`team-a`, `app.v2`, `a__b`). */
export function isPathComponent(value: string): boolean {
  return PATH_COMPONENT.test(value);
}

/** Compiles a name pattern (`*` = any run, `**` = the same) to a whole-string matcher. */
export function compileNamePattern(pattern: string): GlobMatcher {
  const tokens: number[] = [];
  pattern.split(/\*+/).forEach((text, i) => {
    if (i > 0) tokens.push(ANY);
    literalTokens(text, tokens);
  });
  return new WildcardMatcher(tokens);
}

/**
 * Splits a repository pattern into parts, validating template variables.
 * @param pattern e.g. `${namespace}/**`
 * @param where dotted config path for error messages
 * @throws {ConfigError} for an unknown `${...}` variable or an invalid annotation key
 */
export function parseRepositoryPattern(pattern: string, where: string): PatternPart[] {
  const parts: PatternPart[] = [];
  let last = 0;
  const pushLiteral = (text: string) => {
    const re = /\*+/g;
    let i = 0;
    for (let m = re.exec(text); m; m = re.exec(text)) {
      if (m.index > i) parts.push({ lit: text.slice(i, m.index) });
      parts.push({ star: m[0].length >= 2 ? 2 : 1 });
      i = m.index + m[0].length;
    }
    if (i < text.length) parts.push({ lit: text.slice(i) });
  };
  for (const m of pattern.matchAll(TEMPLATE)) {
    pushLiteral(pattern.slice(last, m.index));
    const name = m[1] as string;
    if (name.startsWith(ANNOTATION_PREFIX)) {
      const key = name.slice(ANNOTATION_PREFIX.length);
      if (!ANNOTATION_KEY.test(key) || key.length > 317) {
        throw new ConfigError([
          `${where}: "\${${name}}" does not name a valid annotation key (a Kubernetes annotation key: [prefix/]name)`,
        ]);
      }
      parts.push({ var: "annotation", key });
    } else if ((TEMPLATE_VARIABLES as readonly string[]).includes(name)) {
      parts.push({ var: name as TemplateVariable });
    } else {
      throw new ConfigError([`${where}: unknown template variable "\${${name}}" (known: ${TEMPLATE_FORMS})`]);
    }
    last = m.index + m[0].length;
  }
  pushLiteral(pattern.slice(last));
  return parts;
}

/** The value a template part takes for `values`, or `undefined` when the identity has none. */
export function templateValue(
  part: { var: TemplateVariable } | { var: "annotation"; key: string },
  values: TemplateValues,
): string | undefined {
  if (part.var === "annotation") {
    const annotations = values.annotations;
    const key = (part as { key: string }).key;
    return annotations !== undefined && Object.hasOwn(annotations, key) ? annotations[key] : undefined;
  }
  return values[part.var];
}

/**
 * Fills the templates of `parts` for `values`: each template part becomes a literal part.
 * @returns the filled parts, or `undefined` when a value is missing (an annotation the identity does not
 *   carry) or is not exactly one valid repository path component (`*`, `../x`, `a/b`, `Team`, ``): such
 *   an entry cannot be filled, so it matches as the caller decides (an allow grants nothing).
 */
export function fillTemplate(
  parts: readonly PatternPart[],
  values: TemplateValues,
): PatternPart[] | undefined {
  const out: PatternPart[] = [];
  for (const p of parts) {
    if (!("var" in p)) {
      out.push(p);
      continue;
    }
    const v = templateValue(p, values);
    if (v === undefined || !isPathComponent(v)) return undefined;
    out.push({ lit: v });
  }
  return out;
}

/**
 * Builds the whole-string matcher for parsed repository pattern parts and the given template values.
 * Substituted values are literal whatever they hold; a missing value is the empty string.
 * Callers that must refuse invalid values use {@link fillTemplate} first.
 */
export function compileRepositoryPattern(parts: readonly PatternPart[], values: TemplateValues): GlobMatcher {
  const tokens: number[] = [];
  for (const p of parts) {
    if ("lit" in p) literalTokens(p.lit, tokens);
    else if ("star" in p) tokens.push(p.star === 2 ? ANY : ANY_BUT_SLASH);
    else literalTokens(templateValue(p, values) ?? "", tokens);
  }
  return new WildcardMatcher(tokens);
}

/** True when the parts use any template variable (so the matcher depends on the identity). */
export function hasTemplate(parts: readonly PatternPart[]): boolean {
  return parts.some((p) => "var" in p);
}

/** True when the parts use `${annotation:...}`. */
export function usesAnnotations(parts: readonly PatternPart[]): boolean {
  return parts.some((p) => "var" in p && p.var === "annotation");
}
