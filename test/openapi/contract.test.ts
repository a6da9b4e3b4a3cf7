/**
 * The API contract and the code cannot drift: the spec is a valid OpenAPI 3.1 document whose examples
 * match its own schemas, `GET /openapi.json` serves it, and real responses of every endpoint (success and
 * every error family) produced through `app.inject` match the documented status, headers and body schema.
 * The last test checks that every response the spec documents was actually produced by some test here.
 */
import { readFileSync } from "node:fs";
import { Readable } from "node:stream";
import { Validator } from "@seriousme/openapi-schema-validator";
import { Ajv2020 } from "ajv/dist/2020.js";
import type { FastifyInstance } from "fastify";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildApp } from "../../src/app.js";
import type { CacheStore } from "../../src/cache/store.js";
import { type LocalIssuer, startLocalIssuerServer } from "../../src/local/issuer.js";
import { AUDIENCE, basic, SERVICE, type TestEnv, testConfig, testEnv } from "../helpers/fixtures.js";
import {
  addFormats,
  documentedResponses,
  expectMatchesSpec,
  spec,
  specCoverage,
} from "../helpers/openapi.js";

type Json = Record<string, unknown>;

/** The audience kubelet requests for the credential provider (kept apart from the registry audience). */
const CP_AUDIENCE = "registry-token-exchange";
/** Config overrides that enable `/v1/credential-provider`. */
const WITH_CP = { credentialProvider: { audiences: [CP_AUDIENCE] } };

/** A kubelet `CredentialProviderRequest` for `image`. */
function cpRequest(image: string, serviceAccountToken: string): Json {
  return {
    apiVersion: "credentialprovider.kubelet.k8s.io/v1",
    kind: "CredentialProviderRequest",
    image,
    serviceAccountToken,
    serviceAccountAnnotations: {},
  };
}

/** POSTs a JSON body to `/v1/credential-provider`. */
function postCp(app: FastifyInstance, body: unknown, contentType = "application/json") {
  return app.inject({
    method: "POST",
    url: "/v1/credential-provider",
    headers: { "content-type": contentType },
    payload: typeof body === "string" ? body : JSON.stringify(body),
  });
}

/**
 * Documented responses no test here can produce, each with its reason. Keep this list short: every entry
 * is a place where spec and code could drift unnoticed.
 */
const NOT_PRODUCED: Record<string, string> = {};

describe("the OpenAPI document", () => {
  it("is a valid OpenAPI 3.1 document", async () => {
    const validator = new Validator();
    const result = await validator.validate(structuredClone(spec));
    expect(result.errors).toBeUndefined();
    expect(result.valid).toBe(true);
    expect(validator.version).toBe("3.1");
  });

  it("has examples that match their own schemas", () => {
    const ajv = addFormats(new Ajv2020({ strict: false, allErrors: true }));
    ajv.addSchema(spec, "urn:rte:spec");
    let checked = 0;
    const walk = (node: unknown, pointer: string) => {
      if (node === null || typeof node !== "object") return;
      const o = node as Json;
      if (o.schema && typeof o.schema === "object" && (o.example !== undefined || o.examples)) {
        const validate = ajv.compile({ $ref: `urn:rte:spec${pointer}/schema` });
        const examples =
          o.example !== undefined
            ? [o.example]
            : Object.values(o.examples as Record<string, { value?: unknown; $ref?: string }>).map(
                (e) => e.value,
              );
        for (const example of examples) {
          // Form bodies and header/parameter examples are strings on the wire; JSON ones are checked as is.
          if (pointer.includes("x-www-form-urlencoded")) continue;
          expect(validate(example), `${pointer}: ${ajv.errorsText(validate.errors)}`).toBe(true);
          checked++;
        }
      }
      for (const [k, v] of Object.entries(o)) {
        walk(v, `${pointer}/${k.replaceAll("~", "~0").replaceAll("/", "~1")}`);
      }
    };
    walk(spec, "#");
    expect(checked).toBeGreaterThan(15);
  });

  it("lists exactly the error reasons of src/errors.ts", () => {
    const source = readFileSync(new URL("../../src/errors.ts", import.meta.url), "utf8");
    const union = source.slice(
      source.indexOf("export type ErrorCode"),
      source.indexOf(";", source.indexOf("export type ErrorCode")),
    );
    const codes = [...union.matchAll(/\|\s*"([a-z_]+)"/g)].map((m) => m[1]).sort();
    const schemas = (spec.components as Json).schemas as Record<string, { enum?: string[] }>;
    expect(codes.length).toBeGreaterThan(20);
    expect([...(schemas.ErrorReason!.enum ?? [])].sort()).toEqual(codes);
  });

  it("documents every route the app registers", async () => {
    const env = await testEnv();
    try {
      const routes = new Set<string>();
      const printed = env.app.printRoutes({ commonPrefix: false });
      for (const line of printed.split("\n")) {
        const m = line.match(/([^\s─└├│]+) \(([A-Z, ]+)\)/);
        if (m) for (const method of m[2]!.split(", ")) routes.add(`${method} ${m[1]}`);
      }
      expect(routes.size).toBeGreaterThan(5);
      const documented = new Set(
        Object.entries(spec.paths).flatMap(([path, item]) =>
          Object.keys(item).map((method) => `${method.toUpperCase()} ${path}`),
        ),
      );
      const undocumented = [...routes].filter((r) => !r.startsWith("HEAD ") && !documented.has(r));
      expect(undocumented).toEqual([]);
    } finally {
      await env.close();
    }
  });
});

describe("GET /openapi.json", () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await testEnv();
  });
  afterAll(async () => env.close());

  it("serves the YAML document as JSON", async () => {
    const res = await env.app.inject({ method: "GET", url: "/openapi.json" });
    expectMatchesSpec("GET", "/openapi.json", res);
    expect(res.json()).toEqual(spec);
  });
});

describe("responses match the contract", () => {
  let env: TestEnv;
  let sa: string;
  beforeAll(async () => {
    env = await testEnv(WITH_CP);
    sa = await env.issuer.mint({ namespace: "team-a", serviceAccount: "builder", audiences: [AUDIENCE] });
  });
  afterAll(async () => env.close());

  const get = (url: string, headers: Record<string, string> = {}) =>
    env.app.inject({ method: "GET", url, headers });
  const post = (
    form: Record<string, string | string[]>,
    contentType = "application/x-www-form-urlencoded",
  ) => {
    const body = new URLSearchParams();
    for (const [k, v] of Object.entries(form)) for (const item of [v].flat()) body.append(k, item);
    return env.app.inject({
      method: "POST",
      url: "/token",
      headers: { "content-type": contentType },
      payload: body.toString(),
    });
  };

  it("GET /token: a token, a login, and the granted subset", async () => {
    for (const url of [
      `/token?service=${SERVICE}&scope=repository:team-a/app:pull,push&scope=repository:team-b/app:pull`,
      `/token?service=${SERVICE}`,
      `/token?service=${SERVICE}&scope=&account=x&client_id=docker`,
    ]) {
      const res = await get(url, { authorization: basic(sa) });
      expect(res.statusCode).toBe(200);
      expectMatchesSpec("GET", url, res);
    }
    const bearer = await get(`/token?service=${SERVICE}&scope=registry:catalog:*`, {
      authorization: `Bearer ${sa}`,
    });
    expect(bearer.statusCode).toBe(200);
    expectMatchesSpec("GET", "/token", bearer);
  });

  it("GET /token: 400 and 401 families", async () => {
    const cases: Array<[string, Record<string, string>, number, string]> = [
      ["/token?scope=repository:a:pull", { authorization: basic(sa) }, 400, "invalid_request"],
      ["/token?service=nope", { authorization: basic(sa) }, 400, "unknown_service"],
      [`/token?service=${SERVICE}&scope=nonsense`, { authorization: basic(sa) }, 400, "invalid_scope"],
      [`/token?service=${SERVICE}`, {}, 401, "missing_credentials"],
      [`/token?service=${SERVICE}`, { authorization: basic("not-a-jwt") }, 401, "malformed_token"],
      [`/token?service=${SERVICE}`, { authorization: "Basic !!!" }, 401, "malformed_credentials"],
    ];
    for (const [url, headers, status, reason] of cases) {
      const res = await get(url, headers);
      expect(res.statusCode, url).toBe(status);
      const body = expectMatchesSpec("GET", url, res) as { errors: Array<{ detail: { reason: string } }> };
      expect(body.errors[0]!.detail.reason).toBe(reason);
    }
    const expired = await env.issuer.mint({
      namespace: "team-a",
      serviceAccount: "builder",
      audiences: [AUDIENCE],
      nowMs: Date.now() - 7200_000,
      ttlSeconds: 600,
    });
    const res = await get(`/token?service=${SERVICE}`, { authorization: basic(expired) });
    expect(res.statusCode).toBe(401);
    expect((expectMatchesSpec("GET", "/token", res) as Json).errors).toMatchObject([
      { detail: { reason: "token_expired" } },
    ]);
    const wrongAudience = await env.issuer.mint({
      namespace: "team-a",
      serviceAccount: "builder",
      audiences: ["someone-else"],
    });
    const res2 = await get(`/token?service=${SERVICE}`, { authorization: basic(wrongAudience) });
    expect(res2.statusCode).toBe(401);
    expect((expectMatchesSpec("GET", "/token", res2) as Json).errors).toMatchObject([
      { detail: { reason: "invalid_audience" } },
    ]);
  });

  it("GET /v1/explain: a decision, and the GET /token error families", async () => {
    const url = `/v1/explain?service=${SERVICE}&scope=repository:team-a/app:pull,push&scope=repository:team-b/app:pull`;
    const res = await get(url, { authorization: basic(sa) });
    expect(res.statusCode).toBe(200);
    expect(expectMatchesSpec("GET", url, res)).toMatchObject({
      service: SERVICE,
      identity: { namespace: "team-a", serviceAccount: { name: "builder" } },
    });
    expect(res.body).not.toContain(sa);
    for (const [u, headers, status] of [
      ["/v1/explain?scope=repository:a:pull", { authorization: basic(sa) }, 400],
      [`/v1/explain?service=${SERVICE}`, {}, 401],
      [`/v1/explain?service=${SERVICE}`, { authorization: basic("garbage") }, 401],
    ] as const) {
      const r = await get(u, headers);
      expect(r.statusCode, u).toBe(status);
      expectMatchesSpec("GET", u, r);
    }
  });

  it("POST /token: password grant", async () => {
    const res = await post({
      grant_type: "password",
      service: SERVICE,
      client_id: "containerd-client",
      username: "x",
      password: sa,
      scope: ["repository:team-a/app:pull repository:library/alpine:pull", "repository:team-b/app:push"],
    });
    expect(res.statusCode).toBe(200);
    const body = expectMatchesSpec("POST", "/token", res) as Json;
    expect(body.scope).toBe("repository:team-a/app:pull repository:library/alpine:pull");
  });

  it("POST /token: refresh_token grant and RFC 8693 token exchange", async () => {
    const offline = await get(`/token?service=${SERVICE}&offline_token=true`, { authorization: basic(sa) });
    expect(offline.statusCode).toBe(200);
    const { refresh_token: refreshToken } = expectMatchesSpec("GET", "/token", offline) as Json;
    expect(typeof refreshToken).toBe("string");
    const refreshed = await post({
      grant_type: "refresh_token",
      service: SERVICE,
      refresh_token: refreshToken as string,
      scope: "repository:team-a/app:pull",
    });
    expect(refreshed.statusCode).toBe(200);
    expect(expectMatchesSpec("POST", "/token", refreshed)).toMatchObject({ refresh_token: refreshToken });
    const withOffline = await post({
      grant_type: "password",
      service: SERVICE,
      password: sa,
      access_type: "offline",
    });
    expect(withOffline.statusCode).toBe(200);
    expect(expectMatchesSpec("POST", "/token", withOffline)).toHaveProperty("refresh_token");

    const exchanged = await post({
      grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
      subject_token: sa,
      subject_token_type: "urn:ietf:params:oauth:token-type:jwt",
      audience: SERVICE,
      scope: "repository:team-a/app:pull,push",
    });
    expect(exchanged.statusCode).toBe(200);
    expect(expectMatchesSpec("POST", "/token", exchanged)).toMatchObject({
      issued_token_type: "urn:ietf:params:oauth:token-type:access_token",
      scope: "repository:team-a/app:pull,push",
    });
    const cases: Array<[Record<string, string>, string]> = [
      [
        {
          subject_token: "garbage",
          subject_token_type: "urn:ietf:params:oauth:token-type:jwt",
          audience: SERVICE,
        },
        "invalid_request",
      ],
      [
        { subject_token: sa, subject_token_type: "urn:ietf:params:oauth:token-type:jwt", audience: "nope" },
        "invalid_target",
      ],
      [
        {
          subject_token: sa,
          subject_token_type: "urn:ietf:params:oauth:token-type:saml2",
          audience: SERVICE,
        },
        "invalid_request",
      ],
    ];
    for (const [form, error] of cases) {
      const res = await post({ grant_type: "urn:ietf:params:oauth:grant-type:token-exchange", ...form });
      expect(res.statusCode, JSON.stringify(form)).toBe(400);
      expect((expectMatchesSpec("POST", "/token", res) as Json).error).toBe(error);
    }
  });

  it("POST /v1/credential-provider: a credential, and every refusal", async () => {
    const pod = await env.issuer.mint({
      namespace: "team-a",
      serviceAccount: "builder",
      audiences: [CP_AUDIENCE],
    });
    const ok = await postCp(env.app, cpRequest(`${SERVICE}/team-a/app:1.0`, pod));
    expect(ok.statusCode).toBe(200);
    expect(expectMatchesSpec("POST", "/v1/credential-provider", ok)).toMatchObject({
      kind: "CredentialProviderResponse",
      auth: { [SERVICE]: { username: expect.any(String) } },
    });
    const podless = await env.issuer.mint({
      namespace: "team-a",
      serviceAccount: "builder",
      audiences: [CP_AUDIENCE],
      podName: null,
    });
    const cases: Array<[unknown, number, string]> = [
      [{ kind: "CredentialProviderRequest" }, 400, "invalid_request"],
      [cpRequest("not a reference", pod), 400, "invalid_request"],
      [cpRequest(`${SERVICE}/team-a/app:1.0`, sa), 401, "invalid_audience"],
      [cpRequest(`${SERVICE}/team-a/app:1.0`, podless), 401, "missing_claim"],
      [cpRequest(`${SERVICE}/team-b/app:1.0`, pod), 403, "access_denied"],
    ];
    for (const [body, status, reason] of cases) {
      const res = await postCp(env.app, body);
      expect(res.statusCode, JSON.stringify(body).slice(0, 120)).toBe(status);
      const parsed = expectMatchesSpec("POST", "/v1/credential-provider", res) as { errors: Array<Json> };
      expect(parsed.errors[0]).toMatchObject({ detail: { reason } });
    }
    const text = await postCp(env.app, "hello", "text/plain");
    expect(text.statusCode).toBe(415);
    expectMatchesSpec("POST", "/v1/credential-provider", text);
    const huge = await postCp(env.app, cpRequest(`${SERVICE}/team-a/app:1.0`, "x".repeat(70_000)));
    expect(huge.statusCode).toBe(413);
    expectMatchesSpec("POST", "/v1/credential-provider", huge);
  });

  it("POST /v1/credential-provider: 404 when not configured", async () => {
    const plain = await testEnv();
    try {
      const res = await postCp(plain.app, cpRequest(`${SERVICE}/team-a/app:1.0`, sa));
      expect(res.statusCode).toBe(404);
      expectMatchesSpec("POST", "/v1/credential-provider", res);
    } finally {
      await plain.close();
    }
  });

  it("POST /token: 400, 401, 413 and 415 families", async () => {
    const cases: Array<[Record<string, string>, number, string]> = [
      [{ service: SERVICE, password: sa }, 400, "invalid_request"],
      [{ grant_type: "client_credentials", service: SERVICE }, 400, "unsupported_grant_type"],
      [{ grant_type: "password", service: SERVICE, password: "garbage" }, 401, "invalid_grant"],
      [{ grant_type: "password", service: SERVICE, scope: "bad", password: sa }, 400, "invalid_scope"],
    ];
    for (const [form, status, error] of cases) {
      const res = await post(form);
      expect(res.statusCode, JSON.stringify(form)).toBe(status);
      expect((expectMatchesSpec("POST", "/token", res) as Json).error).toBe(error);
    }
    const tooLarge = await post({ grant_type: "password", service: SERVICE, password: "x".repeat(70_000) });
    expect(tooLarge.statusCode).toBe(413);
    expectMatchesSpec("POST", "/token", tooLarge);
    const xml = await env.app.inject({
      method: "POST",
      url: "/token",
      headers: { "content-type": "application/xml" },
      payload: "<grant/>",
    });
    expect(xml.statusCode).toBe(415);
    expectMatchesSpec("POST", "/token", xml);
  });

  it("keys, health, readiness, metrics and unknown paths", async () => {
    for (const url of ["/.well-known/jwks.json", "/healthz", "/readyz", "/metrics"]) {
      const res = await get(url);
      expect(res.statusCode, url).toBe(200);
      expectMatchesSpec("GET", url, res);
    }
    for (const [method, url] of [
      ["GET", "/nope"],
      ["PUT", "/token"],
      ["GET", "/token/"],
    ] as const) {
      const res = await env.app.inject({ method, url });
      expect(res.statusCode).toBe(404);
      expectMatchesSpec(method, url, res);
    }
  });
});

describe("rate-limited responses match the contract", () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await testEnv({ ...WITH_CP, rateLimit: { maxPerAddress: 1, maxPerServiceAccount: 1 } });
  });
  afterAll(async () => env.close());

  it("answers 429 with Retry-After in each endpoint's format", async () => {
    const first = await env.app.inject({ method: "GET", url: `/token?service=${SERVICE}` });
    expect(first.statusCode).toBe(401);
    const res = await env.app.inject({ method: "GET", url: `/token?service=${SERVICE}` });
    expect(res.statusCode).toBe(429);
    expectMatchesSpec("GET", "/token", res);
    const postRes = await env.app.inject({
      method: "POST",
      url: "/token",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      payload: `grant_type=password&service=${SERVICE}&password=x`,
    });
    expect(postRes.statusCode).toBe(429);
    expectMatchesSpec("POST", "/token", postRes);
    const cp = await postCp(env.app, cpRequest(`${SERVICE}/team-a/app:1.0`, "x"));
    expect(cp.statusCode).toBe(429);
    expectMatchesSpec("POST", "/v1/credential-provider", cp);
    const explained = await env.app.inject({ method: "GET", url: `/v1/explain?service=${SERVICE}` });
    expect(explained.statusCode).toBe(429);
    expectMatchesSpec("GET", "/v1/explain", explained);
    // Operational endpoints are never limited.
    for (const url of ["/metrics", "/healthz", "/readyz", "/openapi.json"]) {
      expect((await env.app.inject({ method: "GET", url })).statusCode, url).not.toBe(429);
    }
  });
});

describe("unavailable keys match the contract", () => {
  let app: FastifyInstance;
  let issuer: LocalIssuer;
  beforeAll(async () => {
    // An issuer that is gone before the first fetch: the cluster's keys can never load.
    const server = await startLocalIssuerServer();
    issuer = server.issuer;
    const config = await testConfig(server.url, WITH_CP);
    await server.close();
    app = await buildApp(config, { logger: pino({ level: "silent" }) });
  });
  afterAll(async () => app.close());

  it("answers 503 on both token endpoints and on /readyz", async () => {
    const sa = await issuer.mint({ namespace: "team-a", serviceAccount: "b", audiences: [AUDIENCE] });
    const res = await app.inject({
      method: "GET",
      url: `/token?service=${SERVICE}`,
      headers: { authorization: basic(sa) },
    });
    expect(res.statusCode).toBe(503);
    expect((expectMatchesSpec("GET", "/token", res) as Json).errors).toMatchObject([
      { code: "UNAVAILABLE", detail: { reason: "keys_unavailable" } },
    ]);
    const postRes = await app.inject({
      method: "POST",
      url: "/token",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      payload: new URLSearchParams({ grant_type: "password", service: SERVICE, password: sa }).toString(),
    });
    expect(postRes.statusCode).toBe(503);
    expect((expectMatchesSpec("POST", "/token", postRes) as Json).error).toBe("temporarily_unavailable");
    const pod = await issuer.mint({ namespace: "team-a", serviceAccount: "b", audiences: [CP_AUDIENCE] });
    const cp = await postCp(app, cpRequest(`${SERVICE}/team-a/app:1.0`, pod));
    expect(cp.statusCode).toBe(503);
    expectMatchesSpec("POST", "/v1/credential-provider", cp);
    const explained = await app.inject({
      method: "GET",
      url: `/v1/explain?service=${SERVICE}`,
      headers: { authorization: basic(sa) },
    });
    expect(explained.statusCode).toBe(503);
    expectMatchesSpec("GET", "/v1/explain", explained);
    const ready = await app.inject({ method: "GET", url: "/readyz" });
    expect(ready.statusCode).toBe(503);
    expect(expectMatchesSpec("GET", "/readyz", ready)).toMatchObject({
      status: "not ready",
      clusters: { test: { ready: false } },
    });
  });
});

describe("internal errors match the contract", () => {
  let env: TestEnv;
  beforeAll(async () => {
    // A shared store that breaks its own contract (it must never throw): the realm's failure is a 500.
    // Shared ("redis"): with the memory store the realm keeps its entries in its front cache only.
    const broken: CacheStore = {
      kind: "redis",
      get: async () => {
        throw new TypeError("store exploded");
      },
      set: async () => {},
      setIfAbsent: async () => true,
      delete: async () => {},
      healthy: () => true,
      close: async () => {},
    };
    env = await testEnv(WITH_CP, { store: broken });
  });
  afterAll(async () => env.close());

  it("answers 500 without detail in each endpoint's format", async () => {
    const sa = await env.issuer.mint({ namespace: "team-a", serviceAccount: "b", audiences: [AUDIENCE] });
    const res = await env.app.inject({
      method: "GET",
      url: `/token?service=${SERVICE}`,
      headers: { authorization: basic(sa) },
    });
    expect(res.statusCode).toBe(500);
    expect(expectMatchesSpec("GET", "/token", res)).toEqual({
      errors: [{ code: "UNKNOWN", message: "internal error", detail: { reason: "internal" } }],
    });
    const postRes = await env.app.inject({
      method: "POST",
      url: "/token",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      payload: new URLSearchParams({ grant_type: "password", service: SERVICE, password: sa }).toString(),
    });
    expect(postRes.statusCode).toBe(500);
    expect(expectMatchesSpec("POST", "/token", postRes)).toEqual({
      error: "server_error",
      error_description: "internal error",
    });
    const pod = await env.issuer.mint({ namespace: "team-a", serviceAccount: "b", audiences: [CP_AUDIENCE] });
    const cp = await postCp(env.app, cpRequest(`${SERVICE}/team-a/app:1.0`, pod));
    expect(cp.statusCode).toBe(500);
    expectMatchesSpec("POST", "/v1/credential-provider", cp);
    const explained = await env.app.inject({
      method: "GET",
      url: `/v1/explain?service=${SERVICE}`,
      headers: { authorization: basic(sa) },
    });
    expect(explained.statusCode).toBe(500);
    expectMatchesSpec("GET", "/v1/explain", explained);
  });
});

describe("size caps match the contract", () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await testEnv(WITH_CP);
  });
  afterAll(async () => env.close());

  it("answers 414 (request target) and 431 (header section) in each endpoint's format", async () => {
    const longQuery = `service=${SERVICE}&client_id=${"c".repeat(9000)}`;
    const filler = { "x-filler": "f".repeat(17_000) };
    const form = { "content-type": "application/x-www-form-urlencoded" };
    const cases: Array<[string, string, Record<string, string>, string | undefined]> = [
      ["GET", "/token", {}, undefined],
      ["GET", "/v1/explain", {}, undefined],
      ["POST", "/token", form, "grant_type=password"],
      ["POST", "/v1/credential-provider", { "content-type": "application/json" }, "{}"],
    ];
    for (const [method, path, headers, payload] of cases) {
      const tooLong = await env.app.inject({
        method: method as "GET",
        url: `${path}?${longQuery}`,
        headers,
        ...(payload === undefined ? {} : { payload }),
      });
      expect(tooLong.statusCode, `${method} ${path}`).toBe(414);
      expectMatchesSpec(method, path, tooLong);
      const tooBig = await env.app.inject({
        method: method as "GET",
        url: path,
        headers: { ...headers, ...filler },
        ...(payload === undefined ? {} : { payload }),
      });
      expect(tooBig.statusCode, `${method} ${path}`).toBe(431);
      expectMatchesSpec(method, path, tooBig);
    }
  });
});

describe("a body that does not arrive in time matches the contract", () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await testEnv({ ...WITH_CP, server: { host: "127.0.0.1", port: 0, bodyTimeoutMs: 200 } });
  });
  afterAll(async () => env.close());

  it("answers 408 in each body endpoint's format", async () => {
    const cases: Array<[string, string, Json]> = [
      [
        "/token",
        "application/x-www-form-urlencoded",
        { error: "invalid_request", error_description: "the request body was not received within 200 ms" },
      ],
      [
        "/v1/credential-provider",
        "application/json",
        {
          errors: [
            {
              code: "UNSUPPORTED",
              message: "the request body was not received within 200 ms",
              detail: { reason: "invalid_request" },
            },
          ],
        },
      ],
    ];
    for (const [path, contentType, body] of cases) {
      // A body that announces 100 bytes, sends 10 and then nothing more.
      const payload = new Readable({ read() {} });
      payload.push("grant_type");
      const res = await env.app.inject({
        method: "POST",
        url: path,
        headers: { "content-type": contentType, "content-length": "100" },
        payload,
      });
      payload.destroy();
      expect(res.statusCode, path).toBe(408);
      expect(res.headers.connection, path).toBe("close");
      expect(expectMatchesSpec("POST", path, res), path).toEqual(body);
    }
  });
});

describe("coverage of the contract", () => {
  it("every documented response was produced by a test above", () => {
    const documented = documentedResponses();
    expect(documented.length).toBeGreaterThanOrEqual(30);
    const missing = documented.filter((r) => !specCoverage.has(r) && !(r in NOT_PRODUCED));
    expect(missing).toEqual([]);
    expect(specCoverage.has("GET (unlisted) 404")).toBe(true);
  });
});
