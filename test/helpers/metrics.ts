/**
 * The service's whole `/metrics` exposition, for tests that check names against it (alert rules, the
 * dashboard, the docs): a {@link ServiceMetrics} bound to an empty realm and a connected Redis, so the
 * Redis series are exported too.
 */
import { EventEmitter } from "node:events";
import type { RedisClient } from "../../src/cache/redis.js";
import { ServiceMetrics } from "../../src/plugins/metrics.js";

/** The exposition text every series of the service appears in (Prometheus text format). */
export async function exportedMetricsText(): Promise<string> {
  const metrics = new ServiceMetrics();
  const redis = Object.assign(new EventEmitter(), { status: "ready" }) as unknown as RedisClient;
  metrics.bind({
    realmStats: () => ({ identityHits: 0, identityMisses: 0, tokenHits: 0, tokenMisses: 0 }) as never,
    keySets: [],
    signingKeys: new Map(),
    redis,
    now: Date.now,
  });
  return (await metrics.render()).body;
}
