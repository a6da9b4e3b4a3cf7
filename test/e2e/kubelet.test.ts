/**
 * End to end, playing kubelet (KEP-4412):
 *
 *   kubelet ──CredentialProviderRequest (pod token, audience registry-token-exchange)──▶ plugin (Node or sh)
 *   plugin ──POST /v1/credential-provider──▶ token exchange ──▶ CredentialProviderResponse (exchange credential)
 *   ctr (POST password grant) / skopeo (GET, Basic) ──▶ docker-registry 2.8 ──401──▶ /token with that
 *   username/password ──▶ registry token ──▶ pull
 *
 * An allowed repository (team-a/app for a team-a pod) pulls; a repository outside the policy (team-b/app)
 * is refused; the registry itself refuses the exchange credential presented as a bearer token.
 *
 * Needs `docker-registry`, `skopeo`, `containerd`, `ctr`, `curl` and root (for containerd). When something
 * is missing the suite is skipped with a warning, except under CI=true where that is a failure.
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { Writable } from "node:stream";
import { decodeProtectedHeader } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type LocalIssuer, startLocalIssuerServer } from "../../src/local/issuer.js";
import { createLogger } from "../../src/logging.js";
import { type RunningServer, startServer } from "../../src/server.js";
import { CP_AUDIENCE, cpRequest, credentialProviderOverrides } from "../helpers/credential-provider.js";
import { AUDIENCE, signingKeyFiles, testConfig } from "../helpers/fixtures.js";
import { type PluginKind, runPlugin } from "../helpers/plugin.js";
import { type Containerd, ctr, startContainerd } from "./helpers/containerd.js";
import { buildOciLayout, type OciImage } from "./helpers/oci.js";
import { describeRun, freePort, missingBinaries, type TempDir, tempDir } from "./helpers/process.js";
import { REGISTRY_BIN, type RegistryServer, startRegistry } from "./helpers/registry.js";
import { skopeoInspect, skopeoPush } from "./helpers/skopeo.js";

const missing = [
  ...missingBinaries([REGISTRY_BIN, "skopeo", "containerd", "ctr", "curl", "sh"]),
  ...(process.getuid?.() === 0 ? [] : ["root privileges (containerd)"]),
];
const inCI = process.env.CI === "true";

if (missing.length > 0 && inCI) {
  describe("e2e kubelet prerequisites", () => {
    it("has docker-registry, skopeo, containerd, ctr, curl, sh and root (required when CI=true)", () => {
      expect(missing, "install them: apt-get install -y docker-registry skopeo containerd curl").toEqual([]);
    });
  });
} else if (missing.length > 0) {
  console.warn(`[e2e] skipping the kubelet end-to-end suite: missing ${missing.join(", ")}`);
}

/** Registry error texts for "your token does not allow this" (401 insufficient_scope / 403 denied). */
const REFUSED = /denied|unauthorized|authentication required|insufficient_scope/i;

/** The exchange service with the credential provider on, its log lines parsed. */
interface Service {
  url: string;
  issuer: LocalIssuer;
  server: RunningServer;
  lines: Array<Record<string, unknown>>;
  close: () => Promise<void>;
}

/** Starts the issuer and the service on `port`, mapping the registry's `host` to its service. */
async function startService(port: number, registryHost: string): Promise<Service> {
  const issuerServer = await startLocalIssuerServer();
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const line of String(chunk).split("\n")) {
        if (line.trim() === "") continue;
        try {
          lines.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          lines.push({ msg: line });
        }
      }
      cb();
    },
  });
  try {
    const overrides = await credentialProviderOverrides();
    (overrides.registries as Array<Record<string, unknown>>)[0]!.hosts = [registryHost];
    const config = await testConfig(issuerServer.url, { ...overrides, server: { host: "127.0.0.1", port } });
    const server = await startServer(config, { logger: createLogger("info", sink) });
    return {
      url: server.url,
      issuer: issuerServer.issuer,
      server,
      lines,
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

describe.skipIf(missing.length > 0)(
  "e2e: kubelet -> credential provider plugin -> ctr / skopeo -> registry",
  () => {
    let tmp: TempDir;
    let service: Service;
    let registry: RegistryServer;
    let containerd: Containerd;
    let image: OciImage;
    /** username/password each plugin printed for a team-a pod pulling team-a/app. */
    const creds: Partial<Record<PluginKind, { username: string; password: string }>> = {};
    let podToken: string;

    const tokenRequests = (method: string) => {
      const started = new Map<unknown, string>();
      const out: number[] = [];
      for (const l of service.lines) {
        const req = l.req as { method?: string; path?: string } | undefined;
        if (req?.method === method && req.path === "/token") started.set(l.reqId, method);
        const res = l.res as { statusCode?: number } | undefined;
        if (res?.statusCode !== undefined && started.has(l.reqId)) out.push(res.statusCode);
      }
      return out;
    };

    beforeAll(async () => {
      tmp = tempDir("kubelet");
      const dir = (name: string) => join(tmp.path, name);
      for (const d of ["registry", "containerd", "oci", "skopeo"]) mkdirSync(dir(d));
      const containerdStarting = startContainerd(dir("containerd"));
      containerdStarting.catch(() => {});
      // The registry needs the realm URL and the service needs the registry's host: fix the port first
      // (and pick another if something took it in between).
      for (let attempt = 1; ; attempt++) {
        const port = await freePort();
        registry = await startRegistry(dir("registry"), `http://127.0.0.1:${port}/token`);
        try {
          service = await startService(port, registry.host);
          break;
        } catch (err) {
          await registry.stop();
          if (attempt >= 3 || (err as NodeJS.ErrnoException).code !== "EADDRINUSE") throw err;
        }
      }
      image = await buildOciLayout(dir("oci"), "v1");
      // The images exist in both repositories, so a refusal is about the policy, not a missing manifest.
      for (const ns of ["team-a", "team-b"]) {
        const pushToken = await service.issuer.mint({
          namespace: ns,
          serviceAccount: "ci",
          audiences: [AUDIENCE],
        });
        const pushed = await skopeoPush({
          layoutDir: image.dir,
          tag: image.tag,
          dest: `${registry.host}/${ns}/app:v1`,
          token: pushToken,
          tmpDir: dir("skopeo"),
          digestFile: join(dir("skopeo"), `${ns}.digest`),
        });
        expect(pushed.code, describeRun(`skopeo copy to ${ns}/app`, pushed)).toBe(0);
      }
      containerd = await containerdStarting;
      // What kubelet requests: a pod-bound token with the credential-provider audience (default TTL 1 h).
      podToken = await service.issuer.mint({
        namespace: "team-a",
        serviceAccount: "web",
        audiences: [CP_AUDIENCE],
        podName: "web-5d8c7",
        nodeName: "node-1",
      });
    }, 120_000);

    afterAll(async () => {
      const steps = [() => containerd?.stop(), () => registry?.stop(), () => service?.close()];
      const errors: unknown[] = [];
      for (const step of steps) {
        try {
          await step();
        } catch (err) {
          errors.push(err);
        }
      }
      if (tmp && service) {
        writeFileSync(join(tmp.path, "service.log"), service.lines.map((l) => JSON.stringify(l)).join("\n"));
      }
      if (process.env.E2E_KEEP_TMP) console.warn(`[e2e] kept ${tmp?.path} (E2E_KEEP_TMP is set)`);
      else {
        tmp?.remove();
        rmSync(dirname((await signingKeyFiles()).certFile), { recursive: true, force: true });
      }
      if (errors.length > 0) throw errors[0];
    });

    it.each(["node", "sh"] as PluginKind[])(
      "the %s plugin turns kubelet's request into a CredentialProviderResponse",
      async (kind) => {
        const request = cpRequest(podToken, `${registry.host}/team-a/app:v1`, { "example.com/team": "a" });
        const run = await runPlugin(kind, ["--url", service.url, "--timeout", "30"], JSON.stringify(request));
        expect(run.code, `stderr: ${run.stderr}`).toBe(0);
        expect(run.stderr).toBe("");
        const response = JSON.parse(run.stdout);
        expect(Object.keys(response)).toEqual([
          "apiVersion",
          "kind",
          "cacheKeyType",
          "cacheDuration",
          "auth",
        ]);
        // Half of the pod token's hour (a second may have passed since it was minted).
        expect(response).toMatchObject({ kind: "CredentialProviderResponse", cacheKeyType: "Registry" });
        expect(response.cacheDuration).toMatch(/^(29m59s|30m0s)$/);
        expect(Object.keys(response.auth)).toEqual([registry.host]);
        const auth = response.auth[registry.host] as { username: string; password: string };
        expect(auth.password).not.toBe(podToken);
        expect(decodeProtectedHeader(auth.password).typ).toBe("rte-exchange+jwt");
        creds[kind] = auth;
      },
      60_000,
    );

    it.each(["node", "sh"] as PluginKind[])(
      "ctr pulls team-a/app with the %s plugin's username/password (POST password grant)",
      async (kind) => {
        const c = creds[kind]!;
        const ref = `${registry.host}/team-a/app:v1`;
        await ctr(containerd, ["images", "rm", ref]);
        const posts = tokenRequests("POST").length;
        const r = await ctr(
          containerd,
          ["images", "pull", "--plain-http", "--user", `${c.username}:${c.password}`, ref],
          60_000,
        );
        expect(r.code, describeRun("ctr images pull", r)).toBe(0);
        const after = tokenRequests("POST").slice(posts);
        expect(after.length).toBeGreaterThan(0);
        expect(after.every((s) => s === 200)).toBe(true);
        const ls = await ctr(containerd, ["images", "ls"]);
        expect(ls.stdout.split("\n").find((l) => l.startsWith(`${ref} `))).toContain(image.manifest.digest);
      },
      90_000,
    );

    it.each(["node", "sh"] as PluginKind[])(
      "skopeo inspects team-a/app with the %s plugin's password (GET, Basic)",
      async (kind) => {
        const gets = tokenRequests("GET").length;
        const r = await skopeoInspect({
          ref: `${registry.host}/team-a/app:v1`,
          token: creds[kind]!.password,
          tmpDir: join(tmp.path, "skopeo"),
        });
        expect(r.code, describeRun("skopeo inspect", r)).toBe(0);
        expect((JSON.parse(r.stdout) as { Digest: string }).Digest).toBe(image.manifest.digest);
        expect(tokenRequests("GET").slice(gets)).toContain(200);
      },
      60_000,
    );

    it.each(["node", "sh"] as PluginKind[])(
      "team-b/app (outside the policy) is refused to ctr and skopeo with the %s plugin's credential",
      async (kind) => {
        const c = creds[kind]!;
        const ref = `${registry.host}/team-b/app:v1`;
        const pull = await ctr(containerd, [
          "images",
          "pull",
          "--plain-http",
          "--user",
          `${c.username}:${c.password}`,
          ref,
        ]);
        expect(pull.code, describeRun("ctr images pull team-b", pull)).not.toBe(0);
        expect(`${pull.stdout}${pull.stderr}`).toMatch(REFUSED);
        const inspect = await skopeoInspect({ ref, token: c.password, tmpDir: join(tmp.path, "skopeo") });
        expect(inspect.code, describeRun("skopeo inspect team-b", inspect)).not.toBe(0);
        expect(inspect.stderr).toMatch(REFUSED);
        // The realm authenticated the pod's credential and granted it nothing on team-b/app.
        const audits = service.lines
          .map((l) => l.audit as Record<string, unknown> | undefined)
          .filter((a) => a?.decision === "issued" && a.namespace === "team-a" && a.serviceAccount === "web");
        expect(audits.some((a) => (a!.requested as string[]).some((r) => r.includes("team-b/")))).toBe(true);
        expect(audits.flatMap((a) => a!.granted as string[]).filter((g) => g.includes("team-b/"))).toEqual(
          [],
        );
      },
      90_000,
    );

    it("the plugins fail (exit 1, one line) for an image outside the policy", async () => {
      for (const kind of ["node", "sh"] as PluginKind[]) {
        const run = await runPlugin(
          kind,
          ["--url", service.url, "--timeout", "30"],
          JSON.stringify(cpRequest(podToken, `${registry.host}/team-b/app:v1`)),
        );
        expect(run.code).toBe(1);
        expect(run.stdout).toBe("");
        expect(run.stderr.trimEnd().split("\n")).toHaveLength(1);
        expect(run.stderr).toMatch(/HTTP 403.*may not pull "team-b\/app"/);
      }
    }, 60_000);

    it("the registry refuses the exchange credential itself as a bearer token (iss and aud are not its own)", async () => {
      for (const path of ["/v2/", "/v2/team-a/app/manifests/v1"]) {
        const res = await fetch(`${registry.url}${path}`, {
          headers: {
            authorization: `Bearer ${creds.node!.password}`,
            accept: "application/vnd.oci.image.manifest.v1+json",
          },
        });
        await res.body?.cancel();
        expect([path, res.status]).toEqual([path, 401]);
      }
      // distribution 2.8 checks iss first (registry/auth/token/token.go Verify) and stops there; the aud
      // check would refuse it next, even though the registry trusts the signing key.
      expect(registry.process.log(1e7)).toContain(
        'token from untrusted issuer: \\"urn:registry-token-exchange:exchange-credential:registry-token-exchange\\"',
      );
    });
  },
);
