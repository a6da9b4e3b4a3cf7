/**
 * Sealing of cache entries, so that what the cache holds is worth nothing to someone who can read or
 * write the cache (Redis) but does not hold the service's secret:
 * - {@link CacheSealer.key} names an entry after a secret (a presented credential) with an HMAC, so a
 *   reader of key names cannot test guesses or link an entry to a credential without the secret;
 * - {@link CacheSealer.seal} encrypts and authenticates a value with AES-256-GCM (NIST SP 800-38D), bound
 *   to its key name (as additional data), so an entry copied under another name, edited or written by
 *   someone without the secret fails {@link CacheSealer.open} and is treated as a miss;
 * - with a `credential`, the encryption key is also derived from that credential: only a caller who
 *   presents it again can read the entry.
 *
 * Key derivation: HKDF-SHA256 (RFC 5869) from the service secret, one sub-key per purpose.
 */
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes } from "node:crypto";

/** Version prefix of sealed values (a format change makes old entries misses). */
const FORMAT = "s1.";
const IV_BYTES = 12;
const TAG_BYTES = 16;
const INFO = "registry-token-exchange cache v1";

/** Seals and opens cache entries with a service-side secret. See the module doc. */
export class CacheSealer {
  readonly #macKey: Buffer;
  readonly #encKey: Buffer;

  /**
   * @param secret the service-side secret: at least 32 bytes of key material shared by every replica
   *   that shares the cache (see {@link CacheSealer.fromKeyMaterial})
   * @throws {TypeError} when the secret is shorter than 32 bytes
   */
  constructor(secret: Uint8Array) {
    if (secret.length < 32) throw new TypeError("cache sealing secret must be at least 32 bytes");
    this.#macKey = Buffer.from(hkdfSync("sha256", secret, Buffer.alloc(0), `${INFO} mac`, 32));
    this.#encKey = Buffer.from(hkdfSync("sha256", secret, Buffer.alloc(0), `${INFO} enc`, 32));
  }

  /**
   * A sealer whose secret is derived from `parts` (e.g. every registry signing key's private DER): the
   * replicas that share a cache share these, and whoever holds them can mint tokens anyway.
   */
  static fromKeyMaterial(parts: readonly Uint8Array[]): CacheSealer {
    const h = createHmac("sha256", INFO);
    for (const p of parts) {
      h.update(String(p.length));
      h.update(":");
      h.update(p);
    }
    return new CacheSealer(h.digest());
  }

  /** A sealer with a random secret: entries are readable only by this process (in-memory caches). */
  static ephemeral(): CacheSealer {
    return new CacheSealer(randomBytes(32));
  }

  /**
   * Cache key component for a secret value (a credential): hex HMAC-SHA256 of `purpose` and `secret`,
   * 64 characters. Without the service secret it cannot be computed from a guess nor linked to the value.
   */
  key(purpose: string, secret: string): string {
    return createHmac("sha256", this.#macKey).update(purpose).update("\u0000").update(secret).digest("hex");
  }

  /**
   * Encrypts `value` for storage under `name` (the full cache key).
   * @param credential when given, the entry can only be opened by presenting the same credential
   * @returns `s1.<base64url iv|ciphertext|tag>`
   */
  seal(name: string, value: string, credential?: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv("aes-256-gcm", this.#entryKey(credential), iv);
    cipher.setAAD(Buffer.from(name));
    const body = Buffer.concat([cipher.update(value, "utf8"), cipher.final()]);
    return FORMAT + Buffer.concat([iv, body, cipher.getAuthTag()]).toString("base64url");
  }

  /**
   * Decrypts and authenticates what {@link seal} wrote under `name`.
   * @returns the value, or `undefined` when the entry is absent, malformed, was written under another
   *   name, with another secret or for another credential, or was altered
   */
  open(name: string, sealed: string | undefined, credential?: string): string | undefined {
    if (sealed === undefined || !sealed.startsWith(FORMAT)) return undefined;
    const raw = Buffer.from(sealed.slice(FORMAT.length), "base64url");
    if (raw.length < IV_BYTES + TAG_BYTES) return undefined;
    try {
      const decipher = createDecipheriv("aes-256-gcm", this.#entryKey(credential), raw.subarray(0, IV_BYTES));
      decipher.setAAD(Buffer.from(name));
      decipher.setAuthTag(raw.subarray(raw.length - TAG_BYTES));
      return Buffer.concat([
        decipher.update(raw.subarray(IV_BYTES, raw.length - TAG_BYTES)),
        decipher.final(),
      ]).toString("utf8");
    } catch {
      return undefined;
    }
  }

  #entryKey(credential: string | undefined): Buffer {
    if (credential === undefined) return this.#encKey;
    return createHmac("sha256", this.#encKey).update(credential).digest();
  }
}
