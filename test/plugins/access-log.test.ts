/**
 * The access line: exactly one line per request, carrying the request, its status, its response time and
 * what the handler decided (the audit record, the rejection code), with the most specific message. A
 * client that goes away mid-request still gets its line, and a token issued after that is still audited.
 */
import { request as httpRequest } from "node:http";
import type { AddressInfo } from "node:net";
import Fastify, { type FastifyBaseLogger, type FastifyRequest } from "fastify";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { buildApp } from "../../src/app.js";
import { startLocalIssuerServer } from "../../src/local/issuer.js";
import { requestLogJson } from "../../src/logging.js";
import {
  accessLogController,
  annotateAccessLog,
  auditAccessLog,
  registerAccessLog,
} from "../../src/plugins/access-log.js";
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

describe("access line written without pino's generic path", () => {
  it("is the line log.info would write, field for field, redacted, without calling pino's asJson", async () => {
    const { logger, lines } = capturingLogger("info");
    const asJsonSym = pino.symbols.asJsonSym as unknown as string;
    const internals = logger as unknown as Record<string, (...args: unknown[]) => string>;
    const asJson = vi.fn(internals[asJsonSym]!);
    internals[asJsonSym] = asJson;
    const app = Fastify({
      loggerInstance: logger as FastifyBaseLogger,
      logController: accessLogController(),
    });
    registerAccessLog(app);
    const fields = {
      code: "invalid_request",
      detail: { reason: "kept", password: "hunter2-detail", token: "tok-detail" },
      audit: { decision: "denied", requested: ["repository:a/b:pull"], client: "10.0.0.1" },
      password: "hunter2-top",
      count: 3,
      ratio: Number.NaN,
      flag: false,
      skipped: undefined,
    };
    let expected = "";
    app.get("/token", async (request, reply) => {
      annotateAccessLog(request, fields, "request rejected");
      // What pino itself writes for the same line (res and responseTime as the hook will give them).
      const before = lines.length;
      request.log.info(
        { req: request, res: { statusCode: 200 }, responseTime: 0, ...fields },
        "request rejected",
      );
      expected = lines.splice(before)[0]!;
      return reply.send("ok");
    });
    try {
      asJson.mockClear();
      const before = lines.length;
      await app.inject({
        method: "GET",
        url: "/token?service=reg%2Fistry&scope=a+b&password=hunter2-query&scope=%E2%9C%93&bad=%zz&x",
        headers: { authorization: "Basic aHVudGVyMi1oZWFkZXI6eA==", cookie: "hunter2-cookie" },
      });
      const written = lines.slice(before);
      expect(written).toHaveLength(1);
      // pino's generic path ran once: for the comparison line inside the handler, not for the access line.
      expect(asJson).toHaveBeenCalledTimes(1);
      const line = written[0]!;
      const parse = (l: string) => {
        const { time, responseTime, ...rest } = JSON.parse(l) as Record<string, unknown>;
        expect(typeof time).toBe("number");
        expect(typeof responseTime).toBe("number");
        return rest;
      };
      expect(parse(line)).toEqual(parse(expected));
      expect(Object.keys(JSON.parse(line))).toEqual(Object.keys(JSON.parse(expected)));
      expect(parse(line)).toMatchObject({
        req: { path: "/token", query: { service: ["reg/istry"], scope: ["a b", "\u2713"] } },
        detail: { reason: "kept", password: "[redacted]", token: "[redacted]" },
        password: "[redacted]",
        ratio: null,
      });
      expect(line).not.toMatch(/hunter2|tok-detail/);
    } finally {
      await app.close();
    }
  });

  it("goes through log.info for a logger it cannot imitate (a mixin)", async () => {
    const lines: string[] = [];
    const logger = pino({ mixin: () => ({ extra: 1 }) }, {
      write: (l: string) => void lines.push(l),
    } as unknown as pino.DestinationStream);
    const app = Fastify({
      loggerInstance: logger as FastifyBaseLogger,
      logController: accessLogController(),
    });
    registerAccessLog(app);
    app.get("/x", async () => "ok");
    try {
      await app.inject({ method: "GET", url: "/x" });
      const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.req);
      expect(parsed).toHaveLength(1);
      expect(parsed[0]).toMatchObject({ extra: 1, msg: "request completed", res: { statusCode: 200 } });
    } finally {
      await app.close();
    }
  });
});

describe("requestLogJson", () => {
  /** The safe query parameters as the request serializer logged them before: through URLSearchParams. */
  function reference(url: string): Record<string, string[]> | undefined {
    const q = url.indexOf("?");
    if (q < 0) return undefined;
    const safe: Record<string, string[]> = {};
    for (const [k, v] of new URLSearchParams(url.slice(q + 1))) {
      if (!["service", "scope", "client_id", "offline_token", "account"].includes(k)) continue;
      const list = safe[k] ?? [];
      list.push(v.slice(0, 300));
      safe[k] = list;
    }
    return safe;
  }

  it.each([
    "/token",
    "/token?",
    "/token??service=a",
    "/token?service=reg%2Fistry&scope=a+b%2Bc&&scope=&account",
    "/token?scope=%zz&service=%E2%9C%93&scope=%FF&client_id=%E2%9C",
    "/token?password=secret&token=t&service=s&scope=repository:x/y:pull,push&offline_token=true",
    `/token?scope=${"a".repeat(400)}&service=x=y&=z`,
    "/token?%73ervice=encoded-key&scope=\u00e9",
  ])("logs the same safe parameters as URLSearchParams for %s", (url) => {
    const request = { method: "GET", url, ip: "10.0.0.1" } as unknown as FastifyRequest;
    const logged = JSON.parse(requestLogJson(request, "/token")) as Record<string, unknown>;
    const query = reference(url);
    expect(logged).toEqual({
      method: "GET",
      path: "/token",
      remoteAddress: "10.0.0.1",
      ...(query === undefined ? {} : { query }),
    });
    expect(JSON.stringify(logged)).not.toMatch(/secret/);
  });
});
