/**
 * What the benchmark sends: pre-minted service-account token pools from the Kubernetes-faithful
 * LocalIssuer, the requests of each scenario, and the service's config.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type autocannon from "autocannon";
import { parseConfig } from "../../src/config/load.js";
import type { LocalIssuer } from "../../src/local/issuer.js";
import type { PlannedRequest } from "./wrk.js";

/** The registry `service` (and token audience) of the benchmark. */
export const SERVICE = "registry.bench";
/** The audience kubelet requests for `/v1/credential-provider` (never a registry audience). */
export const CREDENTIAL_PROVIDER_AUDIENCE = "registry-token-exchange";

/** One pod's credential, ready to send. */
export interface PoolToken {
  token: string;
  /** `Basic base64(x:<token>)`, precomputed so the load generator does not spend time on it. */
  basic: string;
  namespace: string;
}

/**
 * Mints `count` distinct pod-bound tokens (distinct `jti` and pod), spread over `namespaces` namespaces
 * `team-0..` with one service account each ("the same service account or a few").
 */
export async function mintPool(
  issuer: LocalIssuer,
  count: number,
  namespaces: number,
  tag: string,
  audience = SERVICE,
): Promise<PoolToken[]> {
  const out: PoolToken[] = new Array(count);
  const batch = 256;
  for (let start = 0; start < count; start += batch) {
    const end = Math.min(count, start + batch);
    const minted = await Promise.all(
      Array.from({ length: end - start }, (_, k) => {
        const i = start + k;
        const namespace = `team-${i % namespaces}`;
        return issuer
          .mint({
            namespace,
            serviceAccount: "puller",
            audiences: [audience],
            ttlSeconds: 3 * 3600,
            podName: `${tag}-pod-${i}`,
          })
          .then((token) => ({ token, namespace }));
      }),
    );
    minted.forEach((m, k) => {
      out[start + k] = { ...m, basic: `Basic ${Buffer.from(`x:${m.token}`).toString("base64")}` };
    });
  }
  return out;
}

/** Counts requests a cycling workload had to repeat because its pool ran out. */
export interface Cursor {
  next: number;
  wrapped: number;
}

/**
 * Uncached: request `n` presents pool token `n` and asks for a repository nobody asked for before
 * (`team-X/app-<run>-<n>`, pull+push, granted by the policy), so each is a full verify + policy + sign.
 * Builds the next `amount` requests from `cursor` (counting in `cursor.wrapped` those that had to reuse
 * a token because the pool ran out).
 */
export function uncachedPlan(
  pool: PoolToken[],
  run: string,
  cursor: Cursor,
  amount: number,
): PlannedRequest[] {
  return Array.from({ length: amount }, () => {
    const n = cursor.next++;
    if (n >= pool.length) cursor.wrapped++;
    const t = pool[n % pool.length]!;
    return {
      method: "GET",
      path: `/token?service=${SERVICE}&scope=repository:${t.namespace}/app-${run}-${n}:pull,push`,
      authorization: t.basic,
    };
  });
}

/** Hot: the same token and scope every time (identity and issued-token caches hit); send it in a cycle. */
export function hotPlan(t: PoolToken): PlannedRequest[] {
  return [
    {
      method: "GET",
      path: `/token?service=${SERVICE}&scope=repository:${t.namespace}/app:pull,push`,
      authorization: t.basic,
    },
  ];
}

/** Plumbing: the service's liveness probe (and the bare reference's), the per-request floor of HTTP. */
export const HEALTHZ_PLAN: PlannedRequest[] = [{ method: "GET", path: "/healthz" }];

/**
 * Credential provider: request `n` is kubelet asking, for a new pod (pool token `n`, minted with
 * {@link CREDENTIAL_PROVIDER_AUDIENCE}), for credentials for an image of the pod's own namespace: a full
 * verify + policy + sign of an exchange credential each time. The next `amount` requests from `cursor`.
 */
export function credentialProviderPlan(pool: PoolToken[], cursor: Cursor, amount: number): PlannedRequest[] {
  return Array.from({ length: amount }, () => {
    const n = cursor.next++;
    if (n >= pool.length) cursor.wrapped++;
    const t = pool[n % pool.length]!;
    return {
      method: "POST",
      path: "/v1/credential-provider",
      contentType: "application/json",
      body: JSON.stringify({
        apiVersion: "credentialprovider.kubelet.k8s.io/v1",
        kind: "CredentialProviderRequest",
        image: `${SERVICE}/${t.namespace}/app-${n}:v1`,
        serviceAccountToken: t.token,
      }),
    };
  });
}

/** The three repositories every pod of the pull burst pulls. */
const BURST_REPOSITORIES = ["library/base", "library/runtime", "library/sidecar"];

/**
 * Pull burst: each connection takes the next pod and asks for the three repositories in turn, as
 * containerd does (`POST /token`, `grant_type=password`), so each pod's first request verifies its token
 * and its next two hit the identity cache; pods of one service account share issued tokens.
 */
export function pullBurstRequests(pods: PoolToken[], cursor: Cursor): autocannon.Request[] {
  return BURST_REPOSITORIES.map((repo, i) => ({
    method: "POST" as const,
    path: "/token",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    setupRequest: (req: autocannon.Request, context: { pod?: number }) => {
      if (i === 0) {
        context.pod = cursor.next++;
        if (context.pod >= pods.length) cursor.wrapped++;
      }
      const t = pods[(context.pod ?? 0) % pods.length]!;
      req.body = new URLSearchParams({
        grant_type: "password",
        client_id: "containerd",
        service: SERVICE,
        scope: `repository:${repo}:pull`,
        username: "x",
        password: t.token,
      }).toString();
      return req;
    },
  }));
}

/**
 * Soak, mixed phase: half the requests are hot (even `n`); the others present a token of `pool` and ask
 * for one of 50 repositories (identity hits, issued-token hits and misses), except one request in ten
 * overall, which asks for a repository never asked for before (a new cache entry and a signature: this
 * keeps the caches churning at their bounds).
 */
export function mixedRequests(pool: PoolToken[], hot: PoolToken, cursor: Cursor): autocannon.Request[] {
  const hotPath = `/token?service=${SERVICE}&scope=repository:${hot.namespace}/app:pull,push`;
  return [
    {
      method: "GET",
      setupRequest: (req) => {
        const n = cursor.next++;
        if (n % 2 === 0) {
          req.path = hotPath;
          req.headers = { authorization: hot.basic };
          return req;
        }
        const t = pool[(n >> 1) % pool.length]!;
        const repo = n % 5 === 1 ? `fresh-${n}` : `app-${(n >> 1) % 50}`;
        req.path = `/token?service=${SERVICE}&scope=repository:${t.namespace}/${repo}:pull`;
        req.headers = { authorization: t.basic };
        return req;
      },
    },
  ];
}

/** Everything the service's config needs. */
export interface ServiceConfigInput {
  port: number;
  issuerUrl: string;
  keys: { keyFile: string; certFile: string };
  redisUrl?: string | undefined;
  keyPrefix: string;
  logLevel: string;
  /** Enable `/v1/credential-provider` (a config section that exists only once that endpoint does). */
  credentialProvider: boolean;
  /** More `server` keys; those this tree's schema refuses are dropped (it changes while we measure). */
  server: Record<string, unknown>;
  /** More keys of the one cluster (e.g. `verification`, `apiServer` for the review rows). */
  cluster?: Record<string, unknown> | undefined;
}

/**
 * Writes the service's config (checked with the real schema first) to `dir/<name>.json` (YAML accepts
 * JSON). The rate limiter is off: the benchmark measures the exchange, not the limits.
 * @returns the file path
 */
export function writeServiceConfig(dir: string, name: string, input: ServiceConfigInput): string {
  const raw = {
    server: { host: "127.0.0.1", port: input.port, ...input.server },
    logging: { level: input.logLevel },
    clusters: [{ name: "bench", issuer: input.issuerUrl, audiences: [SERVICE], ...input.cluster }],
    registries: [
      { service: SERVICE, issuer: "registry-token-exchange", tokenTtlSeconds: 300, signingKey: input.keys },
    ],
    policy: {
      rules: [
        {
          name: "teams push to their own namespace",
          match: { namespace: "team-*" },
          allow: [{ repository: "${namespace}/**", actions: ["pull", "push"] }],
        },
        { name: "everyone pulls library", allow: [{ repository: "library/**", actions: ["pull"] }] },
      ],
    },
    cache: { ...(input.redisUrl ? { redisUrl: input.redisUrl } : {}), keyPrefix: input.keyPrefix },
    rateLimit: { enabled: false },
    ...(input.credentialProvider
      ? { credentialProvider: { audiences: [CREDENTIAL_PROVIDER_AUDIENCE] } }
      : {}),
  };
  try {
    parseConfig(raw);
  } catch {
    raw.server = { host: "127.0.0.1", port: input.port };
    parseConfig(raw);
  }
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify(raw, null, 2));
  return file;
}
