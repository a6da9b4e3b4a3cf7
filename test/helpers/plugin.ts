/**
 * Running the two credential provider plugins the way kubelet does: a child process with the
 * `CredentialProviderRequest` on stdin, stdout and stderr collected, the exit code checked. Plus a live
 * exchange service (issuer + `startServer`, the CLI's code path) configured for the credential provider,
 * and a TLS certificate for 127.0.0.1 (the `--ca-file` tests).
 */
import { spawn } from "node:child_process";
import { webcrypto } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import pino from "pino";
import { type LocalIssuer, startLocalIssuerServer } from "../../src/local/issuer.js";
import { type RunningServer, startServer } from "../../src/server.js";
import { CP_AUDIENCE, credentialProviderOverrides } from "./credential-provider.js";
import { testConfig } from "./fixtures.js";

/** The repository root. */
export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
/** The POSIX sh plugin. */
const SH_PLUGIN = join(REPO_ROOT, "deploy/kubelet/registry-token-exchange-credential-provider.sh");

/** Which plugin: the Node one (`src/bin.ts credential-provider` via tsx) or the sh + curl one. */
export type PluginKind = "node" | "sh";

/** What a plugin run produced. */
export interface PluginRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Wall-clock duration, ms. */
  ms: number;
}

/** The command line for `kind` with plugin `args`. */
function pluginCommand(kind: PluginKind, args: readonly string[]): [string, string[]] {
  if (kind === "sh") return ["sh", [SH_PLUGIN, ...args]];
  return [
    process.execPath,
    ["--import", "tsx", join(REPO_ROOT, "src/bin.ts"), "credential-provider", ...args],
  ];
}

/**
 * Runs a plugin with `stdin` as its standard input; kills it (whole group) after `timeoutMs`.
 * Never throws for a non-zero exit.
 */
export function runPlugin(
  kind: PluginKind,
  args: readonly string[],
  stdin: string,
  timeoutMs = 90_000,
): Promise<PluginRun> {
  const [command, argv] = pluginCommand(kind, args);
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(command, argv, {
      cwd: REPO_ROOT,
      detached: true,
      stdio: ["pipe", "pipe", "pipe"],
      env: { ...process.env, NO_PROXY: "127.0.0.1,localhost", no_proxy: "127.0.0.1,localhost" },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    const timer = setTimeout(() => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }, timeoutMs);
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - started });
    });
    child.stdin.on("error", () => {});
    child.stdin.end(stdin);
  });
}

/** A live exchange service with `/v1/credential-provider` enabled. */
export interface LiveExchange {
  url: string;
  issuer: LocalIssuer;
  server: RunningServer;
  /** A pod-bound token with the credential-provider audience. */
  podToken: (namespace: string, serviceAccount?: string) => Promise<string>;
  close: () => Promise<void>;
}

/**
 * Starts an issuer and the exchange service (credential provider on, registry hosts `hosts`).
 * @param hosts image hosts mapped to the test registry `registry.test`
 */
export async function startLiveExchange(
  hosts: string[] = ["registry.test:5000"],
  options: { tls?: { certFile: string; keyFile: string } } = {},
): Promise<LiveExchange> {
  const issuerServer = await startLocalIssuerServer();
  try {
    const overrides = await credentialProviderOverrides();
    const registries = overrides.registries as Array<Record<string, unknown>>;
    registries[0]!.hosts = hosts;
    const config = await testConfig(issuerServer.url, {
      ...overrides,
      ...(options.tls ? { server: { host: "127.0.0.1", port: 0, tls: options.tls } } : {}),
    });
    const server = await startServer(config, { logger: pino({ level: "silent" }) });
    return {
      url: server.url,
      issuer: issuerServer.issuer,
      server,
      podToken: (namespace, serviceAccount = "puller") =>
        issuerServer.issuer.mint({ namespace, serviceAccount, audiences: [CP_AUDIENCE] }),
      close: async () => {
        await server.close();
        await issuerServer.close();
      },
    };
  } catch (err) {
    await issuerServer.close();
    throw err;
  }
}

/** Writes a self-signed ECDSA certificate for IP 127.0.0.1 (SAN) and its key into a temp dir. */
export async function localhostCertificate(): Promise<{ certFile: string; keyFile: string }> {
  await import("reflect-metadata");
  const x509 = await import("@peculiar/x509");
  x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
  const algorithm = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const keys = (await webcrypto.subtle.generateKey(algorithm, true, [
    "sign",
    "verify",
  ])) as webcrypto.CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: "01",
    name: "CN=127.0.0.1",
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 24 * 3600_000),
    signingAlgorithm: algorithm,
    keys,
    extensions: [
      new x509.SubjectAlternativeNameExtension([{ type: "ip", value: "127.0.0.1" }]),
      new x509.BasicConstraintsExtension(true, undefined, true),
    ],
  });
  const dir = mkdtempSync(join(tmpdir(), "rte-tls-"));
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey("pkcs8", keys.privateKey)).toString("base64");
  const keyFile = join(dir, "key.pem");
  const certFile = join(dir, "cert.pem");
  writeFileSync(
    keyFile,
    `-----BEGIN PRIVATE KEY-----\n${pkcs8.match(/.{1,64}/g)!.join("\n")}\n-----END PRIVATE KEY-----\n`,
    {
      mode: 0o600,
    },
  );
  writeFileSync(certFile, cert.toString("pem"));
  return { certFile, keyFile };
}
