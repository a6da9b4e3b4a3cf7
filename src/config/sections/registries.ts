/** `registries[]`: the registries this service is the token realm for, and their signing keys. */
import { z } from "zod";
import { nonEmpty } from "./common.js";

/** A signing key pair for minted registry tokens: PEM private key + PEM certificate (or chain). */
const signingKeySchema = z
  .object({
    keyFile: nonEmpty,
    certFile: nonEmpty,
  })
  .strict();

/**
 * A key published next to the active signing key during a rotation (the next key, or the previous one):
 * its certificate, and optionally its private key (checked to match, never used to sign).
 */
const publishedKeySchema = z
  .object({
    certFile: nonEmpty,
    keyFile: nonEmpty.optional(),
  })
  .strict();

/**
 * A registry host as it appears in an image reference (`host[:port]`): a lower-case DNS name, an IPv4
 * address or a bracketed IPv6 address, optionally with a port; no scheme, no path.
 */
const imageHost = z
  .string()
  .regex(
    /^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?$/,
    "must be a lower-case registry host as in image references: host[:port], no scheme or path",
  );

/** Prefix of the `iss`/`aud` of credentials this service derives (exchange credentials, refresh tokens). */
export const RESERVED_URN_PREFIX = "urn:registry-token-exchange:";
/** One registry this service is the token realm for. */
export const registrySchema = z
  .object({
    service: nonEmpty,
    issuer: nonEmpty,
    tokenTtlSeconds: z
      .number()
      .int()
      .min(60, "must be >= 60 (clients assume at least 60 s)")
      .max(86_400)
      .default(300),
    signingKey: signingKeySchema,
    /**
     * Keys published in `/.well-known/jwks.json` besides `signingKey` and accepted for this service's own
     * exchange credentials and refresh tokens, but never used to sign: the next key before a switch,
     * the previous one until what it signed has expired.
     */
    publishedKeys: z.array(publishedKeySchema).max(8).optional(),
    /** Optional: a token must carry one of these audiences to be used at this registry. */
    audiences: z.array(nonEmpty).min(1).optional(),
    /**
     * Audiences a service-account token must carry at `/v1/credential-provider` for this registry, and
     * the exchange credentials minted from it at `/token`. Default: `credentialProvider.audiences`, except
     * for a registry with `audiences`, which is then not served at `/v1/credential-provider` at all.
     */
    credentialProviderAudiences: z.array(nonEmpty).min(1).optional(),
    /**
     * Longest lifetime of a refresh token, seconds, whatever the credential it is derived from says (it
     * is also cut to that credential's expiry).
     */
    refreshTokenMaxTtlSeconds: z
      .number()
      .int()
      .min(120, "must be >= 120 (a refresh token needs 60 s left at /token)")
      .max(7 * 86_400)
      .default(3600),
    /**
     * Image registry hosts (`host[:port]`, as in image references) this `service` serves, for
     * `/v1/credential-provider`; default: the `service` itself.
     */
    hosts: z.array(imageHost).min(1).optional(),
  })
  .strict();
