/**
 * Signing keys for minted registry tokens: loading a PEM key + certificate, checking they belong
 * together, choosing the JWS algorithm, and generating a key + self-signed certificate for local mode.
 *
 * Why a certificate: distribution v2.8 trusts token keys only through its `rootcertbundle`; it verifies the
 * `x5c` chain or looks the libtrust `kid` up among the bundle's certificates (distribution `registry/auth/token/token.go`, docs/spec/auth/jwt.md).
 */
import { createPrivateKey, createPublicKey, type KeyObject, webcrypto, X509Certificate } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigError } from "../errors.js";
import { libtrustKeyId } from "./kid.js";

/** JWS algorithms distribution v2.8 and v3 both accept for token signatures. */
export type SigningAlgorithm = "ES256" | "ES384" | "ES512" | "RS256";

/**
 * A key this service publishes in `/.well-known/jwks.json` and accepts its own derived credentials
 * (exchange credentials, refresh tokens) from: the active signing key, and during a rotation the next
 * and the previous one (`registries[].publishedKeys`).
 */
export interface PublishedKey {
  /** JWS algorithm, derived from the key type. */
  alg: SigningAlgorithm;
  /** libtrust key ID of the public key (what v2.8 matches against its rootcertbundle). */
  kid: string;
  /** The public key. */
  publicKey: KeyObject;
  /** `x5c`: standard base64 DER certificates, leaf first (RFC 7515 §4.1.6). */
  x5c: string[];
  /** The leaf certificate's `notAfter`, epoch milliseconds. */
  certNotAfter: number;
}

/** A loaded signing key with everything a token header and the JWKS need. */
export interface SigningKey extends PublishedKey {
  /** The private key. */
  privateKey: KeyObject;
}

/**
 * Picks the JWS algorithm for a private key.
 * @throws {Error} for key types neither distribution version accepts (Ed25519, RSA < 2048 bits, ...)
 */
export function algorithmFor(key: KeyObject): SigningAlgorithm {
  const t = key.asymmetricKeyType;
  if (t === "ec") {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === "prime256v1" || curve === "P-256") return "ES256";
    if (curve === "secp384r1" || curve === "P-384") return "ES384";
    if (curve === "secp521r1" || curve === "P-521") return "ES512";
    throw new Error(`unsupported EC curve ${curve}`);
  }
  if (t === "rsa") {
    if ((key.asymmetricKeyDetails?.modulusLength ?? 0) < 2048)
      throw new Error("RSA key shorter than 2048 bits");
    return "RS256";
  }
  throw new Error(`unsupported key type ${t} (use EC P-256/P-384/P-521 or RSA >= 2048)`);
}

/**
 * Reads a PEM certificate chain (leaf first).
 * @throws {ConfigError} `<where>.certFile: not a readable PEM certificate (...)`
 */
function readCertificateChain(certFile: string, where: string): X509Certificate[] {
  try {
    const blocks = pemCertificates(readFileSync(certFile, "utf8"));
    if (blocks.length === 0) throw new Error("no CERTIFICATE block");
    return blocks.map((b) => new X509Certificate(b));
  } catch (err) {
    throw new ConfigError([`${where}.certFile: not a readable PEM certificate (${(err as Error).message})`]);
  }
}

/** Splits a PEM bundle into its CERTIFICATE blocks. */
function pemCertificates(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

/**
 * Loads a signing key and its certificate (chain, leaf first).
 * @param keyFile PEM private key (PKCS#8, SEC1 or PKCS#1)
 * @param certFile PEM certificate, optionally followed by intermediates
 * @param where dotted config path for messages, e.g. `registries[0].signingKey`
 * @throws {ConfigError} when a file is unreadable, not PEM, of an unsupported type, or the certificate's
 *   public key is not the private key's
 */
export function loadSigningKey(keyFile: string, certFile: string, where: string): SigningKey {
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(readFileSync(keyFile));
  } catch (err) {
    throw new ConfigError([`${where}.keyFile: not a readable PEM private key (${(err as Error).message})`]);
  }
  let alg: SigningAlgorithm;
  try {
    alg = algorithmFor(privateKey);
  } catch (err) {
    throw new ConfigError([`${where}.keyFile: ${(err as Error).message}`]);
  }
  const certs = readCertificateChain(certFile, where);
  const leaf = certs[0]!;
  const publicKey = createPublicKey(privateKey);
  const spki = (k: KeyObject) => k.export({ type: "spki", format: "der" });
  if (!spki(leaf.publicKey).equals(spki(publicKey))) {
    throw new ConfigError([`${where}.certFile: the certificate's public key does not match keyFile`]);
  }
  return {
    alg,
    kid: libtrustKeyId(publicKey),
    privateKey,
    publicKey,
    x5c: certs.map((c) => c.raw.toString("base64")),
    certNotAfter: Date.parse(leaf.validTo),
  };
}

/**
 * Loads a published (not signing) key: its certificate (chain, leaf first) and, optionally, its private
 * key, which is then checked to belong to the certificate but never used.
 * @param certFile PEM certificate, optionally followed by intermediates
 * @param keyFile PEM private key, if the operator still has it at hand (the next key of a rotation)
 * @param where dotted config path for messages, e.g. `registries[0].publishedKeys[1]`
 * @throws {ConfigError} when a file is unreadable, not PEM, of an unsupported type, or the key and
 *   certificate do not belong together
 */
function loadPublishedKey(certFile: string, keyFile: string | undefined, where: string): PublishedKey {
  if (keyFile !== undefined) {
    const { privateKey: _unused, ...published } = loadSigningKey(keyFile, certFile, where);
    return published;
  }
  const certs = readCertificateChain(certFile, where);
  const leaf = certs[0]!;
  const publicKey = leaf.publicKey;
  let alg: SigningAlgorithm;
  try {
    alg = algorithmFor(publicKey);
  } catch (err) {
    throw new ConfigError([`${where}.certFile: ${(err as Error).message}`]);
  }
  return {
    alg,
    kid: libtrustKeyId(publicKey),
    publicKey,
    x5c: certs.map((c) => c.raw.toString("base64")),
    certNotAfter: Date.parse(leaf.validTo),
  };
}

/**
 * Generates an ECDSA P-256 key and a self-signed certificate (10 years) and writes them as PEM files.
 * Used by local mode and tests; production keys come from operators.
 * @param dir folder to write `signing-key.pem` and `signing-cert.pem` into (created if missing)
 * @param commonName the certificate subject CN
 * @returns the two file paths
 */
export async function generateSigningKeyFiles(
  dir: string,
  commonName = "registry-token-exchange",
): Promise<{ keyFile: string; certFile: string }> {
  mkdirSync(dir, { recursive: true });
  // Loaded lazily: only key generation needs an X.509 writer (and its reflect-metadata polyfill).
  await import("reflect-metadata");
  const x509 = await import("@peculiar/x509");
  x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
  const algorithm = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const keys = (await webcrypto.subtle.generateKey(algorithm, true, [
    "sign",
    "verify",
  ])) as webcrypto.CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: Buffer.from(webcrypto.getRandomValues(new Uint8Array(8)))
      .toString("hex")
      .replace(/^[89a-f]/, "1"),
    name: `CN=${commonName}`,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 10 * 365 * 24 * 3600 * 1000),
    signingAlgorithm: algorithm,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    ],
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey("pkcs8", keys.privateKey));
  const keyPem = createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" }).export({
    type: "pkcs8",
    format: "pem",
  });
  const keyFile = join(dir, "signing-key.pem");
  const certFile = join(dir, "signing-cert.pem");
  writeFileSync(keyFile, keyPem, { mode: 0o600 });
  // A PEM file ends with a newline: a rotation bundle is made with `cat old.pem new.pem`, and without it
  // the two certificates run together ("-----END CERTIFICATE----------BEGIN...") and distribution refuses
  // the whole bundle ("token auth requires at least one token signing root certificate").
  writeFileSync(certFile, `${cert.toString("pem").trimEnd()}\n`, { mode: 0o644 });
  return { keyFile, certFile };
}

/** What {@link loadRegistryKeys} needs of a registry's config (`registries[]`). */
export interface RegistryKeyFiles {
  service: string;
  signingKey: { keyFile: string; certFile: string };
  publishedKeys?: ReadonlyArray<{ certFile: string; keyFile?: string | undefined }> | undefined;
}

/** Every registry's keys (see {@link loadRegistryKeys}). */
export interface RegistryKeys {
  /** The signing key per registry `service`. */
  signing: Map<string, SigningKey>;
  /** Per `service`, every key accepted for its own credentials: the signing key first, then `publishedKeys` (deduplicated by `kid`). */
  published: Map<string, PublishedKey[]>;
  /** One `registries[i]...: message` line per key that could not be loaded. */
  problems: string[];
}

/**
 * Loads the signing key and the published keys of every registry, the one way the service (`runtime.ts`)
 * and the CLI (`check-config`, `explain`) read them; every key that cannot be loaded is a problem, not
 * only the first.
 * @param skipFiles files already reported unreadable: a key naming one is skipped, not reported again
 * @param onKey called for each key loaded, in config order (the CLI prints a line per key)
 */
export function loadRegistryKeys(
  registries: readonly RegistryKeyFiles[],
  skipFiles: ReadonlySet<string> = new Set(),
  onKey?: (index: number, service: string, kind: "signing" | "published", key: PublishedKey) => void,
): RegistryKeys {
  const out: RegistryKeys = { signing: new Map(), published: new Map(), problems: [] };
  const attempt = <T>(load: () => T): T | undefined => {
    try {
      return load();
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      out.problems.push(...err.problems);
      return undefined;
    }
  };
  registries.forEach((r, i) => {
    const accepted: PublishedKey[] = [];
    const { keyFile, certFile } = r.signingKey;
    if (!skipFiles.has(keyFile) && !skipFiles.has(certFile)) {
      const key = attempt(() => loadSigningKey(keyFile, certFile, `registries[${i}].signingKey`));
      if (key) {
        out.signing.set(r.service, key);
        accepted.push(key);
        onKey?.(i, r.service, "signing", key);
      }
    }
    r.publishedKeys?.forEach((p, j) => {
      if (skipFiles.has(p.keyFile ?? "") || skipFiles.has(p.certFile)) return;
      const key = attempt(() =>
        loadPublishedKey(p.certFile, p.keyFile, `registries[${i}].publishedKeys[${j}]`),
      );
      if (!key) return;
      onKey?.(i, r.service, "published", key);
      if (!accepted.some((k) => k.kid === key.kid)) accepted.push(key);
    });
    out.published.set(r.service, accepted);
  });
  return out;
}
