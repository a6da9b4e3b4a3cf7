/**
 * Attack: an unauthenticated peer that opens connections and never sends a byte, against a real
 * `serve --config` process on loopback.
 *
 * Node's `headersTimeout` starts at a request's first byte, and Node sets no socket idle timeout, so a
 * connection that stays silent was held for ever: a peer could pile them up until the process ran out of
 * file descriptors, and then nobody could connect. The rule (docs/security-availability.md, promise 1):
 * a connection that has sent nothing within `server.headersTimeoutMs` is closed (for HTTPS: no TLS
 * handshake within that time, Node's `handshakeTimeout`); a connection that has been used keeps its
 * keep-alive lifetime (`server.keepAliveTimeoutMs`), so load balancers' pooled connections are unaffected.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createConnection, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { connect as tlsConnect } from "node:tls";
import { afterEach, describe, expect, it } from "vitest";
import { startLocalIssuerServer } from "../../src/local/issuer.js";
import { freePort } from "../helpers/redis.js";
import { generateTestPki, writeConfigFile } from "../server/helpers.js";

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

/** Starts `serve --config` with `server` settings; resolves once it listens. */
async function serve(server: Record<string, unknown>): Promise<{ port: number; child: ChildProcess }> {
  const issuer = await startLocalIssuerServer();
  cleanup.push(() => issuer.close());
  const port = await freePort();
  const file = await writeConfigFile(issuer.url, { host: "127.0.0.1", port, ...server });
  const child = spawn(process.execPath, ["--import", "tsx", "src/bin.ts", "serve", "--config", file], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  cleanup.push(
    () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill("SIGKILL");
      }),
  );
  let out = "";
  child.stdout!.on("data", (d) => {
    out += String(d);
  });
  child.stderr!.on("data", (d) => {
    out += String(d);
  });
  const deadline = Date.now() + 30_000;
  while (!out.includes("registry-token-exchange started")) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`serve did not start:\n${out}`);
    await sleep(50);
  }
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
    s.on("error", () => {});
    s.once("close", () => closed++);
  }
  cleanup.push(() => {
    for (const s of sockets) s.destroy();
  });
  return { closed: () => closed };
}

/** A keep-alive connection that has completed one request. */
async function usedConnection(port: number): Promise<{ closedAt: () => number }> {
  const s = createConnection({ host: "127.0.0.1", port });
  await new Promise((r) => s.once("connect", r));
  const answered = new Promise((r) => s.once("data", r));
  s.write("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n");
  await answered;
  let closedAt = 0;
  s.once("close", () => {
    closedAt = Date.now();
  });
  cleanup.push(() => void s.destroy());
  return { closedAt: () => closedAt };
}

async function waitUntil(done: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done() && Date.now() < deadline) await sleep(50);
}

describe("connections that never send a byte", () => {
  it("HTTP: closed after headersTimeoutMs; a used keep-alive connection is kept", async () => {
    const { port } = await serve({
      headersTimeoutMs: 1000,
      requestTimeoutMs: 2000,
      bodyTimeoutMs: 1000,
      keepAliveTimeoutMs: 6000,
    });
    const used = await usedConnection(port);
    const silent = await silentConnections(() => createConnection({ host: "127.0.0.1", port }), 40);
    await waitUntil(() => silent.closed() === 40, 5_000);
    expect(silent.closed()).toBe(40);
    expect(used.closedAt()).toBe(0);
    // The service still answers.
    expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
  });

  it("HTTPS: no TLS handshake within headersTimeoutMs closes the connection", async () => {
    const pki = await generateTestPki();
    const { port } = await serve({
      headersTimeoutMs: 1000,
      requestTimeoutMs: 2000,
      bodyTimeoutMs: 1000,
      tls: { certFile: pki.certFile, keyFile: pki.keyFile },
    });
    const silent = await silentConnections(() => createConnection({ host: "127.0.0.1", port }), 10);
    await waitUntil(() => silent.closed() === 10, 5_000);
    expect(silent.closed()).toBe(10);
    // A real TLS client still gets through.
    const ok = await new Promise<boolean>((resolve) => {
      const s = tlsConnect({ host: "127.0.0.1", port, ca: readFileSync(pki.caFile) }, () => {
        resolve(s.authorized);
        s.destroy();
      });
      s.on("error", () => resolve(false));
    });
    expect(ok).toBe(true);
  });
});
