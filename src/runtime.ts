/**
 * One configuration version's collaborators — policy, signing keys, cluster key sets, verifier, realm,
 * credential-provider exchange — built together so a reload can swap them atomically.
 *
 * Reload contract (SIGHUP, `app.exchange.reload`):
 * - the new version is built completely (keys loaded, policy validated) before anything changes; a bad
 *   config throws and the old version keeps serving;
 * - a request runs on the version current when its realm call began (routes reach the realm through
 *   {@link RuntimeHolder.realmHandle}, which binds each call to the version current at that moment);
 * - cluster key sets whose cluster config and trust source (`trustSource`: the content of a `jwksFile`
 *   or `caFile` included) did not change, under the same cache sealer, are carried over but invalidated:
 *   nothing verifies with them until a fetch sent after the reload (a re-read `jwksFile`, a refreshed
 *   remote JWKS; never a shared Redis copy requested before the reload) has succeeded, so a reload
 *   revokes every key the operator removed. Removed key sets are closed after a grace period;
 * - the cache sealer ({@link Runtime.sealer}) is derived from the registry signing keys: a reload that
 *   changes them makes every sealed cache entry a miss;
 * - `server.*`, `cache.*` and `rateLimit.*` are fixed for the life of the process: a reload that changes
 *   them applies everything else and logs that those keys need a restart.
 */
import { createPrivateKey, createPublicKey, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import type { Logger } from "pino";
import { trustSource } from "./authn/discovery.js";
import { ClusterKeySet } from "./authn/jwks.js";
import { ClusterReviewer } from "./authn/review.js";
import { ServiceAccountVerifier } from "./authn/verify.js";
import { CacheSealer } from "./cache/seal.js";
import type { CacheStore } from "./cache/store.js";
import type { Config } from "./config/schema.js";
import { ConfigError } from "./errors.js";
import { libtrustKeyId } from "./jose/kid.js";
import { loadRegistryKeys, type PublishedKey, type SigningKey } from "./jose/signing-key.js";
import type { ServiceMetrics } from "./plugins/metrics.js";
import type { Policy } from "./policy/engine.js";
import { loadPolicy } from "./policy/validate.js";
import { CredentialProviderExchange } from "./realm/credential-provider.js";
import { TokenRealm } from "./realm/realm.js";

/** Everything that depends on one config version. */
export interface Runtime {
  /** Monotonic version number, 1 for the config the process started with. */
  version: number;
  config: Config;
  policy: Policy;
  signingKeys: ReadonlyMap<string, SigningKey>;
  /**
   * Per registry `service`, every key published in `/.well-known/jwks.json` and accepted for the
   * service's own derived credentials: the signing key first, then `publishedKeys` (deduplicated by `kid`).
   */
  publishedKeys: ReadonlyMap<string, readonly PublishedKey[]>;
  keySets: ClusterKeySet[];
  /**
   * Seals what this version stores in the cache (identities, registry tokens, shared key sets, unknown-
   * `kid` markers; `cache/seal.ts`). Its secret is derived (`CacheSealer.fromKeyMaterial`) from every
   * registry signing key's private PKCS#8 DER, sorted by `kid`: every replica sharing a Redis holds these
   * keys, and whoever holds them can mint registry tokens anyway, so a Redis reader or writer without
   * them can neither read nor forge an entry.
   */
  sealer: CacheSealer;
  realm: TokenRealm;
  credentialProvider: CredentialProviderExchange;
  /** TokenReview and ServiceAccount reads for the clusters that ask the API server (`authn/review.ts`). */
  reviewer: ClusterReviewer;
}

/** What stays the same across config versions. */
export interface RuntimeBase {
  logger: Logger;
  now: () => number;
  store: CacheStore;
  shared?: CacheStore | undefined;
  metrics: ServiceMetrics;
}

/** Config sections that cannot change without a restart. */
const RESTART_ONLY = ["server", "cache", "rateLimit"] as const;

/** How long removed key sets stay open for requests still using them, ms. */
const RETIRE_GRACE_MS = 30_000;

/**
 * Builds a runtime for `config`, reusing key sets of `previous` whose cluster config is unchanged.
 * @throws {ConfigError} for an invalid signing key or policy
 */
export function buildRuntime(config: Config, base: RuntimeBase, previous?: Runtime): Runtime {
  const keys = loadRegistryKeys(config.registries);
  if (keys.problems.length > 0) throw new ConfigError(keys.problems);
  const signingKeys = keys.signing;
  const publishedKeys = keys.published;
  const policy = loadPolicy(config, (warning) => base.logger.warn(`config warning: ${warning}`));
  const sealer = sealerOf([...signingKeys.values()]);
  // A key set is reused only under the same sealer (its shared entries are sealed with it) and for the
  // same config and trust source; the caller invalidates reused ones (see the reload contract).
  const sameSealer = previous !== undefined && sealerId(previous.sealer) === sealerId(sealer);
  const reusable = new Map(
    sameSealer ? previous.keySets.map((ks) => [JSON.stringify([ks.cluster, ks.source]), ks]) : [],
  );
  const keySets = config.clusters.map(
    (c) =>
      reusable.get(JSON.stringify([c, trustSource(c)])) ??
      new ClusterKeySet(c, {
        logger: base.logger,
        now: base.now,
        shared: base.shared,
        sealer,
        onFetch: base.metrics.onJwksFetch,
      }),
  );
  const verifier = new ServiceAccountVerifier(keySets, { now: base.now });
  const reviewer = new ClusterReviewer({
    config,
    store: base.store,
    sealer,
    previousSealers: previousSealers(config, signingKeys),
    logger: base.logger,
    now: base.now,
    onApiCall: base.metrics.onKubeApiCall,
    onCacheLookup: base.metrics.onReviewCacheLookup,
  });
  const realm = new TokenRealm({
    config,
    verifier,
    policy,
    signingKeys,
    verificationKeys: publishedKeys,
    store: base.store,
    sealer,
    logger: base.logger,
    now: base.now,
    onIssue: base.metrics.onIssue,
    stats: previous?.realm.stats,
    reviewer,
  });
  const credentialProvider = new CredentialProviderExchange({
    config,
    realm,
    policy,
    logger: base.logger,
    now: base.now,
  });
  return {
    version: (previous?.version ?? 0) + 1,
    config,
    policy,
    signingKeys,
    publishedKeys,
    keySets,
    sealer,
    realm,
    credentialProvider,
    reviewer,
  };
}

/** Identifies a sealer's secret without revealing it (an HMAC under it). */
function sealerId(sealer: CacheSealer): string {
  return sealer.key("sealer-id", "");
}

/** The service secret's sealer over `keys` (PKCS#8 DER, sorted by `kid`): see {@link Runtime.sealer}. */
function sealerOf(keys: ReadonlyArray<{ kid: string; privateKey: KeyObject }>): CacheSealer {
  return CacheSealer.fromKeyMaterial(
    [...keys]
      .sort((a, b) => (a.kid < b.kid ? -1 : a.kid > b.kid ? 1 : 0))
      .map((k) => k.privateKey.export({ type: "pkcs8", format: "der" })),
  );
}

/**
 * The sealers of the service secret as it was before each registry's switch to its current signing key:
 * that registry's key replaced by each of its `publishedKeys` whose `keyFile` is given. They only open
 * what was sealed before the switch (source tokens inside derived credentials, `authn/review.ts`), so a
 * rotation does not cut off credentials derived from reviewed tokens while the previous key is published.
 */
function previousSealers(config: Config, signingKeys: ReadonlyMap<string, SigningKey>): CacheSealer[] {
  const out: CacheSealer[] = [];
  for (const r of config.registries) {
    for (const p of r.publishedKeys ?? []) {
      if (p.keyFile === undefined) continue;
      const privateKey = createPrivateKey(readFileSync(p.keyFile));
      const kid = libtrustKeyId(createPublicKey(privateKey));
      const keys = [...signingKeys].map(([service, k]) => (service === r.service ? { kid, privateKey } : k));
      out.push(sealerOf(keys));
    }
  }
  return out;
}

/** Holds the current {@link Runtime} and swaps it on reload. */
export class RuntimeHolder {
  #current: Runtime;
  readonly #base: RuntimeBase;
  /** A {@link TokenRealm} whose every method call runs on the realm current at that moment. */
  readonly realmHandle: TokenRealm;
  /** Likewise for the credential-provider exchange. */
  readonly credentialProviderHandle: CredentialProviderExchange;

  /** @param initial the runtime built for the start-up config */
  constructor(initial: Runtime, base: RuntimeBase) {
    this.#current = initial;
    this.#base = base;
    this.realmHandle = bindToCurrent(() => this.#current.realm);
    this.credentialProviderHandle = bindToCurrent(() => this.#current.credentialProvider);
  }

  /** The runtime in force now. */
  get current(): Runtime {
    return this.#current;
  }

  /**
   * Builds a runtime for `config` and makes it current. Nothing changes when building fails.
   * @returns the new version and the config sections that changed but need a restart
   * @throws {ConfigError} (or any error from loading keys) — the old version keeps serving
   */
  reload(config: Config): { version: number; needsRestart: string[] } {
    const old = this.#current;
    const next = buildRuntime(config, this.#base, old);
    const needsRestart = RESTART_ONLY.filter(
      (k) => JSON.stringify(old.config[k]) !== JSON.stringify(config[k]),
    );
    this.#current = next;
    const kept = new Set(next.keySets);
    const retired = old.keySets.filter((ks) => !kept.has(ks));
    if (retired.length > 0) {
      setTimeout(() => {
        for (const ks of retired) ks.close().catch(() => {});
      }, RETIRE_GRACE_MS).unref();
    }
    setTimeout(() => old.reviewer.close().catch(() => {}), RETIRE_GRACE_MS).unref();
    // A reused key set may trust a key the operator just removed: it serves nothing until re-fetched.
    for (const ks of next.keySets) {
      if (old.keySets.includes(ks)) ks.invalidate();
      else ks.refresh().catch(() => {});
    }
    return { version: next.version, needsRestart: [...needsRestart] };
  }

  /** Closes every key set of the current runtime. */
  async close(): Promise<void> {
    await Promise.all([...this.#current.keySets.map((ks) => ks.close()), this.#current.reviewer.close()]);
  }
}

/**
 * A stand-in object whose methods and properties are read from `current()` at each access, so every
 * call runs wholly on the instance current when it began.
 */
function bindToCurrent<T extends object>(current: () => T): T {
  return new Proxy({} as T, {
    get(_target, prop) {
      const target = current();
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}
