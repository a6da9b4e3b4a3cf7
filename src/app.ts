/**
 * The application factory: `buildApp(config, deps)` returns a ready Fastify instance with every route
 * registered and nothing listening. `src/server.ts` listens; tests call `app.inject()`.
 */
import { readFileSync } from "node:fs";
import formbody from "@fastify/formbody";
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from "fastify";
import type { Logger } from "pino";
import { ClusterKeySet } from "./authn/jwks.js";
import { ServiceAccountVerifier } from "./authn/verify.js";
import { createCacheStores } from "./cache/index.js";
import type { RedisClient } from "./cache/redis.js";
import type { CacheStore } from "./cache/store.js";
import type { Config } from "./config/schema.js";
import { CredentialProviderExchange } from "./credential-provider/exchange.js";
import type { LocalIssuer } from "./local/issuer.js";
import { registerDeniedAudit } from "./plugins/audit.js";
import { registerErrorHandling } from "./plugins/errors.js";
import { createLogger } from "./plugins/logging.js";
import { registerMetrics, ServiceMetrics } from "./plugins/metrics.js";
import { registerRateLimit } from "./plugins/rate-limit.js";
import { loadPolicy } from "./policy/validate.js";
import { registerCredentialProviderRoutes } from "./routes/credential-provider.js";
import { registerExplainRoutes } from "./routes/explain.js";
import { registerHealthRoutes } from "./routes/health.js";
import { registerKeyRoutes } from "./routes/keys.js";
import { loadOpenApiDocument, registerOpenApiRoute } from "./routes/openapi.js";
import { registerTokenRoutes } from "./routes/token.js";
import { TokenRealm } from "./token/realm.js";
import { loadSigningKey, type SigningKey } from "./token/signing.js";

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

/** What the app exposes to the server and to tests. */
export interface AppContext {
  realm: TokenRealm;
  keySets: ClusterKeySet[];
  store: CacheStore;
  signingKeys: ReadonlyMap<string, SigningKey>;
  /** This app's Prometheus metrics (its own registry). */
  metrics: ServiceMetrics;
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
  const signingKeys = new Map<string, SigningKey>(
    config.registries.map((r, i) => [
      r.service,
      loadSigningKey(r.signingKey.keyFile, r.signingKey.certFile, `registries[${i}].signingKey`),
    ]),
  );
  const policy = loadPolicy(config, (warning) => logger.warn(`config warning: ${warning}`));
  const metrics = new ServiceMetrics();
  const openapi = loadOpenApiDocument();
  const keySets = config.clusters.map(
    (c) => new ClusterKeySet(c, { logger, now, shared: stores.shared, onFetch: metrics.onJwksFetch }),
  );
  const verifier = new ServiceAccountVerifier(keySets, { now });
  const realm = new TokenRealm({
    config,
    verifier,
    policy,
    signingKeys,
    store,
    logger,
    now,
    onIssue: metrics.onIssue,
  });
  metrics.bind({ realmStats: () => realm.stats, keySets, signingKeys, redis: stores.redis, now });

  const https = config.server.tls
    ? {
        https: {
          key: readFileSync(config.server.tls.keyFile),
          cert: readFileSync(config.server.tls.certFile),
        },
      }
    : {};
  const app = Fastify({
    ...https,
    loggerInstance: logger as FastifyBaseLogger,
    bodyLimit: config.server.bodyLimitBytes,
    trustProxy: config.server.trustProxy,
    requestTimeout: config.server.requestTimeoutMs,
    keepAliveTimeout: config.server.keepAliveTimeoutMs,
    return503OnClosing: true,
    routerOptions: { ignoreTrailingSlash: false, maxParamLength: 200 },
  });
  // Node's own guard against clients that never finish their headers (fastify has no option for it).
  app.server.headersTimeout = config.server.headersTimeoutMs;
  app.decorate("exchange", { realm, keySets, store, signingKeys, metrics });
  registerErrorHandling(app);
  registerMetrics(app, metrics);
  registerDeniedAudit(app, now);
  await app.register(formbody, { bodyLimit: config.server.bodyLimitBytes });
  await registerRateLimit(app, config, realm, stores.redis);
  registerTokenRoutes(app, realm);
  registerExplainRoutes(app, realm, now);
  registerCredentialProviderRoutes(
    app,
    new CredentialProviderExchange({ config, realm, policy, logger, now }),
  );
  registerKeyRoutes(app, signingKeys.values());
  registerHealthRoutes(app, keySets, store, now);
  registerOpenApiRoute(app, openapi);
  if (deps.localIssuer) deps.localIssuer.issuer.register(app, deps.localIssuer.prefix);
  app.addHook("onClose", async () => {
    await Promise.all(keySets.map((ks) => ks.close()));
    if (!deps.store) await store.close();
  });
  return app;
}
