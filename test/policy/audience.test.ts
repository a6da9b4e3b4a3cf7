/**
 * Audience policy through `app.inject()`: two registries, each requiring its own audience
 * (`registries[].audiences`). A token meant for one registry gets nothing at the other, at `GET /token`,
 * `POST /token` and `GET /v1/explain` alike, even though the policy would grant it there; a token with
 * only the cluster's audience gets nothing at either.
 */
import { decodeJwt } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NOW } from "../helpers/clock.js";
import {
  AUDIENCE,
  basic,
  capturingLogger,
  signingKeyFiles,
  type TestEnv,
  testEnv,
} from "../helpers/fixtures.js";

const A = "registry-a.example.com";
const B = "registry-b.example.com";

describe("a token whose audience is meant for another registry gets nothing there", () => {
  let env: TestEnv;
  const tokens: Record<string, string> = {};
  const { logger, lines } = capturingLogger("info");
  beforeAll(async () => {
    const signingKey = await signingKeyFiles();
    env = await testEnv(
      {
        registries: [
          { service: A, issuer: "rte", signingKey, audiences: [`aud:${A}`] },
          { service: B, issuer: "rte", signingKey, audiences: [`aud:${B}`] },
        ],
        policy: {
          rules: [{ name: "everyone pulls everything", allow: [{ repository: "**", actions: ["pull"] }] }],
        },
      },
      { now: () => NOW, logger },
    );
    const mint = (audiences: string[]) =>
      env.issuer.mint({ namespace: "team-a", serviceAccount: "builder", audiences, nowMs: NOW });
    tokens.a = await mint([`aud:${A}`]);
    tokens.b = await mint([`aud:${B}`]);
    tokens.cluster = await mint([AUDIENCE]);
  });
  afterAll(async () => env.close());

  const get = (path: string, service: string, token: string) =>
    env.app.inject({
      method: "GET",
      url: `${path}?service=${service}&scope=repository:team-a/app:pull`,
      headers: { authorization: basic(token) },
    });
  const post = (service: string, token: string) =>
    env.app.inject({
      method: "POST",
      url: "/token",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      payload: new URLSearchParams({
        grant_type: "password",
        service,
        scope: "repository:team-a/app:pull",
        username: "x",
        password: token,
      }).toString(),
    });

  it.each([
    ["a", A],
    ["b", B],
  ])("the token for registry %s works there", async (which, service) => {
    const res = await get("/token", service, tokens[which]!);
    expect(res.statusCode).toBe(200);
    expect(decodeJwt(res.json().token)).toMatchObject({
      aud: service,
      access: [{ type: "repository", name: "team-a/app", actions: ["pull"] }],
    });
    expect((await post(service, tokens[which]!)).statusCode).toBe(200);
    expect((await get("/v1/explain", service, tokens[which]!)).json().scopes[0].granted).toEqual(["pull"]);
  });

  it.each([
    ["a", B, `aud:${B}`],
    ["b", A, `aud:${A}`],
    ["cluster", A, `aud:${A}`],
    ["cluster", B, `aud:${B}`],
  ])(
    "the %s token is refused at %s (invalid_audience), at /token and /v1/explain",
    async (which, service, wanted) => {
      // The body names no audience; the access line says which one this registry accepts.
      const message = '"aud" claim does not contain an audience accepted here';
      for (const path of ["/token", "/v1/explain"]) {
        const before = lines.length;
        const res = await get(path, service, tokens[which]!);
        expect(res.statusCode, path).toBe(401);
        expect(res.json(), path).toEqual({
          errors: [{ code: "UNAUTHORIZED", message, detail: { reason: "invalid_audience" } }],
        });
        const access = lines.slice(before).map((l) => JSON.parse(l) as { detail?: { detail?: string } });
        expect(access.map((l) => l.detail?.detail).filter(Boolean), path).toEqual([`accepted: ${wanted}`]);
      }
      const res = await post(service, tokens[which]!);
      expect(res.statusCode).toBe(401);
      expect(res.json()).toEqual({ error: "invalid_grant", error_description: message });
    },
  );
});
