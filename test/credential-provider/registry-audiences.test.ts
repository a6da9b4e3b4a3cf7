/**
 * `registries[].audiences` on the credential-provider path (src/config/schema.ts
 * `credentialProviderAudiencesFor`, src/realm/credential-provider.ts, src/realm/realm.ts). A registry
 * that restricts the audiences of the tokens used at it gets the same restriction for exchange
 * credentials: it is served at `/v1/credential-provider` only for the provider audiences it names itself
 * (`registries[].credentialProviderAudiences`), never for the global `credentialProvider.audiences`; and
 * `/token` checks the audience an exchange credential was derived from on every use, so a credential
 * minted before the registry restricted its audiences (a reload) is refused.
 */
import type { FastifyInstance } from "fastify";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { buildApp } from "../../src/app.js";
import { parseConfig } from "../../src/config/load.js";
import { ConfigError } from "../../src/errors.js";
import { startLocalIssuerServer } from "../../src/local/issuer.js";
import { validatePolicy } from "../../src/policy/validate.js";
import { NOW } from "../helpers/clock.js";
import { CP_AUDIENCE, cpRequest, dockerError, REGISTRY_HOST } from "../helpers/credential-provider.js";
import { AUDIENCE, basic, SERVICE, signingKeyFiles, testConfig } from "../helpers/fixtures.js";
import { resolveTestRedis } from "../helpers/redis.js";

/** The provider audience of the restricted registry (a kubelet provider entry of its own). */
const OWN_PROVIDER_AUDIENCE = "rte-provider-registry-test";

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function issuer() {
  const live = await startLocalIssuerServer();
  cleanup.push(() => live.close());
  return live;
}

/** An app trusting `live`, serving `registry.test` (image host `registry.test:5000`) with `registry` merged in. */
async function app(
  live: Awaited<ReturnType<typeof issuer>>,
  registry: Record<string, unknown> = {},
  cache: Record<string, unknown> = {},
) {
  const config = await testConfig(live.url, {
    clusters: [{ name: "test", issuer: live.issuer.issuer, audiences: [AUDIENCE] }],
    registries: [
      {
        service: SERVICE,
        issuer: "registry-token-exchange",
        signingKey: await signingKeyFiles(),
        hosts: [REGISTRY_HOST],
        ...registry,
      },
    ],
    credentialProvider: { audiences: [CP_AUDIENCE] },
    cache,
  });
  const a = await buildApp(config, { logger: pino({ level: "silent" }), now: () => NOW });
  cleanup.push(() => a.close());
  return a;
}

function podToken(live: Awaited<ReturnType<typeof issuer>>, audience: string) {
  return live.issuer.mint({
    namespace: "team-a",
    serviceAccount: "builder",
    audiences: [audience],
    nowMs: NOW,
  });
}

function exchange(a: FastifyInstance, token: string) {
  return a.inject({ method: "POST", url: "/v1/credential-provider", payload: cpRequest(token) });
}

function pull(a: FastifyInstance, password: string) {
  return a.inject({
    url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull`,
    headers: { authorization: basic(password) },
  });
}

/** Waits until the app's Redis connection is up (before it, the cache is skipped). */
async function redisReady(a: FastifyInstance): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!a.exchange.store.healthy()) {
    if (Date.now() > deadline) throw new Error("redis did not connect");
    await new Promise((r) => setTimeout(r, 20));
  }
}

const password = (res: { json: () => unknown }) =>
  (res.json() as { auth: Record<string, { password: string }> }).auth[REGISTRY_HOST]!.password;

describe("a registry that restricts audiences", () => {
  it("is not served through the global credential-provider audience", async () => {
    const live = await issuer();
    const a = await app(live, { audiences: [AUDIENCE] });
    const res = await exchange(a, await podToken(live, CP_AUDIENCE));
    expect({ status: res.statusCode, body: res.json() }).toEqual({
      status: 403,
      body: dockerError(
        "DENIED",
        "access_denied",
        `registry "${SERVICE}" is not served through the credential provider`,
      ),
    });
  });

  it("is served for its own credentialProviderAudiences, and only for those", async () => {
    const live = await issuer();
    const a = await app(live, {
      audiences: [AUDIENCE],
      credentialProviderAudiences: [OWN_PROVIDER_AUDIENCE],
    });
    const wrong = await exchange(a, await podToken(live, CP_AUDIENCE));
    expect(wrong.statusCode).toBe(401);
    expect(wrong.json()).toEqual(
      dockerError(
        "UNAUTHORIZED",
        "invalid_audience",
        '"aud" claim does not contain an audience accepted here',
      ),
    );
    const ok = await exchange(a, await podToken(live, OWN_PROVIDER_AUDIENCE));
    expect(ok.statusCode, ok.body).toBe(200);
    expect((await pull(a, password(ok))).statusCode).toBe(200);
  });

  it("refuses at /token an exchange credential minted before it restricted its audiences", async () => {
    const live = await issuer();
    const before = await app(live);
    const minted = await exchange(before, await podToken(live, CP_AUDIENCE));
    expect(minted.statusCode, minted.body).toBe(200);
    expect((await pull(before, password(minted))).statusCode).toBe(200);

    const after = await app(live, { audiences: [AUDIENCE] });
    const res = await pull(after, password(minted));
    expect({ status: res.statusCode, body: res.json() }).toEqual({
      status: 401,
      body: dockerError(
        "UNAUTHORIZED",
        "invalid_audience",
        "exchange credential was derived from a token whose audience this registry does not accept",
      ),
    });
    // Naming the provider audience it was minted under accepts it again.
    const named = await app(live, { audiences: [AUDIENCE], credentialProviderAudiences: [CP_AUDIENCE, "x"] });
    expect((await pull(named, password(minted))).statusCode).toBe(200);
  });
});

describe("with a cache shared through Redis", () => {
  it("a reload that drops the provider audience refuses a credential whose identity is cached", async () => {
    const redis = await resolveTestRedis();
    cleanup.push(() => redis.stop());
    const cache = { redisUrl: redis.url, keyPrefix: "cp-aud:", commandTimeoutMs: 500 };
    const live = await issuer();
    const before = await app(live, { credentialProviderAudiences: [CP_AUDIENCE, "x"] }, cache);
    const same = await app(live, { credentialProviderAudiences: [CP_AUDIENCE, "x"] }, cache);
    const after = await app(live, { credentialProviderAudiences: ["x"] }, cache);
    for (const a of [before, same, after]) await redisReady(a);
    const minted = await exchange(before, await podToken(live, CP_AUDIENCE));
    expect((await pull(before, password(minted))).statusCode).toBe(200); // identity cached in Redis
    // Another replica of the same configuration finds it there, once it has loaded the cluster keys that
    // every cached identity is checked against.
    expect((await pull(same, await podToken(live, AUDIENCE))).statusCode).toBe(200);
    expect((await pull(same, password(minted))).statusCode).toBe(200);
    expect(same.exchange.realm.stats.identityHits).toBe(1);
    const res = await pull(after, password(minted));
    expect({ status: res.statusCode, body: res.json() }).toEqual({
      status: 401,
      body: dockerError(
        "UNAUTHORIZED",
        "invalid_audience",
        "exchange credential was derived from a token whose audience this registry does not accept",
      ),
    });
  });
});

describe("registries[].credentialProviderAudiences in the schema", () => {
  async function problems(registry: Record<string, unknown>, extra: Record<string, unknown> = {}) {
    try {
      parseConfig({
        clusters: [{ name: "c", issuer: "https://c.example.com", audiences: ["registry.example.com"] }],
        registries: [
          {
            service: "registry.example.com",
            issuer: "rte",
            signingKey: await signingKeyFiles(),
            ...registry,
          },
        ],
        policy: { rules: [], defaultDeny: true },
        ...extra,
      });
    } catch (err) {
      if (err instanceof ConfigError) return err.problems;
      throw err;
    }
    return [];
  }

  it("needs credentialProvider", async () => {
    expect(await problems({ credentialProviderAudiences: ["p"] })).toEqual([
      "registries[0].credentialProviderAudiences: is only used by /v1/credential-provider: set credentialProvider too",
    ]);
  });

  it("must not be an audience accepted at /token", async () => {
    expect(
      await problems(
        { credentialProviderAudiences: ["registry.example.com"] },
        { credentialProvider: { audiences: ["p"] } },
      ),
    ).toEqual([
      'registries[0].credentialProviderAudiences[0]: audience "registry.example.com" is also accepted at the registry (clusters[0].audiences): use a separate audience so a token kubelet requests for the credential provider cannot be presented at /token directly',
    ]);
  });

  it("check-config warns about a restricted registry the credential provider cannot serve", async () => {
    const config = parseConfig({
      clusters: [{ name: "c", issuer: "https://c.example.com", audiences: ["a"] }],
      registries: [
        {
          service: "registry.example.com",
          issuer: "rte",
          audiences: ["a"],
          signingKey: await signingKeyFiles(),
        },
      ],
      policy: { rules: [], defaultDeny: true },
      credentialProvider: { audiences: ["p"] },
    });
    expect(validatePolicy(config).warnings).toEqual([
      "registries[0].credentialProviderAudiences: not set while registries[0].audiences restricts this registry, so /v1/credential-provider refuses it; list the audience its kubelet credential provider requests to serve it there",
    ]);
  });
});
