/**
 * Asking the cluster: TokenReview of service-account tokens and ServiceAccount reads, per cluster
 * (`clusters[].verification: tokenReview|both`, `clusters[].annotations: fromCluster`). See
 * docs/tokenreview.md.
 *
 * Rules:
 * - A token is authenticated only when the TokenReview (authentication.k8s.io/v1) answers
 *   `status.authenticated: true`, `status.audiences` holds one of the audiences asked for, and
 *   `status.user` agrees with the token's claims: `username` = `sub`, `uid` = the service account's uid,
 *   and each `extra` `authentication.kubernetes.io/{pod-name,pod-uid,node-name,node-uid}` the API server
 *   sends = the bound pod and node, `credential-id` = `JTI=<jti>` (kubernetes pkg/serviceaccount/claims.go;
 *   older API servers leave some out). Anything else refuses.
 * - Positive answers are cached for `review.cacheTtlSeconds` (never past the token's `exp`) under
 *   `rv:` + {@link CacheSealer.key}("review", token), sealed and bound to the token, with their expiry
 *   inside the sealed value: a cache reader learns nothing usable, a cache writer can neither forge a
 *   "yes" (an entry that does not open is a miss) nor keep an old one alive (PERSIST, PEXPIRE or an
 *   edited expiry prefix change nothing). Negative answers are not cached. Concurrent reviews of one
 *   token (for the same audiences) in one process share one API call.
 * - In front of the store, each process keeps the answers it opened (bounded LRU keyed by
 *   {@link cacheKeyHash} of the token, never the token), each used only until that same sealed expiry;
 *   the claim agreement check runs on every hit all the same.
 * - ServiceAccount reads (for `annotations: fromCluster`) are cached the same way under `ksa:`, and the
 *   object's `metadata.uid` must equal the token's service-account uid (a recreated account differs).
 * - Failures of the API server fail closed: `token_review_unavailable` (401), or `rate_limited` (429 with
 *   the API server's `Retry-After`) when it answered 429. Each is logged, counted and shown in `/readyz`.
 * - Messages a caller sees name no cluster (with `verification: tokenReview` anyone can send a token
 *   whose unverified claims name a trusted issuer); the cluster goes to `logDetail` (the access line).
 * - Credentials derived from a reviewed token carry it sealed ({@link ClusterReviewer.sealSource}) and
 *   are reviewed again through the same cache on every use, so they stop working within
 *   `review.cacheTtlSeconds` + `review.timeoutMs` of the API server refusing their source token.
 */
import { LRUCache } from "lru-cache";
import type { Logger } from "pino";
import { FrontCache } from "../cache/front.js";
import { cacheKeyHash, reviewKey, serviceAccountKey } from "../cache/keys.js";
import type { CacheSealer } from "../cache/seal.js";
import { type CacheStore, parseCached } from "../cache/store.js";
import type { ClusterConfig, Config } from "../config/schema.js";
import { safeEcho } from "../errors.js";
import {
  ApiServerStatus,
  type KubeApiCall,
  type KubeApiOutcome,
  type ReviewClusterStatus,
} from "./api-status.js";
import {
  KubeApiClient,
  KubeApiError,
  type ServiceAccountObject,
  type TokenReviewStatus,
} from "./kube-api.js";
import { type CachedReview, disagrees, extraOf, jtiOf, refused } from "./review-answer.js";
import { openSource, type SealedSource, sealSource } from "./review-source.js";
import type { ClusterReviewSummary, Identity } from "./verify.js";

/** Dependencies of {@link ClusterReviewer}. */
export interface ReviewerDeps {
  config: Config;
  store: CacheStore;
  sealer: CacheSealer;
  /**
   * Sealers of the service secret before a switch of signing keys, tried after `sealer` to open the
   * source token of a derived credential sealed before the switch (never used to seal).
   */
  previousSealers?: readonly CacheSealer[] | undefined;
  logger: Logger;
  /** Clock, epoch milliseconds. */
  now?: () => number;
  /** One API call finished (metrics). */
  onApiCall?: (cluster: string, call: KubeApiCall, outcome: KubeApiOutcome) => void;
  /** One cache lookup of a review or ServiceAccount (metrics). */
  onCacheLookup?: (cluster: string, call: KubeApiCall, hit: boolean) => void;
}

/**
 * Most opened review answers the front cache keeps (least recently used go first), ~0.8 KB each: a miss
 * only costs the sealed store's path again.
 */
const FRONT_ANSWERS_MAX = 10_000;
/** Most bytes the opened review answers take (their JSON length, plus a fixed overhead each). */
const FRONT_ANSWERS_MAX_BYTES = 16 * 1024 * 1024;

/** Most derived-credential sources remembered (~0.4 KB each). */
const FRONT_SOURCES_MAX = 10_000;

/** The token a review is about, as the front cache knows it: hashes and claims, never the token. */
interface ReviewedToken {
  /** {@link cacheKeyHash} of the token: the front cache's key. */
  hash: string;
  /** The audiences it is reviewed for. */
  asked: readonly string[];
  /** `asked`, sorted and `\u0000`-joined ({@link CachedReview.asked}). */
  askedKey: string;
  /** The token's `jti` (the answer's `credential-id` must be `JTI=<jti>`). */
  jti: string | undefined;
}

/** A cached ServiceAccount read (sealed), with its own expiry like {@link CachedReview.until}. */
interface CachedServiceAccount {
  sa: ServiceAccountObject;
  until: number;
}

/** Reviews tokens and reads ServiceAccounts for the clusters that ask for it. See the module doc. */
export class ClusterReviewer {
  readonly #deps: ReviewerDeps;
  readonly #now: () => number;
  readonly #clusters = new Map<string, ClusterConfig>();
  readonly #clients = new Map<string, KubeApiClient>();
  readonly #inFlight = new Map<string, Promise<unknown>>();
  readonly #api: ApiServerStatus;
  /**
   * Front cache: positive answers already opened (from the API server or the store), by
   * {@link ReviewedToken.hash}, each used only until its own {@link CachedReview.until}.
   */
  readonly #answers: FrontCache<CachedReview>;
  /** Derived-credential sources by {@link cacheKeyHash} of the sealed value. */
  readonly #sources = new LRUCache<string, ReviewedToken>({ max: FRONT_SOURCES_MAX });

  /** @param deps config, cache, sealer, logger, clock, metric hooks */
  constructor(deps: ReviewerDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? Date.now;
    this.#answers = new FrontCache<CachedReview>({
      maxEntries: FRONT_ANSWERS_MAX,
      maxBytes: FRONT_ANSWERS_MAX_BYTES,
      now: this.#now,
    });
    this.#api = new ApiServerStatus(deps.logger, this.#now, deps.onApiCall);
    for (const c of deps.config.clusters) {
      this.#clusters.set(c.name, c);
      if (c.apiServer && (c.verification !== "offline" || c.annotations === "fromCluster")) {
        this.#clients.set(
          c.name,
          new KubeApiClient({
            url: c.apiServer.url,
            caFile: c.apiServer.caFile,
            bearerTokenFile: c.apiServer.bearerTokenFile,
            timeoutMs: c.review.timeoutMs,
          }),
        );
        this.#api.track(c);
      }
    }
  }

  /** Whether tokens of `cluster` must be reviewed (`verification` is `tokenReview` or `both`). */
  reviews(cluster: string): boolean {
    const c = this.#clusters.get(cluster);
    return c !== undefined && c.verification !== "offline";
  }

  /** Whether credential-provider annotations of `cluster` come from its ServiceAccount objects. */
  annotationsFromCluster(cluster: string): boolean {
    return this.#clusters.get(cluster)?.annotations === "fromCluster";
  }

  /** State of each cluster's API server as last seen (only clusters that talk to it). */
  status(): Record<string, ReviewClusterStatus> {
    return this.#api.snapshot();
  }

  /**
   * The sealed form of `token` (reviewed for `audiences`) for a derived credential: readable only with the
   * service secret, so neither the holder of the credential nor a thief can extract the token.
   */
  sealSource(token: string, audiences: readonly string[]): string {
    return sealSource(this.#deps.sealer, token, audiences);
  }

  /**
   * Reviews `identity`'s token: for a service-account token, `credential` itself; for a credential this
   * service derived, the source token sealed in {@link Identity.reviewSource}.
   * @param credential the presented credential
   * @param identity what verification of `credential` established
   * @param audiences the audiences a service-account token is accepted for here (ignored for derived
   *   credentials: their source is reviewed for the audiences it was first accepted for)
   * @returns what the cluster said
   * @throws {RequestError} `token_review_refused` (the cluster refused the token, its answer disagrees
   *   with the claims, or a derived credential carries no reviewable source), `token_review_unavailable`
   *   (the API server failed or timed out), `rate_limited` (the API server answered 429)
   */
  async review(
    credential: string,
    identity: Identity,
    audiences: readonly string[],
    derived: boolean,
  ): Promise<ClusterReviewSummary> {
    const cluster = this.#clusters.get(identity.cluster);
    if (!cluster || cluster.verification === "offline") {
      throw new TypeError(`cluster "${identity.cluster}" does not review tokens`);
    }
    const reviewed = derived
      ? this.#derivedSource(cluster, identity)
      : plainToken(credential, identity, audiences);
    const nowMs = this.#now();
    let answer = this.#answers.get(reviewed.hash);
    let cached = true;
    // The front cache drops an answer at its own `until`.
    if (answer !== undefined && answer.asked === reviewed.askedKey) {
      this.#deps.onCacheLookup?.(cluster.name, "tokenreview", true);
    } else {
      const token = derived ? this.#openSource(cluster, identity).t : credential;
      ({ answer, cached } = await this.#reviewThroughStore(cluster, token, reviewed, identity, nowMs));
    }
    // Whatever the cache says, the answer must match this token's claims.
    const disagreement = disagrees(answer, identity, reviewed.jti);
    if (disagreement) {
      throw refused(`the cluster's TokenReview does not agree with the token (${disagreement})`, {
        cluster: cluster.name,
        reason: disagreement,
      });
    }
    return {
      verification: cluster.verification,
      authenticated: true,
      username: answer.username,
      uid: answer.uid,
      audiences: [...answer.audiences],
      cached,
      derived,
    };
  }

  /**
   * The review of `token` from the (sealed, possibly shared) store, else from the API server (one call per
   * token and audiences in this process at a time), written to the store; either way kept in the front
   * cache until the answer's own expiry.
   * @param nowMs the clock when the request's review started, epoch ms
   */
  async #reviewThroughStore(
    cluster: ClusterConfig,
    token: string,
    reviewed: ReviewedToken,
    identity: Identity,
    nowMs: number,
  ): Promise<{ answer: CachedReview; cached: boolean }> {
    const key = reviewKey(this.#deps.sealer, token);
    const hit = this.#openCached<CachedReview>(key, await this.#deps.store.get(key), token);
    const usable = hit?.asked === reviewed.askedKey && typeof hit.until === "number" && hit.until > nowMs;
    this.#deps.onCacheLookup?.(cluster.name, "tokenreview", usable);
    let answer: CachedReview;
    let cached = false;
    if (hit && usable) {
      answer = hit;
      cached = true;
    } else {
      const ttl = Math.min(cluster.review.cacheTtlSeconds * 1000, identity.expiresAt * 1000 - nowMs);
      // Keyed by the audiences too: a caller never gets an answer given for other audiences.
      answer = await this.#singleFlight(`${key}\u0000${reviewed.askedKey}`, () =>
        this.#callReview(cluster, token, reviewed.asked, reviewed.askedKey, nowMs + ttl),
      );
      // `cacheTtlSeconds: 0` (or a token at its expiry) caches nothing, in the store or in front of it.
      if (ttl < 1) return { answer, cached };
      await this.#deps.store.set(key, this.#deps.sealer.seal(key, JSON.stringify(answer), token), ttl);
    }
    this.#answers.set(reviewed.hash, frozenAnswer(answer), answer.until, JSON.stringify(answer).length);
    return { answer, cached };
  }

  /**
   * What the review of a derived credential's source token needs, remembered per sealed source (opening
   * it costs an AES-GCM decryption and a JWS decoding on every use otherwise): a function of the sealed
   * value alone, so remembering it changes no answer.
   * @throws {RequestError} `token_review_refused` when the credential carries no source this service opens
   */
  #derivedSource(cluster: ClusterConfig, identity: Identity): ReviewedToken {
    const sealedHash = identity.reviewSource === undefined ? undefined : cacheKeyHash(identity.reviewSource);
    const known = sealedHash === undefined ? undefined : this.#sources.get(sealedHash);
    if (known !== undefined) return known;
    const source = this.#openSource(cluster, identity);
    const reviewed: ReviewedToken = {
      hash: cacheKeyHash(source.t),
      asked: source.a,
      askedKey: askedKeyOf(source.a),
      jti: jtiOf(source.t),
    };
    if (sealedHash !== undefined) this.#sources.set(sealedHash, reviewed);
    return reviewed;
  }

  /**
   * The source token sealed in a derived credential, opened with the current or a previous service secret.
   * @throws {RequestError} `token_review_refused` when there is none or it does not open
   */
  #openSource(cluster: ClusterConfig, identity: Identity): SealedSource {
    const opened = openSource(
      [this.#deps.sealer, ...(this.#deps.previousSealers ?? [])],
      identity.reviewSource,
    );
    if (!opened) {
      throw refused("this credential carries no token the cluster can review; request a new one", {
        cluster: cluster.name,
        reason: "derived credential without a sealed source",
      });
    }
    return opened;
  }

  /**
   * The ServiceAccount of `identity` as the cluster has it now (cached for `review.cacheTtlSeconds`), after
   * checking that its `metadata.uid` is the token's service-account uid.
   * @throws {RequestError} `token_review_refused` when it does not exist or has another uid (deleted and
   *   recreated), `token_review_unavailable` / `rate_limited` when the API server fails
   */
  async serviceAccount(identity: Identity): Promise<ServiceAccountObject> {
    const cluster = this.#clusters.get(identity.cluster);
    if (cluster?.annotations !== "fromCluster") {
      throw new TypeError(`cluster "${identity.cluster}" does not read ServiceAccounts`);
    }
    const name = `${cluster.name}/${identity.namespace}/${identity.serviceAccount.name}`;
    const key = serviceAccountKey(this.#deps.sealer, name);
    const nowMs = this.#now();
    const hit = this.#openCached<CachedServiceAccount>(key, await this.#deps.store.get(key));
    const usable = hit?.sa !== undefined && typeof hit.until === "number" && hit.until > nowMs;
    this.#deps.onCacheLookup?.(cluster.name, "serviceaccount", usable);
    let sa: ServiceAccountObject;
    if (hit && usable) sa = hit.sa;
    else {
      sa = await this.#singleFlight(key, () => this.#callServiceAccount(cluster, identity));
      const ttl = cluster.review.cacheTtlSeconds * 1000;
      const entry: CachedServiceAccount = { sa, until: nowMs + ttl };
      if (ttl >= 1) await this.#deps.store.set(key, this.#deps.sealer.seal(key, JSON.stringify(entry)), ttl);
    }
    if (sa.uid !== identity.serviceAccount.uid) {
      throw refused(
        `service account ${identity.namespace}/${identity.serviceAccount.name} was recreated since the token was issued (its uid differs)`,
        { cluster: cluster.name, reason: "serviceaccount uid mismatch" },
      );
    }
    return sa;
  }

  /** Closes the API clients. */
  async close(): Promise<void> {
    await Promise.all([...this.#clients.values()].map((c) => c.close()));
  }

  #openCached<T>(key: string, sealed: string | undefined, credential?: string): T | undefined {
    return parseCached<T>(this.#deps.sealer.open(key, sealed, credential));
  }

  async #singleFlight<T>(key: string, call: () => Promise<T>): Promise<T> {
    const running = this.#inFlight.get(key);
    if (running !== undefined) return running as Promise<T>;
    const p = call().finally(() => this.#inFlight.delete(key));
    this.#inFlight.set(key, p);
    return p;
  }

  #client(cluster: ClusterConfig): KubeApiClient {
    const client = this.#clients.get(cluster.name);
    // The config loader gives every cluster that talks to its API server an apiServer.
    if (!client) throw new TypeError(`cluster "${cluster.name}" has no apiServer`);
    return client;
  }

  async #callReview(
    cluster: ClusterConfig,
    token: string,
    asked: readonly string[],
    askedKey: string,
    until: number,
  ): Promise<CachedReview> {
    let status: TokenReviewStatus;
    try {
      status = await this.#client(cluster).reviewToken(token, asked);
    } catch (err) {
      throw this.#api.failed(cluster, "tokenreview", err);
    }
    this.#api.succeeded(cluster);
    const user = status.user ?? {};
    const audiences = Array.isArray(status.audiences)
      ? status.audiences.filter((a): a is string => typeof a === "string")
      : [];
    if (status.authenticated !== true || !audiences.some((a) => asked.includes(a))) {
      this.#api.called(cluster, "tokenreview", "refused");
      const why = typeof status.error === "string" ? status.error.slice(0, 300) : "not authenticated";
      this.#deps.logger.info(
        { cluster: cluster.name, reviewError: why, jti: jtiOf(token) },
        "token review refused",
      );
      throw refused(`the cluster refused the token: ${safeEcho(why, 200)}`, {
        cluster: cluster.name,
        reason: why,
      });
    }
    this.#api.called(cluster, "tokenreview", "authenticated");
    return {
      asked: askedKey,
      username: typeof user.username === "string" ? user.username : "",
      uid: typeof user.uid === "string" ? user.uid : "",
      audiences,
      extra: extraOf(user.extra),
      until,
    };
  }

  async #callServiceAccount(cluster: ClusterConfig, identity: Identity): Promise<ServiceAccountObject> {
    try {
      const sa = await this.#client(cluster).getServiceAccount(
        identity.namespace,
        identity.serviceAccount.name,
      );
      this.#api.succeeded(cluster);
      this.#api.called(cluster, "serviceaccount", "ok");
      return sa;
    } catch (err) {
      if (err instanceof KubeApiError && err.failure === "not_found") {
        this.#api.succeeded(cluster);
        this.#api.called(cluster, "serviceaccount", "not_found");
        throw refused(
          `service account ${identity.namespace}/${identity.serviceAccount.name} no longer exists in cluster "${cluster.name}"`,
          { cluster: cluster.name, reason: "serviceaccount not found" },
        );
      }
      throw this.#api.failed(cluster, "serviceaccount", err);
    }
  }
}

/** `audiences` sorted and `\u0000`-joined: the {@link CachedReview.asked} form. */
function askedKeyOf(audiences: readonly string[]): string {
  return [...audiences].sort().join("\u0000");
}

/** A service-account token presented itself: its hash, the audiences accepted here, its verified `jti`. */
function plainToken(token: string, identity: Identity, audiences: readonly string[]): ReviewedToken {
  return {
    hash: cacheKeyHash(token),
    asked: audiences,
    askedKey: askedKeyOf(audiences),
    jti: identity.tokenId,
  };
}

/** `answer`, frozen (with its arrays and maps) before it is shared by every request that hits it. */
function frozenAnswer(answer: CachedReview): CachedReview {
  Object.freeze(answer.audiences);
  Object.freeze(answer.extra);
  return Object.freeze(answer);
}
