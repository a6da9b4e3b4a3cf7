/**
 * Graceful shutdown: on SIGTERM (or `close()`), the server stops accepting connections at once, closes
 * idle keep-alive connections, lets the requests already in flight finish (their answers carry
 * `Connection: close`, so those sockets close right after), and the process exits 0.
 *
 * A request is kept in flight by a token whose `kid` is new (a key rotation): the service re-fetches the
 * cluster's JWKS, and the test issuer holds that answer back.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { createConnection, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { startServer } from "../../src/server.js";
import { AUDIENCE, basic, SERVICE, testConfig } from "../helpers/fixtures.js";
import { expectMatchesSpec } from "../helpers/openapi.js";
import { freePort } from "../helpers/redis.js";
import { type SlowIssuer, startSlowIssuer, writeConfigFile } from "./helpers.js";

/** Resolves true when a TCP connection to `port` is accepted, false when it is refused. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** Splits raw HTTP/1.1 response bytes into responses (Content-Length framed, as fastify sends them). */
function parseResponses(
  raw: string,
): Array<{ statusCode: number; headers: Record<string, string>; body: string }> {
  const out: Array<{ statusCode: number; headers: Record<string, string>; body: string }> = [];
  let rest = raw;
  while (rest.length > 0) {
    const end = rest.indexOf("\r\n\r\n");
    if (end < 0) break;
    const [statusLine, ...headerLines] = rest.slice(0, end).split("\r\n");
    const headers = Object.fromEntries(
      headerLines.map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]),
    );
    const length = Number(headers["content-length"] ?? 0);
    out.push({
      statusCode: Number(statusLine!.split(" ")[1]),
      headers,
      body: rest.slice(end + 4, end + 4 + length),
    });
    rest = rest.slice(end + 4 + length);
  }
  return out;
}

/** Everything `socket` receives until the server closes it. */
function readAll(socket: Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let data = "";
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      data += chunk;
    });
    socket.once("close", () => resolve(data));
    socket.once("error", reject);
  });
}

async function waitFor(
  what: string,
  check: () => Promise<boolean> | boolean,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch {
      // not yet
    }
    await sleep(50);
  }
  throw new Error(`${what}: not after ${timeoutMs} ms`);
}

/**
 * The service process under `npx tsx ...`: the deepest descendant of `root` running `src/bin.ts`.
 * (npm does not forward SIGTERM to what it runs; in a container the service is PID 1 and gets it directly.)
 */
function serviceProcess(root: number): number | undefined {
  const table = execFileSync("ps", ["-e", "-o", "pid=,ppid=,args="], { encoding: "utf8" })
    .split("\n")
    .map((l) => l.trim().match(/^(\d+)\s+(\d+)\s+(.*)$/))
    .filter((m): m is RegExpMatchArray => m !== null)
    .map((m) => ({ pid: Number(m[1]), ppid: Number(m[2]), args: m[3]! }));
  let found: number | undefined;
  const walk = (pid: number) => {
    for (const p of table.filter((t) => t.ppid === pid)) {
      if (p.args.includes("src/bin.ts")) found = p.pid;
      walk(p.pid);
    }
  };
  walk(root);
  return found;
}

let issuer: SlowIssuer | undefined;
let child: ChildProcess | undefined;
afterEach(async () => {
  // The child runs in its own process group: take all of it down if the test left it running.
  if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) {
    try {
      process.kill(-child.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  child = undefined;
  await issuer?.close();
  issuer = undefined;
});

describe("graceful shutdown (in process)", () => {
  it("finishes the request in flight, then closes its connection; refuses new connections at once", async () => {
    issuer = await startSlowIssuer();
    const config = await testConfig(issuer.url);
    const server = await startServer(config, { logger: pino({ level: "silent" }) });
    const port = Number(new URL(server.url).port);
    await waitFor("keys loaded", () => server.app.exchange.keySets[0]!.status().ready);

    // An idle keep-alive connection (a load balancer's pool) and one with a request in flight.
    const idle = createConnection({ host: "127.0.0.1", port });
    await new Promise((r) => idle.once("connect", r));
    const idleReceived = readAll(idle);
    idle.write("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    await waitFor("healthz answered", () => idle.bytesRead > 0);

    issuer.issuer.rotate();
    issuer.delayMs = 1500;
    const sa = await issuer.issuer.mint({
      namespace: "team-a",
      serviceAccount: "builder",
      audiences: [AUDIENCE],
    });
    const held = issuer.nextHeldJwks();
    const busy = createConnection({ host: "127.0.0.1", port });
    await new Promise((r) => busy.once("connect", r));
    const busyReceived = readAll(busy);
    busy.write(
      `GET /token?service=${SERVICE}&scope=repository:team-a/app:pull HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${basic(sa)}\r\n\r\n`,
    );
    await held; // the token request is now waiting for the JWKS

    const started = Date.now();
    const closed = server.close();
    await sleep(100);
    expect(await accepts(port)).toBe(false);
    // The idle connection is closed at once, without an answer to anything.
    expect(parseResponses(await idleReceived).map((r) => r.statusCode)).toEqual([200]);
    expect(Date.now() - started).toBeLessThan(1000);

    // The busy one gets its answer, marked as the connection's last, and is closed right after.
    const responses = parseResponses(await busyReceived);
    expect(responses).toHaveLength(1);
    expect(responses[0]!.statusCode).toBe(200);
    expect(responses[0]!.headers.connection).toBe("close");
    expect(expectMatchesSpec("GET", "/token", responses[0]!)).toHaveProperty("token");
    await closed;
    // Well before keepAliveTimeoutMs (75 s): nothing waits for idle keep-alive sockets.
    expect(Date.now() - started).toBeLessThan(5000);
  });
});

describe("graceful shutdown (SIGTERM to `npx tsx src/bin.ts serve`)", () => {
  it("exits 0 after the request in flight is answered, and stops accepting at once", async () => {
    issuer = await startSlowIssuer();
    const port = await freePort();
    const configFile = await writeConfigFile(issuer.url, { host: "127.0.0.1", port });
    let output = "";
    child = spawn("npx", ["tsx", "src/bin.ts", "serve", "--config", configFile], {
      cwd: new URL("../..", import.meta.url).pathname,
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
      env: { ...process.env, NO_PROXY: "127.0.0.1", no_proxy: "127.0.0.1" },
    });
    child.stdout!.on("data", (c: Buffer) => {
      output += c.toString();
    });
    child.stderr!.on("data", (c: Buffer) => {
      output += c.toString();
    });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child!.once("exit", (code, signal) => resolve({ code, signal })),
    );
    await waitFor("service ready", async () => {
      if (child?.exitCode !== null) throw new Error(`exited early:\n${output}`);
      return (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200;
    });

    issuer.issuer.rotate();
    issuer.delayMs = 2000;
    const sa = await issuer.issuer.mint({
      namespace: "team-a",
      serviceAccount: "builder",
      audiences: [AUDIENCE],
    });
    const held = issuer.nextHeldJwks();
    const inFlight = fetch(
      `http://127.0.0.1:${port}/token?service=${SERVICE}&scope=repository:team-a/app:pull`,
      {
        headers: { authorization: basic(sa) },
      },
    );
    await held;

    const service = serviceProcess(child.pid!);
    expect(service, "the service process under npx").toBeDefined();
    process.kill(service!, "SIGTERM");
    await waitFor("listener closed", async () => !(await accepts(port)), 5_000);

    const res = await inFlight;
    expect(res.status).toBe(200);
    expect(((await res.json()) as { token?: string }).token).toMatch(/^ey/);
    const { code, signal } = await exited;
    expect({ code, signal }, output.slice(-2000)).toEqual({ code: 0, signal: null });
    expect(output).toContain('"msg":"shutting down"');
    expect(output).toContain('"signal":"SIGTERM"');
  });
});
