/**
 * `/readyz` per cluster (src/routes/health.ts): readiness means "can serve". With one cluster whose
 * issuer is down (a real port nobody listens on) and one good cluster (a real local issuer), a replica
 * stays ready, reports each cluster, serves the good cluster's tokens and refuses only the dead
 * cluster's with `keys_unavailable`. It is not ready when no cluster can serve, or when a cluster marked
 * `required` cannot; the body says why.
 */
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { buildApp } from "../../src/app.js";
import { startLocalIssuerServer } from "../../src/local/issuer.js";
import { AUDIENCE, basic, SERVICE, testConfig } from "../helpers/fixtures.js";
import { expectMatchesSpec } from "../helpers/openapi.js";
import { freePort } from "../helpers/redis.js";

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

/** An app trusting cluster "good" (a live issuer) and cluster "dead" (nothing listens on its port). */
async function twoClusters(dead: Record<string, unknown> = {}, good: Record<string, unknown> = {}) {
  const live = await startLocalIssuerServer();
  cleanup.push(() => live.close());
  const deadUrl = `http://127.0.0.1:${await freePort()}`;
  const config = await testConfig(live.url, {
    clusters: [
      { name: "good", issuer: live.issuer.issuer, audiences: [AUDIENCE], ...good },
      { name: "dead", issuer: deadUrl, audiences: [AUDIENCE], fetch: { timeoutMs: 500 }, ...dead },
    ],
  });
  const app = await buildApp(config, { logger: pino({ level: "silent" }) });
  cleanup.push(() => app.close());
  // Load what can be loaded; the dead cluster's failure is what readiness reports.
  for (const ks of app.exchange.keySets) await ks.refresh().catch(() => {});
  return { app, live, deadUrl };
}

const goodStatus = {
  ready: true,
  keys: 1,
  fetchedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
  stale: false,
  required: false,
};
const deadStatus = (required: boolean) => ({
  ready: false,
  keys: 0,
  stale: false,
  lastError: expect.stringMatching(/ECONNREFUSED/),
  required,
});

describe("/readyz with one dead cluster and one good cluster", () => {
  it("stays ready, reports each cluster, and serves the good cluster's tokens", async () => {
    const { app, live, deadUrl } = await twoClusters();
    const res = await app.inject({ url: "/readyz" });
    expect(res.statusCode, res.body).toBe(200);
    const body = expectMatchesSpec("GET", "/readyz", res) as Record<string, unknown>;
    expect(body).toEqual({
      status: "ready",
      clusters: { good: goodStatus, dead: deadStatus(false) },
      signingKeys: { [SERVICE]: expect.objectContaining({ ready: true }) },
      cache: { kind: "memory", state: "ok" },
      apiServers: {},
    });

    const token = await live.issuer.mint({
      namespace: "team-a",
      serviceAccount: "builder",
      audiences: [AUDIENCE],
    });
    const ok = await app.inject({
      url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull`,
      headers: { authorization: basic(token) },
    });
    expect(ok.statusCode, ok.body).toBe(200);

    live.issuer.issuer = deadUrl;
    const deadToken = await live.issuer.mint({
      namespace: "team-a",
      serviceAccount: "builder",
      audiences: [AUDIENCE],
    });
    const refused = await app.inject({
      url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull`,
      headers: { authorization: basic(deadToken) },
    });
    expect({ status: refused.statusCode, body: refused.json() }).toEqual({
      status: 503,
      body: {
        errors: [
          {
            code: "UNAVAILABLE",
            message: "the cluster's signing keys are not available right now",
            detail: { reason: "keys_unavailable" },
          },
        ],
      },
    });
  });

  it("is not ready while a cluster marked required cannot serve, and says so", async () => {
    const { app } = await twoClusters({ required: true });
    const res = await app.inject({ url: "/readyz" });
    expect(res.statusCode).toBe(503);
    expect(expectMatchesSpec("GET", "/readyz", res)).toEqual({
      status: "not ready",
      reasons: ['the keys of required cluster "dead" are not loaded'],
      clusters: { good: goodStatus, dead: deadStatus(true) },
      signingKeys: { [SERVICE]: expect.objectContaining({ ready: true }) },
      cache: { kind: "memory", state: "ok" },
      apiServers: {},
    });
  });

  it("is not ready when no cluster can serve", async () => {
    const { app } = await twoClusters(
      {},
      { issuer: `http://127.0.0.1:${await freePort()}`, fetch: { timeoutMs: 500 } },
    );
    const res = await app.inject({ url: "/readyz" });
    expect(res.statusCode).toBe(503);
    expect(expectMatchesSpec("GET", "/readyz", res)).toMatchObject({
      status: "not ready",
      reasons: ["no cluster's keys are loaded"],
      clusters: { good: { ready: false, required: false }, dead: { ready: false, required: false } },
    });
  });

  it("a required cluster that serves keeps the replica ready", async () => {
    const { app } = await twoClusters({}, { required: true });
    const res = await app.inject({ url: "/readyz" });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({
      status: "ready",
      clusters: { good: { ready: true, required: true }, dead: { ready: false, required: false } },
    });
  });
});
