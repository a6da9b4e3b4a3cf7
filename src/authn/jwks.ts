/**
 * One cluster's service-account verification keys: where they come from (OIDC discovery, a `jwksUri` or
 * a static `jwksFile`), how long they are trusted, and how an unknown `kid` triggers a re-fetch.
 *
 * Re-fetch rules (why: a flood of garbage `kid`s must never cause a fetch storm, yet a real key rotation
 * must be picked up within seconds):
 * - at most one fetch in flight per cluster (single-flight); every waiter shares its result;
 * - unknown-`kid` re-fetches draw from a token bucket (burst `unknownKidBurst`, one more every
 *   `unknownKidRefillSeconds`); a `kid` still unknown after a fresh fetch is remembered as unknown for
 *   `unknownKidRefillSeconds`;
 * - when a fetch fails, the last good key set keeps serving for up to `maxStaleSeconds`;
 * - after {@link ClusterKeySet.invalidate} (a config reload) the loaded set no longer counts: nothing
 *   verifies until a fetch sent after the invalidation succeeds, so a key removed from a `jwksFile` or
 *   from the issuer's JWKS stops verifying with the reload (default deny while the fetch fails).
 *
 * Shared (Redis) copies are bound to the exact trust source ({@link trustSource}: issuer, discovery URL
 * or `jwksUri`, CA file content) in their key name and, sealed with the service secret
 * (`cache/seal.ts`), in their value: a copy fetched from another source, or written by someone without
 * the secret, is never adopted. Key sets read from a `jwksFile` are never shared: the file is the source.
 */
import { createHash, createPublicKey, type JsonWebKeyInput, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import type { Logger } from "pino";
import { keySetFetchLockKey, keySetKey, keySetSourceId, unknownKidKey } from "../cache/keys.js";
import type { CacheSealer } from "../cache/seal.js";
import type { CacheStore } from "../cache/store.js";
import type { ClusterConfig } from "../config/schema.js";
import { ExchangeError } from "../errors.js";
import { kubernetesKeyId } from "../jose/kid.js";
import { JsonFetcher } from "./fetch.js";

/** A usable verification key from a JWKS. */
export interface VerificationKey {
  /** The JWK `kid` (may be empty when the JWKS has none). */
  kid: string;
  /** `RSA` or `EC`. */
  kty: "RSA" | "EC";
  /** EC curve (`P-256`, `P-384`, `P-521`) for EC keys. */
  crv?: string | undefined;
  /** The JWK `alg` if the JWKS declared one. */
  alg?: string | undefined;
  /** The imported public key. */
  key: KeyObject;
  /**
   * base64url SHA-256 of the key's DER SubjectPublicKeyInfo (what Kubernetes uses as the `kid`): names
   * the key independently of the JWKS's `kid`, so a cached identity can be tied to the key that verified it.
   */
  fingerprint?: string | undefined;
}

/** Health of a cluster's key set, for readiness and metrics. */
export interface KeySetStatus {
  /** Whether keys are loaded and usable. */
  ready: boolean;
  /** Number of usable keys. */
  keys: number;
  /** Epoch ms of the last successful fetch, if any. */
  fetchedAt?: number | undefined;
  /** True when the last fetch failed and stale keys are serving. */
  stale: boolean;
  /** Last fetch error (log-safe), if the last attempt failed. */
  lastError?: string | undefined;
}

const CURVE_FOR_ALG: Record<string, string> = { ES256: "P-256", ES384: "P-384", ES512: "P-521" };

/** True when `key` can verify a JWS with algorithm `alg` (RFC 7518 §3.1). */
export function keyFitsAlg(key: VerificationKey, alg: string): boolean {
  if (key.alg !== undefined && key.alg !== alg) return false;
  if (alg.startsWith("RS") || alg.startsWith("PS")) return key.kty === "RSA";
  if (alg.startsWith("ES")) return key.kty === "EC" && key.crv === CURVE_FOR_ALG[alg];
  return false;
}

/**
 * The exact source a cluster's keys are trusted from, as a JSON string: issuer, discovery URL or
 * `jwksUri` (or the `jwksFile` path), and the SHA-256 of the content of `jwksFile` and `caFile` (a file
 * that cannot be read hashes as `unreadable`). Two configs with the same source trust the same keys; a
 * reload reuses a key set only for the same source, and a shared (Redis) copy is adopted only by a
 * replica with the same source.
 */
export function trustSource(cluster: ClusterConfig): string {
  const fileHash = (file: string | undefined): string | null => {
    if (file === undefined) return null;
    try {
      return createHash("sha256").update(readFileSync(file)).digest("base64url");
    } catch {
      return "unreadable";
    }
  };
  return JSON.stringify({
    issuer: cluster.issuer,
    discoveryUrl: cluster.jwksUri || cluster.jwksFile ? null : (cluster.discoveryUrl ?? null),
    jwksUri: cluster.jwksUri ?? null,
    allowCrossHostJwksUri: cluster.allowCrossHostJwksUri ?? false,
    jwksFile: cluster.jwksFile ?? null,
    jwksFileSha256: fileHash(cluster.jwksFile),
    caFileSha256: fileHash(cluster.caFile),
  });
}

/**
 * Parses a JWKS document into usable keys. Keys that are malformed, private, symmetric, or not for
 * signatures are skipped (reported through `onSkip`) rather than poisoning the set.
 * @throws {Error} when the document is not `{ keys: [...] }`
 */
export function parseJwks(
  doc: unknown,
  onSkip: (index: number, reason: string) => void = () => {},
): VerificationKey[] {
  if (doc === null || typeof doc !== "object" || !Array.isArray((doc as { keys?: unknown }).keys)) {
    throw new Error('JWKS is not an object with a "keys" array');
  }
  const out: VerificationKey[] = [];
  for (const [i, jwk] of (doc as { keys: unknown[] }).keys.entries()) {
    const result = importJwk(jwk);
    if (typeof result === "string") onSkip(i, result);
    else out.push(result);
  }
  return out;
}

/** Imports one JWK, or returns why it is unusable. */
function importJwk(jwk: unknown): VerificationKey | string {
  if (jwk === null || typeof jwk !== "object") return "not an object";
  const k = jwk as Record<string, unknown>;
  if (k.kty !== "RSA" && k.kty !== "EC") return `unsupported kty ${JSON.stringify(k.kty)}`;
  if (k.use !== undefined && k.use !== "sig") return `use is ${JSON.stringify(k.use)}, not "sig"`;
  if (k.d !== undefined) return "contains private key material";
  if (k.kid !== undefined && typeof k.kid !== "string") return "kid is not a string";
  if (k.alg !== undefined && typeof k.alg !== "string") return "alg is not a string";
  let key: KeyObject;
  try {
    key = createPublicKey({ key: k, format: "jwk" } as JsonWebKeyInput);
  } catch (err) {
    return `cannot import: ${(err as Error).message}`;
  }
  if (k.kty === "RSA" && (key.asymmetricKeyDetails?.modulusLength ?? 0) < 2048)
    return "RSA key shorter than 2048 bits";
  return {
    kid: (k.kid as string | undefined) ?? "",
    kty: k.kty,
    crv: typeof k.crv === "string" ? k.crv : undefined,
    alg: k.alg as string | undefined,
    key,
    fingerprint: kubernetesKeyId(key),
  };
}

/** The OIDC discovery URL of `issuer` (OpenID Connect Discovery 1.0 §4). */
function discoveryUrlOf(issuer: string): string {
  return `${issuer.replace(/\/+$/, "")}/.well-known/openid-configuration`;
}

/** `URL.origin` of `url`, or `undefined` when it is not a URL (then nothing is sent a bearer token). */
function originOf(url: string): string | undefined {
  try {
    return new URL(url).origin;
  } catch {
    return undefined;
  }
}

/** Dependencies of a {@link ClusterKeySet}. */
export interface KeySetDeps {
  logger: Logger;
  /**
   * The shared (Redis) tier, when replicas run: key sets fetched by one replica are adopted by the
   * others, re-fetches are single-flight across replicas through a short lock, and unknown `kid`s are
   * remembered for all. Read directly (never through a memory tier) so a newer document is seen at once.
   */
  shared?: CacheStore | undefined;
  /**
   * Seals what is shared in Redis (key sets, unknown-`kid` markers) with the service secret; the
   * shared tier is used only with a sealer (and never for a `jwksFile` cluster).
   */
  sealer?: CacheSealer | undefined;
  /** Clock in epoch milliseconds (frozen in tests). */
  now?: () => number;
  /** Called after every fetch attempt, for metrics. */
  onFetch?: (cluster: string, outcome: "ok" | "error") => void;
}

interface Loaded {
  keys: VerificationKey[];
  /** The JWKS document as fetched (public keys only), shared with other replicas. */
  raw: unknown;
  /**
   * When the fetch that produced this set was sent, epoch ms: the set shows the cluster's keys as of
   * about then, so it proves a `kid` unknown only to a miss at or before this time.
   */
  requestedAt: number;
  /** When the fetch completed, epoch ms. */
  fetchedAt: number;
  expiresAt: number;
  /** The {@link ClusterKeySet.invalidate} epoch the set was loaded in; an older one does not count. */
  epoch: number;
}

/** What replicas share per cluster in the Redis tier (sealed). */
interface SharedKeySet {
  /** {@link trustSource} of the replica that fetched it: adopted only by a replica with the same. */
  source: string;
  jwks: unknown;
  /** See {@link Loaded.requestedAt}; absent in sets written by older versions (never proof of a miss). */
  requestedAt?: number;
  fetchedAt: number;
  expiresAt: number;
}

/** How long a replica holds the cross-replica fetch lock at most, ms. */
const FETCH_LOCK_MS = 5_000;
/** How often a replica that lost the lock looks for the winner's result, ms. */
const LOCK_POLL_MS = 25;
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
  #tokens: number;
  #tokensAt: number;
  readonly #unknownKids = new Map<string, number>();
  /** Incremented each time a key set is accepted (fetched or adopted). */
  #generation = 0;
  /** Incremented by {@link invalidate}: a set loaded in an earlier epoch no longer counts. */
  #epoch = 0;
  /** When the last {@link invalidate} happened, epoch ms: a shared copy requested earlier is not adopted. */
  #invalidatedAt = 0;
  /** The {@link trustSource} this set was built for. */
  readonly source: string;
  /** The shared tier and its sealer, when key sets are shared (remote sources only). */
  readonly #sharing: { store: CacheStore; sealer: CacheSealer; id: string } | undefined;
  /** Number of fetches started (discovery + JWKS count as one), for tests and metrics. */
  fetchCount = 0;

  /**
   * @param cluster the cluster's config
   * @param deps logger, clock and metrics hook
   */
  constructor(cluster: ClusterConfig, deps: KeySetDeps) {
    this.cluster = cluster;
    this.#deps = { now: Date.now, ...deps };
    this.#fetcher = cluster.jwksFile
      ? undefined
      : new JsonFetcher({
          timeoutMs: cluster.fetch.timeoutMs,
          maxBytes: cluster.fetch.maxBytes,
          maxRedirects: cluster.fetch.maxRedirects,
          caFile: cluster.caFile,
          bearerTokenFile: cluster.bearerTokenFile,
          bearerTokenOrigin: originOf(
            cluster.discoveryUrl ?? cluster.jwksUri ?? discoveryUrlOf(cluster.issuer),
          ),
        });
    this.#tokens = cluster.jwks.unknownKidBurst;
    this.#tokensAt = this.#deps.now();
    this.source = trustSource(cluster);
    this.#sharing =
      deps.shared && deps.sealer && !cluster.jwksFile
        ? {
            store: deps.shared,
            sealer: deps.sealer,
            id: keySetSourceId(deps.sealer, this.source),
          }
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
    this.#unknownKids.clear();
    this.refresh(this.#invalidatedAt + 1).catch(() => {});
  }

  /**
   * Whether the key with `fingerprint` is trusted now, loading the key set first when none counts
   * (after a restart or a reload) and, when the fingerprint is not in it, re-fetching once within the
   * unknown-`kid` budget (another replica may have seen a newer set). Used for derived credentials,
   * which name the cluster key that vouched for their source token.
   * @throws {ExchangeError} `keys_unavailable` when no key set can be loaded
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
   * @throws {ExchangeError} `keys_unavailable` when no key set could ever be loaded (or it is too stale)
   */
  async candidates(kid: string | undefined, alg: string): Promise<VerificationKey[]> {
    let loaded = await this.#current();
    if (kid === undefined || kid === "") return loaded.keys.filter((k) => keyFitsAlg(k, alg));
    let found = loaded.keys.filter((k) => k.kid === kid);
    if (found.length === 0) {
      const now = this.#deps.now();
      const knownUnknownUntil = this.#unknownKids.get(kid);
      if (knownUnknownUntil !== undefined && knownUnknownUntil > now) return [];
      if (await this.#sharedUnknown(kid)) return [];
      const fresh = await this.#refreshedSince(now, (l) => l.keys.some((k) => k.kid === kid));
      if (fresh === undefined) return [];
      loaded = fresh;
      found = loaded.keys.filter((k) => k.kid === kid);
      if (found.length === 0) {
        // A set requested after the miss proves the kid unknown (#refreshedSince returns no other set
        // without it); remembered so that a storm of tokens with it costs no more fetches.
        const ttlMs = this.cluster.jwks.unknownKidRefillSeconds * 1000;
        if (this.#unknownKids.size > 10_000) this.#unknownKids.clear();
        this.#unknownKids.set(kid, this.#deps.now() + ttlMs);
        await this.#markSharedUnknown(kid, ttlMs);
      }
    }
    return found.filter((k) => keyFitsAlg(k, alg));
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
   * never taken as proof that a key does not exist: taking one made a replica remember a just-rotated kid
   * as unknown (found by the benchmark's two-worker storm and by review).
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
    if (!this.#takeToken()) return undefined;
    return this.refresh(missAt).catch(() => undefined);
  }

  /**
   * Loads keys now (single-flight: joins a refresh in flight). Resolves with the fresh set; on failure
   * keeps the old set and rejects.
   * @param since with Redis, adopt another replica's set only if its fetch was sent at or after this
   *   time, epoch ms (default: any set newer than the one loaded)
   * @throws {ExchangeError} `keys_unavailable`
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

  #unavailable(now: number): ExchangeError {
    return new ExchangeError("keys_unavailable", "the cluster's signing keys are not available right now", {
      logDetail: { cluster: this.cluster.name, reason: this.#lastError ?? "key set reloading" },
      retryAfterSeconds: Math.max(1, Math.ceil((this.#nextRetryAt - now) / 1000)),
    });
  }

  /**
   * Shared unknown-`kid` marker: named by an HMAC of the trust source and the `kid`, its value sealed to
   * that name, so someone who can write Redis but lacks the service secret cannot mark a real `kid`
   * unknown (which would delay a rotation's new key) nor learn which `kid`s were tried.
   */
  #unknownKey(kid: string): string {
    const s = this.#sharing!;
    return unknownKidKey(s.sealer, this.cluster.name, this.source, kid);
  }

  async #sharedUnknown(kid: string): Promise<boolean> {
    const s = this.#sharing;
    if (!s) return false;
    const name = this.#unknownKey(kid);
    return s.sealer.open(name, await s.store.get(name)) === "unknown";
  }

  async #markSharedUnknown(kid: string, ttlMs: number): Promise<void> {
    const s = this.#sharing;
    if (!s) return;
    const name = this.#unknownKey(kid);
    await s.store.set(name, s.sealer.seal(name, "unknown"), ttlMs);
  }

  /**
   * The cache key (before the store's prefix) of this set's shared copy: `jwks:<cluster>:<HMAC of its
   * trust source>`; `undefined` when the set is not shared (no Redis, or a `jwksFile`).
   */
  get sharedName(): string | undefined {
    return this.#sharing ? keySetKey(this.cluster.name, this.#sharing.id) : undefined;
  }

  #sharedName(): string {
    return this.sharedName!;
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
    const shared = sharing.store;
    // After a reload, only what was requested after it (a copy from before may list a removed key).
    since = Math.max(since, this.#invalidatedAt > 0 ? this.#invalidatedAt + 1 : 0);
    const before = this.#loaded?.epoch === this.#epoch ? this.#loaded.fetchedAt : 0;
    const adopted = await this.#adoptShared(before, since);
    if (adopted) return adopted;
    const lockKey = keySetFetchLockKey(this.cluster.name, sharing.id);
    const won = await shared.setIfAbsent(lockKey, String(process.pid), FETCH_LOCK_MS);
    if (!won) {
      const deadline = Date.now() + Math.min(this.cluster.fetch.timeoutMs, 3_000);
      while (Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, LOCK_POLL_MS));
        const theirs = await this.#adoptShared(before, since);
        if (theirs) return theirs;
      }
      // The lock holder is slow or gone: fetch ourselves rather than fail.
    }
    try {
      const loaded = await this.#fetch();
      const doc: SharedKeySet = {
        source: this.source,
        jwks: loaded.raw,
        requestedAt: loaded.requestedAt,
        fetchedAt: loaded.fetchedAt,
        expiresAt: loaded.expiresAt,
      };
      const name = this.#sharedName();
      await shared.set(
        name,
        sharing.sealer.seal(name, JSON.stringify(doc)),
        this.cluster.jwks.maxStaleSeconds * 1000 || 1,
      );
      return loaded;
    } finally {
      if (won) await shared.delete(lockKey);
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
    const name = this.#sharedName();
    const text = sharing.sealer.open(name, await sharing.store.get(name));
    if (text === undefined) return undefined;
    let doc: SharedKeySet;
    try {
      doc = JSON.parse(text) as SharedKeySet;
    } catch {
      return undefined;
    }
    if (doc === null || typeof doc !== "object" || doc.source !== this.source) return undefined;
    if (!(doc.fetchedAt > after) || !(doc.expiresAt > this.#deps.now())) return undefined;
    const requestedAt = typeof doc.requestedAt === "number" ? doc.requestedAt : 0;
    if (since > 0 && !(requestedAt >= since)) return undefined;
    let keys: VerificationKey[];
    try {
      keys = parseJwks(doc.jwks);
    } catch {
      return undefined;
    }
    if (keys.length === 0) return undefined;
    const loaded: Loaded = {
      keys,
      raw: doc.jwks,
      requestedAt,
      fetchedAt: doc.fetchedAt,
      expiresAt: doc.expiresAt,
      epoch: this.#epoch,
    };
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
    this.#unknownKids.clear();
  }

  #takeToken(): boolean {
    const now = this.#deps.now();
    const refillMs = this.cluster.jwks.unknownKidRefillSeconds * 1000;
    const gained = Math.floor((now - this.#tokensAt) / refillMs);
    if (gained > 0) {
      this.#tokens = Math.min(this.cluster.jwks.unknownKidBurst, this.#tokens + gained);
      this.#tokensAt += gained * refillMs;
    }
    if (this.#tokens >= this.cluster.jwks.unknownKidBurst) this.#tokensAt = now;
    if (this.#tokens <= 0) return false;
    this.#tokens--;
    return true;
  }

  async #fetch(): Promise<Loaded> {
    const c = this.cluster;
    const log = this.#deps.logger;
    this.fetchCount++;
    const requestedAt = this.#deps.now();
    const epoch = this.#epoch;
    try {
      let doc: unknown;
      let maxAge: number | undefined;
      if (c.jwksFile) {
        try {
          doc = JSON.parse(readFileSync(c.jwksFile, "utf8"));
        } catch (err) {
          throw new ExchangeError(
            "keys_unavailable",
            "the cluster's signing keys are not available right now",
            {
              logDetail: { file: c.jwksFile, reason: `cannot read JWKS file: ${(err as Error).message}` },
            },
          );
        }
      } else {
        const fetched = await this.#fetcher!.getJson(await this.#jwksUri());
        doc = fetched.body;
        maxAge = fetched.maxAgeSeconds;
      }
      let keys: VerificationKey[];
      try {
        keys = parseJwks(doc, (index, reason) =>
          log.warn({ cluster: c.name, index, reason }, "JWKS key skipped"),
        );
      } catch (err) {
        throw new ExchangeError(
          "keys_unavailable",
          "the cluster's signing keys are not available right now",
          {
            logDetail: { reason: (err as Error).message },
          },
        );
      }
      if (keys.length === 0) {
        throw new ExchangeError(
          "keys_unavailable",
          "the cluster's signing keys are not available right now",
          {
            logDetail: { reason: "JWKS has no usable keys" },
          },
        );
      }
      const now = this.#deps.now();
      const ttl = Math.min(
        c.jwks.maxTtlSeconds,
        Math.max(c.jwks.minTtlSeconds, maxAge ?? c.jwks.minTtlSeconds),
      );
      const loaded: Loaded = {
        keys,
        raw: doc,
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
        err instanceof ExchangeError ? String(err.logDetail?.reason ?? err.message) : (err as Error).message;
      if (this.#lastError === undefined) {
        log.warn(
          { cluster: c.name, reason, detail: err instanceof ExchangeError ? err.logDetail : undefined },
          this.#loaded ? "cluster key fetch failed; serving cached keys" : "cluster key fetch failed",
        );
      }
      this.#lastError = reason;
      this.#nextRetryAt = this.#deps.now() + RETRY_BACKOFF_MS;
      this.#deps.onFetch?.(c.name, "error");
      // Every failure answers alike: the generic message, the reason in the log only, and a Retry-After
      // of the back-off before the next attempt.
      throw new ExchangeError("keys_unavailable", "the cluster's signing keys are not available right now", {
        logDetail: err instanceof ExchangeError ? (err.logDetail ?? { reason }) : { reason },
        retryAfterSeconds: RETRY_BACKOFF_MS / 1000,
        cause: err,
      });
    }
  }

  async #jwksUri(): Promise<string> {
    const c = this.cluster;
    if (c.jwksUri) return c.jwksUri;
    const discoveryUrl = c.discoveryUrl ?? discoveryUrlOf(c.issuer);
    const { body, url } = await this.#fetcher!.getJson(discoveryUrl);
    const doc = body as { issuer?: unknown; jwks_uri?: unknown } | null;
    if (!doc || typeof doc !== "object" || typeof doc.jwks_uri !== "string") {
      throw new ExchangeError("keys_unavailable", "the cluster's signing keys are not available right now", {
        logDetail: { url: discoveryUrl, reason: "discovery document has no jwks_uri" },
      });
    }
    // OIDC Discovery §4.3: the issuer in the document must be identical to the one we trust.
    if (doc.issuer !== c.issuer) {
      throw new ExchangeError("keys_unavailable", "the cluster's signing keys are not available right now", {
        logDetail: {
          url: discoveryUrl,
          reason: `discovery issuer ${JSON.stringify(doc.issuer)} does not equal configured issuer ${JSON.stringify(c.issuer)}`,
        },
      });
    }
    let jwksUrl: URL;
    try {
      jwksUrl = new URL(doc.jwks_uri);
    } catch {
      throw new ExchangeError("keys_unavailable", "the cluster's signing keys are not available right now", {
        logDetail: { url: discoveryUrl, reason: "jwks_uri is not a URL" },
      });
    }
    if (jwksUrl.protocol !== "https:" && jwksUrl.protocol !== "http:") {
      throw new ExchangeError("keys_unavailable", "the cluster's signing keys are not available right now", {
        logDetail: { url: discoveryUrl, reason: "jwks_uri is not http(s)" },
      });
    }
    // Keys fetched over plain HTTP could be replaced on the way: never downgrade from an https discovery.
    const configured = new URL(discoveryUrl);
    if (
      (configured.protocol === "https:" || new URL(url).protocol === "https:") &&
      jwksUrl.protocol !== "https:"
    ) {
      throw new ExchangeError("keys_unavailable", "the cluster's signing keys are not available right now", {
        logDetail: {
          url: discoveryUrl,
          reason: "jwks_uri is http but discovery is https: downgrade refused",
        },
      });
    }
    // SSRF guard: a discovery document may only point at keys on the host the config names (the
    // configured discovery URL's, whatever redirects the discovery fetch followed).
    if (!c.allowCrossHostJwksUri && jwksUrl.host !== configured.host) {
      throw new ExchangeError("keys_unavailable", "the cluster's signing keys are not available right now", {
        logDetail: {
          url: discoveryUrl,
          reason: `jwks_uri host ${jwksUrl.host} differs from discovery host ${configured.host}; set jwksUri or allowCrossHostJwksUri`,
        },
      });
    }
    return jwksUrl.toString();
  }
}
