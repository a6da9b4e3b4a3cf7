/**
 * Loading a config file (src/config/load.ts): YAML -> schema -> paths resolved against the file's folder ->
 * readable-file checks -> deep freeze. Each failure is one line starting with its dotted path.
 */
import { chmodSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeEach, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { deepFreeze, loadConfigFile, redactLine } from "../../src/config/load.js";
import { configProblems } from "../helpers/errors.js";

let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "rte-config-"));
  mkdirSync(join(dir, "keys"));
  writeFileSync(join(dir, "keys", "signing-key.pem"), "not checked here");
  writeFileSync(join(dir, "keys", "signing-cert.pem"), "not checked here");
  writeFileSync(join(dir, "jwks.json"), '{"keys":[]}');
});

interface Doc {
  server: { host: string; port: number };
  clusters: Array<{ name: string; issuer: string; jwksFile: string; audiences: string[] }>;
  registries: Array<{
    service: string;
    issuer: string;
    tokenTtlSeconds?: number;
    signingKey: { keyFile: string; certFile: string };
  }>;
  policy: { rules: unknown[] };
}

function doc(patch: (d: Doc) => void = () => {}): Doc {
  const d: Doc = {
    server: { host: "127.0.0.1", port: 8080 },
    clusters: [
      {
        name: "prod",
        issuer: "kubernetes/serviceaccount",
        jwksFile: "jwks.json",
        audiences: ["registry.example.com"],
      },
    ],
    registries: [
      {
        service: "registry.example.com",
        issuer: "registry-token-exchange",
        signingKey: { keyFile: "keys/signing-key.pem", certFile: "keys/signing-cert.pem" },
      },
    ],
    policy: { rules: [{ name: "pull", allow: [{ repository: "**", actions: ["pull"] }] }] },
  };
  patch(d);
  return d;
}

function write(text: string, name = "config.yaml"): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

const problems = configProblems;

describe("loadConfigFile", () => {
  it("resolves relative paths against the config file's folder and freezes the result", () => {
    const cfg = loadConfigFile(write(stringify(doc())), {});
    expect(cfg.registries[0]!.signingKey).toEqual({
      keyFile: join(dir, "keys", "signing-key.pem"),
      certFile: join(dir, "keys", "signing-cert.pem"),
    });
    expect(cfg.clusters[0]!.jwksFile).toBe(join(dir, "jwks.json"));
    expect(Object.isFrozen(cfg)).toBe(true);
    expect(Object.isFrozen(cfg.registries[0]!.signingKey)).toBe(true);
    expect(Object.isFrozen(cfg.policy.rules[0]!.allow)).toBe(true);
    expect(() => {
      (cfg.server as { port: number }).port = 1;
    }).toThrow(TypeError);
  });

  it("keeps absolute paths as they are", () => {
    const abs = join(dir, "keys", "signing-key.pem");
    const cfg = loadConfigFile(
      write(stringify(doc((d) => (d.registries[0]!.signingKey.keyFile = abs))), "sub-config.yaml"),
      {},
    );
    expect(cfg.registries[0]!.signingKey.keyFile).toBe(abs);
  });

  it("a missing key file gives its dotted path and the resolved path", () => {
    const file = write(stringify(doc((d) => (d.registries[0]!.signingKey.keyFile = "missing.pem"))));
    expect(problems(() => loadConfigFile(file, {}))).toEqual([
      `registries[0].signingKey.keyFile: file not found or not readable (${join(dir, "missing.pem")})`,
    ]);
  });

  it("lists every missing file, one line each", () => {
    const file = write(
      stringify(
        doc((d) => {
          d.clusters[0]!.jwksFile = "nope.json";
          d.registries[0]!.signingKey.certFile = "/nonexistent/cert.pem";
        }),
      ),
    );
    expect(problems(() => loadConfigFile(file, {}))).toEqual([
      `clusters[0].jwksFile: file not found or not readable (${join(dir, "nope.json")})`,
      "registries[0].signingKey.certFile: file not found or not readable (/nonexistent/cert.pem)",
    ]);
  });

  // Skipped when running as root: root can read a mode-000 file, so there is nothing to report.
  it.skipIf(process.getuid?.() === 0)("an unreadable file is reported like a missing one", () => {
    const key = join(dir, "keys", "signing-key.pem");
    chmodSync(key, 0o000);
    expect(problems(() => loadConfigFile(write(stringify(doc())), {}))).toEqual([
      `registries[0].signingKey.keyFile: file not found or not readable (${key})`,
    ]);
  });

  it("schema problems come before file checks, with dotted paths", () => {
    const file = write(
      stringify(
        doc((d) => {
          d.registries[0]!.tokenTtlSeconds = 30;
          d.registries[0]!.signingKey.keyFile = "missing.pem";
        }),
      ),
    );
    expect(problems(() => loadConfigFile(file, {}))).toEqual([
      "registries[0].tokenTtlSeconds: must be >= 60 (clients assume at least 60 s)",
    ]);
  });

  it("applies PORT and HOST from the environment", () => {
    const cfg = loadConfigFile(write(stringify(doc())), { PORT: "9443", HOST: "0.0.0.0" });
    expect(cfg.server).toMatchObject({ port: 9443, host: "0.0.0.0" });
  });

  it("a YAML syntax error is one line naming the file and the position", () => {
    const file = write("clusters: [\n  - name: prod\nregistries: {\n");
    const lines = problems(() => loadConfigFile(file, {}));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      new RegExp(`^\\(yaml\\) ${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: .+ at line \\d+, column \\d+`),
    );
    expect(lines[0]).not.toContain("\n");
  });

  it("duplicate YAML keys are a syntax error, not a silent override", () => {
    const file = write("policy:\n  rules: []\npolicy:\n  rules: []\n");
    const lines = problems(() => loadConfigFile(file, {}));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^\(yaml\) .*config\.yaml: Map keys must be unique/);
  });

  it("an empty file reports every required section", () => {
    expect(problems(() => loadConfigFile(write(""), {}))).toEqual([
      "clusters: is required",
      "registries: is required",
      "policy: is required",
    ]);
  });

  it("a missing config file is one line with the errno code", () => {
    const file = join(dir, "absent.yaml");
    expect(problems(() => loadConfigFile(file, {}))).toEqual([`(file) ${file}: cannot read: ENOENT`]);
  });
});

describe("deepFreeze", () => {
  it("freezes nested objects and arrays and returns its argument", () => {
    const value = { a: { b: [{ c: 1 }] } };
    expect(deepFreeze(value)).toBe(value);
    expect(Object.isFrozen(value.a.b[0])).toBe(true);
    expect(Object.isFrozen(value.a.b)).toBe(true);
  });
});

describe("loadConfigFile overrides (serve --redis-url)", () => {
  it("sets cache.redisUrl over the file's and keeps the rest of the file", () => {
    const cfg = loadConfigFile(write(stringify(doc())), {}, { redisUrl: "redis://redis:6379/0" });
    expect(cfg.cache.redisUrl).toBe("redis://redis:6379/0");
    expect(cfg.registries[0]!.service).toBe(doc().registries[0]!.service);
  });

  it("validates the override with the schema's rules and names its key", () => {
    expect(problems(() => loadConfigFile(write(stringify(doc())), {}, { redisUrl: "http://redis" }))).toEqual(
      ["cache.redisUrl: must start with redis:// or rediss://"],
    );
    const sentinel = { ...doc(), cache: { redisCluster: { nodes: [{ host: "r", port: 6379 }] } } };
    expect(
      problems(() => loadConfigFile(write(stringify(sentinel)), {}, { redisUrl: "redis://redis:6379" })),
    ).toEqual(["cache.redisUrl: set at most one of redisUrl, redisSentinel, redisCluster"]);
  });
});

describe("YAML syntax errors never echo a credential", () => {
  it("masks a Redis URL's password on the line shown", () => {
    const file = write("cache:\n  redisUrl: 'redis://:hunter2-secret@redis:6379/0' x\n");
    const lines = problems(() => loadConfigFile(file, {}));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`line 2: "  redisUrl: 'redis://***@redis:6379/0' x"`);
    expect(lines[0]).not.toContain("hunter2");
  });

  it.each([
    ["  redisUrl: rediss://user:pw@h:6380", "  redisUrl: rediss://***@h:6380"],
    ["  password: s3cret", "  password: ***"],
    ['  "bearerToken": abc', '  "bearerToken": ***'],
    ["  x: eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", "  x: ***"],
    ["  issuer: https://kubernetes.default.svc", "  issuer: https://kubernetes.default.svc"],
  ])("%s -> %s", (line, want) => {
    expect(redactLine(line)).toBe(want);
  });
});
