/**
 * Registry token minting (src/token/mint.ts) and signing keys (src/jose/signing-key.ts): header
 * `{alg, typ, kid, x5c}`, claims per distribution's token.go, `aud` a string, `nbf` 5 s in the past,
 * `exp` capped by the presented credential's `exp`, the key loaded from PEM files and checked.
 */
import { generateKeyPairSync, X509Certificate } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodeProtectedHeader, jwtVerify } from "jose";
import pino from "pino";
import { beforeAll, describe, expect, it } from "vitest";
import { buildApp } from "../../src/app.js";
import { ConfigError } from "../../src/errors.js";
import { libtrustKeyId } from "../../src/jose/kid.js";
import {
  algorithmFor,
  generateSigningKeyFiles,
  loadSigningKey,
  type SigningKey,
} from "../../src/jose/signing-key.js";
import { mintRegistryToken, NOT_BEFORE_SKEW_SECONDS } from "../../src/token/mint.js";
import { NOW, NOW_S } from "../helpers/clock.js";
import { thrownBy } from "../helpers/errors.js";
import { signingKeyFiles, testConfig } from "../helpers/fixtures.js";

let key: SigningKey;
beforeAll(async () => {
  const files = await signingKeyFiles();
  key = loadSigningKey(files.keyFile, files.certFile, "registries[0].signingKey");
});

function request(overrides: Partial<Parameters<typeof mintRegistryToken>[1]> = {}) {
  return {
    issuer: "registry-token-exchange",
    audience: "registry.test",
    subject: "system:serviceaccount:team-a:builder",
    access: [{ type: "repository", name: "team-a/app", actions: ["pull" as const, "push" as const] }],
    ttlSeconds: 300,
    notAfter: NOW_S + 3600,
    nowMs: NOW,
    ...overrides,
  };
}

describe("mintRegistryToken", () => {
  it("emits distribution's header and claims", async () => {
    const minted = await mintRegistryToken(key, request());
    const header = decodeProtectedHeader(minted.token);
    expect(header).toEqual({ alg: "ES256", typ: "JWT", kid: key.kid, x5c: key.x5c });
    const { payload } = await jwtVerify(minted.token, key.publicKey, { currentDate: new Date(NOW) });
    expect(payload).toEqual({
      iss: "registry-token-exchange",
      sub: "system:serviceaccount:team-a:builder",
      aud: "registry.test",
      iat: NOW_S,
      nbf: NOW_S - NOT_BEFORE_SKEW_SECONDS,
      exp: NOW_S + 300,
      jti: minted.jti,
      access: [{ type: "repository", name: "team-a/app", actions: ["pull", "push"] }],
    });
    expect(typeof payload.aud).toBe("string");
    expect(minted.jti).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(minted).toMatchObject({ issuedAt: NOW_S, expiresAt: NOW_S + 300 });
  });

  it("nbf is 5 s in the past", () => {
    expect(NOT_BEFORE_SKEW_SECONDS).toBe(5);
  });

  it("times are integer seconds even with a fractional clock", async () => {
    const minted = await mintRegistryToken(key, request({ nowMs: NOW + 999 }));
    const { payload } = await jwtVerify(minted.token, key.publicKey, { currentDate: new Date(NOW) });
    expect([payload.iat, payload.nbf, payload.exp]).toEqual([NOW_S, NOW_S - 5, NOW_S + 300]);
  });

  it("exp is capped by notAfter (the service-account token's exp)", async () => {
    const minted = await mintRegistryToken(key, request({ notAfter: NOW_S + 42 }));
    expect(minted.expiresAt).toBe(NOW_S + 42);
    const { payload } = await jwtVerify(minted.token, key.publicKey, { currentDate: new Date(NOW) });
    expect(payload.exp).toBe(NOW_S + 42);
  });

  it("keeps empty action lists (partial access is not an error)", async () => {
    const access = [{ type: "repository", name: "team-b/app", actions: [] }];
    const minted = await mintRegistryToken(key, request({ access }));
    const { payload } = await jwtVerify(minted.token, key.publicKey, { currentDate: new Date(NOW) });
    expect(payload.access).toEqual(access);
  });

  it("a fresh jti per token", async () => {
    const a = await mintRegistryToken(key, request());
    const b = await mintRegistryToken(key, request());
    expect(a.jti).not.toBe(b.jti);
  });

  it("the x5c leaf certificate's public key verifies the token", async () => {
    const minted = await mintRegistryToken(key, request());
    const leaf = new X509Certificate(Buffer.from(key.x5c[0]!, "base64"));
    await expect(
      jwtVerify(minted.token, leaf.publicKey, { currentDate: new Date(NOW) }),
    ).resolves.toBeTruthy();
    expect(libtrustKeyId(leaf.publicKey)).toBe(key.kid);
  });
});

describe("loadSigningKey", () => {
  it("loads the generated P-256 key and certificate", () => {
    expect(key.alg).toBe("ES256");
    expect(key.kid).toBe(libtrustKeyId(key.publicKey));
    expect(key.x5c).toHaveLength(1);
    expect(key.x5c[0]).toMatch(/^[A-Za-z0-9+/]+=*$/);
    expect(key.certNotAfter).toBeGreaterThan(Date.now());
  });

  it("refuses a certificate that belongs to another key", async () => {
    const a = await signingKeyFiles();
    const b = await generateSigningKeyFiles(mkdtempSync(join(tmpdir(), "rte-other-")));
    expect(() => loadSigningKey(a.keyFile, b.certFile, "registries[1].signingKey")).toThrow(
      new ConfigError([
        "registries[1].signingKey.certFile: the certificate's public key does not match keyFile",
      ]),
    );
  });

  it("refuses a key file that is not a PEM private key, with its dotted path", async () => {
    const dir = mkdtempSync(join(tmpdir(), "rte-bad-"));
    const bad = join(dir, "key.pem");
    writeFileSync(bad, "hello");
    const { certFile } = await signingKeyFiles();
    const caught = thrownBy(() => loadSigningKey(bad, certFile, "registries[0].signingKey"));
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as ConfigError).problems).toHaveLength(1);
    expect((caught as ConfigError).problems[0]).toMatch(
      /^registries\[0\]\.signingKey\.keyFile: not a readable PEM private key \(/,
    );
  });

  it("refuses a certificate file without a CERTIFICATE block", async () => {
    const dir = mkdtempSync(join(tmpdir(), "rte-bad-"));
    const bad = join(dir, "cert.pem");
    writeFileSync(bad, "no certificate here");
    const { keyFile } = await signingKeyFiles();
    expect(() => loadSigningKey(keyFile, bad, "registries[0].signingKey")).toThrow(
      new ConfigError([
        "registries[0].signingKey.certFile: not a readable PEM certificate (no CERTIFICATE block)",
      ]),
    );
  });

  it("refuses an Ed25519 key (distribution v2.8 cannot verify EdDSA)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "rte-ed-"));
    const file = join(dir, "key.pem");
    const { privateKey } = generateKeyPairSync("ed25519");
    writeFileSync(file, privateKey.export({ type: "pkcs8", format: "pem" }) as string);
    const { certFile } = await signingKeyFiles();
    expect(() => loadSigningKey(file, certFile, "registries[0].signingKey")).toThrow(
      new ConfigError([
        "registries[0].signingKey.keyFile: unsupported key type ed25519 (use EC P-256/P-384/P-521 or RSA >= 2048)",
      ]),
    );
  });
});

describe("algorithmFor", () => {
  it.each([
    ["EC P-256", () => generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey, "ES256"],
    ["EC P-384", () => generateKeyPairSync("ec", { namedCurve: "P-384" }).privateKey, "ES384"],
    ["EC P-521", () => generateKeyPairSync("ec", { namedCurve: "P-521" }).privateKey, "ES512"],
    ["RSA 2048", () => generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey, "RS256"],
  ])("%s -> %s", (_n, gen, alg) => {
    expect(algorithmFor(gen())).toBe(alg);
  });

  it.each([
    [
      "RSA 1024",
      () => generateKeyPairSync("rsa", { modulusLength: 1024 }).privateKey,
      "RSA key shorter than 2048 bits",
    ],
    [
      "secp256k1",
      () => generateKeyPairSync("ec", { namedCurve: "secp256k1" }).privateKey,
      "unsupported EC curve secp256k1",
    ],
    [
      "Ed25519",
      () => generateKeyPairSync("ed25519").privateKey,
      "unsupported key type ed25519 (use EC P-256/P-384/P-521 or RSA >= 2048)",
    ],
  ])("%s is refused", (_n, gen, message) => {
    expect(() => algorithmFor(gen())).toThrow(message);
  });
});

describe("registry keys as the service loads them (buildApp)", () => {
  it("reports every key that cannot be loaded, not only the first, with dotted paths", async () => {
    const good = await signingKeyFiles();
    const other = await generateSigningKeyFiles(mkdtempSync(join(tmpdir(), "rte-other-")));
    const config = await testConfig("http://127.0.0.1:9", {
      registries: [
        {
          service: "a.example",
          issuer: "rte",
          signingKey: { keyFile: good.keyFile, certFile: other.certFile },
        },
        {
          service: "b.example",
          issuer: "rte",
          signingKey: good,
          publishedKeys: [{ certFile: good.certFile, keyFile: other.keyFile }],
        },
      ],
    });
    const err = await buildApp(config, { logger: pino({ level: "silent" }) }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems).toEqual([
      "registries[0].signingKey.certFile: the certificate's public key does not match keyFile",
      expect.stringMatching(/^registries\[1\]\.publishedKeys\[0\]\./),
    ]);
  });
});
