/**
 * Glob patterns of the policy language.
 *
 * - Identity patterns (cluster, namespace, serviceAccount, service): `*` matches any run of characters,
 *   including none. Everything else is literal.
 * - Repository patterns: `*` matches any run of characters except `/` (inside one path component);
 *   `**` matches any run of characters including `/` (across components). Everything else is literal.
 * - Templates `${cluster}`, `${namespace}`, `${serviceAccount}` are replaced by the identity's values
 *   as LITERAL text: a substituted value can never widen a pattern, whatever characters it holds.
 */
import { ConfigError } from "../errors.js";

/** Template variables a repository pattern may use. */
export const TEMPLATE_VARIABLES = ["cluster", "namespace", "serviceAccount"] as const;

/** Values for template substitution. */
export type TemplateValues = Record<(typeof TEMPLATE_VARIABLES)[number], string>;

const TEMPLATE = /\$\{([^}]*)\}/g;

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/-]/g, "\\$&");
}

/**
 * Compiles an identity pattern (`*` = any run) to an anchored RegExp.
 * @throws {ConfigError} never for identity patterns; listed for symmetry with {@link compileRepositoryPattern}
 */
export function compileNamePattern(pattern: string): RegExp {
  return new RegExp(`^${pattern.split("*").map(escapeRegex).join(".*")}$`, "s");
}

/** A repository pattern split into literal, wildcard and template parts. */
export type PatternPart = { lit: string } | { star: 1 | 2 } | { var: (typeof TEMPLATE_VARIABLES)[number] };

/**
 * Splits a repository pattern into parts, validating template variables.
 * @param pattern e.g. `${namespace}/**`
 * @param where dotted config path for error messages
 * @throws {ConfigError} for an unknown `${...}` variable
 */
export function parseRepositoryPattern(pattern: string, where: string): PatternPart[] {
  const parts: PatternPart[] = [];
  let last = 0;
  const pushLiteral = (text: string) => {
    const re = /\*\*|\*/g;
    let i = 0;
    for (let m = re.exec(text); m; m = re.exec(text)) {
      if (m.index > i) parts.push({ lit: text.slice(i, m.index) });
      parts.push({ star: m[0] === "**" ? 2 : 1 });
      i = m.index + m[0].length;
    }
    if (i < text.length) parts.push({ lit: text.slice(i) });
  };
  for (const m of pattern.matchAll(TEMPLATE)) {
    pushLiteral(pattern.slice(last, m.index));
    const name = m[1] as string;
    if (!(TEMPLATE_VARIABLES as readonly string[]).includes(name)) {
      throw new ConfigError([
        `${where}: unknown template variable "\${${name}}" (known: ${TEMPLATE_VARIABLES.map((v) => `\${${v}}`).join(", ")})`,
      ]);
    }
    parts.push({ var: name as (typeof TEMPLATE_VARIABLES)[number] });
    last = m.index + m[0].length;
  }
  pushLiteral(pattern.slice(last));
  return parts;
}

/**
 * Builds the anchored RegExp for parsed repository pattern parts and the given template values.
 * Substituted values are escaped (literal).
 */
export function compileRepositoryPattern(parts: readonly PatternPart[], values: TemplateValues): RegExp {
  let src = "";
  for (const p of parts) {
    if ("lit" in p) src += escapeRegex(p.lit);
    else if ("star" in p) src += p.star === 2 ? ".*" : "[^/]*";
    else src += escapeRegex(values[p.var]);
  }
  return new RegExp(`^${src}$`, "s");
}

/** True when the parts use any template variable (so the RegExp depends on the identity). */
export function hasTemplate(parts: readonly PatternPart[]): boolean {
  return parts.some((p) => "var" in p);
}
