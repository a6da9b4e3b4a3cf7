/**
 * Helpers for the server-level tests (real sockets): a Kubernetes-faithful issuer whose JWKS answers can
 * be held back on demand (to keep a token request in flight), a CA + server certificate for HTTPS tests,
 * and a config file on disk for child processes.
 */
import "reflect-metadata";
import { webcrypto } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as x509 from "@peculiar/x509";
import Fastify from "fastify";
import { stringify } from "yaml";
import { LocalIssuer } from "../../src/local/issuer.js";
import { AUDIENCE, SERVICE, STANDARD_RULES, signingKeyFiles } from "../helpers/fixtures.js";

/** An issuer server whose JWKS responses can be delayed. */
export interface SlowIssuer {
  issuer: LocalIssuer;
  url: string;
  /** Delay of every JWKS answer from now on, ms (0 = none). */
  delayMs: number;
  /** Resolves at the next JWKS request that is being held back. */
  nextHeldJwks: () => Promise<void>;
  close: () => Promise<void>;
}

/** Starts a {@link SlowIssuer} on 127.0.0.1. */
export async function startSlowIssuer(): Promise<SlowIssuer> {
  const app = Fastify({ logger: false, forceCloseConnections: true });
  const issuer = new LocalIssuer("http://127.0.0.1");
  let waiters: Array<() => void> = [];
  const state: SlowIssuer = {
    issuer,
    url: "",
    delayMs: 0,
    nextHeldJwks: () => new Promise<void>((resolve) => waiters.push(resolve)),
    close: () => app.close(),
  };
  app.addHook("onRequest", async (request) => {
    if (!request.url.endsWith("/jwks") || state.delayMs === 0) return;
    const held = waiters;
    waiters = [];
    for (const w of held) w();
    await new Promise((r) => setTimeout(r, state.delayMs));
  });
  issuer.register(app);
  await app.listen({ host: "127.0.0.1", port: 0 });
  const address = app.server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  state.url = `http://127.0.0.1:${port}`;
  issuer.issuer = state.url;
  return state;
}

/** Writes a config file for `issuerUrl` (standard test policy and signing key) and returns its path. */
export async function writeConfigFile(
  issuerUrl: string,
  server: Record<string, unknown>,
  extra: Record<string, unknown> = {},
): Promise<string> {
  const keys = await signingKeyFiles();
  const dir = mkdtempSync(join(tmpdir(), "rte-server-"));
  const file = join(dir, "config.yaml");
  writeFileSync(
    file,
    stringify({
      server,
      logging: { level: "info" },
      clusters: [{ name: "test", issuer: issuerUrl, audiences: [AUDIENCE] }],
      registries: [{ service: SERVICE, issuer: "registry-token-exchange", signingKey: keys }],
      policy: { rules: STANDARD_RULES },
      ...extra,
    }),
  );
  return file;
}

/** A CA and a server certificate for `127.0.0.1` signed by it, as PEM files. */
export interface TestPki {
  caFile: string;
  caPem: string;
  certFile: string;
  keyFile: string;
}

function pem(label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der)
    .toString("base64")
    .replace(/(.{64})/g, "$1\n");
  return `-----BEGIN ${label}-----\n${b64.trimEnd()}\n-----END ${label}-----\n`;
}

/** Generates a P-256 CA and a server certificate with SAN `IP:127.0.0.1` and `DNS:localhost`. */
export async function generateTestPki(): Promise<TestPki> {
  x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
  const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const subtle = webcrypto.subtle;
  const caKeys = (await subtle.generateKey(alg, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  const now = Date.now();
  const notBefore = new Date(now - 60_000);
  const notAfter = new Date(now + 24 * 3600 * 1000);
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: "01",
    name: "CN=registry-token-exchange test CA",
    notBefore,
    notAfter,
    signingAlgorithm: alg,
    keys: caKeys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey),
    ],
  });
  const serverKeys = (await subtle.generateKey(alg, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: "02",
    subject: "CN=127.0.0.1",
    issuer: ca.subject,
    notBefore,
    notAfter,
    signingAlgorithm: alg,
    publicKey: serverKeys.publicKey,
    signingKey: caKeys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
      new x509.SubjectAlternativeNameExtension([
        { type: "ip", value: "127.0.0.1" },
        { type: "dns", value: "localhost" },
      ]),
      await x509.AuthorityKeyIdentifierExtension.create(caKeys.publicKey),
    ],
  });
  const dir = mkdtempSync(join(tmpdir(), "rte-pki-"));
  const caPem = ca.toString("pem");
  const files = {
    caFile: join(dir, "ca.pem"),
    certFile: join(dir, "server.pem"),
    keyFile: join(dir, "server-key.pem"),
  };
  writeFileSync(files.caFile, caPem);
  writeFileSync(files.certFile, leaf.toString("pem"));
  writeFileSync(files.keyFile, pem("PRIVATE KEY", await subtle.exportKey("pkcs8", serverKeys.privateKey)), {
    mode: 0o600,
  });
  return { ...files, caPem };
}
