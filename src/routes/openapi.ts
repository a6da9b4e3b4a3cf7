/**
 * `GET /openapi.json`: the service's API contract (OpenAPI 3.1), parsed once at start-up from
 * `openapi/openapi.yaml` (shipped in the package and the container image). A contract test validates the
 * document and checks real responses against it, so what is served here is what the service does.
 */
import { readFileSync } from "node:fs";
import type { FastifyInstance } from "fastify";
import { parse as parseYaml } from "yaml";

/** Where the contract lives, relative to this module (`src/routes/` and `dist/routes/` alike). */
const OPENAPI_FILE = new URL("../../openapi/openapi.yaml", import.meta.url);

/**
 * Reads and parses the contract.
 * @throws {Error} when the file is missing or not YAML (a packaging mistake: fail at boot, not per request)
 */
export function loadOpenApiDocument(file: URL | string = OPENAPI_FILE): Record<string, unknown> {
  const doc = parseYaml(readFileSync(file, "utf8")) as unknown;
  if (doc === null || typeof doc !== "object" || !("openapi" in doc)) {
    throw new Error(`${String(file)} is not an OpenAPI document`);
  }
  return doc as Record<string, unknown>;
}

/** Registers `GET /openapi.json`. */
export function registerOpenApiRoute(app: FastifyInstance, doc: Record<string, unknown>): void {
  const body = JSON.stringify(doc);
  app.get("/openapi.json", async (_request, reply) =>
    reply.type("application/json; charset=utf-8").header("cache-control", "public, max-age=300").send(body),
  );
}
