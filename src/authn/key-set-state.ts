/**
 * The state a cluster's key set (`ClusterKeySet`, `authn/jwks.ts`) keeps and reports: a loaded set, its
 * health, and what it depends on.
 */
import type { Logger } from "pino";
import type { CacheSealer } from "../cache/seal.js";
import type { CacheStore } from "../cache/store.js";
import type { VerificationKey } from "./jwk.js";

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

/** Dependencies of a `ClusterKeySet` (`authn/jwks.ts`). */
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

/** A key set as loaded (fetched, read from a file or adopted from another replica). */
export interface Loaded {
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
  /** The `ClusterKeySet.invalidate` epoch the set was loaded in; an older one does not count. */
  epoch: number;
}
