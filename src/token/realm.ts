/**
 * The token realm: credential -> verified identity -> policy decision -> minted registry token.
 * HTTP-free so that the routes, the CLI and tests share one path.
 */
import { LRUCache } from "lru-cache";
import type { Logger } from "pino";
import type { Identity, ServiceAccountVerifier } from "../authn/verify.js";
import { type CacheStore, secretKey } from "../cache/store.js";
import type { Config, RegistryConfig } from "../config/schema.js";
import { ExchangeError, safeEcho } from "../errors.js";
import type { Policy, ScopeDecision } from "../policy/engine.js";
import { formatScope, type Scope } from "../policy/scope.js";
import { type AccessEntry, mintRegistryToken } from "./mint.js";
import type { SigningKey } from "./signing.js";

/** A request for a registry token. */
export interface IssueRequest {
  /** The presented credential (a service-account JWT). Never logged. */
  credential: string;
  /** The `service` parameter. */
  service: string;
  /** Parsed scopes (empty = login). */
  scopes: Scope[];
  /** Client address, for the audit log. */
  clientAddress?: string | undefined;
}

/** An issued registry token and the decision behind it. */
export interface IssueResult {
  /** The registry bearer token. */
  token: string;
  /** `jti` of the token (safe to log). */
  jti: string;
  /** Issue time, epoch seconds. */
  issuedAt: number;
  /** Remaining lifetime when answered, seconds. */
  expiresIn: number;
  /** Who asked. */
  identity: Identity;
  /** Per-scope decisions. */
  decisions: ScopeDecision[];
  /** Granted scopes in `type:name:actions` form, space-joined (OAuth2 `scope` of the response). */
  grantedScope: string;
  /** True when an already-issued token was reused from the cache. */
  cached: boolean;
}

/** Cache counters, for metrics and the benchmark. */
export interface RealmStats {
  identityHits: number;
  identityMisses: number;
  tokenHits: number;
  tokenMisses: number;
}

/** A cached registry token: the token and its timestamps (it is short-lived by construction). */
interface CachedToken {
  token: string;
  jti: string;
  issuedAt: number;
  expiresAt: number;
}

/** Dependencies of a {@link TokenRealm}. */
export interface RealmDeps {
  config: Config;
  verifier: ServiceAccountVerifier;
  policy: Policy;
  /** Signing key per registry `service`. */
  signingKeys: ReadonlyMap<string, SigningKey>;
  store: CacheStore;
  logger: Logger;
  /** Clock, epoch milliseconds. */
  now?: () => number;
}

/** Identity cache entries are kept at most this long even for long-lived tokens, ms. */
const IDENTITY_CACHE_MAX_MS = 10 * 60 * 1000;

/** Authenticates, authorizes and mints. See the module doc. */
export class TokenRealm {
  readonly #deps: RealmDeps;
  readonly #registries: ReadonlyMap<string, RegistryConfig>;
  readonly #now: () => number;
  readonly #subjects = new LRUCache<string, string>({ max: 50_000 });
  /** Cache counters since start. */
  readonly stats: RealmStats = { identityHits: 0, identityMisses: 0, tokenHits: 0, tokenMisses: 0 };

  /** @param deps config, verifier, policy, keys, cache, logger, clock */
  constructor(deps: RealmDeps) {
    this.#deps = deps;
    this.#registries = new Map(deps.config.registries.map((r) => [r.service, r]));
    this.#now = deps.now ?? Date.now;
  }

  /**
   * The registry config for `service`.
   * @throws {ExchangeError} `unknown_service` (400) when this realm does not serve it
   */
  registry(service: string): RegistryConfig {
    const r = this.#registries.get(service);
    if (!r) {
      throw new ExchangeError(
        "unknown_service",
        `unknown service "${safeEcho(service, 100)}": this realm serves ${[...this.#registries.keys()].map((s) => `"${s}"`).join(", ")}`,
      );
    }
    return r;
  }

  /**
   * Verifies a service-account token for use at `registry` (its `audiences` if set, else the cluster's),
   * with a cache keyed by the token's SHA-256 that never outlives the token.
   * @throws {ExchangeError} credential errors from the verifier, or `keys_unavailable`
   */
  async authenticate(credential: string, registry: RegistryConfig): Promise<Identity> {
    const key = `id:${secretKey(credential)}:${secretKey(registry.service).slice(0, 16)}`;
    const nowMs = this.#now();
    const cached = parseCached<Identity>(await this.#deps.store.get(key));
    if (
      cached &&
      typeof cached.expiresAt === "number" &&
      cached.expiresAt * 1000 > nowMs &&
      cached.serviceAccount
    ) {
      this.stats.identityHits++;
      if (!this.#subjects.has(secretKey(credential))) {
        this.#subjects.set(secretKey(credential), subjectKey(cached), {
          ttl: cached.expiresAt * 1000 - nowMs,
        });
      }
      return cached;
    }
    this.stats.identityMisses++;
    const identity = await this.#deps.verifier.verify(credential, registry.audiences);
    const ttl = Math.min(identity.expiresAt * 1000 - nowMs, IDENTITY_CACHE_MAX_MS);
    if (ttl > 0) await this.#deps.store.set(key, JSON.stringify(identity), ttl);
    this.#subjects.set(secretKey(credential), subjectKey(identity), { ttl: Math.max(1, ttl) });
    return identity;
  }

  /**
   * The rate-limit key of an already verified credential (`sa:<cluster>/<namespace>/<name>`), or
   * `undefined` when this instance has not verified it yet. Never verifies; never throws.
   */
  knownSubject(credential: string): string | undefined {
    return this.#subjects.get(secretKey(credential));
  }

  /**
   * Issues a registry token: authenticate, evaluate the policy, mint. Partial or empty access is not an
   * error: the token carries exactly the granted actions.
   * @throws {ExchangeError} `unknown_service`, credential errors, `keys_unavailable`
   */
  async issue(req: IssueRequest): Promise<IssueResult> {
    const registry = this.registry(req.service);
    const identity = await this.authenticate(req.credential, registry);
    const decisions = this.#deps.policy.evaluate(identity, registry.service, req.scopes);
    const access: AccessEntry[] = decisions.map((d) => ({
      type: d.requested.type,
      name: d.requested.name,
      actions: d.granted,
    }));
    const nowMs = this.#now();
    const minted = await this.#mintOrReuse(registry, identity, access, nowMs);
    const grantedScope = decisions
      .filter((d) => d.granted.length > 0)
      .map((d) => formatScope({ ...d.requested, actions: d.granted }))
      .join(" ");
    this.#deps.logger.info(
      {
        audit: {
          cluster: identity.cluster,
          namespace: identity.namespace,
          serviceAccount: identity.serviceAccount.name,
          pod: identity.pod?.name,
          service: registry.service,
          requested: req.scopes.map(formatScope),
          granted: grantedScope === "" ? [] : grantedScope.split(" "),
          rules: [...new Set(decisions.flatMap((d) => d.allowedBy))],
          deniedBy: [...new Set(decisions.flatMap((d) => d.deniedBy))],
          jti: minted.jti,
          cacheHit: minted.cached,
          saTokenId: identity.tokenId,
          client: req.clientAddress,
        },
      },
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
    };
  }

  /**
   * Reuses an issued token for the same service account, registry and granted access while at least half
   * its lifetime remains and it does not outlive the presented credential; otherwise mints a new one.
   */
  async #mintOrReuse(
    registry: RegistryConfig,
    identity: Identity,
    access: AccessEntry[],
    nowMs: number,
  ): Promise<CachedToken & { cached: boolean }> {
    const reuse = this.#deps.config.cache.reuseTokens;
    const granted = access
      .filter((a) => a.actions.length > 0)
      .map((a) => `${a.type}:${a.name}:${a.actions.join(",")}`)
      .sort();
    const cacheKey = `tok:${secretKey(
      JSON.stringify([
        identity.cluster,
        identity.namespace,
        identity.serviceAccount.name,
        identity.serviceAccount.uid,
        registry.service,
        registry.issuer,
        granted,
      ]),
    )}`;
    const now = Math.floor(nowMs / 1000);
    const halfTtl = registry.tokenTtlSeconds / 2;
    if (reuse) {
      const hit = parseCached<CachedToken>(await this.#deps.store.get(cacheKey));
      if (
        hit &&
        typeof hit.token === "string" &&
        hit.expiresAt - now >= halfTtl &&
        hit.expiresAt <= identity.expiresAt &&
        hit.issuedAt <= now
      ) {
        this.stats.tokenHits++;
        return { ...hit, cached: true };
      }
      this.stats.tokenMisses++;
    }
    const key = this.#deps.signingKeys.get(registry.service)!;
    const minted = await mintRegistryToken(key, {
      issuer: registry.issuer,
      audience: registry.service,
      subject: identity.subject,
      access,
      ttlSeconds: registry.tokenTtlSeconds,
      notAfter: identity.expiresAt,
      nowMs,
    });
    const entry: CachedToken = {
      token: minted.token,
      jti: minted.jti,
      issuedAt: minted.issuedAt,
      expiresAt: minted.expiresAt,
    };
    const reusableMs = (minted.expiresAt - halfTtl) * 1000 - nowMs;
    if (reuse && reusableMs >= 1000) await this.#deps.store.set(cacheKey, JSON.stringify(entry), reusableMs);
    return { ...entry, cached: false };
  }
}

function subjectKey(identity: Identity): string {
  return `sa:${identity.cluster}/${identity.namespace}/${identity.serviceAccount.name}`;
}

/** Parses a cached JSON value; a corrupt entry is a miss, never an error. */
function parseCached<T>(text: string | undefined): T | undefined {
  if (text === undefined) return undefined;
  try {
    const v = JSON.parse(text) as unknown;
    return v !== null && typeof v === "object" ? (v as T) : undefined;
  } catch {
    return undefined;
  }
}
