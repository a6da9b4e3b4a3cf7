/**
 * Attack: an unauthenticated peer that opens connections and never sends a request, against a real
 * `serve --config` process on loopback (the clients read, so they see the server close).
 *
 * Held: over plain HTTP, Node counts `server.headersTimeoutMs` from the moment a connection is accepted,
 * so a silent connection is closed like one with unfinished headers. Found: over HTTPS, a connection
 * that never starts its TLS handshake was kept for Node's default `handshakeTimeout`, 120 s, whatever
 * `server.headersTimeoutMs` said; the service now sets `handshakeTimeout` to `server.headersTimeoutMs`
 * (docs/security-attack-review.md, finding 3).
 */
import type { ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { createConnection, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { connect as tlsConnect } from "node:tls";
import { afterEach, describe, expect, it } from "vitest";
import { startLocalIssuerServer } from "../../src/local/issuer.js";
import { freePort } from "../helpers/redis.js";
import { spawnServe } from "../helpers/serve-process.js";
import { generateTestPki, writeConfigFile } from "../server/helpers.js";

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

/** Starts `serve --config` with `server` settings; resolves once it listens. */
async function serve(server: Record<string, unknown>): Promise<{ port: number; child: ChildProcess }> {
  const issuer = await startLocalIssuerServer();
  cleanup.push(() => issuer.close());
  const port = await freePort();
  const file = await writeConfigFile(issuer.url, { host: "127.0.0.1", port, ...server });
  const { child, waitFor } = spawnServe(["serve", "--config", file], { cleanup });
  await waitFor("registry-token-exchange started");
  return { port, child };
}

/** Opens `n` connections that never send anything; reports when each is closed by the server. */
async function silentConnections(open: () => Socket, n: number): Promise<{ closed: () => number }> {
  let closed = 0;
  const sockets = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<Socket>((resolve, reject) => {
          const s = open();
          s.once("connect", () => resolve(s));
          s.once("error", reject);
        }),
    ),
  );
  for (const s of sockets) {
    // Reading, so the server's close is seen (a paused socket never notices it).
    s.resume();
    s.on("error", () => {});
    s.once("close", () => closed++);
  }
  cleanup.push(async () => {
    for (const s of sockets) s.destroy();
  });
  return { closed: () => closed };
}

async function waitUntil(done: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done() && Date.now() < deadline) await sleep(50);
}

describe("connections that never send a byte", () => {
  it("HTTP: closed after headersTimeoutMs (held)", async () => {
    const { port } = await serve({ headersTimeoutMs: 1000, requestTimeoutMs: 2000, bodyTimeoutMs: 1000 });
    const silent = await silentConnections(() => createConnection({ host: "127.0.0.1", port }), 40);
    await waitUntil(() => silent.closed() === 40, 5_000);
    expect(silent.closed()).toBe(40);
    expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
  });

  it("HTTPS: no TLS handshake within headersTimeoutMs, or no request after it: closed", async () => {
    const pki = await generateTestPki();
    const { port } = await serve({
      headersTimeoutMs: 1000,
      requestTimeoutMs: 2000,
      bodyTimeoutMs: 1000,
      tls: { certFile: pki.certFile, keyFile: pki.keyFile },
    });
    const ca = readFileSync(pki.caFile);
    const noHandshake = await silentConnections(() => createConnection({ host: "127.0.0.1", port }), 10);
    const handshakeOnly = await silentConnections(() => tlsConnect({ host: "127.0.0.1", port, ca }), 10);
    await waitUntil(() => noHandshake.closed() === 10 && handshakeOnly.closed() === 10, 6_000);
    expect(noHandshake.closed()).toBe(10);
    expect(handshakeOnly.closed()).toBe(10);
    // A real TLS client still gets through.
    const ok = await new Promise<boolean>((resolve) => {
      const s = tlsConnect({ host: "127.0.0.1", port, ca }, () => {
        resolve(s.authorized);
        s.destroy();
      });
      s.on("error", () => resolve(false));
    });
    expect(ok).toBe(true);
  });
});
