/**
 * Failing dependencies, for real: the cluster's discovery + JWKS endpoint is its own process
 * (`helpers/issuer-process.ts`) that these tests start, kill, freeze (SIGSTOP: connections are accepted,
 * nothing answers) and turn to garbage, while the service runs as `startServer` runs it.
 *
 * - down at start-up: not ready until the keys load, and the readiness probe alone (no token request
 *   reaches an unready replica) retries until they do; a cluster with a static `jwksFile` is ready anyway;
 * - down later: the cached keys keep serving within `maxStaleSeconds` (stale), then 503 until it is back;
 * - slow: 200 concurrent requests for one cluster share ONE fetch, and all succeed once it answers;
 * - garbage: refused at start-up with the reason logged; later, the last good keys keep serving.
 *
 * Redis failures are covered by test/cache/failure.test.ts.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FastifyInstance, LightMyRequestResponse } from "fastify";
import { afterEach, describe, expect, it } from "vitest";
import { LocalIssuer } from "../../src/local/issuer.js";
import { type RunningServer, startServer } from "../../src/server.js";
import { AUDIENCE, basic, capturingLogger, SERVICE, testConfig } from "../helpers/fixtures.js";
import { expectMatchesSpec } from "../helpers/openapi.js";
import { IssuerProcess } from "./helpers/issuer-child.js";

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

const UNAVAILABLE = {
  errors: [
    {
      code: "UNAVAILABLE",
      message: "the cluster's signing keys are not available right now",
      detail: { reason: "keys_unavailable" },
    },
  ],
};

/** A controllable clock, starting now. */
function clock() {
  let now = Date.now();
  return {
    now: () => now,
    advance: (ms: number) => {
      now += ms;
    },
  };
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not reached within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The service (as `serve` runs it) trusting `clusters`, with a captured log. */
async function service(
  clusters: Array<Record<string, unknown>>,
  now?: () => number,
): Promise<{ server: RunningServer; app: FastifyInstance; logged: () => Array<Record<string, unknown>> }> {
  const { logger, lines } = capturingLogger("info");
  const config = await testConfig("unused", { clusters });
  const server = await startServer(config, { logger, ...(now ? { now } : {}) });
  cleanup.push(() => server.close());
  return {
    server,
    app: server.app,
    logged: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

async function issuerProcess(): Promise<IssuerProcess> {
  const p = await IssuerProcess.create();
  cleanup.push(() => p.close());
  return p;
}

let accounts = 0;
/** A token of `issuer` for a service account never seen before (so its identity is not cached). */
function freshToken(issuer: LocalIssuer, nowMs?: number): Promise<string> {
  accounts += 1;
  return issuer.mint({
    namespace: "team-a",
    serviceAccount: `sa-${accounts}`,
    audiences: [AUDIENCE],
    ...(nowMs === undefined ? {} : { nowMs }),
  });
}

function tokenRequest(app: FastifyInstance, token: string): Promise<LightMyRequestResponse> {
  return app.inject({
    method: "GET",
    url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull`,
    headers: { authorization: basic(token) },
  });
}

async function readiness(app: FastifyInstance) {
  const res = await app.inject({ method: "GET", url: "/readyz" });
  expectMatchesSpec("GET", "/readyz", res);
  return {
    status: res.statusCode,
    body: res.json() as { clusters: Record<string, Record<string, unknown>> },
  };
}

describe("JWKS endpoint down at start-up", () => {
  it("is not ready until the keys load; the readiness probe alone retries; a jwksFile cluster is ready", async () => {
    const live = await issuerProcess(); // not started: connections are refused
    const airgapped = new LocalIssuer("https://airgapped.example.com");
    const dir = mkdtempSync(join(tmpdir(), "rte-jwks-"));
    const jwksFile = join(dir, "jwks.json");
    writeFileSync(jwksFile, JSON.stringify(airgapped.jwks()));
    // `required`: without it, the air-gapped cluster alone keeps the replica ready
    // (test/server/readiness-clusters.test.ts).
    const { app, logged } = await service([
      { name: "live", issuer: live.url, audiences: [AUDIENCE], required: true },
      { name: "airgapped", issuer: airgapped.issuer, jwksFile, audiences: [AUDIENCE] },
    ]);
    await until("the start-up fetches have failed or loaded", async () =>
      app.exchange.keySets.every((ks) => ks.status().ready || ks.status().lastError !== undefined),
    );
    const before = await readiness(app);
    expect(before.status).toBe(503);
    expect(before.body.clusters.live).toMatchObject({ ready: false, keys: 0 });
    expect(String(before.body.clusters.live!.lastError)).toMatch(/ECONNREFUSED/);
    expect(before.body.clusters.airgapped).toMatchObject({ ready: true, keys: 1, stale: false });
    // The air-gapped cluster serves meanwhile; the live one answers 503 with the generic message.
    expect((await tokenRequest(app, await freshToken(airgapped))).statusCode).toBe(200);
    const refused = await tokenRequest(app, await freshToken(live.issuer));
    expect(refused.statusCode).toBe(503);
    expect(refused.json()).toEqual(UNAVAILABLE);
    expect(logged().some((l) => l.msg === "cluster key fetch failed" && l.cluster === "live")).toBe(true);

    // The endpoint comes up. No token request arrives (an unready replica gets none); the probe retries.
    await live.start();
    await until("ready", async () => (await readiness(app)).status === 200);
    expect((await readiness(app)).body.clusters.live).toMatchObject({ ready: true, keys: 1, stale: false });
    expect(live.served()).toEqual(["/.well-known/openid-configuration", "/openid/v1/jwks"]);
    expect((await tokenRequest(app, await freshToken(live.issuer))).statusCode).toBe(200);
    expect(logged().some((l) => l.msg === "cluster keys recovered" && l.cluster === "live")).toBe(true);
  }, 30_000);
});

describe("JWKS endpoint down later", () => {
  it("cached keys serve within maxStaleSeconds (stale), then 503 until the endpoint is back", async () => {
    const live = await issuerProcess();
    await live.start();
    const t = clock();
    const { app } = await service(
      [
        {
          name: "live",
          issuer: live.url,
          audiences: [AUDIENCE],
          jwks: { minTtlSeconds: 60, maxTtlSeconds: 60, maxStaleSeconds: 600 },
        },
      ],
      t.now,
    );
    expect((await tokenRequest(app, await freshToken(live.issuer, t.now()))).statusCode).toBe(200);
    await live.kill();

    // Past the keys' TTL: a token never seen before still verifies with the cached keys.
    t.advance(61_000);
    expect((await tokenRequest(app, await freshToken(live.issuer, t.now()))).statusCode).toBe(200);
    await until("the background re-fetch has failed", async () => app.exchange.keySets[0]!.status().stale);
    const stale = await readiness(app);
    expect(stale.status).toBe(200);
    expect(stale.body.clusters.live).toMatchObject({ ready: true, keys: 1, stale: true });
    expect(String(stale.body.clusters.live!.lastError)).toMatch(/ECONNREFUSED/);
    for (let i = 0; i < 5; i++) {
      expect((await tokenRequest(app, await freshToken(live.issuer, t.now()))).statusCode).toBe(200);
    }

    // Past maxStaleSeconds: no key is trusted any more.
    t.advance(600_000);
    const refused = await tokenRequest(app, await freshToken(live.issuer, t.now()));
    expect(refused.statusCode).toBe(503);
    expect(refused.json()).toEqual(UNAVAILABLE);
    expect((await readiness(app)).status).toBe(503);

    // Back: the next probe after the retry back-off loads the keys again.
    await live.start();
    t.advance(2_000);
    await until("ready again", async () => (await readiness(app)).status === 200);
    expect((await tokenRequest(app, await freshToken(live.issuer, t.now()))).statusCode).toBe(200);
  }, 30_000);
});

describe("JWKS endpoint slow", () => {
  it("200 concurrent requests for one cluster share ONE fetch while the answer is held, then all succeed", async () => {
    const live = await issuerProcess();
    await live.start();
    const tokens = await Promise.all(Array.from({ length: 200 }, () => freshToken(live.issuer)));
    live.freeze(); // the apiserver hangs: its kernel accepts the connection, nothing answers
    const { app } = await service([{ name: "live", issuer: live.url, audiences: [AUDIENCE] }]);
    const keySet = app.exchange.keySets[0]!;
    const pending = tokens.map((token) => tokenRequest(app, token));
    await until("all 200 in flight", async () => app.exchange.inFlight() === 200);
    await new Promise((r) => setTimeout(r, 300));
    // The start-up warm-up fetch is the only one: every request waits for it.
    expect(keySet.fetchCount).toBe(1);
    expect(keySet.status()).toMatchObject({ ready: false, keys: 0 });
    live.thaw();
    const answers = await Promise.all(pending);
    expect(answers.map((r) => r.statusCode)).toEqual(tokens.map(() => 200));
    expect(keySet.fetchCount).toBe(1);
    expect(live.served()).toEqual(["/.well-known/openid-configuration", "/openid/v1/jwks"]);
    expect(app.exchange.inFlight()).toBe(0);
  }, 30_000);
});

describe("JWKS endpoint returning garbage", () => {
  it("at start-up: 503 with the reason in the log; later: the last good keys keep serving", async () => {
    const live = await issuerProcess();
    live.mode("garbage");
    await live.start();
    const t = clock();
    const { app, logged } = await service(
      [
        {
          name: "live",
          issuer: live.url,
          audiences: [AUDIENCE],
          jwks: { minTtlSeconds: 60, maxTtlSeconds: 60 },
        },
      ],
      t.now,
    );
    const refused = await tokenRequest(app, await freshToken(live.issuer, t.now()));
    expect(refused.statusCode).toBe(503);
    expect(refused.json()).toEqual(UNAVAILABLE);
    const failure = logged().find((l) => l.msg === "cluster key fetch failed");
    expect(failure?.reason).toBe('JWKS is not an object with a "keys" array');
    expect((await readiness(app)).status).toBe(503);

    live.mode("ok");
    t.advance(2_000); // the retry back-off
    expect((await tokenRequest(app, await freshToken(live.issuer, t.now()))).statusCode).toBe(200);

    // Garbage again (an HTML error page this time) once the keys expire: they keep serving, stale.
    live.mode("html");
    t.advance(61_000);
    expect((await tokenRequest(app, await freshToken(live.issuer, t.now()))).statusCode).toBe(200);
    await until("the re-fetch has failed", async () => app.exchange.keySets[0]!.status().stale);
    const ready = await readiness(app);
    expect(ready.status).toBe(200);
    expect(ready.body.clusters.live).toMatchObject({ ready: true, stale: true, lastError: "HTTP 502" });
    expect((await tokenRequest(app, await freshToken(live.issuer, t.now()))).statusCode).toBe(200);
  }, 30_000);
});
