/**
 * Attack: a workload holding a refresh token after the operator stopped accepting the audience of the
 * token it was derived from (a registry that restricts `audiences`, or a cluster audience removed, then a
 * reload). Exchange credentials are re-checked against the audiences accepted now on every use
 * (docs/security-lifetimes.md, "`registries[].audiences` on the credential-provider path"); a refresh
 * token must be too: otherwise it keeps buying registry tokens for up to `refreshTokenMaxTtlSeconds` from
 * a token the registry no longer accepts. Both replicas below share the signing key, as a reload does.
 */
import type { FastifyInstance } from "fastify";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { buildApp } from "../../src/app.js";
import { parseConfig } from "../../src/config/load.js";
import { startLocalIssuerServer } from "../../src/local/issuer.js";
import {
  AUDIENCE,
  basic,
  refreshGrantBody,
  SERVICE,
  STANDARD_RULES,
  signingKeyFiles,
} from "../helpers/fixtures.js";

const closers: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

async function app(issuerUrl: string, registry: Record<string, unknown>, clusterAudiences = [AUDIENCE]) {
  const keys = await signingKeyFiles();
  const config = parseConfig({
    server: { host: "127.0.0.1", port: 0 },
    logging: { level: "silent" },
    clusters: [{ name: "test", issuer: issuerUrl, audiences: clusterAudiences }],
    registries: [{ service: SERVICE, issuer: "registry-token-exchange", signingKey: keys, ...registry }],
    policy: { rules: STANDARD_RULES },
  });
  const a = await buildApp(config, { logger: pino({ level: "silent" }) });
  closers.push(() => a.close());
  return a;
}

async function refreshToken(a: FastifyInstance, token: string): Promise<string> {
  const res = await a.inject({
    method: "GET",
    url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull&offline_token=true`,
    headers: { authorization: basic(token) },
  });
  expect(res.statusCode, res.body).toBe(200);
  return res.json().refresh_token as string;
}

function refreshGrant(a: FastifyInstance, refresh: string) {
  return a.inject({
    method: "POST",
    url: "/token",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    payload: refreshGrantBody(refresh, "repository:team-a/app:pull"),
  });
}

describe("a refresh token after its source token's audience stopped being accepted", () => {
  it.each([
    [
      "the registry now restricts audiences to another one",
      { audiences: ["registry-only.example"] },
      [AUDIENCE],
    ],
    ["the cluster's audience changed", {}, ["new-audience.example"]],
  ])("%s: 401 invalid_audience", async (_label, registry, clusterAudiences) => {
    const issuer = await startLocalIssuerServer();
    closers.push(() => issuer.close());
    const before = await app(issuer.url, {});
    const token = await issuer.issuer.mint({
      namespace: "team-a",
      serviceAccount: "app",
      audiences: [AUDIENCE],
    });
    const refresh = await refreshToken(before, token);
    expect((await refreshGrant(before, refresh)).statusCode).toBe(200);

    const after = await app(issuer.url, registry, clusterAudiences);
    const res = await refreshGrant(after, refresh);
    expect(res.statusCode, res.body).toBe(401);
    expect(res.json()).toEqual({
      error: "invalid_grant",
      error_description:
        "refresh token was derived from a token whose audience this registry does not accept",
    });
  });

  it("still accepted while its audience is (control)", async () => {
    const issuer = await startLocalIssuerServer();
    closers.push(() => issuer.close());
    const before = await app(issuer.url, {});
    const token = await issuer.issuer.mint({
      namespace: "team-a",
      serviceAccount: "app",
      audiences: [AUDIENCE],
    });
    const refresh = await refreshToken(before, token);
    const after = await app(issuer.url, { audiences: [AUDIENCE, "registry-only.example"] });
    expect((await refreshGrant(after, refresh)).statusCode).toBe(200);
  });
});
