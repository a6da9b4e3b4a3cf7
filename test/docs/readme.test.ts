/**
 * The README stays true: its configuration reference names every key of the config schema, and names no
 * key the schema does not have.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { configSchema } from "../../src/config/schema.js";
import { schemaKeys } from "./schema-keys.js";

const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
const start = readme.indexOf("### Configuration reference");
const reference = readme.slice(start, readme.indexOf("\n## ", start));
const tableKeys = [...reference.matchAll(/^\| `([^`]+)` \|/gm)].map((m) => m[1]);

describe("README configuration reference", () => {
  const keys = schemaKeys(configSchema);

  it("documents every schema key", () => {
    const missing = keys.filter((k) => !tableKeys.includes(k));
    expect(missing).toEqual([]);
  });

  it("documents no key the schema lacks", () => {
    const unknown = tableKeys.filter((k) => k !== undefined && !keys.includes(k));
    expect(unknown).toEqual([]);
  });

  it("gives the two set-up commands", () => {
    expect(readme).toContain("npm ci && npm start");
    expect(readme).toContain("npm ci && npm test");
  });
});
