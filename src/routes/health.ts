/**
 * Health endpoints.
 * - `GET /healthz`: the process is alive (always 200 while it can answer).
 * - `GET /readyz`: 200 when every cluster's keys are loaded (possibly stale within max staleness) and
 *   every registry's signing certificate is within its validity period (distribution verifies the `x5c`
 *   chain with the current time, so an expired certificate fails every pull); 503 otherwise. The body
 *   says why. A Redis outage is reported as `cache: "degraded"` but keeps 200: the service still serves
 *   from memory. While shutting down, fastify answers 503 (`return503OnClosing`). Each call also starts
 *   a background re-fetch of key sets that are missing or expired (within the retry back-off): a replica
 *   that started while a cluster's keys could not be fetched receives no token request until it is ready,
 *   so the readiness probe is what retries. Every time in the body is RFC 3339 UTC
 *   (`2026-11-30T10:21:51.000Z`).
 */
import type { FastifyInstance } from "fastify";
import type { ClusterKeySet } from "../authn/jwks.js";
import type { CacheStore } from "../cache/store.js";

/** Registers `/healthz` and `/readyz`. */
export function registerHealthRoutes(
  app: FastifyInstance,
  currentKeySets: () => readonly ClusterKeySet[],
  store: CacheStore,
  now: () => number = Date.now,
): void {
  app.get("/healthz", async () => ({ status: "ok" }));
  app.get("/readyz", async (_request, reply) => {
    const keySets = currentKeySets();
    for (const ks of keySets) ks.refreshIfDue();
    const clusters = Object.fromEntries(
      keySets.map((ks) => {
        const { fetchedAt, ...status } = ks.status();
        return [
          ks.cluster.name,
          fetchedAt === undefined ? status : { ...status, fetchedAt: new Date(fetchedAt).toISOString() },
        ];
      }),
    );
    const nowMs = now();
    const signingKeys = Object.fromEntries(
      [...app.exchange.signingKeys].map(([service, key]) => [
        service,
        {
          ready: key.certNotAfter > nowMs,
          kid: key.kid,
          alg: key.alg,
          certNotAfter: new Date(key.certNotAfter).toISOString(),
        },
      ]),
    );
    const ready =
      keySets.every((ks) => ks.status().ready) && Object.values(signingKeys).every((k) => k.ready);
    const cache = store.healthy() ? "ok" : "degraded";
    return reply
      .code(ready ? 200 : 503)
      .header("cache-control", "no-store")
      .send({
        status: ready ? (cache === "ok" ? "ready" : "degraded") : "not ready",
        clusters,
        signingKeys,
        cache: { kind: store.kind, state: cache },
      });
  });
}
