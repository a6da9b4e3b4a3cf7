// biome-ignore-all lint/suspicious/noTemplateCurlyInString: policy templates such as ${namespace} are data, not JS templates
/**
 * `registry-token-exchange explain` (src/cli/commands.ts): exact output on a frozen clock, offline by
 * default (the signature is not checked and the output says so first, the claims are), against a
 * `jwksFile` without contacting anything, against a live issuer only with `--fetch-keys`; the refusals
 * and usage errors with their exit codes; and the real command line in a child process.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ExplainOptions, explainCommand } from "../../src/cli/commands.js";
import { LocalIssuer, stableUid, startLocalIssuerServer } from "../../src/local/issuer.js";
import { NOW } from "../helpers/clock.js";
import { signingKeyFiles } from "../helpers/fixtures.js";
import { REPO_ROOT } from "../helpers/plugin.js";

/** Frozen "now": 2026-11-30T12:00:00Z. */
const now = () => NOW;
const SERVICE = "registry.example.com";
const PROD_ISSUER = "https://kubernetes.default.svc.cluster.local";
const AIR_ISSUER = "https://oidc.example.internal/cluster-b";

const RULES = `
policy:
  rules:
    - name: teams push to their own namespace
      match: { namespace: "team-*" }
      allow: [{ repository: "\${namespace}/**", actions: [pull, push] }]
    - name: everyone pulls base images
      allow: [{ repository: "library/**", actions: [pull] }]
    - name: base images are read-only
      deny: [{ repository: "library/**", actions: [push, delete] }]
`;

let dir: string;
let prod: LocalIssuer;
let air: LocalIssuer;
let live: Awaited<ReturnType<typeof startLocalIssuerServer>>;

function write(name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

async function token(
  issuer: LocalIssuer,
  name: string,
  req: Partial<Parameters<LocalIssuer["mint"]>[0]> = {},
): Promise<string> {
  return write(
    name,
    `${await issuer.mint({ namespace: "team-a", serviceAccount: "builder", audiences: [SERVICE], nowMs: NOW, ...req })}\n`,
  );
}

/** The standard config: `prod` (offline), `airgapped` (jwksFile), `live` (a real issuer server). */
let config: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "rte-explain-"));
  const keys = await signingKeyFiles();
  prod = new LocalIssuer(PROD_ISSUER);
  air = new LocalIssuer(AIR_ISSUER);
  live = await startLocalIssuerServer();
  write("cluster-b-jwks.json", JSON.stringify(air.jwks()));
  config = write(
    "config.yaml",
    `clusters:
  - { name: prod, issuer: "${PROD_ISSUER}", audiences: [${SERVICE}] }
  - { name: airgapped, issuer: "${AIR_ISSUER}", jwksFile: cluster-b-jwks.json, audiences: [${SERVICE}] }
  - { name: live, issuer: "${live.url}", audiences: [${SERVICE}] }
registries:
  - { service: ${SERVICE}, issuer: rte, signingKey: { keyFile: ${keys.keyFile}, certFile: ${keys.certFile} } }
${RULES}`,
  );
});

afterAll(async () => {
  await live.close();
  rmSync(dir, { recursive: true, force: true });
});

const uid = (issuer: string, kind: "sa" | "pod", name: string) => stableUid(issuer, "team-a", kind, name);

function identityLines(issuer: string, cluster: string): string {
  return [
    "credential:      service-account token",
    `cluster:         ${cluster}`,
    "namespace:       team-a",
    `service account: builder (uid ${uid(issuer, "sa", "builder")})`,
    `pod:             builder-pod (uid ${uid(issuer, "pod", "builder-pod")})`,
    `audiences:       ${SERVICE}`,
    "expires:         2026-11-30T13:00:00Z (in 3600 s)",
    `service:         ${SERVICE}`,
    'rules applying:  "teams push to their own namespace", "everyone pulls base images", "base images are read-only"',
    "",
  ].join("\n");
}

const DECISIONS = `repository:team-a/app:pull,push
  granted:    pull,push
  allowed by: "teams push to their own namespace"
  denied by:  (none)
repository:library/alpine:pull,push
  granted:    pull
  allowed by: "everyone pulls base images"
  denied by:  "base images are read-only"
repository:team-b/app:pull
  granted:    (nothing)
  allowed by: (none)
  denied by:  (none)
`;
const SCOPES = [
  "repository:team-a/app:push,pull",
  "repository:library/alpine:pull,push",
  "repository:team-b/app:pull",
];

describe("explain: offline (the default)", () => {
  it("says first that the signature was not checked, then explains the claimed identity", async () => {
    const t = await token(prod, "prod.jwt");
    expect(await explainCommand({ config, token: t, scope: SCOPES }, { now })).toEqual({
      stdout: `signature:       NOT CHECKED (offline): the identity below is what the token claims; pass --fetch-keys to verify it against the keys of cluster "prod"\n${identityLines(PROD_ISSUER, "prod")}${DECISIONS}`,
      stderr: "",
      code: 0,
    });
  });

  it("still evaluates a token whose signature is forged (that is what NOT CHECKED means)", async () => {
    const t = await token(new LocalIssuer(PROD_ISSUER), "forged-prod.jwt");
    const out = await explainCommand({ config, token: t, scope: ["repository:team-a/app:pull"] }, { now });
    expect(out.code).toBe(0);
    expect(out.stdout.split("\n")[0]).toMatch(/^signature: {7}NOT CHECKED \(offline\)/);
    expect(out.stdout).toContain("  granted:    pull\n");
  });

  it("a login (no --scope) lists the rules that apply", async () => {
    const t = await token(prod, "prod-login.jwt");
    const out = await explainCommand({ config, token: t }, { now });
    expect(out.stdout).toBe(
      `signature:       NOT CHECKED (offline): the identity below is what the token claims; pass --fetch-keys to verify it against the keys of cluster "prod"\n${identityLines(PROD_ISSUER, "prod")}scopes:          (none: a login)\n`,
    );
  });

  it("checks a jwksFile cluster's signature without contacting anything", async () => {
    const t = await token(air, "air.jwt");
    expect(await explainCommand({ config, token: t, scope: SCOPES }, { now })).toEqual({
      stdout: `signature:       checked against clusters[1].jwksFile (${join(dir, "cluster-b-jwks.json")})\n${identityLines(AIR_ISSUER, "airgapped")}${DECISIONS}`,
      stderr: "",
      code: 0,
    });
    const forged = await token(new LocalIssuer(AIR_ISSUER), "forged-air.jwt");
    const out = await explainCommand({ config, token: forged }, { now });
    expect(out.code).toBe(1);
    expect(out.stdout).toMatch(
      /^signature: {7}checked against clusters\[1\]\.jwksFile \(.*\)\nrefused: {9}unknown_key: token signed by unknown key with ID "[^"]+" \(cluster "airgapped"\)\n$/,
    );
  });

  it("never contacts a cluster without --fetch-keys", async () => {
    const before = { ...live.issuer.served };
    const t = await token(live.issuer, "live-offline.jwt");
    const out = await explainCommand({ config, token: t, scope: ["repository:team-a/app:pull"] }, { now });
    expect(out.code).toBe(0);
    expect(out.stdout.split("\n")[0]).toBe(
      'signature:       NOT CHECKED (offline): the identity below is what the token claims; pass --fetch-keys to verify it against the keys of cluster "live"',
    );
    expect(live.issuer.served).toEqual(before);
  });
});

describe("explain --fetch-keys", () => {
  it("verifies the signature against the cluster's fetched keys", async () => {
    const t = await token(live.issuer, "live.jwt");
    const out = await explainCommand({ config, token: t, scope: SCOPES, fetchKeys: true }, { now });
    expect(out).toEqual({
      stdout: `signature:       checked against the keys of cluster "live" (fetched)\n${identityLines(live.url, "live")}${DECISIONS}`,
      stderr: "",
      code: 0,
    });
    expect(live.issuer.served.jwks).toBeGreaterThan(0);
  });

  it("refuses a forged token", async () => {
    const t = await token(new LocalIssuer(live.url), "live-forged.jwt");
    const out = await explainCommand({ config, token: t, fetchKeys: true }, { now });
    expect(out.code).toBe(1);
    expect(out.stdout).toMatch(
      /\nrefused: {9}unknown_key: token signed by unknown key with ID "[^"]+" \(cluster "live"\)\n$/,
    );
  });
});

describe("explain: what the service would refuse (exit 1), with the service's own messages", () => {
  const offline =
    'signature:       NOT CHECKED (offline): the identity below is what the token claims; pass --fetch-keys to verify it against the keys of cluster "prod"\n';
  it.each([
    [
      "expired",
      { nowMs: NOW - 7200_000 },
      `${offline}refused:         token_expired: service-account token has expired\n`,
    ],
    [
      "expiring in 30 s",
      { nowMs: NOW - 3570_000 },
      `${offline}refused:         token_expired: the presented credential expires in 30 s; at least 60 s are needed\n`,
    ],
    [
      "wrong audience",
      { audiences: ["someone-else"] },
      `${offline}refused:         invalid_audience: "aud" claim does not contain an audience accepted here (accepted: registry.example.com)\n`,
    ],
    [
      "issued in the future",
      { nowMs: NOW + 600_000 },
      `${offline}refused:         token_not_yet_valid: service-account token is not valid yet ("nbf" is in the future)\n`,
    ],
  ])("%s", async (name, req, stdout) => {
    const t = await token(prod, `${name.replaceAll(" ", "-")}.jwt`, req);
    expect(await explainCommand({ config, token: t }, { now })).toEqual({ stdout, stderr: "", code: 1 });
  });

  it("an issuer that is no configured cluster", async () => {
    const t = await token(new LocalIssuer("https://elsewhere.example.com"), "stranger.jwt");
    expect(await explainCommand({ config, token: t }, { now })).toEqual({
      stdout:
        'signature:       not checked (the token\'s issuer is not a configured cluster)\nrefused:         unknown_issuer: "iss" claim "https://elsewhere.example.com" is not a trusted cluster issuer\n',
      stderr: "",
      code: 1,
    });
  });

  it.each([
    ["a crit header", { crit: ["exp"], exp: 1 }],
    ["an unencoded payload (b64: false, RFC 7797)", { b64: false, crit: ["b64"] }],
  ])("%s: refused as the service refuses it, not a library error", async (name, extra) => {
    const original = await prod.mint({
      namespace: "team-a",
      serviceAccount: "builder",
      audiences: [SERVICE],
      nowMs: NOW,
    });
    const [h, p, sig] = original.split(".");
    const header = { ...JSON.parse(Buffer.from(h!, "base64url").toString("utf8")), ...extra };
    const t = write(
      `${name.replace(/\W+/g, "-")}.jwt`,
      `${Buffer.from(JSON.stringify(header)).toString("base64url")}.${p}.${sig}\n`,
    );
    expect(await explainCommand({ config, token: t }, { now })).toEqual({
      stdout: `${offline}refused:         malformed_token: credential is not a valid JWT\n`,
      stderr: "",
      code: 1,
    });
  });

  it("not a JWT", async () => {
    const t = write("garbage.jwt", "not-a-token\n");
    expect(await explainCommand({ config, token: t }, { now })).toEqual({
      stdout:
        "signature:       not checked (the token's issuer is not a configured cluster)\nrefused:         malformed_token: credential is not a JWT (expected header.payload.signature)\n",
      stderr: "",
      code: 1,
    });
  });
});

describe("explain: usage and configuration errors (exit 2)", () => {
  type Usage = [description: string, opts: () => Partial<ExplainOptions>, stderr: () => string];
  it.each<Usage>([
    [
      "an unknown --service",
      () => ({ service: "nope.example.com" }),
      () =>
        'error: explain: unknown service "nope.example.com": not served here (this config serves "registry.example.com")\n',
    ],
    [
      "an invalid --scope",
      () => ({ scope: ["repository:Team/App:pull"] }),
      () => 'error: explain: scope "repository:Team/App:pull" has an invalid repository name\n',
    ],
    [
      "a missing token file",
      () => ({ token: join(dir, "missing.jwt") }),
      () => `error: explain: cannot read the token file ${join(dir, "missing.jwt")}: ENOENT\n`,
    ],
  ])("%s", async (_d, opts, stderr) => {
    const t = await token(prod, "usage.jwt");
    expect(await explainCommand({ config, token: t, ...opts() }, { now })).toEqual({
      stdout: "",
      stderr: stderr(),
      code: 2,
    });
  });

  it("several registries and no --service", async () => {
    const keys = await signingKeyFiles();
    const two = write(
      "two.yaml",
      `clusters: [{ name: prod, issuer: "${PROD_ISSUER}", audiences: [a] }]
registries:
  - { service: one.example.com, issuer: rte, signingKey: { keyFile: ${keys.keyFile}, certFile: ${keys.certFile} } }
  - { service: two.example.com, issuer: rte, signingKey: { keyFile: ${keys.keyFile}, certFile: ${keys.certFile} } }
${RULES}`,
    );
    expect(await explainCommand({ config: two, token: await token(prod, "two.jwt") }, { now })).toEqual({
      stdout: "",
      stderr: 'error: explain: pass --service (this config serves "one.example.com", "two.example.com")\n',
      code: 2,
    });
  });

  it("a config whose policy has errors", async () => {
    const keys = await signingKeyFiles();
    const bad = write(
      "bad.yaml",
      `clusters: [{ name: prod, issuer: "${PROD_ISSUER}", audiences: [a] }]
registries: [{ service: r.example.com, issuer: rte, signingKey: { keyFile: ${keys.keyFile}, certFile: ${keys.certFile} } }]
policy:
  rules:
    - { name: r, match: { cluster: staging }, allow: [{ repository: "\${team}/**", actions: [pull] }] }
`,
    );
    expect(await explainCommand({ config: bad, token: await token(prod, "bad.jwt") }, { now })).toEqual({
      stdout: "",
      stderr:
        'config error: policy.rules[0].match.cluster: no cluster is named "staging" (clusters: "prod")\n' +
        'config error: policy.rules[0].allow[0].repository: unknown template variable "${team}" (known: ${cluster}, ${namespace}, ${serviceAccount}, ${annotation:<key>})\n',
      code: 2,
    });
  });
});

describe("explain: the command line", () => {
  it("runs as `registry-token-exchange explain` and exits 0 / 1", async () => {
    const t = await token(prod, "cli.jwt", { nowMs: Date.now() });
    const run = (file: string) =>
      spawnSync(
        process.execPath,
        [
          "--import",
          "tsx",
          join(REPO_ROOT, "src/bin.ts"),
          "explain",
          "--config",
          config,
          "--token",
          file,
          "--scope",
          "repository:team-a/app:pull",
        ],
        { cwd: REPO_ROOT, encoding: "utf8", timeout: 60_000 },
      );
    const ok = run(t);
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/^signature: {7}NOT CHECKED \(offline\)/);
    expect(ok.stdout).toContain("repository:team-a/app:pull\n  granted:    pull\n");
    const expired = run(await token(prod, "cli-expired.jwt", { nowMs: Date.now() - 7200_000 }));
    expect(expired.status).toBe(1);
    expect(expired.stdout).toContain("refused:         token_expired: service-account token has expired\n");
  });
});

describe("explain --token: never echoes a credential", () => {
  const runCli = (args: string[], input?: string) =>
    spawnSync(process.execPath, ["--import", "tsx", join(REPO_ROOT, "src/bin.ts"), ...args], {
      cwd: REPO_ROOT,
      encoding: "utf8",
      timeout: 60_000,
      ...(input === undefined ? {} : { input }),
    });

  it("a token passed where the file path belongs is not printed, and the error says what to do", async () => {
    const raw = readFileSync(await token(prod, "pasted.jwt", { nowMs: Date.now() }), "utf8").trim();
    const out = runCli([
      "explain",
      "--config",
      config,
      "--token",
      raw,
      "--scope",
      "repository:team-a/app:pull",
    ]);
    expect(out.status).toBe(2);
    expect(out.stderr).toBe(
      "error: explain: --token takes a file path, or - to read the token from standard input; the value given looks like a token itself and is not shown\n",
    );
    // Not the token, nor any of its three parts.
    for (const part of raw.split(".")) expect(`${out.stdout}${out.stderr}`).not.toContain(part);
  });

  it("usage errors mask what was typed: --option=value and anything shaped like a token", async () => {
    const raw = readFileSync(await token(prod, "typo.jwt", { nowMs: Date.now() }), "utf8").trim();
    for (const args of [
      ["explain", "--config", config, `--tokn=${raw}`],
      ["explain", "--config", config, "--token", "t.jwt", raw],
      ["local-token", "--namespace", "a", `--password=${raw}`],
    ]) {
      const out = runCli(args);
      expect(out.status, args[3]).toBe(2);
      for (const part of raw.split(".")) expect(`${out.stdout}${out.stderr}`).not.toContain(part);
    }
    const unknown = runCli(["explain", "--config", config, "--token", "t.jwt", `--tokn=${raw}`]);
    expect(unknown.stderr).toContain("unknown option '--tokn=***'");
  });

  it("a real path that cannot be read is still named", async () => {
    const out = await explainCommand({ config, token: "/no/such/token-file" }, { now });
    expect(out).toEqual({
      stdout: "",
      stderr: "error: explain: cannot read the token file /no/such/token-file: ENOENT\n",
      code: 2,
    });
  });

  it("--token - reads the token from standard input", async () => {
    const raw = readFileSync(await token(prod, "stdin.jwt", { nowMs: Date.now() }), "utf8");
    const out = runCli(
      ["explain", "--config", config, "--token", "-", "--scope", "repository:team-a/app:pull"],
      raw,
    );
    expect(out.status, out.stderr).toBe(0);
    expect(out.stdout).toContain("repository:team-a/app:pull\n  granted:    pull\n");
    const empty = await explainCommand({ config, token: "-" }, { now, readStdin: async () => " \n" });
    expect(empty).toEqual({
      stdout: "",
      stderr: "error: explain: --token -: standard input is empty\n",
      code: 2,
    });
  });
});
