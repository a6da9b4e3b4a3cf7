/**
 * The documents stay true: the README links every page under docs/ and the repository's own documents;
 * every relative link resolves, to a file and, with a `#fragment`, to a heading of that file; every
 * repository path a document names exists; every docs page has a table of contents; the hand-run
 * credential-provider requests (README, docs/kubelet.md) have the shape a real kubelet sends (the
 * repository without its tag: the captured request in test/fixtures/kubernetes-1.36); the release's
 * version is the same in package.json, the Dockerfile and the kustomization; docs/observability.md lists
 * every rte_* metric the service exports; and no document points outside the repository.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { exportedMetricsText } from "../helpers/metrics.js";

const root = new URL("../..", import.meta.url).pathname;
const read = (file: string) => readFileSync(join(root, file), "utf8");
const readme = read("README.md");
const PAGES = readdirSync(join(root, "docs"))
  .filter((f) => f.endsWith(".md"))
  .map((f) => `docs/${f}`);
const DOCS = [...PAGES, "CHANGELOG.md", "CONTRIBUTING.md", "SECURITY.md"];

/** GitHub's heading anchors: lower case, punctuation other than `-` and `_` dropped, spaces to `-`. */
function anchors(markdown: string): Set<string> {
  const out = new Set<string>();
  let fenced = false;
  for (const line of markdown.split("\n")) {
    if (line.startsWith("```")) fenced = !fenced;
    const m = fenced ? null : /^#{1,6} (.*)$/.exec(line);
    if (m)
      out.add(
        m[1]!
          .toLowerCase()
          .replace(/[^\p{L}\p{N}\- _]/gu, "")
          .replaceAll(" ", "-"),
      );
  }
  return out;
}

describe("day-two documents", () => {
  it("the README links every day-two document, and their relative links resolve", () => {
    expect(PAGES.length).toBeGreaterThanOrEqual(11);
    for (const doc of [...DOCS, "LICENSE"]) expect(readme).toContain(`](${doc})`);
    for (const doc of DOCS) {
      const text = read(doc);
      for (const m of text.matchAll(/\]\(((?:\.\.\/|\.\/)?[\w./-]+\.(?:md|yaml|json))\)/g)) {
        expect(existsSync(join(root, dirname(doc), m[1]!)), `${doc} links ${m[1]}`).toBe(true);
      }
    }
  });

  it("every #fragment link names a heading of its target", () => {
    for (const doc of [...DOCS, "README.md"]) {
      for (const m of read(doc).matchAll(/\]\(((?:\.\.\/|\.\/)?[\w./-]*\.md)?#([^)\s]+)\)/g)) {
        const target = m[1] ? join(dirname(doc), m[1]) : doc;
        expect(anchors(read(target)), `${doc} links ${m[1] ?? ""}#${m[2]}`).toContain(m[2]);
      }
    }
  });

  it("every repository path a document names in backticks exists", () => {
    for (const doc of [...DOCS, "README.md"]) {
      for (const m of read(doc).matchAll(/`((?:src|test|deploy|bench|openapi)\/[\w./-]+)`/g)) {
        expect(existsSync(join(root, m[1]!)), `${doc} names ${m[1]}`).toBe(true);
      }
    }
  });

  it("every page under docs/ opens with a table of contents", () => {
    for (const page of PAGES) {
      const text = read(page);
      const contents = text.indexOf("\nContents:\n");
      expect(contents, page).toBeGreaterThan(-1);
      expect(contents, page).toBeLessThan(text.indexOf("\n## "));
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

  it("the hand-run credential-provider requests send what kubelet sends: the repository without a tag", () => {
    const captured = JSON.parse(
      read("test/fixtures/kubernetes-1.36/kubelet-credential-provider-request.json"),
    );
    // kubelet strips the tag (and digest) from the image reference it passes to the plugin.
    expect(captured.image).toMatch(/^[^/]+\/[^:@]+$/);
    const images = [readme, read("docs/kubelet.md")].flatMap((text) =>
      [...text.matchAll(/"kind":"CredentialProviderRequest","image":"([^"]+)"/g)].map((m) => m[1]!),
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
    const names = [...(await exportedMetricsText()).matchAll(/^# TYPE (rte_\S+) /gm)].map((m) => m[1]!);
    expect(names.length).toBeGreaterThan(10);
    const doc = read("docs/observability.md");
    for (const n of names) expect(doc, n).toContain(`| \`${n}\` |`);
  });
});
