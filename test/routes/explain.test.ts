// biome-ignore-all lint/suspicious/noTemplateCurlyInString: policy templates such as ${namespace} are data, not JS templates
/**
 * `GET /v1/explain` through `app.inject()`: the exact explanation (identity, rules that apply, per-scope
 * grants and the rules behind them), the same decision `GET /token` mints, nothing minted or cached,
 * exchange credentials with annotations, every error identical to `GET /token`'s, the rate limit, and the
 * OpenAPI contract.
 */
import { decodeJwt } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalIssuer, stableUid } from "../../src/local/issuer.js";
import { NOW } from "../helpers/clock.js";
import {
  CP_AUDIENCE,
  cpRequest,
  credentialProviderOverrides,
  dockerError,
  REGISTRY_HOST,
} from "../helpers/credential-provider.js";
import { AUDIENCE, basic, capturingLogger, SERVICE, type TestEnv, testEnv } from "../helpers/fixtures.js";
import { expectMatchesSpec } from "../helpers/openapi.js";

/** Frozen "now": 2026-11-30T12:00:00Z. */

const RULES = [
  {
    name: "teams push to their own namespace",
    match: { namespace: "team-*" },
    allow: [{ repository: "${namespace}/**", actions: ["pull", "push"] }],
  },
  { name: "everyone pulls library", allow: [{ repository: "library/**", actions: ["pull"] }] },
  { name: "library is read-only", deny: [{ repository: "library/**", actions: ["push", "delete"] }] },
  {
    name: "teams by annotation",
    match: { annotations: { "example.com/team": "*" } },
    allow: [{ repository: "teams/${annotation:example.com/team}/**", actions: ["pull"] }],
  },
];

async function overrides(extra: Record<string, unknown> = {}) {
  return { ...(await credentialProviderOverrides()), policy: { rules: RULES }, ...extra };
}

function explainUrl(service: string | undefined, ...scopes: string[]): string {
  const q = new URLSearchParams();
  if (service !== undefined) q.append("service", service);
  for (const s of scopes) q.append("scope", s);
  return `/v1/explain?${q.toString()}`;
}

describe("GET /v1/explain: the explanation", () => {
  let env: TestEnv;
  let log: ReturnType<typeof capturingLogger>;
  let token: string;
  beforeAll(async () => {
    log = capturingLogger("info");
    env = await testEnv(await overrides(), { now: () => NOW, logger: log.logger });
    token = await env.issuer.mint({
      namespace: "team-a",
      serviceAccount: "builder",
      audiences: [AUDIENCE],
      nowMs: NOW,
    });
  });
  afterAll(async () => env.close());

  const get = (url: string, authorization?: string) =>
    env.app.inject({ method: "GET", url, headers: authorization ? { authorization } : {} });

  it("answers the identity, the rules that apply, and per scope the grants and the rules behind them", async () => {
    const url = explainUrl(
      SERVICE,
      "repository:team-a/app:push,pull",
      "repository:library/alpine:pull,push",
      "repository:team-b/app:pull",
    );
    const res = await get(url, basic(token));
    expect(res.statusCode).toBe(200);
    expect(res.headers["cache-control"]).toBe("no-store");
    expect(res.json()).toEqual({
      service: SERVICE,
      identity: {
        credential: "service-account token",
        cluster: "test",
        namespace: "team-a",
        serviceAccount: { name: "builder", uid: stableUid(env.issuerUrl, "team-a", "sa", "builder") },
        pod: { name: "builder-pod", uid: stableUid(env.issuerUrl, "team-a", "pod", "builder-pod") },
        subject: "system:serviceaccount:team-a:builder",
        audiences: [AUDIENCE],
        issuedAt: "2026-11-30T12:00:00Z",
        expiresAt: "2026-11-30T13:00:00Z",
        expiresIn: 3600,
      },
      rules: ["teams push to their own namespace", "everyone pulls library", "library is read-only"],
      scopes: [
        {
          scope: "repository:team-a/app:pull,push",
          type: "repository",
          name: "team-a/app",
          requested: ["pull", "push"],
          granted: ["pull", "push"],
          allowedBy: ["teams push to their own namespace"],
          deniedBy: [],
        },
        {
          scope: "repository:library/alpine:pull,push",
          type: "repository",
          name: "library/alpine",
          requested: ["pull", "push"],
          granted: ["pull"],
          allowedBy: ["everyone pulls library"],
          deniedBy: ["library is read-only"],
        },
        {
          scope: "repository:team-b/app:pull",
          type: "repository",
          name: "team-b/app",
          requested: ["pull"],
          granted: [],
          allowedBy: [],
          deniedBy: [],
        },
      ],
    });
    expectMatchesSpec("GET", url, res);
  });

  it("grants exactly what GET /token puts in the token it mints", async () => {
    const scopes = [
      "repository:team-a/app:pull,push,delete",
      "repository:library/alpine:pull,push",
      "registry:catalog:*",
    ];
    const explained = await get(explainUrl(SERVICE, ...scopes), basic(token));
    const q = scopes.map((s) => `&scope=${encodeURIComponent(s)}`).join("");
    const minted = await get(`/token?service=${SERVICE}${q}`, basic(token));
    expect(minted.statusCode).toBe(200);
    const access = decodeJwt(minted.json().token).access as Array<{
      type: string;
      name: string;
      actions: string[];
    }>;
    expect(
      explained.json().scopes.map((s: { type: string; name: string; granted: string[] }) => ({
        type: s.type,
        name: s.name,
        actions: s.granted,
      })),
    ).toEqual(access);
  });

  it("a login (no scope) lists the rules that apply and no scopes; Bearer works like Basic", async () => {
    const basicRes = await get(explainUrl(SERVICE), basic(token));
    const bearerRes = await get(explainUrl(SERVICE), `Bearer ${token}`);
    expect(basicRes.statusCode).toBe(200);
    expect(basicRes.json()).toMatchObject({
      rules: ["teams push to their own namespace", "everyone pulls library", "library is read-only"],
      scopes: [],
    });
    expect(bearerRes.json()).toEqual(basicRes.json());
  });

  it("mints and caches nothing, and never shows or logs the token", async () => {
    const before = { ...env.app.exchange.realm.stats };
    const linesBefore = log.lines.length;
    const res = await get(explainUrl(SERVICE, "repository:team-a/app:pull"), basic(token));
    expect(res.statusCode).toBe(200);
    expect(env.app.exchange.realm.stats.tokenHits).toBe(before.tokenHits);
    expect(env.app.exchange.realm.stats.tokenMisses).toBe(before.tokenMisses);
    const signature = token.split(".")[2]!;
    expect(res.body).not.toContain(signature);
    const lines = log.lines.slice(linesBefore).join("");
    expect(lines).not.toContain(signature);
    expect(lines).not.toContain("token issued");
    expect(lines).toContain('"msg":"policy explained"');
    expect(lines).toContain('"granted":["repository:team-a/app:pull"]');
  });

  it("explains an exchange credential with its annotations and the annotation rules", async () => {
    const pod = await env.issuer.mint({
      namespace: "team-a",
      serviceAccount: "runner",
      audiences: [CP_AUDIENCE],
      nowMs: NOW,
    });
    const cp = await env.app.inject({
      method: "POST",
      url: "/v1/credential-provider",
      headers: { "content-type": "application/json" },
      payload: JSON.stringify(
        cpRequest(pod, `${REGISTRY_HOST}/team-a/app:v1`, { "example.com/team": "payments" }),
      ),
    });
    expect(cp.statusCode, cp.body).toBe(200);
    const password = cp.json().auth[REGISTRY_HOST].password as string;
    const res = await get(
      explainUrl(SERVICE, "repository:teams/payments/api:pull", "repository:teams/billing/api:pull"),
      basic(password),
    );
    expect(res.statusCode).toBe(200);
    const body = res.json();
    expect(body.identity).toMatchObject({
      credential: "exchange credential",
      namespace: "team-a",
      serviceAccount: { name: "runner" },
      annotations: { "example.com/team": "payments" },
      expiresAt: "2026-11-30T13:00:00Z",
    });
    expect(body.rules).toEqual([
      "teams push to their own namespace",
      "everyone pulls library",
      "library is read-only",
      "teams by annotation",
    ]);
    expect(
      body.scopes.map((s: { granted: string[]; allowedBy: string[] }) => [s.granted, s.allowedBy]),
    ).toEqual([
      [["pull"], ["teams by annotation"]],
      [[], []],
    ]);
    expect(res.body).not.toContain(password.split(".")[2]!);
    expectMatchesSpec("GET", "/v1/explain", res);
  });
});

describe("GET /v1/explain: errors are GET /token's, byte for byte", () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await testEnv(await overrides(), { now: () => NOW });
  });
  afterAll(async () => env.close());

  const stranger = new LocalIssuer("https://not-trusted.example.com");
  const mint = (req: Partial<Parameters<TestEnv["issuer"]["mint"]>[0]> = {}) =>
    env.issuer.mint({
      namespace: "team-a",
      serviceAccount: "builder",
      audiences: [AUDIENCE],
      nowMs: NOW,
      ...req,
    });

  type Case = [
    description: string,
    query: string,
    auth: () => Promise<string | undefined>,
    status: number,
    reason: string,
  ];
  const cases: Case[] = [
    ["no credentials", `service=${SERVICE}`, async () => undefined, 401, "missing_credentials"],
    ["not a JWT", `service=${SERVICE}`, async () => basic("not-a-jwt"), 401, "malformed_token"],
    ["unknown scheme", `service=${SERVICE}`, async () => "Digest x", 401, "malformed_credentials"],
    [
      "unknown issuer",
      `service=${SERVICE}`,
      async () =>
        basic(
          await stranger.mint({
            namespace: "team-a",
            serviceAccount: "b",
            audiences: [AUDIENCE],
            nowMs: NOW,
          }),
        ),
      401,
      "unknown_issuer",
    ],
    [
      "wrong audience",
      `service=${SERVICE}`,
      async () => basic(await mint({ audiences: ["someone-else"] })),
      401,
      "invalid_audience",
    ],
    [
      "expired",
      `service=${SERVICE}`,
      async () => basic(await mint({ nowMs: NOW - 7200_000 })),
      401,
      "token_expired",
    ],
    [
      "expires in 30 s",
      `service=${SERVICE}`,
      async () => basic(await mint({ nowMs: NOW - 3570_000 })),
      401,
      "token_expired",
    ],
    ["unknown service", "service=nope.example.com", async () => basic(await mint()), 400, "unknown_service"],
    ["no service", "scope=repository:a:pull", async () => basic(await mint()), 400, "invalid_request"],
    [
      "repeated service",
      `service=${SERVICE}&service=${SERVICE}`,
      async () => basic(await mint()),
      400,
      "invalid_request",
    ],
    [
      "invalid scope",
      `service=${SERVICE}&scope=repository:Team/App:pull`,
      async () => basic(await mint()),
      400,
      "invalid_scope",
    ],
  ];

  it.each(cases)("%s", async (_d, query, auth, status, reason) => {
    const authorization = await auth();
    const headers = authorization ? { authorization } : {};
    const explained = await env.app.inject({ method: "GET", url: `/v1/explain?${query}`, headers });
    const token = await env.app.inject({ method: "GET", url: `/token?${query}`, headers });
    expect(explained.statusCode).toBe(status);
    expect(explained.json().errors[0].detail.reason).toBe(reason);
    expect(explained.statusCode).toBe(token.statusCode);
    expect(explained.json()).toEqual(token.json());
    expect(explained.headers["www-authenticate"]).toEqual(token.headers["www-authenticate"]);
    expectMatchesSpec("GET", `/v1/explain?${query}`, explained);
  });

  it("401 carries the Basic challenge, like GET /token", async () => {
    const res = await env.app.inject({ method: "GET", url: `/v1/explain?service=${SERVICE}` });
    expect(res.statusCode).toBe(401);
    expect(res.headers["www-authenticate"]).toBe('Basic realm="registry-token-exchange"');
    expect(res.json()).toEqual(
      dockerError(
        "UNAUTHORIZED",
        "missing_credentials",
        "authentication required: send the service-account token as the Basic password or as a Bearer token",
      ),
    );
  });
});

describe("GET /v1/explain: rate limited like /token", () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await testEnv(await overrides({ rateLimit: { maxPerAddress: 2, maxPerServiceAccount: 2 } }), {
      now: () => NOW,
    });
  });
  afterAll(async () => env.close());

  it("answers 429 with Retry-After in the distribution format once the window is used up", async () => {
    const url = `/v1/explain?service=${SERVICE}`;
    for (let i = 0; i < 2; i++) expect((await env.app.inject({ method: "GET", url })).statusCode).toBe(401);
    const res = await env.app.inject({ method: "GET", url });
    expect(res.statusCode).toBe(429);
    expect(res.headers["retry-after"]).toMatch(/^\d+$/);
    expect(res.json().errors[0]).toMatchObject({
      code: "TOOMANYREQUESTS",
      detail: { reason: "rate_limited" },
    });
    expectMatchesSpec("GET", url, res);
  });
});
