/**
 * The configuration schema (one YAML file, validated with zod at startup). Every key is documented in
 * the README's configuration reference; a test checks that the README names every key of this schema.
 */
import { isIP } from "node:net";
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
const VERIFICATION_MODES = ["offline", "tokenReview", "both"] as const;

/** True when `url` names a loopback host (`localhost`, 127.0.0.0/8, `[::1]`). */
function isLoopbackUrl(url: string): boolean {
  const host = new URL(url).hostname;
  return host === "localhost" || host === "[::1]" || /^127(?:\.\d{1,3}){3}$/.test(host);
}

/** The cluster's API server, for TokenReview and ServiceAccount reads. */
const apiServerSchema = z
  .object({
    /**
     * The API server's URL: `https:`, or `http:` only on a loopback address (a local proxy such as
     * `kubectl proxy`): the service sends its bearer token and every reviewed token there.
     */
    url: httpUrl.refine(
      (u) => u.startsWith("https://") || isLoopbackUrl(u),
      "must be https: (http: only on a loopback address): the bearer token and every reviewed service-account token are sent there",
    ),
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
    /**
     * Accept on purpose an audience the cluster's API server itself accepts (see
     * {@link apiServerAudiences}); refused by default.
     */
    allowApiServerAudience: z.boolean().default(false),
    /** `/readyz` fails while this cluster's keys are not loaded (default: ready while any cluster serves). */
    required: z.boolean().default(false),
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
     * Audiences a service-account token must carry at `/v1/credential-provider` for this registry, and
     * the exchange credentials minted from it at `/token`. Default: `credentialProvider.audiences`, except
     * for a registry with `audiences`, which is then not served at `/v1/credential-provider` at all.
     */
    credentialProviderAudiences: z.array(nonEmpty).min(1).optional(),
    /**
     * Longest lifetime of a refresh token, seconds, whatever the credential it is derived from says (it
     * is also cut to that credential's expiry).
     */
    refreshTokenMaxTtlSeconds: z
      .number()
      .int()
      .min(120, "must be >= 120 (a refresh token needs 60 s left at /token)")
      .max(7 * 86_400)
      .default(3600),
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

const serverSchema = z
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
    checkApiServerAudiences(cfg, ctx);
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
  if (!cp) {
    cfg.registries.forEach((r, i) => {
      if (r.credentialProviderAudiences !== undefined) {
        ctx.addIssue({
          code: "custom",
          message: "is only used by /v1/credential-provider: set credentialProvider too",
          path: ["registries", i, "credentialProviderAudiences"],
        });
      }
    });
    return;
  }
  const registryAudiences = new Map<string, string>();
  cfg.clusters.forEach((c, i) => {
    for (const a of c.audiences)
      if (!registryAudiences.has(a)) registryAudiences.set(a, `clusters[${i}].audiences`);
  });
  cfg.registries.forEach((r, i) => {
    for (const a of r.audiences ?? [])
      if (!registryAudiences.has(a)) registryAudiences.set(a, `registries[${i}].audiences`);
  });
  const providerAudiences: Array<{ list: readonly string[]; path: (string | number)[] }> = [
    { list: cp.audiences, path: ["credentialProvider", "audiences"] },
    ...cfg.registries.map((r, i) => ({
      list: r.credentialProviderAudiences ?? [],
      path: ["registries", i, "credentialProviderAudiences"],
    })),
  ];
  for (const { list, path } of providerAudiences) {
    list.forEach((a, i) => {
      const where = registryAudiences.get(a);
      if (where) {
        ctx.addIssue({
          code: "custom",
          message: `audience "${a}" is also accepted at the registry (${where}): use a separate audience so a token kubelet requests for the credential provider cannot be presented at /token directly`,
          path: [...path, i],
        });
      }
    });
  }
}

/** Hosts the in-cluster `kubernetes` Service answers to (the API server's usual `--api-audiences`). */
const API_SERVER_HOSTS = [
  "kubernetes",
  "kubernetes.default",
  "kubernetes.default.svc",
  "kubernetes.default.svc.cluster.local",
];

/**
 * Audiences kube-apiserver accepts for its own API: `--api-audiences`, which defaults to the
 * service-account issuer when unset (kubernetes `pkg/kubeapiserver/options/authentication.go`, the flag's
 * help text), and the in-cluster names of the `kubernetes` Service that clusters commonly set it to
 * (`https://kubernetes.default.svc`, `https://kubernetes.default.svc.cluster.local`). Compared without a
 * trailing slash and case-insensitively.
 * An API server configured with other `--api-audiences` is not detected: never list those either.
 * @param issuer the cluster's `issuer`
 * @returns normalized audiences (no trailing slash, lower case)
 */
export function apiServerAudiences(issuer: string): string[] {
  return [
    normalizeAudience(issuer),
    ...API_SERVER_HOSTS.flatMap((h) => [`https://${h}`, `https://${h}:443`, h]),
  ];
}

function normalizeAudience(a: string): string {
  return a.replace(/\/+$/, "").toLowerCase();
}

/**
 * Refuses an accepted audience that the API server of a trusted cluster also accepts, unless that cluster
 * sets `allowApiServerAudience`: every workload's default token carries it (so any pod would authenticate
 * here without asking for a token), and a token sent here could be replayed against the API server.
 * Cluster audiences are checked against their own cluster; registry and credential-provider audiences,
 * which apply to tokens of every cluster, against every cluster.
 */
function checkApiServerAudiences(cfg: Config, ctx: z.RefinementCtx<Config>): void {
  const why =
    "a workload's default service-account token would be accepted here, and any token sent here could be replayed to the Kubernetes API server";
  const check = (audiences: readonly string[], clusters: readonly number[], path: (string | number)[]) => {
    audiences.forEach((a, j) => {
      for (const i of clusters) {
        const c = cfg.clusters[i]!;
        if (c.allowApiServerAudience || !apiServerAudiences(c.issuer).includes(normalizeAudience(a)))
          continue;
        ctx.addIssue({
          code: "custom",
          message: `"${a}" is an audience the API server of cluster "${c.name}" accepts: ${why}; use an audience of its own, or set clusters[${i}].allowApiServerAudience: true to accept this on purpose`,
          path: [...path, j],
        });
        return;
      }
    });
  };
  const all = cfg.clusters.map((_, i) => i);
  cfg.clusters.forEach((c, i) => {
    check(c.audiences, [i], ["clusters", i, "audiences"]);
  });
  cfg.registries.forEach((r, i) => {
    check(r.audiences ?? [], all, ["registries", i, "audiences"]);
    check(r.credentialProviderAudiences ?? [], all, ["registries", i, "credentialProviderAudiences"]);
  });
  if (cfg.credentialProvider)
    check(cfg.credentialProvider.audiences, all, ["credentialProvider", "audiences"]);
}

/**
 * The audiences a service-account token must carry at `/v1/credential-provider` to get an exchange
 * credential for `registry`, which `/token` checks again on every use of that credential:
 * `registry.credentialProviderAudiences`, else `credentialProvider.audiences` for a registry without
 * `audiences`; none (the registry is not served through the credential provider) for a registry that
 * restricts `audiences` without naming provider audiences of its own, or when `credentialProvider` is off.
 */
export function credentialProviderAudiencesFor(config: Config, registry: RegistryConfig): readonly string[] {
  if (!config.credentialProvider) return [];
  if (registry.credentialProviderAudiences) return registry.credentialProviderAudiences;
  return registry.audiences ? [] : config.credentialProvider.audiences;
}

/** The validated configuration, with defaults applied and file paths resolved against the config file. */
export type Config = z.infer<typeof configSchema>;
/** One trusted cluster (see {@link Config}). */
export type ClusterConfig = Config["clusters"][number];

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
