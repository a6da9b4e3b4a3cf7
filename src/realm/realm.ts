/**
 * The token realm: credential -> verified identity -> policy decision -> minted registry token.
 * HTTP-free so that the routes, the CLI and tests share one path.
 */

import { auditSinkOr, issuedRecord } from "../audit.js";
import type { ClusterReviewer } from "../authn/review.js";
import { type Identity, OWN_KEY_PREFIX } from "../authn/verify.js";
import { FrontCache } from "../cache/front.js";
import { CacheSealer } from "../cache/seal.js";
import { credentialProviderAudiencesFor, type RegistryConfig } from "../config/schema.js";
import { RequestError, safeEcho } from "../errors.js";
import type { Policy, ScopeDecision } from "../policy/engine.js";
import { formatScope } from "../policy/scope.js";
import { type DerivedCredential, mintDerived } from "../token/derived.js";
import type { AccessEntry } from "../token/mint.js";
import { type CredentialUse, verifyCredential } from "./credentials.js";
import { IdentityCache } from "./identity-cache.js";
import type { IssueRequest, IssueResult, RealmDeps } from "./issue-types.js";
import type { RealmStats } from "./stats.js";
import { type CachedToken, IssuedTokens } from "./token-reuse.js";

export type { IssueRequest, IssueResult, RealmDeps } from "./issue-types.js";

/** A credential must have at least this much lifetime left to be exchanged, seconds. */
export const MIN_CREDENTIAL_LIFETIME_SECONDS = 60;

/** Authenticates, authorizes and mints. See the module doc. */
export class TokenRealm {
  readonly #deps: RealmDeps;
  readonly #registries: ReadonlyMap<string, RegistryConfig>;
  readonly #clusters: ReadonlySet<string>;
  readonly #now: () => number;
  readonly #sealer: CacheSealer;
  readonly #identities: IdentityCache;
  readonly #tokens: IssuedTokens;
  /** Cache counters since start. */
  readonly stats: RealmStats;

  /** @param deps config, verifier, policy, keys, cache, logger, clock */
  constructor(deps: RealmDeps) {
    this.#deps = deps;
    this.stats = deps.stats ?? { identityHits: 0, identityMisses: 0, tokenHits: 0, tokenMisses: 0 };
    this.#registries = new Map(deps.config.registries.map((r) => [r.service, r]));
    this.#clusters = new Set(deps.config.clusters.map((c) => c.name));
    this.#now = deps.now ?? Date.now;
    this.#sealer = deps.sealer ?? CacheSealer.ephemeral();
    // The front caches of opened identities and issued tokens share the memory bounds of the cache
    // (`cache.memory.*`), half each; they belong to this realm, so a reload starts empty ones.
    const memory = deps.config.cache.memory;
    const bounds = {
      maxEntries: Math.max(1, Math.floor(memory.maxEntries / 2)),
      maxBytes: Math.max(1, Math.floor(memory.maxBytes / 2)),
      now: this.#now,
    };
    this.#identities = new IdentityCache(
      deps.config,
      deps.store,
      this.#sealer,
      new FrontCache<Identity>(bounds),
      this.stats,
      this.#now,
    );
    this.#tokens = new IssuedTokens(
      deps.store,
      this.#sealer,
      new FrontCache<CachedToken>(bounds),
      this.stats,
      deps.config.cache.reuseTokens,
    );
  }

  /**
   * The registry config for `service`.
   * @throws {RequestError} `unknown_service` (400) when this realm does not serve it
   */
  registry(service: string): RegistryConfig {
    const r = this.#registries.get(service);
    if (!r) {
      // The served services stay in the log: a stranger need not learn every registry behind this realm.
      throw new RequestError(
        "unknown_service",
        `unknown service "${safeEcho(service, 100)}": not served here`,
        {
          logDetail: { detail: `served: ${[...this.#registries.keys()].map((s) => `"${s}"`).join(", ")}` },
        },
      );
    }
    return r;
  }

  /**
   * Verifies a credential for use at `registry`, with a cache that never outlives it: entries are named
   * by an HMAC of the credential and sealed to it (`cache/seal.ts`), so only a caller presenting the
   * credential can read one, and a forged or altered entry is a miss. As a `password`: an exchange credential of this registry (chosen by its `typ` header,
   * see `authn/derived.ts`), else a service-account token (the registry's `audiences` if set, else the
   * cluster's). As `refresh`: only a refresh token of this registry.
   * @throws {RequestError} credential errors from the verifiers, or `keys_unavailable`
   */
  async authenticate(
    credential: string,
    registry: RegistryConfig,
    use: CredentialUse = "password",
  ): Promise<Identity> {
    const scope = use === "password" ? registry.service : `${use}\u0000${registry.service}`;
    const identity = await this.#identities.get(
      credential,
      scope,
      () =>
        verifyCredential(credential, registry, use, {
          config: this.#deps.config,
          verifier: this.#deps.verifier,
          ownKeys:
            this.#deps.verificationKeys?.get(registry.service) ??
            this.#deps.signingKeys.get(registry.service)!,
          clusters: this.#clusters,
          reviewFollows: this.#deps.reviewer !== undefined,
          nowMs: this.#now(),
        }),
      (cached) => this.#stillTrusted(cached, registry),
    );
    return this.#reviewed(credential, identity, registry.audiences, false);
  }

  /**
   * For a cluster that reviews tokens: the TokenReview of the credential (or of the source token sealed
   * in a derived credential) through the review cache, on every use, after the identity cache. Adds
   * {@link Identity.review} and, for a service-account token when `withSource`, {@link Identity.reviewSource}
   * (so what is derived from it is reviewed again; sealing costs ~15 us, so only where a credential is
   * always derived next). Offline clusters pass through unchanged.
   * @param audiences the audiences a service-account token is accepted for (default: its cluster's)
   */
  async #reviewed(
    credential: string,
    identity: Identity,
    audiences: readonly string[] | undefined,
    withSource: boolean,
  ): Promise<Identity> {
    const reviewer = this.#deps.reviewer;
    if (!reviewer?.reviews(identity.cluster)) return identity;
    const derived = identity.verificationKey?.startsWith(OWN_KEY_PREFIX) === true;
    const accepted =
      audiences ?? this.#deps.config.clusters.find((c) => c.name === identity.cluster)?.audiences ?? [];
    const review = await reviewer.review(credential, identity, accepted, derived);
    return derived || !withSource
      ? { ...identity, review }
      : { ...identity, review, reviewSource: reviewer.sealSource(credential, accepted) };
  }

  /**
   * Verifies a service-account token presented at `/v1/credential-provider` for an exchange credential
   * of `registry`, against the credential-provider audiences of that registry
   * ({@link credentialProviderAudiencesFor}, never a registry's `audiences`). Only service-account tokens:
   * an exchange credential cannot buy another one.
   * @throws {RequestError} `access_denied` when `registry` is not served through the credential provider;
   *   credential errors from the verifier, or `keys_unavailable`
   */
  async authenticateForExchange(token: string, registry: RegistryConfig): Promise<Identity> {
    const audiences = credentialProviderAudiencesFor(this.#deps.config, registry);
    if (audiences.length === 0) {
      throw new RequestError(
        "access_denied",
        `registry "${registry.service}" is not served through the credential provider`,
        {
          logDetail: {
            reason:
              "registries[].audiences is set and registries[].credentialProviderAudiences is not (or credentialProvider is off)",
          },
        },
      );
    }
    const identity = await this.#identities.get(
      token,
      `\u0000credential-provider\u0000${registry.service}`,
      () =>
        this.#deps.verifier.verify(token, audiences, { reviewFollows: this.#deps.reviewer !== undefined }),
      (cached) => this.#stillTrusted(cached, undefined),
    );
    return this.#reviewed(token, identity, audiences, true);
  }

  /** The reviewer of this realm's clusters, if any (`annotations: fromCluster` reads ServiceAccounts with it). */
  get reviewer(): ClusterReviewer | undefined {
    return this.#deps.reviewer;
  }

  /**
   * Mints an exchange credential (the password kubelet gets from `/v1/credential-provider`) for
   * `identity` at `registry`, valid until `expiresAt` at the latest and never past the identity's token.
   * @throws {RequestError} `token_expired` when the service-account token is about to expire
   */
  mintExchangeCredential(
    registry: RegistryConfig,
    identity: Identity,
    expiresAt: number,
  ): Promise<DerivedCredential> {
    const key = this.#deps.signingKeys.get(registry.service)!;
    return mintDerived("exchange", key, registry, identity, expiresAt, this.#now());
  }

  /**
   * Whether a cached identity may still be used: its cluster and the cluster key that vouched for it
   * (directly, or through the source token of a derived credential) are still trusted and, for a
   * credential this service derived, the key of `registry` that signed it is still active or published.
   */
  #stillTrusted(identity: Identity, registry: RegistryConfig | undefined): boolean {
    if (!this.#deps.verifier.stillTrusted(identity)) return false;
    const own = identity.verificationKey;
    if (own === undefined || !own.startsWith(OWN_KEY_PREFIX) || registry === undefined) return true;
    const keys = this.#deps.verificationKeys?.get(registry.service) ?? [
      this.#deps.signingKeys.get(registry.service)!,
    ];
    return keys.some((k) => `${OWN_KEY_PREFIX}${k.kid}` === own);
  }

  /**
   * The rate-limit key of an already verified credential (`sa:<cluster>/<namespace>/<name>`), or
   * `undefined` when this instance has not verified it yet. Never verifies; never throws.
   */
  knownSubject(credential: string): string | undefined {
    return this.#identities.knownSubject(credential);
  }

  /**
   * Everything `issue` decides, without minting anything (`GET /v1/explain`): the registry, the verified
   * identity (refused exactly as `issue` refuses it) and the policy decision per requested scope.
   * @returns also the policy that decided, so an explanation can name the rules that applied
   * @throws {RequestError} `unknown_service`, credential errors, `token_expired`, `keys_unavailable`
   */
  async authorize(req: Pick<IssueRequest, "credential" | "use" | "service" | "scopes">): Promise<{
    registry: RegistryConfig;
    identity: Identity;
    decisions: ScopeDecision[];
    policy: Policy;
  }> {
    const registry = this.registry(req.service);
    const identity = await this.authenticate(req.credential, registry, req.use);
    // A token a client must treat as valid for at least 60 s (distribution token.md: expires_in >= 60)
    // cannot be derived from a credential about to expire; also catches tokens inside the exp leeway.
    const remaining = identity.expiresAt - Math.floor(this.#now() / 1000);
    if (remaining < MIN_CREDENTIAL_LIFETIME_SECONDS) {
      throw new RequestError(
        "token_expired",
        `the presented credential expires in ${Math.max(0, remaining)} s; at least ${MIN_CREDENTIAL_LIFETIME_SECONDS} s are needed`,
      );
    }
    const policy = this.#deps.policy;
    return { registry, identity, decisions: policy.evaluate(identity, registry.service, req.scopes), policy };
  }

  /**
   * Issues a registry token: authenticate, evaluate the policy, mint. Partial or empty access is not an
   * error: the token carries exactly the granted actions.
   * @throws {RequestError} `unknown_service`, credential errors, `keys_unavailable`
   */
  async issue(req: IssueRequest): Promise<IssueResult> {
    const { registry, identity, decisions } = await this.authorize(req);
    const access: AccessEntry[] = decisions.map((d) => ({
      type: d.requested.type,
      name: d.requested.name,
      actions: d.granted,
    }));
    const nowMs = this.#now();
    const minted = await this.#tokens.mintOrReuse(
      registry,
      this.#deps.signingKeys.get(registry.service)!,
      identity,
      access,
      nowMs,
    );
    const grantedScope = decisions
      .filter((d) => d.granted.length > 0)
      .map((d) => formatScope({ ...d.requested, actions: d.granted }))
      .join(" ");
    this.#deps.onIssue?.({ service: registry.service, reused: minted.cached });
    auditSinkOr(req.audit, this.#deps.logger)(
      issuedRecord({
        nowMs,
        identity,
        service: registry.service,
        requested: req.scopes.map(formatScope),
        grantedScope,
        decisions,
        jti: minted.jti,
        cacheHit: minted.cached,
        client: req.clientAddress,
      }),
      "token issued",
    );
    return {
      token: minted.token,
      jti: minted.jti,
      issuedAt: minted.issuedAt,
      expiresIn: Math.max(0, minted.expiresAt - Math.floor(nowMs / 1000)),
      identity,
      decisions,
      grantedScope,
      cached: minted.cached,
      refreshToken: req.offline ? await this.#refreshToken(req, registry, identity, nowMs) : undefined,
    };
  }

  /**
   * The refresh token of an offline request: the presented one on a refresh grant (never rotated:
   * distribution oauth.md, moby#39718), else a new one bound to the identity and `registry`, expiring
   * with the credential it was derived from and never living longer than
   * `registries[].refreshTokenMaxTtlSeconds`.
   */
  async #refreshToken(req: IssueRequest, registry: RegistryConfig, identity: Identity, nowMs: number) {
    if (req.use === "refresh") return req.credential;
    const key = this.#deps.signingKeys.get(registry.service)!;
    // A refresh token from a reviewed service-account token carries it sealed, to be reviewed on each use.
    const reviewer = this.#deps.reviewer;
    const source =
      identity.review && !identity.review.derived && reviewer
        ? {
            reviewSource: reviewer.sealSource(
              req.credential,
              registry.audiences ??
                this.#deps.config.clusters.find((c) => c.name === identity.cluster)?.audiences ??
                [],
            ),
          }
        : {};
    const notAfter = Math.floor(nowMs / 1000) + registry.refreshTokenMaxTtlSeconds;
    return (await mintDerived("refresh", key, registry, { ...identity, ...source }, notAfter, nowMs)).token;
  }
}
