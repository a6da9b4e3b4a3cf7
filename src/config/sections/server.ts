/** `server`, `cache` and `rateLimit`: the HTTP listener, the Redis or in-memory cache and rate limits. */
import { isIP } from "node:net";
import { z } from "zod";
import { nonEmpty } from "./common.js";

const hostPort = z.object({ host: nonEmpty, port: z.number().int().min(1).max(65_535) }).strict();

/** `cache`: Redis (single node, Sentinel or Cluster) or, without Redis, a bounded in-memory cache. */
export const cacheSchema = z
  .object({
    /** Single Redis node, `redis://[:password@]host:port/db` or `rediss://` for TLS. */
    redisUrl: nonEmpty.optional(),
    /** Redis Sentinel: the sentinels and the master group name. */
    redisSentinel: z
      .object({
        sentinels: z.array(hostPort).min(1),
        name: nonEmpty,
        db: z.number().int().min(0).default(0),
      })
      .strict()
      .optional(),
    /** Redis Cluster: seed nodes. */
    redisCluster: z
      .object({ nodes: z.array(hostPort).min(1) })
      .strict()
      .optional(),
    /** File holding the Redis password (Sentinel and Cluster; for a single node put it in redisUrl or here). */
    redisPasswordFile: nonEmpty.optional(),
    keyPrefix: z.string().max(64).default("rte:"),
    /** Upper bound on any single Redis command, ms; past it the cache counts as a miss. */
    commandTimeoutMs: z.number().int().min(1).max(10_000).default(50),
    /** Connection attempt timeout, ms. */
    connectTimeoutMs: z.number().int().min(50).max(60_000).default(2_000),
    memory: z
      .object({
        maxEntries: z.number().int().min(100).default(100_000),
        /** Most bytes of cached keys and values (whichever of the two bounds is reached first). */
        maxBytes: z
          .number()
          .int()
          .min(1024 * 1024)
          .default(32 * 1024 * 1024),
      })
      .strict()
      .prefault({}),
    /** Reuse issued registry tokens while at least half their lifetime remains. */
    reuseTokens: z.boolean().default(true),
  })
  .strict()
  .superRefine((c, ctx) => {
    const modes = [c.redisUrl, c.redisSentinel, c.redisCluster].filter((m) => m !== undefined);
    if (modes.length > 1) {
      ctx.addIssue({
        code: "custom",
        message: "set at most one of redisUrl, redisSentinel, redisCluster",
        path: ["redisUrl"],
      });
    }
    if (c.redisUrl !== undefined && !/^rediss?:\/\//.test(c.redisUrl)) {
      ctx.addIssue({ code: "custom", message: "must start with redis:// or rediss://", path: ["redisUrl"] });
    }
  });

/** `rateLimit`: requests per window per verified service account and per unverified client address. */
export const rateLimitSchema = z
  .object({
    enabled: z.boolean().default(true),
    /** Window length, seconds. */
    timeWindowSeconds: z.number().int().min(1).max(3600).default(60),
    /** Requests per window for one verified service account (cluster/namespace/name). */
    maxPerServiceAccount: z.number().int().min(1).default(600),
    /** Requests per window for one client address whose credential is not (yet) verified. */
    maxPerAddress: z.number().int().min(1).default(3000),
  })
  .strict();

/** Named address ranges fastify's `trustProxy` (proxy-addr) understands besides addresses and CIDRs. */
const PROXY_RANGE_NAMES = ["loopback", "linklocal", "uniquelocal"];

/** One trusted proxy: an IPv4/IPv6 address, a CIDR (`10.0.0.0/8`, `fd00::/8`) or a proxy-addr range name. */
const trustedProxy = z
  .string()
  .trim()
  .refine((v) => {
    if (PROXY_RANGE_NAMES.includes(v)) return true;
    const [address = "", prefix, ...rest] = v.split("/");
    const family = isIP(address);
    if (family === 0 || rest.length > 0) return false;
    if (prefix === undefined) return true;
    return /^[0-9]{1,3}$/.test(prefix) && Number(prefix) <= (family === 4 ? 32 : 128);
  }, "must be an IP address, a CIDR (10.0.0.0/8) or one of loopback, linklocal, uniquelocal");

/**
 * `server.trustProxy`: `false` (the socket's address is the client), a hop count (that many proxies in
 * front: the address they appended to `X-Forwarded-For` is the client), or the addresses/CIDRs of the
 * proxies (entries they appended are skipped). `true` (trust every hop) is refused: the left-most
 * `X-Forwarded-For` entry is whatever the client sent, and it would key rate limits and the audit log.
 */
const trustProxySchema = z
  .union([z.boolean(), z.number().int().min(1).max(16), z.array(trustedProxy).min(1).max(64)])
  .refine((v) => v !== true, {
    message:
      "true would trust every X-Forwarded-For hop, so a client could choose the address that keys rate limits and the audit log: set the number of proxies in front of the service (e.g. 1) or their addresses/CIDRs",
  })
  .default(false);

/** `server`: the HTTP(S) listener, its proxies, timeouts and load-shedding bounds. */
export const serverSchema = z
  .object({
    host: nonEmpty.default("0.0.0.0"),
    port: z.number().int().min(0).max(65_535).default(8080),
    trustProxy: trustProxySchema,
    bodyLimitBytes: z
      .number()
      .int()
      .min(1024)
      .max(1024 * 1024)
      .default(64 * 1024),
    requestTimeoutMs: z.number().int().min(1000).default(30_000),
    /** Idle keep-alive connections are closed after this, ms; keep it above the load balancer's idle timeout. */
    keepAliveTimeoutMs: z.number().int().min(1000).max(3_600_000).default(75_000),
    /** The longest a client may take to send the request headers, ms (slow-loris guard). */
    headersTimeoutMs: z.number().int().min(1000).default(15_000),
    /** Token-endpoint requests processed at once; more are refused at once with 503 (load shedding). */
    maxConcurrentRequests: z.number().int().min(1).max(100_000).default(512),
    /** The longest a token-endpoint request body may take to arrive once the headers are in, ms. */
    bodyTimeoutMs: z.number().int().min(100).default(10_000),
    /**
     * Token-endpoint requests one client address may have stalled at once: body still incomplete a second
     * after the headers; more from that address are refused with 429 until some finish.
     */
    maxStalledRequestsPerAddress: z.number().int().min(1).max(100_000).default(64),
    tls: z.object({ certFile: nonEmpty, keyFile: nonEmpty }).strict().optional(),
  })
  .strict()
  .refine((s) => s.headersTimeoutMs <= s.requestTimeoutMs, {
    message: "must be <= server.requestTimeoutMs",
    path: ["headersTimeoutMs"],
  })
  .refine((s) => s.bodyTimeoutMs <= s.requestTimeoutMs, {
    message: "must be <= server.requestTimeoutMs",
    path: ["bodyTimeoutMs"],
  });
