import { X509Certificate } from "node:crypto";
import { decodeJwt, decodeProtectedHeader, importJWK, type JWK, jwtVerify } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { libtrustKeyId } from "../../src/jose/kid.js";
import { NOW, NOW_S } from "../helpers/clock.js";
import {
  AUDIENCE,
  basic,
  capturingLogger,
  SERVICE,
  saTokenMaker,
  type TestEnv,
  testEnv,
} from "../helpers/fixtures.js";

describe("GET /token", () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await testEnv();
  });
  afterAll(async () => env.close());

  it("mints a token with the granted subset of every requested scope", async () => {
    const sa = await env.issuer.mint({
      namespace: "team-a",
      serviceAccount: "builder",
      audiences: [AUDIENCE],
    });
    const res = await env.app.inject({
      method: "GET",
      url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull,push&scope=repository:team-b/app:pull`,
      headers: { authorization: basic(sa) },
    });
    expect(res.statusCode).toBe(200);
    const body = res.json();
    expect(body.token).toBe(body.access_token);
    expect(body.expires_in).toBe(300);
    expect(body.issued_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    const claims = decodeJwt(body.token);
    expect(claims.aud).toBe(SERVICE);
    expect(claims.access).toEqual([
      { type: "repository", name: "team-a/app", actions: ["pull", "push"] },
      { type: "repository", name: "team-b/app", actions: [] },
    ]);
    const header = decodeProtectedHeader(body.token);
    expect(header.alg).toBe("ES256");
    expect(header.kid).toMatch(/^([A-Z2-7]{4}:){11}[A-Z2-7]{4}$/);
  });
});

/* ------------------------------------------------------------------------------------------------------ */
/* Exact shapes with a frozen clock, POST /token (RFC 6749 errors), JWKS, health, and secrets in logs.    */
/* ------------------------------------------------------------------------------------------------------ */

/** Frozen "now": 2026-11-30T12:00:00Z. */
const ISSUED_AT = "2026-11-30T12:00:00Z";

const saToken = saTokenMaker("builder");

function query(params: Array<[string, string]>): string {
  return new URLSearchParams(params).toString();
}

function getToken(env: TestEnv, params: Array<[string, string]>, authorization?: string) {
  return env.app.inject({
    method: "GET",
    url: `/token?${query(params)}`,
    headers: authorization === undefined ? {} : { authorization },
  });
}

function postForm(env: TestEnv, params: Array<[string, string]>) {
  return env.app.inject({
    method: "POST",
    url: "/token",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    payload: query(params),
  });
}

function dockerError(code: string, reason: string, message: string) {
  return { errors: [{ code, message, detail: { reason } }] };
}

describe("GET /token: exact success shapes (frozen clock)", () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await testEnv({}, { now: () => NOW });
  });
  afterAll(async () => env.close());

  it("answers exactly token, access_token, expires_in, issued_at (no refresh_token unless offline), never cached", async () => {
    const res = await getToken(
      env,
      [
        ["account", "builder"],
        ["client_id", "docker"],
        ["service", SERVICE],
        ["scope", "repository:team-a/app:pull,push"],
      ],
      basic(await saToken(env)),
    );
    expect(res.statusCode).toBe(200);
    const body = res.json();
    expect(body).toEqual({
      token: body.token,
      access_token: body.token,
      expires_in: 300,
      issued_at: ISSUED_AT,
    });
    expect(typeof body.token).toBe("string");
    expect(res.headers["cache-control"]).toBe("no-store");
    expect(res.headers.pragma).toBe("no-cache");
    expect(res.headers["content-type"]).toMatch(/^application\/json/);
  });

  it("mints distribution's claims: aud a string, nbf 5 s in the past, integer times, jti", async () => {
    const sa = await saToken(env);
    const res = await getToken(
      env,
      [
        ["service", SERVICE],
        ["scope", "repository:team-a/app:push,pull"],
      ],
      basic(sa),
    );
    const claims = decodeJwt(res.json().token);
    expect(claims).toEqual({
      iss: "registry-token-exchange",
      sub: decodeJwt(sa).sub,
      aud: SERVICE,
      iat: NOW_S,
      nbf: NOW_S - 5,
      exp: NOW_S + 300,
      jti: claims.jti,
      access: [{ type: "repository", name: "team-a/app", actions: ["pull", "push"] }],
    });
    expect(typeof claims.aud).toBe("string");
    expect(claims.jti).toMatch(/^[0-9a-f-]{36}$/);
    expect(claims.jti).not.toBe(decodeJwt(sa).jti);
  });

  it("header has alg, typ, the libtrust kid and an x5c whose leaf certificate verifies the token", async () => {
    const res = await getToken(env, [["service", SERVICE]], basic(await saToken(env)));
    const token = res.json().token as string;
    const header = decodeProtectedHeader(token);
    expect(Object.keys(header).sort()).toEqual(["alg", "kid", "typ", "x5c"]);
    expect(header).toMatchObject({ alg: "ES256", typ: "JWT" });
    expect(header.x5c).toHaveLength(1);
    const leaf = new X509Certificate(Buffer.from(header.x5c![0]!, "base64"));
    const { payload } = await jwtVerify(token, leaf.publicKey, {
      issuer: "registry-token-exchange",
      audience: SERVICE,
      currentDate: new Date(NOW),
    });
    expect(payload.sub).toMatch(/^system:serviceaccount:team-a:builder-\d+$/);
    expect(header.kid).toBe(libtrustKeyId(leaf.publicKey));
  });

  it("the lifetime never goes past the service-account token's exp", async () => {
    const sa = await saToken(env, { ttlSeconds: 120 });
    const res = await getToken(env, [["service", SERVICE]], basic(sa));
    expect(res.json().expires_in).toBe(120);
    expect(decodeJwt(res.json().token).exp).toBe(decodeJwt(sa).exp);
  });

  it("a login (empty scope) gets a token with an empty access list", async () => {
    for (const params of [
      [["service", SERVICE]],
      [
        ["service", SERVICE],
        ["scope", ""],
      ],
    ] as Array<Array<[string, string]>>) {
      const res = await getToken(env, params, basic(await saToken(env)));
      expect(res.statusCode).toBe(200);
      expect(decodeJwt(res.json().token).access).toEqual([]);
    }
  });

  it("keeps every scope: repeated params, space-joined, merged duplicates, names echoed byte for byte", async () => {
    const res = await getToken(
      env,
      [
        ["service", SERVICE],
        ["scope", "repository:team-a/dst:push repository:library/src:pull"],
        ["scope", "repository(plugin):team-a/dst:pull"],
        ["scope", "repository:localhost:5000/team-a/app:pull"],
        ["scope", "registry:catalog:*"],
      ],
      basic(await saToken(env)),
    );
    expect(res.statusCode).toBe(200);
    expect(decodeJwt(res.json().token).access).toEqual([
      { type: "repository", name: "team-a/dst", actions: ["pull", "push"] },
      { type: "repository", name: "library/src", actions: ["pull"] },
      { type: "repository", name: "localhost:5000/team-a/app", actions: [] },
      { type: "registry", name: "catalog", actions: [] },
    ]);
  });

  it("partial access is 200 with an empty actions list, not an error", async () => {
    const res = await getToken(
      env,
      [
        ["service", SERVICE],
        ["scope", "repository:team-b/app:pull,push,delete"],
      ],
      basic(await saToken(env)),
    );
    expect(res.statusCode).toBe(200);
    expect(decodeJwt(res.json().token).access).toEqual([
      { type: "repository", name: "team-b/app", actions: [] },
    ]);
  });

  it("unknown service is 400", async () => {
    const res = await getToken(env, [["service", "other.example.com"]], basic(await saToken(env)));
    expect(res.statusCode).toBe(400);
    expect(res.json()).toEqual(
      dockerError("UNSUPPORTED", "unknown_service", `unknown service "other.example.com": not served here`),
    );
    expect(res.headers["www-authenticate"]).toBeUndefined();
  });

  it.each([
    [
      "duplicate service",
      [
        ["service", SERVICE],
        ["service", "other"],
      ],
      "invalid_request",
      'parameter "service" must not be repeated',
    ],
    [
      "missing service",
      [["scope", "repository:team-a/app:pull"]],
      "invalid_request",
      'parameter "service" is required',
    ],
    ["empty service", [["service", ""]], "invalid_request", 'parameter "service" is required'],
    [
      "invalid scope",
      [
        ["service", SERVICE],
        ["scope", "repository:team-a/App:pull"],
      ],
      "invalid_scope",
      'scope "repository:team-a/App:pull" has an invalid repository name',
    ],
    [
      "too many scopes",
      [
        ["service", SERVICE],
        ["scope", Array.from({ length: 33 }, (_, i) => `repository:r${i}:pull`).join(" ")],
      ],
      "invalid_scope",
      "too many scopes (more than 32)",
    ],
  ] as Array<[string, Array<[string, string]>, string, string]>)(
    "%s is 400",
    async (_n, params, reason, message) => {
      const res = await getToken(env, params, basic(await saToken(env)));
      expect(res.statusCode).toBe(400);
      expect(res.json()).toEqual(dockerError("UNSUPPORTED", reason, message));
    },
  );

  it("an unknown path is a JSON 404 that does not echo the path", async () => {
    const res = await env.app.inject({ method: "GET", url: "/v2/secret-in-path" });
    expect(res.statusCode).toBe(404);
    expect(res.json()).toEqual(dockerError("UNSUPPORTED", "not_found", "no such endpoint for GET"));
  });
});

describe("POST /token (containerd)", () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await testEnv({}, { now: () => NOW });
  });
  afterAll(async () => env.close());

  const scopes =
    "repository:team-a/app:push,pull repository:team-b/app:pull repository:library/ubuntu:pull,push";

  async function form(
    extra: Array<[string, string]> = [],
    omit: string[] = [],
  ): Promise<Array<[string, string]>> {
    const base: Array<[string, string]> = [
      ["grant_type", "password"],
      ["client_id", "containerd-client"],
      ["username", "builder"],
      ["password", await saToken(env)],
      ["service", SERVICE],
    ];
    return [...base.filter(([k]) => !omit.includes(k)), ...extra];
  }

  function oauthError(error: string, description: string) {
    return { error, error_description: description };
  }

  it("answers exactly access_token, token_type, scope, expires_in, issued_at (space-joined scope field)", async () => {
    const res = await postForm(env, await form([["scope", scopes]]));
    expect(res.statusCode).toBe(200);
    const body = res.json();
    expect(body).toEqual({
      access_token: body.access_token,
      token_type: "Bearer",
      scope: "repository:team-a/app:pull,push repository:library/ubuntu:pull",
      expires_in: 300,
      issued_at: ISSUED_AT,
    });
    expect(res.headers["cache-control"]).toBe("no-store");
    expect(decodeJwt(body.access_token).access).toEqual([
      { type: "repository", name: "team-a/app", actions: ["pull", "push"] },
      { type: "repository", name: "team-b/app", actions: [] },
      { type: "repository", name: "library/ubuntu", actions: ["pull"] },
    ]);
  });

  it("repeated scope fields (containers/image) give the same result", async () => {
    const res = await postForm(
      env,
      await form(scopes.split(" ").map((s) => ["scope", s] as [string, string])),
    );
    expect(res.statusCode).toBe(200);
    expect(res.json().scope).toBe("repository:team-a/app:pull,push repository:library/ubuntu:pull");
  });

  it("a login without scope gets an empty scope string", async () => {
    const res = await postForm(env, await form());
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ scope: "", token_type: "Bearer", expires_in: 300 });
  });

  it("unsupported grant type", async () => {
    const res = await postForm(env, [
      ...(await form([], ["grant_type"])),
      ["grant_type", "client_credentials"],
    ]);
    expect(res.statusCode).toBe(400);
    expect(res.json()).toEqual(
      oauthError("unsupported_grant_type", 'grant_type "client_credentials" is not supported'),
    );
  });

  it("a refresh_token grant with something that is not a refresh token is refused", async () => {
    const res = await postForm(env, [
      ["grant_type", "refresh_token"],
      ["refresh_token", "x"],
      ["service", SERVICE],
    ]);
    expect({ status: res.statusCode, body: res.json() }).toEqual({
      status: 401,
      body: {
        error: "invalid_grant",
        error_description: "refresh_token is not a refresh token issued by this service",
      },
    });
  });

  it("a JSON body is refused", async () => {
    const res = await env.app.inject({
      method: "POST",
      url: "/token",
      headers: { "content-type": "application/json" },
      payload: JSON.stringify({ grant_type: "password", service: SERVICE, password: "x" }),
    });
    expect(res.statusCode).toBe(400);
    expect(res.json()).toEqual(
      oauthError("invalid_request", "POST /token needs an application/x-www-form-urlencoded body"),
    );
  });

  it("an unknown content type is 415 in RFC 6749 format", async () => {
    const res = await env.app.inject({
      method: "POST",
      url: "/token",
      headers: { "content-type": "application/xml" },
      payload: "<grant/>",
    });
    expect(res.statusCode).toBe(415);
    expect(res.json()).toEqual(oauthError("invalid_request", "unsupported Content-Type for this endpoint"));
  });

  it("missing grant_type", async () => {
    const res = await postForm(env, await form([], ["grant_type"]));
    expect(res.statusCode).toBe(400);
    expect(res.json()).toEqual(oauthError("invalid_request", 'parameter "grant_type" is required'));
  });

  it("missing password", async () => {
    const res = await postForm(env, await form([], ["password"]));
    expect(res.statusCode).toBe(401);
    expect(res.json()).toEqual(
      oauthError("invalid_request", 'parameter "password" (the service-account token) is required'),
    );
    expect(res.headers["www-authenticate"]).toBeUndefined();
  });

  it("repeated password", async () => {
    const res = await postForm(env, await form([["password", "second"]]));
    expect(res.statusCode).toBe(400);
    expect(res.json()).toEqual(oauthError("invalid_request", 'parameter "password" must not be repeated'));
  });

  it("an invalid service-account token is invalid_grant (401)", async () => {
    const res = await postForm(env, [...(await form([], ["password"])), ["password", "not-a-jwt"]]);
    expect(res.statusCode).toBe(401);
    expect(res.json()).toEqual(
      oauthError("invalid_grant", "credential is not a JWT (expected header.payload.signature)"),
    );
  });

  it("unknown service", async () => {
    const res = await postForm(env, [...(await form([], ["service"])), ["service", "nope"]]);
    expect(res.statusCode).toBe(400);
    expect(res.json()).toEqual(oauthError("invalid_request", `unknown service "nope": not served here`));
  });

  it("duplicate service", async () => {
    const res = await postForm(env, await form([["service", "other"]]));
    expect(res.statusCode).toBe(400);
    expect(res.json()).toEqual(oauthError("invalid_request", 'parameter "service" must not be repeated'));
  });

  it("invalid scope", async () => {
    const res = await postForm(env, await form([["scope", "repository:foo"]]));
    expect(res.statusCode).toBe(400);
    expect(res.json()).toEqual(
      oauthError("invalid_scope", 'scope "repository:foo" is not type:name:actions'),
    );
  });
});

describe("signing keys and health endpoints", () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await testEnv({}, { now: () => NOW });
  });
  afterAll(async () => env.close());

  it("/readyz is 503 before the cluster keys are loaded", async () => {
    const res = await env.app.inject({ method: "GET", url: "/readyz" });
    expect(res.statusCode).toBe(503);
    expect(res.json()).toMatchObject({
      status: "not ready",
      clusters: { test: { ready: false, keys: 0, stale: false } },
      cache: { kind: "memory", state: "ok" },
    });
  });

  it("/.well-known/jwks.json publishes the signing key with the token's kid and x5c", async () => {
    const minted = await getToken(env, [["service", SERVICE]], basic(await saToken(env)));
    const token = minted.json().token as string;
    const header = decodeProtectedHeader(token);
    const res = await env.app.inject({ method: "GET", url: "/.well-known/jwks.json" });
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-type"]).toMatch(/^application\/jwk-set\+json/);
    const { keys } = res.json() as { keys: Array<Record<string, unknown>> };
    expect(keys).toHaveLength(1);
    const jwk = keys[0]!;
    expect(jwk).toMatchObject({
      kty: "EC",
      crv: "P-256",
      kid: header.kid,
      alg: "ES256",
      use: "sig",
      x5c: header.x5c,
    });
    expect(jwk.d).toBeUndefined();
    const { payload } = await jwtVerify(token, await importJWK(jwk as JWK, "ES256"), {
      currentDate: new Date(NOW),
    });
    expect(payload.aud).toBe(SERVICE);
  });

  it("/readyz is 200 once the keys are loaded", async () => {
    const res = await env.app.inject({ method: "GET", url: "/readyz" });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({
      status: "ready",
      clusters: { test: { ready: true, keys: 1, stale: false } },
      cache: { kind: "memory", state: "ok" },
    });
    expect(res.headers["cache-control"]).toBe("no-store");
  });

  it("/healthz is 200", async () => {
    const res = await env.app.inject({ method: "GET", url: "/healthz" });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ status: "ok" });
  });
});

describe("secrets never reach the logs", () => {
  it("no log line holds a service-account token, a minted token, or any 20+ character piece of one", async () => {
    const { logger, lines } = capturingLogger("trace");
    const env = await testEnv({}, { logger, now: () => NOW });
    try {
      const good = await saToken(env);
      const bearer = await saToken(env, { serviceAccount: "pusher" });
      const posted = await saToken(env, { namespace: "team-b" });
      const expired = await saToken(env, { nowMs: NOW - 7_200_000 });
      const wrongAudience = await saToken(env, { audiences: ["kubernetes"] });
      const forged = `${good.slice(0, good.lastIndexOf(".") + 1)}${"A".repeat(342)}`;
      const secrets = [good, bearer, posted, expired, wrongAudience, forged];

      const minted: string[] = [];
      const ok1 = await getToken(
        env,
        [
          ["service", SERVICE],
          ["scope", "repository:team-a/app:pull"],
        ],
        basic(good),
      );
      const ok2 = await getToken(env, [["service", SERVICE]], `Bearer ${bearer}`);
      const ok3 = await postForm(env, [
        ["grant_type", "password"],
        ["username", "x"],
        ["password", posted],
        ["service", SERVICE],
        ["scope", "repository:team-b/app:push"],
      ]);
      expect([ok1.statusCode, ok2.statusCode, ok3.statusCode]).toEqual([200, 200, 200]);
      minted.push(ok1.json().token, ok2.json().token, ok3.json().access_token);

      const bad = [
        await getToken(env, [["service", SERVICE]], basic(expired)),
        await getToken(env, [["service", SERVICE]], basic(wrongAudience)),
        await getToken(env, [["service", SERVICE]], basic(forged)),
        await getToken(env, [["service", SERVICE]], `Basic ${Buffer.from(good).toString("base64")}`),
        await getToken(env, [["service", "nope"]], basic(good)),
        await getToken(
          env,
          [
            ["service", SERVICE],
            ["scope", "bad"],
          ],
          basic(good),
        ),
        await getToken(env, [
          ["service", SERVICE],
          ["password", good],
          ["token", good],
        ]),
        await postForm(env, [
          ["grant_type", "client_credentials"],
          ["password", good],
          ["service", SERVICE],
        ]),
        await postForm(env, [
          ["grant_type", "password"],
          ["password", expired],
          ["service", SERVICE],
        ]),
        await env.app.inject({
          method: "POST",
          url: "/token",
          headers: { "content-type": "application/json", authorization: basic(good) },
          payload: JSON.stringify({ password: good }),
        }),
        await env.app.inject({
          method: "GET",
          url: "/token/extra",
          headers: { authorization: `Bearer ${good}` },
        }),
      ];
      expect(bad.map((r) => r.statusCode)).toEqual([401, 401, 401, 401, 400, 400, 401, 400, 401, 400, 404]);

      // The logger really captured these requests (an empty log would pass the checks below vacuously).
      const log = lines.join("");
      expect(lines.length).toBeGreaterThanOrEqual(bad.length + minted.length);
      for (const t of minted) expect(log).toContain(decodeJwt(t).jti as string);
      expect(log).toContain('"msg":"request rejected"');

      const pieces = [...secrets, ...minted, ...secrets.map((s) => Buffer.from(`x:${s}`).toString("base64"))];
      for (const secret of pieces) {
        for (let i = 0; i + 20 <= secret.length; i += 1) {
          const piece = secret.slice(i, i + 20);
          const hit = lines.find((line) => line.includes(piece));
          expect(hit, `log line contains a 20-character piece of a secret: ${piece}`).toBeUndefined();
        }
      }
    } finally {
      await env.close();
    }
  });
});

// A credential pasted into the URL path (a misconfigured realm URL) must not reach the access line: the request serializer logs the matched route pattern, never the path as sent.
describe("secrets in the URL path", () => {
  it("a token in the request path is not logged", async () => {
    const { logger, lines } = capturingLogger("trace");
    const env = await testEnv({}, { logger, now: () => NOW });
    try {
      const sa = await saToken(env);
      const res = await env.app.inject({ method: "GET", url: `/token/${sa}` });
      expect(res.statusCode).toBe(404);
      // The request IS logged (its access line, with the 404), so the next check has something to read.
      const accessLines = lines.filter((line) => line.includes('"statusCode":404'));
      expect(accessLines).toHaveLength(1);
      expect(accessLines[0]).toContain('"method":"GET"');
      expect(lines.join("")).not.toContain(sa.slice(0, 40));
    } finally {
      await env.close();
    }
  });
});
