/**
 * End to end: rotating the service's signing key with a real registry (Debian's `docker-registry`,
 * distribution 2.8), walking the steps docs/registry.md gives ("Rotating the signing key"):
 *
 *   0. key A signs; the registry's rootcertbundle holds A.
 *   1. the registry's bundle gets B's certificate too (A + B in one PEM file), registry restarted;
 *   2. B is published (`registries[].publishedKeys`), config reloaded with SIGHUP: A still signs;
 *   3. switch: B signs, A stays published, SIGHUP: tokens from A (still unexpired) and from B are both
 *      accepted by the registry during the overlap;
 *   4. once what A signed has expired: A leaves the bundle (registry restarted) and `publishedKeys`
 *      (SIGHUP): a token signed by A is refused by the registry, B's are accepted.
 *
 * The service runs as `node src/bin.ts serve --config FILE` (the CLI), so the reloads are real SIGHUPs.
 * Needs `docker-registry`: skipped with a printed reason when it is missing, a failure under CI=true.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { decodeProtectedHeader } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { libtrustKeyId } from "../../src/jose/kid.js";
import { generateSigningKeyFiles, loadSigningKey } from "../../src/jose/signing-key.js";
import { type LocalIssuer, startLocalIssuerServer } from "../../src/local/issuer.js";
import { AUDIENCE, basic, SERVICE, STANDARD_RULES } from "../helpers/fixtures.js";
import {
  freePort,
  ManagedProcess,
  missingBinaries,
  type TempDir,
  tempDir,
  waitUntil,
} from "./helpers/process.js";
import { REGISTRY_BIN, type RegistryServer, startRegistry, TOKEN_ISSUER } from "./helpers/registry.js";

const missing = missingBinaries([REGISTRY_BIN]);
const inCI = process.env.CI === "true";

if (missing.length > 0 && inCI) {
  describe("e2e prerequisites", () => {
    it("has docker-registry (required when CI=true)", () => {
      expect(missing, "install it: apt-get install -y docker-registry").toEqual([]);
    });
  });
} else if (missing.length > 0) {
  console.warn(`[e2e] skipping the key rotation end-to-end suite: missing ${missing.join(", ")}`);
}

type KeyFiles = { keyFile: string; certFile: string };

describe.skipIf(missing.length > 0)(
  "e2e: rotating the signing key with a real registry (distribution 2.8)",
  () => {
    let tmp: TempDir;
    let issuerServer: Awaited<ReturnType<typeof startLocalIssuerServer>>;
    let issuer: LocalIssuer;
    let service: ManagedProcess;
    let serviceUrl: string;
    let registry: RegistryServer;
    let a: KeyFiles;
    let b: KeyFiles;
    let kidA: string;
    let kidB: string;
    let configFile: string;
    let bundle: string;
    let reloads = 0;

    const path = (name: string) => join(tmp.path, name);

    /** Writes the service's config: `active` signs, `published` are published. */
    function writeConfig(active: KeyFiles, published: Array<Partial<KeyFiles>> = []): void {
      writeFileSync(
        configFile,
        stringify({
          server: { host: "127.0.0.1", port: Number(new URL(serviceUrl).port) },
          logging: { level: "info" },
          clusters: [{ name: "test", issuer: issuerServer.url, audiences: [AUDIENCE] }],
          registries: [
            {
              service: SERVICE,
              issuer: TOKEN_ISSUER,
              tokenTtlSeconds: 300,
              signingKey: active,
              ...(published.length > 0 ? { publishedKeys: published } : {}),
            },
          ],
          policy: { rules: STANDARD_RULES },
        }),
      );
    }

    /** Rewrites the config and reloads it with SIGHUP, waiting for the service to confirm. */
    async function reload(active: KeyFiles, published: Array<Partial<KeyFiles>> = []): Promise<void> {
      writeConfig(active, published);
      reloads++;
      process.kill(service.child.pid!, "SIGHUP");
      await waitUntil(
        `config reload #${reloads}`,
        async () => (service.log(1e7).match(/"msg":"config reloaded"/g) ?? []).length === reloads,
        { proc: service, timeoutMs: 10_000, intervalMs: 50 },
      );
      expect(service.log(1e7)).not.toContain("config reload refused");
    }

    /** Sets the registry's rootcertbundle to `certs` and restarts it (distribution reads it at start-up). */
    async function trust(...certs: KeyFiles[]): Promise<void> {
      writeFileSync(bundle, certs.map((c) => readFileSync(c.certFile, "utf8")).join(""));
      const port = registry ? Number(new URL(registry.url).port) : undefined;
      await registry?.stop();
      registry = await startRegistry(path("registry"), `${serviceUrl}/token`, {
        rootcertbundle: bundle,
        ...(port === undefined ? {} : { port }),
      });
    }

    /** A registry token for team-a from the service (GET realm, Basic credentials), and its signing kid. */
    async function registryToken(): Promise<{ token: string; kid: string }> {
      const sa = await issuer.mint({ namespace: "team-a", serviceAccount: "builder", audiences: [AUDIENCE] });
      const res = await fetch(`${serviceUrl}/token?service=${SERVICE}&scope=repository:team-a/app:pull`, {
        headers: { authorization: basic(sa) },
      });
      expect(res.status).toBe(200);
      const token = ((await res.json()) as { token: string }).token;
      return { token, kid: decodeProtectedHeader(token).kid as string };
    }

    /** What the registry answers a request carrying `token` (200/404: accepted; 401: refused). */
    async function registryAnswers(token: string): Promise<{ base: number; tags: number }> {
      const headers = { authorization: `Bearer ${token}` };
      const base = await fetch(`${registry.url}/v2/`, { headers });
      await base.body?.cancel();
      const tags = await fetch(`${registry.url}/v2/team-a/app/tags/list`, { headers });
      await tags.body?.cancel();
      return { base: base.status, tags: tags.status };
    }

    /** The kids `/.well-known/jwks.json` publishes, in order. */
    async function publishedKids(): Promise<string[]> {
      const res = await fetch(`${serviceUrl}/.well-known/jwks.json`);
      return ((await res.json()) as { keys: Array<{ kid: string }> }).keys.map((k) => k.kid);
    }

    const ACCEPTED = { base: 200, tags: 404 }; // authorized; the repository does not exist yet
    const REFUSED = { base: 401, tags: 401 };

    beforeAll(async () => {
      tmp = tempDir("rotation");
      a = await generateSigningKeyFiles(path("key-a"), "registry-token-exchange key A");
      b = await generateSigningKeyFiles(path("key-b"), "registry-token-exchange key B");
      kidA = libtrustKeyId(loadSigningKey(a.keyFile, a.certFile, "a").publicKey);
      kidB = libtrustKeyId(loadSigningKey(b.keyFile, b.certFile, "b").publicKey);
      mkdirSync(path("registry"));
      bundle = path("rootcertbundle.pem");
      configFile = path("config.yaml");
      issuerServer = await startLocalIssuerServer();
      issuer = issuerServer.issuer;
      serviceUrl = `http://127.0.0.1:${await freePort()}`;
      writeConfig(a);
      service = new ManagedProcess(
        "registry-token-exchange",
        process.execPath,
        ["--import", "tsx", "src/bin.ts", "serve", "--config", configFile],
        path("service.log"),
      );
      await waitUntil("service listening", async () => service.log().includes("Server listening"), {
        proc: service,
        timeoutMs: 30_000,
      });
      await trust(a);
    }, 60_000);

    afterAll(async () => {
      const errors: unknown[] = [];
      for (const step of [() => registry?.stop(), () => service?.stop(), () => issuerServer?.close()]) {
        try {
          await step();
        } catch (err) {
          errors.push(err);
        }
      }
      if (process.env.E2E_KEEP_TMP) console.warn(`[e2e] kept ${tmp?.path} (E2E_KEEP_TMP is set)`);
      else tmp?.remove();
      if (errors.length > 0) throw errors[0];
    });

    let tokenA: string;
    let tokenB: string;

    it("0. key A signs, the registry trusts A", async () => {
      expect(await publishedKids()).toEqual([kidA]);
      const t = await registryToken();
      expect(t.kid).toBe(kidA);
      tokenA = t.token;
      expect(await registryAnswers(tokenA)).toEqual(ACCEPTED);
    });

    it("1. the registry's bundle gets B's certificate next to A's: A's tokens still accepted", async () => {
      await trust(a, b);
      expect(await registryAnswers(tokenA)).toEqual(ACCEPTED);
    }, 30_000);

    it("2. B is published (SIGHUP), A still signs", async () => {
      await reload(a, [b]);
      expect(await publishedKids()).toEqual([kidA, kidB]);
      expect((await registryToken()).kid).toBe(kidA);
    }, 30_000);

    it("3. switch (SIGHUP): B signs, A stays published; the registry accepts tokens of both", async () => {
      await reload(b, [{ certFile: a.certFile }]);
      expect(await publishedKids()).toEqual([kidB, kidA]);
      const t = await registryToken();
      expect(t.kid).toBe(kidB);
      tokenB = t.token;
      expect(await registryAnswers(tokenB)).toEqual(ACCEPTED);
      expect(await registryAnswers(tokenA)).toEqual(ACCEPTED);
    }, 30_000);

    it("4. A removed from the bundle and from publishedKeys: A's tokens refused, B's accepted", async () => {
      await trust(b);
      await reload(b);
      expect(await publishedKids()).toEqual([kidB]);
      expect(await registryAnswers(tokenA)).toEqual(REFUSED);
      expect(registry.process.log(1e6)).toMatch(/unknown authority|untrusted/);
      expect(await registryAnswers(tokenB)).toEqual(ACCEPTED);
      expect((await registryToken()).kid).toBe(kidB);
    }, 30_000);
  },
);
