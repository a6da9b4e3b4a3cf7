/**
 * `GET /openapi.json` loading (`src/routes/openapi.ts`): a missing contract fails the boot (a packaging
 * mistake), while the document itself is parsed on the first request only and then served from memory.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Fastify from "fastify";
import { afterEach, describe, expect, it } from "vitest";
import { registerOpenApiRoute } from "../../src/routes/openapi.js";

describe("registerOpenApiRoute", () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const tempFile = (text: string): string => {
    const dir = mkdtempSync(join(tmpdir(), "rte-openapi-"));
    dirs.push(dir);
    const file = join(dir, "openapi.yaml");
    writeFileSync(file, text);
    return file;
  };

  it("refuses to start without the contract file", () => {
    const app = Fastify();
    expect(() => registerOpenApiRoute(app, join(tmpdir(), "rte-no-such-dir", "openapi.yaml"))).toThrow(
      /ENOENT/,
    );
  });

  it("parses the document on the first request and serves the same text afterwards", async () => {
    const file = tempFile("openapi: 3.1.0\ninfo: { title: t, version: '1' }\npaths: {}\n");
    const app = Fastify();
    registerOpenApiRoute(app, file);
    // Changed after registration: the first request reads it, the next ones are served from memory.
    writeFileSync(file, "openapi: 3.1.0\ninfo: { title: first, version: '1' }\npaths: {}\n");
    const first = await app.inject({ method: "GET", url: "/openapi.json" });
    expect(first.statusCode).toBe(200);
    expect(first.headers["content-type"]).toBe("application/json; charset=utf-8");
    expect(first.json()).toEqual({ openapi: "3.1.0", info: { title: "first", version: "1" }, paths: {} });
    writeFileSync(file, "openapi: 3.1.0\ninfo: { title: second, version: '1' }\npaths: {}\n");
    const again = await app.inject({ method: "GET", url: "/openapi.json" });
    expect(again.body).toBe(first.body);
    await app.close();
  });
});
