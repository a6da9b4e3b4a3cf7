/**
 * The token realm: credential -> verified identity -> policy decision -> minted registry token.
 * HTTP-free so that the routes, the CLI and tests share one path.
 */
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
    const cached = await this.#deps.store.get(key);
    if (cached) {
      const identity = JSON.parse(cached) as Identity;
      if (identity.expiresAt * 1000 > nowMs) return identity;
    }
    const identity = await this.#deps.verifier.verify(credential, registry.audiences);
    const ttl = Math.min(identity.expiresAt * 1000 - nowMs, IDENTITY_CACHE_MAX_MS);
    if (ttl > 0) await this.#deps.store.set(key, JSON.stringify(identity), ttl);
    return identity;
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
    const key = this.#deps.signingKeys.get(registry.service)!;
    const nowMs = this.#now();
    const minted = await mintRegistryToken(key, {
      issuer: registry.issuer,
      audience: registry.service,
      subject: identity.subject,
      access,
      ttlSeconds: registry.tokenTtlSeconds,
      notAfter: identity.expiresAt,
      nowMs,
    });
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
    };
  }
}
