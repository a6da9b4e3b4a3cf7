/**
 * Load shedding and size caps, on the running service (`startServer`):
 * - a burst far above `server.maxConcurrentRequests` of uncached requests, while the cluster's key fetch
 *   hangs (its apiserver frozen), gets fast 503 `overloaded` answers with `Retry-After: 1` in each
 *   endpoint's format; memory stays bounded; once the dependency answers, the admitted requests succeed
 *   and normal traffic is served again without any intervention (no slot leaks, even from clients that
 *   hung up);
 * - over real sockets: an oversized request target or header section gets the service's JSON 414/431,
 *   not Node's bare 431, up to Node's own (raised) limit; past it, the parser refuses the request and the
 *   service's client-error handler answers 431 in the same format without logging the raw request.
 */
import { request as httpRequest } from "node:http";
import type { FastifyInstance, LightMyRequestResponse } from "fastify";
import { Agent, request } from "undici";
import { afterEach, describe, expect, it } from "vitest";
import type { LocalIssuer } from "../../src/local/issuer.js";
import { MAX_HEADER_BYTES, NODE_MAX_HEADER_SIZE } from "../../src/plugins/request-limits.js";
import { type RunningServer, startServer } from "../../src/server.js";
import { AUDIENCE, basic, capturingLogger, SERVICE, testConfig } from "../helpers/fixtures.js";
import { expectMatchesSpec } from "../helpers/openapi.js";
import { IssuerProcess } from "./helpers/issuer-child.js";

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

const LIMIT = 16;
const BURST = 3000;
const OVERLOADED_MESSAGE = "the service is busy: too many requests in progress, retry shortly";

async function until(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not reached within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A frozen apiserver and the service trusting it, limited to {@link LIMIT} requests in flight. */
async function overloadable(): Promise<{ live: IssuerProcess; server: RunningServer; app: FastifyInstance }> {
  const live = await IssuerProcess.create();
  cleanup.push(() => live.close());
  await live.start();
  live.freeze();
  const { logger } = capturingLogger("warn");
  const config = await testConfig(live.url, {
    clusters: [{ name: "live", issuer: live.url, audiences: [AUDIENCE] }],
    server: { host: "127.0.0.1", port: 0, maxConcurrentRequests: LIMIT },
    rateLimit: { maxPerAddress: 1_000_000 },
  });
  const server = await startServer(config, { logger });
  cleanup.push(() => server.close());
  return { live, server, app: server.app };
}

function tokens(issuer: LocalIssuer, n: number): Promise<string[]> {
  return Promise.all(
    Array.from({ length: n }, (_, i) =>
      issuer.mint({ namespace: "team-a", serviceAccount: `burst-${i}`, audiences: [AUDIENCE] }),
    ),
  );
}

describe("load shedding", () => {
  it("a burst of 3,000 uncached requests against a limit of 16: fast 503s, bounded memory, then recovery", async () => {
    const { live, app } = await overloadable();
    const sas = await tokens(live.issuer, 50);
    const rssBefore = process.memoryUsage().rss;
    const started = performance.now();
    const done: Array<{ res: LightMyRequestResponse; ms: number }> = [];
    const all = Array.from({ length: BURST }, (_, i) => {
      const sa = sas[i % sas.length]!;
      const req =
        i % 2 === 0
          ? app.inject({
              method: "GET",
              url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull`,
              headers: { authorization: basic(sa) },
            })
          : app.inject({
              method: "POST",
              url: "/token",
              headers: { "content-type": "application/x-www-form-urlencoded" },
              payload: new URLSearchParams({
                grant_type: "password",
                service: SERVICE,
                password: sa,
              }).toString(),
            });
      return req.then((res) => {
        done.push({ res, ms: performance.now() - started });
        return res;
      });
    });
    // Everything beyond the limit is answered while the admitted requests are still held.
    await until("all but the admitted answered", () => done.length === BURST - LIMIT);
    const shedMs = performance.now() - started;
    const rssAfter = process.memoryUsage().rss;
    expect(app.exchange.inFlight()).toBe(LIMIT);
    expect(app.exchange.keySets[0]!.fetchCount).toBe(1);
    // While the admitted requests are still held; bounded generously for a busy CI machine.
    expect(shedMs).toBeLessThan(10_000);
    for (const { res } of done) {
      expect(res.statusCode).toBe(503);
      expect(res.headers["retry-after"]).toBe("1");
    }
    const get = done.find((d) => d.res.json().errors !== undefined)!.res;
    expect(get.json()).toEqual({
      errors: [{ code: "UNAVAILABLE", message: OVERLOADED_MESSAGE, detail: { reason: "overloaded" } }],
    });
    expectMatchesSpec("GET", "/token", get);
    const post = done.find((d) => d.res.json().error !== undefined)!.res;
    expect(post.json()).toEqual({ error: "temporarily_unavailable", error_description: OVERLOADED_MESSAGE });
    expectMatchesSpec("POST", "/token", post);
    // Generous (the test itself keeps every answer): thousands of requests' worth must not pile up.
    expect(rssAfter - rssBefore).toBeLessThan(200 * 1024 * 1024);
    console.info(
      `[overload] ${done.length} of ${BURST} shed in ${Math.round(shedMs)} ms; rss ${Math.round((rssAfter - rssBefore) / 2 ** 20)} MiB more`,
    );

    // The dependency answers: the admitted requests succeed, and the service is back to normal by itself.
    live.thaw();
    const results = await Promise.all(all);
    expect(results.filter((r) => r.statusCode === 200)).toHaveLength(LIMIT);
    expect(app.exchange.inFlight()).toBe(0);
    for (const sa of await tokens(live.issuer, 40)) {
      const res = await app.inject({
        method: "GET",
        url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull`,
        headers: { authorization: basic(sa) },
      });
      expect(res.statusCode).toBe(200);
    }
    const metrics = await app.inject({ method: "GET", url: "/metrics" });
    expect(metrics.body).toMatch(/rte_denials_total\{reason="overloaded"\} 2984/);
  }, 30_000);

  it("over real sockets, counts a request whose client hung up until its work is done (no leaked slot)", async () => {
    const { live, app, server } = await overloadable();
    const sas = await tokens(live.issuer, LIMIT + 40);
    const agent = new Agent({ connections: null, keepAliveTimeout: 10 });
    cleanup.push(() => agent.close());
    const url = `${server.url}/token?service=${SERVICE}&scope=repository:team-a/app:pull`;
    // The first LIMIT take every slot and are held; half of their clients give up.
    const aborts = sas.slice(0, LIMIT).map(() => new AbortController());
    const held = sas.slice(0, LIMIT).map((sa, i) =>
      request(url, {
        dispatcher: agent,
        headers: { authorization: basic(sa) },
        signal: aborts[i]!.signal,
      }).then(
        async (r) => ({ status: r.statusCode, body: await r.body.text() }),
        (err: Error) => ({ status: 0, body: err.name }),
      ),
    );
    await until("slots taken", () => app.exchange.inFlight() === LIMIT);
    for (const a of aborts.slice(0, LIMIT / 2)) a.abort();
    await new Promise((r) => setTimeout(r, 200));
    // The work of the hung-up requests still runs: their slots stay taken, so the next ones are shed.
    expect(app.exchange.inFlight()).toBe(LIMIT);
    const shed = await Promise.all(
      sas.slice(LIMIT).map(async (sa) => {
        const r = await request(url, { dispatcher: agent, headers: { authorization: basic(sa) } });
        return { status: r.statusCode, retryAfter: r.headers["retry-after"], body: await r.body.json() };
      }),
    );
    for (const s of shed) {
      expect(s.status).toBe(503);
      expect(s.retryAfter).toBe("1");
      expect(s.body).toEqual({
        errors: [{ code: "UNAVAILABLE", message: OVERLOADED_MESSAGE, detail: { reason: "overloaded" } }],
      });
    }
    live.thaw();
    const answers = await Promise.all(held);
    expect(answers.slice(0, LIMIT / 2).map((a) => a.status)).toEqual(aborts.slice(0, LIMIT / 2).map(() => 0));
    expect(answers.slice(LIMIT / 2).map((a) => a.status)).toEqual(aborts.slice(LIMIT / 2).map(() => 200));
    await until("every slot given back", () => app.exchange.inFlight() === 0);
    const again = await request(url, {
      dispatcher: agent,
      headers: { authorization: basic(sas[0]!) },
    });
    expect(again.statusCode).toBe(200);
    await again.body.dump();
  }, 30_000);
});

/** A raw HTTP/1.1 GET with `headers`; resolves with the status, content type and body. */
function rawGet(
  base: string,
  path: string,
  headers: Record<string, string>,
): Promise<{ status: number; type: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${base}${path}`, { method: "GET", headers, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        body += d;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, type: res.headers["content-type"], body }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("size caps over real sockets", () => {
  it("answers the service's JSON 414/431 up to Node's raised limit, and past it too, logging no raw request", async () => {
    const { logger, lines } = capturingLogger("trace");
    const config = await testConfig("http://127.0.0.1:1", {
      server: { host: "127.0.0.1", port: 0 },
    });
    const server = await startServer(config, { logger });
    cleanup.push(() => server.close());
    const path = `/token?service=${SERVICE}`;

    // 20 KiB of headers: over Node's default 16 KiB (which would answer a bare 431), under the raised limit.
    const big = await rawGet(server.url, path, { "x-filler": "f".repeat(20 * 1024) });
    expect(big.status).toBe(431);
    expect(big.type).toBe("application/json; charset=utf-8");
    expect(JSON.parse(big.body)).toEqual({
      errors: [
        {
          code: "UNSUPPORTED",
          message: `request headers are larger than ${MAX_HEADER_BYTES} bytes`,
          detail: { reason: "invalid_request" },
        },
      ],
    });
    // An Authorization header of 13 KiB: the credential cap answers (401), in JSON, with the challenge.
    const auth = await rawGet(server.url, path, { authorization: `Bearer ${"a".repeat(13 * 1024)}` });
    expect(auth.status).toBe(401);
    expect(JSON.parse(auth.body).errors[0].detail.reason).toBe("malformed_credentials");
    // A 9 KiB query: the service's 414.
    const long = await rawGet(server.url, `${path}&client_id=${"c".repeat(9 * 1024)}`, {});
    expect(long.status).toBe(414);
    expect(JSON.parse(long.body).errors[0].message).toBe("request URL is longer than 8192 bytes");
    // Past Node's own limit the parser refuses the request before any route runs; the client-error
    // handler answers in the same format, and logs nothing of the request (fastify's default logs its raw
    // bytes, Authorization header included, at trace level).
    const secret = "hostileBearerSecret0123456789abcdefghij";
    const huge = await rawGet(server.url, path, {
      authorization: `Bearer ${secret}`,
      "x-filler": "f".repeat(NODE_MAX_HEADER_SIZE + 1024),
    });
    expect(huge.status).toBe(431);
    expect(huge.type).toBe("application/json; charset=utf-8");
    expect(JSON.parse(huge.body)).toEqual({
      errors: [
        {
          code: "UNSUPPORTED",
          message: `request line and headers are larger than ${NODE_MAX_HEADER_SIZE} bytes`,
          detail: { reason: "invalid_request" },
        },
      ],
    });
    await until("the client error is logged", () => lines.some((l) => l.includes('"msg":"client error"')));
    const log = lines.join("");
    expect(log).toContain('"code":"HPE_HEADER_OVERFLOW"');
    expect(log).not.toContain("rawPacket");
    expect(log).not.toContain(secret);
    expect(log).not.toContain(Buffer.from(secret).join(","));
    // And the service is unharmed.
    expect((await rawGet(server.url, "/healthz", {})).status).toBe(200);
  });
});
