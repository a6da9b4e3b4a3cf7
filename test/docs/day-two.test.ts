/**
 * The day-two documents stay true: the README links them; the README's hand-run credential-provider
 * requests have the shape a real kubelet sends (the repository without its tag: the captured request in
 * test/fixtures/kubernetes-1.36); the release's version is the same in package.json, the Dockerfile and
 * the kustomization; docs/observability.md lists every rte_* metric the service exports; and no document
 * points outside the repository.
 */
import { EventEmitter } from "node:events";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import type { RedisClient } from "../../src/cache/redis.js";
import { ServiceMetrics } from "../../src/plugins/metrics.js";

const root = new URL("../..", import.meta.url).pathname;
const read = (file: string) => readFileSync(join(root, file), "utf8");
const readme = read("README.md");
const DOCS = ["docs/operations.md", "docs/observability.md", "docs/troubleshooting.md", "CHANGELOG.md"];

describe("day-two documents", () => {
  it("the README links every day-two document, and their relative links resolve", () => {
    for (const doc of DOCS) expect(readme).toContain(`](${doc})`);
    for (const doc of DOCS) {
      const text = read(doc);
      for (const m of text.matchAll(/\]\(((?:\.\.\/|\.\/)?[\w./-]+\.(?:md|yaml|json))\)/g)) {
        expect(existsSync(join(root, dirname(doc), m[1]!)), `${doc} links ${m[1]}`).toBe(true);
      }
    }
  });

  it("no document points outside the repository", () => {
    for (const doc of [...DOCS, "README.md"]) {
      expect(read(doc), doc).not.toMatch(/\.\.\/shared|REFERENCE\.md|\/work\//);
    }
  });

  it("CHANGELOG keeps an Unreleased section in Keep a Changelog form", () => {
    const changelog = read("CHANGELOG.md");
    expect(changelog).toMatch(/^# Changelog$/m);
    expect(changelog).toMatch(/^## \[Unreleased\]$/m);
    const sections = [...changelog.matchAll(/^### (\w+)$/gm)].map((m) => m[1]);
    for (const s of sections)
      expect(["Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"]).toContain(s);
  });

  it("the README's hand-run credential-provider requests send what kubelet sends: the repository without a tag", () => {
    const captured = JSON.parse(
      read("test/fixtures/kubernetes-1.36/kubelet-credential-provider-request.json"),
    );
    // kubelet strips the tag (and digest) from the image reference it passes to the plugin.
    expect(captured.image).toMatch(/^[^/]+\/[^:@]+$/);
    const images = [...readme.matchAll(/"kind":"CredentialProviderRequest","image":"([^"]+)"/g)].map(
      (m) => m[1]!,
    );
    expect(images.length).toBeGreaterThan(0);
    for (const image of images) expect(image, image).toMatch(/^[^/]+\/[^:@]+$/);
  });

  it("one version: package.json, the Dockerfile's ARG VERSION and the kustomization's newTag", () => {
    const version = JSON.parse(read("package.json")).version as string;
    expect(read("Dockerfile")).toMatch(new RegExp(`^ARG VERSION=${version.replaceAll(".", "\\.")}$`, "m"));
    const kustomization = parse(read("deploy/kubernetes/base/kustomization.yaml"));
    expect(kustomization.images[0].newTag).toBe(version);
  });

  it("docs/observability.md lists every rte_* metric the service exports", async () => {
    const metrics = new ServiceMetrics();
    const redis = Object.assign(new EventEmitter(), { status: "ready" }) as unknown as RedisClient;
    metrics.bind({
      realmStats: () => ({ identityHits: 0, identityMisses: 0, tokenHits: 0, tokenMisses: 0 }) as never,
      keySets: [],
      signingKeys: new Map(),
      redis,
      now: Date.now,
    });
    const names = [...(await metrics.render()).body.matchAll(/^# TYPE (rte_\S+) /gm)].map((m) => m[1]!);
    expect(names.length).toBeGreaterThan(10);
    const doc = read("docs/observability.md");
    for (const n of names) expect(doc, n).toContain(`| \`${n}\` |`);
  });
});
