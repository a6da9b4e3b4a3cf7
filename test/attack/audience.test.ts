/**
 * Attack: a workload holding a token with several audiences, one of them the API server's own
 * (TokenRequest accepts a list of audiences). The config refuses API-server audiences
 * (docs/security-lifetimes.md, "The API server's own audience") so that no token sent here also works
 * against the Kubernetes API; a token that carries this service's audience *and* the API server's would
 * still do so: it is refused the same way, unless its cluster sets `allowApiServerAudience: true`.
 */
import { afterEach, describe, expect, it } from "vitest";
import { buildApp } from "../../src/app.js";
import { AUDIENCE, basic, SERVICE, type TestEnv, testEnv } from "../helpers/fixtures.js";

let env: TestEnv | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
});

function tokenGet(e: TestEnv, token: string) {
  return e.app.inject({
    method: "GET",
    url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull`,
    headers: { authorization: basic(token) },
  });
}

const API_AUDIENCES = [
  "https://kubernetes.default.svc",
  "https://kubernetes.default.svc.cluster.local/",
  "KUBERNETES.DEFAULT.SVC",
];

describe("a token that also carries an API-server audience", () => {
  it.each(API_AUDIENCES)("[registry audience, %s]: 401 invalid_audience", async (api) => {
    env = await testEnv();
    const token = await env.issuer.mint({
      namespace: "team-a",
      serviceAccount: "app",
      audiences: [AUDIENCE, api],
    });
    const res = await tokenGet(env, token);
    expect(res.statusCode, res.body).toBe(401);
    expect(res.json()).toEqual({
      errors: [
        {
          code: "UNAUTHORIZED",
          message:
            '"aud" claim also contains an audience of the Kubernetes API server: request a token for this service\'s audience only',
          detail: { reason: "invalid_audience" },
        },
      ],
    });
  });

  it("the cluster's own issuer as a second audience is refused too", async () => {
    env = await testEnv();
    const token = await env.issuer.mint({
      namespace: "team-a",
      serviceAccount: "app",
      audiences: [AUDIENCE, env.issuerUrl],
    });
    const res = await tokenGet(env, token);
    expect(res.statusCode).toBe(401);
    expect(res.json().errors[0].detail.reason).toBe("invalid_audience");
    expect(res.body).not.toContain(env.issuerUrl);
  });

  it("accepted when the cluster opts in (allowApiServerAudience: true), and a single audience is unchanged", async () => {
    env = await testEnv();
    expect(
      (
        await tokenGet(
          env,
          await env.issuer.mint({ namespace: "team-a", serviceAccount: "app", audiences: [AUDIENCE] }),
        )
      ).statusCode,
    ).toBe(200);
    await env.close();
    const opted = await testEnv();
    env = opted;
    const cluster = { ...opted.config.clusters[0]!, allowApiServerAudience: true };
    const app = await buildApp({ ...opted.config, clusters: [cluster] });
    try {
      const token = await opted.issuer.mint({
        namespace: "team-a",
        serviceAccount: "app",
        audiences: [AUDIENCE, "https://kubernetes.default.svc"],
      });
      const res = await app.inject({
        method: "GET",
        url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull`,
        headers: { authorization: basic(token) },
      });
      expect(res.statusCode, res.body).toBe(200);
    } finally {
      await app.close();
    }
  });
});
