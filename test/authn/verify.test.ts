/**
 * Service-account token verification (src/authn/verify.ts), end to end through `GET /token` with
 * `app.inject`: every rejection is asserted by status, the exact distribution-style JSON body and the
 * `WWW-Authenticate` challenge. The cluster is a local issuer with Kubernetes' exact claim layout, served
 * over real HTTP (discovery + JWKS); the app's clock is frozen.
 */
import { createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FastifyInstance, LightMyRequestResponse } from "fastify";
import { decodeJwt, type JWTHeaderParameters, SignJWT } from "jose";
import pino from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { buildApp } from "../../src/app.js";
import { MAX_TOKEN_LENGTH } from "../../src/authn/verify.js";
import { LocalIssuer, type LocalTokenRequest, startLocalIssuerServer } from "../../src/local/issuer.js";
import { NOW, NOW_S } from "../helpers/clock.js";
import { AUDIENCE, basic, SERVICE, testConfig } from "../helpers/fixtures.js";

/** Frozen "now": 2026-11-30T12:00:00Z (a whole second, so epoch seconds are exact). */
const CHALLENGE = 'Basic realm="registry-token-exchange"';
const SCOPE = "repository:team-a/app:pull,push";

interface Env {
  app: FastifyInstance;
  issuer: LocalIssuer;
  url: string;
  close: () => Promise<void>;
}

let clock = NOW;

/** An issuer on a real port and an app trusting it (cluster "test"), with `cluster` merged into the cluster. */
async function startEnv(
  cluster: Record<string, unknown> = {},
  prepare: (issuer: LocalIssuer, url: string) => void = () => {},
): Promise<Env> {
  const server = await startLocalIssuerServer();
  prepare(server.issuer, server.url);
  const config = await testConfig(server.url, {
    clusters: [{ name: "test", issuer: server.issuer.issuer, audiences: [AUDIENCE], ...cluster }],
  });
  const app = await buildApp(config, { logger: pino({ level: "silent" }), now: () => clock });
  return {
    app,
    issuer: server.issuer,
    url: server.url,
    close: async () => {
      await app.close();
      await server.close();
    },
  };
}

function mint(issuer: LocalIssuer, req: Partial<LocalTokenRequest> = {}): Promise<string> {
  return issuer.mint({
    namespace: "team-a",
    serviceAccount: "builder",
    audiences: [AUDIENCE],
    nowMs: NOW,
    ...req,
  });
}

function get(app: FastifyInstance, authorization: string | undefined, scope = SCOPE) {
  return app.inject({
    method: "GET",
    url: `/token?service=${encodeURIComponent(SERVICE)}&scope=${encodeURIComponent(scope)}`,
    headers: authorization === undefined ? {} : { authorization },
  });
}

function expectUnauthorized(res: LightMyRequestResponse, reason: string, message: string): void {
  expect({ status: res.statusCode, body: res.json() }).toEqual({
    status: 401,
    body: { errors: [{ code: "UNAUTHORIZED", message, detail: { reason } }] },
  });
  expect(res.headers["www-authenticate"]).toBe(CHALLENGE);
  expect(res.headers["content-type"]).toBe("application/json; charset=utf-8");
  expect(res.headers["cache-control"]).toBe("no-store");
}

function expectGranted(res: LightMyRequestResponse): Record<string, unknown> {
  expect(res.statusCode, res.body).toBe(200);
  return decodeJwt(res.json().token as string);
}

async function sign(key: KeyObject, header: Record<string, unknown>, claims: Record<string, unknown>) {
  return new SignJWT(claims).setProtectedHeader(header as JWTHeaderParameters).sign(key);
}

const b64url = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");

afterEach(() => {
  clock = NOW;
});

describe("verification through GET /token", () => {
  let env: Env;
  let oldKey: KeyObject;
  beforeAll(async () => {
    env = await startEnv({}, (issuer) => {
      // Two published keys before the app ever fetches: keys[0] signs, keys[1] is the previous key.
      oldKey = issuer.keys[0]!;
      issuer.rotate();
    });
  });
  afterAll(async () => env.close());

  it("accepts a bound token (Basic password), with two keys published", async () => {
    const claims = expectGranted(await get(env.app, basic(await mint(env.issuer))));
    expect(claims.sub).toBe("system:serviceaccount:team-a:builder");
    expect(claims.access).toEqual([{ type: "repository", name: "team-a/app", actions: ["pull", "push"] }]);
    expect(env.issuer.jwks().keys).toHaveLength(2);
  });

  it("accepts the token as a Bearer credential", async () => {
    expectGranted(await get(env.app, `Bearer ${await mint(env.issuer)}`));
  });

  it("ignores the Basic username", async () => {
    expectGranted(await get(env.app, basic(await mint(env.issuer), "")));
    expectGranted(await get(env.app, basic(await mint(env.issuer), "oauth2accesstoken")));
  });

  describe("key selection", () => {
    it('`kid: ""` with several keys in the JWKS: every key fitting alg is tried', async () => {
      expectGranted(await get(env.app, basic(await mint(env.issuer, { header: { kid: "" } }))));
    });

    it("absent kid with several keys in the JWKS", async () => {
      expectGranted(await get(env.app, basic(await mint(env.issuer, { header: { kid: undefined } }))));
    });

    it('`kid: ""` signed by the second (older) published key', async () => {
      const claims = decodeJwt(await mint(env.issuer));
      expectGranted(await get(env.app, basic(await sign(oldKey, { alg: "RS256", kid: "" }, claims))));
    });

    it("absent kid signed by the second (older) published key", async () => {
      const claims = decodeJwt(await mint(env.issuer));
      expectGranted(await get(env.app, basic(await sign(oldKey, { alg: "RS256" }, claims))));
    });

    it('`kid: ""` signed by a key nobody published -> invalid_signature', async () => {
      const stranger = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey;
      const claims = decodeJwt(await mint(env.issuer));
      expectUnauthorized(
        await get(env.app, basic(await sign(stranger, { alg: "RS256", kid: "" }, claims))),
        "invalid_signature",
        "token signature does not verify",
      );
    });
  });

  describe("token shape and algorithm", () => {
    it("not a JWT", async () => {
      expectUnauthorized(
        await get(env.app, basic("definitely-not-a-jwt")),
        "malformed_token",
        "credential is not a JWT (expected header.payload.signature)",
      );
    });

    it("JWT-shaped but not base64url JSON", async () => {
      expectUnauthorized(
        await get(env.app, basic("abc.def.ghi")),
        "malformed_token",
        "credential is not a JWT (header or payload is not base64url JSON)",
      );
    });

    it("a JWE (five parts) is not a JWT here", async () => {
      expectUnauthorized(
        await get(env.app, basic("a.b.c.d.e")),
        "malformed_token",
        "credential is not a JWT (expected header.payload.signature)",
      );
    });

    it("alg none", async () => {
      const claims = decodeJwt(await mint(env.issuer));
      const token = `${b64url({ alg: "none", typ: "JWT" })}.${b64url(claims)}.`;
      expectUnauthorized(
        await get(env.app, basic(token)),
        "unsupported_algorithm",
        '"alg" none is not allowed for this issuer',
      );
    });

    it("HS256 signed with the cluster's public key as the HMAC secret", async () => {
      const claims = decodeJwt(await mint(env.issuer));
      const pem = createPublicKey(env.issuer.keys[0]!).export({ type: "spki", format: "pem" }) as string;
      const token = await new SignJWT(claims)
        .setProtectedHeader({ alg: "HS256", kid: env.issuer.kid })
        .sign(new TextEncoder().encode(pem));
      expectUnauthorized(
        await get(env.app, basic(token)),
        "unsupported_algorithm",
        '"alg" HS256 is not allowed for this issuer',
      );
    });

    it("alg that no key of the JWKS fits (ES256 with an RSA kid)", async () => {
      const ec = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
      const claims = decodeJwt(await mint(env.issuer));
      expectUnauthorized(
        await get(env.app, basic(await sign(ec, { alg: "ES256", kid: env.issuer.kid }, claims))),
        "unknown_key",
        `token signed by unknown key with ID "${env.issuer.kid}"`,
      );
      expectUnauthorized(
        await get(env.app, basic(await sign(ec, { alg: "ES256" }, claims))),
        "unknown_key",
        'no trusted key fits "alg" ES256',
      );
    });

    it("bad signature: payload changed after signing", async () => {
      const [h, , s] = (await mint(env.issuer)).split(".");
      const forged = b64url({
        ...decodeJwt(await mint(env.issuer)),
        sub: "system:serviceaccount:team-a:admin",
      });
      expectUnauthorized(
        await get(env.app, basic(`${h}.${forged}.${s}`)),
        "invalid_signature",
        "token signature does not verify",
      );
    });

    it("bad signature: signed by another key under the issuer's kid", async () => {
      const stranger = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey;
      const claims = decodeJwt(await mint(env.issuer));
      expectUnauthorized(
        await get(env.app, basic(await sign(stranger, { alg: "RS256", kid: env.issuer.kid }, claims))),
        "invalid_signature",
        "token signature does not verify",
      );
    });

    it("bad signature: signature bytes altered", async () => {
      const [h, p, s] = (await mint(env.issuer)).split(".");
      const flipped = (s![0] === "A" ? "B" : "A") + s!.slice(1);
      expectUnauthorized(
        await get(env.app, basic(`${h}.${p}.${flipped}`)),
        "invalid_signature",
        "token signature does not verify",
      );
    });

    it(`token over ${MAX_TOKEN_LENGTH} characters`, async () => {
      expectUnauthorized(
        await get(env.app, `Bearer ${"a".repeat(MAX_TOKEN_LENGTH + 1)}`),
        "malformed_token",
        `service-account token is longer than ${MAX_TOKEN_LENGTH} characters`,
      );
      expectUnauthorized(
        await get(env.app, `Bearer ${"a".repeat(MAX_TOKEN_LENGTH)}`),
        "malformed_token",
        "credential is not a JWT (expected header.payload.signature)",
      );
    });
  });

  describe("claims", () => {
    const cases: Array<{ name: string; claims: Record<string, unknown>; reason: string; message: string }> = [
      {
        name: "missing exp",
        claims: { exp: undefined },
        reason: "missing_claim",
        message: 'service-account token has no "exp" claim',
      },
      {
        name: "missing iat",
        claims: { iat: undefined },
        reason: "missing_claim",
        message: 'service-account token has no "iat" claim',
      },
      {
        name: "missing sub",
        claims: { sub: undefined },
        reason: "missing_claim",
        message: 'service-account token has no "sub" claim',
      },
      {
        name: "missing aud",
        claims: { aud: undefined },
        reason: "missing_claim",
        message: 'service-account token has no "aud" claim',
      },
      {
        name: "missing iss",
        claims: { iss: undefined },
        reason: "missing_claim",
        message: 'service-account token has no "iss" claim',
      },
      {
        name: "exp not a number",
        claims: { exp: String(NOW_S + 3600) },
        reason: "malformed_token",
        message: '"exp" claim is invalid',
      },
      {
        name: "nbf not a number",
        claims: { nbf: "soon" },
        reason: "malformed_token",
        message: '"nbf" claim is invalid',
      },
      {
        name: "iat not a number",
        claims: { iat: "now" },
        reason: "malformed_token",
        message: '"iat" claim is invalid',
      },
      {
        name: "expired (exactly at the leeway)",
        claims: { exp: NOW_S - 30 },
        reason: "token_expired",
        message: "service-account token has expired",
      },
      {
        name: "expired long ago",
        claims: { iat: NOW_S - 7200, nbf: NOW_S - 7200, exp: NOW_S - 3600 },
        reason: "token_expired",
        message: "service-account token has expired",
      },
      {
        name: "nbf in the future beyond the leeway",
        claims: { nbf: NOW_S + 31 },
        reason: "token_not_yet_valid",
        message: 'service-account token is not valid yet ("nbf" is in the future)',
      },
      {
        name: "iat in the future beyond the leeway",
        claims: { iat: NOW_S + 31 },
        reason: "token_not_yet_valid",
        message: 'service-account token is not valid yet ("iat" is in the future)',
      },
      {
        name: "wrong audience",
        claims: { aud: ["https://kubernetes.default.svc"] },
        reason: "invalid_audience",
        message: `"aud" claim does not contain an audience accepted here`,
      },
      {
        name: "unknown issuer",
        claims: { iss: "https://evil.example.com" },
        reason: "unknown_issuer",
        message: '"iss" claim "https://evil.example.com" is not a trusted cluster issuer',
      },
      {
        name: "sub namespace differs from kubernetes.io",
        claims: { sub: "system:serviceaccount:team-b:builder" },
        reason: "invalid_subject",
        message: '"sub" claim does not agree with the "kubernetes.io" claim',
      },
      {
        name: "sub name differs from kubernetes.io",
        claims: { sub: "system:serviceaccount:team-a:admin" },
        reason: "invalid_subject",
        message: '"sub" claim does not agree with the "kubernetes.io" claim',
      },
      {
        name: "sub not a service account",
        claims: { sub: "system:node:worker-1" },
        reason: "invalid_subject",
        message: '"sub" claim "system:node:worker-1" is not system:serviceaccount:<namespace>:<name>',
      },
      {
        name: "missing kubernetes.io claim",
        claims: { "kubernetes.io": undefined },
        reason: "missing_claim",
        message: 'service-account token has no "kubernetes.io" claim',
      },
      {
        name: "kubernetes.io without a service account",
        claims: { "kubernetes.io": { namespace: "team-a" } },
        reason: "missing_claim",
        message: '"kubernetes.io" claim lacks namespace or serviceaccount name/uid',
      },
    ];
    it.each(cases)("$name", async ({ claims, reason, message }) => {
      expectUnauthorized(await get(env.app, basic(await mint(env.issuer, { claims }))), reason, message);
    });

    it("issuer differing only by a trailing slash is invalid_issuer", async () => {
      expectUnauthorized(
        await get(env.app, basic(await mint(env.issuer, { claims: { iss: `${env.url}/` } }))),
        "invalid_issuer",
        '"iss" claim differs from a trusted issuer by a trailing slash',
      );
    });

    it("legacy Secret-based token (kubernetes pkg/serviceaccount/legacy.go) is refused", async () => {
      const legacy = {
        iss: "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": "team-a",
        "kubernetes.io/serviceaccount/secret.name": "builder-token-x7k2p",
        "kubernetes.io/serviceaccount/service-account.name": "builder",
        "kubernetes.io/serviceaccount/service-account.uid": "0d9b2b6a-6b8a-4b43-9d0c-3c1f3b0d6a11",
        sub: "system:serviceaccount:team-a:builder",
      };
      expectUnauthorized(
        await get(
          env.app,
          basic(await sign(env.issuer.keys[0]!, { alg: "RS256", kid: env.issuer.kid }, legacy)),
        ),
        "legacy_token",
        "legacy Secret-based service-account tokens never expire and are not accepted; use a projected (bound) token",
      );
    });

    it("within the leeway: nbf and iat 30 s ahead are accepted", async () => {
      for (const claims of [{ nbf: NOW_S + 30 }, { iat: NOW_S + 30 }]) {
        expectGranted(await get(env.app, basic(await mint(env.issuer, { claims }))));
      }
    });

    it("a token inside the exp leeway verifies but is too close to expiry to exchange", async () => {
      const sa = await mint(env.issuer, { claims: { exp: NOW_S - 29 } });
      expectUnauthorized(
        await get(env.app, basic(sa)),
        "token_expired",
        "the presented credential expires in 0 s; at least 60 s are needed",
      );
    });

    it("a token with less than 60 s left is refused; with 60 s left the minted token ends with it", async () => {
      expectUnauthorized(
        await get(env.app, basic(await mint(env.issuer, { claims: { exp: NOW_S + 59 } }))),
        "token_expired",
        "the presented credential expires in 59 s; at least 60 s are needed",
      );
      const claims = expectGranted(
        await get(env.app, basic(await mint(env.issuer, { claims: { exp: NOW_S + 60 } }))),
      );
      expect(claims.exp).toBe(NOW_S + 60);
    });

    it("a pod-less, node-bound token is accepted", async () => {
      expectGranted(
        await get(env.app, basic(await mint(env.issuer, { podName: null, nodeName: "worker-1" }))),
      );
    });
  });

  describe("frozen clock", () => {
    it("a token valid now is refused once the clock passes its exp plus the leeway (cache included)", async () => {
      const sa = await mint(env.issuer, { ttlSeconds: 600 });
      expectGranted(await get(env.app, basic(sa)));
      clock = NOW + 540_000;
      expectGranted(await get(env.app, basic(sa)));
      clock = NOW + 540_000 + 1_000;
      expectUnauthorized(
        await get(env.app, basic(sa)),
        "token_expired",
        "the presented credential expires in 59 s; at least 60 s are needed",
      );
      clock = NOW + 600_000 + 30_000;
      expectUnauthorized(await get(env.app, basic(sa)), "token_expired", "service-account token has expired");
    });

    it("a token from the future becomes valid when the clock catches up", async () => {
      const sa = await mint(env.issuer, { nowMs: NOW + 120_000 });
      expectUnauthorized(
        await get(env.app, basic(sa)),
        "token_not_yet_valid",
        'service-account token is not valid yet ("nbf" is in the future)',
      );
      clock = NOW + 90_000;
      expectGranted(await get(env.app, basic(sa)));
    });
  });

  describe("credentials", () => {
    it("missing credentials", async () => {
      expectUnauthorized(
        await get(env.app, undefined),
        "missing_credentials",
        "authentication required: send the service-account token as the Basic password or as a Bearer token",
      );
    });

    it.each([
      [
        "Basic without a colon",
        () => `Basic ${Buffer.from("just-a-token").toString("base64")}`,
        'Basic credential has no ":" between username and password',
      ],
      ["Basic with bad base64", () => "Basic %%%%", "Basic credential is not valid base64"],
      [
        "Basic with an empty password",
        () => `Basic ${Buffer.from("user:").toString("base64")}`,
        "Basic credential has an empty password",
      ],
      ["empty Bearer", () => "Bearer ", "Bearer credential is empty"],
      ["unknown scheme", () => "Digest abc", "unsupported Authorization scheme (use Basic or Bearer)"],
    ])("%s", async (_name, header, message) => {
      expectUnauthorized(await get(env.app, header()), "malformed_credentials", message);
    });
  });
});

describe("unknown kid re-fetch", () => {
  let env: Env;
  beforeAll(async () => {
    env = await startEnv();
  });
  afterAll(async () => env.close());

  it("an unknown kid triggers exactly one extra JWKS fetch, and is then remembered", async () => {
    const keySet = env.app.exchange.keySets[0]!;
    expect(keySet.fetchCount).toBe(0);
    expectGranted(await get(env.app, basic(await mint(env.issuer))));
    expect(keySet.fetchCount).toBe(1);

    const unknown = await mint(env.issuer, { header: { kid: "rotated-away" } });
    const message = 'token signed by unknown key with ID "rotated-away"';
    expectUnauthorized(await get(env.app, basic(unknown)), "unknown_key", message);
    expect(keySet.fetchCount).toBe(2);

    expectUnauthorized(
      await get(env.app, basic(await mint(env.issuer, { header: { kid: "rotated-away" } }))),
      "unknown_key",
      message,
    );
    expect(keySet.fetchCount).toBe(2);

    // Known kids keep working without any fetch.
    expectGranted(await get(env.app, basic(await mint(env.issuer))));
    expect(keySet.fetchCount).toBe(2);
  });

  it("a key rotated in after the first fetch is found through the unknown-kid re-fetch", async () => {
    const keySet = env.app.exchange.keySets[0]!;
    const before = keySet.fetchCount;
    env.issuer.rotate();
    expectGranted(await get(env.app, basic(await mint(env.issuer))));
    expect(keySet.fetchCount).toBe(before + 1);
  });
});

describe("cluster algorithm allowlist", () => {
  let env: Env;
  beforeAll(async () => {
    env = await startEnv({ algorithms: ["ES256"] });
  });
  afterAll(async () => env.close());

  it("RS256 is refused when the cluster allows only ES256", async () => {
    expectUnauthorized(
      await get(env.app, basic(await mint(env.issuer))),
      "unsupported_algorithm",
      '"alg" RS256 is not allowed for this issuer',
    );
    expect(env.app.exchange.keySets[0]!.fetchCount).toBe(0);
  });
});

describe("issuer with a trailing slash (AKS)", () => {
  let env: Env;
  beforeAll(async () => {
    env = await startEnv({}, (issuer, url) => {
      issuer.issuer = `${url}/`;
    });
  });
  afterAll(async () => env.close());

  it("tokens with the exact issuer verify", async () => {
    expectGranted(await get(env.app, basic(await mint(env.issuer))));
  });

  it("tokens without the slash are invalid_issuer", async () => {
    expectUnauthorized(
      await get(env.app, basic(await mint(env.issuer, { claims: { iss: env.url } }))),
      "invalid_issuer",
      '"iss" claim differs from a trusted issuer by a trailing slash',
    );
  });
});

describe('cluster with the old "kubernetes/serviceaccount" issuer and a static JWKS file', () => {
  const issuer = new LocalIssuer("kubernetes/serviceaccount");
  let app: FastifyInstance;
  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), "rte-jwks-"));
    const jwksFile = join(dir, "jwks.json");
    writeFileSync(jwksFile, JSON.stringify(issuer.jwks()));
    const config = await testConfig("unused", {
      clusters: [{ name: "minikube", issuer: "kubernetes/serviceaccount", jwksFile, audiences: [AUDIENCE] }],
    });
    app = await buildApp(config, { logger: pino({ level: "silent" }), now: () => clock });
  });
  afterAll(async () => app.close());

  it("bound tokens with that issuer verify", async () => {
    const claims = expectGranted(await get(app, basic(await mint(issuer))));
    expect(claims.sub).toBe("system:serviceaccount:team-a:builder");
  });

  it('old clusters\' `kid: ""` verifies', async () => {
    expectGranted(await get(app, basic(await mint(issuer, { header: { kid: "" } }))));
  });

  it("legacy Secret-based tokens of the same issuer are still refused", async () => {
    const legacy = {
      iss: "kubernetes/serviceaccount",
      "kubernetes.io/serviceaccount/namespace": "team-a",
      "kubernetes.io/serviceaccount/secret.name": "builder-token-x7k2p",
      "kubernetes.io/serviceaccount/service-account.name": "builder",
      "kubernetes.io/serviceaccount/service-account.uid": "0d9b2b6a-6b8a-4b43-9d0c-3c1f3b0d6a11",
      sub: "system:serviceaccount:team-a:builder",
    };
    expectUnauthorized(
      await get(app, basic(await sign(issuer.keys[0]!, { alg: "RS256", kid: "" }, legacy))),
      "legacy_token",
      "legacy Secret-based service-account tokens never expire and are not accepted; use a projected (bound) token",
    );
  });
});

describe("keys unavailable", () => {
  let env: Env;
  beforeAll(async () => {
    // Port 1 on loopback refuses connections at once: the JWKS can never be fetched.
    env = await startEnv({ jwksUri: "http://127.0.0.1:1/openid/v1/jwks" });
  });
  afterAll(async () => env.close());

  it("GET answers 503 UNAVAILABLE with Retry-After, without internals", async () => {
    const res = await get(env.app, basic(await mint(env.issuer)));
    expect(res.statusCode).toBe(503);
    expect(res.json()).toEqual({
      errors: [
        {
          code: "UNAVAILABLE",
          message: "the cluster's signing keys are not available right now",
          detail: { reason: "keys_unavailable" },
        },
      ],
    });
    expect(Number(res.headers["retry-after"])).toBeGreaterThanOrEqual(1);
    expect(res.headers["www-authenticate"]).toBeUndefined();
    expect(res.body).not.toContain("127.0.0.1:1");
  });

  it("POST answers 503 temporarily_unavailable", async () => {
    const res = await env.app.inject({
      method: "POST",
      url: "/token",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      payload: new URLSearchParams({
        grant_type: "password",
        password: await mint(env.issuer),
        service: SERVICE,
      }).toString(),
    });
    expect(res.statusCode).toBe(503);
    expect(res.json()).toEqual({
      error: "temporarily_unavailable",
      error_description: "the cluster's signing keys are not available right now",
    });
  });
});

describe("unknown kid budget", () => {
  let env: Env;
  beforeAll(async () => {
    env = await startEnv();
  });
  afterAll(async () => env.close());

  it("garbage kids cost at most the burst (3) in fetches, then one per refill period (10 s)", async () => {
    const keySet = env.app.exchange.keySets[0]!;
    expectGranted(await get(env.app, basic(await mint(env.issuer))));
    expect(keySet.fetchCount).toBe(1);
    const garbage = async (kid: string) => {
      const res = await get(env.app, basic(await mint(env.issuer, { header: { kid } })));
      expect(res.json().errors[0].detail.reason).toBe("unknown_key");
    };
    for (let i = 0; i < 10; i += 1) await garbage(`garbage-${i}`);
    expect(keySet.fetchCount).toBe(1 + 3);
    clock = NOW + 10_000;
    await garbage("garbage-after-refill");
    expect(keySet.fetchCount).toBe(1 + 3 + 1);
    await garbage("garbage-after-refill-2");
    expect(keySet.fetchCount).toBe(1 + 3 + 1);
    // Known kids still verify from the cached set.
    expectGranted(await get(env.app, basic(await mint(env.issuer, { nowMs: clock }))));
    expect(keySet.fetchCount).toBe(5);
  });
});
