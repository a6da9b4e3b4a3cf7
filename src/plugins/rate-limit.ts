/**
 * Rate limits on the token endpoints (@fastify/rate-limit), shared by all replicas through Redis.
 *
 * Keys: a request whose credential this instance has already verified is counted against its service
 * account (`sa:<cluster>/<namespace>/<name>`, limit `maxPerServiceAccount`); any other request against
 * its client address (`ip:<address>`, limit `maxPerAddress`). Counting runs before the handler
 * (preHandler, so POST form bodies are parsed) and never verifies anything itself.
 *
 * Counters live in Redis when it is configured and healthy, else in a process-local window: a Redis
 * outage degrades the limits to per-replica, it never disables them and never fails a request.
 * An exceeded limit answers 429 with `Retry-After`, in the endpoint's own error format.
 */
import rateLimit from "@fastify/rate-limit";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { LRUCache } from "lru-cache";
import { parseAuthorization } from "../authn/credentials.js";
import { addressSubject, isServiceAccountSubject, rateLimitKey } from "../cache/keys.js";
import { pauseRedis, type RedisClient, redisUsable } from "../cache/redis.js";
import type { Config } from "../config/schema.js";
import { RequestError } from "../errors.js";
import type { TokenRealm } from "../realm/realm.js";

/** Paths that are rate limited (the token realm and the exchange endpoints). */
export const LIMITED = /^\/(token|v1\/)/;

const INCR_LUA = `
local current = redis.call('INCR', KEYS[1])
if current == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {current, ttl}`;

type IncrCallback = (error: Error | null, result?: { current: number; ttl: number }) => void;

/** The credential a token-endpoint request presents, if any (header, or POST form password). */
function presentedCredential(request: FastifyRequest): string | undefined {
  try {
    const fromHeader = parseAuthorization(request.headers.authorization);
    if (fromHeader) return fromHeader.secret;
  } catch {
    return undefined;
  }
  const body = request.body as Record<string, unknown> | undefined;
  // Form fields of POST /token, and the JSON field of POST /v1/credential-provider.
  for (const field of ["password", "subject_token", "refresh_token", "serviceAccountToken"]) {
    const v = body?.[field];
    if (typeof v === "string" && v !== "") return v;
  }
  return undefined;
}

/**
 * Builds a rate-limit store class: Redis (atomic INCR + PEXPIRE) while healthy, a local fixed window
 * otherwise.
 */
function hybridStore(redis: RedisClient | undefined, prefix: string) {
  const local = new LRUCache<string, { count: number; until: number }>({ max: 100_000 });
  const incrLocal = (key: string, windowMs: number) => {
    const now = Date.now();
    let e = local.get(key);
    if (!e || e.until <= now) {
      e = { count: 0, until: now + windowMs };
      local.set(key, e);
    }
    e.count++;
    return { current: e.count, ttl: e.until - now };
  };
  return class HybridStore {
    incr(key: string, cb: IncrCallback, timeWindow: number): void {
      if (!redis || !redisUsable(redis)) {
        cb(null, incrLocal(key, timeWindow));
        return;
      }
      redis.eval(INCR_LUA, 1, rateLimitKey(prefix, key), String(timeWindow)).then(
        (r) => {
          const [current, ttl] = r as [number, number];
          cb(null, { current, ttl });
        },
        () => {
          pauseRedis(redis);
          cb(null, incrLocal(key, timeWindow));
        },
      );
    }
    child(): HybridStore {
      return this;
    }
  };
}

/**
 * Registers the rate limiter.
 * @param realm used to recognise already-verified credentials (no verification happens here)
 * @param redis the shared Redis client, if configured
 */
export async function registerRateLimit(
  app: FastifyInstance,
  config: Config,
  realm: TokenRealm,
  redis: RedisClient | undefined,
): Promise<void> {
  const rl = config.rateLimit;
  if (!rl.enabled) return;
  await app.register(rateLimit, {
    global: true,
    hook: "preHandler",
    timeWindow: rl.timeWindowSeconds * 1000,
    store: hybridStore(redis, config.cache.keyPrefix) as never,
    // The matched route pattern, never the raw URL: `/%74oken` is routed to /token too.
    allowList: (request: FastifyRequest) => !LIMITED.test(request.routeOptions.url ?? ""),
    keyGenerator: (request: FastifyRequest) => {
      const credential = presentedCredential(request);
      const subject = credential ? realm.knownSubject(credential) : undefined;
      return subject ?? addressSubject(request.ip);
    },
    max: (_request: FastifyRequest, key: string) =>
      isServiceAccountSubject(key) ? rl.maxPerServiceAccount : rl.maxPerAddress,
    addHeadersOnExceeding: {
      "x-ratelimit-limit": false,
      "x-ratelimit-remaining": false,
      "x-ratelimit-reset": false,
    },
    errorResponseBuilder: (_request, context) =>
      new RequestError(
        "rate_limited",
        `too many requests: retry in ${Math.max(1, Math.ceil(context.ttl / 1000))} s`,
        {
          retryAfterSeconds: Math.max(1, Math.ceil(context.ttl / 1000)),
        },
      ),
  });
}
