/**
 * When the API server cannot answer a TokenReview (or a ServiceAccount read): down, 401 (our bearer token
 * refused), 403 (RBAC), 429 with Retry-After, 500, slow past `review.timeoutMs`. Each fails closed with a
 * documented 4xx (never a 5xx, never past the timeout), a metric, a log line and `/readyz` detail, and
 * no log line carries the reviewed token or the API bearer token.
 */
import { afterEach, describe, expect, it } from "vitest";
import type { ApiFailure } from "../helpers/apiserver.js";
import { dockerError, oauthError } from "../helpers/credential-provider.js";
import { SERVICE } from "../helpers/fixtures.js";
import { credentialProvider, type ReviewEnv, reviewEnv, TOKENS, tokenGet } from "../helpers/tokenreview.js";
import { generateTestPki } from "../server/helpers.js";

let env: ReviewEnv | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
});

const unavailable = (failure: string) => `the API server cannot review the token right now (${failure})`;

async function metric(e: ReviewEnv, line: string): Promise<string | undefined> {
  const body = (await e.app.inject({ url: "/metrics" })).body;
  return body.split("\n").find((l) => l.startsWith(line));
}

const CASES: Array<{ name: string; failure: ApiFailure | "down"; outcome: string; status: number }> = [
  { name: "down (connection refused)", failure: "down", outcome: "unreachable", status: 401 },
  {
    name: "401: the service's own bearer token is refused",
    failure: { status: 401 },
    outcome: "unauthorized",
    status: 401,
  },
  {
    name: "403: RBAC does not allow creating tokenreviews",
    failure: { status: 403 },
    outcome: "forbidden",
    status: 401,
  },
  { name: "500 from the API server", failure: { status: 500 }, outcome: "server_error", status: 401 },
  {
    name: "slow: no answer within review.timeoutMs",
    failure: { slowMs: 5_000 },
    outcome: "timeout",
    status: 401,
  },
];

describe("API server failures fail closed", () => {
  for (const c of CASES) {
    it(`${c.name}: ${c.status} token_review_unavailable, metric, log line, /readyz detail`, async () => {
      env = await reviewEnv();
      if (c.failure === "down") await env.api.stop();
      else env.api.fail = c.failure;
      const started = Date.now();
      const res = await tokenGet(env.app, TOKENS.podBound);
      // Bounded by review.timeoutMs (500 ms), not by the API server (which would take 5 s when slow).
      expect(Date.now() - started).toBeLessThan(5_000);
      expect(res.statusCode).toBe(c.status);
      expect(res.json()).toEqual(
        dockerError("UNAUTHORIZED", "token_review_unavailable", unavailable(c.outcome)),
      );
      const post = await env.app.inject({
        method: "POST",
        url: "/token",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        payload: new URLSearchParams({
          grant_type: "password",
          username: "x",
          password: TOKENS.podBound,
          service: SERVICE,
          client_id: "containerd-client",
        }).toString(),
      });
      expect(post.statusCode).toBe(401);
      expect(post.json()).toEqual(oauthError("temporarily_unavailable", unavailable(c.outcome)));
      expect(
        await metric(
          env,
          `rte_kube_api_calls_total{cluster="kind",call="tokenreview",outcome="${c.outcome}"}`,
        ),
      ).toMatch(/ 2$/);
      const logged = env.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(logged).toContainEqual(
        expect.objectContaining({
          msg: "kubernetes API call failed",
          cluster: "kind",
          call: "tokenreview",
          failure: c.outcome,
        }),
      );
      const ready = await env.app.inject({ url: "/readyz" });
      expect(ready.json().apiServers.kind).toMatchObject({
        verification: "both",
        annotations: "fromRequest",
        state: "failing",
        lastFailure: { failure: c.outcome },
      });
      const all = env.lines.join("\n");
      expect(all).not.toContain(TOKENS.podBound.split(".")[1]!);
      expect(all).not.toContain("apiserver-bearer-1");
    });
  }

  it("429 with Retry-After: passed on as 429 with the API server's Retry-After", async () => {
    env = await reviewEnv();
    env.api.fail = { status: 429, retryAfterSeconds: 7 };
    const res = await tokenGet(env.app, TOKENS.podBound);
    expect(res.statusCode).toBe(429);
    expect(res.headers["retry-after"]).toBe("7");
    expect(res.json()).toEqual(
      dockerError(
        "TOOMANYREQUESTS",
        "rate_limited",
        "the API server is rate limiting this service; retry later",
      ),
    );
    expect(
      await metric(env, 'rte_kube_api_calls_total{cluster="kind",call="tokenreview",outcome="rate_limited"}'),
    ).toMatch(/ 1$/);
    expect((await env.app.inject({ url: "/readyz" })).json().apiServers.kind.lastFailure).toMatchObject({
      failure: "rate_limited",
      status: 429,
    });
  });

  it("recovers as soon as the API server answers again; /readyz says ok", async () => {
    env = await reviewEnv();
    env.api.fail = { status: 403 };
    expect((await tokenGet(env.app, TOKENS.podBound)).statusCode).toBe(401);
    env.api.fail = undefined;
    expect((await tokenGet(env.app, TOKENS.podBound)).statusCode).toBe(200);
    const ready = await env.app.inject({ url: "/readyz" });
    expect(ready.json().apiServers.kind.state).toBe("ok");
  });

  it("a failing ServiceAccount read (annotations: fromCluster) refuses the exchange the same way", async () => {
    env = await reviewEnv({ verification: "offline", annotations: "fromCluster" });
    env.api.fail = { status: 403 };
    const res = await credentialProvider(env.app, TOKENS.kubelet);
    expect(res.statusCode).toBe(401);
    expect(res.json()).toEqual(
      dockerError(
        "UNAUTHORIZED",
        "token_review_unavailable",
        "the API server cannot review the token right now (forbidden)",
      ),
    );
    expect(
      await metric(env, 'rte_kube_api_calls_total{cluster="kind",call="serviceaccount",outcome="forbidden"}'),
    ).toMatch(/ 1$/);
  });

  it("an offline cluster never calls the API server, whatever its state", async () => {
    env = await reviewEnv({ verification: "offline" });
    await env.api.stop();
    expect((await tokenGet(env.app, TOKENS.podBound)).statusCode).toBe(200);
    expect((await env.app.inject({ url: "/readyz" })).json().apiServers).toEqual({});
  });
});

describe("TLS to the API server (apiServer.caFile)", () => {
  it("trusts the API server's certificate through caFile, and refuses it without", async () => {
    const pki = await generateTestPki();
    const tls = { certFile: pki.certFile, keyFile: pki.keyFile };
    env = await reviewEnv({ apiServer: { caFile: pki.caFile } }, {}, { tls });
    expect(env.api.url).toMatch(/^https:/);
    expect((await tokenGet(env.app, TOKENS.podBound)).statusCode).toBe(200);
    expect(env.api.reviews()).toBe(1);
    await env.close();
    // Without the CA the certificate is unknown: nothing is sent, the request fails closed.
    env = await reviewEnv({}, {}, { tls });
    const res = await tokenGet(env.app, TOKENS.podBound);
    expect(res.statusCode).toBe(401);
    expect(res.json()).toEqual(
      dockerError("UNAUTHORIZED", "token_review_unavailable", unavailable("unreachable")),
    );
    expect(env.api.reviews()).toBe(0);
  });
});
