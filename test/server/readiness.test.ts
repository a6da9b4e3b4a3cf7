/**
 * `/healthz` and `/readyz` semantics: liveness is unconditional; readiness needs every cluster's keys
 * and every registry's signing certificate to be usable, and survives a Redis outage as `degraded`.
 */
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import pino from "pino";
import { describe, expect, it } from "vitest";
import { buildApp } from "../../src/app.js";
import { startLocalIssuerServer } from "../../src/local/issuer.js";
import { signingKeyFiles, testConfig, testEnv } from "../helpers/fixtures.js";
import { expectMatchesSpec } from "../helpers/openapi.js";
import { freePort } from "../helpers/redis.js";

describe("/readyz", () => {
  it("is ready once the cluster keys are loaded, and lists the signing keys", async () => {
    const env = await testEnv();
    try {
      expect((await env.app.inject({ url: "/readyz" })).statusCode).toBe(503); // nothing fetched yet
      await env.app.exchange.keySets[0]!.refresh();
      const res = await env.app.inject({ url: "/readyz" });
      expect(res.statusCode).toBe(200);
      const body = expectMatchesSpec("GET", "/readyz", res) as Record<string, unknown>;
      expect(body).toMatchObject({
        status: "ready",
        clusters: { test: { ready: true, keys: 1, stale: false } },
        signingKeys: { "registry.test": { ready: true, alg: "ES256" } },
        cache: { kind: "memory", state: "ok" },
      });
      expect(res.headers["cache-control"]).toBe("no-store");
      // One time format in the body: RFC 3339 UTC for the fetch time as for certNotAfter.
      const iso = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
      const clusters = body.clusters as Record<string, { fetchedAt: unknown }>;
      const signing = body.signingKeys as Record<string, { certNotAfter: unknown }>;
      expect(clusters.test!.fetchedAt).toMatch(iso);
      expect(signing["registry.test"]!.certNotAfter).toMatch(iso);
    } finally {
      await env.close();
    }
  });

  it("is not ready once a signing certificate has expired (distribution would refuse every token)", async () => {
    const keys = await signingKeyFiles();
    const notAfter = Date.parse(new X509Certificate(readFileSync(keys.certFile)).validTo);
    const issuer = await startLocalIssuerServer();
    const later = () => notAfter + 1000;
    const app = await buildApp(await testConfig(issuer.url), {
      logger: pino({ level: "silent" }),
      now: later,
    });
    try {
      await app.exchange.keySets[0]!.refresh();
      const res = await app.inject({ url: "/readyz" });
      expect(res.statusCode).toBe(503);
      expect(expectMatchesSpec("GET", "/readyz", res)).toMatchObject({
        status: "not ready",
        clusters: { test: { ready: true } },
        signingKeys: { "registry.test": { ready: false, certNotAfter: new Date(notAfter).toISOString() } },
      });
    } finally {
      await app.close();
      await issuer.close();
    }
  });

  it("stays 200, degraded, while Redis is down", async () => {
    const env = await testEnv({
      cache: { redisUrl: `redis://127.0.0.1:${await freePort()}`, connectTimeoutMs: 100 },
    });
    try {
      await env.app.exchange.keySets[0]!.refresh();
      const res = await env.app.inject({ url: "/readyz" });
      expect(res.statusCode).toBe(200);
      expect(expectMatchesSpec("GET", "/readyz", res)).toMatchObject({
        status: "degraded",
        cache: { kind: "redis", state: "degraded" },
      });
    } finally {
      await env.close();
    }
  });
});

describe("/healthz", () => {
  it("is 200 even when nothing is ready", async () => {
    const env = await testEnv();
    try {
      const res = await env.app.inject({ url: "/healthz" });
      expect(res.statusCode).toBe(200);
      expect(expectMatchesSpec("GET", "/healthz", res)).toEqual({ status: "ok" });
    } finally {
      await env.close();
    }
  });
});
