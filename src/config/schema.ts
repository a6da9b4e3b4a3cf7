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

/**
 * How service-account tokens of a cluster are verified (see docs/tokenreview.md): `offline` (JWKS only),
 * `tokenReview` (the cluster's TokenReview API decides, authentication.k8s.io/v1), or `both` (JWKS first,
 * then the review: a token the JWKS rejects never costs an API call).
 */
export const VERIFICATION_MODES = ["offline", "tokenReview", "both"] as const;

/** The cluster's API server, for TokenReview and ServiceAccount reads. */
const apiServerSchema = z
  .object({
    url: httpUrl,
    /** PEM CA bundle for the API server's serving certificate. */
    caFile: nonEmpty.optional(),
    /** File holding the bearer token sent to the API server (re-read when it changes: kubelet rotates it). */
    bearerTokenFile: nonEmpty.optional(),
  })
  .strict();

/** TokenReview / ServiceAccount answer caching and time budget. */
const reviewSchema = z
  .object({
    /** How long a positive review (or a ServiceAccount read) is reused, seconds; never past the token's `exp`. */
    cacheTtlSeconds: z.number().int().min(0).max(300).default(10),
    /** Time budget of one API server call, milliseconds (connect + answer). */
    timeoutMs: z.number().int().min(100).max(30_000).default(2_000),
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
    verification: z.enum(VERIFICATION_MODES).default("offline"),
    /**
     * Where credential-provider annotations come from: the kubelet request (`fromRequest`, asserted by the
     * caller) or the ServiceAccount object read from the API server (`fromCluster`).
     */
    annotations: z.enum(["fromRequest", "fromCluster"]).default("fromRequest"),
    /** The API server (default in a pod: the in-cluster service, CA and service-account token). */
    apiServer: apiServerSchema.optional(),
    review: reviewSchema.prefault({}),
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

/**
 * A key published next to the active signing key during a rotation (the next key, or the previous one):
 * its certificate, and optionally its private key (checked to match, never used to sign).
 */
const publishedKeySchema = z
  .object({
    certFile: nonEmpty,
    keyFile: nonEmpty.optional(),
  })
  .strict();

/**
 * A registry host as it appears in an image reference (`host[:port]`): a lower-case DNS name, an IPv4
 * address or a bracketed IPv6 address, optionally with a port; no scheme, no path.
 */
const imageHost = z
  .string()
  .regex(
    /^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?$/,
    "must be a lower-case registry host as in image references: host[:port], no scheme or path",
  );

/** Prefix of the `iss`/`aud` of credentials this service derives (exchange credentials, refresh tokens). */
export const RESERVED_URN_PREFIX = "urn:registry-token-exchange:";

/** The exchange endpoint for kubelet credential provider plugins (KEP-4412). */
const credentialProviderSchema = z
  .object({
    /** Audiences a service-account token must carry at `/v1/credential-provider` (one must match). */
    audiences: z.array(nonEmpty).min(1, "must list at least one audience"),
    /** Lifetime of exchange credentials, seconds; always cut to the service-account token's `exp`. */
    credentialTtlSeconds: z
      .number()
      .int()
      .min(120, "must be >= 120 (kubelet caches half of it; /token needs 60 s left)")
      .max(86_400)
      .default(3600),
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
    /**
     * Keys published in `/.well-known/jwks.json` besides `signingKey` and accepted for this service's own
     * exchange credentials and refresh tokens, but never used to sign: the next key before a switch,
     * the previous one until what it signed has expired.
     */
    publishedKeys: z.array(publishedKeySchema).max(8).optional(),
    /** Optional: a token must carry one of these audiences to be used at this registry. */
    audiences: z.array(nonEmpty).min(1).optional(),
    /**
     * Image registry hosts (`host[:port]`, as in image references) this `service` serves, for
     * `/v1/credential-provider`; default: the `service` itself.
     */
    hosts: z.array(imageHost).min(1).optional(),
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

/** A Kubernetes annotation key (qualified name): `[dns-subdomain/]name`, name <= 63 characters. */
const ANNOTATION_KEY =
  /^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

/** `match.annotations`: annotation key -> glob on its value; at least one key. */
const annotationMatchSchema = z.record(z.string(), globSchema).superRefine((o, ctx) => {
  const keys = Object.keys(o);
  if (keys.length === 0) {
    ctx.addIssue({ code: "custom", message: "must list at least one annotation (or leave annotations out)" });
  }
  for (const k of keys) {
    if (k.length > 317 || !ANNOTATION_KEY.test(k)) {
      ctx.addIssue({
        code: "custom",
        message: `"${k.slice(0, 80)}" is not a Kubernetes annotation key ([prefix/]name)`,
      });
    }
  }
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
        /** Service-account annotations (credential-provider path only): key -> glob on the value. */
        annotations: annotationMatchSchema.optional(),
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
    /** Idle keep-alive connections are closed after this, ms; keep it above the load balancer's idle timeout. */
    keepAliveTimeoutMs: z.number().int().min(1000).max(3_600_000).default(75_000),
    /** The longest a client may take to send the request headers, ms (slow-loris guard). */
    headersTimeoutMs: z.number().int().min(1000).default(15_000),
    /** Token-endpoint requests processed at once; more are refused at once with 503 (load shedding). */
    maxConcurrentRequests: z.number().int().min(1).max(100_000).default(512),
    tls: z.object({ certFile: nonEmpty, keyFile: nonEmpty }).strict().optional(),
  })
  .strict()
  .refine((s) => s.headersTimeoutMs <= s.requestTimeoutMs, {
    message: "must be <= server.requestTimeoutMs",
    path: ["headersTimeoutMs"],
  });

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
        /** Acknowledges `rules: []`: deny every request on purpose (default deny applies anyway). */
        defaultDeny: z.boolean().default(false),
      })
      .strict(),
    cache: cacheSchema.prefault({}),
    rateLimit: rateLimitSchema.prefault({}),
    credentialProvider: credentialProviderSchema.optional(),
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
    checkCredentialProvider(cfg, ctx);
    if (cfg.policy.rules.length === 0 && !cfg.policy.defaultDeny) {
      ctx.addIssue({
        code: "custom",
        message:
          "no rules: every request would be denied (default deny); add at least one rule, or set policy.defaultDeny: true to deny everything on purpose",
        path: ["policy", "rules"],
      });
    }
  });

/**
 * Refuses credential-provider settings that are probably mistakes: an audience shared with the registry
 * path (a token kubelet requested for the exchange endpoint would then also work at `/token`, and the
 * other way round), an image host claimed by two registries, and `service`/`issuer` values inside the
 * URN namespace of derived credentials (which would blur the line between them and registry tokens).
 */
function checkCredentialProvider(cfg: Config, ctx: z.RefinementCtx<Config>): void {
  const hostOwner = new Map<string, number>();
  cfg.registries.forEach((r, i) => {
    for (const key of ["service", "issuer"] as const) {
      if (r[key].startsWith(RESERVED_URN_PREFIX)) {
        ctx.addIssue({
          code: "custom",
          message: `must not start with "${RESERVED_URN_PREFIX}" (reserved for credentials this service derives)`,
          path: ["registries", i, key],
        });
      }
    }
    r.hosts?.forEach((h, j) => {
      const owner = hostOwner.get(h);
      if (owner !== undefined) {
        ctx.addIssue({
          code: "custom",
          message: `host "${h}" is already listed by registries[${owner}]`,
          path: ["registries", i, "hosts", j],
        });
      } else hostOwner.set(h, i);
    });
  });
  const cp = cfg.credentialProvider;
  if (!cp) return;
  const registryAudiences = new Map<string, string>();
  cfg.clusters.forEach((c, i) => {
    for (const a of c.audiences)
      if (!registryAudiences.has(a)) registryAudiences.set(a, `clusters[${i}].audiences`);
  });
  cfg.registries.forEach((r, i) => {
    for (const a of r.audiences ?? [])
      if (!registryAudiences.has(a)) registryAudiences.set(a, `registries[${i}].audiences`);
  });
  cp.audiences.forEach((a, i) => {
    const where = registryAudiences.get(a);
    if (where) {
      ctx.addIssue({
        code: "custom",
        message: `audience "${a}" is also accepted at the registry (${where}): use a separate audience so a token kubelet requests for the credential provider cannot be presented at /token directly`,
        path: ["credentialProvider", "audiences", i],
      });
    }
  });
}

/** The validated configuration, with defaults applied and file paths resolved against the config file. */
export type Config = z.infer<typeof configSchema>;
/** One trusted cluster (see {@link Config}). */
export type ClusterConfig = Config["clusters"][number];
/** How a cluster's service-account tokens are verified (see {@link VERIFICATION_MODES}). */
export type VerificationMode = (typeof VERIFICATION_MODES)[number];

/** Whether `cluster` talks to its API server (TokenReview, or ServiceAccount reads for annotations). */
export function usesApiServer(cluster: Pick<ClusterConfig, "verification" | "annotations">): boolean {
  return cluster.verification !== "offline" || cluster.annotations === "fromCluster";
}
/** One registry (see {@link Config}). */
export type RegistryConfig = Config["registries"][number];
/** One policy rule (see {@link Config}). */
export type RuleConfig = Config["policy"]["rules"][number];
/** One allow/deny entry of a rule. */
export type GrantConfig = RuleConfig["allow"][number];
