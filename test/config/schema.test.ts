/**
 * The config schema through `parseConfig` (src/config/load.ts + schema.ts): defaults of a minimal config,
 * and one exact dotted-path line per bad config (STYLE.md: "Unit-test the schema, including its error
 * messages").
 */
import { describe, expect, it } from "vitest";
import { dottedPath, parseConfig } from "../../src/config/load.js";
import { ConfigError } from "../../src/errors.js";
import { thrownBy } from "../helpers/errors.js";

type Raw = {
  [k: string]: unknown;
  clusters: Array<Record<string, unknown>>;
  registries: Array<Record<string, unknown>>;
  policy: { rules: unknown[] };
};

/** The smallest valid config. */
function minimal(): Raw {
  return {
    clusters: [{ name: "prod", issuer: "https://k8s.example.com", audiences: ["registry.example.com"] }],
    registries: [
      {
        service: "registry.example.com",
        issuer: "registry-token-exchange",
        signingKey: { keyFile: "key.pem", certFile: "cert.pem" },
      },
    ],
    policy: { rules: [{ name: "all pull", allow: [{ repository: "**", actions: ["pull"] }] }] },
  };
}

function problems(raw: unknown, env: Record<string, string | undefined> = {}): string[] {
  const err = thrownBy(() => parseConfig(raw, env));
  expect(err).toBeInstanceOf(ConfigError);
  expect((err as ConfigError).message).toBe((err as ConfigError).problems.join("\n"));
  return (err as ConfigError).problems;
}

describe("parseConfig: defaults", () => {
  it("a minimal config gets every default", () => {
    const cfg = parseConfig(minimal());
    expect(cfg.server).toEqual({
      host: "0.0.0.0",
      port: 8080,
      trustProxy: false,
      bodyLimitBytes: 64 * 1024,
      requestTimeoutMs: 30_000,
      keepAliveTimeoutMs: 75_000,
      headersTimeoutMs: 15_000,
      maxConcurrentRequests: 512,
      bodyTimeoutMs: 10_000,
      maxStalledRequestsPerAddress: 64,
    });
    expect(cfg.logging).toEqual({ level: "info" });
    expect(cfg.clusters[0]).toEqual({
      name: "prod",
      issuer: "https://k8s.example.com",
      allowCrossHostJwksUri: false,
      audiences: ["registry.example.com"],
      allowApiServerAudience: false,
      required: false,
      algorithms: ["RS256", "ES256"],
      clockSkewSeconds: 30,
      fetch: { timeoutMs: 5_000, maxBytes: 1024 * 1024, maxRedirects: 2 },
      jwks: {
        minTtlSeconds: 60,
        maxTtlSeconds: 3600,
        unknownKidBurst: 3,
        unknownKidRefillSeconds: 10,
        maxStaleSeconds: 86_400,
      },
      verification: "offline",
      annotations: "fromRequest",
      review: { cacheTtlSeconds: 10, timeoutMs: 2_000 },
    });
    expect(cfg.registries[0]).toEqual({
      service: "registry.example.com",
      issuer: "registry-token-exchange",
      tokenTtlSeconds: 300,
      refreshTokenMaxTtlSeconds: 3600,
      signingKey: { keyFile: "key.pem", certFile: "cert.pem" },
    });
    expect(cfg.policy.rules[0]).toEqual({
      name: "all pull",
      match: { cluster: "*", namespace: "*", serviceAccount: "*", service: "*" },
      allow: [{ repository: "**", actions: ["pull"] }],
      deny: [],
    });
    expect(cfg.cache).toMatchObject({ keyPrefix: "rte:", memory: { maxEntries: 100_000 } });
    expect(cfg.cache.redisUrl).toBeUndefined();
  });

  it("does not mutate its input", () => {
    const raw = minimal();
    const copy = structuredClone(raw);
    parseConfig(raw);
    expect(raw).toEqual(copy);
  });

  it.each([
    [
      "a non-URL issuer with jwksFile (old clusters)",
      { issuer: "kubernetes/serviceaccount", jwksFile: "jwks.json" },
    ],
    [
      "a non-URL issuer with jwksUri",
      { issuer: "kubernetes/serviceaccount", jwksUri: "https://a.example.com/k" },
    ],
    ["an AKS issuer with a trailing slash", { issuer: "https://eastus.oic.prod-aks.azure.com/t/u/" }],
    ["discoveryUrl alone", { discoveryUrl: "https://k8s.example.com/.well-known/openid-configuration" }],
    ["ECDSA-only algorithms", { algorithms: ["ES256", "ES384"] }],
  ])("accepts %s", (_name, patch) => {
    const raw = minimal();
    Object.assign(raw.clusters[0]!, patch);
    expect(() => parseConfig(raw)).not.toThrow();
  });

  it("accepts tokenTtlSeconds of exactly 60", () => {
    const raw = minimal();
    raw.registries[0]!.tokenTtlSeconds = 60;
    expect(parseConfig(raw).registries[0]!.tokenTtlSeconds).toBe(60);
  });
});

describe("parseConfig: one dotted-path line per problem", () => {
  const cases: Array<{ name: string; edit: (raw: Raw) => void; want: string[] }> = [
    { name: "unknown root key", edit: (r) => (r.bogus = 1), want: ['(root): unknown key "bogus"'] },
    {
      name: "unknown nested keys",
      edit: (r) => (r.server = { bogus: 1, other: 2 }),
      want: ['server: unknown keys "bogus", "other"'],
    },
    {
      name: "unknown key in a cluster (typo)",
      edit: (r) => (r.clusters[0]!.audience = ["x"]),
      // the key that was probably meant is suggested
      want: ['clusters[0]: unknown key "audience" (did you mean "audiences"?)'],
    },
    {
      name: "missing audiences",
      edit: (r) => delete r.clusters[0]!.audiences,
      want: ["clusters[0].audiences: is required"],
    },
    {
      name: "empty audiences",
      edit: (r) => (r.clusters[0]!.audiences = []),
      want: ["clusters[0].audiences: must list at least one audience"],
    },
    {
      name: "blank audience",
      edit: (r) => (r.clusters[0]!.audiences = ["  "]),
      want: ["clusters[0].audiences[0]: must not be empty"],
    },
    {
      name: "tokenTtlSeconds < 60",
      edit: (r) => (r.registries[0]!.tokenTtlSeconds = 59),
      want: ["registries[0].tokenTtlSeconds: must be >= 60 (clients assume at least 60 s)"],
    },
    {
      name: "two key sources (jwksUri + jwksFile)",
      edit: (r) =>
        Object.assign(r.clusters[0]!, { jwksUri: "https://k8s.example.com/keys", jwksFile: "k.json" }),
      want: ["clusters[0].jwksFile: set at most one of discoveryUrl, jwksUri, jwksFile"],
    },
    {
      name: "two key sources (discoveryUrl + jwksUri)",
      edit: (r) =>
        Object.assign(r.clusters[0]!, {
          discoveryUrl: "https://k8s.example.com/.well-known/openid-configuration",
          jwksUri: "https://k8s.example.com/keys",
        }),
      want: ["clusters[0].jwksUri: set at most one of discoveryUrl, jwksUri, jwksFile"],
    },
    {
      name: "non-URL issuer without a key source",
      edit: (r) => (r.clusters[0]!.issuer = "kubernetes/serviceaccount"),
      want: ["clusters[0].issuer: issuer is not a URL, so discovery is impossible: set jwksUri or jwksFile"],
    },
    {
      name: "jwksUri not http(s)",
      edit: (r) => (r.clusters[0]!.jwksUri = "ftp://k8s.example.com/keys"),
      want: ["clusters[0].jwksUri: must be an http(s) URL"],
    },
    {
      name: "cluster name not a DNS label",
      edit: (r) => (r.clusters[0]!.name = "Prod_1"),
      want: ["clusters[0].name: must be a DNS label (lower case, digits, '-')"],
    },
    {
      name: "duplicate cluster name",
      edit: (r) => r.clusters.push({ name: "prod", issuer: "https://other.example.com", audiences: ["a"] }),
      want: ['clusters[1].name: duplicate name "prod"'],
    },
    {
      name: "duplicate cluster issuer",
      edit: (r) => r.clusters.push({ name: "other", issuer: "https://k8s.example.com", audiences: ["a"] }),
      want: ['clusters[1].issuer: duplicate issuer "https://k8s.example.com"'],
    },
    {
      name: "duplicate registry service",
      edit: (r) => r.registries.push({ ...r.registries[0]! }),
      want: ['registries[1].service: duplicate service "registry.example.com"'],
    },
    {
      name: "empty rules",
      edit: (r) => (r.policy.rules = []),
      want: [
        "policy.rules: no rules: every request would be denied (default deny); add at least one rule, or set policy.defaultDeny: true to deny everything on purpose",
      ],
    },
    {
      name: "rule without allow or deny",
      edit: (r) => (r.policy.rules = [{ name: "nothing" }]),
      want: ["policy.rules[0]: a rule needs at least one allow or deny entry"],
    },
    {
      name: "grant with both repository and registry",
      edit: (r) =>
        (r.policy.rules = [{ name: "x", allow: [{ repository: "a", registry: "catalog", actions: ["*"] }] }]),
      want: ["policy.rules[0].allow[0]: set exactly one of repository, registry"],
    },
    {
      name: "grant with no actions",
      edit: (r) => (r.policy.rules = [{ name: "x", allow: [{ repository: "a", actions: [] }] }]),
      want: ["policy.rules[0].allow[0].actions: must list at least one action"],
    },
    {
      name: "missing clusters",
      edit: (r) => delete (r as Partial<Raw>).clusters,
      want: ["clusters: is required"],
    },
    {
      name: "missing signing key file",
      edit: (r) => (r.registries[0]!.signingKey = { certFile: "cert.pem" }),
      want: ["registries[0].signingKey.keyFile: is required"],
    },
    {
      name: "jwks min TTL above max TTL",
      edit: (r) => (r.clusters[0]!.jwks = { minTtlSeconds: 600, maxTtlSeconds: 60 }),
      want: ["clusters[0].jwks.minTtlSeconds: must be <= jwks.maxTtlSeconds"],
    },
    {
      name: "several problems, one line each",
      edit: (r) => {
        r.registries[0]!.tokenTtlSeconds = 10;
        delete r.clusters[0]!.audiences;
      },
      want: [
        "clusters[0].audiences: is required",
        "registries[0].tokenTtlSeconds: must be >= 60 (clients assume at least 60 s)",
      ],
    },
  ];
  it.each(cases)("$name", ({ edit, want }) => {
    const raw = minimal();
    edit(raw);
    expect(problems(raw).sort()).toEqual([...want].sort());
  });

  it("an empty document names every required section", () => {
    expect(problems(null)).toEqual([
      "clusters: is required",
      "registries: is required",
      "policy: is required",
    ]);
  });
});

describe("parseConfig: PORT / HOST environment override", () => {
  it("PORT and HOST override server.port and server.host", () => {
    const raw = { ...minimal(), server: { host: "127.0.0.1", port: 8080 } };
    const cfg = parseConfig(raw, { PORT: "9090", HOST: "::" });
    expect(cfg.server.port).toBe(9090);
    expect(cfg.server.host).toBe("::");
  });

  it("empty or absent variables change nothing", () => {
    const cfg = parseConfig(minimal(), { PORT: "", HOST: "" });
    expect(cfg.server).toMatchObject({ port: 8080, host: "0.0.0.0" });
    expect(parseConfig(minimal()).server.port).toBe(8080);
  });

  it("PORT=0 (any free port) is allowed", () => {
    expect(parseConfig(minimal(), { PORT: "0" }).server.port).toBe(0);
  });

  it.each(["abc", "70000", "-1", "80.5", "0x50", "1e3", " 80", "123456"])(
    "PORT=%s is a ConfigError",
    (port) => {
      expect(problems(minimal(), { PORT: port })).toEqual([
        `env PORT: must be an integer from 0 to 65535, got "${port}"`,
      ]);
    },
  );
});

describe("dottedPath", () => {
  it.each([
    [[], "(root)"],
    [["server"], "server"],
    [["registries", 0, "signingKey", "keyFile"], "registries[0].signingKey.keyFile"],
    [["policy", "rules", 2, "allow", 0], "policy.rules[2].allow[0]"],
  ] as const)("%j -> %s", (path, want) => {
    expect(dottedPath(path)).toBe(want);
  });
});
