/**
 * `serve --workers 2` as a real process: one `/metrics` scrape answers the sum over both workers (the
 * primary aggregates with prom-client's AggregatorRegistry), so counters never jump between the workers'
 * values; every log line names its worker, and request ids never repeat across workers; the primary
 * loads none of the app (it only supervises and aggregates).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startLocalIssuerServer } from "../../src/local/issuer.js";
import { AUDIENCE, basic, SERVICE } from "../helpers/fixtures.js";
import { freePort } from "../helpers/redis.js";
import { writeConfigFile } from "./helpers.js";

let issuer: Awaited<ReturnType<typeof startLocalIssuerServer>>;
let child: ChildProcess;
let url: string;
let out = "";

/** The value of one sample of the exposition text, 0 when absent. */
function sample(text: string, name: string, labels: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(" ") + 1));
}

beforeAll(async () => {
  issuer = await startLocalIssuerServer();
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  const file = await writeConfigFile(
    issuer.url,
    { host: "127.0.0.1", port },
    { rateLimit: { enabled: false }, cache: { reuseTokens: false } },
  );
  // In the primary only: on SIGUSR2, print the packages it has loaded (fastify, undici and ioredis are
  // CommonJS: importing them fills require.cache).
  const probe = join(mkdtempSync(join(tmpdir(), "rte-workers-")), "probe.cjs");
  writeFileSync(
    probe,
    `if (require("node:cluster").isPrimary) process.on("SIGUSR2", () => process.stderr.write(
      "primary packages: " + JSON.stringify([...new Set(Object.keys(require.cache)
        .map((f) => /node_modules\\/((?:@[^/]+\\/)?[^/]+)\\//.exec(f)?.[1]).filter(Boolean))]) + "\\n"));`,
  );
  child = spawn(
    process.execPath,
    ["--require", probe, "--import", "tsx", "src/bin.ts", "serve", "--config", file, "--workers", "2"],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  child.stdout!.on("data", (d) => {
    out += String(d);
  });
  child.stderr!.on("data", (d) => {
    out += String(d);
  });
  const deadline = Date.now() + 30_000;
  while ((out.match(/Server listening/g) ?? []).length < 2) {
    if (Date.now() > deadline) throw new Error(`workers did not start; output:\n${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}, 40_000);

afterAll(async () => {
  if (child && child.exitCode === null) {
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    await exited;
  }
  await issuer?.close();
});

describe("serve --workers 2", () => {
  it("one scrape sums every worker's counters, and the sums only grow", async () => {
    const sa = await issuer.issuer.mint({ namespace: "team-a", serviceAccount: "ci", audiences: [AUDIENCE] });
    const token = (i: number) =>
      fetch(`${url}/token?service=${SERVICE}&scope=repository:team-a/app${i}:pull`, {
        headers: { authorization: basic(sa) },
      });
    const issued = async () =>
      sample(await (await fetch(`${url}/metrics`)).text(), "rte_tokens_issued_total", 'outcome="issued"');
    const before = await issued();
    // Sequential requests on fresh connections: the primary hands connections to the workers in turn.
    const N = 12;
    for (let i = 0; i < N; i++) {
      const res = await token(i);
      expect(res.status).toBe(200);
      await res.arrayBuffer();
    }
    // Every scrape, whichever worker receives it, reports the total over both workers.
    const scrapes: number[] = [];
    for (let i = 0; i < 6; i++) scrapes.push(await issued());
    expect(scrapes).toEqual(Array(6).fill(before + N));
    const text = await (await fetch(`${url}/metrics`)).text();
    // Gauges combine as they declare: one build, and ready only if every worker is.
    expect(text).toMatch(/^rte_build_info\{version="\d+\.\d+\.\d+[^"]*",node_version="v\d+[^"]*"\} 1$/m);
    expect(sample(text, "rte_http_request_duration_seconds_count", 'route="/token",status_code="200"')).toBe(
      N,
    );
  });

  it("log lines name their worker; request ids never repeat across workers", () => {
    const lines = out
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map(
        (l) => JSON.parse(l) as { worker?: number; reqId?: string; req?: { path?: string }; res?: unknown },
      );
    // One access line per request (it carries `res`).
    const requests = lines.filter((l) => l.reqId !== undefined && l.res !== undefined);
    expect(requests.length).toBeGreaterThan(12);
    expect(new Set(requests.map((l) => l.worker)).size).toBe(2);
    for (const l of requests) expect(l.reqId).toBe(`req-w${l.worker}-${l.reqId!.split("-").pop()}`);
    const ids = requests.map((l) => l.reqId);
    expect(new Set(ids).size).toBe(ids.length);
    expect(lines.filter((l) => l.req?.path === "/token").every((l) => typeof l.worker === "number")).toBe(
      true,
    );
  });

  it("the primary does not load the app: no fastify, undici or ioredis", async () => {
    child.kill("SIGUSR2");
    const deadline = Date.now() + 10_000;
    const answer = () => /primary packages: (.*)\n/.exec(out);
    while (!answer()) {
      if (Date.now() > deadline) throw new Error(`the primary did not answer; output:\n${out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const packages = JSON.parse(answer()![1]!) as string[];
    // Sanity: the probe sees what the primary does load (prom-client aggregates the workers' metrics).
    expect(packages).toContain("prom-client");
    for (const app of ["fastify", "undici", "ioredis", "@fastify/rate-limit"])
      expect(packages).not.toContain(app);
  });
});

describe("serve --workers 2 on a port already in use", () => {
  it("exits 1 as a single process would, instead of replacing its workers forever", async () => {
    const blocker = createServer();
    const port = await freePort();
    await new Promise<void>((r) => blocker.listen(port, "127.0.0.1", r));
    try {
      const file = await writeConfigFile(issuer.url, { host: "127.0.0.1", port });
      const proc = spawn(
        process.execPath,
        ["--import", "tsx", "src/bin.ts", "serve", "--config", file, "--workers", "2"],
        { stdio: ["ignore", "pipe", "pipe"] },
      );
      let text = "";
      proc.stdout!.on("data", (d) => {
        text += String(d);
      });
      const code = await new Promise<number | null>((resolve) => {
        const timer = setTimeout(() => {
          proc.kill("SIGKILL");
          resolve(null);
        }, 20_000);
        proc.once("exit", (c) => {
          clearTimeout(timer);
          resolve(c);
        });
      });
      expect(code, text).toBe(1);
      expect(text).toContain("worker exited before it could listen; stopping");
      expect(text).not.toContain("starting a replacement");
    } finally {
      blocker.close();
    }
  }, 30_000);
});
