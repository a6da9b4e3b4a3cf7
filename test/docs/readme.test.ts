/**
 * The configuration reference (docs/configuration.md) stays true: it names every key of the config
 * schema, and names no key the schema does not have; the README gives the two set-up commands.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { configSchema } from "../../src/config/schema.js";
import { schemaKeys } from "./schema-keys.js";

const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
const configuration = readFileSync(new URL("../../docs/configuration.md", import.meta.url), "utf8");
const start = configuration.indexOf("\n## Configuration reference\n");
const end = configuration.indexOf("\n## ", start + 1);
const reference = configuration.slice(start, end === -1 ? undefined : end);
const tableKeys = [...reference.matchAll(/^\| `([^`]+)` \|/gm)].map((m) => m[1]);

describe("configuration reference (docs/configuration.md)", () => {
  const keys = schemaKeys(configSchema);

  it("documents every schema key", () => {
    expect(start).toBeGreaterThan(-1);
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
