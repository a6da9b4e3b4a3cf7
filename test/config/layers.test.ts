/**
 * Config layering (src/config/layers.ts, `--config` repeated): the merge rules table-driven, then real
 * files through the real loader (loadConfigFile, inspectConfigFile, check-config): the merged document is
 * validated as one, relative paths resolve against the folder of the file that sets them, and every
 * problem names the file it came from.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeEach, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { checkConfigCommand } from "../../src/cli/commands.js";
import { attributeProblems, mergeConfigLayers } from "../../src/config/layers.js";
import { inspectConfigFile, loadConfigFile } from "../../src/config/load.js";
import { ConfigError } from "../../src/errors.js";

const merged = (...docs: unknown[]) =>
  mergeConfigLayers(docs.map((doc, i) => ({ file: `/cfg/${i}.yaml`, doc }))).doc;

function mergeProblems(...docs: unknown[]): string[] {
  try {
    merged(...docs);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error("expected a ConfigError");
}

describe("mergeConfigLayers: merge rules", () => {
  const cases: Array<{ rule: string; layers: unknown[]; want: unknown }> = [
    {
      rule: "mappings merge key by key",
      layers: [{ server: { host: "h", port: 1 }, logging: { level: "info" } }, { server: { port: 2 } }],
      want: { server: { host: "h", port: 2 }, logging: { level: "info" } },
    },
    {
      rule: "a new key is added",
      layers: [{ server: { host: "h" } }, { credentialProvider: { audiences: ["a"] } }],
      want: { server: { host: "h" }, credentialProvider: { audiences: ["a"] } },
    },
    {
      rule: "null removes a key (RFC 7386)",
      layers: [{ server: { host: "h", port: 1 } }, { server: { port: null } }],
      want: { server: { host: "h" } },
    },
    {
      rule: "clusters merge by name: a known name merges into its entry, order kept",
      layers: [
        {
          clusters: [
            { name: "a", issuer: "i", review: { timeoutMs: 1 } },
            { name: "b", issuer: "j" },
          ],
        },
        {
          clusters: [
            { name: "b", verification: "both" },
            { name: "a", review: { cacheTtlSeconds: 5 } },
          ],
        },
      ],
      want: {
        clusters: [
          { name: "a", issuer: "i", review: { timeoutMs: 1, cacheTtlSeconds: 5 } },
          { name: "b", issuer: "j", verification: "both" },
        ],
      },
    },
    {
      rule: "a new name is appended",
      layers: [{ clusters: [{ name: "a", issuer: "i" }] }, { clusters: [{ name: "c", issuer: "k" }] }],
      want: {
        clusters: [
          { name: "a", issuer: "i" },
          { name: "c", issuer: "k" },
        ],
      },
    },
    {
      rule: "policy.rules merge by name",
      layers: [
        { policy: { rules: [{ name: "r", allow: [{ repository: "a/**", actions: ["pull"] }] }] } },
        { policy: { rules: [{ name: "r", allow: [{ repository: "b/**", actions: ["pull"] }] }] } },
      ],
      want: { policy: { rules: [{ name: "r", allow: [{ repository: "b/**", actions: ["pull"] }] }] } },
    },
    {
      rule: "lists of strings replace",
      layers: [
        { clusters: [{ name: "a", audiences: ["x", "y"] }] },
        { clusters: [{ name: "a", audiences: ["z"] }] },
      ],
      want: { clusters: [{ name: "a", audiences: ["z"] }] },
    },
    {
      rule: "lists of unnamed mappings replace (registries)",
      layers: [{ registries: [{ service: "a" }, { service: "b" }] }, { registries: [{ service: "c" }] }],
      want: { registries: [{ service: "c" }] },
    },
    {
      rule: "an empty list replaces a list of strings",
      layers: [{ credentialProvider: { audiences: ["a"] } }, { credentialProvider: { audiences: [] } }],
      want: { credentialProvider: { audiences: [] } },
    },
    {
      rule: "an empty later file adds nothing",
      layers: [{ server: { port: 1 } }, null],
      want: { server: { port: 1 } },
    },
    {
      rule: "scalars replace scalars of any type (the schema judges them)",
      layers: [{ server: { port: 1 } }, { server: { port: "2" } }],
      want: { server: { port: "2" } },
    },
  ];
  it.each(cases)("$rule", ({ layers, want }) => {
    expect(merged(...layers)).toEqual(want);
  });

  it("leaves the earlier files' objects unchanged", () => {
    const base = { clusters: [{ name: "a", review: { timeoutMs: 1 } }] };
    merged(base, { clusters: [{ name: "a", review: { timeoutMs: 2 } }] });
    expect(base).toEqual({ clusters: [{ name: "a", review: { timeoutMs: 1 } }] });
  });

  it("__proto__ stays an own key of the merged document (and never becomes its prototype)", () => {
    const overlay = JSON.parse('{"__proto__": {"policy": {"rules": []}}}');
    const doc = merged({ server: { port: 1 } }, overlay) as Record<string, unknown>;
    expect(Object.getPrototypeOf(doc)).toBe(Object.prototype);
    expect(Object.keys(doc)).toEqual(["server", "__proto__"]);
    expect("policy" in doc).toBe(false);
  });
});

describe("mergeConfigLayers: a bad fragment is refused, naming the file and its own path", () => {
  const cases: Array<{ what: string; layers: unknown[]; want: string[] }> = [
    {
      what: "a list at the top",
      layers: [{ server: {} }, [{ name: "a" }]],
      want: ["/cfg/1.yaml: (root): must be a mapping of config keys, got a list"],
    },
    {
      what: "a scalar at the top",
      layers: [{ server: {} }, "clusters"],
      want: ["/cfg/1.yaml: (root): must be a mapping of config keys, got a scalar"],
    },
    {
      what: "a scalar in place of a mapping",
      layers: [
        { clusters: [{ name: "a", review: { timeoutMs: 1 } }] },
        { clusters: [{ name: "a", review: 5 }] },
      ],
      want: [
        "/cfg/1.yaml: clusters[0].review: is a scalar here but a mapping in /cfg/0.yaml; a later file may change a value, not its kind",
      ],
    },
    {
      what: "a mapping in place of a list (indentation slip)",
      layers: [{ clusters: [{ name: "a" }] }, { clusters: { name: "a" } }],
      want: [
        "/cfg/1.yaml: clusters: is a mapping here but a list in /cfg/0.yaml; a later file may change a value, not its kind",
      ],
    },
    {
      what: "an entry without a name where entries merge by name, and a name given twice",
      layers: [
        { clusters: [{ name: "a" }] },
        { clusters: [{ name: "b" }, { issuer: "x" }, { name: "b" }], policy: 3 },
        { policy: { rules: ["pull"] } },
      ],
      want: [
        "/cfg/1.yaml: clusters[1]: has no name; the entries of clusters merge by name",
        '/cfg/1.yaml: clusters: the name "b" appears twice',
        "/cfg/2.yaml: policy: is a mapping here but a scalar in /cfg/1.yaml; a later file may change a value, not its kind",
      ],
    },
  ];
  it.each(cases)("$what", ({ layers, want }) => {
    expect(mergeProblems(...layers)).toEqual(want);
  });
});

describe("attributeProblems", () => {
  const { sources } = mergeConfigLayers([
    { file: "base.yaml", doc: { clusters: [{ name: "a", issuer: "i" }], server: { port: 1 } } },
    { file: "over.yaml", doc: { clusters: [{ name: "a", verifcation: "both" }, { name: "n" }] } },
  ]);
  it.each([
    ["clusters[1].issuer: is required", "over.yaml: clusters[1].issuer: is required"],
    ['clusters[0]: unknown key "verifcation"', 'over.yaml: clusters[0]: unknown key "verifcation"'],
    ["clusters[0].issuer: bad", "base.yaml: clusters[0].issuer: bad"],
    ["clusters[0].audiences: is required", "base.yaml, over.yaml: clusters[0].audiences: is required"],
    ["registries: is required", "base.yaml, over.yaml: registries: is required"],
    ["a line without a path", "a line without a path"],
  ])("%s", (line, want) => {
    expect(attributeProblems([line], sources)).toEqual([want]);
  });
});

describe("loadConfigFile with several files (--config repeated)", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "rte-layers-"));
    mkdirSync(join(dir, "keys"));
    mkdirSync(join(dir, "overlay"));
    writeFileSync(join(dir, "keys", "signing-key.pem"), "not checked here");
    writeFileSync(join(dir, "keys", "signing-cert.pem"), "not checked here");
    writeFileSync(join(dir, "jwks.json"), '{"keys":[]}');
    writeFileSync(join(dir, "overlay", "ca.pem"), "not checked here");
    writeFileSync(join(dir, "overlay", "token"), "not checked here");
  });
  const base = () =>
    stringify({
      server: { host: "127.0.0.1", port: 8080 },
      clusters: [
        { name: "prod", issuer: "https://kubernetes.default.svc", jwksFile: "jwks.json", audiences: ["r"] },
      ],
      registries: [
        {
          service: "r",
          issuer: "rte",
          signingKey: { keyFile: "keys/signing-key.pem", certFile: "keys/signing-cert.pem" },
        },
      ],
      policy: { rules: [{ name: "pull", allow: [{ repository: "**", actions: ["pull"] }] }] },
    });
  const write = (name: string, text: string) => {
    writeFileSync(join(dir, name), text);
    return join(dir, name);
  };

  it("validates the merged document as one; relative paths resolve against the file that sets them", () => {
    const cfg = loadConfigFile([
      write("config.yaml", base()),
      write(
        "overlay/tokenreview.yaml",
        stringify({
          clusters: [
            {
              name: "prod",
              verification: "both",
              review: { cacheTtlSeconds: 5 },
              apiServer: { url: "https://10.0.0.1:6443", caFile: "ca.pem", bearerTokenFile: "token" },
            },
          ],
          credentialProvider: { audiences: ["provider"] },
        }),
      ),
    ]);
    expect(cfg.clusters).toHaveLength(1);
    expect(cfg.clusters[0]).toMatchObject({
      name: "prod",
      issuer: "https://kubernetes.default.svc",
      jwksFile: join(dir, "jwks.json"),
      verification: "both",
      review: { cacheTtlSeconds: 5 },
      apiServer: {
        url: "https://10.0.0.1:6443",
        caFile: join(dir, "overlay", "ca.pem"),
        bearerTokenFile: join(dir, "overlay", "token"),
      },
    });
    expect(cfg.registries[0]!.signingKey.keyFile).toBe(join(dir, "keys", "signing-key.pem"));
    expect(cfg.credentialProvider?.audiences).toEqual(["provider"]);
    expect(Object.isFrozen(cfg.clusters[0])).toBe(true);
  });

  it("one file behaves as before", () => {
    const file = write("config.yaml", base());
    expect(loadConfigFile([file])).toEqual(loadConfigFile(file));
  });

  it("schema problems of the merged document name the file the value came from", () => {
    const baseFile = write("config.yaml", base());
    const overlay = write(
      "overlay.yaml",
      stringify({
        clusters: [
          { name: "prod", verifcation: "both" },
          { name: "staging", audiences: ["r"] },
        ],
      }),
    );
    expect(problemsOf(() => loadConfigFile([baseFile, overlay]))).toEqual([
      `${overlay}: clusters[0]: unknown key "verifcation" (did you mean "verification"?)`,
      `${overlay}: clusters[1].issuer: is required`,
    ]);
  });

  it("a missing file named by an overlay names the overlay and the resolved path", () => {
    const overlay = write(
      "overlay/ca.yaml",
      stringify({ clusters: [{ name: "prod", caFile: "missing.pem" }] }),
    );
    expect(problemsOf(() => loadConfigFile([write("config.yaml", base()), overlay]))).toEqual([
      `${overlay}: clusters[0].caFile: file not found or not readable (${join(dir, "overlay", "missing.pem")})`,
    ]);
  });

  it("syntax errors and unreadable files of every layer are reported together", () => {
    const bad = write("bad.yaml", "clusters: [\n");
    const missing = join(dir, "nope.yaml");
    const got = problemsOf(() => loadConfigFile([write("config.yaml", base()), bad, missing]));
    expect(got).toHaveLength(2);
    expect(got[0]).toMatch(new RegExp(`^\\(yaml\\) ${bad}: `));
    expect(got[1]).toBe(`(file) ${missing}: cannot read: ENOENT`);
  });

  it("the command-line override (--redis-url) applies over every file", () => {
    const overlay = write("o.yaml", stringify({ cache: { redisUrl: "redis://a:6379/0" } }));
    const cfg = loadConfigFile([write("config.yaml", base()), overlay], {}, { redisUrl: "redis://b:6379/1" });
    expect(cfg.cache.redisUrl).toBe("redis://b:6379/1");
  });

  it("inspectConfigFile and check-config take the same layers and name the file of each problem", async () => {
    const baseFile = write("config.yaml", base());
    const overlay = write(
      "o.yaml",
      stringify({ server: { port: "8080" }, clusters: [{ name: "prod", caFile: "x" }] }),
    );
    const inspection = inspectConfigFile([baseFile, overlay], {});
    expect(inspection.config).toBeUndefined();
    expect(inspection.problems).toEqual([
      `${overlay}: server.port: must be a number, got "8080"`,
      `${overlay}: clusters[0].caFile: file not found or not readable (${join(dir, "x")})`,
    ]);
    const result = await checkConfigCommand({ config: [baseFile, overlay] }, { env: {} });
    expect(result).toEqual({
      stdout: "",
      stderr: inspection.problems.map((p) => `config error: ${p}\n`).join(""),
      code: 2,
    });
  });
});

function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error("expected a ConfigError");
}
