// biome-ignore-all lint/suspicious/noTemplateCurlyInString: policy templates such as ${namespace} are data, not JS templates
/**
 * Glob patterns of the policy language (src/policy/glob.ts): identity patterns, repository patterns with
 * `*` (one path component) and `**` (any depth), and literal template substitution.
 */
import { describe, expect, it } from "vitest";
import { ConfigError } from "../../src/errors.js";
import {
  compileNamePattern,
  compileRepositoryPattern,
  fillTemplate,
  hasTemplate,
  isPathComponent,
  parseRepositoryPattern,
  type TemplateValues,
  usesAnnotations,
} from "../../src/policy/glob.js";
import { thrownBy } from "../helpers/errors.js";

const values: TemplateValues = { cluster: "prod", namespace: "team-a", serviceAccount: "builder" };

function repoMatches(pattern: string, name: string, v: TemplateValues = values): boolean {
  return compileRepositoryPattern(parseRepositoryPattern(pattern, "test"), v).test(name);
}

describe("identity patterns", () => {
  it.each([
    ["*", "", true],
    ["*", "anything-at:all/even", true],
    ["team-*", "team-", true],
    ["team-*", "team-a", true],
    ["team-*", "xteam-a", false],
    ["team-*", "team", false],
    ["*-prod", "eu-prod", true],
    ["*-prod", "eu-prod-2", false],
    ["a*b*c", "abc", true],
    ["a*b*c", "a-x-b-y-c", true],
    ["a.b", "a.b", true],
    ["a.b", "axb", false],
    ["(x)", "(x)", true],
    ["x+", "xx", false],
    ["line*", "line1\nline2", true],
    // `**` in a name pattern is the same as `*`; `*` crosses `/`, `.` and `:`
    ["team-**", "team-a", true],
    ["**", "", true],
    ["a**b", "a/x.y:z/b", true],
    ["*.example.com", "registry.example.com", true],
    ["*.example.com", "example.com", false],
    ["registry.example.com:*", "registry.example.com:5000", true],
    // case-sensitive, whole string
    ["Team-*", "team-a", false],
    ["team", "team-a", false],
  ] as const)("%s vs %j -> %s", (pattern, name, want) => {
    expect(compileNamePattern(pattern).test(name)).toBe(want);
  });
});

describe("repository patterns: * vs **", () => {
  it.each([
    ["library/*", "library/ubuntu", true],
    ["library/*", "library/nested/ubuntu", false],
    ["library/*", "library", false],
    ["library/**", "library/ubuntu", true],
    ["library/**", "library/nested/deep/ubuntu", true],
    ["library/**", "library", false],
    ["library/**", "libraryx/ubuntu", false],
    ["*", "foo", true],
    ["*", "foo/bar", false],
    ["**", "foo/bar/baz", true],
    ["*/app", "team/app", true],
    ["*/app", "org/team/app", false],
    ["**/app", "org/team/app", true],
    ["**/app", "org/team/application", false],
    ["a/*/c", "a/b/c", true],
    ["a/*/c", "a/b/x/c", false],
    ["a/**/c", "a/b/x/c", true],
    ["team.a/*", "teamxa/app", false],
    ["localhost:5000/*", "localhost:5000/foo", true],
    // `*` may be empty, `**` may be empty, and the `/` next to them stays literal
    ["team-*", "team-", true],
    ["a/**/c", "a/c", false],
    ["a/**/c", "a//c", true],
    ["a/**", "a/", true],
    ["**/app", "app", false],
    // three or more stars mean `**`
    ["a/***", "a/b/c", true],
    ["a/****/c", "a/b/x/c", true],
    // `*` matches the host:port of a name, but never its `/`
    ["*/app", "localhost:5000/app", true],
    ["*", "localhost:5000/app", false],
    // literal everything else, case-sensitive
    ["Library/*", "library/ubuntu", false],
    ["library/ubuntu", "library/ubuntu2", false],
    ["a+b/*", "aab/x", false],
    ["a+b/*", "a+b/x", true],
  ] as const)("%s vs %s -> %s", (pattern, name, want) => {
    expect(repoMatches(pattern, name)).toBe(want);
  });
});

describe("templates", () => {
  it.each([
    ["${namespace}/**", "team-a/app", true],
    ["${namespace}/**", "team-a/x/y", true],
    ["${namespace}/**", "team-b/app", false],
    ["${namespace}/**", "team-ab/app", false],
    ["${namespace}/**", "team-a", false],
    ["${cluster}/${namespace}/*", "prod/team-a/app", true],
    ["${cluster}/${namespace}/*", "dev/team-a/app", false],
    ["sa/${serviceAccount}", "sa/builder", true],
    ["sa/${serviceAccount}", "sa/builder2", false],
    ["${namespace}-*", "team-a-cache", true],
  ] as const)("%s vs %s -> %s", (pattern, name, want) => {
    expect(repoMatches(pattern, name)).toBe(want);
  });

  it("substitutes values literally: regex or glob characters in a value never widen the pattern", () => {
    const hostile: TemplateValues = { cluster: ".*", namespace: "a|b", serviceAccount: "**" };
    expect(repoMatches("${cluster}/x", "anything/x", hostile)).toBe(false);
    expect(repoMatches("${cluster}/x", ".*/x", hostile)).toBe(true);
    expect(repoMatches("${namespace}/x", "a/x", hostile)).toBe(false);
    expect(repoMatches("${namespace}/x", "a|b/x", hostile)).toBe(true);
    expect(repoMatches("sa/${serviceAccount}", "sa/deep/er", hostile)).toBe(false);
    expect(repoMatches("sa/${serviceAccount}", "sa/**", hostile)).toBe(true);
  });

  it("parses into literal, star and variable parts", () => {
    expect(parseRepositoryPattern("${namespace}/**/app-*", "p")).toEqual([
      { var: "namespace" },
      { lit: "/" },
      { star: 2 },
      { lit: "/app-" },
      { star: 1 },
    ]);
    expect(hasTemplate(parseRepositoryPattern("${cluster}/x", "p"))).toBe(true);
    expect(hasTemplate(parseRepositoryPattern("library/*", "p"))).toBe(false);
  });

  it.each([
    ["${team}/**", "${team}"],
    ["${Namespace}/**", "${Namespace}"],
    ["x/${}", "${}"],
    ["${namespace}/${pod}", "${pod}"],
  ])("unknown variable in %s -> ConfigError naming %s and the dotted path", (pattern, variable) => {
    const caught = thrownBy(() => parseRepositoryPattern(pattern, "policy.rules[3].deny[1].repository"));
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as ConfigError).problems).toEqual([
      `policy.rules[3].deny[1].repository: unknown template variable "${variable}" (known: \${cluster}, \${namespace}, \${serviceAccount}, \${annotation:<key>})`,
    ]);
  });

  it("parses ${annotation:<key>} with a Kubernetes annotation key, prefix and all", () => {
    expect(parseRepositoryPattern("teams/${annotation:example.com/team}/*", "p")).toEqual([
      { lit: "teams/" },
      { var: "annotation", key: "example.com/team" },
      { lit: "/" },
      { star: 1 },
    ]);
    expect(usesAnnotations(parseRepositoryPattern("${annotation:team}/**", "p"))).toBe(true);
    expect(usesAnnotations(parseRepositoryPattern("${namespace}/**", "p"))).toBe(false);
  });

  it.each([
    ["${annotation:}/**", "${annotation:}"],
    ["${annotation:Bad Key}/**", "${annotation:Bad Key}"],
    ["${annotation:example.com/}/**", "${annotation:example.com/}"],
    ["${annotation:-team}/**", "${annotation:-team}"],
  ])("invalid annotation key in %s -> ConfigError naming %s", (pattern, template) => {
    const caught = thrownBy(() => parseRepositoryPattern(pattern, "policy.rules[0].allow[0].repository"));
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as ConfigError).problems).toEqual([
      `policy.rules[0].allow[0].repository: "${template}" does not name a valid annotation key (a Kubernetes annotation key: [prefix/]name)`,
    ]);
  });

  it("an unterminated ${ is literal text, not a template", () => {
    expect(parseRepositoryPattern("${namespace", "p")).toEqual([{ lit: "${namespace" }]);
  });
});

describe("template values: one valid path component or nothing", () => {
  it.each([
    ["team-a", true],
    ["app.v2", true],
    ["a__b", true],
    ["a---b", true],
    ["a_b", true],
    ["0", true],
    ["", false],
    ["*", false],
    ["**", false],
    ["../x", false],
    ["..", false],
    ["a/b", false],
    ["Team", false],
    ["-a", false],
    ["a-", false],
    ["a..b", false],
    ["a___b", false],
    ["a b", false],
    ["a\nb", false],
    ["ä", false],
  ])("isPathComponent(%j) -> %s", (value, want) => {
    expect(isPathComponent(value)).toBe(want);
  });

  const parts = parseRepositoryPattern("teams/${annotation:team}/${namespace}/**", "p");
  const base: TemplateValues = { cluster: "prod", namespace: "team-a", serviceAccount: "builder" };

  it("fills every template with its literal value", () => {
    expect(fillTemplate(parts, { ...base, annotations: { team: "payments" } })).toEqual([
      { lit: "teams/" },
      { lit: "payments" },
      { lit: "/" },
      { lit: "team-a" },
      { lit: "/" },
      { star: 2 },
    ]);
  });

  it.each([
    ["no annotations at all", undefined],
    ["the annotation is missing", { other: "payments" }],
    ["the value is *", { team: "*" }],
    ["the value is **", { team: "**" }],
    ["the value climbs up", { team: "../x" }],
    ["the value spans components", { team: "a/b" }],
    ["the value is empty", { team: "" }],
    ["the value has upper case", { team: "Payments" }],
    ["the value is a regex", { team: ".*" }],
  ])("cannot be filled when %s", (_d, annotations) => {
    expect(fillTemplate(parts, { ...base, annotations })).toBeUndefined();
  });

  it("an identity value that is not a path component cannot be filled either", () => {
    expect(fillTemplate(parseRepositoryPattern("${namespace}/**", "p"), { ...base, namespace: "a/b" })).toBe(
      undefined,
    );
  });

  it("looks annotations up as own keys only (no prototype keys)", () => {
    const p = parseRepositoryPattern("${annotation:constructor}/x", "p");
    expect(fillTemplate(p, { ...base, annotations: {} })).toBeUndefined();
  });
});

describe("matching time does not depend on backtracking", () => {
  // Compiled to a backtracking RegExp (`^.*a.*a...b$`), these pairs take time growing like
  // (input length)^(stars): 8 stars on 60 characters already took 45 s, and 20 stars on 100 characters
  // would take longer than any test run. The matcher answers them like any other pattern. They run in a
  // child process so that a backtracking matcher fails the test (killed at the bound) instead of hanging
  // the test runner; the bound is a liveness guard, far above the milliseconds the matcher takes.
  const script = `
    import { compileNamePattern, compileRepositoryPattern, parseRepositoryPattern } from "./src/policy/glob.ts";
    const a = "a".repeat(100);
    const v = { cluster: "", namespace: "", serviceAccount: "" };
    const answers = [
      compileNamePattern("*a".repeat(20) + "*b").test(a),
      compileNamePattern("*a".repeat(20) + "*").test(a),
      compileRepositoryPattern(parseRepositoryPattern("*a".repeat(20) + "*b", "p"), v).test(a),
      compileRepositoryPattern(parseRepositoryPattern("**a".repeat(20) + "**b", "p"), v).test(a),
      compileRepositoryPattern(parseRepositoryPattern("*a".repeat(20) + "**", "p"), v).test(a + "/x"),
      compileNamePattern("*".repeat(200) + "x").test("y".repeat(255)),
    ];
    process.stdout.write(JSON.stringify(answers));
  `;

  it("answers exactly what the anchored regular expressions of the pattern grammar answer (exhaustive, short)", () => {
    // The grammar's meaning as a regex (fine for short inputs): `*` = [^/]* (any run for name patterns),
    // `**` = any run, every other character literal.
    const esc = (t: string) => t.replace(/[.*+?^${}()|[\]\\/-]/g, "\\$&");
    const asRegex = (pattern: string, name: boolean) =>
      new RegExp(
        `^${pattern
          .split(/(\*+)/)
          .map((t) => (t.startsWith("*") ? (name || t.length > 1 ? ".*" : "[^/]*") : esc(t)))
          .join("")}$`,
        "s",
      );
    const words = (alphabet: string[], max: number): string[] => {
      let level = [""];
      const all = [""];
      for (let n = 0; n < max; n++) {
        level = level.flatMap((w) => alphabet.map((c) => w + c));
        all.push(...level);
      }
      return all;
    };
    const patterns = words(["a", "/", "*", "."], 5);
    const inputs = words(["a", "/", "."], 5);
    let compared = 0;
    for (const pattern of patterns) {
      const name = compileNamePattern(pattern);
      const repo = compileRepositoryPattern(parseRepositoryPattern(pattern, "p"), values);
      const nameRe = asRegex(pattern, true);
      const repoRe = asRegex(pattern, false);
      for (const input of inputs) {
        if (name.test(input) !== nameRe.test(input) || repo.test(input) !== repoRe.test(input)) {
          throw new Error(`${JSON.stringify(pattern)} vs ${JSON.stringify(input)} differs from the regex`);
        }
        compared++;
      }
    }
    expect(compared).toBe(patterns.length * inputs.length);
  });

  it("pathological pattern/input pairs are answered (20 stars, 100 characters)", async () => {
    const { spawn } = await import("node:child_process");
    const { REPO_ROOT } = await import("../helpers/plugin.js");
    const out = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
      const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
        cwd: REPO_ROOT,
        stdio: ["ignore", "pipe", "inherit"],
      });
      let stdout = "";
      child.stdout.setEncoding("utf8").on("data", (d: string) => {
        stdout += d;
      });
      const guard = setTimeout(() => child.kill("SIGKILL"), 20_000);
      child.once("close", (code) => {
        clearTimeout(guard);
        resolve({ code, stdout });
      });
    });
    expect(out).toEqual({ code: 0, stdout: JSON.stringify([false, true, false, false, true, false]) });
  });
});
