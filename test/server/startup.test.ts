/**
 * What an operator sees when a process starts and is signalled: the start-up line (version, config file,
 * clusters with their key source, registries, cache, credential provider), and SIGHUP in local mode,
 * which keeps serving and says why nothing is reloaded (it used to end the process: Node's default action).
 */
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { startupSummary } from "../../src/server.js";
import { testConfig } from "../helpers/fixtures.js";
import { freePort } from "../helpers/redis.js";
import { spawnServe } from "../helpers/serve-process.js";

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c().catch(() => {});
});

describe("startupSummary", () => {
  it("names the build, the file, each cluster's key source, the registries and the cache", async () => {
    const config = await testConfig("https://issuer.example");
    const summary = startupSummary(config, "/etc/rte/config.yaml");
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8"));
    expect(summary).toMatchObject({
      version: pkg.version,
      node: process.version,
      configFile: "/etc/rte/config.yaml",
      cache: "memory",
      credentialProvider: "off",
    });
    const cluster = config.clusters[0]!;
    expect(summary.clusters).toEqual([
      {
        name: cluster.name,
        issuer: cluster.issuer,
        keys: cluster.jwksFile
          ? `jwksFile ${cluster.jwksFile}`
          : `discovery ${cluster.discoveryUrl ?? "https://issuer.example/.well-known/openid-configuration"}`,
      },
    ]);
    expect(summary.registries).toEqual([
      {
        service: config.registries[0]!.service,
        hosts: [config.registries[0]!.service],
        signingCert: config.registries[0]!.signingKey.certFile,
      },
    ]);
    expect(startupSummary(config, undefined).configFile).toBe("(generated)");
  });
});

describe("serve --local", () => {
  it("SIGHUP keeps the server running and logs why the config is not reloaded", async () => {
    const port = await freePort();
    const stateDir = mkdtempSync(join(tmpdir(), "rte-local-hup-"));
    const { child, output, waitFor } = spawnServe(["serve", "--local", "--state-dir", stateDir], {
      env: { ...process.env, PORT: String(port) },
      cleanup,
    });
    await waitFor("LOCAL MODE on");
    expect(output()).toContain("(generated at each start; SIGHUP does not reload it)");
    const started = output()
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.msg === "registry-token-exchange started");
    expect(started).toMatchObject({ configFile: "(generated)", cache: "memory" });
    child.kill("SIGHUP");
    await waitFor(
      "config not reloaded: this config is generated at start-up (local mode); restart to change it",
    );
    const res = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect(res.status).toBe(200);
    expect(child.exitCode).toBeNull();
    expect(child.signalCode).toBeNull();
  });
});
