/**
 * The full OAuth2 side of the realm through `app.inject()`: refresh tokens (`offline_token=true`,
 * `access_type=offline`), the `refresh_token` grant (never rotated), RFC 8693 token exchange, and the
 * RFC 6749 §5.2 / RFC 8693 §2.2.2 errors, with exact bodies and a frozen clock.
 */
import { decodeJwt, decodeProtectedHeader } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NOW, NOW_S } from "../helpers/clock.js";
import {
  CP_AUDIENCE,
  cpRequest,
  credentialProviderOverrides,
  dockerError,
  OTHER_SERVICE,
  oauthError,
  type SaClaims,
} from "../helpers/credential-provider.js";
import { basic, SERVICE, saTokenMaker, type TestEnv, testEnv } from "../helpers/fixtures.js";

/** Frozen "now": 2026-11-30T12:00:00Z. */
const ISSUED_AT = "2026-11-30T12:00:00Z";
const TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt";
const ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token";

const saToken = saTokenMaker("oauth");

function get(env: TestEnv, params: Array<[string, string]>, authorization?: string) {
  return env.app.inject({
    method: "GET",
    url: `/token?${new URLSearchParams(params).toString()}`,
    headers: authorization === undefined ? {} : { authorization },
  });
}

function post(env: TestEnv, params: Array<[string, string]>) {
  return env.app.inject({
    method: "POST",
    url: "/token",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    payload: new URLSearchParams(params).toString(),
  });
}

async function offlineRefreshToken(env: TestEnv, token: string): Promise<string> {
  const res = await get(
    env,
    [
      ["service", SERVICE],
      ["offline_token", "true"],
      ["client_id", "docker"],
    ],
    basic(token),
  );
  expect(res.statusCode, res.body).toBe(200);
  return res.json().refresh_token as string;
}

describe("refresh tokens: offline_token=true (GET) and access_type=offline (POST)", () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await testEnv(await credentialProviderOverrides(), { now: () => NOW });
  });
  afterAll(async () => env.close());

  it("GET offline_token=true answers token, access_token, expires_in, issued_at and refresh_token", async () => {
    const token = await saToken(env);
    const res = await get(
      env,
      [
        ["service", SERVICE],
        ["scope", "repository:team-a/app:pull"],
        ["offline_token", "true"],
        ["client_id", "docker"],
        ["account", "x"],
      ],
      basic(token),
    );
    expect(res.statusCode).toBe(200);
    const body = res.json();
    expect(body).toEqual({
      token: body.token,
      access_token: body.token,
      expires_in: 300,
      issued_at: ISSUED_AT,
      refresh_token: expect.any(String),
    });
    expect(decodeProtectedHeader(body.refresh_token).typ).toBe("rte-refresh+jwt");
    const sa = decodeJwt(token) as unknown as SaClaims;
    const claims = decodeJwt(body.refresh_token);
    expect(claims).toMatchObject({
      iss: "urn:registry-token-exchange:refresh-token:registry-token-exchange",
      aud: `urn:registry-token-exchange:refresh-token:${SERVICE}`,
      sub: sa.sub,
      iat: NOW_S,
      // bound to the service-account token's lifetime: never outlives it
      exp: sa.exp,
      rte: { cluster: "test", namespace: "team-a", serviceAccount: sa["kubernetes.io"].serviceaccount },
    });
    expect(claims.access).toBeUndefined();
  });

  it("no refresh_token without offline_token=true (or with offline_token=false)", async () => {
    const token = await saToken(env);
    for (const extra of [[], [["offline_token", "false"]]] as Array<Array<[string, string]>>) {
      const res = await get(env, [["service", SERVICE], ...extra], basic(token));
      expect(Object.keys(res.json()).sort()).toEqual(["access_token", "expires_in", "issued_at", "token"]);
    }
  });

  it("POST password with access_type=offline adds refresh_token; without it, none", async () => {
    const token = await saToken(env);
    const base: Array<[string, string]> = [
      ["grant_type", "password"],
      ["client_id", "containerd-client"],
      ["username", "x"],
      ["password", token],
      ["service", SERVICE],
      ["scope", "repository:team-a/app:pull"],
    ];
    const offline = await post(env, [...base, ["access_type", "offline"]]);
    expect(offline.statusCode).toBe(200);
    expect(offline.json()).toEqual({
      access_token: offline.json().access_token,
      token_type: "Bearer",
      scope: "repository:team-a/app:pull",
      expires_in: 300,
      issued_at: ISSUED_AT,
      refresh_token: expect.any(String),
    });
    const online = await post(env, base);
    expect(online.json().refresh_token).toBeUndefined();
  });

  it("a refresh token derived from an exchange credential expires with that credential", async () => {
    const cpToken = await saToken(env, { audiences: [CP_AUDIENCE], ttlSeconds: 900 });
    const cp = await env.app.inject({
      method: "POST",
      url: "/v1/credential-provider",
      headers: { "content-type": "application/json" },
      payload: JSON.stringify(cpRequest(cpToken)),
    });
    const password = Object.values(cp.json().auth as Record<string, { password: string }>)[0]!.password;
    const refresh = await offlineRefreshToken(env, password);
    expect(decodeJwt(refresh).exp).toBe(NOW_S + 900);
  });
});

describe("grant_type=refresh_token (docker identitytoken, containers/image, buildkit)", () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await testEnv(await credentialProviderOverrides(), { now: () => NOW });
  });
  afterAll(async () => env.close());

  it("issues access tokens under the same policy and hands back the same refresh token (never rotated)", async () => {
    const token = await saToken(env);
    const refresh = await offlineRefreshToken(env, token);
    for (let i = 0; i < 2; i++) {
      const res = await post(env, [
        ["grant_type", "refresh_token"],
        ["refresh_token", refresh],
        ["service", SERVICE],
        ["client_id", "buildkit-client"],
        // repeated scope fields (containers/image) and a space-joined one (docker) together
        ["scope", "repository:team-a/app:pull,push"],
        ["scope", "repository:team-b/app:pull repository:library/alpine:pull"],
      ]);
      expect(res.statusCode, res.body).toBe(200);
      expect(res.json()).toEqual({
        access_token: res.json().access_token,
        token_type: "Bearer",
        scope: "repository:team-a/app:pull,push repository:library/alpine:pull",
        expires_in: 300,
        issued_at: ISSUED_AT,
        refresh_token: refresh,
      });
      const claims = decodeJwt(res.json().access_token);
      expect(claims.sub).toBe(decodeJwt(token).sub);
      expect(claims.access).toEqual([
        { type: "repository", name: "team-a/app", actions: ["pull", "push"] },
        { type: "repository", name: "team-b/app", actions: [] },
        { type: "repository", name: "library/alpine", actions: ["pull"] },
      ]);
    }
  });

  it("a refresh token is not a password (GET Basic, POST password) and a password is not a refresh token", async () => {
    const token = await saToken(env);
    const refresh = await offlineRefreshToken(env, token);
    const asBasic = await get(env, [["service", SERVICE]], basic(refresh));
    expect(asBasic.statusCode).toBe(401);
    expect(asBasic.json()).toEqual(
      dockerError(
        "UNAUTHORIZED",
        "malformed_credentials",
        "a refresh token is accepted only as refresh_token with grant_type=refresh_token",
      ),
    );
    const asPassword = await post(env, [
      ["grant_type", "password"],
      ["password", refresh],
      ["service", SERVICE],
    ]);
    expect(asPassword.statusCode).toBe(401);
    expect(asPassword.json()).toEqual(
      oauthError(
        "invalid_grant",
        "a refresh token is accepted only as refresh_token with grant_type=refresh_token",
      ),
    );
    const saAsRefresh = await post(env, [
      ["grant_type", "refresh_token"],
      ["refresh_token", token],
      ["service", SERVICE],
    ]);
    expect(saAsRefresh.statusCode).toBe(401);
    expect(saAsRefresh.json()).toEqual(
      oauthError("invalid_grant", "refresh_token is not a refresh token issued by this service"),
    );
  });

  it("is bound to its service: refused at another registry with invalid_grant", async () => {
    const refresh = await offlineRefreshToken(env, await saToken(env));
    const res = await post(env, [
      ["grant_type", "refresh_token"],
      ["refresh_token", refresh],
      ["service", OTHER_SERVICE],
    ]);
    expect(res.statusCode).toBe(401);
    expect(res.json()).toEqual(
      oauthError("invalid_grant", "refresh token was issued for another registry service"),
    );
  });

  it("never outlives the service-account token: refused once it has expired", async () => {
    const refresh = await offlineRefreshToken(env, await saToken(env, { ttlSeconds: 600 }));
    const later = await testEnv(await credentialProviderOverrides(), { now: () => NOW + 700_000 });
    try {
      const res = await post(later, [
        ["grant_type", "refresh_token"],
        ["refresh_token", refresh],
        ["service", SERVICE],
      ]);
      expect(res.statusCode).toBe(401);
      expect(res.json()).toEqual(oauthError("invalid_grant", "refresh token has expired"));
    } finally {
      await later.close();
    }
  });

  it("a missing refresh_token is invalid_request", async () => {
    const res = await post(env, [
      ["grant_type", "refresh_token"],
      ["service", SERVICE],
    ]);
    expect(res.statusCode).toBe(400);
    expect(res.json()).toEqual(
      oauthError(
        "invalid_request",
        'parameter "refresh_token" (a refresh token from offline_token=true or access_type=offline) is required',
      ),
    );
  });
});

describe("RFC 8693 token exchange", () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await testEnv(await credentialProviderOverrides(), { now: () => NOW });
  });
  afterAll(async () => env.close());

  const exchangeForm = (subject: string, extra: Array<[string, string]> = []): Array<[string, string]> => [
    ["grant_type", TOKEN_EXCHANGE],
    ["subject_token", subject],
    ["subject_token_type", JWT_TYPE],
    ...extra,
  ];

  it("answers access_token, issued_token_type, token_type, expires_in, scope", async () => {
    const token = await saToken(env);
    const res = await post(
      env,
      exchangeForm(token, [
        ["audience", SERVICE],
        ["scope", "repository:team-a/app:pull,push repository:team-b/app:pull"],
        ["requested_token_type", ACCESS_TOKEN_TYPE],
      ]),
    );
    expect(res.statusCode, res.body).toBe(200);
    expect(res.headers["cache-control"]).toBe("no-store");
    expect(res.json()).toEqual({
      access_token: res.json().access_token,
      issued_token_type: ACCESS_TOKEN_TYPE,
      token_type: "Bearer",
      expires_in: 300,
      scope: "repository:team-a/app:pull,push",
    });
    const claims = decodeJwt(res.json().access_token);
    expect(claims).toMatchObject({ iss: "registry-token-exchange", aud: SERVICE, sub: decodeJwt(token).sub });
  });

  it("takes repeated scope fields, `service` in place of `audience`, and an exchange credential as subject", async () => {
    const cpToken = await saToken(env, { audiences: [CP_AUDIENCE] });
    const cp = await env.app.inject({
      method: "POST",
      url: "/v1/credential-provider",
      headers: { "content-type": "application/json" },
      payload: JSON.stringify(cpRequest(cpToken)),
    });
    const credential = Object.values(cp.json().auth as Record<string, { password: string }>)[0]!.password;
    const res = await post(
      env,
      exchangeForm(credential, [
        ["service", SERVICE],
        ["scope", "repository:team-a/app:pull"],
        ["scope", "repository:library/alpine:pull"],
      ]),
    );
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json().scope).toBe("repository:team-a/app:pull repository:library/alpine:pull");
  });

  it.each([
    [
      "missing subject_token",
      400,
      "invalid_request",
      'parameter "subject_token" (the service-account token) is required',
      [
        ["grant_type", TOKEN_EXCHANGE],
        ["subject_token_type", JWT_TYPE],
        ["audience", SERVICE],
      ],
    ],
    [
      "missing subject_token_type",
      400,
      "invalid_request",
      `parameter "subject_token_type" (${JWT_TYPE}) is required`,
      [
        ["grant_type", TOKEN_EXCHANGE],
        ["subject_token", "x"],
        ["audience", SERVICE],
      ],
    ],
    [
      "unsupported subject_token_type",
      400,
      "invalid_request",
      `subject_token_type "${ACCESS_TOKEN_TYPE}" is not supported (use ${JWT_TYPE})`,
      [
        ["grant_type", TOKEN_EXCHANGE],
        ["subject_token", "x"],
        ["subject_token_type", ACCESS_TOKEN_TYPE],
        ["audience", SERVICE],
      ],
    ],
    [
      "unsupported requested_token_type",
      400,
      "invalid_request",
      `requested_token_type "urn:ietf:params:oauth:token-type:id_token" is not supported (this service issues ${ACCESS_TOKEN_TYPE})`,
      [
        ["grant_type", TOKEN_EXCHANGE],
        ["subject_token", "x"],
        ["subject_token_type", JWT_TYPE],
        ["audience", SERVICE],
        ["requested_token_type", "urn:ietf:params:oauth:token-type:id_token"],
      ],
    ],
    [
      "actor_token",
      400,
      "invalid_request",
      "actor_token (delegation) is not supported",
      [
        ["grant_type", TOKEN_EXCHANGE],
        ["subject_token", "x"],
        ["subject_token_type", JWT_TYPE],
        ["audience", SERVICE],
        ["actor_token", "y"],
      ],
    ],
    [
      "missing audience",
      400,
      "invalid_request",
      'parameter "audience" (the registry service) is required',
      [
        ["grant_type", TOKEN_EXCHANGE],
        ["subject_token", "x"],
        ["subject_token_type", JWT_TYPE],
      ],
    ],
    [
      "audience and service differ",
      400,
      "invalid_request",
      'parameters "audience" and "service" name different registries',
      [
        ["grant_type", TOKEN_EXCHANGE],
        ["subject_token", "x"],
        ["subject_token_type", JWT_TYPE],
        ["audience", SERVICE],
        ["service", OTHER_SERVICE],
      ],
    ],
    [
      "unknown audience",
      400,
      "invalid_target",
      `unknown service "nope.example.com": not served here`,
      [
        ["grant_type", TOKEN_EXCHANGE],
        ["subject_token", "x"],
        ["subject_token_type", JWT_TYPE],
        ["audience", "nope.example.com"],
      ],
    ],
    [
      "two audiences",
      400,
      "invalid_target",
      "exactly one audience (the registry service) is supported",
      [
        ["grant_type", TOKEN_EXCHANGE],
        ["subject_token", "x"],
        ["subject_token_type", JWT_TYPE],
        ["audience", SERVICE],
        ["audience", OTHER_SERVICE],
      ],
    ],
    [
      "resource",
      400,
      "invalid_target",
      'resource is not supported: name the registry service in "audience"',
      [
        ["grant_type", TOKEN_EXCHANGE],
        ["subject_token", "x"],
        ["subject_token_type", JWT_TYPE],
        ["audience", SERVICE],
        ["resource", "https://registry.test/"],
      ],
    ],
    [
      "not a JWT",
      400,
      "invalid_request",
      "subject_token is not acceptable: credential is not a JWT (expected header.payload.signature)",
      [
        ["grant_type", TOKEN_EXCHANGE],
        ["subject_token", "x"],
        ["subject_token_type", JWT_TYPE],
        ["audience", SERVICE],
      ],
    ],
    [
      "invalid scope",
      400,
      "invalid_scope",
      'scope "repository:x" is not type:name:actions',
      [
        ["grant_type", TOKEN_EXCHANGE],
        ["subject_token", "x"],
        ["subject_token_type", JWT_TYPE],
        ["audience", SERVICE],
        ["scope", "repository:x"],
      ],
    ],
  ] as Array<[string, number, string, string, Array<[string, string]>]>)(
    "%s -> %i %s",
    async (_name, status, error, description, form) => {
      const res = await post(env, form);
      expect(res.statusCode).toBe(status);
      expect(res.json()).toEqual(oauthError(error, description));
    },
  );

  it("an expired or wrong-audience subject_token is invalid_request (RFC 8693 §2.2.2), 400", async () => {
    const expired = await saToken(env, { nowMs: NOW - 7_200_000 });
    const res = await post(env, exchangeForm(expired, [["audience", SERVICE]]));
    expect(res.statusCode).toBe(400);
    expect(res.json()).toEqual(
      oauthError("invalid_request", "subject_token is not acceptable: service-account token has expired"),
    );
    const cpOnly = await saToken(env, { audiences: [CP_AUDIENCE] });
    const wrong = await post(env, exchangeForm(cpOnly, [["audience", SERVICE]]));
    expect(wrong.statusCode).toBe(400);
    expect(wrong.json().error).toBe("invalid_request");
  });
});

describe("POST /token: grant types and content types", () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await testEnv(await credentialProviderOverrides(), { now: () => NOW });
  });
  afterAll(async () => env.close());

  it.each(["client_credentials", "authorization_code", "urn:ietf:params:oauth:grant-type:jwt-bearer"])(
    "grant_type=%s -> 400 unsupported_grant_type",
    async (grant) => {
      const res = await post(env, [
        ["grant_type", grant],
        ["service", SERVICE],
      ]);
      expect(res.statusCode).toBe(400);
      expect(res.json()).toEqual(
        oauthError("unsupported_grant_type", `grant_type "${grant}" is not supported`),
      );
    },
  );

  it("a JSON body -> 400 invalid_request; a body fastify cannot parse -> 415 invalid_request", async () => {
    const json = await env.app.inject({
      method: "POST",
      url: "/token",
      headers: { "content-type": "application/json" },
      payload: JSON.stringify({ grant_type: TOKEN_EXCHANGE, subject_token: "x" }),
    });
    expect(json.statusCode).toBe(400);
    expect(json.json()).toEqual(
      oauthError("invalid_request", "POST /token needs an application/x-www-form-urlencoded body"),
    );
    const text = await env.app.inject({
      method: "POST",
      url: "/token",
      headers: { "content-type": "application/xml" },
      payload: "grant_type=password",
    });
    expect(text.statusCode).toBe(415);
    expect(text.json().error).toBe("invalid_request");
  });
});
