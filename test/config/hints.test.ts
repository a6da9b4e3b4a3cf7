/**
 * Hints for config problems (src/config/hints.ts): the key probably meant for an unknown key, the unit
 * of a numeric key, and the messages built from them.
 */
import { describe, expect, it } from "vitest";
import { editDistance, knownKeysAt, suggestKey, unitOfKey } from "../../src/config/hints.js";
import { parseConfig } from "../../src/config/load.js";
import type { ConfigError } from "../../src/errors.js";

describe("suggestKey", () => {
  it.each([
    ["registrys", ["server", "clusters", "registries", "policy"], "registries"],
    ["tokenTTLSeconds", ["service", "issuer", "tokenTtlSeconds", "signingKey"], "tokenTtlSeconds"],
    ["audience", ["name", "issuer", "audiences"], "audiences"],
    ["polcy", ["policy", "cache"], "policy"],
    ["bogus", ["server", "clusters", "registries", "policy"], undefined],
    ["x", ["y", "server"], undefined],
  ])("%s -> %s", (unknown, known, want) => {
    expect(suggestKey(unknown, known)).toBe(want);
  });

  it("edit distance counts insertions, deletions and substitutions", () => {
    expect(editDistance("registrys", "registries")).toBe(2);
    expect(editDistance("", "abc")).toBe(3);
    expect(editDistance("same", "same")).toBe(0);
  });

  it("knows the keys at a path of the schema, through arrays and defaults", () => {
    expect(knownKeysAt([])).toContain("registries");
    expect(knownKeysAt(["registries", 0])).toContain("tokenTtlSeconds");
    expect(knownKeysAt(["clusters", 3, "jwks"])).toContain("maxStaleSeconds");
    expect(knownKeysAt(["nope"])).toEqual([]);
  });
});

describe("units", () => {
  it.each([
    ["tokenTtlSeconds", "seconds"],
    ["timeoutMs", "milliseconds"],
    ["bodyLimitBytes", "bytes"],
    ["name", undefined],
  ])("%s is in %s", (key, unit) => {
    expect(unitOfKey(key)).toBe(unit);
  });

  it("a duration string where seconds belong is converted in the message", () => {
    let problems: string[] = [];
    try {
      parseConfig({
        clusters: [{ name: "a", issuer: "https://a", jwksFile: "j.json", audiences: ["r"] }],
        registries: [
          { service: "r", issuer: "i", tokenTtlSeconds: "10m", signingKey: { keyFile: "k", certFile: "c" } },
        ],
        policy: { rules: [{ name: "r", allow: [{ repository: "a/**", actions: ["pull"] }] }] },
      });
    } catch (err) {
      problems = (err as ConfigError).problems;
    }
    expect(problems).toEqual([
      'registries[0].tokenTtlSeconds: must be a number of seconds, got "10m" (durations are plain numbers: 10m is 600)',
    ]);
  });
});
