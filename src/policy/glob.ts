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
 */
import { ConfigError } from "../errors.js";

/** Identity template variables a repository pattern may use, besides `${annotation:<key>}`. */
export const TEMPLATE_VARIABLES = ["cluster", "namespace", "serviceAccount"] as const;

/** One identity template variable. */
export type TemplateVariable = (typeof TEMPLATE_VARIABLES)[number];

/** Prefix of the annotation template variable: `${annotation:<key>}`. */
export const ANNOTATION_PREFIX = "annotation:";

/** Every template form, as shown in error messages. */
export const TEMPLATE_FORMS = [...TEMPLATE_VARIABLES.map((v) => `\${${v}}`), "${annotation:<key>}"].join(
  ", ",
);

/**
 * A Kubernetes annotation key (qualified name): an optional DNS-subdomain prefix and `/`, then a name of
 * at most 63 characters (alphanumerics, `-`, `_`, `.`; alphanumeric at both ends).
 */
export const ANNOTATION_KEY =
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

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/-]/g, "\\$&");
}

/** True when `value` is exactly one valid repository path component (`team-a`, `app.v2`, `a__b`). */
export function isPathComponent(value: string): boolean {
  return PATH_COMPONENT.test(value);
}

/** Compiles a name pattern (`*` = any run, `**` = the same) to an anchored RegExp. */
export function compileNamePattern(pattern: string): RegExp {
  return new RegExp(`^${pattern.split(/\*+/).map(escapeRegex).join(".*")}$`, "s");
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
 * Builds the anchored RegExp for parsed repository pattern parts and the given template values.
 * Substituted values are escaped (literal) whatever they hold; a missing value is the empty string.
 * Callers that must refuse invalid values use {@link fillTemplate} first.
 */
export function compileRepositoryPattern(parts: readonly PatternPart[], values: TemplateValues): RegExp {
  let src = "";
  for (const p of parts) {
    if ("lit" in p) src += escapeRegex(p.lit);
    else if ("star" in p) src += p.star === 2 ? ".*" : "[^/]*";
    else src += escapeRegex(templateValue(p, values) ?? "");
  }
  return new RegExp(`^${src}$`, "s");
}

/** True when the parts use any template variable (so the RegExp depends on the identity). */
export function hasTemplate(parts: readonly PatternPart[]): boolean {
  return parts.some((p) => "var" in p);
}

/** True when the parts use `${annotation:...}`. */
export function usesAnnotations(parts: readonly PatternPart[]): boolean {
  return parts.some((p) => "var" in p && p.var === "annotation");
}
