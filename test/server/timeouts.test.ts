/**
 * Server timeouts: keep-alive longer than a load balancer's idle timeout (so the balancer, not the
 * service, closes idle connections), a headers timeout against slow clients, a request timeout, and the
 * config checks that keep them consistent.
 */
import { createConnection, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config/load.js";
import { ConfigError } from "../../src/errors.js";
import { startLocalIssuerServer } from "../../src/local/issuer.js";
import { type RunningServer, startServer } from "../../src/server.js";
import { testConfig } from "../helpers/fixtures.js";

let server: RunningServer | undefined;
let closeIssuer: (() => Promise<void>) | undefined;
afterEach(async () => {
  await server?.close();
  await closeIssuer?.();
  server = undefined;
  closeIssuer = undefined;
});

async function start(serverOverrides: Record<string, unknown> = {}): Promise<RunningServer> {
  const issuer = await startLocalIssuerServer();
  closeIssuer = issuer.close;
  const config = await testConfig(issuer.url, { server: { host: "127.0.0.1", port: 0, ...serverOverrides } });
  server = await startServer(config, { logger: pino({ level: "silent" }) });
  return server;
}

/** Sends `GET path` on a raw keep-alive socket; resolves with the socket once the answer has arrived. */
async function getKeepAlive(url: string): Promise<Socket> {
  const { hostname, port, pathname } = new URL(url);
  const socket = createConnection({ host: hostname, port: Number(port) });
  await new Promise((r) => socket.once("connect", r));
  const answered = new Promise((r) => socket.once("data", r));
  socket.write(`GET ${pathname} HTTP/1.1\r\nHost: ${hostname}\r\nConnection: keep-alive\r\n\r\n`);
  await answered;
  return socket;
}

describe("server timeouts", () => {
  it("defaults: keep-alive 75 s (above the 60 s idle timeout of common load balancers)", async () => {
    const s = await start();
    expect(s.app.server.keepAliveTimeout).toBe(75_000);
    expect(s.app.server.keepAliveTimeout).toBeGreaterThan(60_000);
    expect(s.app.server.headersTimeout).toBe(15_000);
    expect(s.app.server.requestTimeout).toBe(30_000);
    expect(s.app.server.headersTimeout).toBeLessThanOrEqual(s.app.server.requestTimeout);
  });

  it("applies the configured values", async () => {
    const s = await start({ keepAliveTimeoutMs: 620_000, headersTimeoutMs: 5_000, requestTimeoutMs: 20_000 });
    expect(s.app.server.keepAliveTimeout).toBe(620_000);
    expect(s.app.server.headersTimeout).toBe(5_000);
    expect(s.app.server.requestTimeout).toBe(20_000);
  });

  it("keeps an idle connection open for the keep-alive timeout, and closes it after", async () => {
    const s = await start({ keepAliveTimeoutMs: 1_000 });
    const socket = await getKeepAlive(`${s.url}/healthz`);
    let closedAt = 0;
    socket.once("close", () => {
      closedAt = Date.now();
    });
    const idleSince = Date.now();
    await sleep(500);
    expect(closedAt).toBe(0);
    for (let i = 0; i < 60 && closedAt === 0; i++) await sleep(50);
    expect(closedAt).toBeGreaterThan(0);
    expect(closedAt - idleSince).toBeGreaterThanOrEqual(900);
  });

  it("refuses a headers timeout above the request timeout", () => {
    const base = {
      clusters: [{ name: "a", issuer: "https://a.example", audiences: ["x"] }],
      registries: [{ service: "s", issuer: "i", signingKey: { keyFile: "k", certFile: "c" } }],
      policy: { rules: [{ name: "r", allow: [{ repository: "**", actions: ["pull"] }] }] },
    };
    expect(() =>
      parseConfig({ ...base, server: { headersTimeoutMs: 40_000, requestTimeoutMs: 30_000 } }),
    ).toThrow(ConfigError);
    try {
      parseConfig({ ...base, server: { headersTimeoutMs: 40_000, requestTimeoutMs: 30_000 } });
    } catch (err) {
      expect((err as ConfigError).problems).toEqual([
        "server.headersTimeoutMs: must be <= server.requestTimeoutMs",
      ]);
    }
    expect(() => parseConfig({ ...base, server: { keepAliveTimeoutMs: 10 } })).toThrow(ConfigError);
  });
});
