/**
 * End to end: real registry clients push and pull with tokens this service mints.
 *
 *   skopeo / ctr ──(1) /v2/... ──▶ docker-registry 2.8 ──401 Bearer realm=<service>/token
 *        └──────(2) GET|POST /token with the service-account JWT as password ──▶ token exchange
 *        └──────(3) /v2/... with the minted registry token ──▶ docker-registry (verifies x5c / kid, access)
 *
 * skopeo (containers/image) uses GET with Basic credentials; containerd, given a password, uses the OAuth2
 * POST password grant. Policy (STANDARD_RULES): namespace team-* may pull+push `${namespace}/**`.
 *
 * Needs `docker-registry`, `skopeo`, `containerd`, `ctr` and root (for containerd). When something is
 * missing the suite is skipped with a warning, except under CI=true where that is a failure.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { signingKeyFiles } from "../helpers/fixtures.js";
import { type Containerd, ctr, startContainerd } from "./helpers/containerd.js";
import { buildOciLayout, type OciImage } from "./helpers/oci.js";
import { describeRun, missingBinaries, type TempDir, tempDir } from "./helpers/process.js";
import { REGISTRY_BIN, type RegistryServer, startRegistry } from "./helpers/registry.js";
import { type ExchangeService, startExchange } from "./helpers/service.js";
import { skopeoCopyWithin, skopeoInspect, skopeoPush } from "./helpers/skopeo.js";

const missing = [
  ...missingBinaries([REGISTRY_BIN, "skopeo", "containerd", "ctr"]),
  ...(process.getuid?.() === 0 ? [] : ["root privileges (containerd)"]),
];
const inCI = process.env.CI === "true";

if (missing.length > 0 && inCI) {
  describe("e2e prerequisites", () => {
    it("has docker-registry, skopeo, containerd, ctr and root (required when CI=true)", () => {
      expect(missing, `install them: apt-get install -y docker-registry skopeo containerd`).toEqual([]);
    });
  });
} else if (missing.length > 0) {
  console.warn(`[e2e] skipping the registry end-to-end suite: missing ${missing.join(", ")}`);
}

/** Registry error texts for "your token does not allow this" (401 insufficient_scope / 403 denied). */
const REFUSED = /denied|unauthorized|authentication required|insufficient_scope/i;

describe.skipIf(missing.length > 0)("e2e: real clients with tokens minted by the service", () => {
  let tmp: TempDir;
  let service: ExchangeService;
  let registry: RegistryServer;
  let containerd: Containerd | undefined;
  let containerdStarting: Promise<void> | undefined;
  let image: OciImage;
  let teamA: string;
  let teamB: string;
  let repo: string;

  beforeAll(async () => {
    tmp = tempDir("registry");
    const dir = (name: string) => join(tmp.path, name);
    for (const d of ["registry", "containerd", "oci", "skopeo"]) mkdirSync(dir(d));
    // containerd starts meanwhile; assigned as soon as it is up so afterAll stops it even if a later
    // step of this hook fails.
    containerdStarting = startContainerd(dir("containerd")).then((c) => {
      containerd = c;
    });
    containerdStarting.catch(() => {}); // awaited below; no unhandled rejection meanwhile
    service = await startExchange();
    [registry, image, teamA, teamB] = await Promise.all([
      startRegistry(dir("registry"), `${service.url}/token`),
      buildOciLayout(dir("oci"), "v1"),
      service.saToken("team-a"),
      service.saToken("team-b"),
    ]);
    await containerdStarting;
    repo = `${registry.host}/team-a/app`;
  });

  afterAll(async () => {
    // Each step runs even if an earlier one fails; the temp dir goes last.
    await containerdStarting?.catch(() => {});
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
      // The per-process signing key dir of the shared fixtures (nothing else in this worker uses it now).
      rmSync(dirname((await signingKeyFiles()).certFile), { recursive: true, force: true });
    }
    if (errors.length > 0) throw errors[0];
  });

  const tokenRequests = (method: string) =>
    service.requests().filter((r) => r.method === method && r.path === "/token");

  it("skopeo copy pushes the image to team-a/app:v1 as team-a (GET realm, Basic credentials)", async () => {
    const digestFile = join(tmp.path, "skopeo", "pushed.digest");
    const r = await skopeoPush({
      layoutDir: image.dir,
      tag: image.tag,
      dest: `${repo}:v1`,
      token: teamA,
      tmpDir: join(tmp.path, "skopeo"),
      digestFile,
    });
    expect(r.code, describeRun("skopeo copy", r)).toBe(0);
    expect(readFileSync(digestFile, "utf8").trim()).toBe(image.manifest.digest);
    // The registry sent skopeo to our realm, which granted push on team-a/app.
    expect(tokenRequests("GET").some((q) => q.statusCode === 200)).toBe(true);
    expect(
      service.audits().some((a) => (a.granted as string[]).includes("repository:team-a/app:pull,push")),
    ).toBe(true);
  }, 60_000);

  it("skopeo inspect as team-a shows the pushed digest", async () => {
    const r = await skopeoInspect({ ref: `${repo}:v1`, token: teamA, tmpDir: join(tmp.path, "skopeo") });
    expect(r.code, describeRun("skopeo inspect", r)).toBe(0);
    const info = JSON.parse(r.stdout) as { Digest: string; Layers: string[]; Os: string };
    expect(info.Digest).toBe(image.manifest.digest);
    expect(info.Layers).toEqual([image.layer.digest]);

    const raw = await skopeoInspect({
      ref: `${repo}:v1`,
      token: teamA,
      tmpDir: join(tmp.path, "skopeo"),
      raw: true,
    });
    expect(raw.code, describeRun("skopeo inspect --raw", raw)).toBe(0);
    expect(raw.stdout).toBe(
      readFileSync(join(image.dir, "blobs", ...image.manifest.digest.split(":")), "utf8"),
    );
  }, 60_000);

  it("ctr pulls it as team-a through the POST password grant and unpacks it", async () => {
    const postsBefore = tokenRequests("POST").length;
    const ref = `${repo}:v1`;
    const r = await ctr(containerd!, ["images", "pull", "--plain-http", "--user", `x:${teamA}`, ref], 60_000);
    expect(r.code, describeRun("ctr images pull", r)).toBe(0);
    // containerd used POST /token (grant_type=password) and it succeeded.
    const posts = tokenRequests("POST").slice(postsBefore);
    expect(posts.length, JSON.stringify(service.requests())).toBeGreaterThan(0);
    expect(posts.every((p) => p.statusCode === 200)).toBe(true);

    const ls = await ctr(containerd!, ["images", "ls"]);
    expect(ls.code, describeRun("ctr images ls", ls)).toBe(0);
    const line = ls.stdout.split("\n").find((l) => l.startsWith(`${ref} `));
    expect(line, ls.stdout).toBeDefined();
    expect(line).toContain(image.manifest.digest);
    // Unpacked into the native snapshotter: the layer's chain ID (= its diff ID for one layer) exists.
    const snaps = await ctr(containerd!, ["snapshots", "--snapshotter", "native", "ls"]);
    expect(snaps.code, describeRun("ctr snapshots ls", snaps)).toBe(0);
    expect(snaps.stdout).toContain(image.diffId);
  }, 60_000);

  it("skopeo copies team-a/app to team-a/mirror with a cross-repository blob mount (two scopes)", async () => {
    const auditsBefore = service.audits().length;
    const r = await skopeoCopyWithin({
      src: `${repo}:v1`,
      dest: `${registry.host}/team-a/mirror:v1`,
      token: teamA,
      tmpDir: join(tmp.path, "skopeo"),
    });
    expect(r.code, describeRun("skopeo copy docker->docker", r)).toBe(0);
    // skopeo knows (from its blob-info cache, /var/lib/containers/cache for root) that the layer is in
    // team-a/app, so it asks for a token with both scopes and mounts instead of uploading.
    const both = service
      .audits()
      .slice(auditsBefore)
      .find((a) => (a.requested as string[]).length === 2);
    expect(both?.requested).toEqual(["repository:team-a/mirror:pull,push", "repository:team-a/app:pull"]);
    expect(both?.granted).toEqual(both?.requested);
    const inspect = await skopeoInspect({
      ref: `${registry.host}/team-a/mirror:v1`,
      token: teamA,
      tmpDir: join(tmp.path, "skopeo"),
    });
    expect(inspect.code, describeRun("skopeo inspect mirror", inspect)).toBe(0);
    expect((JSON.parse(inspect.stdout) as { Digest: string }).Digest).toBe(image.manifest.digest);
    // Checked last: the access-log line is written once the handler returns.
    const mount = `POST /v2/team-a/mirror/blobs/uploads/?from=team-a%2Fapp&mount=${encodeURIComponent(image.layer.digest)} HTTP/1.1" 201`;
    expect(registry.process.log(1e7)).toContain(mount);
  }, 60_000);

  it("refuses team-b a push to team-a/app (skopeo copy fails at the registry)", async () => {
    const auditsBefore = service.audits().length;
    const r = await skopeoPush({
      layoutDir: image.dir,
      tag: image.tag,
      dest: `${repo}:team-b-was-here`,
      token: teamB,
      tmpDir: join(tmp.path, "skopeo"),
      digestFile: join(tmp.path, "skopeo", "team-b.digest"),
    });
    expect(r.code, describeRun("skopeo copy as team-b", r)).not.toBe(0);
    expect(r.stderr).toMatch(REFUSED);
    // The realm authenticated team-b and issued a token without any team-a/app action: the registry refused.
    const audits = service.audits().slice(auditsBefore);
    expect(audits.length).toBeGreaterThan(0);
    expect(audits.every((a) => a.namespace === "team-b")).toBe(true);
    expect(audits.flatMap((a) => a.granted as string[]).filter((g) => g.includes("team-a/"))).toEqual([]);
    // Nothing was tagged.
    const tagged = await skopeoInspect({
      ref: `${repo}:team-b-was-here`,
      token: teamA,
      tmpDir: join(tmp.path, "skopeo"),
    });
    expect(tagged.code).not.toBe(0);
    expect(tagged.stderr).toMatch(/manifest unknown/i);
  }, 60_000);

  it("refuses team-b a pull of team-a/app (skopeo inspect and ctr pull fail)", async () => {
    const r = await skopeoInspect({ ref: `${repo}:v1`, token: teamB, tmpDir: join(tmp.path, "skopeo") });
    expect(r.code, describeRun("skopeo inspect as team-b", r)).not.toBe(0);
    expect(r.stderr).toMatch(REFUSED);

    const pull = await ctr(containerd!, [
      "images",
      "pull",
      "--plain-http",
      "--user",
      `x:${teamB}`,
      `${registry.host}/team-a/app:v1`,
    ]);
    expect(pull.code, describeRun("ctr images pull as team-b", pull)).not.toBe(0);
    expect(`${pull.stdout}${pull.stderr}`).toMatch(REFUSED);
  }, 60_000);

  it("rejects a service-account token minted for another audience at the realm (401)", async () => {
    const wrongAudience = await service.issuer.mint({
      namespace: "team-a",
      serviceAccount: "builder",
      audiences: ["some-other-registry"],
    });
    const before = tokenRequests("GET").length;
    const r = await skopeoInspect({
      ref: `${repo}:v1`,
      token: wrongAudience,
      tmpDir: join(tmp.path, "skopeo"),
    });
    expect(r.code, describeRun("skopeo inspect with a wrong-audience token", r)).not.toBe(0);
    expect(r.stderr).toMatch(/unauthorized|invalid username\/password/i);
    expect(
      tokenRequests("GET")
        .slice(before)
        .map((q) => q.statusCode),
    ).toContain(401);
  }, 60_000);
});
