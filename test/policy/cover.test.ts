// biome-ignore-all lint/suspicious/noTemplateCurlyInString: policy templates such as ${namespace} are data, not JS templates
/**
 * Glob inclusion (src/policy/cover.ts), which feeds the "allow entry that grants nothing" warning: a
 * table of known answers, then properties against brute force: for template-free patterns the answer is
 * exact (included iff no string of a small alphabet tells them apart).
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { globIncludes, nameTokens, repositoryTokens } from "../../src/policy/cover.js";
import {
  compileNamePattern,
  compileRepositoryPattern,
  parseRepositoryPattern,
} from "../../src/policy/glob.js";

const repo = (p: string) => repositoryTokens(parseRepositoryPattern(p, "test"));

describe("repository pattern inclusion", () => {
  it.each([
    ["**", "team-a/app", true],
    ["**", "${namespace}/**", true],
    ["*", "${namespace}", true],
    ["*", "a/b", false],
    ["*/*", "${namespace}/*", true],
    ["team-a/**", "team-a/*", true],
    ["team-a/*", "team-a/**", false],
    ["team-a/**", "team-a/x/**", true],
    ["team-*/**", "team-a/**", true],
    ["team-a/**", "team-*/**", false],
    ["**/app", "team-a/*/app", true],
    ["**/app", "app", false],
    ["${namespace}/**", "${namespace}/app", true],
    ["${namespace}/**", "${cluster}/app", false],
    ["${namespace}/**", "team-a/app", false],
    ["team-a/**", "${namespace}/**", false],
    ["*-cache", "${namespace}-cache", true],
    ["a*", "${namespace}", false],
    ["${annotation:team}/*", "${annotation:team}/x", true],
    ["${annotation:team}/*", "${annotation:env}/x", false],
    ["lib*", "library", true],
    ["lib*", "lib", true],
    ["library", "lib*", false],
    ["a/**/b", "a/b", false],
    ["a/**/b", "a/x/y/b", true],
    ["a/b", "a/**/b", false],
  ])("%s covers %s -> %s", (outer, inner, want) => {
    expect(globIncludes(repo(outer), repo(inner))).toBe(want);
  });
});

describe("name pattern inclusion", () => {
  it.each([
    ["*", "team-*", true],
    ["team-*", "team-a", true],
    ["team-*", "*", false],
    ["*-prod", "eu-*-prod", true],
    ["**", "a/b", true],
    ["*.example.com", "registry.example.com", true],
    ["*.example.com", "example.com", false],
    ["team-a", "team-a", true],
    ["team-a", "team-b", false],
  ])("%s covers %s -> %s", (outer, inner, want) => {
    expect(globIncludes(nameTokens(outer), nameTokens(inner))).toBe(want);
  });
});

/** Every string over `alphabet` of length <= `max`. */
function strings(alphabet: readonly string[], max: number): string[] {
  const out = [""];
  let layer = [""];
  for (let n = 1; n <= max; n++) {
    layer = layer.flatMap((s) => alphabet.map((c) => s + c));
    out.push(...layer);
  }
  return out;
}

const ALL = strings(["a", "b", "/", "c"], 6);
const token = fc.constantFrom("a", "b", "/", "*", "**");
const pattern = fc.array(token, { minLength: 0, maxLength: 4 }).map((t) => t.join(""));

describe("inclusion agrees with brute force on template-free patterns", () => {
  it("repository patterns", () => {
    fc.assert(
      fc.property(pattern, pattern, (outer, inner) => {
        const o = compileRepositoryPattern(parseRepositoryPattern(outer, "o"), {
          cluster: "",
          namespace: "",
          serviceAccount: "",
        });
        const i = compileRepositoryPattern(parseRepositoryPattern(inner, "i"), {
          cluster: "",
          namespace: "",
          serviceAccount: "",
        });
        const brute = ALL.every((s) => !i.test(s) || o.test(s));
        expect(globIncludes(repo(outer), repo(inner))).toBe(brute);
      }),
      { numRuns: 400, seed: 4412 },
    );
  });

  it("name patterns", () => {
    fc.assert(
      fc.property(pattern, pattern, (outer, inner) => {
        const o = compileNamePattern(outer);
        const i = compileNamePattern(inner);
        const brute = ALL.every((s) => !i.test(s) || o.test(s));
        expect(globIncludes(nameTokens(outer), nameTokens(inner))).toBe(brute);
      }),
      { numRuns: 400, seed: 4412 },
    );
  });
});
