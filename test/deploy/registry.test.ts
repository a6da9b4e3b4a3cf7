/**
 * deploy/registry: the distribution config examples agree with the Kubernetes ConfigMap (service, issuer,
 * certificate), the v3 example sets what v3 needs for tokens that carry x5c, and the v2.8 example works
 * with the real registry (Debian's docker-registry 2.8): it challenges with its realm and service and
 * accepts a token this service mints for that service.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pino from "pino";
import { describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { buildApp } from "../../src/app.js";
import { parseConfig } from "../../src/config/load.js";
import { startLocalIssuerServer } from "../../src/local/issuer.js";
import { freePort, ManagedProcess, missingBinaries, tempDir, waitUntil } from "../e2e/helpers/process.js";
import { AUDIENCE, basic, signingKeyFiles, testConfig } from "../helpers/fixtures.js";

const root = new URL("../..", import.meta.url).pathname;
type TokenAuth = Record<string, unknown> & {
  realm: string;
  service: string;
  issuer: string;
  rootcertbundle?: string;
};
interface RegistryConfigFile {
  version: number;
  storage?: unknown;
  http: Record<string, unknown>;
  auth: { token: TokenAuth };
}
const readRegistryConfig = (name: string) =>
  parse(readFileSync(join(root, "deploy/registry", name), "utf8")) as RegistryConfigFile;
const v28 = readRegistryConfig("config-v2.8.yml");
const v3 = readRegistryConfig("config-v3.yml");
const serviceConfig = parseConfig(
  parse(readFileSync(join(root, "deploy/kubernetes/base/config.yaml"), "utf8")),
);
const registryEntry = serviceConfig.registries[0]!;

describe("deploy/registry examples", () => {
  it("agree with the service's config (service, issuer) and use its /token as the realm", () => {
    for (const c of [v28, v3]) {
      expect(c.version).toBe(0.1);
      expect(c.auth.token.service).toBe(registryEntry.service);
      expect(c.auth.token.issuer).toBe(registryEntry.issuer);
      const realm = new URL(c.auth.token.realm);
      expect(realm.protocol).toBe("https:");
      expect(realm.pathname).toBe("/token");
      // Tokens always carry x5c, which both versions check against rootcertbundle first.
      expect(c.auth.token.rootcertbundle).toMatch(/^\/.+\.crt$/);
    }
  });

  it("v3: also lists the JWKS file and only algorithms this service signs with", () => {
    expect(v3.auth.token.jwks).toMatch(/^\/.+\.json$/);
    expect(v3.auth.token.signingalgorithms).toEqual(expect.arrayContaining(["ES256", "RS256"]));
    for (const alg of v3.auth.token.signingalgorithms as string[])
      expect(alg).toMatch(/^(ES(256|384|512)|RS256)$/);
    expect(v28.auth.token.jwks).toBeUndefined(); // v2.8 has no such option
  });

  const missing = missingBinaries(["docker-registry"]);
  it.skipIf(missing.length > 0 && process.env.CI !== "true")(
    "v2.8: the real registry challenges with the example's realm and accepts our token (needs docker-registry)",
    { timeout: 60_000 },
    async () => {
      const dir = tempDir("registry-example");
      const keys = await signingKeyFiles();
      const port = await freePort();
      const config = structuredClone(v28);
      config.storage = { filesystem: { rootdirectory: join(dir.path, "storage") } };
      config.http = { ...config.http, addr: `127.0.0.1:${port}` };
      config.auth.token.rootcertbundle = keys.certFile;
      const file = join(dir.path, "config.yml");
      writeFileSync(file, stringify(config));
      const proc = new ManagedProcess(
        "docker-registry",
        "docker-registry",
        ["serve", file],
        join(dir.path, "registry.log"),
      );
      const issuer = await startLocalIssuerServer();
      const app = await buildApp(
        await testConfig(issuer.url, {
          registries: [{ service: registryEntry.service, issuer: registryEntry.issuer, signingKey: keys }],
          policy: {
            rules: [
              {
                name: "team-a",
                match: { namespace: "team-a" },
                allow: [{ repository: "team-a/**", actions: ["pull"] }],
              },
            ],
          },
        }),
        { logger: pino({ level: "silent" }) },
      );
      try {
        const url = `http://127.0.0.1:${port}`;
        let challenge = "";
        await waitUntil(
          "registry up",
          async () => {
            const res = await fetch(`${url}/v2/`);
            challenge = res.headers.get("www-authenticate") ?? "";
            return res.status === 401;
          },
          { proc },
        );
        expect(challenge).toBe(`Bearer realm="${v28.auth.token.realm}",service="${v28.auth.token.service}"`);

        const sa = await issuer.issuer.mint({
          namespace: "team-a",
          serviceAccount: "builder",
          audiences: [AUDIENCE],
        });
        const minted = await app.inject({
          method: "GET",
          url: `/token?service=${encodeURIComponent(registryEntry.service)}&scope=repository:team-a/app:pull`,
          headers: { authorization: basic(sa) },
        });
        expect(minted.statusCode, minted.body).toBe(200);
        const token = minted.json().token as string;
        const ok = await fetch(`${url}/v2/`, { headers: { authorization: `Bearer ${token}` } });
        expect(ok.status, proc.log()).toBe(200);
        // Pulling a repository the token grants reaches the storage (404: no such manifest), not auth.
        const manifest = await fetch(`${url}/v2/team-a/app/manifests/latest`, {
          headers: { authorization: `Bearer ${token}` },
        });
        expect(manifest.status).toBe(404);
        const denied = await fetch(`${url}/v2/team-b/app/manifests/latest`, {
          headers: { authorization: `Bearer ${token}` },
        });
        expect(denied.status).toBe(401);
        expect(denied.headers.get("www-authenticate")).toContain('error="insufficient_scope"');
      } finally {
        await app.close();
        await issuer.close();
        await proc.stop();
        dir.remove();
      }
    },
  );
});
