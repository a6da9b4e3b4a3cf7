/**
 * One cluster's service-account verification keys: where they come from (OIDC discovery, a `jwksUri` or
 * a static `jwksFile`), how long they are trusted, and how an unknown `kid` triggers a re-fetch.
 *
 * Re-fetch rules (why: a flood of garbage `kid`s must never cause a fetch storm, yet a real key rotation
 * must be picked up within seconds):
 * - at most one fetch in flight per cluster (single-flight); every waiter shares its result;
 * - unknown-`kid` re-fetches are budgeted (`authn/unknown-kid.ts`);
 * - when a fetch fails, the last good key set keeps serving for up to `maxStaleSeconds`;
 * - after {@link ClusterKeySet.invalidate} (a config reload) the loaded set no longer counts: nothing
 *   verifies until a fetch sent after the invalidation succeeds, so a key removed from a `jwksFile` or
 *   from the issuer's JWKS stops verifying with the reload (default deny while the fetch fails).
 *
 * Where keys come from: `authn/discovery.ts`; how replicas share them: `authn/key-sharing.ts`. Key sets
 * read from a `jwksFile` are never shared: the file is the source.
 */
import type { ClusterConfig } from "../config/schema.js";
import { RequestError } from "../errors.js";
import { clusterFetcher, fetchClusterKeys, trustSource } from "./discovery.js";
import type { JsonFetcher } from "./fetch.js";
import { jwkFitsAlgorithm, type VerificationKey } from "./jwk.js";
import type { KeySetDeps, KeySetStatus, Loaded } from "./key-set-state.js";
import { KeySetSharing } from "./key-sharing.js";
import { keysUnavailable } from "./keys-unavailable.js";
import { UnknownKidBudget } from "./unknown-kid.js";

/** How long after a failed fetch the next one may start (requests meanwhile fail fast), ms. */
const RETRY_BACKOFF_MS = 2_000;

/** Verification keys of one cluster, fetched lazily and refreshed per the rules in the module doc. */
export class ClusterKeySet {
  readonly cluster: ClusterConfig;
  readonly #deps: Required<Pick<KeySetDeps, "logger" | "now">> & KeySetDeps;
  readonly #fetcher: JsonFetcher | undefined;
  #loaded: Loaded | undefined;
  #inflight: Promise<Loaded> | undefined;
  #lastError: string | undefined;
  #nextRetryAt = 0;
  readonly #budget: UnknownKidBudget;
  /** Incremented each time a key set is accepted (fetched or adopted). */
  #generation = 0;
  /** Incremented by {@link invalidate}: a set loaded in an earlier epoch no longer counts. */
  #epoch = 0;
  /** When the last {@link invalidate} happened, epoch ms: a shared copy requested earlier is not adopted. */
  #invalidatedAt = 0;
  /** The {@link trustSource} this set was built for. */
  readonly source: string;
  /** The shared tier, when key sets are shared (remote sources only). */
  readonly #sharing: KeySetSharing | undefined;
  /** Number of fetches started (discovery + JWKS count as one), for tests and metrics. */
  fetchCount = 0;

  /**
   * @param cluster the cluster's config
   * @param deps logger, clock and metrics hook
   */
  constructor(cluster: ClusterConfig, deps: KeySetDeps) {
    this.cluster = cluster;
    this.#deps = { now: Date.now, ...deps };
    this.#fetcher = clusterFetcher(cluster);
    this.#budget = new UnknownKidBudget(
      cluster.jwks.unknownKidBurst,
      cluster.jwks.unknownKidRefillSeconds,
      this.#deps.now(),
    );
    this.source = trustSource(cluster);
    this.#sharing =
      deps.shared && deps.sealer && !cluster.jwksFile
        ? new KeySetSharing(deps.shared, deps.sealer, cluster.name, this.source)
        : undefined;
  }

  /**
   * Makes the key set now loaded stop counting (a config reload: the operator may have removed a key
   * from the `jwksFile` or from the issuer's JWKS): {@link hasKey} answers false and no token verifies
   * until a fetch sent after this call has succeeded (a shared copy requested before is not adopted).
   * Starts that fetch in the background. Never throws.
   */
  invalidate(): void {
    this.#epoch++;
    this.#invalidatedAt = this.#deps.now();
    this.#budget.forget();
    this.refresh(this.#invalidatedAt + 1).catch(() => {});
  }

  /**
   * Whether the key with `fingerprint` is trusted now, loading the key set first when none counts
   * (after a restart or a reload) and, when the fingerprint is not in it, re-fetching once within the
   * unknown-`kid` budget (another replica may have seen a newer set). Used for derived credentials,
   * which name the cluster key that vouched for their source token.
   * @throws {RequestError} `keys_unavailable` when no key set can be loaded
   */
  async trustsKey(fingerprint: string): Promise<boolean> {
    const has = (l: Loaded) => l.keys.some((k) => k.fingerprint === fingerprint);
    const loaded = await this.#current();
    if (has(loaded)) return true;
    const fresh = await this.#refreshedSince(this.#deps.now(), has);
    return fresh !== undefined && fresh.epoch === this.#epoch && has(fresh);
  }

  /**
   * Whether the key with `fingerprint` (see {@link VerificationKey.fingerprint}) is in the key set now
   * loaded (possibly stale), unless {@link invalidate} has been called since it was loaded. Never
   * fetches: a key removed from the cluster's JWKS stops counting as soon as a refresh has loaded the
   * new set, and every key stops counting at a reload until the set has been loaded again.
   */
  hasKey(fingerprint: string): boolean {
    const l = this.#loaded;
    return l !== undefined && l.epoch === this.#epoch && l.keys.some((k) => k.fingerprint === fingerprint);
  }

  /**
   * Starts a background refresh when the keys are missing or past their TTL, no fetch is in flight and
   * the retry back-off after a failure has passed; never waits, never throws. `/readyz` calls it, so a
   * replica that started while its clusters' keys could not be fetched loads them once they can be,
   * without any token request (a replica that is not ready gets none).
   */
  refreshIfDue(): void {
    const now = this.#deps.now();
    const l = this.#loaded;
    const counts = l !== undefined && l.epoch === this.#epoch;
    if (this.#inflight !== undefined || (counts && now < l.expiresAt) || now < this.#nextRetryAt) {
      return;
    }
    this.refresh().catch(() => {});
  }

  /** Current health, for readiness and metrics. */
  status(): KeySetStatus {
    const now = this.#deps.now();
    const l = this.#loaded;
    return {
      ready: l !== undefined && now - l.fetchedAt <= this.cluster.jwks.maxStaleSeconds * 1000,
      keys: l?.keys.length ?? 0,
      fetchedAt: l?.fetchedAt,
      stale: l !== undefined && now > l.expiresAt && this.#lastError !== undefined,
      lastError: this.#lastError,
    };
  }

  /**
   * The keys a token with this header may be verified with.
   * - `kid` non-empty: the keys with that `kid` that fit `alg`; an unknown `kid` triggers a re-fetch within
   *   budget, then answers `[]` if still unknown.
   * - `kid` empty or absent: every key that fits `alg` (old clusters send `"kid": ""`).
   * @throws {RequestError} `keys_unavailable` when no key set could ever be loaded (or it is too stale)
   */
  async candidates(kid: string | undefined, alg: string): Promise<VerificationKey[]> {
    let loaded = await this.#current();
    if (kid === undefined || kid === "") return loaded.keys.filter((k) => jwkFitsAlgorithm(k, alg));
    let found = loaded.keys.filter((k) => k.kid === kid);
    if (found.length === 0) {
      const now = this.#deps.now();
      if (this.#budget.isUnknown(kid, now)) return [];
      if ((await this.#sharing?.isUnknown(kid, now)) === true) return [];
      const fresh = await this.#refreshedSince(now, (l) => l.keys.some((k) => k.kid === kid));
      if (fresh === undefined) return [];
      loaded = fresh;
      found = loaded.keys.filter((k) => k.kid === kid);
      if (found.length === 0) {
        // A set requested after the miss proves the kid unknown (#refreshedSince returns no other set
        // without it); remembered so that a storm of tokens with it costs no more fetches.
        this.#budget.remember(kid, this.#deps.now());
        await this.#sharing?.markUnknown(kid, this.#budget.rememberMs, this.#deps.now());
      }
    }
    return found.filter((k) => jwkFitsAlgorithm(k, alg));
  }

  /**
   * After a token without a `kid` failed the signature check against every candidate key, re-fetches
   * within the unknown-`kid` budget (or joins a fetch in flight): a rotated key has no other way to be
   * noticed.
   * @returns true when a newer key set is now loaded
   */
  async refreshAfterMiss(): Promise<boolean> {
    const before = this.#generation;
    await this.#refreshedSince(this.#deps.now());
    return this.#generation !== before;
  }

  /**
   * A key set that settles a miss at `missAt` (epoch ms): one that `wanted` accepts (it has the key looked
   * for), or one requested at or after the miss. Joins the refresh in flight; when that one was sent
   * before the miss and lacks what is wanted (a rotation may have happened in between), or none is in
   * flight, starts one within the unknown-`kid` budget. A set requested before the miss, such as the
   * answer of a fetch already in flight or a newer copy another replica fetched before a rotation, is
   * never taken as proof that a key does not exist (it may predate a rotation).
   * @returns the set, or `undefined` when the budget is spent or the fetch failed
   */
  async #refreshedSince(missAt: number, wanted?: (loaded: Loaded) => boolean): Promise<Loaded | undefined> {
    // Another waiter may have started a newer refresh by the time the joined one settles: join that too.
    for (let inflight = this.#inflight; inflight !== undefined; inflight = this.#inflight) {
      const joined = await inflight.catch(() => undefined);
      // A failed fetch: the retry back-off applies, no new attempt for this request.
      if (joined === undefined) return undefined;
      if (joined.requestedAt >= missAt || wanted?.(joined)) return joined;
    }
    if (!this.#budget.take(this.#deps.now())) return undefined;
    return this.refresh(missAt).catch(() => undefined);
  }

  /**
   * Loads keys now (single-flight: joins a refresh in flight). Resolves with the fresh set; on failure
   * keeps the old set and rejects.
   * @param since with Redis, adopt another replica's set only if its fetch was sent at or after this
   *   time, epoch ms (default: any set newer than the one loaded)
   * @throws {RequestError} `keys_unavailable`
   */
  refresh(since = 0): Promise<Loaded> {
    if (this.#inflight !== undefined) return this.#inflight;
    const p = this.#load(since).finally(() => {
      this.#inflight = undefined;
    });
    this.#inflight = p;
    return p;
  }

  /** Releases network resources. */
  async close(): Promise<void> {
    await this.#fetcher?.close();
  }

  async #current(): Promise<Loaded> {
    const now = this.#deps.now();
    const l = this.#loaded;
    if (l && l.epoch !== this.#epoch) return this.#reloaded(now);
    if (l && now < l.expiresAt) return l;
    const maxStaleMs = this.cluster.jwks.maxStaleSeconds * 1000;
    if (l) {
      // Expired: refresh in the background when allowed; serve the old set while within max staleness.
      if (now - l.fetchedAt <= maxStaleMs) {
        if (this.#inflight === undefined && now >= this.#nextRetryAt) this.refresh().catch(() => {});
        return l;
      }
    }
    if (this.#inflight !== undefined) return this.#inflight;
    if (now < this.#nextRetryAt && this.#lastError !== undefined) throw this.#unavailable(now);
    return this.refresh();
  }

  /**
   * After {@link invalidate}: a set loaded in the current epoch, waiting for (or starting) a fetch sent
   * after the invalidation. A fetch that was in flight before it does not count; the old set never serves.
   */
  async #reloaded(now: number): Promise<Loaded> {
    for (let attempt = 0; attempt < 3; attempt++) {
      if (this.#inflight === undefined && now < this.#nextRetryAt && this.#lastError !== undefined) {
        throw this.#unavailable(now);
      }
      const loaded = await this.refresh(this.#invalidatedAt + 1);
      if (loaded.epoch === this.#epoch) return loaded;
    }
    throw this.#unavailable(now);
  }

  #unavailable(now: number): RequestError {
    return keysUnavailable(
      { cluster: this.cluster.name, reason: this.#lastError ?? "key set reloading" },
      { retryAfterSeconds: Math.max(1, Math.ceil((this.#nextRetryAt - now) / 1000)) },
    );
  }

  /**
   * The cache key (before the store's prefix) of this set's shared copy: `jwks:<cluster>:<HMAC of its
   * trust source>`; `undefined` when the set is not shared (no Redis, or a `jwksFile`).
   */
  get sharedName(): string | undefined {
    return this.#sharing?.name;
  }

  /**
   * Fetches, or adopts what another replica fetched (single-flight across replicas via a short lock).
   * `since`: the earliest `requestedAt` to adopt (see {@link refresh}). Replicas' clocks are compared: a
   * lock loser whose clock runs ahead of the winner's may not recognise the winner's set as recent enough
   * and fetches itself after the wait (one more fetch, never a wrong answer).
   */
  async #load(since: number): Promise<Loaded> {
    const sharing = this.#sharing;
    if (!sharing) return this.#fetch();
    // After a reload, only what was requested after it (a copy from before may list a removed key).
    since = Math.max(since, this.#invalidatedAt > 0 ? this.#invalidatedAt + 1 : 0);
    const before = this.#loaded?.epoch === this.#epoch ? this.#loaded.fetchedAt : 0;
    const adopted = await this.#adoptShared(before, since);
    if (adopted) return adopted;
    const won = await sharing.lock();
    if (!won) {
      const theirs = await sharing.waitFor(
        () => this.#adoptShared(before, since),
        Math.min(this.cluster.fetch.timeoutMs, 3_000),
      );
      if (theirs) return theirs;
      // The lock holder is slow or gone: fetch ourselves rather than fail.
    }
    try {
      const loaded = await this.#fetch();
      await sharing.write(
        {
          jwks: loaded.raw,
          requestedAt: loaded.requestedAt,
          fetchedAt: loaded.fetchedAt,
          expiresAt: loaded.expiresAt,
        },
        this.cluster.jwks.maxStaleSeconds * 1000 || 1,
      );
      return loaded;
    } finally {
      if (won) await sharing.unlock();
    }
  }

  /**
   * Adopts the shared key set when it opens with the service secret, was fetched from this set's exact
   * trust source, is newer than `after` (its `fetchedAt`), still fresh, and (with `since` > 0) requested
   * at or after `since`.
   */
  async #adoptShared(after: number, since: number): Promise<Loaded | undefined> {
    const sharing = this.#sharing;
    if (!sharing) return undefined;
    const adopted = await sharing.adopt(after, since, this.#deps.now());
    if (adopted === undefined) return undefined;
    const loaded: Loaded = { ...adopted, epoch: this.#epoch };
    this.#accept(loaded);
    return loaded;
  }

  #accept(loaded: Loaded): void {
    // A fetch sent before an invalidation never replaces a set loaded after it.
    if (loaded.epoch !== this.#epoch && this.#loaded?.epoch === this.#epoch) return;
    this.#generation++;
    if (this.#lastError !== undefined) {
      this.#deps.logger.info(
        { cluster: this.cluster.name, keys: loaded.keys.length },
        "cluster keys recovered",
      );
    }
    this.#loaded = loaded;
    this.#lastError = undefined;
    this.#budget.forget();
  }

  async #fetch(): Promise<Loaded> {
    const c = this.cluster;
    const log = this.#deps.logger;
    this.fetchCount++;
    const requestedAt = this.#deps.now();
    const epoch = this.#epoch;
    try {
      const { keys, raw, ttlSeconds: ttl } = await fetchClusterKeys(c, this.#fetcher, log);
      const now = this.#deps.now();
      const loaded: Loaded = {
        keys,
        raw,
        requestedAt,
        fetchedAt: now,
        expiresAt: now + ttl * 1000,
        epoch,
      };
      this.#accept(loaded);
      this.#deps.onFetch?.(c.name, "ok");
      log.debug({ cluster: c.name, keys: keys.length, ttlSeconds: ttl }, "cluster keys loaded");
      return loaded;
    } catch (err) {
      const reason =
        err instanceof RequestError ? String(err.logDetail?.reason ?? err.message) : (err as Error).message;
      if (this.#lastError === undefined) {
        log.warn(
          { cluster: c.name, reason, detail: err instanceof RequestError ? err.logDetail : undefined },
          this.#loaded ? "cluster key fetch failed; serving cached keys" : "cluster key fetch failed",
        );
      }
      this.#lastError = reason;
      this.#nextRetryAt = this.#deps.now() + RETRY_BACKOFF_MS;
      this.#deps.onFetch?.(c.name, "error");
      // Every failure answers alike: the generic message, the reason in the log only, and a Retry-After
      // of the back-off before the next attempt.
      throw keysUnavailable(err instanceof RequestError ? (err.logDetail ?? { reason }) : { reason }, {
        retryAfterSeconds: RETRY_BACKOFF_MS / 1000,
        cause: err,
      });
    }
  }
}
