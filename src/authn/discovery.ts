/**
 * Where a cluster's verification keys come from: OIDC discovery (OpenID Connect Discovery 1.0 §4: the
 * issuer's `/.well-known/openid-configuration`, whose `jwks_uri` names the JWKS), a configured `jwksUri`,
 * or a static `jwksFile`; fetched with the bounded outbound client of `authn/fetch.ts`.
 *
 * A discovery document is followed only when its `issuer` equals the configured one (§4.3), its
 * `jwks_uri` is http(s), not plain http behind an https discovery, and (unless `allowCrossHostJwksUri`)
 * on the configured discovery URL's host.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import type { Logger } from "pino";
import type { ClusterConfig } from "../config/schema.js";
import { JsonFetcher } from "./fetch.js";
import { parseJwks, type VerificationKey } from "./jwk.js";
import { keysUnavailable } from "./keys-unavailable.js";

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

/**
 * The outbound client for a cluster's discovery and JWKS (its `fetch` limits, `caFile`, and its
 * `bearerTokenFile` sent only to the origin of the discovery URL or `jwksUri`); `undefined` for a
 * `jwksFile` cluster, which fetches nothing.
 */
export function clusterFetcher(cluster: ClusterConfig): JsonFetcher | undefined {
  return cluster.jwksFile
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
}

/**
 * Reads a cluster's JWKS document: the `jwksFile`, or over `fetcher` from its `jwksUri` or the
 * `jwks_uri` of its discovery document.
 * @returns the document (unparsed JSON) and the `Cache-Control` max-age of a fetched one, seconds
 * @throws {RequestError} `keys_unavailable` (see `authn/keys-unavailable.ts`)
 */
async function readJwksDocument(
  cluster: ClusterConfig,
  fetcher: JsonFetcher | undefined,
): Promise<{ doc: unknown; maxAgeSeconds: number | undefined }> {
  if (cluster.jwksFile) {
    try {
      return { doc: JSON.parse(readFileSync(cluster.jwksFile, "utf8")), maxAgeSeconds: undefined };
    } catch (err) {
      throw keysUnavailable({
        file: cluster.jwksFile,
        reason: `cannot read JWKS file: ${(err as Error).message}`,
      });
    }
  }
  const fetched = await fetcher!.getJson(await jwksUriOf(cluster, fetcher!));
  return { doc: fetched.body, maxAgeSeconds: fetched.maxAgeSeconds };
}

async function jwksUriOf(c: ClusterConfig, fetcher: JsonFetcher): Promise<string> {
  if (c.jwksUri) return c.jwksUri;
  const discoveryUrl = c.discoveryUrl ?? discoveryUrlOf(c.issuer);
  const { body, url } = await fetcher.getJson(discoveryUrl);
  const refuse = (reason: string) => keysUnavailable({ url: discoveryUrl, reason });
  const doc = body as { issuer?: unknown; jwks_uri?: unknown } | null;
  if (!doc || typeof doc !== "object" || typeof doc.jwks_uri !== "string") {
    throw refuse("discovery document has no jwks_uri");
  }
  if (doc.issuer !== c.issuer) {
    throw refuse(
      `discovery issuer ${JSON.stringify(doc.issuer)} does not equal configured issuer ${JSON.stringify(c.issuer)}`,
    );
  }
  let jwksUrl: URL;
  try {
    jwksUrl = new URL(doc.jwks_uri);
  } catch {
    throw refuse("jwks_uri is not a URL");
  }
  if (jwksUrl.protocol !== "https:" && jwksUrl.protocol !== "http:") {
    throw refuse("jwks_uri is not http(s)");
  }
  // Keys fetched over plain HTTP could be replaced on the way: never downgrade from an https discovery.
  const configured = new URL(discoveryUrl);
  if (
    (configured.protocol === "https:" || new URL(url).protocol === "https:") &&
    jwksUrl.protocol !== "https:"
  ) {
    throw refuse("jwks_uri is http but discovery is https: downgrade refused");
  }
  // SSRF guard: a discovery document may only point at keys on the host the config names (the
  // configured discovery URL's, whatever redirects the discovery fetch followed).
  if (!c.allowCrossHostJwksUri && jwksUrl.host !== configured.host) {
    throw refuse(
      `jwks_uri host ${jwksUrl.host} differs from discovery host ${configured.host}; set jwksUri or allowCrossHostJwksUri`,
    );
  }
  return jwksUrl.toString();
}

/** One fetch of a cluster's JWKS: its usable keys, the document as fetched, and how long to trust it. */
export interface FetchedKeys {
  keys: VerificationKey[];
  /** The JWKS document (public keys only), as shared with other replicas. */
  raw: unknown;
  /** `Cache-Control: max-age` bounded by `jwks.minTtlSeconds` and `jwks.maxTtlSeconds`, seconds. */
  ttlSeconds: number;
}

/**
 * Reads the cluster's JWKS ({@link readJwksDocument}) and imports its keys; unusable keys are skipped with
 * a warning (`parseJwks`).
 * @throws {RequestError} `keys_unavailable` when it cannot be read, is not a JWKS, or has no usable key
 */
export async function fetchClusterKeys(
  c: ClusterConfig,
  fetcher: JsonFetcher | undefined,
  log: Logger,
): Promise<FetchedKeys> {
  const { doc, maxAgeSeconds } = await readJwksDocument(c, fetcher);
  let keys: VerificationKey[];
  try {
    keys = parseJwks(doc, (index, reason) =>
      log.warn({ cluster: c.name, index, reason }, "JWKS key skipped"),
    );
  } catch (err) {
    throw keysUnavailable({ reason: (err as Error).message });
  }
  if (keys.length === 0) throw keysUnavailable({ reason: "JWKS has no usable keys" });
  const ttlSeconds = Math.min(
    c.jwks.maxTtlSeconds,
    Math.max(c.jwks.minTtlSeconds, maxAgeSeconds ?? c.jwks.minTtlSeconds),
  );
  return { keys, raw: doc, ttlSeconds };
}
