/**
 * The application factory: `buildApp(config, deps)` returns a ready Fastify instance with every route
 * registered and nothing listening. `src/server.ts` listens; tests call `app.inject()`.
 */

import { readFileSync } from "node:fs";
import formbody from "@fastify/formbody";
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from "fastify";
import type { Logger } from "pino";
import type { ClusterKeySet } from "./authn/jwks.js";
import { createCacheStores } from "./cache/index.js";
import type { RedisClient } from "./cache/redis.js";
import type { CacheSealer } from "./cache/seal.js";
import type { CacheStore } from "./cache/store.js";
import type { Config } from "./config/schema.js";
import { RequestError } from "./errors.js";
import type { SigningKey } from "./jose/signing-key.js";
import type { LocalIssuer } from "./local/issuer.js";
import { createLogger, requestIdGenerator } from "./logging.js";
import { accessLogController, registerAccessLog } from "./plugins/access-log.js";
import { registerDeniedAudit } from "./plugins/audit.js";
import { handleClientError, registerErrorHandling, sendError } from "./plugins/errors.js";
import { registerLoadShedding } from "./plugins/load-shedding.js";
import { registerMetrics, requestMetrics, ServiceMetrics } from "./plugins/metrics.js";
import { registerRateLimit } from "./plugins/rate-limit.js";
import { NODE_MAX_HEADER_SIZE, registerRequestLimits } from "./plugins/request-limits.js";
import type { TokenRealm } from "./realm/realm.js";
import { registerCredentialProviderRoutes } from "./routes/credential-provider.js";
import { registerExplainRoutes } from "./routes/explain.js";
import { registerHealthRoutes } from "./routes/health.js";
import { registerKeyRoutes } from "./routes/keys.js";
import { registerOpenApiRoute } from "./routes/openapi.js";
import { registerTokenRoutes } from "./routes/token.js";
import { buildRuntime, type RuntimeBase, RuntimeHolder } from "./runtime.js";

/**
 * How often Node enforces `headersTimeout` and `requestTimeout` on open connections, ms. Node's default
 * (30 s) lets a slow-loris client hold a connection up to 30 s past those timeouts.
 */
const CONNECTIONS_CHECKING_INTERVAL_MS = 1_000;

/**
 * fastify's `trustProxy` for `server.trustProxy`: a hop count becomes "trust the first N addresses
 * counted from the socket" (proxy-addr's `trust(address, i)`; fastify itself treats a number as "trust
 * none"), so the client address is the one the outermost of the N proxies appended to `X-Forwarded-For`;
 * addresses/CIDRs are passed through (proxy-addr skips entries appended by those proxies). Either way the
 * left-most, client-supplied entries are never used unless every hop before them is trusted.
 */
function trustProxyOption(
  setting: Config["server"]["trustProxy"],
): boolean | string[] | ((address: string, hop: number) => boolean) {
  if (typeof setting === "number") return (_address, hop) => hop < setting;
  return setting;
}

/** Optional collaborators; defaults are built from the config. */
export interface AppDeps {
  /** Logger (default: pino at `config.logging.level` to stdout). */
  logger?: Logger;
  /** Clock, epoch milliseconds (frozen in tests). */
  now?: () => number;
  /** Cache store (default: built from `config.cache`: memory, or memory + Redis). */
  store?: CacheStore;
  /** With `store`: the shared Redis tier and client, if any. */
  shared?: CacheStore;
  redis?: RedisClient;
  /** Serve a local issuer's discovery and JWKS under `prefix` (local mode only). */
  localIssuer?: { issuer: LocalIssuer; prefix: string };
}

/** What the app exposes to the server and to tests (read afresh on each access: it follows reloads). */
interface AppContext {
  realm: TokenRealm;
  keySets: ClusterKeySet[];
  store: CacheStore;
  /** Seals the cache entries of the config version in force (see `Runtime.sealer`). */
  sealer: CacheSealer;
  signingKeys: ReadonlyMap<string, SigningKey>;
  /** The config version in force. */
  config: Config;
  /** Its version number (1 at start-up, +1 per successful reload). */
  version: number;
  /** Token-endpoint requests in flight now (bounded by `server.maxConcurrentRequests`). */
  inFlight: () => number;
  /** This app's Prometheus metrics (its own registry). */
  metrics: ServiceMetrics;
  /**
   * Swaps in a new config atomically (see `src/runtime.ts`).
   * @throws {ConfigError} when the new config's keys or policy are invalid; the old one keeps serving
   */
  reload: (config: Config) => { version: number; needsRestart: string[] };
}

declare module "fastify" {
  interface FastifyInstance {
    /** The app's collaborators (realm, key sets, store). */
    exchange: AppContext;
  }
}

/**
 * Builds the application.
 * @param config validated, frozen config (see `config/load.ts`)
 * @param deps optional logger, clock, store, local issuer
 * @throws {ConfigError} when a signing key or a policy pattern is invalid
 */
export async function buildApp(config: Config, deps: AppDeps = {}): Promise<FastifyInstance> {
  const logger = deps.logger ?? createLogger(config.logging.level);
  const now = deps.now ?? Date.now;
  const stores = deps.store
    ? { store: deps.store, shared: deps.shared, redis: deps.redis }
    : createCacheStores(config, logger, now);
  const store = stores.store;
  const metrics = new ServiceMetrics();
  const base: RuntimeBase = { logger, now, store, shared: stores.shared, metrics };
  const runtime = new RuntimeHolder(buildRuntime(config, base), base);
  // Getters: metrics always read the config version in force, across reloads.
  metrics.bind({
    realmStats: () => runtime.current.realm.stats,
    get keySets() {
      return runtime.current.keySets;
    },
    get signingKeys() {
      return runtime.current.signingKeys;
    },
    redis: stores.redis,
    now,
  });
  metrics.contributeToCluster();
  const realm = runtime.realmHandle;

  // Node's header limit is raised above the service's own caps (plugins/request-limits.ts) so that an
  // oversized request gets a JSON error from the service instead of Node's bare 431.
  const listener = config.server.tls
    ? {
        https: {
          key: readFileSync(config.server.tls.keyFile),
          cert: readFileSync(config.server.tls.certFile),
          // A connection without a TLS handshake is closed like one without request headers (Node's
          // default handshake timeout is 120 s; headersTimeout only starts once the handshake is done).
          handshakeTimeout: config.server.headersTimeoutMs,
          maxHeaderSize: NODE_MAX_HEADER_SIZE,
          connectionsCheckingInterval: CONNECTIONS_CHECKING_INTERVAL_MS,
        },
      }
    : {
        http: {
          maxHeaderSize: NODE_MAX_HEADER_SIZE,
          connectionsCheckingInterval: CONNECTIONS_CHECKING_INTERVAL_MS,
        },
      };
  const app = Fastify({
    ...listener,
    loggerInstance: logger as FastifyBaseLogger,
    // One access line per request instead of fastify's two (plugins/access-log.ts).
    logController: accessLogController(),
    // Unique across the workers of `serve --workers N` (logging.ts).
    genReqId: requestIdGenerator(),
    bodyLimit: config.server.bodyLimitBytes,
    trustProxy: trustProxyOption(config.server.trustProxy),
    requestTimeout: config.server.requestTimeoutMs,
    keepAliveTimeout: config.server.keepAliveTimeoutMs,
    return503OnClosing: true,
    routerOptions: { ignoreTrailingSlash: false, maxParamLength: 200 },
    // A path fastify cannot decode (FST_ERR_BAD_URL) is otherwise answered with fastify's own body, which
    // echoes the path, and so any credential pasted into it: answer in the service's format instead.
    // Requests Node's parser refuses (e.g. headers past NODE_MAX_HEADER_SIZE): our format, nothing logged
    // but the parser's code (fastify's default logs the raw request bytes, Authorization included).
    clientErrorHandler: handleClientError,
    frameworkErrors: (error, request, reply) => {
      request.log.info({ fastifyCode: error.code, status: 400 }, "request rejected");
      sendError(reply, new RequestError("invalid_request", "malformed request URL"), "docker", false);
    },
  });
  // Node's own guard against clients that never finish their headers (fastify has no option for it).
  app.server.headersTimeout = config.server.headersTimeoutMs;
  app.decorate("exchange", {
    getter: (): AppContext => ({
      realm: runtime.current.realm,
      keySets: runtime.current.keySets,
      sealer: runtime.current.sealer,
      signingKeys: runtime.current.signingKeys,
      config: runtime.current.config,
      version: runtime.current.version,
      inFlight,
      store,
      metrics,
      reload: (next: Config) => runtime.reload(next),
    }),
  });
  // One onResponse hook writes the access line and observes the request metrics.
  registerAccessLog(app, requestMetrics(metrics));
  registerErrorHandling(app);
  registerRequestLimits(app);
  const inFlight = registerLoadShedding(app, config.server);
  registerMetrics(app, metrics);
  registerDeniedAudit(app, now);
  await app.register(formbody, { bodyLimit: config.server.bodyLimitBytes });
  await registerRateLimit(app, config, realm, stores.redis);
  registerTokenRoutes(app, realm);
  registerExplainRoutes(app, realm, now);
  registerCredentialProviderRoutes(app, runtime.credentialProviderHandle);
  registerKeyRoutes(app, () => [...runtime.current.publishedKeys.values()].flat());
  registerHealthRoutes(
    app,
    () => runtime.current.keySets,
    store,
    now,
    () => runtime.current.reviewer.status(),
  );
  registerOpenApiRoute(app);
  if (deps.localIssuer) deps.localIssuer.issuer.register(app, deps.localIssuer.prefix);
  app.addHook("onClose", async () => {
    await runtime.close();
    if (!deps.store) await store.close();
  });
  return app;
}
