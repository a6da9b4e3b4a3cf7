/**
 * Regressions from the adversarial review: each was a real hole before its fix.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MAX_KID_LENGTH } from "../../src/authn/verify.js";
import { AUDIENCE, basic, SERVICE, type TestEnv, testEnv } from "../helpers/fixtures.js";

describe("rate limits follow the route, not the raw path", () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await testEnv({
      rateLimit: { maxPerAddress: 2, maxPerServiceAccount: 100, timeWindowSeconds: 60 },
    });
  });
  afterAll(async () => env.close());

  it("a percent-encoded /%74oken counts against the same limit as /token", async () => {
    const codes: number[] = [];
    for (const path of ["/token", "/%74oken", "/%74oken", "/token"]) {
      const res = await env.app.inject({
        method: "GET",
        url: `${path}?service=${SERVICE}`,
        headers: { authorization: basic("garbage") },
      });
      codes.push(res.statusCode);
    }
    expect(codes).toEqual([401, 401, 429, 429]);
  });
});

describe("claims minted into registry tokens are whole seconds", () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await testEnv();
  });
  afterAll(async () => env.close());

  const now = () => Math.floor(Date.now() / 1000);
  it.each([
    ["fractional exp", () => ({ exp: now() + 600.5 }), "exp"],
    ["huge exp", () => ({ exp: 1e300 }), "exp"],
    ["negative huge iat", () => ({ iat: -1e300 }), "iat"],
    ["fractional nbf", () => ({ nbf: now() - 0.5 }), "nbf"],
  ])("%s is malformed_token, never a 500 or a fractional exp", async (_name, claims, claim) => {
    const sa = await env.issuer.mint({
      namespace: "team-a",
      serviceAccount: "x",
      audiences: [AUDIENCE],
      claims: claims(),
    });
    for (const path of ["/token", "/v1/explain"]) {
      const res = await env.app.inject({
        method: "GET",
        url: `${path}?service=${SERVICE}&scope=repository:team-a/app:pull`,
        headers: { authorization: basic(sa) },
      });
      expect({ status: res.statusCode, body: res.json() }).toEqual({
        status: 401,
        body: {
          errors: [
            {
              code: "UNAUTHORIZED",
              message: `"${claim}" claim is not a whole number of seconds`,
              detail: { reason: "malformed_token" },
            },
          ],
        },
      });
    }
  });
});

describe("key IDs", () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await testEnv();
  });
  afterAll(async () => env.close());

  it(`a kid longer than ${MAX_KID_LENGTH} characters is refused before any lookup or fetch`, async () => {
    const sa = await env.issuer.mint({
      namespace: "team-a",
      serviceAccount: "x",
      audiences: [AUDIENCE],
      header: { kid: "k".repeat(MAX_KID_LENGTH + 1) },
    });
    const res = await env.app.inject({
      method: "GET",
      url: `/token?service=${SERVICE}`,
      headers: { authorization: basic(sa) },
    });
    expect(res.statusCode).toBe(401);
    expect(res.json().errors[0]).toEqual({
      code: "UNAUTHORIZED",
      message: `"kid" is longer than ${MAX_KID_LENGTH} characters`,
      detail: { reason: "malformed_token" },
    });
    expect(env.issuer.served.jwks).toBe(0);
  });
});
