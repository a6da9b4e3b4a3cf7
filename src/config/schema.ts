/**
 * The configuration schema (one YAML file, validated with zod at startup). Every key is documented in
 * the README's configuration reference; a test checks that the README names every key of this schema.
 */
import { z } from "zod";

/** JWS algorithms a Kubernetes apiserver signs service-account tokens with (RSA -> RS256, ECDSA -> ES*). */
export const SERVICE_ACCOUNT_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512"] as const;

/** Registry actions (distribution docs/spec/auth/scope.md). `*` means every action. */
export const ACTIONS = ["pull", "push", "delete", "*"] as const;

/** One registry action. */
export type Action = (typeof ACTIONS)[number];

const nonEmpty = z.string().trim().min(1, "must not be empty");
const httpUrl = z
  .string()
  .url("must be an absolute URL")
  .refine((u) => /^https?:\/\//.test(u), "must be an http(s) URL");

const fetchSchema = z
  .object({
    timeoutMs: z.number().int().min(100).max(60_000).default(5_000),
    maxBytes: z
      .number()
      .int()
      .min(1024)
      .max(16 * 1024 * 1024)
      .default(1024 * 1024),
    maxRedirects: z.number().int().min(0).max(5).default(2),
  })
  .strict();

const jwksRefreshSchema = z
  .object({
    /** Bounds for the TTL derived from Cache-Control max-age, seconds. */
    minTtlSeconds: z.number().int().min(1).default(60),
    maxTtlSeconds: z.number().int().min(1).default(3600),
    /** Unknown-kid re-fetch budget: burst, then one per `refillSeconds`. */
    unknownKidBurst: z.number().int().min(1).max(100).default(3),
    unknownKidRefillSeconds: z.number().min(0.1).max(3600).default(10),
    /** How long cached keys keep serving after fetches start failing, seconds. */
    maxStaleSeconds: z
      .number()
      .int()
      .min(0)
      .default(24 * 3600),
  })
  .strict();

/** One trusted Kubernetes service-account issuer. */
const clusterSchema = z
  .object({
    name: z
      .string()
      .regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, "must be a DNS label (lower case, digits, '-')"),
    issuer: nonEmpty,
    discoveryUrl: httpUrl.optional(),
    jwksUri: httpUrl.optional(),
    jwksFile: nonEmpty.optional(),
    caFile: nonEmpty.optional(),
    bearerTokenFile: nonEmpty.optional(),
    /** Allow a discovery `jwks_uri` on another host than the issuer's (SSRF guard, off by default). */
    allowCrossHostJwksUri: z.boolean().default(false),
    audiences: z.array(nonEmpty).min(1, "must list at least one audience"),
    algorithms: z.array(z.enum(SERVICE_ACCOUNT_ALGORITHMS)).min(1).default(["RS256", "ES256"]),
    clockSkewSeconds: z.number().int().min(0).max(300).default(30),
    fetch: fetchSchema.prefault({}),
    jwks: jwksRefreshSchema.prefault({}),
  })
  .strict()
  .superRefine((c, ctx) => {
    const sources = [c.discoveryUrl, c.jwksUri, c.jwksFile].filter((s) => s !== undefined);
    if (sources.length > 1) {
      ctx.addIssue({
        code: "custom",
        message: "set at most one of discoveryUrl, jwksUri, jwksFile",
        path: ["jwksFile" in c && c.jwksFile ? "jwksFile" : "jwksUri"],
      });
    }
    if (sources.length === 0 && !/^https?:\/\//.test(c.issuer)) {
      ctx.addIssue({
        code: "custom",
        message: "issuer is not a URL, so discovery is impossible: set jwksUri or jwksFile",
        path: ["issuer"],
      });
    }
    if (c.jwks.minTtlSeconds > c.jwks.maxTtlSeconds) {
      ctx.addIssue({
        code: "custom",
        message: "must be <= jwks.maxTtlSeconds",
        path: ["jwks", "minTtlSeconds"],
      });
    }
  });

/** A signing key pair for minted registry tokens: PEM private key + PEM certificate (or chain). */
const signingKeySchema = z
  .object({
    keyFile: nonEmpty,
    certFile: nonEmpty,
  })
  .strict();

/** One registry this service is the token realm for. */
const registrySchema = z
  .object({
    service: nonEmpty,
    issuer: nonEmpty,
    tokenTtlSeconds: z
      .number()
      .int()
      .min(60, "must be >= 60 (clients assume at least 60 s)")
      .max(86_400)
      .default(300),
    signingKey: signingKeySchema,
    /** Optional: a token must carry one of these audiences to be used at this registry. */
    audiences: z.array(nonEmpty).min(1).optional(),
  })
  .strict();

const globSchema = z.string().min(1).max(512);

const grantSchema = z
  .object({
    repository: globSchema.optional(),
    registry: z.literal("catalog").optional(),
    actions: z.array(z.enum(ACTIONS)).min(1, "must list at least one action"),
  })
  .strict()
  .refine((g) => (g.repository === undefined) !== (g.registry === undefined), {
    message: "set exactly one of repository, registry",
  });

const ruleSchema = z
  .object({
    name: nonEmpty,
    match: z
      .object({
        cluster: globSchema.default("*"),
        namespace: globSchema.default("*"),
        serviceAccount: globSchema.default("*"),
        service: globSchema.default("*"),
      })
      .strict()
      .prefault({}),
    allow: z.array(grantSchema).default([]),
    deny: z.array(grantSchema).default([]),
  })
  .strict()
  .refine((r) => r.allow.length + r.deny.length > 0, {
    message: "a rule needs at least one allow or deny entry",
  });

const hostPort = z.object({ host: nonEmpty, port: z.number().int().min(1).max(65_535) }).strict();

const cacheSchema = z
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

const rateLimitSchema = z
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

const serverSchema = z
  .object({
    host: nonEmpty.default("0.0.0.0"),
    port: z.number().int().min(0).max(65_535).default(8080),
    trustProxy: z.boolean().default(false),
    bodyLimitBytes: z
      .number()
      .int()
      .min(1024)
      .max(1024 * 1024)
      .default(64 * 1024),
    requestTimeoutMs: z.number().int().min(1000).default(30_000),
    tls: z.object({ certFile: nonEmpty, keyFile: nonEmpty }).strict().optional(),
  })
  .strict();

/** The whole configuration file. */
export const configSchema = z
  .object({
    server: serverSchema.prefault({}),
    logging: z
      .object({
        level: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
      })
      .strict()
      .prefault({}),
    clusters: z.array(clusterSchema).min(1, "must list at least one cluster"),
    registries: z.array(registrySchema).min(1, "must list at least one registry"),
    policy: z
      .object({
        rules: z.array(ruleSchema),
      })
      .strict(),
    cache: cacheSchema.prefault({}),
    rateLimit: rateLimitSchema.prefault({}),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    const dup = <T>(items: T[], key: (t: T) => string, path: string, field: string) => {
      const seen = new Set<string>();
      items.forEach((item, i) => {
        const k = key(item);
        if (seen.has(k))
          ctx.addIssue({ code: "custom", message: `duplicate ${field} "${k}"`, path: [path, i, field] });
        seen.add(k);
      });
    };
    dup(cfg.clusters, (c) => c.name, "clusters", "name");
    dup(cfg.clusters, (c) => c.issuer, "clusters", "issuer");
    dup(cfg.registries, (r) => r.service, "registries", "service");
    if (cfg.policy.rules.length === 0) {
      ctx.addIssue({
        code: "custom",
        message: "no rules: every request would be denied (default deny); add at least one rule",
        path: ["policy", "rules"],
      });
    }
  });

/** The validated configuration, with defaults applied and file paths resolved against the config file. */
export type Config = z.infer<typeof configSchema>;
/** One trusted cluster (see {@link Config}). */
export type ClusterConfig = Config["clusters"][number];
/** One registry (see {@link Config}). */
export type RegistryConfig = Config["registries"][number];
/** One policy rule (see {@link Config}). */
export type RuleConfig = Config["policy"]["rules"][number];
/** One allow/deny entry of a rule. */
export type GrantConfig = RuleConfig["allow"][number];
