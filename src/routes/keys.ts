/**
 * `GET /.well-known/jwks.json`: the public keys this service signs registry tokens with (RFC 7517), for
 * distribution v3's `auth.token.jwks` option: every registry's active signing key and, during a key
 * rotation, its `publishedKeys` (the next key before the switch, the previous one after it). Each key
 * carries the same `kid` as the token headers and its certificate chain as `x5c`.
 */
import type { FastifyInstance } from "fastify";
import type { PublishedKey } from "../jose/signing-key.js";

/** Builds the JWKS document for a set of signing keys (deduplicated by `kid`). */
function publicJwks(keys: Iterable<PublishedKey>): { keys: Array<Record<string, unknown>> } {
  const byKid = new Map<string, Record<string, unknown>>();
  for (const k of keys) {
    if (byKid.has(k.kid)) continue;
    const jwk = k.publicKey.export({ format: "jwk" }) as Record<string, unknown>;
    byKid.set(k.kid, { ...jwk, kid: k.kid, alg: k.alg, use: "sig", x5c: k.x5c });
  }
  return { keys: [...byKid.values()] };
}

/**
 * Registers the JWKS route.
 * @param keys the published keys of the config version in force (read per request: it follows reloads)
 */
export function registerKeyRoutes(app: FastifyInstance, keys: () => Iterable<PublishedKey>): void {
  app.get("/.well-known/jwks.json", async (_request, reply) =>
    reply
      .type("application/jwk-set+json")
      .header("cache-control", "public, max-age=300")
      .send(publicJwks(keys())),
  );
}
