/**
 * The audit log: one line per decision. An issued token names who, what was asked and granted, which
 * rules matched, the token's `jti`, whether it came from the cache, and from where; a refused credential
 * names the reason code and the client address. No line ever contains a token.
 */
import { decodeJwt } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildApp } from "../../src/app.js";
import { startLocalIssuerServer } from "../../src/local/issuer.js";
import { AUDIENCE, basic, capturingLogger, SERVICE, testConfig } from "../helpers/fixtures.js";

type Line = { msg: string; time: number; audit?: Record<string, unknown> };

describe("audit log", () => {
  let close: () => Promise<void>;
  let app: Awaited<ReturnType<typeof buildApp>>;
  let lines: string[];
  let mint: (opts?: { nowMs?: number; ttlSeconds?: number }) => Promise<string>;
  beforeAll(async () => {
    const server = await startLocalIssuerServer();
    const config = await testConfig(server.url);
    const captured = capturingLogger("info");
    lines = captured.lines;
    app = await buildApp(config, { logger: captured.logger });
    mint = (opts = {}) =>
      server.issuer.mint({
        namespace: "team-a",
        serviceAccount: "builder",
        audiences: [AUDIENCE],
        podName: "builder-7d9f",
        ...opts,
      });
    close = async () => {
      await app.close();
      await server.close();
    };
  });
  afterAll(async () => close());

  const audits = (decision: string): Line[] =>
    lines.map((l) => JSON.parse(l) as Line).filter((l) => l.audit?.decision === decision);

  it("writes one line per issued token with every field an operator needs", async () => {
    const sa = await mint();
    const url = `/token?service=${SERVICE}&scope=repository:team-a/app:pull,push&scope=repository:team-b/app:pull`;
    const before = audits("issued").length;
    const first = await app.inject({ method: "GET", url, headers: { authorization: basic(sa) } });
    const second = await app.inject({ method: "GET", url, headers: { authorization: basic(sa) } });
    expect(first.statusCode).toBe(200);
    expect(second.statusCode).toBe(200);
    const issued = audits("issued").slice(before);
    expect(issued).toHaveLength(2);
    const [a, b] = issued as [Line, Line];
    expect(a.msg).toBe("token issued");
    expect(a.audit).toMatchObject({
      decision: "issued",
      cluster: "test",
      namespace: "team-a",
      serviceAccount: "builder",
      pod: "builder-7d9f",
      service: SERVICE,
      requested: ["repository:team-a/app:pull,push", "repository:team-b/app:pull"],
      granted: ["repository:team-a/app:pull,push"],
      rules: ["teams push to their own namespace"],
      jti: decodeJwt(first.json().token).jti,
      cacheHit: false,
      client: "127.0.0.1",
    });
    expect(Date.parse(a.audit!.time as string)).toBeGreaterThan(Date.now() - 60_000);
    expect(b.audit).toMatchObject({ cacheHit: true, jti: a.audit!.jti });
    expect(a.audit!.saTokenId).toBe(decodeJwt(sa).jti);
  });

  it("writes one line per refused credential with the reason and the client address", async () => {
    const expired = await mint({ nowMs: Date.now() - 3600_000, ttlSeconds: 600 });
    const before = audits("denied").length;
    const res = await app.inject({
      method: "GET",
      url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull`,
      headers: { authorization: basic(expired) },
      remoteAddress: "10.1.2.3",
    });
    expect(res.statusCode).toBe(401);
    const post = await app.inject({
      method: "POST",
      url: "/token",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      payload: new URLSearchParams({
        grant_type: "password",
        service: SERVICE,
        scope: "repository:team-a/app:pull repository:library/x:pull",
        password: "not-a-token",
      }).toString(),
      remoteAddress: "10.9.9.9",
    });
    expect(post.statusCode).toBe(401);
    const denied = audits("denied").slice(before);
    expect(denied).toHaveLength(2);
    expect(denied[0]!.msg).toBe("credential denied");
    expect(denied[0]!.audit).toMatchObject({
      decision: "denied",
      reason: "token_expired",
      status: 401,
      method: "GET",
      route: "/token",
      service: SERVICE,
      requested: ["repository:team-a/app:pull"],
      client: "10.1.2.3",
    });
    expect(Date.parse(denied[0]!.audit!.time as string)).toBeGreaterThan(Date.now() - 60_000);
    expect(denied[1]!.audit).toMatchObject({
      reason: "malformed_token",
      method: "POST",
      requested: ["repository:team-a/app:pull", "repository:library/x:pull"],
      client: "10.9.9.9",
    });
  });

  it("does not audit requests that never presented a credential for checking", async () => {
    const before = audits("denied").length;
    const res = await app.inject({ method: "GET", url: "/token?scope=repository:a:pull" });
    expect(res.statusCode).toBe(400);
    expect(audits("denied").length).toBe(before);
  });

  it("never logs a token", async () => {
    const sa = await mint();
    const res = await app.inject({
      method: "GET",
      url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull`,
      headers: { authorization: basic(sa) },
    });
    const bad = `${sa.slice(0, -4)}AAAA`;
    await app.inject({
      method: "GET",
      url: `/token?service=${SERVICE}`,
      headers: { authorization: `Bearer ${bad}` },
    });
    const all = lines.join("\n");
    expect(all).not.toContain(sa.split(".")[2]!);
    expect(all).not.toContain(bad.split(".")[2]!);
    expect(all).not.toContain(res.json().token.split(".")[2]);
  });
});
