/**
 * Config of TokenReview verification (src/config/schema.ts, src/config/load.ts): defaults, the in-cluster
 * API server defaults taken from the environment only at load, and exact error messages.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  IN_CLUSTER_CA_FILE,
  IN_CLUSTER_TOKEN_FILE,
  loadConfigFile,
  parseConfig,
} from "../../src/config/load.js";
import { configProblems } from "../helpers/errors.js";

const KEY = { keyFile: "k", certFile: "c" };

function raw(cluster: Record<string, unknown> = {}) {
  return {
    clusters: [
      { name: "prod", issuer: "https://prod.example.com", audiences: ["registry.example.com"], ...cluster },
    ],
    registries: [{ service: "registry.example.com", issuer: "rte", signingKey: KEY }],
    policy: { rules: [{ name: "all", allow: [{ repository: "**", actions: ["pull"] }] }] },
  };
}

const problems = configProblems;

describe("clusters[].verification, annotations, apiServer, review", () => {
  it("defaults to offline verification, caller-asserted annotations, a 10 s review cache and a 2 s budget", () => {
    const c = parseConfig(raw()).clusters[0]!;
    expect(c.verification).toBe("offline");
    expect(c.annotations).toBe("fromRequest");
    expect(c.review).toEqual({ cacheTtlSeconds: 10, timeoutMs: 2000 });
    expect(c.apiServer).toBeUndefined();
  });

  it("outside a pod, tokenReview or fromCluster needs an apiServer", () => {
    expect(problems(() => parseConfig(raw({ verification: "tokenReview" })))).toEqual([
      "clusters[0].apiServer: is required with verification: tokenReview / annotations: fromRequest outside a pod (KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not set)",
    ]);
    expect(problems(() => parseConfig(raw({ annotations: "fromCluster" })))).toEqual([
      "clusters[0].apiServer: is required with verification: offline / annotations: fromCluster outside a pod (KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not set)",
    ]);
  });

  it("in a pod, defaults to the in-cluster API server, CA and service-account token", () => {
    const env = { KUBERNETES_SERVICE_HOST: "10.96.0.1", KUBERNETES_SERVICE_PORT: "443" };
    expect(parseConfig(raw({ verification: "both" }), env).clusters[0]!.apiServer).toEqual({
      url: "https://10.96.0.1:443",
      caFile: IN_CLUSTER_CA_FILE,
      bearerTokenFile: IN_CLUSTER_TOKEN_FILE,
    });
    const v6 = { KUBERNETES_SERVICE_HOST: "fd00::1", KUBERNETES_SERVICE_PORT: "443" };
    expect(parseConfig(raw({ verification: "both" }), v6).clusters[0]!.apiServer!.url).toBe(
      "https://[fd00::1]:443",
    );
    // An offline cluster does not get one: it never calls the API server.
    expect(parseConfig(raw(), env).clusters[0]!.apiServer).toBeUndefined();
  });

  it("an explicit apiServer wins; its files are resolved against the config file and must exist", () => {
    const dir = mkdtempSync(join(tmpdir(), "rte-cfg-"));
    writeFileSync(join(dir, "ca.crt"), "x");
    const cfg = {
      ...raw({
        verification: "both",
        apiServer: { url: "https://api.example.com:6443", caFile: "ca.crt", bearerTokenFile: "token" },
      }),
    };
    writeFileSync(join(dir, "config.yaml"), JSON.stringify(cfg));
    writeFileSync(join(dir, "k"), "x");
    writeFileSync(join(dir, "c"), "x");
    expect(problems(() => loadConfigFile(join(dir, "config.yaml"), {}))).toEqual([
      `clusters[0].apiServer.bearerTokenFile: file not found or not readable (${join(dir, "token")})`,
    ]);
    writeFileSync(join(dir, "token"), "t");
    const loaded = loadConfigFile(join(dir, "config.yaml"), {
      KUBERNETES_SERVICE_HOST: "10.96.0.1",
      KUBERNETES_SERVICE_PORT: "443",
    });
    expect(loaded.clusters[0]!.apiServer).toEqual({
      url: "https://api.example.com:6443",
      caFile: join(dir, "ca.crt"),
      bearerTokenFile: join(dir, "token"),
    });
  });

  it("refuses a plain-http API server unless it is on a loopback address (tokens would travel in clear)", () => {
    const at = (url: string) => () => parseConfig(raw({ verification: "both", apiServer: { url } }));
    expect(problems(at("http://api.example.com:8080"))).toEqual([
      "clusters[0].apiServer.url: must be https: (http: only on a loopback address): the bearer token and every reviewed service-account token are sent there",
    ]);
    expect(problems(at("http://10.0.0.1:8001"))).toHaveLength(1);
    for (const ok of [
      "https://api.example.com:6443",
      "http://127.0.0.1:8001",
      "http://localhost:8001",
      "http://[::1]:8001",
    ]) {
      expect(
        parseConfig(raw({ verification: "both", apiServer: { url: ok } })).clusters[0]!.apiServer!.url,
      ).toBe(ok);
    }
  });

  it("refuses unknown modes and out-of-range review settings with dotted paths", () => {
    expect(problems(() => parseConfig(raw({ verification: "online" }))).join("\n")).toMatch(
      /^clusters\[0\]\.verification: /,
    );
    expect(problems(() => parseConfig(raw({ review: { cacheTtlSeconds: 301 } }))).join("\n")).toMatch(
      /^clusters\[0\]\.review\.cacheTtlSeconds: /,
    );
    expect(problems(() => parseConfig(raw({ review: { timeoutMs: 50 } }))).join("\n")).toMatch(
      /^clusters\[0\]\.review\.timeoutMs: /,
    );
  });
});
