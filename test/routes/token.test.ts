import { decodeJwt, decodeProtectedHeader } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AUDIENCE, basic, SERVICE, type TestEnv, testEnv } from "../helpers/fixtures.js";

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
