/**
 * Health endpoints.
 * - `GET /healthz`: the process is alive (always 200 while it can answer).
 * - `GET /readyz`: 200 when every cluster's keys are loaded (possibly stale within max staleness) and
 *   signing keys are loaded; 503 otherwise. The body says why. A Redis outage is reported as
 *   `cache: "degraded"` but keeps 200: the service still serves from memory.
 */
import type { FastifyInstance } from "fastify";
import type { ClusterKeySet } from "../authn/jwks.js";
import type { CacheStore } from "../cache/store.js";

/** Registers `/healthz` and `/readyz`. */
export function registerHealthRoutes(
  app: FastifyInstance,
  keySets: readonly ClusterKeySet[],
  store: CacheStore,
): void {
  app.get("/healthz", async () => ({ status: "ok" }));
  app.get("/readyz", async (_request, reply) => {
    const clusters = Object.fromEntries(keySets.map((ks) => [ks.cluster.name, ks.status()]));
    const ready = keySets.every((ks) => ks.status().ready);
    const cache = store.healthy() ? "ok" : "degraded";
    return reply
      .code(ready ? 200 : 503)
      .header("cache-control", "no-store")
      .send({
        status: ready ? (cache === "ok" ? "ready" : "degraded") : "not ready",
        clusters,
        cache: { kind: store.kind, state: cache },
      });
  });
}
