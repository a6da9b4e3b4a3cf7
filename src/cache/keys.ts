/**
 * Every cache key name this service writes, in one place. Names are relative to the store: the Redis
 * store puts `cache.keyPrefix` in front of each (`RedisStore`). A name that derives from a secret (a
 * presented credential, a reviewed token, a trust source) carries an HMAC of it made with the service
 * secret ({@link CacheSealer.key}), so a Redis reader can neither test guesses nor link an entry to a
 * credential; names made of configuration only (a cluster name) hide nothing.
 *
 * | name                                   | value (sealed unless said)                  | written by                  |
 * | -------------------------------------- | ------------------------------------------- | --------------------------- |
 * | `id:<HMAC credential>:<scope hash>`    | verified identity, sealed to the credential | realm (identity cache)      |
 * | `tok:<HMAC identity+grant+kid>`        | issued registry token                       | realm (token reuse)         |
 * | `jwks:<cluster>:<source id>`           | a cluster's key set                         | authn (shared key sets)     |
 * | `jwks-lock:<cluster>:<source id>`      | fetch lock, plain pid                       | authn (shared key sets)     |
 * | `jwks-unknown:<cluster>:<HMAC source+kid>` | unknown-`kid` marker                    | authn (shared key sets)     |
 * | `rv:<HMAC token>`                      | TokenReview answer                          | authn (TokenReview cache)   |
 * | `ksa:<HMAC cluster/namespace/name>`    | ServiceAccount read                         | authn (TokenReview cache)   |
 * | `rl:sa:<cluster>/<namespace>/<name>`, `rl:ip:<address>` | request count, plain | rate limit (Redis directly) |
 */
import { createHash } from "node:crypto";
import type { CacheSealer } from "./seal.js";

/**
 * Hashes a secret (token, password) into a cache key component, for in-process maps only: hex SHA-256,
 * no key. Names written to a shared store use {@link CacheSealer.key} instead.
 */
export function cacheKeyHash(secret: string): string {
  return createHash("sha256").update(secret).digest("hex");
}

/**
 * The HMAC that stands for a presented credential in identity entry names (and, in process, in the map of
 * rate-limit subjects): {@link CacheSealer.key} with purpose `identity`, 64 hex characters.
 */
export function credentialName(sealer: CacheSealer, credential: string): string {
  return sealer.key("identity", credential);
}

/**
 * Name of a cached verified identity.
 * @param name {@link credentialName} of the credential
 * @param scopeKey hash of the requested scope and the trust configuration (16 hex characters)
 */
export function identityKey(name: string, scopeKey: string): string {
  return `id:${name}:${scopeKey}`;
}

/**
 * Name of an issued registry token kept for reuse.
 * @param grant JSON of everything the token depends on (identity, registry, granted access, key ID)
 */
export function issuedTokenKey(sealer: CacheSealer, grant: string): string {
  return `tok:${sealer.key("token", grant)}`;
}

/** The part of a shared key set's names that stands for its trust source (32 hex characters). */
export function keySetSourceId(sealer: CacheSealer, source: string): string {
  return sealer.key("jwks-source", source).slice(0, 32);
}

/** Name of a cluster's shared key set. */
export function keySetKey(cluster: string, sourceId: string): string {
  return `jwks:${cluster}:${sourceId}`;
}

/** Name of the lock that lets one replica fetch a cluster's key set while the others wait. */
export function keySetFetchLockKey(cluster: string, sourceId: string): string {
  return `jwks-lock:${cluster}:${sourceId}`;
}

/** Name of the marker that a `kid` was looked for at a trust source and not found. */
export function unknownKidKey(sealer: CacheSealer, cluster: string, source: string, kid: string): string {
  return `jwks-unknown:${cluster}:${sealer.key("jwks-unknown", `${source}\u0000${kid}`)}`;
}

/** Name of a cached TokenReview answer for `token`. */
export function reviewKey(sealer: CacheSealer, token: string): string {
  return `rv:${sealer.key("review", token)}`;
}

/** Name of a cached ServiceAccount read; `name` is `<cluster>/<namespace>/<service account>`. */
export function serviceAccountKey(sealer: CacheSealer, name: string): string {
  return `ksa:${sealer.key("serviceaccount", name)}`;
}

/** Rate-limit subject of a service account (also what the limiter's `max` recognises by its `sa:`). */
export function serviceAccountSubject(cluster: string, namespace: string, serviceAccount: string): string {
  return `sa:${cluster}/${namespace}/${serviceAccount}`;
}

/** Rate-limit subject of a client address. */
export function addressSubject(ip: string): string {
  return `ip:${ip}`;
}

/** Whether a rate-limit subject is a service account's ({@link serviceAccountSubject}). */
export function isServiceAccountSubject(subject: string): boolean {
  return subject.startsWith("sa:");
}

/** Name of a rate-limit counter in Redis; `prefix` is `cache.keyPrefix` (the limiter bypasses the store). */
export function rateLimitKey(prefix: string, subject: string): string {
  return `${prefix}rl:${subject}`;
}
