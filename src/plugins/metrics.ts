/**
 * Prometheus metrics (prom-client), served at `GET /metrics` in the text exposition format 0.0.4.
 *
 * Every app instance owns its own {@link Registry} (never prom-client's global one), so tests and
 * benchmarks can build several apps in one process. Process-wide metrics (CPU, memory, event loop, GC:
 * prom-client's default collectors) are collected once per process and merged in at scrape time.
 *
 * Under `serve --workers N` every scrape answers the aggregate over all workers (`src/cluster-metrics.ts`):
 * counters and histograms are summed; each gauge states how it combines (`aggregator`: the oldest key
 * age, the fewest keys, the earliest certificate expiry, ready only if every worker is).
 *
 * Label values are bounded: routes are the registered route patterns (`(unmatched)` for anything else),
 * reasons are the {@link ErrorCode} union, clusters and services come from the config. No label or value
 * is ever derived from a credential, so `/metrics` cannot leak a token.
 */

import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { ClusterKeySet } from "../authn/jwks.js";
import { BUILD_INFO } from "../build-info.js";
import type { RedisClient } from "../cache/redis.js";
import { aggregatedMetrics, contributeRegistries, inClusterWorker } from "../cluster-metrics.js";
import type { ErrorCode } from "../errors.js";
import type { SigningKey } from "../jose/signing-key.js";
import type { RealmStats } from "../realm/stats.js";
import { toRequestError } from "./errors.js";

/** Where `/metrics` reads live state from at scrape time. */
export interface MetricSources {
  /** Realm cache counters (identity and token cache hits and misses). */
  realmStats: () => RealmStats;
  /** The cluster key sets (readiness, key count, age). */
  keySets: readonly ClusterKeySet[];
  /** Signing key per registry `service` (certificate expiry). */
  signingKeys: ReadonlyMap<string, SigningKey>;
  /** The shared Redis client, when Redis is configured. */
  redis?: RedisClient | undefined;
  /** Clock, epoch milliseconds. */
  now: () => number;
}

let processRegistry: Registry | undefined;

/** prom-client's default process collectors, registered once per process (they hook process-wide events). */
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

/** Request duration buckets, seconds: a token request is a few ms warm, up to a fetch timeout cold. */
const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * The service's metrics. Counters are incremented by the app's hooks and collaborators; gauges and the
 * realm's cache counters are read from {@link MetricSources} at scrape time.
 */
export class ServiceMetrics {
  /** This app's registry. */
  readonly registry = new Registry();
  readonly #requests: Histogram<"method" | "route" | "status_code">;
  readonly #issued: Counter<"service" | "outcome">;
  readonly #denials: Counter<"reason">;
  readonly #rateLimited: Counter<"route">;
  readonly #jwksFetches: Counter<"cluster" | "outcome">;
  readonly #kubeApiCalls: Counter<"cluster" | "call" | "outcome">;
  readonly #reviewCache: Counter<"cluster" | "call" | "result">;
  #sources: MetricSources | undefined;
  /** Label sets of {@link observeRequest}, by method, status and route. */
  readonly #requestLabels = new Map<string, Record<"method" | "route" | "status_code", string>>();

  constructor() {
    const registers = [this.registry];
    this.#requests = new Histogram({
      name: "rte_http_request_duration_seconds",
      help: "HTTP request duration by route pattern and status code, seconds",
      labelNames: ["method", "route", "status_code"],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.#issued = new Counter({
      name: "rte_tokens_issued_total",
      help: "Registry tokens answered, by service and outcome (issued = newly minted, reused = from the cache)",
      labelNames: ["service", "outcome"],
      registers,
    });
    this.#denials = new Counter({
      name: "rte_denials_total",
      help: "Requests answered with an error, by reason (the detail.reason code)",
      labelNames: ["reason"],
      registers,
    });
    this.#rateLimited = new Counter({
      name: "rte_rate_limited_total",
      help: "Requests refused with 429 by the rate limiter, by route pattern",
      labelNames: ["route"],
      registers,
    });
    this.#jwksFetches = new Counter({
      name: "rte_jwks_fetches_total",
      help: "Cluster key fetches (discovery + JWKS, or the JWKS file), by cluster and outcome",
      labelNames: ["cluster", "outcome"],
      registers,
    });
    this.#kubeApiCalls = new Counter({
      name: "rte_kube_api_calls_total",
      help: "Calls to a cluster's API server (call: tokenreview, serviceaccount), by outcome: authenticated, refused, ok, or the failure (unreachable, timeout, unauthorized, forbidden, not_found, rate_limited, server_error, bad_answer)",
      labelNames: ["cluster", "call", "outcome"],
      registers,
    });
    this.#reviewCache = new Counter({
      name: "rte_kube_api_cache_total",
      help: "Lookups of cached TokenReview answers and ServiceAccounts, by cluster, call and result (hit, miss)",
      labelNames: ["cluster", "call", "result"],
      registers,
    });
    new Gauge({
      name: "rte_build_info",
      help: "Always 1; the labels name the running build (package version, Node.js version)",
      labelNames: ["version", "node_version"],
      aggregator: "first",
      registers,
    }).set({ version: BUILD_INFO.version, node_version: BUILD_INFO.node }, 1);
    const sources = () => this.#sources;
    new Gauge({
      name: "rte_jwks_age_seconds",
      aggregator: "max",
      help: "Seconds since the cluster's keys were last fetched successfully (absent until the first fetch)",
      labelNames: ["cluster"],
      registers,
      collect() {
        this.reset();
        const s = sources();
        for (const ks of s?.keySets ?? []) {
          const fetchedAt = ks.status().fetchedAt;
          if (fetchedAt !== undefined) this.set({ cluster: ks.cluster.name }, (s!.now() - fetchedAt) / 1000);
        }
      },
    });
    new Gauge({
      name: "rte_jwks_keys",
      aggregator: "min",
      help: "Usable verification keys loaded per cluster",
      labelNames: ["cluster"],
      registers,
      collect() {
        this.reset();
        for (const ks of sources()?.keySets ?? []) this.set({ cluster: ks.cluster.name }, ks.status().keys);
      },
    });
    new Gauge({
      name: "rte_jwks_ready",
      aggregator: "min",
      help: "1 when the cluster's keys are loaded and within maxStaleSeconds, else 0",
      labelNames: ["cluster"],
      registers,
      collect() {
        this.reset();
        for (const ks of sources()?.keySets ?? [])
          this.set({ cluster: ks.cluster.name }, ks.status().ready ? 1 : 0);
      },
    });
    new Gauge({
      name: "rte_jwks_stale",
      aggregator: "max",
      help: "1 when the cluster's key set is past its TTL and the last re-fetch failed (serving stale keys)",
      labelNames: ["cluster"],
      registers,
      collect() {
        this.reset();
        for (const ks of sources()?.keySets ?? [])
          this.set({ cluster: ks.cluster.name }, ks.status().stale ? 1 : 0);
      },
    });
    new Counter({
      name: "rte_cache_lookups_total",
      help: "Realm cache lookups by kind (identity = verified service-account tokens, token = issued registry tokens) and result",
      labelNames: ["kind", "result"],
      registers,
      collect() {
        this.reset();
        const stats = sources()?.realmStats();
        if (!stats) return;
        this.inc({ kind: "identity", result: "hit" }, stats.identityHits);
        this.inc({ kind: "identity", result: "miss" }, stats.identityMisses);
        this.inc({ kind: "token", result: "hit" }, stats.tokenHits);
        this.inc({ kind: "token", result: "miss" }, stats.tokenMisses);
      },
    });
    new Gauge({
      name: "rte_signing_certificate_expiry_seconds",
      aggregator: "min",
      help: "Seconds until the signing certificate of each registry service expires (negative once expired)",
      labelNames: ["service"],
      registers,
      collect() {
        this.reset();
        const s = sources();
        for (const [service, key] of s?.signingKeys ?? [])
          this.set({ service }, (key.certNotAfter - s!.now()) / 1000);
      },
    });
  }

  /**
   * In a worker of `serve --workers N`: from now on this worker answers the primary's collection
   * requests with these metrics (one app per worker process).
   */
  contributeToCluster(): void {
    if (inClusterWorker()) contributeRegistries([this.registry, processMetrics()]);
  }

  /** Connects the scrape-time sources (called once the app's collaborators exist). */
  bind(sources: MetricSources): void {
    this.#sources = sources;
    const redis = sources.redis;
    if (!redis) return;
    // Only with Redis configured: an always-0 gauge would page someone for a Redis that does not exist.
    const errors = new Counter({
      name: "rte_redis_errors_total",
      help: "Errors reported by the Redis client (connection refused or lost, command failures it reports)",
      registers: [this.registry],
    });
    redis.on("error", () => errors.inc());
    new Gauge({
      name: "rte_redis_up",
      aggregator: "min",
      help: "1 while the Redis client is connected and ready, else 0 (the service then runs on its in-process cache)",
      registers: [this.registry],
      collect() {
        this.set(redis.status === "ready" ? 1 : 0);
      },
    });
  }

  /** `ClusterKeySet` `onFetch` hook: one fetch attempt finished. */
  readonly onJwksFetch = (cluster: string, outcome: "ok" | "error"): void => {
    this.#jwksFetches.inc({ cluster, outcome });
  };

  /** `ClusterReviewer` `onApiCall` hook: one API server call finished. */
  readonly onKubeApiCall = (cluster: string, call: string, outcome: string): void => {
    this.#kubeApiCalls.inc({ cluster, call, outcome });
  };

  /** `ClusterReviewer` `onCacheLookup` hook: a cached review or ServiceAccount was looked up. */
  readonly onReviewCacheLookup = (cluster: string, call: string, hit: boolean): void => {
    this.#reviewCache.inc({ cluster, call, result: hit ? "hit" : "miss" });
  };

  /** `TokenRealm` `onIssue` hook: a registry token was answered (minted or reused). */
  readonly onIssue = (event: { service: string; reused: boolean }): void => {
    this.#issued.inc({ service: event.service, outcome: event.reused ? "reused" : "issued" });
  };

  /** A request was answered with an error of `reason`. */
  denial(reason: ErrorCode, route: string): void {
    this.#denials.inc({ reason });
    if (reason === "rate_limited") this.#rateLimited.inc({ route });
  }

  /** A request finished. */
  observeRequest(method: string, route: string, statusCode: number, seconds: number): void {
    // One labels object per method, route and status (bounded: see the module doc), made once.
    const key = `${method} ${statusCode} ${route}`;
    let labels = this.#requestLabels.get(key);
    if (labels === undefined) {
      labels = { method, route, status_code: String(statusCode) };
      this.#requestLabels.set(key, labels);
    }
    this.#requests.observe(labels, seconds);
  }

  /**
   * The exposition text of this app's metrics plus the process-wide ones; in a worker of
   * `serve --workers N`, aggregated over every worker.
   * @throws {Error} in a worker, when the primary cannot aggregate in time
   */
  async render(): Promise<{ contentType: string; body: string }> {
    if (inClusterWorker()) {
      return { contentType: this.registry.contentType, body: await aggregatedMetrics() };
    }
    const merged = Registry.merge([this.registry, processMetrics()]);
    return { contentType: this.registry.contentType, body: await merged.metrics() };
  }
}

/** The route label of a request that matched no route (route labels are route patterns: bounded). */
const UNMATCHED = "(unmatched)";

/** The route label of a request: its registered pattern, or `(unmatched)`. */
function routeLabel(request: FastifyRequest): string {
  return request.routeOptions.url ?? UNMATCHED;
}

/**
 * What to do once a response has been sent: observe `rte_http_request_duration_seconds`. Run from the
 * access line's `onResponse` hook (`registerAccessLog(app, requestMetrics(metrics))` in `app.ts`): one
 * hook and one read of the route for both instead of two.
 */
export function requestMetrics(
  metrics: ServiceMetrics,
): (request: FastifyRequest, reply: FastifyReply, route: string | undefined) => void {
  return (request, reply, route) =>
    metrics.observeRequest(request.method, route ?? UNMATCHED, reply.statusCode, reply.elapsedTime / 1000);
}

/**
 * Registers the error hook and `GET /metrics` (never rate limited: the limiter only covers `/token`
 * and `/v1/*`). Request durations are observed through {@link requestMetrics}.
 */
export function registerMetrics(app: FastifyInstance, metrics: ServiceMetrics): void {
  // Callback-style hooks: an async hook costs a promise per request.
  app.addHook("onError", (request: FastifyRequest, _reply: FastifyReply, error: unknown, done) => {
    metrics.denial(toRequestError(error).code, routeLabel(request));
    done();
  });
  app.get("/metrics", async (request, reply) => {
    let rendered: { contentType: string; body: string };
    try {
      rendered = await metrics.render();
    } catch (err) {
      // A partial answer (one worker's counters) would read as a counter reset: fail the scrape instead.
      request.log.error({ err: (err as Error).message }, "metrics aggregation failed");
      return reply
        .code(503)
        .type("text/plain")
        .header("cache-control", "no-store")
        .send("metrics unavailable\n");
    }
    return reply.type(rendered.contentType).header("cache-control", "no-store").send(rendered.body);
  });
}
