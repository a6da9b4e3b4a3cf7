/**
 * Config reload without restart: atomic swap, a bad file refused with the old version serving, requests
 * in flight finishing on the version they started with, key caches carried over, SIGHUP and file watch.
 */

import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { decodeJwt } from "jose";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { buildApp } from "../../src/app.js";
import { loadConfigFile } from "../../src/config/load.js";
import { ConfigError } from "../../src/errors.js";
import { startLocalIssuerServer } from "../../src/local/issuer.js";
import { reloadConfig, startServer } from "../../src/server.js";
import { AUDIENCE, basic, capturingLogger, SERVICE, testConfig } from "../helpers/fixtures.js";
import { freePort } from "../helpers/redis.js";
import { spawnServe } from "../helpers/serve-process.js";
import { startSlowIssuer, writeConfigFile } from "./helpers.js";

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c().catch(() => {});
});

const PULL_ONLY = [{ name: "pull only", allow: [{ repository: "team-a/**", actions: ["pull"] }] }];
const PULL_PUSH = [
  { name: "pull and push", allow: [{ repository: "team-a/**", actions: ["pull", "push"] }] },
];

async function granted(app: Awaited<ReturnType<typeof buildApp>>, sa: string): Promise<string[]> {
  const res = await app.inject({
    method: "GET",
    url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull,push`,
    headers: { authorization: basic(sa) },
  });
  expect(res.statusCode).toBe(200);
  return (decodeJwt(res.json().token).access as Array<{ actions: string[] }>)[0]!.actions;
}

describe("app.exchange.reload", () => {
  it("swaps policy atomically, keeps the cluster key set (re-fetched), and refuses a bad config without changing anything", async () => {
    const issuer = await startLocalIssuerServer();
    cleanup.push(() => issuer.close());
    const v1 = await testConfig(issuer.url, { policy: { rules: PULL_ONLY }, cache: { reuseTokens: false } });
    const app = await buildApp(v1, { logger: pino({ level: "silent" }) });
    cleanup.push(() => app.close());
    const sa = await issuer.issuer.mint({ namespace: "team-a", serviceAccount: "ci", audiences: [AUDIENCE] });
    expect(await granted(app, sa)).toEqual(["pull"]);
    const keySet = app.exchange.keySets[0];

    const v2 = await testConfig(issuer.url, { policy: { rules: PULL_PUSH }, cache: { reuseTokens: false } });
    expect(app.exchange.reload(v2)).toEqual({ version: 2, needsRestart: [] });
    expect(app.exchange.version).toBe(2);
    expect(await granted(app, sa)).toEqual(["pull", "push"]);
    expect(app.exchange.keySets[0]).toBe(keySet);
    // The key set is carried over but re-fetched once: a reload revokes keys removed from the JWKS.
    expect(issuer.issuer.served.jwks).toBe(2);

    const bad = await testConfig(issuer.url, {
      registries: [
        {
          service: SERVICE,
          issuer: "registry-token-exchange",
          signingKey: { keyFile: "/nonexistent/key.pem", certFile: "/nonexistent/cert.pem" },
        },
      ],
    });
    expect(() => app.exchange.reload(bad)).toThrow(ConfigError);
    expect(app.exchange.version).toBe(2);
    expect(await granted(app, sa)).toEqual(["pull", "push"]);
  });

  it("a request in flight finishes on the version it started with", async () => {
    const slow = await startSlowIssuer();
    cleanup.push(() => slow.close());
    const v1 = await testConfig(slow.url, { policy: { rules: PULL_ONLY } });
    const app = await buildApp(v1, { logger: pino({ level: "silent" }) });
    cleanup.push(() => app.close());
    const sa = await slow.issuer.mint({ namespace: "team-a", serviceAccount: "ci", audiences: [AUDIENCE] });
    slow.delayMs = 300;
    const held = slow.nextHeldJwks();
    const inFlight = granted(app, sa);
    await held;
    app.exchange.reload(await testConfig(slow.url, { policy: { rules: PULL_PUSH } }));
    slow.delayMs = 0;
    expect(await inFlight).toEqual(["pull"]);
    expect(app.exchange.version).toBe(2);
  });

  it("a reload that changes an audience re-verifies already cached identities", async () => {
    const issuer = await startLocalIssuerServer();
    cleanup.push(() => issuer.close());
    const app = await buildApp(await testConfig(issuer.url), { logger: pino({ level: "silent" }) });
    cleanup.push(() => app.close());
    const sa = await issuer.issuer.mint({ namespace: "team-a", serviceAccount: "ci", audiences: [AUDIENCE] });
    expect((await granted(app, sa)).length).toBeGreaterThan(0);
    const cluster = { name: "test", issuer: issuer.url, audiences: ["another-audience"] };
    app.exchange.reload(await testConfig(issuer.url, { clusters: [cluster] }));
    const res = await app.inject({
      method: "GET",
      url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull`,
      headers: { authorization: basic(sa) },
    });
    expect(res.statusCode).toBe(401);
    expect(res.json().errors[0].detail.reason).toBe("invalid_audience");
  });

  it("reports sections that only change on restart", async () => {
    const issuer = await startLocalIssuerServer();
    cleanup.push(() => issuer.close());
    const app = await buildApp(await testConfig(issuer.url), { logger: pino({ level: "silent" }) });
    cleanup.push(() => app.close());
    const changed = await testConfig(issuer.url, { rateLimit: { maxPerAddress: 5 } });
    expect(app.exchange.reload(changed).needsRestart).toEqual(["rateLimit"]);
  });
});

describe("reloadConfig and the file watch", () => {
  it("logs a refused reload with its reasons and keeps serving; a watched file change reloads", async () => {
    const issuer = await startLocalIssuerServer();
    cleanup.push(() => issuer.close());
    const file = await writeConfigFile(
      issuer.url,
      { host: "127.0.0.1", port: 0 },
      { policy: { rules: PULL_ONLY } },
    );
    const { logger, lines } = capturingLogger("info");
    const server = await startServer(loadConfigFile(file), { logger }, false, {
      load: () => loadConfigFile(file),
      watchFile: file,
      intervalMs: 50,
    });
    cleanup.push(() => server.close());
    const sa = await issuer.issuer.mint({ namespace: "team-a", serviceAccount: "ci", audiences: [AUDIENCE] });

    const doc = parse(readFileSync(file, "utf8")) as Record<string, unknown>;
    writeFileSync(
      file,
      stringify({ ...doc, registries: [{ service: SERVICE, issuer: "x", tokenTtlSeconds: 5 }] }),
    );
    const deadline = Date.now() + 5000;
    while (!lines.some((l) => l.includes("config reload refused"))) {
      if (Date.now() > deadline) throw new Error("no refused reload logged");
      await new Promise((r) => setTimeout(r, 25));
    }
    const refused = JSON.parse(lines.find((l) => l.includes("config reload refused"))!);
    expect(refused).toMatchObject({ trigger: "file change", version: 1 });
    expect(refused.problems).toContain(
      "registries[0].tokenTtlSeconds: must be >= 60 (clients assume at least 60 s)",
    );
    expect(server.app.exchange.version).toBe(1);
    expect(await granted(server.app, sa)).toEqual(["pull"]);

    writeFileSync(file, stringify({ ...doc, policy: { rules: PULL_PUSH } }));
    while (server.app.exchange.version !== 2) {
      if (Date.now() > deadline + 5000) throw new Error("watched change not reloaded");
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(await granted(server.app, sa)).toEqual(["pull", "push"]);
    expect(reloadConfig(server.app, { load: () => loadConfigFile(file) }, "test")).toBe(true);
    expect(server.app.exchange.version).toBe(3);
  });
});

describe("SIGHUP", () => {
  it("reloads the config of a running `serve --config` process", async () => {
    const issuer = await startLocalIssuerServer();
    cleanup.push(() => issuer.close());
    const port = await freePort();
    const file = await writeConfigFile(
      issuer.url,
      { host: "127.0.0.1", port },
      { policy: { rules: PULL_ONLY } },
    );
    const { child, waitFor } = spawnServe(["serve", "--config", file], { stderr: false, cleanup });
    await waitFor("Server listening");
    const sa = await issuer.issuer.mint({ namespace: "team-a", serviceAccount: "ci", audiences: [AUDIENCE] });
    const actions = async () => {
      const res = await fetch(
        `http://127.0.0.1:${port}/token?service=${SERVICE}&scope=repository:team-a/app:pull,push`,
        {
          headers: { authorization: basic(sa) },
        },
      );
      expect(res.status).toBe(200);
      const body = (await res.json()) as { token: string };
      return (decodeJwt(body.token).access as Array<{ actions: string[] }>)[0]!.actions;
    };
    expect(await actions()).toEqual(["pull"]);
    const doc = parse(readFileSync(file, "utf8")) as Record<string, unknown>;
    writeFileSync(file, stringify({ ...doc, policy: { rules: PULL_PUSH } }));
    child.kill("SIGHUP");
    await waitFor('"msg":"config reloaded"');
    expect(await actions()).toEqual(["pull", "push"]);
    expect(child.exitCode).toBeNull();
  });
});

describe("config layers (--config repeated)", () => {
  it("`serve --config base --config overlay` merges them, and SIGHUP re-reads every layer", async () => {
    const issuer = await startLocalIssuerServer();
    cleanup.push(() => issuer.close());
    const port = await freePort();
    const base = await writeConfigFile(
      issuer.url,
      { host: "127.0.0.1", port },
      { policy: { rules: PULL_ONLY } },
    );
    const overlay = join(dirname(base), "overlay.yaml");
    // The overlay changes one key of the base's cluster; the rest (issuer, audiences) comes from the base.
    writeFileSync(overlay, stringify({ clusters: [{ name: "test", allowCrossHostJwksUri: false }] }));
    const { child, output, waitFor } = spawnServe(["serve", "--config", base, "--config", overlay], {
      cleanup,
    });
    await waitFor("Server listening");
    const started = JSON.parse(
      output()
        .split("\n")
        .find((l) => l.includes("registry-token-exchange started"))!,
    );
    expect(started.configFile).toBe(`${base}, ${overlay}`);
    const sa = await issuer.issuer.mint({ namespace: "team-a", serviceAccount: "ci", audiences: [AUDIENCE] });
    const actions = async () => {
      const res = await fetch(
        `http://127.0.0.1:${port}/token?service=${SERVICE}&scope=repository:team-a/app:pull,push`,
        { headers: { authorization: basic(sa) } },
      );
      expect(res.status).toBe(200);
      const body = (await res.json()) as { token: string };
      return (decodeJwt(body.token).access as Array<{ actions: string[] }>)[0]!.actions;
    };
    expect(await actions()).toEqual(["pull"]);
    // The overlay's rule of the same name merges into the base's rule: its allow list replaces the base's.
    writeFileSync(
      overlay,
      stringify({
        clusters: [{ name: "test", allowCrossHostJwksUri: false }],
        policy: { rules: [{ name: "pull only", allow: PULL_PUSH[0]!.allow }] },
      }),
    );
    child.kill("SIGHUP");
    await waitFor('"msg":"config reloaded"');
    expect(await actions()).toEqual(["pull", "push"]);
    // A bad overlay is refused naming the overlay; the merged config in force keeps serving.
    writeFileSync(overlay, stringify({ policy: { rules: [{ allow: [] }] } }));
    child.kill("SIGHUP");
    await waitFor("config reload refused");
    const refused = JSON.parse(
      output()
        .split("\n")
        .find((l) => l.includes("config reload refused"))!,
    );
    expect(refused.problems).toEqual([
      `${overlay}: policy.rules[0]: has no name; the entries of policy.rules merge by name`,
    ]);
    expect(await actions()).toEqual(["pull", "push"]);
    expect(child.exitCode).toBeNull();
  });

  it("a watched layered config reloads when any layer changes", async () => {
    const issuer = await startLocalIssuerServer();
    cleanup.push(() => issuer.close());
    const base = await writeConfigFile(
      issuer.url,
      { host: "127.0.0.1", port: 0 },
      { policy: { rules: PULL_ONLY } },
    );
    const overlay = join(dirname(base), "overlay.yaml");
    writeFileSync(overlay, stringify({ logging: { level: "info" } }));
    const files = [base, overlay];
    const { logger } = capturingLogger("info");
    const server = await startServer(loadConfigFile(files), { logger }, false, {
      load: () => loadConfigFile(files),
      watchFile: files,
      intervalMs: 50,
    });
    cleanup.push(() => server.close());
    const sa = await issuer.issuer.mint({ namespace: "team-a", serviceAccount: "ci", audiences: [AUDIENCE] });
    expect(await granted(server.app, sa)).toEqual(["pull"]);
    writeFileSync(
      overlay,
      stringify({ policy: { rules: [{ name: "pull only", allow: PULL_PUSH[0]!.allow }] } }),
    );
    const deadline = Date.now() + 10_000;
    while (server.app.exchange.version !== 2) {
      if (Date.now() > deadline) throw new Error("a change of the second layer was not reloaded");
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(await granted(server.app, sa)).toEqual(["pull", "push"]);
  });
});
