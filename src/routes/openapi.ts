/**
 * `GET /openapi.json`: the service's API contract (OpenAPI 3.1) from `openapi/openapi.yaml` (shipped in
 * the package and the container image). A contract test validates the document and checks real responses
 * against it, so what is served here is what the service does.
 *
 * The file must be readable at start-up (a packaging mistake fails the boot), but it is parsed on the first
 * request only: parsing its ~50 KB of YAML allocates ~20 MB, which at start-up grew the heap of every
 * process for a document most deployments never fetch.
 */
import { accessSync, constants, readFileSync } from "node:fs";
import type { FastifyInstance } from "fastify";
import { parse as parseYaml } from "yaml";

/** Where the contract lives, relative to this module (`src/routes/` and `dist/routes/` alike). */
const OPENAPI_FILE = new URL("../../openapi/openapi.yaml", import.meta.url);

/**
 * Reads and parses the contract.
 * @throws {Error} when the file is missing or not YAML
 */
export function loadOpenApiDocument(file: URL | string = OPENAPI_FILE): Record<string, unknown> {
  const doc = parseYaml(readFileSync(file, "utf8")) as unknown;
  if (doc === null || typeof doc !== "object" || !("openapi" in doc)) {
    throw new Error(`${String(file)} is not an OpenAPI document`);
  }
  return doc as Record<string, unknown>;
}

/**
 * Registers `GET /openapi.json`, serving `file` as JSON. The document is parsed on the first request and
 * its JSON text kept for the next ones.
 * @param file the contract (default `openapi/openapi.yaml` next to `dist/`)
 * @throws {Error} when `file` is not readable (a packaging mistake: fail at boot, not per request)
 */
export function registerOpenApiRoute(app: FastifyInstance, file: URL | string = OPENAPI_FILE): void {
  accessSync(file, constants.R_OK);
  let body: string | undefined;
  app.get("/openapi.json", async (_request, reply) => {
    body ??= JSON.stringify(loadOpenApiDocument(file));
    return reply
      .type("application/json; charset=utf-8")
      .header("cache-control", "public, max-age=300")
      .send(body);
  });
}
