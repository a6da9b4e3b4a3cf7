/** Counters of the realm's caches since start. */

/** Cache counters, for metrics and the benchmark. */
export interface RealmStats {
  identityHits: number;
  identityMisses: number;
  tokenHits: number;
  tokenMisses: number;
}
