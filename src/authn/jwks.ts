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
 * - when a fetch fails, the last good key set keeps serving for up to `maxStaleSeconds`.
 */
import { createPublicKey, type JsonWebKeyInput, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import type { Logger } from "pino";
import { type CacheStore, secretKey } from "../cache/store.js";
import type { ClusterConfig } from "../config/schema.js";
import { ExchangeError } from "../errors.js";
import { JsonFetcher } from "./fetch.js";
import { kubernetesKeyId } from "./kid.js";

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
}

/** What replicas share per cluster in the Redis tier. */
interface SharedKeySet {
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
  }

  /**
   * Whether the key with `fingerprint` (see {@link VerificationKey.fingerprint}) is in the key set now
   * loaded (possibly stale). Never fetches: a key removed from the cluster's JWKS stops counting as soon
   * as a refresh has loaded the new set.
   */
  hasKey(fingerprint: string): boolean {
    return this.#loaded?.keys.some((k) => k.fingerprint === fingerprint) ?? false;
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
    if (this.#inflight !== undefined || (l !== undefined && now < l.expiresAt) || now < this.#nextRetryAt) {
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
      if (this.#deps.shared && (await this.#deps.shared.get(this.#unknownKey(kid))) !== undefined) return [];
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
        await this.#deps.shared?.set(this.#unknownKey(kid), "1", ttlMs);
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
    if (now < this.#nextRetryAt && this.#lastError !== undefined) {
      throw new ExchangeError("keys_unavailable", "the cluster's signing keys are not available right now", {
        logDetail: { cluster: this.cluster.name, reason: this.#lastError },
        retryAfterSeconds: Math.max(1, Math.ceil((this.#nextRetryAt - now) / 1000)),
      });
    }
    return this.refresh();
  }

  #unknownKey(kid: string): string {
    return `jwks-unknown:${this.cluster.name}:${secretKey(kid).slice(0, 32)}`;
  }

  /**
   * Fetches, or adopts what another replica fetched (single-flight across replicas via a short lock).
   * `since`: the earliest `requestedAt` to adopt (see {@link refresh}). Replicas' clocks are compared: a
   * lock loser whose clock runs ahead of the winner's may not recognise the winner's set as recent enough
   * and fetches itself after the wait (one more fetch, never a wrong answer).
   */
  async #load(since: number): Promise<Loaded> {
    const shared = this.#deps.shared;
    if (!shared) return this.#fetch();
    const before = this.#loaded?.fetchedAt ?? 0;
    const adopted = await this.#adoptShared(before, since);
    if (adopted) return adopted;
    const lockKey = `jwks-lock:${this.cluster.name}`;
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
        jwks: loaded.raw,
        requestedAt: loaded.requestedAt,
        fetchedAt: loaded.fetchedAt,
        expiresAt: loaded.expiresAt,
      };
      await shared.set(
        `jwks:${this.cluster.name}`,
        JSON.stringify(doc),
        this.cluster.jwks.maxStaleSeconds * 1000 || 1,
      );
      return loaded;
    } finally {
      if (won) await shared.delete(lockKey);
    }
  }

  /**
   * Adopts the shared key set when it is newer than `after` (its `fetchedAt`), still fresh, and (with
   * `since` > 0) requested at or after `since`.
   */
  async #adoptShared(after: number, since: number): Promise<Loaded | undefined> {
    const text = await this.#deps.shared?.get(`jwks:${this.cluster.name}`);
    if (text === undefined) return undefined;
    let doc: SharedKeySet;
    try {
      doc = JSON.parse(text) as SharedKeySet;
    } catch {
      return undefined;
    }
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
    };
    this.#accept(loaded);
    return loaded;
  }

  #accept(loaded: Loaded): void {
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
      const loaded: Loaded = { keys, raw: doc, requestedAt, fetchedAt: now, expiresAt: now + ttl * 1000 };
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
