/**
 * The access line: exactly one line per request, carrying the request, its status, its response time and
 * what the handler decided (the audit record, the rejection code), with the most specific message. A
 * client that goes away mid-request still gets its line, and a token issued after that is still audited.
 */
import { request as httpRequest } from "node:http";
import type { AddressInfo } from "node:net";
import Fastify, { type FastifyBaseLogger } from "fastify";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { buildApp } from "../../src/app.js";
import { startLocalIssuerServer } from "../../src/local/issuer.js";
import { accessLogController, auditAccessLog, registerAccessLog } from "../../src/plugins/access-log.js";
import { AUDIENCE, basic, capturingLogger, SERVICE, testConfig } from "../helpers/fixtures.js";

type Line = {
  level: number;
  msg: string;
  reqId?: string;
  req?: { method: string; path: string };
  res?: { statusCode: number };
  responseTime?: number;
  aborted?: boolean;
  code?: string;
  audit?: Record<string, unknown>;
};

describe("access line", () => {
  let close: () => Promise<void>;
  let app: Awaited<ReturnType<typeof buildApp>>;
  let lines: string[];
  let mint: () => Promise<string>;
  beforeAll(async () => {
    const server = await startLocalIssuerServer();
    const config = await testConfig(server.url);
    const captured = capturingLogger("info");
    lines = captured.lines;
    app = await buildApp(config, { logger: captured.logger });
    mint = () =>
      server.issuer.mint({ namespace: "team-a", serviceAccount: "builder", audiences: [AUDIENCE] });
    close = async () => {
      await app.close();
      await server.close();
    };
  });
  afterAll(async () => close());

  /** The lines written while `fn` ran, parsed. */
  async function linesOf(fn: () => Promise<unknown>): Promise<Line[]> {
    const before = lines.length;
    await fn();
    return lines.slice(before).map((l) => JSON.parse(l) as Line);
  }

  it("writes exactly one line for an issued token, with the audit record and the status", async () => {
    const sa = await mint();
    const url = `/token?service=${SERVICE}&scope=repository:team-a/app:pull`;
    const out = await linesOf(() =>
      app.inject({ method: "GET", url, headers: { authorization: basic(sa) } }),
    );
    expect(out).toHaveLength(1);
    const [line] = out as [Line];
    expect(line).toMatchObject({
      level: 30,
      msg: "token issued",
      req: { method: "GET", path: "/token" },
      res: { statusCode: 200 },
      audit: { decision: "issued", namespace: "team-a", granted: ["repository:team-a/app:pull"] },
    });
    expect(line.reqId).toMatch(/^req-/);
    expect(line.responseTime).toBeGreaterThanOrEqual(0);
  });

  it("writes one line for a refused credential: the audit message wins over the rejection", async () => {
    const out = await linesOf(() =>
      app.inject({
        method: "GET",
        url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull`,
        headers: { authorization: basic("not-a-jwt") },
      }),
    );
    expect(out).toHaveLength(1);
    expect(out[0]).toMatchObject({
      msg: "credential denied",
      res: { statusCode: 401 },
      code: "malformed_token",
      audit: { decision: "denied", reason: "malformed_token", status: 401 },
    });
  });

  it("writes one line for a request rejected before any credential was checked", async () => {
    const out = await linesOf(() => app.inject({ method: "GET", url: "/token" }));
    expect(out).toHaveLength(1);
    expect(out[0]).toMatchObject({
      msg: "request rejected",
      res: { statusCode: 400 },
      code: "invalid_request",
    });
    expect(out[0]!.audit).toBeUndefined();
  });

  it("writes one line for other routes, and a rejection for unknown paths", async () => {
    const health = await linesOf(() => app.inject({ method: "GET", url: "/healthz" }));
    expect(health).toHaveLength(1);
    expect(health[0]).toMatchObject({
      msg: "request completed",
      req: { path: "/healthz" },
      res: { statusCode: 200 },
    });
    const missing = await linesOf(() => app.inject({ method: "GET", url: "/nowhere" }));
    expect(missing).toHaveLength(1);
    expect(missing[0]).toMatchObject({
      msg: "request rejected",
      code: "not_found",
      req: { path: "(no route)" },
      res: { statusCode: 404 },
    });
  });
});

describe("access line of a request whose client went away", () => {
  it("is written at once with aborted: true, and an audit record added afterwards gets its own line", async () => {
    const { logger, lines } = capturingLogger("info");
    const app = Fastify({
      loggerInstance: logger as FastifyBaseLogger,
      logController: accessLogController(),
    });
    registerAccessLog(app);
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    let handlerDone!: () => void;
    const done = new Promise<void>((resolve) => {
      handlerDone = resolve;
    });
    app.get("/slow", async (request) => {
      await held;
      auditAccessLog(request, { decision: "issued", jti: "j-1" }, "token issued");
      handlerDone();
      return { ok: true };
    });
    try {
      await app.listen({ port: 0, host: "127.0.0.1" });
      const { port } = app.server.address() as AddressInfo;
      const req = httpRequest({ host: "127.0.0.1", port, path: "/slow" });
      req.on("error", () => {});
      req.end();
      await new Promise((r) => setTimeout(r, 100));
      req.destroy();
      // Request lines only (fastify also logs "Server listening").
      const requestLines = () => lines.map((l) => JSON.parse(l) as Line).filter((l) => l.req !== undefined);
      await vi.waitFor(() => expect(requestLines().length).toBeGreaterThanOrEqual(1));
      const [aborted] = requestLines() as [Line];
      expect(aborted).toMatchObject({
        msg: "request completed",
        aborted: true,
        req: { method: "GET", path: "/slow" },
      });
      expect(aborted.res).toBeUndefined();
      release();
      await done;
      await vi.waitFor(() => expect(requestLines()).toHaveLength(2));
      expect(requestLines()[1]).toMatchObject({
        msg: "token issued",
        aborted: true,
        reqId: aborted.reqId,
        audit: { decision: "issued", jti: "j-1" },
      });
      // Nothing more: the abandoned response does not produce a second access line.
      await new Promise((r) => setTimeout(r, 100));
      expect(requestLines()).toHaveLength(2);
    } finally {
      await app.close();
    }
  });
});
