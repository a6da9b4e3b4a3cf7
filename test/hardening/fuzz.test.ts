/**
 * Fuzzing (fast-check) of the request decoders, alone and through the whole app:
 * - `parseScope`/`parseScopes` (src/policy/scope.ts): only ever a result that obeys the grammar or an
 *   `invalid_scope` 400; never another exception; fast on adversarial names (no catastrophic backtracking);
 * - `parseAuthorization` (src/authn/credentials.ts): only ever a credential or `malformed_credentials`;
 * - `POST /token` form bodies, `GET /token` queries and headers, and `POST /v1/credential-provider` JSON
 *   bodies through `app.inject`: never a 5xx, always the endpoint's own error format, and no exception
 *   escapes a handler (the log holds no `request failed` line).
 *
 * Runs are seeded for repeatable CI (`FUZZ_SEED=<n>` replays another seed; `FUZZ_SEED=random` explores)
 * and bounded in number and time.
 */
import fc from "fast-check";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildApp } from "../../src/app.js";
import { parseAuthorization } from "../../src/authn/credentials.js";
import { ACTIONS } from "../../src/config/schema.js";
import { RequestError } from "../../src/errors.js";
import { startLocalIssuerServer } from "../../src/local/issuer.js";
import { formatScope, MAX_SCOPES, parseScope, parseScopes } from "../../src/policy/scope.js";
import { CP_API_VERSION, CP_AUDIENCE, credentialProviderOverrides } from "../helpers/credential-provider.js";
import { AUDIENCE, basic, capturingLogger, SERVICE, testConfig } from "../helpers/fixtures.js";

const SEED = process.env.FUZZ_SEED === "random" ? undefined : Number(process.env.FUZZ_SEED ?? 4412);
const runs = (numRuns: number) => ({
  numRuns,
  ...(SEED === undefined ? {} : { seed: SEED }),
  interruptAfterTimeLimit: 20_000,
});

/** Pieces scopes are made of, hostile ones included. */
const SCOPE_PIECES = [
  "repository",
  "registry",
  "repository(plugin)",
  "Repository",
  "blob",
  "catalog",
  "team-a/app",
  "library/alpine",
  "localhost:5000/foo",
  "a__b",
  "a--b",
  "a..b",
  "A",
  "",
  ":",
  "::",
  "/",
  "//",
  "pull",
  "push",
  "delete",
  "*",
  "pull,push",
  ",",
  "pull,,push",
  " ",
  "\u0000",
  "\n",
  "é",
  "𝕏",
  "%3A",
  "${namespace}",
];

/** A string that is often almost a scope. */
const scopeish = fc.oneof(
  fc.array(fc.constantFrom(...SCOPE_PIECES), { maxLength: 8 }).map((p) => p.join("")),
  fc
    .tuple(
      fc.constantFrom("repository", "registry", "x"),
      fc
        .array(fc.constantFrom("a", "b", "0", "-", "_", ".", "/", ":", "A", "é"), { maxLength: 40 })
        .map((c) => c.join("")),
      fc.constantFrom("pull", "push", "pull,push", "*", "delete", "", "nope"),
    )
    .map(([t, n, a]) => `${t}:${n}:${a}`),
  fc.string({ unit: "binary", maxLength: 80 }),
);

const REPOSITORY_NAME =
  /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]{1,5})?\/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;

function expectOnly(err: unknown, code: string, status: number): void {
  expect(err).toBeInstanceOf(RequestError);
  expect((err as RequestError).code).toBe(code);
  expect((err as RequestError).statusCode).toBe(status);
  // Messages are one safe line: control characters are never echoed.
  // biome-ignore lint/suspicious/noControlCharactersInRegex: that is what is checked
  expect((err as RequestError).message).not.toMatch(/[\u0000-\u001f\u007f]/);
}

describe("scope parser", () => {
  it("answers a scope that obeys the grammar, or invalid_scope; nothing else", () => {
    fc.assert(
      fc.property(fc.array(scopeish, { maxLength: 40 }), (values) => {
        let scopes: ReturnType<typeof parseScopes>;
        try {
          scopes = parseScopes(values);
        } catch (err) {
          expectOnly(err, "invalid_scope", 400);
          return;
        }
        expect(scopes.length).toBeLessThanOrEqual(MAX_SCOPES);
        for (const s of scopes) {
          expect(["repository", "registry"]).toContain(s.type);
          if (s.type === "repository") expect(s.name).toMatch(REPOSITORY_NAME);
          else expect(s.name).toBe("catalog");
          expect(s.name.length).toBeLessThanOrEqual(255);
          expect(s.actions.length).toBeGreaterThan(0);
          expect([...ACTIONS].filter((a) => s.actions.includes(a))).toEqual(s.actions); // canonical order
          expect(parseScope(formatScope(s))).toEqual(s); // round trip
        }
      }),
      runs(3000),
    );
  });

  it("stays fast on adversarial names (no catastrophic backtracking)", () => {
    const alphabet = fc.constantFrom("a", "0", "-", "_", ".", "/", ":", "A", "-a", "a.", "_a");
    fc.assert(
      fc.property(
        fc.array(alphabet, { minLength: 100, maxLength: 260 }),
        fc.constantFrom("", "!", "/", "-", ":"),
        (parts, tail) => {
          const name = parts.join("").slice(0, 255) + tail;
          const started = performance.now();
          try {
            parseScope(`repository:${name}:pull`);
          } catch (err) {
            expectOnly(err, "invalid_scope", 400);
          }
          expect(performance.now() - started).toBeLessThan(50);
        },
      ),
      runs(1000),
    );
  });
});

describe("Authorization decoder", () => {
  const header = fc.oneof(
    fc.string({ unit: "binary", maxLength: 200 }),
    fc
      .tuple(
        fc.constantFrom("Basic", "basic", "BASIC", "Bearer", "bearer", "Digest", ""),
        fc.constantFrom(" ", "", "  ", "\t"),
        fc.string({ maxLength: 100 }),
      )
      .map((p) => p.join("")),
    fc
      .tuple(fc.uint8Array({ maxLength: 120 }), fc.constantFrom("", "=", "==", "===", "%", " "))
      .map(([bytes, tail]) => `Basic ${Buffer.from(bytes).toString("base64")}${tail}`),
    fc
      .tuple(fc.string({ unit: "binary", maxLength: 40 }), fc.string({ unit: "binary", maxLength: 80 }))
      .map(([u, p]) => `Basic ${Buffer.from(`${u}:${p}`).toString("base64")}`),
  );

  it("answers a credential or malformed_credentials; nothing else", () => {
    fc.assert(
      fc.property(header, (h) => {
        let c: ReturnType<typeof parseAuthorization>;
        try {
          c = parseAuthorization(h);
        } catch (err) {
          expectOnly(err, "malformed_credentials", 401);
          return;
        }
        if (c === undefined) {
          expect(h).toBe("");
          return;
        }
        expect(c.secret.length).toBeGreaterThan(0);
        if (c.scheme === "basic") {
          const decoded = Buffer.from(h.slice(h.indexOf(" ") + 1).trim(), "base64").toString("utf8");
          expect(`${c.username}:${c.secret}`).toBe(decoded);
        }
      }),
      runs(3000),
    );
  });
});

describe("request decoding through the app", () => {
  let app: FastifyInstance;
  let lines: string[];
  let close: () => Promise<void>;
  let tokens: { sa: string; cp: string; other: string };

  beforeAll(async () => {
    const issuer = await startLocalIssuerServer();
    const captured = capturingLogger("info");
    lines = captured.lines;
    const config = await testConfig(issuer.url, {
      ...(await credentialProviderOverrides()),
      rateLimit: { maxPerAddress: 1_000_000, maxPerServiceAccount: 1_000_000 },
    });
    app = await buildApp(config, { logger: captured.logger });
    const mint = (audiences: string[]) =>
      issuer.issuer.mint({ namespace: "team-a", serviceAccount: "fuzz", audiences });
    tokens = { sa: await mint([AUDIENCE]), cp: await mint([CP_AUDIENCE]), other: await mint(["elsewhere"]) };
    close = async () => {
      await app.close();
      await issuer.close();
    };
  });
  afterAll(async () => close?.());

  const noServerErrors = () => {
    const failed = lines.filter((l) => l.includes('"msg":"request failed"') || l.includes('"level":50'));
    expect(failed, failed[0]).toEqual([]);
  };

  const value = () =>
    fc.oneof(
      fc.constantFrom(
        "password",
        "refresh_token",
        "urn:ietf:params:oauth:grant-type:token-exchange",
        "urn:ietf:params:oauth:token-type:jwt",
        "offline",
        SERVICE,
        "other.test",
        "repository:team-a/app:pull",
        "repository:team-a/app:pull,push repository:library/x:pull",
        "registry:catalog:*",
        "",
        "x",
      ),
      fc.constant(tokens.sa),
      fc.constant(tokens.other),
      fc.string({ unit: "binary", maxLength: 60 }),
      scopeish,
    );
  const key = fc.oneof(
    fc.constantFrom(
      "grant_type",
      "service",
      "scope",
      "username",
      "password",
      "refresh_token",
      "subject_token",
      "subject_token_type",
      "audience",
      "access_type",
      "client_id",
      "requested_token_type",
      "actor_token",
      "resource",
      "__proto__",
      "constructor",
    ),
    fc.string({ unit: "binary", maxLength: 12 }),
  );
  const pairs = () => fc.array(fc.tuple(key, value()), { maxLength: 10 });

  it("POST /token: any form body answers < 500 in the RFC 6749 format", async () => {
    const body = fc.oneof(
      pairs().map((p) => new URLSearchParams(p).toString()),
      pairs().map((p) => p.map(([k, v]) => `${k}=${v}`).join("&")), // not encoded at all
      fc.string({ unit: "binary", maxLength: 300 }),
    );
    const type = fc.constantFrom(
      "application/x-www-form-urlencoded",
      "application/x-www-form-urlencoded; charset=utf-8",
      "APPLICATION/X-WWW-FORM-URLENCODED",
      "application/json",
      "text/plain",
      "multipart/form-data; boundary=x",
      "",
    );
    await fc.assert(
      fc.asyncProperty(body, type, async (payload, contentType) => {
        const res = await app.inject({
          method: "POST",
          url: "/token",
          headers: contentType === "" ? {} : { "content-type": contentType },
          payload,
        });
        expect(res.statusCode, res.body).toBeLessThan(500);
        const json = res.json() as Record<string, unknown>;
        if (res.statusCode === 200) expect(typeof json.access_token).toBe("string");
        else {
          expect(Object.keys(json).sort()).toEqual(["error", "error_description"]);
          expect([
            "invalid_request",
            "invalid_grant",
            "invalid_scope",
            "invalid_target",
            "unsupported_grant_type",
            "access_denied",
            "temporarily_unavailable",
          ]).toContain(json.error);
        }
      }),
      runs(1500),
    );
    noServerErrors();
  }, 60_000);

  it("GET /token: any query and Authorization header answers < 500 in the distribution format", async () => {
    const authorization = fc.oneof(
      fc.constant(undefined),
      fc.constant(basic(tokens.sa)),
      fc.constant(`Bearer ${tokens.sa}`),
      fc.string({ unit: "grapheme-ascii", maxLength: 80 }).map((s) => `Basic ${s}`),
      fc.string({ unit: "grapheme-ascii", maxLength: 80 }).map((s) => `Bearer ${s}`),
      fc.uint8Array({ maxLength: 80 }).map((b) => `Basic ${Buffer.from(b).toString("base64")}`),
    );
    const query = fc.oneof(
      pairs().map((p) => new URLSearchParams(p).toString()),
      fc.string({ unit: "grapheme-ascii", maxLength: 200 }).map((s) => s.replace(/[#\s]/g, "")),
    );
    await fc.assert(
      fc.asyncProperty(query, authorization, async (qs, auth) => {
        const res = await app.inject({
          method: "GET",
          url: `/token?${qs}`,
          headers: auth === undefined ? {} : { authorization: auth },
        });
        expect(res.statusCode, res.body).toBeLessThan(500);
        const json = res.json() as Record<string, unknown>;
        if (res.statusCode === 200) expect(typeof json.token).toBe("string");
        else {
          const errors = json.errors as Array<Record<string, unknown>>;
          expect(errors).toHaveLength(1);
          expect(Object.keys(errors[0]!).sort()).toEqual(["code", "detail", "message"]);
        }
      }),
      runs(1500),
    );
    noServerErrors();
  }, 60_000);

  it("POST /v1/credential-provider: any JSON body answers < 500 in the distribution format", async () => {
    const request = fc.oneof(
      fc.jsonValue(),
      fc.record(
        {
          apiVersion: fc.oneof(fc.constant(CP_API_VERSION), fc.jsonValue()),
          kind: fc.oneof(fc.constant("CredentialProviderRequest"), fc.jsonValue()),
          image: fc.oneof(
            fc.constantFrom("registry.test:5000/team-a/app:v1", "registry.test/team-a/app@sha256:00"),
            fc.string({ unit: "binary", maxLength: 60 }),
          ),
          serviceAccountToken: fc.oneof(fc.constant(tokens.cp), fc.constant(tokens.sa), fc.jsonValue()),
          serviceAccountAnnotations: fc.oneof(
            fc.dictionary(fc.string({ maxLength: 20 }), fc.jsonValue(), { maxKeys: 5 }),
            fc.jsonValue(),
          ),
        },
        { requiredKeys: [] },
      ),
    );
    await fc.assert(
      fc.asyncProperty(request, async (body) => {
        const res = await app.inject({
          method: "POST",
          url: "/v1/credential-provider",
          headers: { "content-type": "application/json" },
          payload: JSON.stringify(body) ?? "null",
        });
        expect(res.statusCode, res.body).toBeLessThan(500);
        const json = res.json() as Record<string, unknown>;
        if (res.statusCode === 200) expect(json.kind).toBe("CredentialProviderResponse");
        else expect((json.errors as unknown[]).length).toBe(1);
      }),
      runs(800),
    );
    noServerErrors();
  }, 60_000);
});
