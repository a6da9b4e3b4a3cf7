// biome-ignore-all lint/suspicious/noTemplateCurlyInString: policy templates such as ${namespace} are data, not JS templates
/**
 * `registry-token-exchange check-config` (src/cli/commands.ts): exact output and exit codes for a
 * clean config, warnings (exit 0, or 2 with `--strict`), errors (exit 2), `jwksFile` key sets checked
 * offline, cluster keys fetched only with `--fetch-keys` (exit 1 when that fails), and the real command
 * line in a child process.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkConfigCommand } from "../../src/cli/commands.js";
import { loadSigningKey } from "../../src/jose/signing-key.js";
import { LocalIssuer, startLocalIssuerServer } from "../../src/local/issuer.js";
import { signingKeyFiles } from "../helpers/fixtures.js";
import { localhostCertificate, REPO_ROOT } from "../helpers/plugin.js";

let dir: string;
let keys: { keyFile: string; certFile: string };
let kid: string;
let live: Awaited<ReturnType<typeof startLocalIssuerServer>>;

function write(name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

/** A config file: `clusters` and `rules` as YAML flow text. */
function configFile(name: string, clusters: string, rules: string, extra = ""): string {
  return write(
    name,
    `clusters: ${clusters}
registries:
  - { service: registry.example.com, issuer: rte, signingKey: { keyFile: ${keys.keyFile}, certFile: ${keys.certFile} } }
policy:
  rules: ${rules}
${extra}`,
  );
}

const RULES = `
    - name: teams push to their own namespace
      match: { namespace: "team-*" }
      allow: [{ repository: "\${namespace}/**", actions: [pull, push] }]
    - name: everyone pulls base images
      allow: [{ repository: "library/**", actions: [pull] }]`;
const PROD =
  '{ name: prod, issuer: "https://kubernetes.default.svc.cluster.local", audiences: [registry.example.com] }';

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "rte-check-"));
  keys = await signingKeyFiles();
  kid = loadSigningKey(keys.keyFile, keys.certFile, "test").kid;
  live = await startLocalIssuerServer();
  write("jwks.json", JSON.stringify(new LocalIssuer("https://b.example.com").jwks()));
});

afterAll(async () => {
  await live.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("check-config", () => {
  it("a clean config: one line per registry and cluster, then ok; exit 0", async () => {
    const file = configFile(
      "clean.yaml",
      `[${PROD}, { name: airgapped, issuer: "https://b.example.com", jwksFile: jwks.json, audiences: [registry.example.com] }]`,
      RULES,
    );
    expect(await checkConfigCommand({ config: file })).toEqual({
      stdout:
        `registries[0] (registry.example.com): signing key ES256, kid ${kid}\n` +
        "clusters[0] (prod): keys not fetched (offline; --fetch-keys fetches them)\n" +
        `clusters[1] (airgapped): 1 key(s) from ${join(dir, "jwks.json")}\n` +
        "ok: 2 cluster(s), 1 registry, 2 rule(s)\n",
      stderr: "",
      code: 0,
    });
  });

  const WARNED = `${RULES}
    - name: staging pulls
      match: { cluster: "stag*" }
      allow: [{ repository: "**", actions: [pull] }]`;

  it("warnings are printed and pass (exit 0)", async () => {
    const file = configFile("warned.yaml", `[${PROD}]`, WARNED);
    expect(await checkConfigCommand({ config: file })).toEqual({
      stdout:
        `registries[0] (registry.example.com): signing key ES256, kid ${kid}\n` +
        "clusters[0] (prod): keys not fetched (offline; --fetch-keys fetches them)\n" +
        "ok: 1 cluster(s), 1 registry, 3 rule(s), 1 warning(s)\n",
      stderr:
        'config warning: policy.rules[2].match.cluster: "stag*" matches no configured cluster (clusters: "prod")\n',
      code: 0,
    });
  });

  it("--strict makes warnings fail (exit 2)", async () => {
    const file = configFile("strict.yaml", `[${PROD}]`, WARNED);
    expect(await checkConfigCommand({ config: file, strict: true })).toEqual({
      stdout:
        `registries[0] (registry.example.com): signing key ES256, kid ${kid}\n` +
        "clusters[0] (prod): keys not fetched (offline; --fetch-keys fetches them)\n",
      stderr:
        'config warning: policy.rules[2].match.cluster: "stag*" matches no configured cluster (clusters: "prod")\n' +
        "config error: --strict: 1 warning(s) treated as errors\n",
      code: 2,
    });
    const clean = configFile("strict-clean.yaml", `[${PROD}]`, RULES);
    expect((await checkConfigCommand({ config: clean, strict: true })).code).toBe(0);
  });

  it("policy errors and warnings together (exit 2, no ok line)", async () => {
    const file = configFile(
      "errors.yaml",
      `[${PROD}]`,
      `
    - { name: a, match: { cluster: prdo }, allow: [{ repository: "\${team}/**", actions: [pull] }] }
    - { name: a, deny: [{ repository: "\${annotation:frozen}/**", actions: [push] }] }`,
    );
    expect(await checkConfigCommand({ config: file })).toEqual({
      stdout:
        `registries[0] (registry.example.com): signing key ES256, kid ${kid}\n` +
        "clusters[0] (prod): keys not fetched (offline; --fetch-keys fetches them)\n",
      stderr:
        'config warning: policy.rules[1].name: "a" is also the name of policy.rules[0]: explanations and audit logs cannot tell the two apart\n' +
        'config error: policy.rules[0].match.cluster: no cluster is named "prdo" (clusters: "prod")\n' +
        'config error: policy.rules[0].allow[0].repository: unknown template variable "${team}" (known: ${cluster}, ${namespace}, ${serviceAccount}, ${annotation:<key>})\n' +
        "config error: policy.rules[1].deny[0].repository: ${annotation:...} is not allowed in deny entries: annotations are asserted by the caller, who could leave them out or change them to escape the deny\n",
      code: 2,
    });
  });

  it("schema errors (exit 2): an empty rule list needs defaultDeny", async () => {
    const file = configFile("empty.yaml", `[${PROD}]`, "[]");
    expect(await checkConfigCommand({ config: file })).toEqual({
      stdout: "",
      stderr:
        "config error: policy.rules: no rules: every request would be denied (default deny); add at least one rule, or set policy.defaultDeny: true to deny everything on purpose\n",
      code: 2,
    });
    const acknowledged = write(
      "deny-all.yaml",
      `clusters: [${PROD}]
registries:
  - { service: registry.example.com, issuer: rte, signingKey: { keyFile: ${keys.keyFile}, certFile: ${keys.certFile} } }
policy: { rules: [], defaultDeny: true }
`,
    );
    expect(await checkConfigCommand({ config: acknowledged })).toMatchObject({
      stdout: expect.stringContaining("ok: 1 cluster(s), 1 registry, 0 rule(s)\n"),
      stderr: "",
      code: 0,
    });
  });

  it.each([
    ["not JSON", "{", () => `config error: clusters[0].jwksFile: cannot read the JWKS: ${jsonError("{")}`],
    [
      "no keys array",
      '{"keys": 1}',
      () => 'config error: clusters[0].jwksFile: JWKS is not an object with a "keys" array',
    ],
    [
      "no usable key",
      '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}',
      () =>
        'config warning: clusters[0].jwksFile: key [0] skipped: unsupported kty "oct"\n' +
        "config error: clusters[0].jwksFile: the JWKS has no usable key",
    ],
  ])("a jwksFile with %s is an error", async (name, text, line) => {
    const jwks = write(`${name.replaceAll(" ", "-")}.json`, text);
    const file = configFile(
      `jwks-${name.replaceAll(" ", "-")}.yaml`,
      `[{ name: b, issuer: "https://b.example.com", jwksFile: ${jwks}, audiences: [registry.example.com] }]`,
      RULES,
    );
    const out = await checkConfigCommand({ config: file });
    expect(out.code).toBe(2);
    expect(out.stderr).toBe(`${line()}\n`);
  });

  it("a skipped JWKS key is a warning", async () => {
    const good = new LocalIssuer("https://b.example.com").jwks().keys[0]!;
    const jwks = write("mixed.json", JSON.stringify({ keys: [{ kty: "oct", k: "c2VjcmV0" }, good] }));
    const file = configFile(
      "mixed.yaml",
      `[{ name: b, issuer: "https://b.example.com", jwksFile: ${jwks}, audiences: [registry.example.com] }]`,
      RULES,
    );
    expect(await checkConfigCommand({ config: file })).toEqual({
      stdout:
        `registries[0] (registry.example.com): signing key ES256, kid ${kid}\n` +
        `clusters[0] (b): 1 key(s) from ${jwks}\n` +
        "ok: 1 cluster(s), 1 registry, 2 rule(s), 1 warning(s)\n",
      stderr: 'config warning: clusters[0].jwksFile: key [0] skipped: unsupported kty "oct"\n',
      code: 0,
    });
  });

  it("contacts nothing without --fetch-keys; fetches every other cluster's keys with it", async () => {
    const file = configFile(
      "live.yaml",
      `[{ name: live, issuer: "${live.url}", audiences: [registry.example.com] }]`,
      RULES,
    );
    const before = { ...live.issuer.served };
    expect((await checkConfigCommand({ config: file })).stdout).toContain(
      "clusters[0] (live): keys not fetched (offline; --fetch-keys fetches them)\n",
    );
    expect(live.issuer.served).toEqual(before);
    expect(await checkConfigCommand({ config: file, fetchKeys: true })).toEqual({
      stdout:
        `registries[0] (registry.example.com): signing key ES256, kid ${kid}\n` +
        "clusters[0] (live): 1 key(s) fetched\n" +
        "ok: 1 cluster(s), 1 registry, 2 rule(s)\n",
      stderr: "",
      code: 0,
    });
    expect(live.issuer.served.discovery).toBe(before.discovery + 1);
    expect(live.issuer.served.jwks).toBe(before.jwks + 1);
  });

  it("--fetch-keys that cannot reach a cluster exits 1", async () => {
    const file = configFile(
      "dead.yaml",
      '[{ name: dead, issuer: "http://127.0.0.1:9", audiences: [registry.example.com], fetch: { timeoutMs: 1000 } }]',
      RULES,
    );
    const out = await checkConfigCommand({ config: file, fetchKeys: true });
    expect(out.code).toBe(1);
    expect(out.stdout).toBe(`registries[0] (registry.example.com): signing key ES256, kid ${kid}\n`);
    expect(out.stderr).toMatch(/^error: clusters\[0\] \(dead\): keys could not be fetched: .+\n$/);
  });
});

describe("check-config for a tokenReview-only cluster", () => {
  it("fetches no keys it never uses, even with --fetch-keys, and says why", async () => {
    write("api-token", "t");
    const file = configFile(
      "review-only.yaml",
      `[{ name: review, issuer: "http://127.0.0.1:9", audiences: [registry.example.com], verification: tokenReview, apiServer: { url: "https://127.0.0.1:9", bearerTokenFile: ${join(dir, "api-token")} } }]`,
      RULES,
    );
    expect(await checkConfigCommand({ config: file, fetchKeys: true })).toEqual({
      stdout:
        `registries[0] (registry.example.com): signing key ES256, kid ${kid}\n` +
        "clusters[0] (review): verification: tokenReview (no keys used; the API server reviews every token)\n" +
        "ok: 1 cluster(s), 1 registry, 2 rule(s)\n",
      stderr: "",
      code: 0,
    });
  });
});

describe("check-config: every problem in one run", () => {
  it("a file with several mistakes: each reported, with the key probably meant and the unit", async () => {
    const file = write(
      "several.yaml",
      `clusters:
  - { name: prod, issuer: "https://kubernetes.default.svc.cluster.local", audiences: [registry.example.com], jwksFile: missing-jwks.json }
registrys:
  - { service: registry.example.com, issuer: rte }
registries:
  - service: registry.example.com
    issuer: rte
    tokenTTLSeconds: 300
    tokenTtlSeconds: "5m"
    signingKey: { keyFile: missing-key.pem, certFile: ${keys.certFile} }
policy:
  rules: ${RULES}
`,
    );
    const out = await checkConfigCommand({ config: file });
    expect(out).toEqual({
      stdout: "",
      stderr: [
        'config error: registries[0].tokenTtlSeconds: must be a number of seconds, got "5m" (durations are plain numbers: 5m is 300)',
        'config error: registries[0]: unknown key "tokenTTLSeconds" (did you mean "tokenTtlSeconds"?)',
        'config error: (root): unknown key "registrys" (did you mean "registries"?)',
        `config error: clusters[0].jwksFile: file not found or not readable (${join(dir, "missing-jwks.json")})`,
        `config error: registries[0].signingKey.keyFile: file not found or not readable (${join(dir, "missing-key.pem")})`,
        "",
      ].join("\n"),
      code: 2,
    });
  });

  it("a valid schema with unreadable files still checks the policy and the other keys", async () => {
    const file = configFile(
      "files-and-policy.yaml",
      `[{ name: b, issuer: "https://b.example.com", jwksFile: gone.json, audiences: [registry.example.com] }]`,
      `
    - { name: bad, match: { cluster: prdo }, allow: [{ repository: "team-a/**", actions: [pull] }] }`,
    );
    const out = await checkConfigCommand({ config: file });
    expect(out.code).toBe(2);
    expect(out.stdout).toBe(`registries[0] (registry.example.com): signing key ES256, kid ${kid}\n`);
    const lines = out.stderr.trimEnd().split("\n");
    expect(lines[0]).toBe(
      `config error: clusters[0].jwksFile: file not found or not readable (${join(dir, "gone.json")})`,
    );
    expect(lines.slice(1)).toEqual([
      'config error: policy.rules[0].match.cluster: no cluster is named "prdo" (clusters: "b")',
    ]);
  });

  it("a YAML syntax error names the position and shows the line", async () => {
    const file = write("syntax.yaml", "clusters:\n  - name: prod\n    issuer: [unclosed\nregistries: {\n");
    const out = await checkConfigCommand({ config: file });
    expect(out.code).toBe(2);
    expect(out.stderr).toMatch(
      /^config error: \(yaml\) .*syntax\.yaml: .+ at line \d+, column \d+; line \d+: ".+"\n$/,
    );
    expect(out.stderr).not.toMatch(/:\n$/);
  });
});

describe("check-config --fetch-keys: TLS failures name the key that fixes them", () => {
  it("a self-signed cluster certificate names clusters[i].caFile; with caFile set, TLS passes", async () => {
    const cert = await localhostCertificate();
    const server = createHttpsServer(
      { cert: readFileSync(cert.certFile), key: readFileSync(cert.keyFile) },
      (_req, res) => {
        res.writeHead(404).end();
      },
    );
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    try {
      const cluster = (extra: string) =>
        `[{ name: tls, issuer: "https://127.0.0.1:${port}", audiences: [registry.example.com], fetch: { timeoutMs: 2000 }${extra} }]`;
      const untrusted = await checkConfigCommand({
        config: configFile("tls-untrusted.yaml", cluster(""), RULES),
        fetchKeys: true,
      });
      expect(untrusted.code).toBe(1);
      expect(untrusted.stderr).toBe(
        "error: clusters[0] (tls): keys could not be fetched: TLS: the cluster's certificate is self-signed and not trusted: set clusters[0].caFile to that certificate (or to the CA that signed it)\n",
      );
      const trusted = await checkConfigCommand({
        config: configFile("tls-trusted.yaml", cluster(`, caFile: ${cert.certFile}`), RULES),
        fetchKeys: true,
      });
      expect(trusted.code).toBe(1);
      expect(trusted.stderr).toMatch(/^error: clusters\[0\] \(tls\): keys could not be fetched: .*404/);
      expect(trusted.stderr).not.toContain("TLS:");
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

/** The message JSON.parse gives for `text` (it differs between Node versions). */
function jsonError(text: string): string {
  try {
    JSON.parse(text);
  } catch (err) {
    return (err as Error).message.split("\n")[0]!;
  }
  return "";
}

describe("check-config: the command line", () => {
  const run = (...args: string[]) =>
    spawnSync(process.execPath, ["--import", "tsx", join(REPO_ROOT, "src/bin.ts"), "check-config", ...args], {
      cwd: REPO_ROOT,
      encoding: "utf8",
      timeout: 60_000,
    });

  it("exits 0 with warnings, 2 with --strict, 2 on errors", () => {
    const warned = configFile(
      "cli-warned.yaml",
      `[${PROD}]`,
      `${RULES}
    - { name: s, match: { service: "*.org" }, allow: [{ repository: "**", actions: [pull] }] }`,
    );
    const ok = run("--config", warned);
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toContain("ok: 1 cluster(s), 1 registry, 3 rule(s), 1 warning(s)\n");
    expect(ok.stderr).toBe(
      'config warning: policy.rules[2].match.service: "*.org" matches no configured registry service (registries: "registry.example.com")\n',
    );
    const strict = run("--config", warned, "--strict");
    expect(strict.status).toBe(2);
    expect(strict.stderr).toContain("config error: --strict: 1 warning(s) treated as errors\n");
    const broken = run("--config", write("cli-broken.yaml", "clusters: []\n"));
    expect(broken.status).toBe(2);
    expect(broken.stderr).toContain("config error: clusters: must list at least one cluster\n");
  });

  it("--config repeated checks the layers merged: a later file's settings count, its mistakes name it", () => {
    const base = configFile("cli-layer-base.yaml", `[${PROD}]`, RULES);
    const ok = run(
      "--config",
      base,
      "--config",
      write("cli-layer-ok.yaml", "policy: { defaultDeny: true }\n"),
    );
    expect(ok.stderr).toBe("");
    expect(ok.stdout).toContain("ok: 1 cluster(s), 1 registry, 2 rule(s)\n");
    expect(ok.status).toBe(0);
    const overlay = write("cli-layer-bad.yaml", "clusters: [{ name: prod, verification: sometimes }]\n");
    const bad = run("--config", base, "--config", overlay);
    expect(bad.status).toBe(2);
    expect(bad.stdout).toBe("");
    expect(bad.stderr).toBe(
      `config error: ${overlay}: clusters[0].verification: Invalid option: expected one of "offline"|"tokenReview"|"both"\n`,
    );
  });
});
