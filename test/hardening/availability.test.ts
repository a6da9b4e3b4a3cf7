/**
 * A peer that never finishes its request bodies only hurts itself (issue 12 §4), on a real server and
 * real sockets:
 * - several hundred POST /token requests from one address (127.0.0.2) whose bodies never complete take
 *   no concurrency slot (a slot is taken once the body is complete, when the handler runs), so another
 *   address (127.0.0.1) keeps getting tokens; the latency of those fetches is printed, not asserted;
 * - one address may hold at most `server.maxStalledRequestsPerAddress` stalled requests (body incomplete a
 *   second after the headers): its next one gets 429 `rate_limited` at once, in the endpoint's format;
 * - a body that has not arrived within `server.bodyTimeoutMs` gets 408 `invalid_request` and the
 *   connection is closed, long before `server.requestTimeoutMs`.
 * - an overload rejection (503 `overloaded`) writes one warn line without a stack;
 * - `server.trustProxy` as a hop count or proxy addresses/CIDRs: the address the proxy appended to
 *   `X-Forwarded-For`, never the client-supplied left-most entry, keys rate limits and the access line;
 *   `true` is refused.
 * The whole of 127.0.0.0/8 is loopback on Linux: the client sockets bind `localAddress` to pick their
 * source address.
 */
import { connect, type Socket } from "node:net";
import { Agent, request } from "undici";
import { afterEach, describe, expect, it } from "vitest";
import { buildApp } from "../../src/app.js";
import { startLocalIssuerServer } from "../../src/local/issuer.js";
import { STALL_GRACE_MS } from "../../src/plugins/load-shedding.js";
import { type RunningServer, startServer } from "../../src/server.js";
import { AUDIENCE, basic, capturingLogger, SERVICE, testConfig } from "../helpers/fixtures.js";
import { startSlowIssuer } from "../server/helpers.js";

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

const STALLED = 400;

async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what}: not reached within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A running service trusting a local issuer; `server` settings override the defaults. */
async function service(server: Record<string, unknown>, level = "silent") {
  const issuer = await startLocalIssuerServer();
  cleanup.push(() => issuer.close());
  const { logger, lines } = capturingLogger(level);
  const config = await testConfig(issuer.url, {
    server: { host: "127.0.0.1", port: 0, ...server },
    rateLimit: { maxPerAddress: 1_000_000 },
  });
  const running: RunningServer = await startServer(config, { logger });
  cleanup.push(() => running.close());
  const port = Number(new URL(running.url).port);
  return { issuer: issuer.issuer, running, port, lines };
}

/** What a stalled client received so far. */
interface Stalled {
  socket: Socket;
  received: string;
  closed: boolean;
}

/**
 * Opens a connection from `localAddress` and sends a POST /token whose body announces 1000 bytes but
 * carries only 20: the server waits for the rest.
 */
function stalledPost(port: number, localAddress: string): Promise<Stalled> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port, localAddress });
    const state: Stalled = { socket, received: "", closed: false };
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => {
      state.received += d;
    });
    socket.on("close", () => {
      state.closed = true;
    });
    socket.once("error", (err) => {
      if (!state.closed) reject(err);
    });
    socket.once("connect", () => {
      socket.write(
        "POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
          "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n" +
          "grant_type=password&",
        () => resolve(state),
      );
    });
  });
}

describe("stalled request bodies", () => {
  it(`${STALLED} unfinished bodies from 127.0.0.2 take no slot: 127.0.0.1 keeps getting tokens`, async () => {
    const { issuer, running, port } = await service({
      maxConcurrentRequests: 64,
      maxStalledRequestsPerAddress: STALLED,
    });
    const stalled = await Promise.all(Array.from({ length: STALLED }, () => stalledPost(port, "127.0.0.2")));
    cleanup.push(() => {
      for (const s of stalled) s.socket.destroy();
    });
    // Every stalled request reaches the server and waits there for its body.
    await new Promise((r) => setTimeout(r, 300));

    const agent = new Agent({ connections: 8, localAddress: "127.0.0.1" });
    cleanup.push(() => agent.close());
    const fetches = 100;
    const tokens = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        issuer.mint({ namespace: "team-a", serviceAccount: `client-${i}`, audiences: [AUDIENCE] }),
      ),
    );
    const latencies: number[] = [];
    const statuses: number[] = [];
    await Promise.all(
      Array.from({ length: 4 }, async (_, lane) => {
        for (let i = lane; i < fetches; i += 4) {
          const started = performance.now();
          const res = await request(
            `${running.url}/token?service=${SERVICE}&scope=repository:team-a/app:pull`,
            {
              dispatcher: agent,
              headers: { authorization: basic(tokens[i % tokens.length]!) },
            },
          );
          await res.body.dump();
          latencies.push(performance.now() - started);
          statuses.push(res.statusCode);
        }
      }),
    );
    expect(statuses).toEqual(statuses.map(() => 200));
    latencies.sort((a, b) => a - b);
    const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!;
    console.info(
      `[stalled bodies] ${STALLED} stalled from 127.0.0.2; ${fetches} GET /token from 127.0.0.1: ` +
        `p50 ${at(0.5).toFixed(1)} ms, p99 ${at(0.99).toFixed(1)} ms, max ${at(1).toFixed(1)} ms`,
    );
    // The stalled requests are still waiting (none was answered); none holds a slot.
    expect(stalled.filter((s) => s.received !== "").length).toBe(0);
    expect(running.app.exchange.inFlight()).toBe(0);
  }, 60_000);

  it("one address holds at most maxStalledRequestsPerAddress stalled requests; the next gets 429", async () => {
    const { port, running } = await service({ maxStalledRequestsPerAddress: 4 });
    const held = await Promise.all(Array.from({ length: 4 }, () => stalledPost(port, "127.0.0.2")));
    cleanup.push(() => {
      for (const s of held) s.socket.destroy();
    });
    // Past the grace period, the four count as stalled.
    await new Promise((r) => setTimeout(r, STALL_GRACE_MS + 300));
    const fifth = await stalledPost(port, "127.0.0.2");
    cleanup.push(() => fifth.socket.destroy());
    await until("the fifth is answered", () => fifth.received.includes("\r\n\r\n{"));
    expect(fifth.received).toMatch(/^HTTP\/1\.1 429 /);
    expect(fifth.received).toMatch(/\r\nretry-after: 1\r\n/i);
    expect(JSON.parse(fifth.received.slice(fifth.received.indexOf("\r\n\r\n") + 4))).toEqual({
      error: "temporarily_unavailable",
      error_description: "too many unfinished requests from this address: finish or close them first",
    });
    expect(held.filter((s) => s.received !== "").length).toBe(0);
    // Another address is not affected.
    const other = await request(`${running.url}/token?service=${SERVICE}`, {
      headers: { authorization: "Bearer x" },
      dispatcher: new Agent({ localAddress: "127.0.0.3" }),
    });
    expect(other.statusCode).toBe(401);
    await other.body.dump();
  });

  it("a body not received within bodyTimeoutMs gets 408 and the connection is closed", async () => {
    const { port, lines } = await service({ bodyTimeoutMs: 1_000, requestTimeoutMs: 60_000 }, "info");
    const s = await stalledPost(port, "127.0.0.2");
    cleanup.push(() => s.socket.destroy());
    await until("answered and closed", () => s.closed, 15_000);
    expect(s.received).toMatch(/^HTTP\/1\.1 408 /);
    expect(s.received).toMatch(/\r\nconnection: close\r\n/i);
    expect(JSON.parse(s.received.slice(s.received.indexOf("\r\n\r\n") + 4))).toEqual({
      error: "invalid_request",
      error_description: "the request body was not received within 1000 ms",
    });
    await until("the access line is written", () => lines.some((l) => l.includes('"statusCode":408')));
    await new Promise((r) => setTimeout(r, 200));
    // One access line naming the reason; no warning or error line, no stack.
    const access = lines.filter((l) => l.includes('"statusCode":408'));
    expect(access).toHaveLength(1);
    expect(JSON.parse(access[0]!)).toMatchObject({ msg: "request rejected", code: "invalid_request" });
    expect(lines.filter((l) => /"level":(40|50)/.test(l))).toEqual([]);
    expect(lines.join("")).not.toContain('"stack"');
  });
});

describe("overload rejections in the log", () => {
  it("a request shed for overload writes one warn line without a stack, and no error line", async () => {
    const slow = await startSlowIssuer();
    cleanup.push(() => slow.close());
    slow.delayMs = 2_000;
    const { logger, lines } = capturingLogger("info");
    const config = await testConfig(slow.url, {
      server: { host: "127.0.0.1", port: 0, maxConcurrentRequests: 1 },
      rateLimit: { maxPerAddress: 1_000_000 },
    });
    const app = await buildApp(config, { logger });
    cleanup.push(() => app.close());
    const token = await slow.issuer.mint({ namespace: "team-a", serviceAccount: "a", audiences: [AUDIENCE] });
    const url = `/token?service=${SERVICE}&scope=repository:team-a/app:pull`;
    const held = app.inject({ method: "GET", url, headers: { authorization: basic(token) } });
    await slow.nextHeldJwks();
    const shed = await app.inject({ method: "GET", url, headers: { authorization: basic(token) } });
    expect(shed.statusCode).toBe(503);
    expect((await held).statusCode).toBe(200);
    const shedLines = lines.filter((l) => l.includes('"reqId":"req-2"'));
    const warn = shedLines.filter((l) => l.includes('"level":40'));
    expect(warn).toHaveLength(1);
    expect(JSON.parse(warn[0]!)).toMatchObject({
      msg: "request shed: too many requests in progress",
      code: "overloaded",
      detail: { inFlight: 1, max: 1 },
    });
    expect(lines.filter((l) => l.includes('"level":50'))).toEqual([]);
    expect(lines.join("")).not.toContain('"stack"');
  });
});

describe("server.trustProxy", () => {
  const proxy = "10.1.2.3";
  /** Requests through one proxy at `proxy`, each with a different client-supplied left-most entry. */
  async function throughProxy(trustProxy: unknown) {
    const issuer = await startLocalIssuerServer();
    cleanup.push(() => issuer.close());
    const { logger, lines } = capturingLogger("info");
    const config = await testConfig(issuer.url, {
      server: { host: "127.0.0.1", port: 0, trustProxy },
      rateLimit: { maxPerAddress: 3 },
    });
    const app = await buildApp(config, { logger });
    cleanup.push(() => app.close());
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await app.inject({
        method: "GET",
        url: `/token?service=${SERVICE}`,
        remoteAddress: proxy,
        // The client wrote the first entry; the proxy appended the address it saw.
        headers: { authorization: "Bearer x", "x-forwarded-for": `198.51.100.${i}, 203.0.113.9` },
      });
      statuses.push(res.statusCode);
    }
    const addresses = lines
      .filter((l) => l.includes('"path":"/token"'))
      .map((l) => (JSON.parse(l) as { req: { remoteAddress: string } }).req.remoteAddress);
    return { statuses, addresses };
  }

  it.each([
    ["a hop count", 1],
    ["the proxy's CIDR", ["10.0.0.0/8"]],
    ["the proxy's address", [proxy]],
  ])("with %s, the address the proxy appended keys rate limits and the access line", async (_, setting) => {
    const { statuses, addresses } = await throughProxy(setting);
    expect(statuses).toEqual([401, 401, 401, 429, 429]);
    expect(addresses).toEqual(Array.from({ length: 5 }, () => "203.0.113.9"));
  });

  it("false (the default): the proxy's own address is the client", async () => {
    const { addresses } = await throughProxy(false);
    expect(addresses).toEqual(Array.from({ length: 5 }, () => proxy));
  });

  it("refuses true, and malformed proxy addresses, with the dotted path", async () => {
    const issuer = "http://127.0.0.1:1";
    await expect(testConfig(issuer, { server: { trustProxy: true } })).rejects.toThrow(
      "server.trustProxy: true would trust every X-Forwarded-For hop, so a client could choose the address that keys rate limits and the audit log: set the number of proxies in front of the service (e.g. 1) or their addresses/CIDRs",
    );
    await expect(testConfig(issuer, { server: { trustProxy: ["10.0.0.0/33"] } })).rejects.toThrow(
      "server.trustProxy[0]: must be an IP address, a CIDR (10.0.0.0/8) or one of loopback, linklocal, uniquelocal",
    );
    await expect(testConfig(issuer, { server: { trustProxy: 0 } })).rejects.toThrow("server.trustProxy");
  });
});
