/**
 * Health endpoints.
 * - `GET /healthz`: the process is alive (always 200 while it can answer).
 * - `GET /readyz`: readiness means "can serve". 200 when every registry's signing certificate is within
 *   its validity period (distribution verifies the `x5c` chain with the current time, so an expired
 *   certificate fails every pull), at least one cluster can serve (its keys are loaded, possibly stale
 *   within max staleness, or it has `verification: tokenReview`, which never uses them), and every
 *   cluster marked `required` can; 503 otherwise. One unreachable cluster thus never takes every replica
 *   out of service: its tokens fail with `keys_unavailable` while the other clusters keep being served.
 *   The body reports each cluster (`ready`, `required`, key count, last error) and, when not ready, the
 *   `reasons`. A Redis outage is reported as `cache: "degraded"` but keeps 200: the service still serves
 *   from memory. While shutting down, fastify answers 503 (`return503OnClosing`). Each call also starts
 *   a background re-fetch of key sets that are missing or expired (within the retry back-off): a replica
 *   that started while a cluster's keys could not be fetched receives no token request until it is
 *   ready, so the readiness probe is what retries. `apiServers` shows, per cluster that talks to its API
 *   server (TokenReview, ServiceAccount reads), the state last seen (`ok`, `failing` with the failure,
 *   `unknown`).
 *   Every time in the body is RFC 3339 UTC (`2026-11-30T10:21:51.000Z`).
 */
import type { FastifyInstance } from "fastify";
import type { ClusterKeySet } from "../authn/jwks.js";
import type { CacheStore } from "../cache/store.js";
import { JSON_TYPE } from "./params.js";

/** The body of `GET /healthz`. */
const HEALTHZ_BODY = JSON.stringify({ status: "ok" });

/** Registers `/healthz` and `/readyz`. */
export function registerHealthRoutes(
  app: FastifyInstance,
  currentKeySets: () => readonly ClusterKeySet[],
  store: CacheStore,
  now: () => number = Date.now,
  reviewStatus: () => Record<string, unknown> = () => ({}),
): void {
  // A constant, pre-serialized answer from a callback-style handler: no promise, no serializer.
  app.get("/healthz", (_request, reply) => {
    reply.type(JSON_TYPE).send(HEALTHZ_BODY);
  });
  app.get("/readyz", async (_request, reply) => {
    const keySets = currentKeySets();
    for (const ks of keySets) ks.refreshIfDue();
    const clusters = Object.fromEntries(
      keySets.map((ks) => {
        const { fetchedAt, ...status } = ks.status();
        // A cluster with verification: tokenReview never uses its key set: the API server authenticates.
        const ready = status.ready || ks.cluster.verification === "tokenReview";
        return [
          ks.cluster.name,
          {
            ...status,
            ready,
            required: ks.cluster.required,
            ...(fetchedAt === undefined ? {} : { fetchedAt: new Date(fetchedAt).toISOString() }),
          },
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
    const reasons = [
      ...Object.entries(signingKeys)
        .filter(([, k]) => !k.ready)
        .map(([service]) => `the signing certificate of registry "${service}" has expired`),
      ...(Object.values(clusters).some((c) => c.ready) ? [] : ["no cluster's keys are loaded"]),
      ...Object.entries(clusters)
        .filter(([, c]) => c.required && !c.ready)
        .map(([name]) => `the keys of required cluster "${name}" are not loaded`),
    ];
    const ready = reasons.length === 0;
    const cache = store.healthy() ? "ok" : "degraded";
    return reply
      .code(ready ? 200 : 503)
      .header("cache-control", "no-store")
      .send({
        status: ready ? (cache === "ok" ? "ready" : "degraded") : "not ready",
        ...(ready ? {} : { reasons }),
        clusters,
        signingKeys,
        cache: { kind: store.kind, state: cache },
        // Detail only: a failing API server refuses the clusters that need it (fail closed) but leaves
        // the replica ready for the others (docs/tokenreview.md).
        apiServers: reviewStatus(),
      });
  });
}
