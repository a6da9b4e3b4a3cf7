/**
 * Attack: a workload of namespace team-a (standard test policy: push to `team-a/**`, pull `library/**`)
 * asks for other teams' repositories through scope tricks. Held: every trick either names another
 * repository, which the default deny covers, or is refused as `invalid_scope` (distribution
 * docs/spec/auth/scope.md grammar).
 */
import { decodeJwt } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AUDIENCE, basic, SERVICE, type TestEnv, testEnv } from "../helpers/fixtures.js";

let env: TestEnv;
let token: string;
beforeAll(async () => {
  env = await testEnv();
  token = await env.issuer.mint({ namespace: "team-a", serviceAccount: "app", audiences: [AUDIENCE] });
});
afterAll(async () => {
  await env?.close();
});

function request(scope: string) {
  return env.app.inject({
    method: "GET",
    url: `/token?service=${SERVICE}&scope=${encodeURIComponent(scope)}`,
    headers: { authorization: basic(token) },
  });
}

describe("scope tricks grant nothing outside the policy", () => {
  it.each([
    "repository:team-b/app:push",
    "repository:Team-a/app:push",
    "repository:localhost:5000/team-b/app:push",
    "repository:team-a.example/team-b/app:push",
    "repository(plugin):team-b/app:push",
    "repository:library/app:push",
    "repository:team-a/app:*",
    "registry:catalog:*",
  ])("%s: granted nothing", async (scope) => {
    const res = await request(scope);
    expect(res.statusCode, res.body).toBe(200);
    expect(decodeJwt(res.json().token).access).toEqual([expect.objectContaining({ actions: [] })]);
  });

  it.each([
    "repository:team-a/../team-b/app:push",
    "repository:team-a//team-b:push",
    "repository:team-a/app:push,admin",
    "repository:team-a/%2e%2e/team-b:push",
  ])("%s: 400 invalid_scope", async (scope) => {
    const res = await request(scope);
    expect(res.statusCode).toBe(400);
    expect(res.json().errors[0].detail.reason).toBe("invalid_scope");
  });

  it("the same repository twice merges actions, never more than the policy grants", async () => {
    const res = await request(
      "repository:team-b/app:pull repository:team-b/app:push repository:team-a/app:push",
    );
    expect(res.statusCode).toBe(200);
    expect(decodeJwt(res.json().token).access).toEqual([
      { type: "repository", name: "team-b/app", actions: [] },
      { type: "repository", name: "team-a/app", actions: ["push"] },
    ]);
  });
});
