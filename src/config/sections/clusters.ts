/**
 * `clusters[]`: the trusted Kubernetes service-account issuers, how their keys are fetched (OIDC discovery,
 * JWKS) and how their tokens are verified (offline, TokenReview, or both).
 */
import { z } from "zod";
import { httpUrl, nonEmpty } from "./common.js";

/** JWS algorithms a Kubernetes apiserver signs service-account tokens with (RSA -> RS256, ECDSA -> ES*). */
export const SERVICE_ACCOUNT_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512"] as const;
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
export const clusterSchema = z
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
